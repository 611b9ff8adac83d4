"""What a CPU can check of GPU speed: host reads of tensor values inside a training step (each one a host-device
sync on CUDA), distinct batch shapes per epoch, the throughput record, the step profile, and the gpu-check's
smoke mode."""

from __future__ import annotations

import json
import sys
import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TRAIN_ARGS, python, run_cli, train_in_process
from torch.overrides import TorchFunctionMode

# Every way Python code reads a tensor's value onto the host. On CUDA each one waits for the device to finish all
# queued work, so the host can no longer run ahead and queue the next kernels.
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
              torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}

# The reads a training step is allowed, by the place that makes them. One, transformers' own: before each forward
# it asks whether the padding mask is all ones (`padding_mask.all()`), to drop the mask and reach SDPA's flash
# kernel; the H200 profile counts the same one (`host_reads_per_step` 1.0). Nothing of hf_ft's.
ALLOWED_READS_PER_STEP: dict[str, float] = {"masking_utils.py:_ignore_bidirectional_mask_sdpa": 1.0}


class HostReads(TorchFunctionMode):
    """Counts host reads by the first caller outside torch (file:line), while active."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            frames = [f for f in traceback.extract_stack()[:-1]
                      if "/torch/" not in f.filename and not f.filename.endswith("test_speed.py")]
            where = frames[-1] if frames else None
            self.calls[f"{Path(where.filename).name}:{where.name}" if where else "?"] += 1
        return func(*args, **(kwargs or {}))


def _steps_reads(tiny_model, demo_data, tmp_path, formulation: str, extra=()) -> tuple[Counter, int]:
    """Train a few steps, counting host reads between on_step_begin and on_step_end of steps that do not log."""
    from transformers import TrainerCallback

    import hf_ft.training.run

    reads, steps = HostReads(), []

    class Count(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            reads.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            reads.__exit__(None, None, None)
            steps.append(state.global_step)

    real = hf_ft.training.run.build_trainer

    def build(*args, callbacks=(), **kwargs):
        return real(*args, callbacks=[*callbacks, Count()], **kwargs)

    hf_ft.training.run.build_trainer = build
    try:
        train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects",
                          "music", "--output_dir", str(tmp_path / formulation), *TRAIN_ARGS, "--max_steps", "6",
                          "--logging_steps", "100", "--eval_strategy", "no", "--save_strategy", "no",
                          "--load_best_model_at_end", "false", "--formulation", formulation, *extra])
    finally:
        hf_ft.training.run.build_trainer = real
    return reads.calls, len(steps)


@pytest.mark.parametrize("formulation", ["per_choice", "joint"])
def test_a_training_step_reads_nothing_back_from_the_device(tiny_model, demo_data, tmp_path, formulation):
    """A guard: a new .item()/.tolist()/.cpu()/bool(tensor) inside the step fails here, named by file and function
    (a sync per step on a GPU, found there as a step bound by the host)."""
    calls, steps = _steps_reads(tiny_model, demo_data, tmp_path, formulation)
    assert steps == 6
    per_step = {where: count / steps for where, count in calls.items()}
    assert per_step == ALLOWED_READS_PER_STEP, f"host reads per training step: {per_step}"


def test_the_guard_sees_a_read(tiny_model, demo_data, tmp_path):
    """The guard can fail: the Trainer's NaN filter (bool(isnan(loss)) every step) is seen when turned back on."""
    calls, steps = _steps_reads(tiny_model, demo_data, tmp_path, "per_choice", ["--logging_nan_inf_filter", "true"])
    assert calls and sum(calls.values()) >= steps, calls


def test_rounded_lengths_bound_the_batch_shapes_of_an_epoch(tiny_model, demo_data, tmp_path):
    """--pad_to_multiple_of 64: an epoch's batches take at most ceil(512 / 64) lengths (each new shape costs
    torch.compile a graph and some GPU kernels a plan); without it, about one per batch."""
    from transformers import AutoTokenizer

    from hf_ft.data.sources import load_data_dir
    from hf_ft.inputs.formulations import encode, make_collator
    from hf_ft.training.trainer import ShuffledLengthGroupedSampler

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [row for pool in load_data_dir(str(demo_data)).pools.values() for row in pool]
    dataset = encode(rows, tokenizer, "per_choice", 512, cache_dir=tmp_path, progress=False)
    order = list(ShuffledLengthGroupedSampler(dataset["length"], 16, seed=0))
    shapes = {}
    for multiple in (None, 64):
        collate = make_collator("per_choice", tokenizer, train=True, pad_to_multiple_of=multiple)
        shapes[multiple] = {tuple(collate(dataset.select(order[i:i + 16]).to_list())["input_ids"].shape)
                            for i in range(0, len(order), 16)}
    assert len({s[2] for s in shapes[64]}) <= 8 and all(s[2] % 64 == 0 for s in shapes[64])
    assert len(shapes[None]) > 3 * len(shapes[64]), (len(shapes[None]), len(shapes[64]))


def test_throughput_and_step_profile_are_recorded(tiny_model, demo_data, tmp_path):
    out = tmp_path / "out"
    metrics = train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects",
                                "music", "--output_dir", str(out), *TRAIN_ARGS, "--max_steps", "9",
                                "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end",
                                "false", "--profile_steps", "3"])
    results = json.loads((out / "train_results.json").read_text())
    for key in ("train_questions_per_second", "train_real_tokens_per_second", "train_mfu", "matmul_peak_tflops"):
        assert results[key] > 0 and metrics[key] == results[key], key
    # real tokens per question: the mean unpadded tokens of the four options' sequences
    assert results["train_real_tokens_per_second"] == pytest.approx(
        results["train_questions_per_second"] * results["train_tokens_per_sample"], rel=0.01)
    assert 0 < results["train_mfu"] < 1
    profile = json.loads((out / "step_profile.json").read_text())
    assert profile["steps_profiled"] == 3 and profile["warmup_steps"] == 5
    phases = profile["phase_ms_median"]
    assert all(phases[k] >= 0 for k in ("data_wait_ms", "forward_backward_ms", "optimizer_ms", "rest_ms"))
    assert phases["forward_backward_ms"] > 0 and phases["step_ms"] >= phases["forward_backward_ms"]
    assert [row["step"] for row in profile["trace"]] == list(range(1, 10))
    assert sum(row["profiled"] for row in profile["trace"]) == 3
    assert all(len(row["shape"]) == 3 for row in profile["trace"])  # batch × options × length
    assert profile["distinct_batch_shapes"] == len({tuple(r["shape"]) for r in profile["trace"]})
    assert any(op["op"] == "aten::addmm" for op in profile["top_host_ops"])


def test_profile_steps_beyond_the_run_profiles_what_there_is(tiny_model, demo_data, tmp_path):
    out = tmp_path / "out"
    train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects", "music",
                      "--output_dir", str(out), *TRAIN_ARGS, "--max_steps", "7", "--eval_strategy", "no",
                      "--save_strategy", "no", "--load_best_model_at_end", "false", "--profile_steps", "50"])
    profile = json.loads((out / "step_profile.json").read_text())
    assert profile["steps_profiled"] == 2 and "kernel_launches_per_step" in profile


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_stage_on_a_cpu(tmp_path):
    """`make gpu-check` is only ever run on a lent GPU; its smoke mode runs the same stages here, so a broken arm
    or table is found in CI, not in the GPU's few minutes."""
    done = run_cli(python("-m", "benchmarks.gpu_check", "--smoke", "--work_dir", str(tmp_path / "gc"),
                          "--arms", "plain_b32,plain_b32_pad64,joint_b32,zero2_b32,full_job"), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    assert [a["arm"] for a in report["arms"]] == ["plain_b32", "plain_b32_pad64", "joint_b32", "zero2_b32",
                                                  "full_job"]
    assert all(a["status"] == "ok" and a["train_questions_per_second"] > 0 for a in report["arms"])
    assert all(a["forward_backward_ms"] for a in report["arms"] if a["arm"] != "full_job")
    assert report["micro"]["status"] == "ok"
    table = done.stdout[done.stdout.index("gpu-check on"):]
    assert all(a["arm"] in table for a in report["arms"])
    assert (tmp_path / "gc" / "logs" / "zero2_b32.log").is_file()


def test_gpu_check_without_cuda_says_so_in_one_line():
    done = run_cli(python("-m", "benchmarks.gpu_check"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "sees no CUDA device" in done.stderr
    assert "--smoke" in done.stderr


def test_gpu_check_reports_a_failing_arm_and_goes_on(tmp_path, monkeypatch):
    """An arm that fails (here: refused by its own arguments) gets its line and its last log lines; the next runs."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_check

    monkeypatch.setitem(gpu_check.ARMS, "broken", dict(args=["--per_device_train_batch_size", "0"], note="bad"))
    data, model = gpu_check.build_inputs(tmp_path, smoke=True)
    stage = gpu_check.run_stage("broken", gpu_check.arm_command("broken", data, model, tmp_path / "b", True), 120,
                                tmp_path / "logs", {**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert stage["status"] == "exit 2"
    assert "per_device_train_batch_size" in (tmp_path / "logs" / "broken.log").read_text()
    row = gpu_check.arm_row("broken", tmp_path / "b", stage)
    assert row["train_questions_per_second"] is None


@pytest.mark.parametrize("batch, measured_gb", [(32, 27.57), (128, 105.84)])
def test_the_gpu_memory_estimate_covers_what_an_h200_measured(batch, measured_gb):
    """gpu-check at 5e961ca on an H200 (bert-base shape, bf16, SDPA, 4 × 511 tokens): the estimate must not fall
    below the measured peak (a run the check lets through would then die of OOM), nor waste more than 10%."""
    from hf_ft.training.memory import GB, Shape, estimate

    shape = Shape(parameters=102_267_648, hidden=768, layers=12, heads=12, intermediate=3072, vocab=21128,
                  formulation="per_choice", choices=4, batch=batch, accumulation=1, length=511, eval_batch=32,
                  eval_length=511, eval_choices=4, bytes_per_activation=2, attention_probabilities=False)
    assert measured_gb <= estimate(shape, 0).peak / GB <= 1.10 * measured_gb

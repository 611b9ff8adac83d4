"""DeepSpeed ZeRO and multi-process training on the CPU: real engines, real process groups."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import ROOT, override, python, run_cli


@pytest.fixture(scope="module")
def still_model(tmp_path_factory, demo_data):
    """A tiny model without dropout, so separate processes compute exactly comparable losses."""
    from hf_ft.demo import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("still") / "model", [demo_data], dropout=0.0, seed=1)


def run_args(model, data, out, *extra):
    return override(["--model_name_or_path", str(model), "--data_dir", str(data), "--subjects", "music,STEM",
                     "--output_dir", str(out), "--max_seq_length", "64", "--per_device_train_batch_size", "8",
                     "--learning_rate", "2e-3", "--logging_steps", "1", "--max_steps", "12", "--save_strategy",
                     "steps", "--save_steps", "6", "--eval_strategy", "steps", "--eval_steps", "6", "--seed", "0"],
                    list(extra))


def launch(zero: int | None, nproc: int, args: list[str], timeout: int = 600):
    """`make train ZERO=..` (hf_ft.training.launch → accelerate launch), or torchrun without DeepSpeed."""
    if zero is None:
        command = python("-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
                         str(_port()), "run_qa.py", *args)
    else:
        command = python("-m", "hf_ft.launch", "--zero", str(zero), "--nproc", str(nproc), "--", *args)
    # A rank that dies in native code prints its Python stack (faulthandler): where a rare abort happens shows.
    result = run_cli(command, timeout=timeout, env={"PYTHONFAULTHANDLER": "1"})
    assert result.returncode == 0, crash_lines(result.stdout + result.stderr) + result.stdout[-3000:] + \
        result.stderr[-5000:]
    return result


def crash_lines(output: str) -> str:
    """The lines that say how a process died (a C++ terminate, a fatal Python error and the stacks it printed),
    first, so a failure's report keeps them whatever its length."""
    lines = output.splitlines()
    keep = [i for i, line in enumerate(lines) if any(mark in line for mark in (
        "terminate called", "Fatal Python error", "Current thread", "Thread 0x", "what():"))]
    shown = sorted({j for i in keep for j in range(i, min(len(lines), i + 12))})
    return ("how it died:\n" + "\n".join(lines[j] for j in shown) + "\n---\n") if shown else ""


def _port() -> int:
    from hf_ft.core.processes import free_port

    return free_port()


def train_losses(out) -> dict[int, float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def first_step(out) -> dict:
    state = json.loads((out / "trainer_state.json").read_text())
    return next(e for e in state["log_history"] if e.get("step") == 1 and "loss" in e)


# ----------------------------------------------------------------------------------------------
# Config checks and fallback (no training)


@pytest.mark.parametrize("config,extra,expected", [
    ("{", [], "not valid JSON"),
    ('{"zero_optimisation": {"stage": 2}}', [], "unknown key 'zero_optimisation' (did you mean zero_optimization"),
    ('{"zero_optimization": {"stage": 2, "overlap_com": true}}', [], "zero_optimization.overlap_com: unknown key"),
    ('{"zero_optimization": {"stage": 2, "reduce_bucket_size": "lots"}}', [], "zero_optimization.reduce_bucket_size"),
    ('{"gradient_accumulation_steps": "two"}', [], "'gradient_accumulation_steps' must be an integer"),
    ('{"zero_optimization": {"stage": 5}}', [], "'zero_optimization.stage' must be 0, 1, 2 or 3"),
    ('{"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 0}}', ["--per_device_train_batch_size", "8"],
     'ds train_micro_batch_size_per_gpu=4 vs hf per_device_train_batch_size=8 (use "auto")'),
    ('{"gradient_clipping": 0.5, "zero_optimization": {"stage": 0}}', [],
     'ds gradient_clipping=0.5 vs hf max_grad_norm=1.0 (use "auto")'),
    ('{"train_batch_size": 4}', [], "no 'zero_optimization' section"),
    ('{"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}}', [], "offload needs ZeRO stage 2"),
    ('{"zero_optimization": {"stage": 2}}', ["--auto_find_batch_size"], "--auto_find_batch_size cannot be used"),
    ('{"fp16": {"enabled": true}, "zero_optimization": {"stage": 2}}', [], "fp16 needs a GPU"),
])
def test_config_errors_are_one_line_each(tmp_path, config, extra, expected):
    from hf_ft.config.arguments import parse_args
    from hf_ft.core.errors import UserError

    path = tmp_path / "ds.json"
    path.write_text(config, encoding="utf-8")
    with pytest.raises(UserError) as err:
        parse_args(["--output_dir", str(tmp_path / "o"), "--deepspeed", str(path), *extra])
    assert expected in str(err.value)
    assert all(line.startswith(f"--deepspeed {path}: ") for line in str(err.value).splitlines())


@pytest.mark.parametrize("nproc", [1, 2])
def test_make_train_ends_on_the_child_s_one_line_error(tmp_path, nproc):
    """`make train ARGS="--learing_rate 1e-3"`: the launcher's CalledProcessError (one process) or torchrun's
    ChildFailedError report (two) is held back; the run's one line is the last, and the exit status is 2."""
    result = run_cli(python("-m", "hf_ft.launch", "--zero", "0", "--nproc", str(nproc), "--",
                            "--output_dir", str(tmp_path / "o"), "--learing_rate", "1e-3"), timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown argument --learing_rate (did you mean --learning_rate?)"), last


def test_missing_config_and_offload_flag_errors(tmp_path):
    from hf_ft.core.errors import UserError

    result = run_cli(python("run_qa.py", "--output_dir", str(tmp_path), "--deepspeed", "nope.json"))
    assert result.returncode == 2 and "--deepspeed nope.json: config file not found" in result.stderr
    assert "Traceback" not in result.stderr
    from hf_ft.training.launch import build_command

    with pytest.raises(UserError, match="OFFLOAD=1 needs ZERO=2 or ZERO=3"):
        build_command(1, True, 1, [])


def test_offload_without_a_gpu_falls_back(tmp_path, caplog):
    from hf_ft.config.arguments import parse_args

    args = parse_args(["--output_dir", str(tmp_path), "--deepspeed", "ds_configs/zero3_offload.json"])
    assert args.training.deepspeed is None
    assert args.deepspeed.used is False and "offload" in args.deepspeed.reason
    assert "Training continues with plain PyTorch" in caplog.text
    from hf_ft.core.errors import UserError

    with pytest.raises(UserError, match="--require_deepspeed: ZeRO offload"):
        parse_args(["--output_dir", str(tmp_path), "--deepspeed", "ds_configs/zero3_offload.json",
                    "--require_deepspeed"])


@pytest.mark.slow
def test_fallback_when_deepspeed_cannot_be_imported(tmp_path, demo_data, tiny_model):
    shadow = tmp_path / "shadow" / "deepspeed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("simulated broken DeepSpeed")\n')
    env = {"PYTHONPATH": str(tmp_path / "shadow")}
    out = tmp_path / "out"
    args = run_args(tiny_model, demo_data, out, "--max_steps", "3", "--deepspeed", "ds_configs/zero3.json")
    result = run_cli(python("run_qa.py", *args), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    warning = "DeepSpeed not used: DeepSpeed cannot be imported (ImportError: simulated broken DeepSpeed)"
    assert (result.stdout + result.stderr).count(warning) == 1
    assert "dropped: ZeRO stage 3" in result.stderr
    record = json.loads((out / "hf_ft_run.json").read_text())["deepspeed"]
    assert record["used"] is False and record["stage"] == 3 and "simulated" in record["reason"]
    assert json.loads((out / "train_results.json").read_text())["deepspeed_stage"] == -1
    strict = run_cli(python("run_qa.py", *run_args(tiny_model, demo_data, tmp_path / "strict", "--deepspeed",
                                                   "ds_configs/zero3.json", "--require_deepspeed")), env=env)
    assert strict.returncode == 2 and "--require_deepspeed: DeepSpeed cannot be imported" in strict.stderr


# ----------------------------------------------------------------------------------------------
# Training under ZeRO, 1 and 2 processes


@pytest.mark.slow
@pytest.mark.parametrize("zero,nproc,formulation", [(0, 1, "per_choice"), (3, 1, "per_choice"), (3, 2, "per_choice"),
                                                    (0, 2, "joint")])  # two processes at stage 0: joint
def test_zero_training_saves_a_model_that_predicts_identically(zero, nproc, formulation, tmp_path, demo_data,
                                                               tiny_model):
    """With joint, each process merges its questions' 4 rotations before the predictions are gathered."""
    out = tmp_path / "out"
    launch(zero, nproc, run_args(tiny_model, demo_data, out, "--formulation", formulation))
    record = json.loads((out / "hf_ft_run.json").read_text())
    assert record["deepspeed"]["used"] and record["deepspeed"]["stage"] == zero
    assert record["hyperparameters"]["world_size"] == nproc
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 12
    assert (out / "validation_loss_curve.png").is_file() and (out / "checkpoint-12").is_dir()
    # The saved model.safetensors is an ordinary HF model that scores exactly like the trained one did.
    from hf_ft.data.files import load_items
    from hf_ft.evaluation.scoring import load_scorer

    rows = load_items(out / "test_qa_data.json")
    reloaded = load_scorer(str(out), use_cpu=True, max_length=64).score(rows, batch_size=32, progress=False)
    trained = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in trained] == [r.id for r in rows]
    np.testing.assert_allclose(reloaded, [p["scores"] for p in trained], atol=1e-5)


@pytest.mark.slow
def test_every_rank_leaves_the_process_group_when_a_run_ends(tmp_path, demo_data, tiny_model):
    """A rank still in a gloo group at exit can abort (SIGABRT) after a run that succeeded; run_qa.py's
    entry point must leave the group on every rank."""
    script = tmp_path / "entry.py"
    report = tmp_path / "ranks"
    report.mkdir()
    script.write_text("import os, sys\nimport torch.distributed as dist\nfrom hf_ft.cli import main\n"
                      "main(['train', *sys.argv[1:]])\n"
                      f"open(os.path.join({str(report)!r}, 'rank-' + os.environ['RANK']), 'w')"
                      ".write(str(dist.is_initialized()))\n")  # a file per rank: their stdout lines interleave
    args = run_args(tiny_model, demo_data, tmp_path / "out", "--max_steps", "2", "--eval_strategy", "no",
                    "--save_strategy", "no")
    result = run_cli(python("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
                            str(script), *args), env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert {p.name: p.read_text() for p in report.iterdir()} == {"rank-0": "False", "rank-1": "False"}


@pytest.mark.slow
def test_plain_python_with_deepspeed_needs_no_launcher(tmp_path, demo_data, tiny_model):
    out = tmp_path / "out"
    result = run_cli(python("run_qa.py", *run_args(tiny_model, demo_data, out, "--max_steps", "3", "--deepspeed",
                                                   "ds_configs/zero2.json", "--require_deepspeed")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mpi4py" not in result.stderr
    recorded = json.loads((out / "hf_ft_run.json").read_text())["deepspeed"]
    assert (out / recorded.pop("config")).resolve() == ROOT / "ds_configs" / "zero2.json"  # relative to out
    assert recorded == {"used": True, "stage": 2, "offload": False, "reason": None}
    assert json.loads((out / "train_results.json").read_text())["deepspeed_stage"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("zero", [None, 3])
def test_two_processes_give_the_one_process_loss_and_gradients(zero, tmp_path, demo_data, still_model):
    """Same 16 examples in the first step: one process with batch 16, or two with batch 8 each."""
    common = ["--train_sampling_strategy", "sequential", "--max_steps", "1", "--eval_strategy", "no",
              "--save_strategy", "no", "--load_best_model_at_end", "false"]
    one = tmp_path / "one"
    two = tmp_path / "two"
    launch(zero, 1, run_args(still_model, demo_data, one, *common, "--per_device_train_batch_size", "16"))
    launch(zero, 2, run_args(still_model, demo_data, two, *common, "--per_device_train_batch_size", "8"))
    a, b = first_step(one), first_step(two)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
    assert 1.2 < b["loss"] < 1.6  # about ln 4 for an untrained head, not twice that


@pytest.mark.slow
@pytest.mark.parametrize("zero,formulation", [(3, "per_choice"), (None, "joint")])
def test_two_process_resume_in_the_second_epoch_reproduces_the_uninterrupted_run(zero, formulation, tmp_path,
                                                                                   demo_data, tiny_model):
    """music alone at 2 × 8 questions per step: 7 steps per epoch, so checkpoint-8 is in the second epoch,
    where the sampler's and joint's draws depend on the epoch."""
    extra = ["--subjects", "music", "--save_steps", "4", "--eval_steps", "4", "--formulation", formulation]
    full = tmp_path / "full"
    launch(zero, 2, run_args(tiny_model, demo_data, full, *extra))
    assert json.loads((full / "trainer_state.json").read_text())["log_history"][-1]["epoch"] > 1
    resumed = tmp_path / "resumed"
    result = launch(zero, 2, run_args(tiny_model, demo_data, resumed, *extra, "--resume_from_checkpoint",
                                      str(full / "checkpoint-8")))
    assert f"resuming from {full / 'checkpoint-8'}" in result.stdout + result.stderr
    reference, continued = train_losses(full), train_losses(resumed)
    assert sorted(continued) == list(range(1, 13))  # the history comes with the checkpoint
    for step in range(9, 13):
        assert continued[step] == pytest.approx(reference[step], rel=1e-6), step


@pytest.mark.slow
def test_two_nodes_on_loopback_train_together(tmp_path, demo_data, tiny_model):
    """Two launcher invocations (node 0 and node 1, one process each) against a master on 127.0.0.1."""
    single = tmp_path / "single"
    launch(None, 2, run_args(tiny_model, demo_data, single))
    nodes = tmp_path / "nodes"
    port = str(_port())
    procs = []
    for rank in (0, 1):
        command = python("-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2", "--machine_rank",
                         str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                         "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
                         "run_qa.py", *run_args(tiny_model, demo_data, nodes))
        procs.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert train_losses(nodes) == pytest.approx(train_losses(single), rel=1e-5)
    assert json.loads((nodes / "hf_ft_run.json").read_text())["hyperparameters"]["world_size"] == 2


@pytest.mark.slow
def test_two_process_seeds_each_equal_a_run_of_that_seed_alone(tmp_path, demo_data, still_model):
    """--seeds under 2 processes: the process group outlives each seed's run (the entry point leaves it), every
    seed finishes, and seed 2 of the set trains exactly as a 2-process run of --seed 2 alone (same split)."""
    common = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
              "--max_steps", "4", "--logging_steps", "1"]
    both = tmp_path / "seeds"
    launch(None, 2, run_args(still_model, demo_data, both, "--seeds", "1,2", *common))
    alone = tmp_path / "alone"
    launch(None, 2, run_args(still_model, demo_data, alone, "--split_seed", "0", *common) + ["--seed", "2"])
    for seed in (1, 2):
        assert (both / f"seed-{seed}" / "hf_ft_finished.json").is_file()
    assert json.loads((both / "seeds_summary.json").read_text())["runs"][1]["seed"] == 2
    assert train_losses(both / "seed-2") == train_losses(alone)
    assert train_losses(both / "seed-1") != train_losses(alone)
    def accuracies(folder):
        return {k: v for k, v in json.loads((folder / "eval_results.json").read_text()).items() if "accuracy" in k}

    assert accuracies(both / "seed-2") == accuracies(alone) and accuracies(alone)


LEAVE_PROBE = """
import gc, sys
from torch.nn.parallel import DistributedDataParallel
from hf_ft.config.arguments import parse_args
from hf_ft.core.errors import run_user_errors
from hf_ft.training.run import train
run_user_errors(lambda: train(parse_args(sys.argv[1:])))
alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
print(f"DDP wrappers alive after the run left its group: {alive}", flush=True)
"""


@pytest.mark.slow
def test_a_finished_run_leaves_no_wrapper_holding_its_process_group(tmp_path, demo_data, still_model):
    """The run's DistributedDataParallel wrapper holds the gloo group through its reducer and sits in reference
    cycles; leaving the group must free it first, or the group lives on into interpreter teardown, where gloo
    can abort a finished run (SIGABRT, a rare CI failure)."""
    probe = tmp_path / "probe.py"
    probe.write_text(LEAVE_PROBE)
    result = run_cli(python("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
                            str(probe), *run_args(still_model, demo_data, tmp_path / "run", "--eval_strategy", "no",
                                                  "--save_strategy", "no", "--load_best_model_at_end", "false",
                                                  "--max_steps", "2")), env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, crash_lines(result.stdout + result.stderr) + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("DDP wrappers alive")]
    assert lines == ["DDP wrappers alive after the run left its group: 0"] * 2, result.stdout[-2000:]


@pytest.mark.slow
def test_two_process_folds_score_every_pool_question_once_as_a_fold_run_alone_does(tmp_path, demo_data, still_model):
    """--folds under 2 processes: both folds finish, the gathered fold predictions hold each training-pool
    question once, and fold 1 of the loop trains and answers exactly as a 2-process `--fold 1` run alone."""
    common = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
              "--max_steps", "4", "--logging_steps", "1", "--folds", "2"]
    both = tmp_path / "folds"
    launch(None, 2, run_args(still_model, demo_data, both, *common))
    alone = tmp_path / "fold-1"
    launch(None, 2, run_args(still_model, demo_data, alone, *common, "--fold", "1"))
    summary = json.loads((both / "folds_summary.json").read_text())
    ids = [json.loads(line)["id"] for k in (0, 1) for line in (both / f"fold-{k}" / "fold_predictions.jsonl")
           .read_text().splitlines()]
    assert len(ids) == len(set(ids)) == summary["out_of_fold"]["overall"]["n"] > 0
    assert train_losses(both / "fold-1") == train_losses(alone)
    assert (both / "fold-1" / "fold_predictions.jsonl").read_text() == (alone / "fold_predictions.jsonl").read_text()


@pytest.mark.slow
def test_two_process_evaluate_with_audit(tmp_path, demo_data, still_model):
    """evaluate --audit trains the choices-only model in-process and then scores and gathers over both
    processes: the training must leave the process group standing."""
    out = tmp_path / "run"
    launch(None, 1, run_args(still_model, demo_data, out, "--eval_strategy", "no", "--save_strategy", "no",
                             "--load_best_model_at_end", "false", "--max_steps", "4"))
    result = run_cli(python("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                            "--main_process_port", str(_port()), "-m", "hf_ft.evaluate", "--original",
                            str(still_model), "--finetuned", str(out), "--use_cpu", "--audit", "--max_items", "24",
                            "--output_dir", str(tmp_path / "comparison")), timeout=900)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 0 and not errors, "\n".join(errors) + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    audit = json.loads((tmp_path / "comparison" / "comparison.json").read_text())["audit"]
    assert audit["choices_only"]["accuracy"] is not None and audit["verdict"]

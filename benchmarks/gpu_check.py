"""GPU check (`make gpu-check`): what hf_ft does on one GPU, arm by arm, in about six minutes, offline.

    python -m benchmarks.gpu_check [--arms plain_b32,zero2_b32,...] [--output out/gpu-check/gpu_check.json]
    python -m benchmarks.gpu_check --smoke      # the same stages with a tiny model on a CPU (CI runs this)

Data with TMMLU+'s size and length profile and a randomly initialised bert-base-shaped model are built locally.
Each arm is the command users run (`run_qa.py`, or `hf_ft.training.launch` for DeepSpeed) in its own process, under its
own time limit, its output streamed to `<work_dir>/logs/<arm>.log`; a failed, out-of-memory or overdue arm prints
its last lines, gets its line in the table, and the check goes on. First a micro stage times forward+backward at
a repeated and at ever-new batch shapes, with and without cuDNN attention: a cost paid per new shape shows there.

The table, printed last and written as JSON: questions/s, real tokens/s and MFU (against the bf16 matmul peak
measured here), peak GPU memory against hf_ft's estimate, and the step split from `--profile_steps` (data wait,
forward+backward, optimizer, device busy, host gap, kernel launches and syncs per step).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FULL_ROWS = 25_000  # TMMLU+ v1.0: 22,690 test rows, ~2,000 val and 330 dev in 66 subjects
PROFILE_STEPS = 10

# name → extra run_qa.py flags (and launcher), what it shows. Order: the cheapest and most telling first.
ARMS = {
    "plain_b32": dict(args=[], note="defaults (per_choice, batch 32)"),
    "plain_b32_cudnn": dict(args=["--cudnn_attention"], note="cuDNN attention allowed"),
    "plain_b32_pad64": dict(args=["--pad_to_multiple_of", "64"], note="lengths rounded up to 64"),
    "plain_b128": dict(args=["--per_device_train_batch_size", "128"], note="a large batch"),
    "joint_b32": dict(args=["--formulation", "joint"], note="joint, 4 rotations"),
    "compile_b32_pad64": dict(args=["--torch_compile", "--pad_to_multiple_of", "64"], timeout=170,
                              note="torch.compile (inductor), lengths rounded to 64"),
    "zero2_b32": dict(args=[], zero=2, timeout=120, note="DeepSpeed ZeRO-2, one GPU"),
    "zero3_b32": dict(args=[], zero=3, timeout=120, note="DeepSpeed ZeRO-3, one GPU"),
    "full_job": dict(args=None, timeout=170, note="the whole job: 3 epochs, evaluation, full test, card"),
}


def log(message: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_inputs(work: Path, smoke: bool) -> tuple[Path, Path]:
    """Data in the TMMLU+ layout and a random-init model (bert-base shape and vocabulary size; tiny in smoke)."""
    from benchmarks.common import BERT_BASE_CHINESE_VOCAB, build_model, write_layout

    data, model = work / "data", work / "model"
    if not (data / ".complete").is_file():
        write_layout(data, 700 if smoke else FULL_ROWS, seed=0)
        (data / ".complete").write_text("")
    if not (model / ".complete").is_file():
        build_model(model, "tiny" if smoke else "bert-base", vocab_size=None if smoke else BERT_BASE_CHINESE_VOCAB)
        (model / ".complete").write_text("")
    return data, model


def arm_command(name: str, data: Path, model: Path, out: Path, smoke: bool) -> list[str]:
    arm = ARMS[name]
    common = ["--model_name_or_path", str(model), "--data_dir", str(data), "--output_dir", str(out),
              "--overwrite_output_dir", "--report_to", "none", "--seed", "0"]
    common += ["--no_auto_bf16", "--max_seq_length", "128"] if smoke else ["--max_seq_length", "512"]
    batch = "8" if smoke else "32"  # smoke: the same arms at a size a CPU runs in seconds
    if arm["args"] is None:  # the whole job, as shipped
        return [sys.executable, str(ROOT / "run_qa.py"), *common, "--per_device_train_batch_size", batch] + (
            ["--max_steps", "12"] if smoke else [])
    steps = 8 if smoke else 60
    flags = [*common, "--per_device_train_batch_size", batch, "--max_steps", str(steps), "--eval_strategy", "no",
             "--save_strategy", "no", "--load_best_model_at_end", "false", "--logging_steps", "20",
             "--max_eval_samples", "64" if smoke else "256", "--max_test_samples", "128" if smoke else "2048",
             "--profile_steps", "2" if smoke else str(PROFILE_STEPS),
             *[("16" if smoke and a == "128" else a) for a in arm["args"]]]
    if arm.get("zero") is not None:
        return [sys.executable, "-m", "hf_ft.launch", "--zero", str(arm["zero"]), "--nproc", "1", "--", *flags,
                "--require_deepspeed"]
    return [sys.executable, str(ROOT / "run_qa.py"), *flags]


def run_stage(name: str, command: list[str], timeout: float, logs: Path, env: dict) -> dict:
    """Run one stage in its own process group, its output streamed to logs/<name>.log; never raises."""
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{name}.log"
    log(f"{name}: started (limit {timeout:.0f} s), log {path}")
    start = time.perf_counter()
    with path.open("w", encoding="utf-8") as out:
        out.write("+ " + " ".join(command) + "\n")
        out.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = f"over its {timeout:.0f} s limit"
    wall = time.perf_counter() - start
    text = path.read_text(encoding="utf-8", errors="replace")
    if status != "ok":
        if "out of memory" in text.lower() or "OutOfMemoryError" in text:
            status = "out of GPU memory"
        tail = [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-15:]
        log(f"{name}: {status} after {wall:.0f} s; its last lines:\n    " + "\n    ".join(tail))
    else:
        log(f"{name}: ok in {wall:.0f} s")
    return {"status": status, "wall_s": round(wall, 1), "log": str(path)}


def arm_row(name: str, out: Path, stage: dict) -> dict:
    """The table's line for one arm, from the files its run wrote."""
    row = {"arm": name, "note": ARMS[name]["note"], **stage}
    results = {}
    for file in ("train_results.json", "all_results.json"):
        if (out / file).is_file():
            results.update(json.loads((out / file).read_text()))
    profile = json.loads((out / "step_profile.json").read_text()) if (out / "step_profile.json").is_file() else {}
    row.update({k: results.get(k) for k in (
        "train_questions_per_second", "train_real_tokens_per_second", "train_mfu", "matmul_peak_tflops",
        "peak_gpu_memory_mb", "estimated_peak_memory_mb", "test_samples_per_second", "eval_samples_per_second",
        "train_step_seconds")})
    steady_ms, step_s = profile.get("unprofiled_step_ms_mean"), results.get("train_step_seconds")
    if steady_ms and step_s and results.get("train_questions_per_second"):  # without start-up and profiled steps
        speedup = step_s * 1e3 / steady_ms
        row.update({f"steady_{k}": round(results[k] * speedup, 4 if k == "train_mfu" else 1) for k in (
            "train_questions_per_second", "train_real_tokens_per_second", "train_mfu")})
    phases = profile.get("phase_ms_median", {})
    row.update({
        "data_wait_ms": phases.get("data_wait_ms"), "forward_backward_ms": phases.get("forward_backward_ms"),
        "optimizer_ms": phases.get("optimizer_ms"), "profiled_step_ms": phases.get("step_ms"),
        **{k: profile.get(k) for k in ("device_busy_ms_per_step", "host_gap_ms_per_step", "kernel_launches_per_step",
                                       "device_syncs_per_step", "host_reads_per_step", "distinct_batch_shapes",
                                       "unprofiled_step_ms_median", "top_device_ops", "top_host_ops")}})
    return row


# ----------------------------------------------------------------------------------------------
# The micro stage: forward+backward at a repeated shape and at new shapes, cuDNN attention on and off


def micro(model_dir: Path, smoke: bool, output: Path) -> None:
    import torch
    from transformers import AutoModelForMultipleChoice

    from hf_ft.training.speed import sync, use_cudnn_attention

    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    model = AutoModelForMultipleChoice.from_pretrained(model_dir, use_kernels=False).to(device).train()
    batch, steps = (4, 3) if smoke else (32, 8)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)

    def inputs(length: int) -> dict:
        ids = torch.randint(5, min(vocab, 500), (batch, 4, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[:, :, length * 3 // 4:] = 0  # a padding mask, as every length-varying batch has
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                "labels": torch.zeros(batch, dtype=torch.long, device=device)}

    def step(x) -> float:
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**x).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        sync(device)
        return 1e3 * (time.perf_counter() - start)

    results = {"device": device, "batch": batch, "steps": steps}
    for cudnn in (True, False):
        use_cudnn_attention(cudnn)
        step(inputs(128))  # warm
        same = sorted(step(inputs(128)) for _ in range(steps))
        new = sorted(step(inputs(96 + 5 * k + (0 if cudnn else 2))) for k in range(steps))  # never seen before
        key = "cudnn_on" if cudnn else "cudnn_off"
        results[key] = {"same_shape_ms_median": round(same[len(same) // 2], 2),
                        "new_shape_ms_median": round(new[len(new) // 2], 2)}
        log(f"micro {key}: same shape {results[key]['same_shape_ms_median']} ms, "
            f"new shape {results[key]['new_shape_ms_median']} ms per forward+backward")
    output.write_text(json.dumps(results, indent=2))


# ----------------------------------------------------------------------------------------------
# The table


def fmt(value, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(report: dict) -> None:
    print(f"\ngpu-check on {report['device']} ({report['model']}, {report['precision']}, torch {report['torch']}, "
          f"transformers {report['transformers']}); matmul peak {fmt(report.get('matmul_peak_tflops'), '.0f')} "
          f"TFLOP/s; total {report['wall_s']:.0f} s")
    micro_report = report.get("micro") or {}
    for key in ("cudnn_on", "cudnn_off"):
        if key in micro_report:
            m = micro_report[key]
            print(f"  micro {key:<9} fwd+bwd: same shape {m['same_shape_ms_median']} ms, "
                  f"new shape {m['new_shape_ms_median']} ms")
    header = (f"{'arm':<19}{'status':<8}{'q/s':>7}{'tok/s':>9}{'MFU':>7}{'steady':>7}{'tok/s':>9}{'MFU':>7}"
              f"{'test q/s':>9}{'GPU MB':>8}{'est MB':>8}"
              f"{'data':>7}{'f+b':>7}{'opt':>7}{'busy':>7}{'gap':>7}{'launch':>7}{'sync':>5}{'shapes':>7}{'wall':>6}")
    print(header)
    print("-" * len(header))
    for r in report["arms"]:
        status = "ok" if r["status"] == "ok" else ("OOM" if "memory" in r["status"] else
                                                    "timeout" if "limit" in r["status"] else "FAILED")
        print(f"{r['arm']:<19}{status:<8}{fmt(r.get('train_questions_per_second'), '.0f'):>7}"
              f"{fmt(r.get('train_real_tokens_per_second'), '.0f'):>9}{fmt(r.get('train_mfu'), '.1%'):>7}"
              f"{fmt(r.get('steady_train_questions_per_second'), '.0f'):>7}"
              f"{fmt(r.get('steady_train_real_tokens_per_second'), '.0f'):>9}{fmt(r.get('steady_train_mfu'), '.1%'):>7}"
              f"{fmt(r.get('test_samples_per_second'), '.0f'):>9}{fmt(r.get('peak_gpu_memory_mb'), '.0f'):>8}"
              f"{fmt(r.get('estimated_peak_memory_mb'), '.0f'):>8}{fmt(r.get('data_wait_ms'), '.1f'):>7}"
              f"{fmt(r.get('forward_backward_ms'), '.1f'):>7}{fmt(r.get('optimizer_ms'), '.1f'):>7}"
              f"{fmt(r.get('device_busy_ms_per_step'), '.1f'):>7}{fmt(r.get('host_gap_ms_per_step'), '.1f'):>7}"
              f"{fmt(r.get('kernel_launches_per_step'), '.0f'):>7}{fmt(r.get('device_syncs_per_step'), '.0f'):>5}"
              f"{fmt(r.get('distinct_batch_shapes'), 'd'):>7}{r['wall_s']:>6.0f}")
    print("q/s, tok/s, MFU: over all training steps; steady: without the first step and the profiled ones; "
          "data/f+b/opt/busy/gap: ms per profiled step (each phase synced); "
          "launch, sync: per step; est MB: hf_ft's memory estimate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few steps, fp32: runs on a CPU")
    parser.add_argument("--arms", default=None, help=f"comma-separated, default all: {', '.join(ARMS)}")
    parser.add_argument("--work_dir", default=str(ROOT / "out" / "gpu-check"))
    parser.add_argument("--output", default=None, help="the JSON report (default <work_dir>/gpu_check.json)")
    parser.add_argument("--stage_timeout", type=float, default=100, help="seconds per arm (some arms have more)")
    parser.add_argument("--budget", type=float, default=330,
                        help="seconds for the whole check: an arm that cannot finish inside it is skipped")
    parser.add_argument("--skip_micro", action="store_true")
    parser.add_argument("--micro", action="store_true", help=argparse.SUPPRESS)  # the micro stage's own process
    from benchmarks.common import parse_benchmark_args

    args = parse_benchmark_args(parser, argv)
    work = Path(args.work_dir)
    if args.micro:
        micro(work / "model", args.smoke, work / "micro.json")
        return 0
    # --smoke leaves torch.compile out unless named: inductor builds C++ on a CPU for a minute or more
    arms = args.arms.split(",") if args.arms else [a for a in ARMS if not (args.smoke and "compile" in a)]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        print(f"error: gpu-check: unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    import torch
    import transformers

    if not torch.cuda.is_available() and not args.smoke:
        print(f"error: gpu-check: torch {torch.__version__} sees no CUDA device here; `--smoke` runs the same stages "
              "with a tiny model on this CPU", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    log(f"building data and model in {work}")
    data, model = build_inputs(work, args.smoke)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "HF_DATASETS_CACHE": str(work / "datasets_cache"),  # arms share the tokenized sets
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(work / "torch_extensions"))}
    from hf_ft.training.speed import matmul_peak_flops

    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    peak = matmul_peak_flops(device, dtype)
    log(f"matmul peak {peak / 1e12:.1f} TFLOP/s ({str(dtype).removeprefix('torch.')}, {device})")
    report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)",
              "model": "tiny (smoke)" if args.smoke else "bert-base shape, random init",
              "precision": "fp32" if args.smoke else "bf16", "torch": torch.__version__,
              "transformers": transformers.__version__, "matmul_peak_tflops": round(peak / 1e12, 1),
              "rows": 700 if args.smoke else FULL_ROWS, "arms": []}
    if not args.skip_micro:
        stage = run_stage("micro", [sys.executable, "-m", "benchmarks.gpu_check", "--micro", "--work_dir", str(work),
                                    *(["--smoke"] if args.smoke else [])], 60, logs, env)
        report["micro"] = {**(json.loads((work / "micro.json").read_text()) if stage["status"] == "ok" else {}),
                           **stage}
    for name in arms:
        limit = ARMS[name].get("timeout", args.stage_timeout)
        left = args.budget - (time.perf_counter() - started)
        out = work / "arms" / name
        if left < min(limit, 30):
            log(f"{name}: skipped, {left:.0f} s left of the {args.budget:.0f} s budget")
            report["arms"].append({"arm": name, "note": ARMS[name]["note"], "status": "skipped (budget)",
                                   "wall_s": 0.0})
            continue
        stage = run_stage(name, arm_command(name, data, model, out, args.smoke), min(limit, left), logs, env)
        report["arms"].append(arm_row(name, out, stage))
    report["wall_s"] = round(time.perf_counter() - started, 1)
    output = Path(args.output) if args.output else work / "gpu_check.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    from benchmarks.common import WRITTEN_BY

    output.write_text(json.dumps({**report, "written_by": WRITTEN_BY}, indent=2, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    print_table(report)
    print(f"report: {output}; logs: {logs}")
    return 0 if all(r["status"] == "ok" for r in report["arms"]) else 1


if __name__ == "__main__":
    sys.exit(main())

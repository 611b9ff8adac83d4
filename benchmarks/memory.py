"""The memory estimate against measured peak RSS: each setting trains a few steps through run_qa.py in its
own process, on rows long enough that every batch is the largest (512 tokens per sequence), and the
child's peak RSS (sampled every 20 ms) is compared with the estimate the run printed.

    python -m benchmarks.memory --output bench_memory.json [--quick] [--settings mid-per_choice,...]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.common import CHARS, ROOT, build_model, machine, parse_benchmark_args, write_report

SETTINGS = {  # name: (model size, formulation, batch, extra run_qa.py flags)
    "mid-per_choice": ("mid", "per_choice", 8, []),
    "mid-joint": ("mid", "joint", 8, []),
    # bert-base at batch 8 with every sequence at 512 tokens needs ~24 GB: on this 24 GB machine the kernel
    # killed it at 24.1 GB RSS (the estimate's check stops it first); batch 4 fits
    "bert-base-per_choice-batch4": ("bert-base", "per_choice", 4, []),
    "bert-base-per_choice-batch4-checkpointing": ("bert-base", "per_choice", 4, ["--gradient_checkpointing"]),
    "bert-base-per_choice": ("bert-base", "per_choice", 8, []),
}
DEFAULT = "mid-per_choice,mid-joint,bert-base-per_choice-batch4,bert-base-per_choice-batch4-checkpointing"


def long_rows(folder: Path, rows: int, seed: int = 0) -> Path:
    """A flat CSV whose every question is past 512 tokens: each batch is padded to the longest length."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "long.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "A", "B", "C", "D", "answer"])
        for _ in range(rows):
            options = [f"{''.join(rng.choice(CHARS) for _ in range(6))}{k}" for k in "甲乙丙丁"]
            writer.writerow(["".join(rng.choice(CHARS) for _ in range(700)) + "？", *options, rng.choice("ABCD")])
    return path


def tree_rss(process: psutil.Process) -> int:
    try:
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return 0


def measure(name: str, work: Path, data: Path, steps: int) -> dict:
    size, formulation, batch, extra = SETTINGS[name]
    model = work / f"model-{size}"
    if not model.exists():
        build_model(model, size)
    out = work / f"out-{name}"
    command = [sys.executable, str(ROOT / "run_qa.py"), "--model_name_or_path", str(model), "--train_file", str(data),
               "--output_dir", str(out), "--overwrite_output_dir", "--formulation", formulation,
               "--max_seq_length", "512", "--per_device_train_batch_size", str(batch),
               "--per_device_eval_batch_size", str(batch), "--max_steps", str(steps), "--eval_strategy", "no",
               "--save_strategy", "no", "--max_eval_samples", "8", "--max_test_samples", "8", "--use_cpu",
               "--logging_steps", "1", "--skip_memory_check", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    process, peak, lines = psutil.Process(child.pid), 0, []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    while child.poll() is None:
        peak = max(peak, tree_rss(process))
        time.sleep(0.02)
    reader.join()
    log = "".join(lines)
    if child.returncode != 0:
        raise SystemExit(f"bench: {name} failed:\n{log[-3000:]}")
    found = re.search(r"memory: estimated peak ([\d.]+) GB per process \(in use now ([\d.]+), gradients ([\d.]+), "
                      r"AdamW states ([\d.]+) \(both twice at the first step\), activations of the largest batch ([\d.]+)", log)
    estimate, now, gradients, optimizer, activations = (float(x) for x in found.groups())
    step_times = [float(x) for x in re.findall(r"'train_runtime': '?([\d.]+)", log)]
    measured = peak / 1024**3
    return {"setting": name, "model": size, "formulation": formulation, "batch": batch, "max_seq_length": 512,
            "gradient_checkpointing": "--gradient_checkpointing" in extra, "steps": steps,
            "estimated_gb": estimate, "in_use_at_estimate_gb": now, "activations_gb": activations,
            "gradients_and_optimizer_gb": gradients + optimizer, "measured_peak_rss_gb": round(measured, 2),
            "estimate_error": round(estimate / measured - 1, 3),
            "train_seconds": step_times[0] if step_times else round(time.perf_counter() - start, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True)
    parser.add_argument("--settings", default=DEFAULT)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the mid settings only, one step: checks it runs")
    args = parse_benchmark_args(parser, argv)
    names = ["mid-per_choice", "mid-joint"] if args.quick else args.settings.split(",")
    with tempfile.TemporaryDirectory(prefix="hf_ft_memory_") as tmp:
        work = Path(tmp)
        data = long_rows(work / "data", 160)
        rows = [measure(name, work, data, 1 if args.quick else args.steps) for name in names]
    report = {"machine": machine(), "rows": rows, "quick": args.quick}
    write_report(args.output, report)
    print(f"{'setting':<38}{'estimate GB':>12}{'measured GB':>12}{'error':>8}{'train s':>9}")
    for r in rows:
        print(f"{r['setting']:<38}{r['estimated_gb']:>12.2f}{r['measured_peak_rss_gb']:>12.2f}"
              f"{r['estimate_error']:>+8.0%}{r['train_seconds']:>9.1f}")
    return report


if __name__ == "__main__":
    main()

"""A full-scale rehearsal of the main job (`make rehearsal`, ~30 minutes here; not in CI).

olah serves hub fixtures at TMMLU+'s full size (22.7k questions in 67 subjects, tags v1.0/v1.1) and a
bert-base-chinese-shaped model (random weights, the real tokenizer layout) on 127.0.0.1. The README's
train command runs verbatim, limited by --max_steps (and a sampled end-of-training test evaluation),
then the comparison on a --max_items sample. rehearsal.json gets what a user deciding CPU or GPU needs:
download + preparation time, tokenization time, training samples/s, evaluation items/s (trained head)
and zero-shot items/s at bert-base size, peak RSS, and the projected wall time of the whole job (3
epochs, the full test split, both sides of the comparison) on this machine and, from FLOPs and a stated
GPU peak, on one GPU.

    python -m benchmarks.rehearsal --output rehearsal.json [--max_steps 24] [--max_items 24] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, parse_benchmark_args, write_report
from tests.hub_fixtures import BERT_BASE_CHINESE, SMALL, LoopbackHub, write_fixtures

# One GPU, stated rather than measured (CI and this machine have none): an H100/H200 SXM's dense bf16 peak,
# at a model FLOPs utilisation typical of BERT-base fine-tuning with short sequences.
GPU_PEAK_TFLOPS = 989.0
GPU_MFU = 0.35
EPOCHS = 3


def encoder_params(size: dict) -> float:
    d, layers, inter = size["hidden_size"], size["num_hidden_layers"], size["intermediate_size"]
    return layers * (4 * d * d + 2 * d * inter)


def run(command: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"rehearsal: {' '.join(command[:6])} … failed (rc {done.returncode}); see {log}:\n"
                         + log.read_text()[-3000:])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="rehearsal.json")
    parser.add_argument("--max_steps", type=int, default=24)
    parser.add_argument("--max_items", type=int, default=24, help="comparison sample (both models)")
    parser.add_argument("--test_sample", type=int, default=256, help="end-of-training test evaluation sample")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--model_size", choices=["base", "small"], default="base")
    parser.add_argument("--work_dir", default=None)
    args = parse_benchmark_args(parser, argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hf_ft_rehearsal_"))
    size = BERT_BASE_CHINESE if args.model_size == "base" else SMALL
    report: dict = {"machine": machine(), "settings": vars(args)}
    try:
        start = time.perf_counter()
        shas = write_fixtures(work / "mirrors", scale=args.scale, model_size=args.model_size)
        report["fixtures_seconds"] = round(time.perf_counter() - start, 1)
        report["rows_v1_1"] = shas["dataset"]["rows_v1_1"]
        with LoopbackHub(work / "mirrors", work / "olah") as hub:
            env = {**os.environ, **hub.client_env(work / "hf_home"), "PYTHONUNBUFFERED": "1"}
            out = work / "out" / "bert-tmmlu"
            train = [sys.executable, "-m", "accelerate.commands.launch", "run_qa.py",  # the README's command
                     "--model_name_or_path", "bert-base-chinese", "--subjects", "all", "--output_dir", str(out),
                     "--max_steps", str(args.max_steps), "--eval_strategy", "no", "--save_strategy", "no",
                     "--load_best_model_at_end", "false", "--max_test_samples", str(args.test_sample),
                     "--logging_steps", "4"]
            report["train_command"] = " ".join(train[2:])
            report["train_wall_seconds"] = round(run(train, env, work / "train.log"), 1)
            compare = [sys.executable, "-m", "hf_ft.evaluate", "--original", "bert-base-chinese", "--finetuned",
                       str(out), "--max_items", str(args.max_items), "--output_dir", str(work / "comparison")]
            report["compare_command"] = " ".join(compare[2:])
            report["compare_wall_seconds"] = round(run(compare, env, work / "compare.log"), 1)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        summarize(report, out, work / "comparison", size)
        write_report(args.output, report)
        print(json.dumps(report["projection"], indent=2))
        return report
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def summarize(report: dict, out: Path, comparison: Path, size: dict) -> None:
    train = json.loads((out / "train_results.json").read_text())
    results = json.loads((out / "eval_results.json").read_text())
    manifest = json.loads((out / "data_manifest.json").read_text())
    compare = json.loads((comparison / "comparison.json").read_text())
    counts = manifest["counts"]
    report.update({
        "rows": sum(counts.values()), "counts": counts, "dataset_revision": manifest["revision"],
        "download_and_prepare_seconds": train["data_seconds"], "tokenize_seconds": train["tokenize_seconds"],
        "train_samples_per_second": train["train_samples_per_second"],
        "eval_items_per_second_head": results["test_samples_per_second"],
        "zero_shot_items_per_second": round(1000 / compare["seconds_per_1000_items"]["original"], 4),
        "head_items_per_second_in_evaluate": round(1000 / compare["seconds_per_1000_items"]["fine-tuned"], 4),
    })
    test, validation, train_rows = counts["test"], counts["validation"], counts["train"]
    cpu_seconds = {
        "training (3 epochs)": EPOCHS * train_rows / report["train_samples_per_second"],
        "validation (each epoch) and test, trained head": (EPOCHS * validation + validation + test)
        / report["eval_items_per_second_head"],
        "comparison, original (zero-shot mlm-pll)": test / report["zero_shot_items_per_second"],
        "comparison, fine-tuned (trained head)": test / report["head_items_per_second_in_evaluate"],
    }
    # FLOPs per item from the data's own token counts, for the GPU projection.
    history = json.loads((out / "loss_history.json").read_text())
    tokens_per_training_sample = train["train_tokens_per_sample"]
    passes_per_zero_shot_item = compare["forward_passes_per_item"]["original"]
    report.update(tokens_per_training_sample=tokens_per_training_sample,
                  zero_shot_passes_per_item=passes_per_zero_shot_item)
    params = encoder_params(size)
    flops = {
        "training (3 epochs)": 6 * params * tokens_per_training_sample * EPOCHS * train_rows,
        "validation (each epoch) and test, trained head": 2 * params * tokens_per_training_sample
        * (EPOCHS * validation + validation + test),
        "comparison, original (zero-shot mlm-pll)": 2 * params * (tokens_per_training_sample / 4)
        * passes_per_zero_shot_item * test,
        "comparison, fine-tuned (trained head)": 2 * params * tokens_per_training_sample * test,
    }
    gpu_flops = GPU_PEAK_TFLOPS * 1e12 * GPU_MFU
    report["projection"] = {
        "this_machine_hours": {k: round(v / 3600, 2) for k, v in cpu_seconds.items()},
        "this_machine_total_hours": round(sum(cpu_seconds.values()) / 3600, 1),
        "one_gpu_minutes": {k: round(v / gpu_flops / 60, 2) for k, v in flops.items()},
        "one_gpu_total_minutes": round(sum(flops.values()) / gpu_flops / 60, 1),
        "gpu_assumption": f"{GPU_PEAK_TFLOPS:.0f} TFLOP/s dense bf16 peak (H100/H200 SXM) at {GPU_MFU:.0%} MFU; "
                          "forward 2·N·tokens, training 6·N·tokens FLOPs (N: encoder weights)",
        "logged_steps": len(history.get("train_loss", [])),
    }


if __name__ == "__main__":
    main()

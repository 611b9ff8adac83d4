"""GPU check (`make gpu-check`): a bert-base-sized random-init model, bf16, a few hundred steps under
ZeRO-2 and ZeRO-3, through the same `make train` launcher users run. Prints samples/s and peak GPU
memory per stage and writes them to --output. Offline: data and model are built locally.

    python -m benchmarks.gpu_check [--steps 300] [--output gpu_check.json]
    python -m benchmarks.gpu_check --smoke      # a few steps of a tiny model, to check the script on a CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT
from hf_ft.demo import make_demo_data, make_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--work_dir", default=str(ROOT / "out" / "gpu-check"))
    parser.add_argument("--output", default=str(ROOT / "out" / "gpu-check" / "gpu_check.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny model, 4 steps, fp32: runs on a CPU")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.smoke:
        print("gpu-check: no CUDA device here; nothing to measure (use --smoke to exercise the script on a CPU)")
        return
    work = Path(args.work_dir)
    data = make_demo_data(work / "data", rows_per_subject=400, seed=0)
    size = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128) if args.smoke else \
        dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)  # bert-base
    model = make_tiny_model(work / "model", [data], **size, seed=0)
    steps = 4 if args.smoke else args.steps
    results = []
    for zero in (2, 3):
        out = work / f"zero{zero}"
        command = [sys.executable, "-m", "hf_ft.launch", "--zero", str(zero), "--nproc", "1", "--",
                   "--model_name_or_path", str(model), "--data_dir", str(data), "--output_dir", str(out),
                   "--overwrite_output_dir", "--max_steps", str(steps), "--per_device_train_batch_size",
                   str(args.batch_size), "--max_seq_length", "128", "--eval_strategy", "no", "--save_strategy", "no",
                   "--load_best_model_at_end", "false", "--logging_steps", "50", "--learning_rate", "1e-4",
                   "--require_deepspeed", *([] if args.smoke else ["--bf16"])]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-4000:])
            raise SystemExit(f"gpu-check: ZeRO-{zero} run failed")
        metrics = json.loads((out / "train_results.json").read_text())
        results.append({"zero": zero, "steps": steps, "batch_size": args.batch_size,
                        "train_samples_per_s": metrics["train_samples_per_second"],
                        "peak_gpu_memory_mb": metrics.get("peak_gpu_memory_mb"), "wall_s": round(wall, 1),
                        "train_loss": metrics["train_loss"]})
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)"
    print(f"\ngpu-check on {device}: {'bert-base size' if not args.smoke else 'tiny'} random init, "
          f"{'bf16' if not args.smoke else 'fp32'}, batch {args.batch_size} x 4 choices x <=128 tokens")
    print(f"{'stage':<8}{'samples/s':>12}{'peak GPU MB':>14}{'wall s':>9}{'loss':>8}")
    for r in results:
        peak = f"{r['peak_gpu_memory_mb']:.0f}" if r["peak_gpu_memory_mb"] is not None else "-"
        print(f"ZeRO-{r['zero']:<3}{r['train_samples_per_s']:>12.1f}{peak:>14}{r['wall_s']:>9.1f}{r['train_loss']:>8.3f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"device": device, "results": results}, indent=2))


if __name__ == "__main__":
    main()

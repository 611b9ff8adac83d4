"""Per-choice training speed with one competing CPU-bound process, under each thread policy.

    python -m benchmarks.contention --output bench_contention.json [--quick] [--policies a,b]

The competitor is one Python process spinning on one core, as a user's other work would (the issue measured
a test corpus running beside training). Every (policy, load) pair runs in a fresh process of its own, since
an OpenMP wait policy is read once when torch starts its threads; quiet and loaded arms of a policy run back
to back, and the score of a policy is its loaded speed as a share of its own quiet speed (2 cores, one taken:
50% is "in proportion"). The timed steps are the throughput benchmark's: batches at even quantiles of the
per-choice arm's epoch, after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SPIN = "import time\nwhile True:\n    sum(range(10000))\n"

class CoreMeter:
    """Cores kept busy by other processes since the last reading: the machine's busy CPU time less this
    process's own (its threads spinning included), over the wall time between the readings."""

    def __init__(self):
        self.process = psutil.Process()
        self.last = self._read()

    def _read(self) -> tuple[float, float, float]:
        total = psutil.cpu_times()
        busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
        own = self.process.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def others(self) -> float:
        now = self._read()
        wall = now[0] - self.last[0]
        busy = (now[1] - self.last[1]) - (now[2] - self.last[2])
        self.last = now
        return max(0.0, busy / wall) if wall > 0 else 0.0


def free_core_threads(interval: float):
    """The `free_cores` candidate, as a Trainer callback: every `interval` seconds, torch's intra-op threads :=
    the cores other processes left (a core counts as taken when they used more than half of it). Measured
    and not adopted: it loses to the passive wait policy alone (docs/benchmarks.md, "Under load")."""
    import torch
    from transformers import TrainerCallback

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    class FreeCoreThreads(TrainerCallback):
        meter, next_check = None, 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.meter, self.next_check = CoreMeter(), time.monotonic() + min(interval, 1.0)

        def on_step_begin(self, args, state, control, **kwargs):
            if self.meter is not None and time.monotonic() >= self.next_check:
                self.next_check = time.monotonic() + interval
                torch.set_num_threads(max(1, min(cores, cores - int(self.meter.others() + 0.5))))

    return FreeCoreThreads()


POLICIES = {
    "all_cores": {"env": {"OMP_WAIT_POLICY": ""}, "threads": "all",
                  "description": "torch's own default: one intra-op thread per core, libgomp's own wait policy "
                                 "(spin a while, then sleep; OMP_WAIT_POLICY empty)"},
    "passive_wait": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": "all",
                     "description": "hf_ft's default: as all_cores, but OpenMP threads sleep at once at a barrier"},
    "free_cores": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": "free",
                   "description": "as passive_wait, and every 2 s threads := the cores other processes leave"},
    "one_thread": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": "1",
                   "description": "as passive_wait with one intra-op thread, always"},
}


def child(spec: dict) -> dict:
    """One arm in this process: the per-choice arm of benchmarks.throughput, timed, with the policy's threads."""
    import torch
    from transformers import AutoTokenizer

    from benchmarks.throughput import ARMS, run_arm
    from hf_ft.data.sources import load_data_dir
    from hf_ft.data.splits import make_splits

    torch.set_num_threads(1 if spec["threads"] == "1" else os.cpu_count() or 1)
    callbacks = [free_core_threads(spec["interval"])] if spec["threads"] == "free" else []
    work = Path(spec["work"])
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    splits = make_splits(load_data_dir(str(work / "data")), "resplit", 0, 0.1, (0.85, 0.15, 0.0), needs_test=False)
    arm = next(a for a in ARMS if a["name"] == "hf_ft_per_choice")
    result = run_arm(arm, work / "model", tokenizer, splits, spec["max_length"], spec["steps"], 8,
                     work / spec["name"], spec["peak"], evaluate=False, callbacks=callbacks)
    result["threads_at_end"] = torch.get_num_threads()
    return result


def run_child(spec: dict, env: dict, competitor: bool) -> dict:
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if competitor else None
    try:
        out = Path(spec["work"]) / f"{spec['name']}.json"
        command = [sys.executable, "-m", "benchmarks.contention", "--child", json.dumps(spec), "--output", str(out)]
        subprocess.run(command, check=True, env={**os.environ, **env})
        return json.loads(out.read_text())
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per arm")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated: " + ", ".join(POLICIES))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    from benchmarks.common import parse_benchmark_args

    args = parse_benchmark_args(parser, argv)
    if args.child:
        result = child(json.loads(args.child))
        Path(args.output).write_text(json.dumps(result))
        return result
    names = args.policies.split(",")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise SystemExit(f"bench: unknown polic{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}")
    import torch

    from benchmarks.common import build_model, machine, matmul_gflops, write_layout, write_report

    torch.set_num_threads(os.cpu_count() or 1)
    steps = args.steps or (2 if args.quick else 12)
    max_length = 128 if args.quick else 512
    with tempfile.TemporaryDirectory(prefix="hf_ft_contention_") as work:
        work = Path(work)
        peak = matmul_gflops("cpu", torch.float32)
        build_model(work / "model", "mid")
        write_layout(work / "data", 700 if args.quick else 3000, seed=0)
        results = {}
        for name in names:
            policy = POLICIES[name]
            results[name] = {"description": policy["description"], "env": policy["env"]}
            for load in ("quiet", "one_competitor"):
                spec = {"name": f"{name}-{load}", "work": str(work), "steps": steps, "max_length": max_length,
                        "peak": peak, "threads": policy["threads"], "interval": 2.0}
                start = time.perf_counter()
                arm = run_child(spec, policy["env"], competitor=load != "quiet")
                results[name][load] = {"train_samples_per_s": arm["train_samples_per_s"], "mfu": arm["mfu"],
                                       "threads_at_end": arm["threads_at_end"],
                                       "wall_seconds": round(time.perf_counter() - start, 1)}
                print(f"  {name:<14} {load:<15} train {arm['train_samples_per_s']:6.2f}/s  "
                      f"threads at end {arm['threads_at_end']}", flush=True)
            quiet, loaded = results[name]["quiet"], results[name]["one_competitor"]
            results[name]["loaded_share_of_quiet"] = round(
                loaded["train_samples_per_s"] / quiet["train_samples_per_s"], 3)
        base = results.get("all_cores", {}).get("quiet")
        for name in names:
            if base:
                results[name]["quiet_vs_all_cores_quiet"] = round(
                    results[name]["quiet"]["train_samples_per_s"] / base["train_samples_per_s"], 3)
        report = {"machine": machine(), "commit": os.popen("git rev-parse --short HEAD").read().strip(),
                  "quick": args.quick, "model": "mid", "steps_per_arm": steps,
                  "batch_size": 8, "max_seq_length": max_length, "competitor": "one Python process spinning",
                  "policies": results}
    write_report(args.output, report)
    print(f"{'policy':<14} {'quiet/s':>8} {'loaded/s':>9} {'loaded/quiet':>13} {'quiet vs all_cores':>19}")
    for name in names:
        r = results[name]
        print(f"{name:<14} {r['quiet']['train_samples_per_s']:8.2f} {r['one_competitor']['train_samples_per_s']:9.2f} "
              f"{r['loaded_share_of_quiet']:13.0%} {r.get('quiet_vs_all_cores_quiet', float('nan')):19.2f}")
    return report


if __name__ == "__main__":
    main()

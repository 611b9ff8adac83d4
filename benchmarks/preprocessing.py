"""Preprocessing time: read, validate, split and tokenize TMMLU+'s 22.7k rows, cold and from the cache.

    python -m benchmarks.preprocessing --output bench_preprocessing.json [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import build_model, machine, write_layout, parse_benchmark_args, write_report
from hf_ft.data.sources import load_data_dir
from hf_ft.data.splits import make_splits
from hf_ft.inputs.formulations import encode

TMMLU_ROWS = 22700  # dev + val + test of v1.0


def time_preprocessing(work: Path, tokenizer, rows: int, max_length: int) -> tuple[float, float, int]:
    data = write_layout(work / "prep_data", rows, seed=1)
    cache = work / "prep_cache"

    def once() -> int:
        loaded = load_data_dir(str(data))
        splits = make_splits(loaded, "auto", 0, 0.1, (0.7, 0.25, 0.05))
        for part, sort in ((splits.train, False), (splits.validation, True), (splits.test, True)):
            encode(part, tokenizer, "per_choice", max_length, cache_dir=cache, sort_by_length=sort, progress=False)
        return sum(len(v) for v in loaded.pools.values())

    start = time.perf_counter()
    n = once()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    once()
    cached = time.perf_counter() - start
    return cold, cached, n


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parse_benchmark_args(parser, argv)
    work = Path(tempfile.mkdtemp(prefix="hf_ft_bench_prep_"))
    try:
        _, tokenizer = build_model(work / "model", "mid")
        cold, cached, rows = time_preprocessing(work, tokenizer, 2000 if args.quick else TMMLU_ROWS, 512)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"machine": machine(), "quick": args.quick, "preprocess_rows": rows, "preprocess_cold_s": round(cold, 2),
              "preprocess_cached_s": round(cached, 2)}
    write_report(args.output, report)
    print(f"preprocessing {rows} rows: cold {cold:.2f} s, cached {cached:.2f} s")
    return report


if __name__ == "__main__":
    main()

"""`--seeds 1,2,3`: the same configuration trained once per seed, each run in output_dir/seed-<n>.

Only the training randomness changes (initialisation of the head, dropout, batch order, joint's option
orders); the split stays the one `--seed` gives, so every run is tested on the same held-out questions.
Each run is an ordinary run folder, so an interrupted loop resumes run by run. The summary —
per-seed test accuracy and TMMLU+-style average, mean, standard deviation and failed restarts — goes to
output_dir/seeds_summary.json, and each run's model card shows it. With --folds too, each seed runs every
fold, and the summary gives each seed's out-of-fold accuracy and their spread.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..config.arguments import Arguments
from ..core.run_dir import EVAL_RESULTS_FILE, RUN_RECORD_FILE, read_json_if_present, write_json
from ..publish.model_card import FOLDS_SUMMARY_FILE, SEEDS_SUMMARY_FILE, write_model_card
from ..task.metrics import CHANCE, FAILED_RESTART_MARGIN
from .start import train_each

logger = logging.getLogger("hf_ft")


def seed_list(spec: str) -> list[int]:
    return [int(s) for s in spec.split(",") if s.strip()]


def for_seed(args: Arguments, seed: int) -> Arguments:
    """The same arguments with another training seed, into output_dir/seed-<n>; the split keeps --seed's."""
    base = Path(args.training.output_dir)
    split_seed = args.split_seed
    training = dataclasses.replace(args.training, seed=seed, output_dir=str(base / f"seed-{seed}"))
    given = {**args.given, "seed": seed, "split_seed": split_seed, "output_dir": training.output_dir}
    return dataclasses.replace(args, training=training, data=dataclasses.replace(args.data, split_seed=split_seed),
                               run=dataclasses.replace(args.run, seeds=None), given=given)


def summarize(base: Path, seeds: list[int]) -> dict:
    runs = []
    for seed in seeds:
        folds = read_json_if_present(base / f"seed-{seed}" / FOLDS_SUMMARY_FILE)
        if folds:  # --folds too: the seed's out-of-fold accuracy, and its fold models' mean test accuracy
            runs.append({"seed": seed, "test_accuracy": folds["test_accuracy_mean"],
                         "test_tmmlu_average": float(np.mean([r["test_tmmlu_average"] for r in folds["runs"]])),
                         "out_of_fold_accuracy": folds["out_of_fold"]["overall"]["accuracy"]})
            continue
        results = read_json_if_present(base / f"seed-{seed}" / EVAL_RESULTS_FILE) or {}
        runs.append({"seed": seed, "test_accuracy": results.get("test_accuracy"),
                     "test_tmmlu_average": results.get("test_tmmlu_average"), "eval_accuracy": results.get("eval_accuracy")})
    accuracies = np.array([r["test_accuracy"] for r in runs if r["test_accuracy"] is not None])
    out_of_fold = [r["out_of_fold_accuracy"] for r in runs if "out_of_fold_accuracy" in r]
    spread = {"mean_out_of_fold_accuracy": float(np.mean(out_of_fold)),
              "std_out_of_fold_accuracy": float(np.std(out_of_fold, ddof=1)) if len(out_of_fold) > 1 else 0.0
              } if out_of_fold else {}
    return {**spread,
        "runs": runs,
        "mean_test_accuracy": float(accuracies.mean()) if len(accuracies) else None,
        "std_test_accuracy": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
        "mean_test_tmmlu_average": float(np.mean([r["test_tmmlu_average"] for r in runs
                                                  if r["test_tmmlu_average"] is not None] or [np.nan])),
        "failed_restarts": [r["seed"] for r in runs if r["test_accuracy"] is not None
                            and r["test_accuracy"] < CHANCE + FAILED_RESTART_MARGIN],
        "failed_restart_rule": f"test accuracy below chance + {FAILED_RESTART_MARGIN:.0%}",
    }


def run_seeds(args: Arguments, train_one) -> dict:
    """Train every seed (resuming or skipping finished ones through the usual run-folder rules), then write
    the summary and refresh each run's card."""
    base = Path(args.training.output_dir)
    seeds = seed_list(args.run.seeds)
    train_each([(f"seed {seed}", for_seed(args, seed)) for seed in seeds], train_one)
    summary = summarize(base, seeds)
    if args.training.process_index == 0:
        write_json(base / SEEDS_SUMMARY_FILE, summary)
        for seed in seeds:
            folder = base / f"seed-{seed}"  # with --folds, seed-<n> holds the seed's fold runs
            for run in [folder] if (folder / RUN_RECORD_FILE).is_file() else sorted(folder.glob("fold-*")):
                write_model_card(run)
        logger.info("seeds %s: test accuracy %.1f%% ± %.1f; summary in %s", seeds,
                    100 * summary["mean_test_accuracy"], 100 * summary["std_test_accuracy"], base / SEEDS_SUMMARY_FILE)
    return summary

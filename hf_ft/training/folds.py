"""`--folds K`: cross-fitting. The training pool (everything but the test split) is dealt into K folds,
stratified by subject with --split_seed; run k trains on the other folds in output_dir/fold-<k> and scores
fold k, which it never saw. Pooled, the K runs score every training-pool question once: an estimate of
accuracy on K times more questions than one validation slice, whose interval also covers the choice of
training questions (hf_ft.task.cross_fitting). The test split is the same for every fold.

Each fold is an ordinary run folder, so an interrupted loop resumes fold by fold and a finished fold is
not redone. The summary goes to output_dir/folds_summary.json and folds_report.md, and each fold's card
shows it. With --seeds, every seed runs all K folds (output_dir/seed-<n>/fold-<k>).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..config.arguments import Arguments
from ..core.run_dir import (
    EVAL_RESULTS_FILE,
    FOLD_PREDICTIONS_FILE,
    read_json_if_present,
    read_jsonl,
    write_json,
    write_text,
)
from ..publish.model_card import FOLDS_REPORT_FILE, FOLDS_SUMMARY_FILE, folds_markdown, write_model_card
from ..task.cross_fitting import out_of_fold_report

from .start import train_each

logger = logging.getLogger("hf_ft")


def for_fold(args: Arguments, fold: int) -> Arguments:
    """The same arguments scoring fold `fold`, into output_dir/fold-<k>; the split (and so the folds) keeps
    --seed's."""
    base = Path(args.training.output_dir)
    split_seed = args.split_seed
    training = dataclasses.replace(args.training, output_dir=str(base / f"fold-{fold}"))
    given = {**args.given, "fold": fold, "split_seed": split_seed, "output_dir": training.output_dir}
    return dataclasses.replace(args, training=training, given=given,
                               data=dataclasses.replace(args.data, split_seed=split_seed, fold=fold))


def summarize(base: Path, folds: int, split_seed: int) -> dict:
    """Every fold's predictions on its own fold, pooled; each fold model's test accuracy beside them."""
    runs, predictions = [], []
    for k in range(folds):
        folder = base / f"fold-{k}"
        results = read_json_if_present(folder / EVAL_RESULTS_FILE) or {}
        scored = read_jsonl(folder / FOLD_PREDICTIONS_FILE)
        predictions += [{**p, "fold": k} for p in scored]
        runs.append({"fold": k, "path": folder.name, "items": len(scored),
                     **{name: results.get(name) for name in ("fold_accuracy", "eval_accuracy", "test_accuracy",
                                                             "test_tmmlu_average")}})
    tests = np.array([r["test_accuracy"] for r in runs if r["test_accuracy"] is not None])
    return {"folds": folds, "split_seed": split_seed, "runs": runs,
            "out_of_fold": out_of_fold_report(predictions),
            "test_accuracy_mean": float(tests.mean()) if len(tests) else None,
            "test_accuracy_std": float(tests.std(ddof=1)) if len(tests) > 1 else 0.0,
            "note": "out-of-fold: every training-pool question scored once, by the fold run that did not train on "
                    "it; test: the same held-out test split, scored by each fold's model"}


def run_folds(args: Arguments, train_one) -> dict:
    """Train every fold (resuming or skipping finished ones through the usual run-folder rules), then write the
    pooled summary and refresh each fold's card."""
    base = Path(args.training.output_dir)
    folds = args.data.folds
    train_each([(f"fold {k} of {folds}", for_fold(args, k)) for k in range(folds)], train_one)
    summary = summarize(base, folds, args.split_seed)
    if args.training.process_index == 0:
        write_json(base / FOLDS_SUMMARY_FILE, summary)
        write_text(base / FOLDS_REPORT_FILE, folds_markdown(summary) + "\n")
        for k in range(folds):
            write_model_card(base / f"fold-{k}")
        overall = summary["out_of_fold"]["overall"]
        logger.info("folds: out-of-fold accuracy %.1f%% [%.1f, %.1f] over %d training-pool questions; summary in %s",
                    100 * overall["accuracy"], 100 * overall["ci95"][0], 100 * overall["ci95"][1], overall["n"],
                    base / FOLDS_SUMMARY_FILE)
    return summary

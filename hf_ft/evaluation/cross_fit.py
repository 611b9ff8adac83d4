"""`evaluate` on a --folds folder: the original model against the fine-tuned configuration on every
training-pool question, each question scored by the fold model that did not train on it (its
fold_qa_data.json, checked against that run's manifest), so the comparison covers K times more questions than
one test split, with intervals that treat each fold as a cluster (hf_ft.task.cross_fitting)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..core.run_dir import FOLD_ITEMS_FILE, MANIFEST_FILE, read_json_if_present
from ..data.files import load_items
from ..data.splits import stratified_sample
from ..task.cross_fitting import CI_RULE, clustered_ci, pooled
from .items import check_held_out, fold_of
from .stats import mcnemar_exact, paired_bootstrap_ci

logger = logging.getLogger("hf_ft.evaluation")


def fold_items(runs: list[tuple[str, int | None]]) -> list[tuple[str, int, list]] | None:
    """(run, fold, its held-out fold's rows) for a --folds folder's runs, or None when these are not fold runs."""
    folds = [(path, fold_of(path)) for path, _ in runs]
    if len(folds) < 2 or any(k is None for _, k in folds):
        return None
    out = []
    for path, k in folds:
        items_file = Path(path) / FOLD_ITEMS_FILE
        if not items_file.is_file():
            raise UserError(f"--finetuned {path}: no {FOLD_ITEMS_FILE}; its fold cannot be scored (train it again "
                            "with --folds)")
        rows, _ = check_held_out(load_items(items_file), [(str(Path(path) / MANIFEST_FILE),
                                                           read_json_if_present(Path(path) / MANIFEST_FILE))], False)
        out.append((path, k, rows))
    seen: dict[str, str] = {}
    for path, _, rows in out:  # folds of one pool are disjoint; runs of another split seed or data are not
        for row in rows:
            if row.content_hash in seen:
                raise UserError(f"--finetuned: {Path(seen[row.content_hash]).name} and {Path(path).name} both hold "
                                f"out item {row.id}: these fold runs do not partition one training pool (another "
                                "--split_seed, other data?); compare folds trained together")
            seen[row.content_hash] = path
    return out


def difference(correct_o: np.ndarray, correct_f: np.ndarray, folds: np.ndarray, seed: int) -> dict:
    values = correct_f.astype(float) - correct_o.astype(float)
    clustered = clustered_ci(values, folds, bounds=(-1.0, 1.0))
    items = paired_bootstrap_ci(correct_o, correct_f, seed=seed)
    return {"n": int(len(values)), "accuracy_original": float(correct_o.mean()),
            "accuracy_finetuned": float(correct_f.mean()), "difference": float(values.mean()),
            "difference_ci95": [min(clustered[0], items[0]), max(clustered[1], items[1])]}


def out_of_fold_comparison(args, per_fold: list[tuple[str, int, list]], seed: int) -> dict:
    """Score the original on the whole pool and each fold model on its own fold; pool them. With --max_items,
    a seeded sample of the pool, stratified by subject, as for the test items."""
    pool = [row for _, _, rows in per_fold for row in rows]
    population = len(pool)
    if args.max_items is not None and args.max_items < len(pool):
        kept = {row.id for row in stratified_sample(pool, args.max_items, seed)}
        per_fold = [(path, k, [row for row in rows if row.id in kept]) for path, k, rows in per_fold]
        pool = [row for _, _, rows in per_fold for row in rows]
    original = args.score(args.load(args.original), pool)
    finetuned = []
    for path, k, rows in per_fold:
        finetuned.append(args.score(args.load(path), rows))
        logger.info("%s scored its fold %d (%d training-pool questions)", path, k, len(rows))
    golds = np.array([r.label for r in pool])
    folds = np.array([k for _, k, rows in per_fold for _ in rows])
    correct_o = original.argmax(1) == golds
    correct_f = np.concatenate(finetuned).argmax(1) == golds
    categories = np.array([r.category for r in pool])
    return {"folds": len(per_fold), "items": len(pool), "population": population,
            "original": pooled(correct_o, folds), "finetuned": pooled(correct_f, folds),
            **{k: v for k, v in difference(correct_o, correct_f, folds, seed).items() if k.startswith("difference")},
            "mcnemar": mcnemar_exact(correct_o, correct_f),
            "per_category": {c: difference(correct_o[categories == c], correct_f[categories == c],
                                           folds[categories == c], seed) for c in sorted(set(categories))},
            "ci_rule": CI_RULE + "; a difference's interval is never narrower than the paired bootstrap's"}

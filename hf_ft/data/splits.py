"""Rows → deduplicated, seeded splits → the held-out file and the data manifest that proves it held out.

`official`: train on dev+val minus a seeded per-subject validation slice, test on the official test
split. `resplit`: pool, deduplicate, split by ratios, stratified by subject. Exact duplicates
(normalised question and options) are removed before splitting, so a test item is never a training item.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.run_dir import FOLD_ITEMS_FILE, MANIFEST_FILE, TEST_ITEMS_FILE, write_json
from .rows import CONTENT_HASH_RULE, DataError, QARow
from .sources import LoadedData

logger = logging.getLogger(__name__)

# A split whose most common gold letter lets a constant answer beat chance by this much, significantly, is
# worth a warning: a model that always answers that letter scores it (an answer column shifted or recoded).
SKEW_MARGIN, SKEW_P = 0.15, 1e-3

# Fewer training questions than this is not a fine-tuning run (a typo in a path or a filter, most likely).
MIN_TRAIN_ROWS = 16


@dataclass
class Splits:
    train: list[QARow]
    validation: list[QARow]
    test: list[QARow]
    scheme: str
    duplicates_removed: int = 0
    duplicates_by_pool: dict[str, int] = field(default_factory=dict)
    fold: list[QARow] = field(default_factory=list)  # --folds: the training-pool fold this run scores, unseen
    fold_index: tuple[int, int] | None = None  # (k, K)


def _dedupe(rows: list[QARow], seen: set[str]) -> tuple[list[QARow], int]:
    kept = []
    for row in rows:
        key = row.content_hash
        if key in seen:
            continue
        seen.add(key)
        kept.append(row)
    return kept, len(rows) - len(kept)


def stratified_split(rows: list[QARow], fractions: list[float], seed: int) -> list[list[QARow]]:
    """Split each subject by `fractions` (the first part takes the remainder); seeded per subject."""
    by_subject: dict[str, list[QARow]] = {}
    for row in rows:
        by_subject.setdefault(row.subject, []).append(row)
    parts: list[list[QARow]] = [[] for _ in fractions]
    for subject in sorted(by_subject):
        group = by_subject[subject]
        rng = np.random.default_rng([seed, zlib.crc32(subject.encode("utf-8"))])
        order = rng.permutation(len(group))
        sizes = [int(round(len(group) * f)) for f in fractions[1:]]
        sizes = [min(s, max(0, len(group) - 1 - sum(sizes[:i]))) for i, s in enumerate(sizes)]
        first = len(group) - sum(sizes)
        bounds = np.cumsum([0, first, *sizes])
        for i in range(len(fractions)):
            parts[i].extend(group[j] for j in order[bounds[i]:bounds[i + 1]])
    return parts


def stratified_sample(rows: list[QARow], n: int, seed: int) -> list[QARow]:
    """`n` items, each subject in proportion to its size (largest remainders), seeded, in the original order."""
    by_subject: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_subject.setdefault(row.subject, []).append(i)
    quotas = {s: n * len(ix) / len(rows) for s, ix in by_subject.items()}
    take = {s: int(q) for s, q in quotas.items()}
    for s in sorted(quotas, key=lambda s: (-(quotas[s] - take[s]), s))[: n - sum(take.values())]:
        take[s] += 1
    rng = np.random.default_rng(seed)
    chosen = sorted(i for s, ix in sorted(by_subject.items()) for i in rng.choice(ix, take[s], replace=False))
    return [rows[i] for i in chosen]


def make_splits(data: LoadedData, scheme: str, seed: int, validation_fraction: float,
                split_ratios: tuple[float, float, float], needs_validation: bool = True,
                needs_test: bool = True) -> Splits:
    """`official`: dev+val → train/validation, official test; `resplit`: pool, dedupe, stratified ratios."""
    if scheme == "auto":
        scheme = "official" if data.layout == "tmmluplus" or "test" in data.pools else "resplit"
    seen: set[str] = set()
    removed: dict[str, int] = {}
    if scheme == "official":
        if not data.pools.get("test"):
            raise DataError("split scheme 'official' needs test rows (a <subject>_test.csv or --test_file)")
        test, removed["test"] = _dedupe(data.pools["test"], seen)
        if data.pools.get("validation"):  # explicit flat train/validation files
            validation, removed["validation"] = _dedupe(data.pools["validation"], seen)
            train, removed["train"] = _dedupe(data.pools.get("train", []) + data.pools.get("all", []), seen)
        else:
            pool = [r for name in ("dev", "val", "train", "all") for r in data.pools.get(name, [])]
            pool, removed["train"] = _dedupe(pool, seen)
            train, validation = stratified_split(pool, [1 - validation_fraction, validation_fraction], seed)
    elif scheme == "resplit":
        given = [name for name in ("validation", "test") if data.pools.get(name)] if data.layout == "flat" else []
        if given:  # their rows would be pooled and split again, silently taking another role
            raise DataError(f"--{given[0]}_file: the resplit scheme (chosen because there is no --test_file) "
                            "pools every file and splits it again, so its rows would not stay "
                            f"{given[0]} rows; give --test_file too (the official scheme), or pass every file "
                            "as --train_file")
        pool = [r for rows in data.pools.values() for r in rows]
        pool, removed["all"] = _dedupe(pool, seen)
        train, validation, test = stratified_split(pool, list(split_ratios), seed)
    else:
        raise DataError(f"unknown split scheme '{scheme}' (use official, resplit or auto)")
    check_sizes(train, validation, test, scheme, needs_validation, needs_test)
    return Splits(train, validation, test, scheme, sum(removed.values()), removed)


def assign_folds(rows: list[QARow], folds: int, seed: int) -> list[int]:
    """Each row's fold, 0..folds-1: every subject dealt round the folds in a seeded order, each subject starting
    where the last one stopped, so folds differ in size by one row at most, overall and per subject."""
    by_subject: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_subject.setdefault(row.subject, []).append(i)
    small = {s: len(ix) for s, ix in by_subject.items() if len(ix) < folds}
    if small:
        subject, n = min(small.items(), key=lambda item: (item[1], item[0]))
        fix = f"use --folds {n} or fewer, or leave '{subject}' out" if n >= 2 else f"leave '{subject}' out"
        raise DataError(f"--folds {folds}: subject '{subject}' has only {n} question(s) in the training pool, and "
                        f"every fold needs each subject; {fix} with --subjects")
    fold_of = [0] * len(rows)
    start = 0
    for subject in sorted(by_subject):
        group = by_subject[subject]
        rng = np.random.default_rng([seed, zlib.crc32(subject.encode("utf-8")), folds])
        for position, j in enumerate(rng.permutation(len(group))):
            fold_of[group[j]] = (start + position) % folds
        start = (start + len(group)) % folds
    return fold_of


def cross_fit(splits: Splits, fold: int, folds: int, seed: int, validation_fraction: float,
              split_ratios: tuple[float, float, float], needs_validation: bool = True) -> Splits:
    """Fold `fold` of the training pool (train + validation) held out for scoring; the other folds are split
    into train and validation in the share the run's scheme gives its validation split. The test split is
    untouched."""
    pool = splits.train + splits.validation
    fold_of = assign_folds(pool, folds, seed)
    held = [row for row, k in zip(pool, fold_of) if k == fold]
    rest = [row for row, k in zip(pool, fold_of) if k != fold]
    share = validation_fraction if splits.scheme == "official" else split_ratios[1] / sum(split_ratios[:2])
    train, validation = stratified_split(rest, [1 - share, share], seed)
    check_sizes(train, validation, splits.test, f"{splits.scheme} split, fold {fold} of {folds} held out",
                needs_validation)
    return replace(splits, train=train, validation=validation, fold=held, fold_index=(fold, folds))


def check_sizes(train, validation, test, scheme: str, needs_validation: bool, needs_test: bool = True) -> None:
    """A split the run needs must not come out empty, and training needs more than a handful of rows."""
    counts = f"{len(train)} train / {len(validation)} validation / {len(test)} test ({scheme} split)"
    if len(train) < MIN_TRAIN_ROWS:
        raise DataError(f"only {len(train)} training question(s) after splitting ({counts}); a run needs at least "
                        f"{MIN_TRAIN_ROWS}: check --subjects, the data files and --split_ratios")
    if needs_test and not test:
        raise DataError(f"the test split is empty ({counts}): there would be no held-out questions to report")
    if needs_validation and not validation:
        raise DataError(f"the validation split is empty ({counts}): raise --validation_fraction / the validation "
                        "share of --split_ratios, or pass --eval_strategy no --load_best_model_at_end false")


def skewed_gold_letters(splits: Splits) -> list[str]:
    """One warning per split whose gold letters are so uneven that always answering the most common one
    scores far above the 25% of chance (binomial test)."""
    return [w for name, rows in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
            for w in [skewed_letters_warning(rows, name)] if w]


def skewed_letters_warning(rows: list[QARow], name: str) -> str | None:
    """The warning for one set of labelled rows (training's splits, evaluate's items, predict's labelled input)."""
    from scipy.stats import binomtest

    letters = Counter(r.answer for r in rows if r.answer)
    if not letters:
        return None
    letter, count = letters.most_common(1)[0]
    n = sum(letters.values())
    chance = 1 / len(rows[0].options)
    if count / n >= chance + SKEW_MARGIN and binomtest(count, n, chance, alternative="greater").pvalue < SKEW_P:
        return (f"{name}: {count} of {n} gold answers ({100 * count / n:.0f}%) are {letter}, so always answering "
                f"{letter} scores {100 * count / n:.0f}% against {100 * chance:.0f}% for chance; check the answer "
                "column")
    return None


def build_manifest(data: LoadedData, splits: Splits, rejected: Counter, seed: int) -> dict:
    def per_subject(rows):
        return dict(sorted(Counter(r.subject for r in rows).items()))

    everything = sorted(r.content_hash for rows in (splits.train, splits.validation, splits.test) for r in rows)
    named = [("train", splits.train), ("validation", splits.validation), ("test", splits.test)]
    if splits.fold_index:
        named.append(("fold", splits.fold))
    manifest = {
        "source": {**data.source, "content_sha256": hashlib.sha256("\n".join(everything).encode()).hexdigest()},
        "revision": data.source.get("revision"),
        "subjects": data.subjects,
        "split_scheme": splits.scheme,
        "seed": seed,
        "counts": {name: len(rows) for name, rows in named},
        "counts_per_subject": {name: per_subject(rows) for name, rows in named},
        "gold_letters": {name: dict(sorted(Counter(r.answer for r in rows).items())) for name, rows in named},
        "duplicates_removed": splits.duplicates_removed,
        "duplicates_removed_by_pool": splits.duplicates_by_pool,
        "rows_rejected": sum(rejected.values()),
        "rows_rejected_by_reason": dict(rejected),
        "hash": CONTENT_HASH_RULE,
        "warnings": skewed_gold_letters(splits),
        "content_hashes": {
            "train": sorted(r.content_hash for r in splits.train),
            "validation": sorted(r.content_hash for r in splits.validation),
        },
    }
    if splits.fold_index:  # which fold this run scores, of how many, dealt with which seed
        manifest["fold"] = {"index": splits.fold_index[0], "of": splits.fold_index[1], "seed": seed,
                            "items_file": FOLD_ITEMS_FILE}
    return manifest


def write_split_outputs(output_dir: str, data: LoadedData, splits: Splits, rejected: Counter, seed: int,
                        extra: dict | None = None) -> dict:
    """`test_qa_data.json` (the held-out benchmark) and `data_manifest.json` (the proof it was held out), with
    the extra training sources' report when there are any."""
    from ..core.provenance import relative_to

    write_json(Path(output_dir) / TEST_ITEMS_FILE, [row.to_item() for row in splits.test])
    if splits.fold_index:
        write_json(Path(output_dir) / FOLD_ITEMS_FILE, [row.to_item() for row in splits.fold])
    manifest = build_manifest(data, splits, rejected, seed)
    if extra is not None:
        for source in extra["sources"]:
            if source.get("path"):
                source["path"] = relative_to(source["path"], output_dir)
        manifest["extra_data"] = extra
    for warning in manifest["warnings"]:
        logger.warning("gold letters: %s", warning)
    source = manifest["source"]  # local paths relative to the output folder: the manifest is pushed
    if "path" in source:
        source["path"] = relative_to(source["path"], output_dir)
    if "files" in source:
        source["files"] = {pool: relative_to(path, output_dir) for pool, path in source["files"].items()}
    write_json(Path(output_dir) / MANIFEST_FILE, manifest)
    return manifest

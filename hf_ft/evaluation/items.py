"""Which models and which items an evaluation scores: --seeds and --folds folders expanded (whole or refused),
the items (the run's test_qa_data.json by default) checked against every run's manifest so no training or
validation item is ever scored, and what open book gave each model (gold in context, recall@k)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UserError
from ..core.run_dir import MANIFEST_FILE, RUN_RECORD_FILE, TEST_ITEMS_FILE, read_json_if_present
from ..data.files import load_items
from ..data.rows import QARow, hash_for_rule
from ..data.sources import load_data_dir

if TYPE_CHECKING:
    from .evaluate import EvaluateArguments

logger = logging.getLogger("hf_ft.evaluation")

# ----------------------------------------------------------------------------------------------
# Which models, which items, and the held-out proof


# The folders --seeds and --folds train into: (the flag, the folder prefix, the record's argument that plans them).
RUN_SETS = (("--seeds", "seed", "seeds"), ("--folds", "fold", "folds"))


def expand_runs(paths: list[str]) -> list[tuple[str, int | None]]:
    """Each --finetuned path, with a --seeds or --folds folder expanded into its seed-<n> or fold-<k> runs:
    (path, seed)."""
    runs = []
    for path in paths:
        folder = Path(path)
        members = []
        if folder.is_dir() and not (folder / RUN_RECORD_FILE).is_file():
            for flag, prefix, argument in RUN_SETS:
                members = sorted(folder.glob(f"{prefix}-*"), key=lambda p: _number(p.name) or 0)
                if prefix == "seed" and any(next(m.glob("fold-*"), None) for m in members):
                    raise UserError(f"--finetuned {path}: a --seeds folder of --folds runs; compare one seed's folds "
                                    f"at a time, e.g. --finetuned {members[0]}")
                if members:
                    check_set_complete(folder, members, flag, prefix, argument)
                    break
        runs += [(str(p), _seed_of(p)) for p in members] or [(path, _seed_of(folder))]
    return runs


def _number(name: str) -> int | None:
    tail = name.split("-", 1)[1] if "-" in name else ""
    return int(tail) if tail.isdigit() else None


def _planned(spec, argument: str) -> set[int]:
    """The seeds or folds a run's recorded arguments asked for (--folds 5: folds 0 to 4)."""
    from ..training.seeds import seed_list

    if spec in (None, ""):
        return set()
    return set(range(int(spec))) if argument == "folds" else set(seed_list(str(spec)))


def check_set_complete(folder: Path, members: list[Path], flag: str, prefix: str, argument: str) -> None:
    """A --seeds or --folds folder is compared only whole: every run its members planned (their recorded --seeds
    or --folds) is there and finished. A killed seed would otherwise make three seeds look like two; a missing
    fold would leave a fifth of the training pool unscored."""
    from ..core.run_dir import finished_problem

    planned, specs = set(), {}
    for p in members:
        record = read_json_if_present(p / RUN_RECORD_FILE) or {}
        spec = record.get("arguments", {}).get(argument)
        planned |= _planned(spec, argument)
        specs.setdefault(str(spec), p.name)
    if argument == "folds" and len(specs) > 1:  # folds dealt for another K hold other questions
        raise UserError(f"--finetuned {folder}: its fold runs were trained with different --folds ("
                        + ", ".join(f"{name}: {spec}" for spec, name in specs.items())
                        + "); compare the folds of one --folds run, or train the others again with the same --folds")
    problems = []
    for p in members:
        problem = finished_problem(p) or (None if (p / RUN_RECORD_FILE).is_file() else "no hf_ft_run.json")
        if problem:
            problems.append(f"{p.name}: {problem}")
    present = {_number(p.name) for p in members}
    problems += [f"{prefix}-{n} was never started" for n in sorted(planned - present)]
    if problems:
        raise UserError(f"--finetuned {folder}: a {flag} folder with unfinished {prefix}s ({'; '.join(problems)}); "
                        f"run the same {flag} command again to complete them, or name the finished {prefix}-<n> "
                        "folders")


def _seed_of(path: Path) -> int | None:
    record = read_json_if_present(path / RUN_RECORD_FILE) if path.is_dir() else None
    return (record or {}).get("hyperparameters", {}).get("seed")


def fold_of(path: str) -> int | None:
    """The training-pool fold a --folds run held out and scored (its data manifest says), or None."""
    manifest = read_json_if_present(Path(path) / MANIFEST_FILE) if Path(path).is_dir() else None
    return ((manifest or {}).get("fold") or {}).get("index")


def choose_items(args: EvaluateArguments, first_run: str) -> tuple[list[QARow], str]:
    if args.test_file:
        return load_items(args.test_file, flag="--test_file"), args.test_file
    if args.data_dir:
        loaded = load_data_dir(args.data_dir, args.subjects)
        if not loaded.pools.get("test"):
            raise UserError(f"{args.data_dir}: no <subject>_test.csv files to score")
        return loaded.pools["test"], args.data_dir
    default = Path(first_run) / TEST_ITEMS_FILE
    if not default.is_file():
        raise UserError(f"{default}: not found; give --test_file or --data_dir")
    return load_items(default), str(default)


def check_held_out(rows: list[QARow], manifests: list[tuple[str, dict | None]], allow_overlap: bool
                   ) -> tuple[list[QARow], dict]:
    """Every item's content hash must be absent from every fine-tuned run's training and validation hashes."""
    missing = [where for where, manifest in manifests if manifest is None]
    if missing:
        logger.warning("no data_manifest.json in %s: cannot prove the items were held out", ", ".join(missing))
        return rows, {"verified": False, "reason": "no data_manifest.json", "overlap_removed": 0}
    overlapping = set()
    for _, manifest in manifests:  # each run's hashes under the rule it recorded them by
        hashes = manifest.get("content_hashes", {})
        seen = set(hashes.get("train", [])) | set(hashes.get("validation", []))
        key = hash_for_rule(manifest.get("hash"))
        overlapping |= {r.id for r in rows if key(r) in seen}
    overlap = [r for r in rows if r.id in overlapping]
    if overlap and not allow_overlap:
        shown = ", ".join(r.id for r in overlap[:5]) + (" …" if len(overlap) > 5 else "")
        raise UserError(f"{len(overlap)} of {len(rows)} items were in the fine-tuning data ({shown}); a comparison "
                        f"on them is not held out. Use the run's test_qa_data.json, or --allow_overlap to drop them")
    if overlap:
        logger.warning("removed %d item(s) that were in training/validation", len(overlap))
    return [r for r in rows if r.id not in overlapping], {
        "verified": True, "manifest": ", ".join(where for where, _ in manifests), "overlap_removed": len(overlap),
        "overlap_ids": [r.id for r in overlap]}


def parse_models(args: EvaluateArguments, runs: list[tuple[str, int | None]]) -> list[tuple[str, str, str, int | None]]:
    """(label, path, role, seed) for every model to score, the original first."""
    entries = [("original", args.original, "original", None)]
    for path, seed in runs:
        fold = fold_of(path)
        label = ("fine-tuned" if len(runs) == 1 else f"fine-tuned (fold {fold})" if fold is not None
                 else f"fine-tuned (seed {seed})" if seed is not None else path)
        entries.append((label, path, "finetuned", seed))
    for spec in args.models or []:
        # label=path, or a path that itself holds '=' (an existing path is never split)
        label, _, path = ("", "", spec) if Path(spec).exists() or "=" not in spec else spec.partition("=")
        if not path.strip():
            raise UserError(f"--models {spec!r}: no model path after '='; give label=path")
        entries.append((label or path, path, "model", None))
    labels = [e[0] for e in entries]
    if len(set(labels)) != len(labels):
        raise UserError(f"--models: two models have the same label ({labels}); name them label=path")
    return entries


def reference_index(args: EvaluateArguments, entries) -> int:
    wanted = {"original": "original", "finetuned": "fine-tuned"}.get(args.reference, args.reference)
    for i, entry in enumerate(entries):
        if entry[0] == wanted or (args.reference == "finetuned" and entry[2] == "finetuned"):
            return i
    raise UserError(f"--reference {args.reference}: not a model of this comparison "
                    f"(choose from original, finetuned, {', '.join(e[0] for e in entries[1:])})")


def recall_at_k(retrieved: list[dict], gold: dict[str, set[str]], k: int) -> dict:
    """Share of the items with known supporting passages that have one among their first r passages, r = 1..k.
    A gold id names a passage (`doc#3`) or the document it was cut from (`doc`)."""
    def supports(passage_id, ids: set[str]) -> bool:
        return passage_id in ids or str(passage_id).rpartition("#")[0] in ids

    known = [(r, gold[r["id"]]) for r in retrieved if r["id"] in gold]
    if not known:
        return {"items_with_gold_passages": 0}
    ranks = [next((i for i, p in enumerate(r["passages"]) if supports(p["id"], ids)), None) for r, ids in known]
    return {"items_with_gold_passages": len(known),
            "recall_at": {str(r): sum(x is not None and x < r for x in ranks) / len(ranks) for r in range(1, k + 1)}}


def retrieval_summary(scorer, rows: list[QARow], scores, gold: dict[str, set[str]] | None = None) -> dict:
    """What open book gave a model: the share of items whose context holds the gold option's text, accuracy
    in each bucket, the context's tokens per item, and recall@k where the supporting passages are known."""
    import numpy as np

    correct = np.asarray(scores).argmax(1) == np.array([r.label for r in rows])
    has_gold = np.array([r["gold_in_context"] for r in scorer.retrieved])
    tokens = [r["context_tokens"] for r in scorer.retrieved]
    book = scorer.open_book()
    recall = recall_at_k(scorer.retrieved, gold, book.settings.retrieval_k) if gold else {}
    return {**recall,
        "corpus": book.source, "k": book.settings.retrieval_k, "query": book.settings.retrieval_query,
        "gold_in_context": float(has_gold.mean()),
        "accuracy_gold_in_context": float(correct[has_gold].mean()) if has_gold.any() else None,
        "accuracy_gold_not_in_context": float(correct[~has_gold].mean()) if (~has_gold).any() else None,
        "items_gold_in_context": int(has_gold.sum()),
        "context_tokens_per_item": float(np.mean(tokens)),
        "context_leak_check": scorer.context_check,
        "note": "context tokens before truncation to max_seq_length",
    }

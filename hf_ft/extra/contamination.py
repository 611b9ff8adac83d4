"""The contamination check: no extra training row may be a copy of anything the run evaluates on.

The reference is everything TMMLU+ holds, not only the run's subjects and splits: for the hub dataset every
subject and split at both v1.0 and v1.1 (v1.1 corrected answers, so a copy with the old answer is still a
copy), for a local folder every file in it, and always the run's own rows. Both sides are normalised the same
way (OpenCC t2s, NFKC, case, whitespace and punctuation dropped, option letters stripped), so a Simplified
copy of a Traditional question is caught. Two tests:

- exact: the hash of the normalised question and the normalised options (in any order);
- near: an extra row's question + gold option holds at least half of a reference item's character 13-grams
  (`hf_ft.retrieval.leak`'s hashing, at corpus scale). A stem alone is not a copy: exam stems such as
  下列有關憲法之敘述何者正確 are shared by unrelated questions; an item shorter than 13 characters has the
  exact test only.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError, hub_problem
from ..data.files import decoded_text
from ..data.rows import LETTERS, DataError, QARow
from ..retrieval.leak import LEAK_SHARE, N, find_leaks
from ..retrieval.text import NORMALISATION, normalise_many
from .adapters import strip_letter
from .reading import csv_records

logger = logging.getLogger(__name__)

TMMLUPLUS_REVISIONS = ("v1.0", "v1.1")


@dataclass(frozen=True)
class Match:
    kind: str  # "exact" or "near"
    reference: QARow


def exact_keys(rows: list[QARow]) -> list[str]:
    """Normalised question + sorted normalised options, hashed: a copy with its options reordered is the same."""
    questions = normalise_many([r.question for r in rows])
    options = normalise_many([strip_letter(o) for r in rows for o in r.options])
    keys, start = [], 0
    for row, question in zip(rows, questions):
        mine = sorted(options[start:start + len(row.options)])
        start += len(row.options)
        keys.append(hashlib.sha256("\x1f".join([question, *mine]).encode("utf-8")).hexdigest()[:32])
    return keys


def find_copies(extra: list[QARow], reference: list[QARow], extra_keys: list[str] | None = None) -> dict[int, Match]:
    """Index of each extra row that copies a reference row → the match (exact first, then near).
    `extra_keys`: the extra rows' `exact_keys`, when the caller has them already."""
    if not extra or not reference:
        return {}
    by_key = {}
    for row, key in zip(reference, exact_keys(reference)):
        by_key.setdefault(key, row)
    keys = exact_keys(extra) if extra_keys is None else extra_keys
    assert len(keys) == len(extra)
    found = {i: Match("exact", by_key[key]) for i, key in enumerate(keys) if key in by_key}
    rest = [i for i in range(len(extra)) if i not in found]
    texts = [extra[i].question + (extra[i].options[extra[i].label] if extra[i].label >= 0 else "") for i in rest]
    report = find_leaks(texts, reference, whole_question=False)
    by_id = {r.id: r for r in reference}
    for position, ids in report.leaking_passages.items():
        found[rest[position]] = Match("near", by_id[ids[0]])
    return found


def method() -> dict:
    return {"normalisation": NORMALISATION + "+option-letters", "exact": "sha256(question + sorted options)",
            "near": f"question + gold holds >= {LEAK_SHARE:.0%} of a reference item's question + gold character "
                    f"{N}-grams"}


# ----------------------------------------------------------------------------------------------
# What the run evaluates on


def _reference_rows(records: list[dict], lines: list, where: str) -> list[QARow]:
    """Reference rows are read as they are: a row the run would reject may still be copied somewhere."""
    out = []
    for record, line in zip(records, lines):
        question = str(record.get("question") or "").strip()
        if not question:
            continue
        answer = str(record.get("answer") or "").strip().upper()
        out.append(QARow(f"{where}:{line}", str(record.get("subject") or ""), question,
                         tuple(str(record.get(letter) or "") for letter in LETTERS),
                         answer if answer in LETTERS else None, where, line))
    return out


def _csv_folder(folder: Path, where: str, separator: str = ":") -> list[QARow]:
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".csv" and p.is_file()):
        name = f"{where}{separator}{path.relative_to(folder).as_posix()}"
        try:
            records, lines = csv_records(decoded_text(path.read_bytes(), name), name)
        except DataError as e:
            raise DataError(f"{e} (the contamination check of --extra_data reads every file of the TMMLU+ source, "
                            "not only the run's subjects)") from None
        for record in records:
            record.setdefault("subject", path.stem.rpartition("_")[0])
        rows += _reference_rows(records, lines, name)
    return rows


def tmmluplus_reference(data_args, cache_dir: str | None) -> tuple[list[QARow], dict]:
    """Every row of the run's TMMLU+ source beyond the subjects and splits it trains on: the hub dataset at
    v1.0 and v1.1 (or the run's revision, for another dataset), or every CSV of the --data_dir folder."""
    from ..data.sources import HUB_DATASET

    if data_args.data_dir:
        rows = _csv_folder(Path(data_args.data_dir), Path(data_args.data_dir).resolve().name, "/")
        return rows, {"data_dir": "every CSV file of the folder", "rows": len(rows)}
    if data_args.train_file or data_args.validation_file or data_args.test_file:
        return [], {"files": "the run's own files"}
    from huggingface_hub import HfApi, snapshot_download

    name = data_args.dataset_name
    revisions = TMMLUPLUS_REVISIONS if name == HUB_DATASET else (data_args.dataset_revision,)
    rows, record = [], {"dataset": name, "revisions": {}}
    for revision in revisions:
        try:
            sha = HfApi().dataset_info(name, revision=revision).sha or revision
            local = Path(snapshot_download(name, repo_type="dataset", revision=sha, cache_dir=cache_dir,
                                           allow_patterns=["data/*.csv"]))
        except Exception as error:  # noqa: BLE001
            raise UserError(f"the contamination check needs {name} at {revision} (every subject and split): "
                            f"{hub_problem(error)}") from None
        part = _csv_folder(local, f"{name}@{revision}")
        record["revisions"][revision] = {"commit": sha, "rows": len(part)}
        rows += part
    return rows, record


def unique(rows: list[QARow]) -> list[QARow]:
    """One row per question, options and answer (v1.0 and v1.1 share most rows)."""
    seen, out = set(), []
    for row in rows:
        key = (row.content_hash, row.answer)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out

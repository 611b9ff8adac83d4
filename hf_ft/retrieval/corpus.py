"""Where passages come from: a local folder or file, a hub dataset, the training pool, or precomputed contexts.

Every source becomes a list of `Passage`s (id, text, title) with a content hash, so an index is cached by
what it holds and never reused for another corpus. A source with nothing to read is one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from ..core.readers import json_lines
from ..data.rows import QARow

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
POOL = "training_pool"
ANSWER_MARK = " 答案："


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str = ""


def split_text(text: str, size: int, overlap: int) -> list[str]:
    """Windows of `size` characters, each starting `size - overlap` after the last; blank ones dropped."""
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    step = size - overlap
    return [chunk for start in range(0, len(text) - overlap, step) if (chunk := text[start:start + size].strip())]


def _records(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if suffix == ".csv":
            import csv

            with path.open(encoding="utf-8-sig", newline="") as f:
                return [{(k or "").strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".json":
            data = json.loads(text)
            return data if isinstance(data, list) else data.get("data", [])
        return json_lines(text, path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"{path}: cannot read as a {suffix[1:]} corpus: {str(e).splitlines()[0]}") from None


def passages_from_records(records, where: str, size: int, overlap: int, text_column: str = "text",
                          title_column: str = "title", id_column: str = "id") -> list[Passage]:
    out = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or text_column not in record:
            found = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
            raise UserError(f"{where}:{number}: no '{text_column}' column (found: {found}); name the text column "
                            "with --retrieval_text_column")
        text = str(record[text_column] or "")
        base = str(record.get(id_column) or f"{where}:{number}")
        title = str(record.get(title_column) or "")
        for n, chunk in enumerate(split_text(text, size, overlap)):
            out.append(Passage(f"{base}#{n}", chunk, title))
    return out


def read_local(path: str, size: int, overlap: int, text_column: str = "text") -> list[Passage]:
    """A file, or every .txt/.md/.jsonl/.json/.csv/.parquet file under a folder (sorted, so ids are stable)."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"--retrieval_corpus {path}: no such file or folder")
    found = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    files = [p for p in found if p.suffix.lower() in TEXT_SUFFIXES + TABLE_SUFFIXES or root.is_file()]
    skipped = [str(p.relative_to(root)) for p in found if p not in files]
    if skipped:  # never a silent skip (hidden files and folders, .git say, are not corpus files)
        logger.warning("--retrieval_corpus %s: %d file(s) not read (not %s): %s%s", path, len(skipped),
                       "/".join(TEXT_SUFFIXES + TABLE_SUFFIXES), ", ".join(skipped[:5]),
                       " ..." if len(skipped) > 5 else "")
    passages = []
    for file in files:
        name = file.name if root.is_file() else str(file.relative_to(root))
        if file.suffix.lower() in TEXT_SUFFIXES:
            try:
                text = file.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError:
                raise UserError(f"{file}: not UTF-8 text") from None
            passages += [Passage(f"{name}#{n}", chunk, file.stem)
                         for n, chunk in enumerate(split_text(text, size, overlap))]
        elif file.suffix.lower() in TABLE_SUFFIXES:
            passages += passages_from_records(_records(file), str(file), size, overlap, text_column)
        else:
            raise UserError(f"--retrieval_corpus {file}: not a corpus file (use {', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)})")
    if not passages:
        raise UserError(f"--retrieval_corpus {path}: no passages to read (no text in "
                        f"{', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)} files)")
    return passages


def read_hub(repo: str, config: str | None, revision: str | None, split: str, size: int, overlap: int,
             text_column: str = "text", cache_dir: str | None = None) -> tuple[list[Passage], str]:
    """A hub dataset (e.g. `wikimedia/wikipedia` config `20231101.zh`); returns its passages and the commit."""
    import datasets
    from huggingface_hub import HfApi

    from ..core.errors import hub_problem

    try:
        commit = HfApi().dataset_info(repo, revision=revision or "main").sha
    except Exception as e:  # noqa: BLE001 - hub_problem re-raises what is not the hub's
        raise UserError(f"--retrieval_corpus {repo}: {hub_problem(e)}") from None
    try:
        table = datasets.load_dataset(repo, config, revision=commit, split=split, cache_dir=cache_dir)
    except (ValueError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as e:
        raise UserError(f"--retrieval_corpus {repo} (config {config}, split {split}): "
                        f"{str(e).strip().splitlines()[0]}") from None
    if text_column not in table.column_names:
        raise UserError(f"--retrieval_corpus {repo}: no '{text_column}' column (found: {', '.join(table.column_names)})")
    passages = passages_from_records(table, f"{repo}/{config or ''}", size, overlap, text_column)
    if not passages:
        raise UserError(f"--retrieval_corpus {repo}: no passages to read")
    return passages, commit


def pool_passages(rows: list[QARow]) -> list[Passage]:
    """REINA: each labelled training question with its answer is a passage; its id is the row's id, so a
    training question never retrieves itself (leave-one-out)."""
    return [Passage(row.id, f"{row.question}{ANSWER_MARK}{row.options[row.label]}") for row in rows]


def read_precomputed(path: str) -> dict[str, list[dict]]:
    """`{"id": item id, "passages": [{"id":..., "text":..., "score":...}, ...]}` per line: contexts retrieved
    with any engine (Elasticsearch, pyserini), for a corpus too large for this machine."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--retrieval_contexts {path}: no such file")
    out = {}
    for number, record in enumerate(_records(file), start=1):
        if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("passages"), list):
            raise UserError(f"{path}:{number}: need {{\"id\": ..., \"passages\": [{{\"text\": ...}}, ...]}}")
        passages = []
        for p in record["passages"]:
            if isinstance(p, str):
                p = {"text": p}
            if not isinstance(p, dict) or not str(p.get("text") or "").strip():
                raise UserError(f"{path}:{number}: a passage without text")
            passages.append({"id": str(p.get("id", "")), "text": str(p["text"]), "score": p.get("score")})
        out[str(record["id"])] = passages
    if not out:
        raise UserError(f"--retrieval_contexts {path}: no contexts to read")
    return out


def read_gold_passages(path: str) -> dict[str, set[str]]:
    """`{"id": item id, "passages": [passage id, ...]}` per line: the passages known to support each item
    (synthetic data such as the open-book demo's), for recall@k."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--gold_passages {path}: no such file")
    out = {}
    for number, record in enumerate(_records(file), start=1):
        ids = record.get("passages") if isinstance(record, dict) else None
        if "id" not in (record if isinstance(record, dict) else {}) or not isinstance(ids, list) or not ids or \
                not all(isinstance(i, (str, int)) and str(i).strip() for i in ids):
            raise UserError(f"{path}:{number}: need {{\"id\": item id, \"passages\": [passage id, ...]}}")
        out[str(record["id"])] = {str(i) for i in ids}
    if not out:
        raise UserError(f"--gold_passages {path}: no items to read")
    return out


def unique_passages(passages: list[Passage]) -> tuple[list[Passage], int]:
    """The first passage of each text (as retrieval normalises it): a copy would only fill the top-k with the same
    words twice. Returns the passages kept and how many copies were left out."""
    from .text import normalise_many

    seen, kept = set(), []
    for passage, key in zip(passages, normalise_many([p.text for p in passages])):
        if key not in seen:
            seen.add(key)
            kept.append(passage)
    return kept, len(passages) - len(kept)


def content_hash(passages: list[Passage]) -> str:
    h = hashlib.sha256()
    for p in passages:
        h.update(f"{p.id}\x1f{p.title}\x1f{p.text}\x1e".encode("utf-8"))
    return h.hexdigest()

"""Files → validated rows → deduplicated, seeded splits → the held-out file and the data manifest.

Every row remembers the file and line it came from, so a problem can always be reported as
`file:line: reason`, and nothing is dropped without being counted and written down.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import UserError
from .subjects import category_of, registry, resolve_subjects

logger = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
REQUIRED_COLUMNS = ("question", "A", "B", "C", "D", "answer")
HUB_DATASET = "ikala/tmmluplus"
# The branch read unless --dataset_revision names a commit; every hub run resolves it to the exact
# commit SHA and records that in data_manifest.json, so a result always names the data it saw.
HUB_DEFAULT_REVISION = "main"
# The file layout of the hub repository: data/<subject>_<split>.csv
LAYOUT_SPLITS = {"dev": "dev", "train": "dev", "val": "val", "validation": "val", "test": "test"}
_ANSWER_FORMS = {c: c for c in LETTERS} | {c.lower(): c for c in LETTERS} | {
    chr(ord("Ａ") + i): c for i, c in enumerate(LETTERS)
} | {chr(ord("ａ") + i): c for i, c in enumerate(LETTERS)}


class DataError(UserError):
    """Input data that cannot be used; the message names the file, the line and the reason."""


@dataclass(frozen=True)
class QARow:
    id: str
    subject: str
    question: str
    options: tuple[str, ...]  # four for TMMLU+ data; predict accepts two or more
    answer: str | None  # a letter; None for unlabelled questions (predict)
    source: str = ""
    line: int = 0

    @property
    def category(self) -> str:
        return category_of(self.subject)

    @property
    def label(self) -> int:
        return LETTERS.index(self.answer) if self.answer else -1

    @cached_property
    def content_hash(self) -> str:  # used by dedupe, the cache fingerprint and the manifest: computed once
        return content_hash(self.question, self.options)

    def to_item(self) -> dict:
        """The held-out benchmark format of `test_qa_data.json`."""
        return {
            "id": self.id,
            "subject": self.subject,
            "category": self.category,
            "question": self.question,
            "options": dict(zip(LETTERS, self.options)),
            "answer": self.answer,
        }


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def content_hash(question: str, options) -> str:
    """Identity of an item for duplicate removal and the held-out proof: normalised question + options."""
    key = "\x1f".join(normalise_text(t) for t in (question, *options))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


@dataclass
class Problem:
    source: str
    line: int
    reason: str
    kind: str
    record: dict

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass
class LoadedData:
    """Rows per pool (`dev`/`val`/`test` for the TMMLU+ layout, `all` or train/validation/test for flat files)."""

    pools: dict[str, list[QARow]]
    problems: list[Problem]
    source: dict
    layout: str  # "tmmluplus" or "flat"
    subjects: list[str]


# ----------------------------------------------------------------------------------------------
# Reading files (with `datasets`), keeping the line number of every record


def _record_lines_csv(path: Path) -> list[int]:
    """Line where each CSV record starts (records may span lines; blank lines are skipped like pandas does)."""
    lines = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        start = 1
        for i, record in enumerate(reader):
            if i > 0 and record and any(cell.strip() for cell in record):
                lines.append(start)
            start = reader.line_num + 1
    return lines


def _record_lines_jsonl(path: Path) -> list[int]:
    with open(path, encoding="utf-8-sig") as f:
        return [i for i, line in enumerate(f, start=1) if line.strip()]


def _file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv",):
        return "csv"
    if suffix in (".json",):
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise DataError(f"{path}: unsupported file type '{suffix}' (use .csv, .json or .jsonl)")


@dataclass
class FileRecords:
    path: Path
    records: list[dict]
    lines: list[int]
    unit: str  # "line" (CSV, JSONL) or "item" (JSON array)


def _precheck(path: Path) -> str:
    """Exists, is not empty, is UTF-8; returns the format from the extension."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    fmt = _file_format(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    if not text.lstrip("\ufeff").strip():
        raise DataError(f"{path}: the file is empty")
    return fmt


def _parse_error(path: Path, fmt: str, error: Exception) -> DataError:
    """datasets wraps pandas/pyarrow parse errors in several layers: report the innermost reason."""
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause).strip():
        reason = str(cause).strip().splitlines()[-1]
    return DataError(f"{path}: not a valid {fmt.upper()} file: {reason}")


def _load(builder: str, files: list[Path], **kwargs):
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **kwargs)
    finally:
        datasets.enable_progress_bars()


def _read_csv_group(paths: list[Path], header: list[str], lines: dict[Path, list[int]]) -> list[FileRecords]:
    """CSV files sharing a header, read in one `load_dataset` call (one Arrow cache, not one per file)."""
    import datasets

    features = datasets.Features({name: datasets.Value("string") for name in header})
    kwargs = dict(encoding="utf-8-sig", features=features, keep_default_na=False, na_filter=False)
    try:
        table = _load("csv", paths, **kwargs)
    except Exception as error:
        if len(paths) == 1:
            raise _parse_error(paths[0], "csv", error) from None
        table = None
    if table is None or len(table) != sum(len(lines[p]) for p in paths):
        if len(paths) > 1:  # read one by one, so an error or the line numbers belong to the right file
            return [r for p in paths for r in _read_csv_group([p], header, lines)]
        # pandas counted records differently from the csv module (unusual quoting): use record numbers
        return [FileRecords(paths[0], table.to_list(), list(range(2, len(table) + 2)), "line")]
    rows = table.to_list()
    out, start = [], 0
    for p in paths:
        n = len(lines[p])
        out.append(FileRecords(p, rows[start:start + n], lines[p], "line"))
        start += n
    return out


def read_files(paths: list[str | os.PathLike]) -> list[FileRecords]:
    """Read CSV/JSON/JSONL files with `datasets`, keeping the line number of every record."""
    paths = [Path(p) for p in paths]
    formats = {p: _precheck(p) for p in paths}
    csv_lines: dict[Path, list[int]] = {}
    groups: dict[tuple[str, ...], list[Path]] = {}
    for p in paths:
        if formats[p] == "csv":
            csv_lines[p] = _record_lines_csv(p)
            if not csv_lines[p]:
                raise DataError(f"{p}: the file has a header but no rows")
            with open(p, encoding="utf-8-sig", newline="") as f:
                groups.setdefault(tuple(next(csv.reader(f), [])), []).append(p)
    by_path: dict[Path, FileRecords] = {}
    for header, group in groups.items():
        for result in _read_csv_group(group, list(header), csv_lines):
            by_path[result.path] = result
    for p in paths:
        if formats[p] == "csv":
            continue
        try:
            table = _load("json", [p])
        except Exception as error:
            raise _parse_error(p, formats[p], error) from None
        lines = _record_lines_jsonl(p) if formats[p] == "jsonl" else list(range(1, len(table) + 1))
        if len(lines) != len(table):
            lines = list(range(1, len(table) + 1))
        by_path[p] = FileRecords(p, table.to_list(), lines, "item" if formats[p] == "json" else "line")
    return [by_path[p] for p in paths]


def check_columns(result: FileRecords, required: tuple[str, ...] = REQUIRED_COLUMNS) -> FileRecords:
    """Accept the test_qa_data.json shape ({options: {A..D}}); every required column must be present."""
    if not result.records:
        raise DataError(f"{result.path}: the file has a header but no rows")
    columns = set(result.records[0])
    if "options" in columns and not set(LETTERS) <= columns:
        for r in result.records:
            options = r.pop("options") or {}
            for letter in LETTERS:
                r[letter] = options.get(letter) if isinstance(options, dict) else None
        columns = (columns - {"options"}) | set(LETTERS)
    missing = [c for c in required if c not in columns]
    if missing:
        optional = [c for c in ("answer", "subject", "id") if c not in required]
        raise DataError(
            f"{result.path}: missing column(s) {', '.join(missing)}; found {', '.join(sorted(columns)) or 'none'} "
            f"(need {','.join(required)} and optionally {','.join(optional)})"
        )
    return result


def read_records(path: str | os.PathLike, required: tuple[str, ...] = REQUIRED_COLUMNS) -> tuple[list[dict], list[int], str]:
    """One file: its records, their line numbers and the unit ("line" or "item")."""
    result = check_columns(read_files([path])[0], required)
    return result.records, result.lines, result.unit


# ----------------------------------------------------------------------------------------------
# Validation


def _text(value) -> str:
    if value is None:
        return ""
    return str(value).strip()


def validate_records(
    records: list[dict], lines: list[int], source: str, subject: str | None, seen_ids: dict[str, str],
    unit: str = "line", require_answer: bool = True,
) -> tuple[list[QARow], list[Problem]]:
    """Check every record; good ones become QARows, bad ones Problems naming the line and the reason."""
    rows, problems = [], []
    stem = Path(source).stem if not source.startswith(HUB_DATASET) else source.split("/")[-2] + "_" + source.split("/")[-1]
    for record, line in zip(records, lines):
        where = f"{unit} {line}" if unit == "item" else line

        def reject(kind: str, reason: str):
            problems.append(Problem(source, where, reason, kind, record))

        question = _text(record.get("question"))
        options = tuple(_text(record.get(letter)) for letter in LETTERS)
        raw_answer = _text(record.get("answer"))
        answer = _ANSWER_FORMS.get(raw_answer)
        if not question:
            reject("empty_question", "empty question")
            continue
        empty = [letter for letter, text in zip(LETTERS, options) if not text]
        if empty:
            reject("empty_option", f"empty option {', '.join(empty)}")
            continue
        if answer is None and (require_answer or raw_answer):
            shown = f"'{raw_answer}'" if raw_answer else "empty"
            reject("bad_answer", f"answer {shown} is not one of A, B, C, D")
            continue
        row_subject = _text(record.get("subject")) or subject or "unknown"
        row_id = _text(record.get("id")) or f"{stem}-{line}"
        if row_id in seen_ids:
            reject("duplicate_id", f"id '{row_id}' already used at {seen_ids[row_id]}")
            continue
        seen_ids[row_id] = f"{source}:{where}"
        rows.append(QARow(row_id, row_subject, question, options, answer, source, line))
    return rows, problems


# ----------------------------------------------------------------------------------------------
# The three sources


def layout_files(data_dir: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """`<subject>_<split>.csv` files of a TMMLU+-layout folder (or its `data/` subfolder), by subject and pool."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found")
    if (root / "data").is_dir() and not list(root.glob("*.csv")):
        root = root / "data"
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(root.glob("*.csv")):
        subject, _, split = path.stem.rpartition("_")
        if subject and split in LAYOUT_SPLITS:
            found.setdefault(subject, {})[LAYOUT_SPLITS[split]] = path
    if not found:
        raise DataError(f"{root}: no files named <subject>_{{dev,train,val,test}}.csv (the TMMLU+ layout)")
    return found


def _choose_subjects(spec: str, available: list[str], where: str) -> list[str]:
    """`all` means every official subject present; named subjects/categories must all be present."""
    table = registry()
    if spec.strip().lower() == "all":
        return sorted(s for s in available if s not in table or table[s].official)
    wanted = resolve_subjects(spec)
    requested_explicitly = {p.strip() for p in spec.split(",")}
    missing = [s for s in wanted if s not in available and s in requested_explicitly]
    if missing:
        raise DataError(f"{where}: no data for subject(s) {', '.join(missing)}")
    chosen = [s for s in wanted if s in available]
    if not chosen:
        raise DataError(f"{where}: none of the requested subjects ({spec}) has data here")
    return chosen


def load_data_dir(data_dir: str, subjects: str = "all") -> LoadedData:
    files = layout_files(data_dir)
    chosen = _choose_subjects(subjects, list(files), str(data_dir))
    pools: dict[str, list[QARow]] = {"dev": [], "val": [], "test": []}
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    wanted = [(subject, pool, path) for subject in chosen for pool, path in sorted(files[subject].items())]
    results = read_files([path for _, _, path in wanted])  # one datasets read for the whole folder
    for (subject, pool, path), result in zip(wanted, results):
        check_columns(result)
        rows, bad = validate_records(result.records, result.lines, str(path), subject, seen, result.unit)
        pools[pool].extend(rows)
        problems.extend(bad)
    source = {"kind": "data_dir", "path": str(data_dir)}
    return LoadedData(pools, problems, source, "tmmluplus", chosen)


def load_hub(subjects: str = "all", revision: str = HUB_DEFAULT_REVISION, cache_dir: str | None = None,
             dataset_name: str = HUB_DATASET) -> LoadedData:
    """`load_dataset("ikala/tmmluplus", subject, revision=...)` for each subject (needs the hub)."""
    import datasets

    from huggingface_hub import HfApi

    chosen = resolve_subjects(subjects)
    try:
        revision = HfApi().dataset_info(dataset_name, revision=revision).sha or revision
    except Exception as e:
        raise DataError(f"{dataset_name} (revision {revision}): cannot reach the hub ({type(e).__name__}); "
                        "use --data_dir with the dataset's CSV files for offline runs") from None
    pools: dict[str, list[QARow]] = {"dev": [], "val": [], "test": []}
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for subject in chosen:
        try:
            splits = datasets.load_dataset(dataset_name, subject, revision=revision, cache_dir=cache_dir)
        except Exception as e:
            raise DataError(f"{dataset_name} ({subject}, revision {revision}): could not load: {e}") from None
        for split_name, table in splits.items():
            pool = LAYOUT_SPLITS.get(split_name, split_name)
            records = table.to_list()
            source = f"{dataset_name}/{subject}/{split_name}"
            rows, bad = validate_records(records, list(range(1, len(records) + 1)), source, subject, seen, "row")
            pools.setdefault(pool, []).extend(rows)
            problems.extend(bad)
    source = {"kind": "hub", "dataset": dataset_name, "revision": revision}
    return LoadedData(pools, problems, source, "tmmluplus", chosen)


def load_files(files: dict[str, str], subjects: str = "all") -> LoadedData:
    """Flat CSV/JSON/JSONL files: `{"all": path}` or any of train/validation/test."""
    pools: dict[str, list[QARow]] = {}
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for pool, path in files.items():
        records, lines, unit = read_records(path)
        rows, bad = validate_records(records, lines, str(path), None, seen, unit)
        pools[pool] = rows
        problems.extend(bad)
    present = sorted({r.subject for rows in pools.values() for r in rows})
    if subjects.strip().lower() != "all":
        chosen = resolve_subjects(subjects)
        pools = {p: [r for r in rows if r.subject in chosen] for p, rows in pools.items()}
        if not any(pools.values()):
            raise DataError(f"{', '.join(files.values())}: no rows for the subjects {subjects}")
        present = [s for s in chosen if s in present]
    source = {"kind": "files", "files": {k: str(v) for k, v in files.items()}}
    return LoadedData(pools, problems, source, "flat", present)


# ----------------------------------------------------------------------------------------------
# Bad rows


def handle_problems(problems: list[Problem], on_bad_rows: str, output_dir: str | None) -> Counter:
    """`error`: raise with one line per problem. `skip`: count per reason and write them all to rejected_rows.jsonl."""
    counts = Counter(p.kind for p in problems)
    if not problems:
        return counts
    if on_bad_rows == "error":
        lines = "\n".join(f"  {p}" for p in problems)
        raise DataError(
            f"{len(problems)} bad row(s); fix them or pass --on_bad_rows skip to leave them out:\n{lines}"
        )
    summary = ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))
    logger.warning("skipped %d bad row(s) (%s)", len(problems), summary)
    if output_dir:
        path = Path(output_dir) / "rejected_rows.jsonl"
        write_jsonl(path, ({"file": p.source, "line": p.line, "reason": p.reason, "kind": p.kind,
                            "row": p.record} for p in problems))
        logger.warning("rejected rows written to %s", path)
    return counts


# ----------------------------------------------------------------------------------------------
# Splits


@dataclass
class Splits:
    train: list[QARow]
    validation: list[QARow]
    test: list[QARow]
    scheme: str
    duplicates_removed: int = 0
    duplicates_by_pool: dict[str, int] = field(default_factory=dict)


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


def make_splits(data: LoadedData, scheme: str, seed: int, validation_fraction: float,
                split_ratios: tuple[float, float, float]) -> Splits:
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
        pool = [r for rows in data.pools.values() for r in rows]
        pool, removed["all"] = _dedupe(pool, seen)
        train, validation, test = stratified_split(pool, list(split_ratios), seed)
    else:
        raise DataError(f"unknown split scheme '{scheme}' (use official, resplit or auto)")
    if not train:
        raise DataError("no training rows left after splitting")
    return Splits(train, validation, test, scheme, sum(removed.values()), removed)


# ----------------------------------------------------------------------------------------------
# Outputs


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json_if_present(path: str | os.PathLike):
    """The parsed file, None if it does not exist, one clear error if it is not JSON."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def write_jsonl(path: str | os.PathLike, records) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def build_manifest(data: LoadedData, splits: Splits, rejected: Counter, seed: int) -> dict:
    def per_subject(rows):
        return dict(sorted(Counter(r.subject for r in rows).items()))

    return {
        "source": data.source,
        "revision": data.source.get("revision"),
        "subjects": data.subjects,
        "split_scheme": splits.scheme,
        "seed": seed,
        "counts": {name: len(rows) for name, rows in
                   (("train", splits.train), ("validation", splits.validation), ("test", splits.test))},
        "counts_per_subject": {name: per_subject(rows) for name, rows in
                               (("train", splits.train), ("validation", splits.validation), ("test", splits.test))},
        "duplicates_removed": splits.duplicates_removed,
        "duplicates_removed_by_pool": splits.duplicates_by_pool,
        "rows_rejected": sum(rejected.values()),
        "rows_rejected_by_reason": dict(rejected),
        "hash": "sha256(NFKC, whitespace-collapsed question + 4 options)[:32]",
        "content_hashes": {
            "train": sorted(r.content_hash for r in splits.train),
            "validation": sorted(r.content_hash for r in splits.validation),
        },
    }


def write_split_outputs(output_dir: str, data: LoadedData, splits: Splits, rejected: Counter, seed: int) -> dict:
    """`test_qa_data.json` (the held-out benchmark) and `data_manifest.json` (the proof it was held out)."""
    write_json(Path(output_dir) / "test_qa_data.json", [row.to_item() for row in splits.test])
    manifest = build_manifest(data, splits, rejected, seed)
    write_json(Path(output_dir) / "data_manifest.json", manifest)
    return manifest


def load_items(path: str | os.PathLike, on_bad_rows: str = "error") -> list[QARow]:
    """Read a benchmark/test file (any supported format, including test_qa_data.json) into rows."""
    records, lines, unit = read_records(path)
    rows, problems = validate_records(records, lines, str(path), None, {}, unit)
    handle_problems(problems, on_bad_rows, None)
    return rows

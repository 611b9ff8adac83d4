"""Questions as rows: reading CSV/JSON/JSONL files, validating every record, and handling bad ones.

Every row remembers the file and line it came from, so a problem can always be reported as
`file:line: reason`, and nothing is dropped without being counted and written down.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .caches import datasets_cache, usable
from .errors import UserError
from .run_dir import REJECTED_FILE, write_jsonl
from .subjects import category_of

logger = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
REQUIRED_COLUMNS = ("question", "A", "B", "C", "D", "answer")
MAX_SHOWN_PROBLEMS = 50
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
    context: str | None = None  # retrieved passages (open book), its own segment of the model input

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


@functools.lru_cache(maxsize=1)
def _invisible() -> re.Pattern:
    """Format characters (Unicode Cf: zero-width space, joiners, BOM, bidi marks, soft hyphen), to remove."""
    chars = "".join(re.escape(chr(c)) for c in range(0x10000) if unicodedata.category(chr(c)) == "Cf")
    return re.compile(f"[{chars}\U000E0000-\U000E007F]")  # and the tag characters past the BMP


def normalise_text(text: str) -> str:
    """The text as identity and emptiness see it: NFKC, no format characters, whitespace collapsed. A cell
    made of a zero-width space is empty, and copies that differ by one are duplicates."""
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    if _invisible().search(text):
        text = _invisible().sub("", text)
    return " ".join(text.split())  # str.split's whitespace is re's \s


def content_hash(question: str, options) -> str:
    """Identity of an item for duplicate removal and the held-out proof: normalised question + options."""
    return _hash_normalised([normalise_text(t) for t in (question, *options)])


def _hash_normalised(texts) -> str:
    return hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:32]


@dataclass
class Problem:
    source: str
    line: int
    reason: str
    kind: str
    record: dict

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


# ----------------------------------------------------------------------------------------------
# Reading files, keeping the line number of every record

csv.field_size_limit(2**31 - 1)  # a long passage is a long question, not a broken file


def _file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
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
    name: str = ""  # how messages name the file (the path, or the hub file)


def decoded_text(raw: bytes, name: str) -> str:
    """The bytes as UTF-8 text (a BOM allowed), not empty; otherwise one line naming the file."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    if not text.strip():
        raise DataError(f"{name}: the file is empty")
    return text


def _text_of(path: Path, name: str) -> str:
    """Exists, is a file, is UTF-8 and not empty (a missing permission is an OSError, reported at the boundary)."""
    if path.is_dir():
        raise DataError(f"{name}: is a folder, not a data file")
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    return decoded_text(path.read_bytes(), name)


def _csv_layout(text: str, name: str, allow_empty: bool = False) -> tuple[list[str], list[int]]:
    """The header and the line where each record starts (records may span lines; blank lines are skipped
    as pandas does), with a header that names each column once."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        lines, start = [], reader.line_num + 1
        for record in reader:
            if record and any(cell.strip() for cell in record):
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{name}:{reader.line_num}: not valid CSV ({e})") from None
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(f"{name}:1: column {', '.join(repr(h) for h in repeated)} appears more than once in the "
                        "header")
    if any(not h for h in header):
        raise DataError(f"{name}:1: the header has an empty column name")
    if not lines and not allow_empty:
        raise DataError(f"{name}: the file has a header but no rows")
    return header, lines


def _parse_error(name: str, fmt: str, error: Exception) -> DataError:
    """datasets wraps pandas/pyarrow parse errors in several layers: report the innermost reason."""
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause).strip():
        reason = str(cause).strip().splitlines()[-1]
    return DataError(f"{name}: not a valid {fmt.upper()} file: {reason}")


def _read_csv_group(paths: list[Path], header: list[str], lines: dict[Path, list[int]],
                    names: dict[Path, str]) -> list[FileRecords]:
    """CSV files sharing a header, read in one `load_dataset` call (one Arrow cache, not one per file)."""
    import datasets

    features = datasets.Features({name: datasets.Value("string") for name in header})
    datasets.disable_progress_bars()
    try:
        # the header as trimmed (`A ` is the column A): named here, each file's own header line skipped
        table = datasets.load_dataset("csv", data_files=[str(p) for p in paths], split="train", encoding="utf-8-sig",
                                      cache_dir=str(usable(datasets_cache())),
                                      features=features, keep_default_na=False, na_filter=False,
                                      column_names=header, skiprows=1)
    except Exception as error:  # noqa: BLE001 - pandas/pyarrow parse errors, reported per file below
        if len(paths) == 1:
            raise _parse_error(names[paths[0]], "csv", error) from None
        table = None
    finally:
        datasets.enable_progress_bars()
    if table is None or len(table) != sum(len(lines[p]) for p in paths):
        if len(paths) > 1:  # read one by one, so an error or the line numbers belong to the right file
            return [r for p in paths for r in _read_csv_group([p], header, lines, names)]
        # pandas counted records differently from the csv module (unusual quoting): use record numbers
        return [FileRecords(paths[0], table.to_list(), list(range(2, len(table) + 2)), "line", names[paths[0]])]
    rows = table.to_list()
    out, start = [], 0
    for p in paths:
        n = len(lines[p])
        out.append(FileRecords(p, rows[start:start + n], lines[p], "line", names[p]))
        start += n
    return out


def _trim_keys(record: dict) -> dict:
    """Field names as a CSV header is read: `"A "` is the column A."""
    return {str(k).strip(): v for k, v in record.items()}


def _read_json(path: Path, text: str, name: str, fmt: str) -> FileRecords:
    """JSON (an array of objects) or JSONL (one object per line), parsed here so every error has its line."""
    if fmt == "json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(items, list):
            raise DataError(f"{name}: expected a JSON array of questions, got {type(items).__name__}")
        for i, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                raise DataError(f"{name}: item {i}: not a JSON object")
        if not items:
            raise DataError(f"{name}: the JSON array is empty")
        return FileRecords(path, [_trim_keys(i) for i in items], list(range(1, len(items) + 1)), "item", name)
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{name}:{number}: not a JSON object")
        records.append(_trim_keys(record))
        lines.append(number)
    return FileRecords(path, records, lines, "line", name)


def read_files(paths: list[str | os.PathLike], names: list[str] | None = None,
               allow_empty: bool = False) -> list[FileRecords]:
    """Read CSV (with `datasets`, files sharing a header in one go), JSON and JSONL files, keeping the line
    number of every record. `names` say how messages name each file (default: its path); `allow_empty`
    accepts a CSV with a header and no rows (one split of one subject in a folder may be empty)."""
    paths = [Path(p) for p in paths]
    name_of = {p: (names[i] if names else str(p)) for i, p in enumerate(paths)}
    by_path: dict[Path, FileRecords] = {}
    csv_lines: dict[Path, list[int]] = {}
    groups: dict[tuple[str, ...], list[Path]] = {}
    for p in paths:
        fmt = _file_format(p)
        text = _text_of(p, name_of[p])
        if fmt == "csv":
            header, csv_lines[p] = _csv_layout(text, name_of[p], allow_empty)
            if not csv_lines[p]:
                by_path[p] = FileRecords(p, [], [], "line", name_of[p])
                continue
            groups.setdefault(tuple(header), []).append(p)
        else:
            by_path[p] = _read_json(p, text, name_of[p], fmt)
    for header, group in groups.items():
        for result in _read_csv_group(group, list(header), csv_lines, name_of):
            by_path[result.path] = result
    return [by_path[p] for p in paths]


def check_columns(result: FileRecords, required: tuple[str, ...] = REQUIRED_COLUMNS) -> FileRecords:
    """Accept the test_qa_data.json shape ({options: {A..D}}); every required column must be present."""
    if not result.records:
        return result
    columns = set(result.records[0])
    if "options" in columns and not set(LETTERS) <= columns:
        for r in result.records:
            if "options" not in r:  # this record has letter columns already
                continue
            options = r.pop("options") or {}
            if isinstance(options, list) and len(options) <= len(LETTERS):  # ["鯨魚", "鯊魚", "章魚"]
                options = dict(zip(LETTERS, options))
            for letter in LETTERS:
                r[letter] = options.get(letter) if isinstance(options, dict) else None
        columns = (columns - {"options"}) | set(LETTERS)
    missing = [c for c in required if c not in columns]
    if missing:
        optional = [c for c in ("answer", "subject", "id") if c not in required]
        raise DataError(
            f"{result.name}: missing column(s) {', '.join(missing)}; found {', '.join(sorted(columns)) or 'none'} "
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


def option_problem(options, letters, texts=None) -> tuple[str, str] | None:
    """(kind, reason) when a row's options cannot be told apart: one is empty (invisible characters count as
    nothing), or two are the same text, so the gold one has an equal twin the model cannot prefer. `texts`:
    the options already normalised."""
    texts = texts if texts is not None else [normalise_text(o) for o in options]
    empty = [letter for letter, text in zip(letters, texts) if not text]
    if empty:
        return "empty_option", f"empty option {', '.join(empty)}"
    first: dict[str, str] = {}
    for letter, text in zip(letters, texts):
        if text in first:
            return "same_options", f"options {first[text]} and {letter} are the same text ('{text[:40]}')"
        first[text] = letter
    return None


def validate_records(
    records: list[dict], lines: list[int], source: str, subject: str | None, seen_ids: dict[str, str],
    unit: str = "line", require_answer: bool = True, fewer_options: bool = False,
) -> tuple[list[QARow], list[Problem]]:
    """Check every record; good ones become QARows, bad ones Problems naming the line and the reason.
    `fewer_options` (predict): a question may have 2 or 3 options, its last letters left empty."""
    rows, problems = [], []
    stem = Path(source).stem
    for record, line in zip(records, lines):
        where = f"{unit} {line}" if unit == "item" else line

        def reject(kind: str, reason: str):
            problems.append(Problem(source, where, reason, kind, record))

        structured = [key for key in ("question", *LETTERS, "answer") if isinstance(record.get(key), (dict, list))]
        if structured:
            reject("not_text", f"{', '.join(structured)}: not text (a JSON {type(record[structured[0]]).__name__})")
            continue
        question = _text(record.get("question"))
        options = tuple(_text(record.get(letter)) for letter in LETTERS)
        if fewer_options:
            while len(options) > 2 and not normalise_text(options[-1]):
                options = options[:-1]
        letters = LETTERS[:len(options)]
        raw_answer = _text(record.get("answer"))
        answer = _ANSWER_FORMS.get(raw_answer)
        normalised = [normalise_text(t) for t in (question, *options)]
        if not normalised[0]:
            reject("empty_question", "empty question" + (" (only invisible characters)" if question else ""))
            continue
        problem = option_problem(options, letters, normalised[1:])
        if problem:
            reject(*problem)
            continue
        if (answer is None or answer not in letters) and (require_answer or raw_answer):
            shown = f"'{raw_answer}'" if raw_answer else "empty"
            reject("bad_answer", f"answer {shown} is not one of {', '.join(letters)}")
            continue
        row_subject = _text(record.get("subject")) or subject or "unknown"
        row_id = _text(record.get("id")) or f"{stem}-{line}"
        if row_id in seen_ids:
            reject("duplicate_id", f"id '{row_id}' already used at {seen_ids[row_id]}")
            continue
        seen_ids[row_id] = f"{source}:{where}"
        row = QARow(row_id, row_subject, question, options, answer, source, line)
        row.__dict__["content_hash"] = _hash_normalised(normalised)  # the cached_property, from the texts at hand
        rows.append(row)
    return rows, problems


# ----------------------------------------------------------------------------------------------
# Bad rows


def handle_problems(problems: list[Problem], on_bad_rows: str, output_dir: str | None) -> Counter:
    """`error`: raise with one line per problem. `skip`: count per reason and write them all to rejected_rows.jsonl."""
    counts = Counter(p.kind for p in problems)
    if not problems:
        return counts
    if on_bad_rows == "error":
        shown = "\n".join(f"  {p}" for p in problems[:MAX_SHOWN_PROBLEMS])
        more = (f"\n  ... and {len(problems) - MAX_SHOWN_PROBLEMS} more (--on_bad_rows skip writes every one to "
                f"{REJECTED_FILE})" if len(problems) > MAX_SHOWN_PROBLEMS else "")
        raise DataError(
            f"{len(problems)} bad row(s); fix them or pass --on_bad_rows skip to leave them out:\n{shown}{more}"
        )
    summary = ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))
    logger.warning("skipped %d bad row(s) (%s)", len(problems), summary)
    if output_dir:
        write_rejected_rows(problems, output_dir)
    return counts


def write_rejected_rows(problems: list[Problem], output_dir: str | os.PathLike) -> None:
    """`rejected_rows.jsonl`: every row `--on_bad_rows skip` left out, with its file, line and reason."""
    if not problems:
        return
    path = Path(output_dir) / REJECTED_FILE
    write_jsonl(path, ({"file": p.source, "line": p.line, "reason": p.reason, "kind": p.kind, "row": p.record}
                       for p in problems))
    logger.warning("rejected rows written to %s", path)


def load_items(path: str | os.PathLike, on_bad_rows: str = "error") -> list[QARow]:
    """Read a benchmark/test file (any supported format, including test_qa_data.json) into rows."""
    records, lines, unit = read_records(path)
    rows, problems = validate_records(records, lines, str(path), None, {}, unit)
    handle_problems(problems, on_bad_rows, None)
    return rows

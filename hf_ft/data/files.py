"""Reading question files: CSV (pandas through datasets, one Arrow cache per header), JSON and JSONL, each record
with its line (or record number), every decoding and parsing failure as one line naming the file."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.caches import datasets_cache, usable
from .rows import (
    DUPLICATE_KEYS,
    LETTERS,
    REQUIRED_COLUMNS,
    DataError,
    QARow,
    conflicting_answers,
    handle_problems,
    validate_records,
)


def _file_format(path: Path, name: str) -> str:
    if path.is_dir():
        raise DataError(f"{name}: is a folder, not a data file (a folder in the TMMLU+ layout is --data_dir)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise DataError(f"{name}: unsupported file type '{suffix}' (use .csv, .json or .jsonl)")


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
    """Field names as a CSV header is read: `"A "` is the column A (and `"A"` beside it is A given twice)."""
    trimmed = _record_pairs([(str(k).strip(), v) for k, v in record.items() if k != DUPLICATE_KEYS])
    twice = record.get(DUPLICATE_KEYS, []) + trimmed.get(DUPLICATE_KEYS, [])
    if twice:
        trimmed[DUPLICATE_KEYS] = twice
    return trimmed


def _record_pairs(pairs: list[tuple]) -> dict:
    """A JSON object as a record: a key given twice is kept as a problem for the row's validation (json would
    silently keep the last value)."""
    record = {}
    for key, value in pairs:
        if key in record:
            record.setdefault(DUPLICATE_KEYS, []).append(key)
        record[key] = value
    return record


def _json(text: str):
    """NaN and Infinity (pandas' missing value) are an empty cell, as in a CSV file, not the text 'nan'."""
    return json.loads(text, object_pairs_hook=_record_pairs, parse_constant=lambda name: None)


def _read_json(path: Path, text: str, name: str, fmt: str) -> FileRecords:
    """JSON (an array of objects) or JSONL (one object per line), parsed here so every error has its line."""
    if fmt == "json":
        try:
            items = _json(text)
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
            record = _json(line)
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
        fmt = _file_format(p, name_of[p])
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


def read_records(path: str | os.PathLike, required: tuple[str, ...] = REQUIRED_COLUMNS,
                 flag: str | None = None) -> tuple[list[dict], list[int], str]:
    """One file: its records, their line numbers and the unit ("line" or "item"). `flag`: the option it came
    from, which file-level messages name (`--test_file x.csv: file not found`)."""
    result = check_columns(read_files([path], [f"{flag} {path}"] if flag else None)[0], required)
    return result.records, result.lines, result.unit


# ----------------------------------------------------------------------------------------------
# Validation


def load_items(path: str | os.PathLike, on_bad_rows: str = "error", flag: str | None = None) -> list[QARow]:
    """Read a benchmark/test file (any supported format, including test_qa_data.json) into rows."""
    records, lines, unit = read_records(path, flag=flag)
    rows, problems = validate_records(records, lines, str(path), None, {}, unit)
    conflicts, conflicted = conflicting_answers(rows)
    rows = [r for r in rows if r.content_hash not in conflicted]
    handle_problems(problems + conflicts, on_bad_rows, None, kept=len(rows))
    return rows

"""Reading an extra source: a hub dataset at one resolved commit, or local files, into records per file.

On the hub, a dataset's configs come from its card's `configs:` block (the layout `push_to_hub` and the hub's
"Convert dataset to Parquet" write), or from its `<config>/<split>-*.parquet` files; the matched files are
downloaded at the commit and read with pyarrow, so a bad record is named `repo@commit:file:row N`. A
loading-script repository (CMMLU) is never run: datasets ≥ 4 refuses scripts, and its adapter reads the data
file the script would have read (CMMLU's zip of `dev/` and `test/<subject>.csv`). A repo that is gone or
private is one line, asked once.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError, hub_problem
from ..data.files import decoded_text
from ..data.rows import DataError
from .adapters import ADAPTERS, required_columns, wanted
from .specs import SourceSpec

logger = logging.getLogger(__name__)

SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")
_SPLIT_FILE = re.compile(r"^(?P<split>[A-Za-z_]+?)(?:-\d{5}-of-\d{5}.*)?$")
_SPLIT_NAMES = {"train", "validation", "val", "dev", "test"}


@dataclass
class SourceFile:
    name: str  # how messages name it: repo@commit:path, or source-name:path-inside-the-source
    subject: str
    split: str
    records: list[dict]
    lines: list  # CSV/JSONL line numbers, or "row N" (parquet)


@dataclass
class SourceRead:
    files: list[SourceFile]
    record: dict  # revision, licence, configs and splits read: what the manifest says of the source


# ----------------------------------------------------------------------------------------------
# One file → records


def csv_records(text: str, name: str) -> tuple[list[dict], list[int]]:
    """Records and the line each starts on. An unnamed first column (CMMLU's index) is kept as ''; a row
    with more cells than the header is a problem of that row, reported with its line (`__cells__`)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        records, lines, start = [], [], reader.line_num + 1
        for cells in reader:
            if cells and any(c.strip() for c in cells):
                record = dict(zip(header, cells))
                if len(cells) > len(header):
                    record["__cells__"] = (len(cells), len(header))
                records.append(record)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{name}:{reader.line_num}: not valid CSV ({e})") from None
    return records, lines


def read_file(path: Path, name: str) -> tuple[list[dict], list]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow's errors are many; the reason is kept
            raise DataError(f"{name}: not a readable parquet file ({str(e).splitlines()[0]})") from None
        return records, [f"row {i}" for i in range(1, len(records) + 1)]
    text = decoded_text(path.read_bytes(), name)
    if suffix == ".csv":
        return csv_records(text, name)
    from ..data.files import _read_json

    result = _read_json(path, text, name, "json" if suffix == ".json" else "jsonl")
    return result.records, [f"item {n}" if result.unit == "item" else n for n in result.lines]


def checked(file: SourceFile, spec: SourceSpec) -> SourceFile:
    """A file with rows, holding the columns the adapter reads."""
    if not file.records:
        raise DataError(f"{file.name}: no rows")
    need = required_columns(ADAPTERS[spec.adapter], spec.columns)
    found = set(file.records[0])
    missing = [c for c in need if c not in found]
    if missing:
        raise DataError(f"{file.name}: missing column(s) {', '.join(missing)}; found {', '.join(sorted(found))} "
                        f"(adapter {spec.adapter} reads {', '.join(need)}"
                        + ("; name yours with columns=role:column)" if spec.adapter == "columns" else ")"))
    return file


def split_and_subject(path: str) -> tuple[str, str]:
    """`accountant/val-00000-of-00001.parquet` → (val, accountant); `agronomy.csv` → (train, agronomy)."""
    p = Path(path)
    match = _SPLIT_FILE.match(p.stem)
    if match and match["split"] in _SPLIT_NAMES:
        return match["split"], p.parent.name or "default"
    if p.parent.name in _SPLIT_NAMES:  # dev/agronomy.csv (CMMLU), <config>/<split>/0000.parquet
        return p.parent.name, p.stem
    return "train", p.stem


# ----------------------------------------------------------------------------------------------
# Local sources


def read_local(spec: SourceSpec) -> SourceRead:
    root = Path(spec.source)
    paths = [root] if root.is_file() else sorted(  # hidden files (.hf_ft_output.json, .git) are not data
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if root.is_file() and root.suffix.lower() not in SUFFIXES:
        raise DataError(f"{root}: unsupported file type '{root.suffix}' (use {', '.join(SUFFIXES)})")
    if not paths:
        raise DataError(f"{root}: no {', '.join(SUFFIXES)} files")
    files, splits = [], spec.wanted_splits
    for path in paths:
        relative = path.name if root.is_file() else path.relative_to(root).as_posix()
        split, subject = split_and_subject(relative)
        if splits and split not in splits and not root.is_file():
            continue
        if not wanted(subject, spec.subjects, spec.excluded) and not root.is_file():
            continue
        name = f"{spec.name}:{relative}"  # source:file, as messages and the (pushed) manifest name it
        records, lines = read_file(path, name)
        files.append(checked(SourceFile(name, subject, split, records, lines), spec))
    if not files:
        raise DataError(f"{root}: no file left after the split and subject filters")
    from ..core.provenance import card_license

    readme = (root if root.is_dir() else root.parent) / "README.md"
    return SourceRead(files, {"kind": "local", "path": str(root.resolve()),
                              "license": spec.license or card_license(readme)})


# ----------------------------------------------------------------------------------------------
# Hub sources


def _card_configs(readme: Path | None) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [path patterns]}} from a dataset card's `configs:` block."""
    if readme is None:
        return {}
    from huggingface_hub import DatasetCard

    try:
        data = DatasetCard.load(str(readme)).data.to_dict()
    except Exception:  # noqa: BLE001 - an unreadable card has no configs; the files are looked at instead
        return {}
    out = {}
    for config in data.get("configs") or []:
        if not isinstance(config, dict) or not config.get("config_name"):
            continue
        files = config.get("data_files")
        if isinstance(files, (str, list)) and (isinstance(files, str) or all(isinstance(f, str) for f in files)):
            files = [{"split": "train", "path": files}]
        splits = {}
        for entry in files or []:
            if isinstance(entry, dict) and entry.get("path"):
                paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
                splits.setdefault(str(entry.get("split", "train")), []).extend(map(str, paths))
        out[str(config["config_name"])] = splits
    return out


def hub_layout(listing: list[str], readme: Path | None) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [files]}}: the card's configs matched against the files, or the parquet files' layout."""
    parquet = [n for n in listing if n.endswith(".parquet")]
    configs = _card_configs(readme)
    if configs:
        return {name: {split: sorted(n for n in listing if any(fnmatch.fnmatchcase(n, p) for p in patterns))
                       for split, patterns in splits.items()} for name, splits in configs.items()}
    layout: dict[str, dict[str, list[str]]] = {}
    for name in parquet:
        split, config = split_and_subject(name)
        config = "default" if config == "data" else config
        layout.setdefault(config, {}).setdefault(split, []).append(name)
    return layout


def _choose(available: list[str], asked: tuple[str, ...], what: str, where: str) -> list[str]:
    missing = [a for a in asked if a not in available]
    if missing:
        raise UserError(f"{where}: no {what} {missing[0]!r}; it has {', '.join(sorted(available)) or 'none'}")
    return [a for a in available if a in asked] if asked else list(available)


def read_hub(spec: SourceSpec, cache_dir: str | None = None) -> SourceRead:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    from ..core.provenance import card_license

    api = HfApi()
    try:  # one ask each: a gone or private repo (401/404) is not retried
        sha = api.dataset_info(spec.source, revision=spec.revision).sha or spec.revision
        listing = api.list_repo_files(spec.source, repo_type="dataset", revision=sha)
    except Exception as error:  # noqa: BLE001 - translated, or re-raised by hub_problem
        raise UserError(f"--extra_data {spec.source} (revision {spec.revision}): {hub_problem(error)}") from None
    where = f"{spec.source}@{sha[:12]}"

    def download(filename: str) -> Path:
        try:
            return Path(hf_hub_download(spec.source, filename, repo_type="dataset", revision=sha, cache_dir=cache_dir))
        except Exception as error:  # noqa: BLE001
            raise UserError(f"{where}:{filename}: download failed: {hub_problem(error)}") from None

    readme = download("README.md") if "README.md" in listing else None
    adapter = ADAPTERS[spec.adapter]
    scripts = [n for n in listing if n.endswith(".py") and "/" not in n]
    record = {"kind": "hub", "dataset": spec.source, "revision": sha, "requested_revision": spec.revision,
              "license": spec.license or card_license(readme)}
    if adapter.reader == "zip_csv":
        archives = [n for n in listing if n.endswith(".zip")]
        if len(archives) != 1:
            raise UserError(f"{where}: expected one .zip of the data (the file {', '.join(scripts) or 'its script'} "
                            f"reads); found {', '.join(archives) or 'none'}")
        if scripts:
            logger.info("%s: %s is a loading script, which datasets >= 4 does not run; reading %s instead", where,
                        scripts[0], archives[0])
        files = _zip_files(download(archives[0]), f"{where}:{archives[0]}", spec)
        record.update(data_file=archives[0], loading_script=scripts[0] if scripts else None)
    else:
        layout = hub_layout(listing, readme)
        if not layout:
            reason = (f"a loading-script repository ({scripts[0]}); datasets >= 4 runs no scripts, and hf_ft has "
                      "no adapter that reads its data files" if scripts else "no parquet files and no configs")
            raise UserError(f"{where}: {reason}")
        configs = _choose(sorted(layout), spec.configs, "config", where)
        if not spec.configs:
            configs = [c for c in configs if wanted(c, spec.subjects, spec.excluded)]
        chosen: list[tuple[str, str, str]] = []
        for config in configs:
            splits = spec.wanted_splits
            present = sorted(layout[config])
            if spec.splits:
                _choose(present, spec.splits, f"split in config {config}:", where)
            for split in (s for s in present if not splits or s in splits):
                chosen += [(config, split, name) for name in layout[config][split]]
        if not chosen:
            raise UserError(f"{where}: no files for configs {', '.join(configs) or 'none'} and splits "
                            f"{', '.join(spec.wanted_splits) or 'all'}")
        try:
            local = Path(snapshot_download(spec.source, repo_type="dataset", revision=sha, cache_dir=cache_dir,
                                           allow_patterns=sorted({n for _, _, n in chosen})))
        except Exception as error:  # noqa: BLE001
            raise UserError(f"{where}: download failed: {hub_problem(error)}") from None
        files = []
        for config, split, name in chosen:
            records, lines = read_file(local / name, f"{where}:{name}")
            files.append(checked(SourceFile(f"{where}:{name}", config, split, records, lines), spec))
        record.update(configs=configs)
    record["splits"] = sorted({f.split for f in files})
    return SourceRead(files, record)


def _zip_files(path: Path, name: str, spec: SourceSpec) -> list[SourceFile]:
    """CMMLU's archive: `[folder/]<split>/<subject>.csv`, each read as a CSV file of the source."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{name}: not a zip archive") from None
    files = []
    with archive:
        for member in sorted(archive.namelist()):
            if not member.lower().endswith(".csv"):
                continue
            split, subject = split_and_subject(member)
            if spec.wanted_splits and split not in spec.wanted_splits:
                continue
            if (spec.configs and subject not in spec.configs) or \
                    (not spec.configs and not wanted(subject, spec.subjects, spec.excluded)):
                continue
            where = f"{name}/{member}"
            records, lines = csv_records(decoded_text(archive.read(member), where), where)
            files.append(checked(SourceFile(where, subject, split, records, lines), spec))
    if not files:
        raise DataError(f"{name}: no <split>/<subject>.csv files for splits {', '.join(spec.wanted_splits)}")
    return files


def read_source(spec: SourceSpec, cache_dir: str | None = None) -> SourceRead:
    return read_local(spec) if spec.local else read_hub(spec, cache_dir)

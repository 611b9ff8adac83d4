"""Where questions come from: a TMMLU+-layout folder, flat CSV/JSON/JSONL files, or the hub.

The hub source downloads the chosen subjects' CSV files at one resolved commit (huggingface_hub's
snapshot_download) and reads them like a local folder, so a bad row is reported as
`ikala/tmmluplus@<sha>:data/<subject>_test.csv:<line>` and the commit is recorded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError, hub_problem
from ..core.provenance import card_license
from ..task.subjects import registry, resolve_subjects
from .files import check_columns, read_files, read_records
from .rows import DataError, Problem, QARow, validate_records

logger = logging.getLogger(__name__)

HUB_DATASET = "ikala/tmmluplus"
# The default --dataset_revision: tag v1.1, which corrects 197 answers and removes 539 broken questions
# of v1.0 (published 2024 numbers are on v1.0: --dataset_revision v1.0 to compare with them). Every hub
# run resolves it to its commit SHA and records that in data_manifest.json.
HUB_DEFAULT_REVISION = "v1.1"
# The file layout of the hub repository: data/<subject>_<split>.csv. `_train.csv` (present in later
# commits for some subjects) is read as the dev split in a local folder; the hub's own configs map
# train → _dev.csv, validation → _val.csv, test → _test.csv.
LAYOUT_SPLITS = {"dev": "dev", "train": "dev", "val": "val", "validation": "val", "test": "test"}
HUB_SPLITS = ("dev", "val", "test")


@dataclass
class LoadedData:
    """Rows per pool (`dev`/`val`/`test` for the TMMLU+ layout, `all` or train/validation/test for flat files)."""

    pools: dict[str, list[QARow]]
    problems: list[Problem]
    source: dict
    layout: str  # "tmmluplus" or "flat"
    subjects: list[str]


def _csv_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file())


def layout_files(data_dir: str | os.PathLike, splits=tuple(LAYOUT_SPLITS)) -> dict[str, dict[str, Path]]:
    """`<subject>_<split>.csv` files of a TMMLU+-layout folder (or its `data/` subfolder), by subject and split
    name as written (`dev` and `train` are both the training pool; a folder may hold both, and both are read)."""
    root = Path(data_dir)
    if root.is_file():
        raise DataError(f"--data_dir {root}: is a file, not a folder (a single file is --train_file)")
    if not root.is_dir():
        raise DataError(f"--data_dir {root}: data directory not found")
    if (root / "data").is_dir() and not _csv_files(root):
        root = root / "data"
    found: dict[str, dict[str, Path]] = {}
    for path in _csv_files(root):  # music_test.CSV is a CSV file too
        subject, _, split = path.stem.rpartition("_")
        if subject and split in splits:
            if split in found.get(subject, {}):
                raise DataError(f"--data_dir {root}: {found[subject][split].name} and {path.name} are the same file "
                                "name but for case; keep one")
            found.setdefault(subject, {})[split] = path
    for path in sorted(root.iterdir()):
        subject, _, split = path.stem.rpartition("_")
        if path.is_file() and subject and split in splits and path.suffix.lower() != ".csv":
            logger.warning("--data_dir %s: %s is not read: the TMMLU+ layout is <subject>_<split>.csv", root,
                           path.name)
    if not found:
        raise DataError(f"{root}: no files named <subject>_{{dev,train,val,test}}.csv (the TMMLU+ layout)")
    return found


def choose_subjects(spec: str, available: list[str], where: str) -> list[str]:
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


def _read_layout(files: dict[str, dict[str, Path]], chosen: list[str], display=str) -> tuple[dict, list]:
    pools: dict[str, list[QARow]] = {"dev": [], "val": [], "test": []}
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    wanted = [(subject, LAYOUT_SPLITS[split], path) for subject in chosen
              for split, path in sorted(files[subject].items())]
    results = read_files([path for _, _, path in wanted], [display(path) for _, _, path in wanted], allow_empty=True)
    for (subject, pool, path), result in zip(wanted, results):
        if not result.records:  # allowed in the layout (a subject may have no rows in a split), never unsaid
            logger.warning("%s: a header and no rows: %s has no %s questions", display(path), subject, pool)
        check_columns(result)
        rows, bad = validate_records(result.records, result.lines, display(path), subject, seen, result.unit)
        pools[pool].extend(rows)
        problems.extend(bad)
    return pools, problems


def load_data_dir(data_dir: str, subjects: str = "all") -> LoadedData:
    files = layout_files(data_dir)
    chosen = choose_subjects(subjects, list(files), str(data_dir))
    pools, problems = _read_layout(files, chosen)
    return LoadedData(pools, problems, {"kind": "data_dir", "path": str(data_dir)}, "tmmluplus", chosen)


def load_hub(subjects: str = "all", revision: str = HUB_DEFAULT_REVISION, cache_dir: str | None = None,
             dataset_name: str = HUB_DATASET) -> LoadedData:
    """The chosen subjects' `data/<subject>_{dev,val,test}.csv` at one commit of the hub dataset."""
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi()
    where = f"{dataset_name} (revision {revision})"
    try:
        sha = api.dataset_info(dataset_name, revision=revision).sha or revision
        listing = api.list_repo_files(dataset_name, repo_type="dataset", revision=sha)
    except Exception as error:  # noqa: BLE001 - translated or re-raised by hub_problem
        raise UserError(f"{where}: {hub_problem(error)}; for an offline run use --data_dir with the dataset's "
                        "CSV files") from None
    available: dict[str, set[str]] = {}
    for name in listing:
        stem = Path(name).stem
        subject, _, split = stem.rpartition("_")
        if name.startswith("data/") and name.endswith(".csv") and split in HUB_SPLITS:
            available.setdefault(subject, set()).add(split)
    if not available:
        raise DataError(f"{dataset_name}@{sha[:12]}: no data/<subject>_<split>.csv files (is this TMMLU+?)")
    chosen = choose_subjects(subjects, sorted(available), f"{dataset_name}@{sha[:12]}")
    patterns = [f"data/{subject}_{split}.csv" for subject in chosen for split in sorted(available[subject])]
    patterns += ["README.md"]  # the dataset card: its licence goes into the manifest and the model card
    try:
        local = Path(snapshot_download(dataset_name, repo_type="dataset", revision=sha, cache_dir=cache_dir,
                                       allow_patterns=patterns))
    except Exception as error:  # noqa: BLE001
        raise UserError(f"{dataset_name}@{sha[:12]}: download failed: {hub_problem(error)}") from None
    files = layout_files(local / "data", HUB_SPLITS)
    pools, problems = _read_layout(files, chosen,
                                   display=lambda p: f"{dataset_name}@{sha[:12]}:{p.relative_to(local).as_posix()}")
    source = {"kind": "hub", "dataset": dataset_name, "revision": sha, "requested_revision": revision,
              "license": card_license(local / "README.md")}
    return LoadedData(pools, problems, source, "tmmluplus", chosen)


def load_files(files: dict[str, str], subjects: str = "all") -> LoadedData:
    """Flat CSV/JSON/JSONL files: `{"all": path}` or any of train/validation/test."""
    pools: dict[str, list[QARow]] = {}
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for pool, path in files.items():
        records, lines, unit = read_records(path, flag=f"--{'train' if pool == 'all' else pool}_file")
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


def load_rows(data_args, cache_dir: str | None) -> LoadedData:
    """Pick the source: a TMMLU+-layout folder, flat files, or the hub."""
    if data_args.data_dir:
        return load_data_dir(data_args.data_dir, data_args.subjects)
    files = {name: path for name, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                                            ("test", data_args.test_file)) if path}
    if files:
        if list(files) == ["train"]:
            files = {"all": files["train"]}
        return load_files(files, data_args.subjects)
    return load_hub(data_args.subjects, data_args.dataset_revision, cache_dir, data_args.dataset_name)

"""The run folder: its file names, atomic writers and readers, the lock, and what "finished" means.

A run writes `hf_ft_started.json` (its identity: a hash of the arguments that shape the result) before
anything else and `hf_ft_finished.json` (the final files and their sizes) after everything else. A
folder is served, evaluated or pushed only when its finished marker matches the files on disk; a
folder holding only the same run's early files is resumed; anything else is refused. Checkpoints get
the same treatment: a marker written after the Trainer saved them, checked before resuming.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import zipfile
from pathlib import Path

from .errors import UserError

logger = logging.getLogger(__name__)

TEST_ITEMS_FILE = "test_qa_data.json"
MANIFEST_FILE = "data_manifest.json"
RUN_RECORD_FILE = "hf_ft_run.json"
CARD_FILE = "README.md"
CURVE_FILE = "validation_loss_curve.png"
HISTORY_FILE = "loss_history.json"
TEST_PREDICTIONS_FILE = "test_predictions.jsonl"
# --folds: the training-pool fold a run held out, and its predictions on it (the out-of-fold estimate's input).
FOLD_ITEMS_FILE = "fold_qa_data.json"
FOLD_PREDICTIONS_FILE = "fold_predictions.jsonl"
# What is pushed by default instead of the test questions: ids, content hashes and per-item correctness.
TEST_ITEM_RESULTS_FILE = "test_item_results.jsonl"
REJECTED_FILE = "rejected_rows.jsonl"
EVAL_RESULTS_FILE = "eval_results.json"
COMPARISON_DIR = "comparison"
STARTED_FILE = "hf_ft_started.json"
FINISHED_FILE = "hf_ft_finished.json"
CHECKPOINT_MARKER = "hf_ft_checkpoint.json"
LOCK_FILE = ".hf_ft.lock"
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class RunDirError(UserError):
    pass


# ----------------------------------------------------------------------------------------------
# Writers and readers


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically: a reader (or a rerun after kill -9) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: str | os.PathLike, records) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_json_if_present(path: str | os.PathLike):
    """The parsed file, None if it does not exist, one clear error if it is not JSON."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: str | os.PathLike) -> list:
    """Every record of a JSON-lines file hf_ft wrote; a missing file or a bad line is one clear error."""
    from .readers import json_lines

    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: not found")
    return json_lines(path.read_text(encoding="utf-8"), path, RunDirError)


# ----------------------------------------------------------------------------------------------
# Identity, lock, started and finished


def run_identity(settings: dict) -> str:
    """A short hash of the settings that shape a run's result (not where it writes or how it logs)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def locked(output_dir: str | os.PathLike):
    """An exclusive lock on the output folder for the whole run; a second run into it is refused with the
    process that holds it. The kernel drops the lock when the holder dies, even by kill -9."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunDirError(f"output_dir {out} is in use by {holder}; wait for it to finish or choose another "
                          "--output_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    try:
        yield
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def file_sizes(folder: Path, names) -> dict[str, int]:
    return {name: (folder / name).stat().st_size for name in names if (folder / name).is_file()}


def mark_started(output_dir: str | os.PathLike, identity: str) -> None:
    write_json(Path(output_dir) / STARTED_FILE, {"identity": identity})


def mark_finished(output_dir: str | os.PathLike, identity: str) -> None:
    """Written last: lists every file of the finished run with its size."""
    out = Path(output_dir)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not _is_scratch(p, out))
    write_json(out / FINISHED_FILE, {"identity": identity, "files": file_sizes(out, files)})


def _is_scratch(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return (rel.parts[0].startswith("checkpoint-") or rel.name.startswith(".") or rel.name == FINISHED_FILE
            or rel.parts[0] == COMPARISON_DIR)


def finished_problem(output_dir: str | os.PathLike) -> str | None:
    """None when the folder holds a finished run (or is not an hf_ft run at all); else what is wrong."""
    out = Path(output_dir)
    if not (out / STARTED_FILE).is_file() and not (out / FINISHED_FILE).is_file():
        return None  # a plain model folder: nothing to check
    marker = read_json_if_present(out / FINISHED_FILE)
    if marker is None:
        return "its run has not finished (no hf_ft_finished.json): run the same command again to complete it"
    for name, size in marker.get("files", {}).items():
        path = out / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size and name not in (CARD_FILE, RUN_RECORD_FILE):
            return f"{name} has {path.stat().st_size} bytes, the finished run wrote {size}"
    return None


def several_runs_problem(folder: str | os.PathLike, use: str) -> str | None:
    """A --seeds or --folds folder (seed-1, seed-2, ... or fold-0, fold-1, ... and no model of its own) where one
    run is expected: which runs it holds and what to give instead. `use`: what the command could do with the
    whole folder."""
    out = Path(folder)
    for kind in ("seed", "fold"):
        runs = sorted(p.name for p in out.glob(f"{kind}-*") if p.is_dir()) if out.is_dir() else []
        if runs and not (out / "config.json").is_file():
            return f"{folder}: a --{kind}s folder ({', '.join(runs)}), not one model: {use}, e.g. {out / runs[0]}"
    return None


def require_finished(output_dir: str | os.PathLike) -> None:
    problem = finished_problem(output_dir)
    if problem:
        raise RunDirError(f"{output_dir}: not a complete run: {problem}")


# ----------------------------------------------------------------------------------------------
# Checkpoints


def mark_checkpoint(checkpoint: str | os.PathLike, identity: str) -> None:
    """After the Trainer has written every file of a checkpoint: its files, sizes and the run identity."""
    folder = Path(checkpoint)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name != CHECKPOINT_MARKER)
    write_json(folder / CHECKPOINT_MARKER, {"identity": identity, "files": file_sizes(folder, files)})


def _safetensors_problem(path: Path) -> str | None:
    """The header must parse and the tensors must end where the file ends."""
    try:
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except Exception as e:  # noqa: BLE001 - any way a header can be broken
        return f"{path.name}: unreadable safetensors header ({type(e).__name__})"
    if path.stat().st_size != 8 + header_size + end:
        return f"{path.name}: {path.stat().st_size} bytes, the header describes {8 + header_size + end}"
    return None


def _zip_problem(path: Path) -> str | None:
    """torch.save files are zip archives: a truncated one fails its central directory or a CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{path.name}: truncated or corrupt ({type(e).__name__})"
    return f"{path.name}: corrupt entry {bad}" if bad else None


def checkpoint_problem(checkpoint: str | os.PathLike, identity: str | None, require_marker: bool) -> str | None:
    """None when the checkpoint can be resumed from; else why not."""
    folder = Path(checkpoint)
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "trainer_state.json is not valid JSON"
    marker = read_json_if_present_quietly(folder / CHECKPOINT_MARKER)
    if marker is not None:
        if identity is not None and marker.get("identity") != identity:
            return "written by a run with other arguments"
        for name, size in marker.get("files", {}).items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != size:
                return f"{name}: missing or not the size it was saved with"
        return None
    if require_marker:
        return f"no {CHECKPOINT_MARKER}: not written by this run"
    for path in sorted(folder.rglob("*")):
        problem = (_safetensors_problem(path) if path.suffix == ".safetensors"
                   else _zip_problem(path) if path.suffix in (".pt", ".pth", ".bin") else None)
        if problem:
            return problem
    return None


def _at_the_end(checkpoint: str | os.PathLike) -> str | None:
    state = read_json_if_present_quietly(Path(checkpoint) / "trainer_state.json") or {}
    if 0 < state.get("max_steps", 0) <= state.get("global_step", 0):
        return "it is the end of training (resumed from there, transformers would train past max_steps)"
    return None


def read_json_if_present_quietly(path: Path):
    try:
        return read_json_if_present(path)
    except RunDirError:
        return None


def usable_checkpoint(output_dir: str | os.PathLike, identity: str | None, require_marker: bool) -> str | None:
    """The newest checkpoint that passes `checkpoint_problem`; broken newer ones are skipped with a warning.

    A checkpoint at the very end of training is skipped too: transformers 5.24 resumed from it trains one
    step past max_steps, so the run redoes its last stretch from the checkpoint before (the same steps,
    the same result) instead."""
    from transformers.trainer_utils import sort_checkpoints

    for path in reversed(sort_checkpoints(str(output_dir))):
        problem = checkpoint_problem(path, identity, require_marker) or _at_the_end(path)
        if problem is None:
            return path
        logger.warning("skipping %s: %s", path, problem)
    return None

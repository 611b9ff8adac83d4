"""The one guarded writer: where any command (evaluate, predict, the make-* helpers, the benchmarks) is about
to write, it claims the target here first, before any work.

A target is refused, in one line, when it lies under a file, when it is one of the command's inputs or lies
inside one or holds one, and when it already holds something this command did not write itself (a folder
without this command's marker, a file that is not this command's output), unless the user passed the
command's overwrite flag. Nothing is deleted: a refusal leaves everything as it was. (Training guards its
output folder itself, with its run identity: hf_ft.training.start.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserError, writable_file, writable_folder

MARKER = ".hf_ft_output.json"  # {"command": ...}: what wrote this folder


def _refuse_inputs(target: Path, flag: str, inputs) -> None:
    """`inputs`: {flag: path}, or (flag, path) pairs where one flag names several."""
    resolved = target.resolve()
    for input_flag, source in (inputs.items() if isinstance(inputs, dict) else inputs or ()):
        if not source:
            continue
        held = Path(source).resolve()
        kind = "file" if held.is_file() else "folder"
        if resolved == held:
            raise UserError(f"{flag} {target}: is the {input_flag} {kind}; writing there would overwrite it")
        if held in resolved.parents:
            raise UserError(f"{flag} {target}: is inside the {input_flag} {kind} {source}; write somewhere else")
        if resolved in held.parents:
            raise UserError(f"{flag} {target}: holds the {input_flag} {kind} {source}; write somewhere else")


def claim_folder(path: str | os.PathLike, command: str, flag: str, *, overwrite: bool = False,
                 overwrite_flag: str = "--overwrite", inputs: dict | None = None, written_before=None) -> Path:
    """Make `path` this command's output folder (created, with its marker), or refuse it. `written_before`
    (names → bool) recognises a folder the command wrote before it left markers."""
    writable_folder(path, flag)
    target = Path(path)
    _refuse_inputs(target, flag, inputs)
    if target.is_dir() and not overwrite:
        marker = target / MARKER
        made_by = None
        if marker.is_file():
            try:
                made_by = json.loads(marker.read_text(encoding="utf-8")).get("command")
            except (ValueError, AttributeError):
                made_by = None
        others = sorted(p.name for p in target.iterdir() if p.name != MARKER)
        if others and made_by != command and not (made_by is None and written_before and written_before(others)):
            shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
            whose = f"`{made_by}`" if made_by else "something other than"
            raise UserError(f"{flag} {target}: holds files {whose} `{command}` did not write ({shown}); name a new "
                            f"or empty folder, or pass {overwrite_flag} to write over them")
    target.mkdir(parents=True, exist_ok=True)
    (target / MARKER).write_text(json.dumps({"command": command}) + "\n", encoding="utf-8")
    return target


def names_like(*patterns: str):
    """`written_before` for a folder whose every entry matches one of these regular expressions."""
    import re

    compiled = [re.compile(p) for p in patterns]
    return lambda names: all(any(c.fullmatch(n) for c in compiled) for n in names)


def claim_file(path: str | os.PathLike, command: str, flag: str, *, is_own=None, overwrite: bool = False,
               overwrite_flag: str = "--overwrite", inputs: dict | None = None) -> Path:
    """Make `path` a file this command may write, or refuse it: an existing file is replaced only when
    `is_own(path)` says this command wrote it (or with the overwrite flag)."""
    target = Path(path)
    writable_file(target, flag)
    _refuse_inputs(target, flag, inputs)
    if target.is_file() and target.stat().st_size and not overwrite and not (is_own and _safely(is_own, target)):
        raise UserError(f"{flag} {target}: a file `{command}` did not write is there; name another file, or pass "
                        f"{overwrite_flag} to replace it")
    return target


def _safely(check, path: Path) -> bool:
    try:
        return bool(check(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def first_json_line_has(*keys: str):
    """`is_own` for a JSONL output: its first line is a JSON object with these keys."""
    def check(path: Path) -> bool:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
        return isinstance(first, dict) and all(k in first for k in keys)
    return check


def json_written_by(command: str):
    """`is_own` for a JSON report that records `"written_by": command`."""
    def check(path: Path) -> bool:
        report = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(report, dict) and report.get("written_by") == command
    return check

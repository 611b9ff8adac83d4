"""Config files read by kind, with the checks every one of them needs: the file exists and is a file, it is
UTF-8 (a byte-order mark is fine), it is not empty, and no key is given twice (JSON and YAML parsers would
silently keep the last value). Each problem is one line naming the flag and the file."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

SUFFIXES = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}


class DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple]) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"the key '{key}' is given twice")
        seen[key] = value
    return seen


def json_lines(text: str, where, error: type[UserError] = UserError) -> list:
    """Every record of a JSON-lines text (blank lines skipped); a bad line is one error naming `where`:line."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise error(f"{where}:{number}: not valid JSON ({e.msg})") from None
    return records


def _not_json_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def strict_json(text: str):
    """json.loads that refuses a key given twice in one object and NaN/Infinity (not JSON, which Python's
    parser accepts)."""
    return json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_not_json_constant)


def _yaml_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise DuplicateKey(f"line {key_node.start_mark.line + 1}: the key '{key}' is given twice "
                                       f"(first at line {seen[key]})")
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def read_mapping_file(path: str | Path, what: str, error: type[UserError] = UserError, kind: str | None = None) -> dict:
    """A JSON or YAML file holding one mapping (a config file). `what` names it in every message, e.g.
    `--deepspeed ds.json` or `c.yaml`; `error` is the UserError subclass raised; `kind` ("JSON" or "YAML")
    reads the file as that whatever its suffix."""
    try:
        return _read_mapping_file(Path(path), what, kind)
    except UserError as e:
        raise error(str(e)) from None


def _read_mapping_file(p: Path, what: str, kind: str | None) -> dict:
    if not p.exists():
        raise UserError(f"{what}: config file not found")
    if not p.is_file():
        raise UserError(f"{what}: is a folder, not a file")
    kind = kind or SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise UserError(f"{what}: a config file is JSON (.json) or YAML (.yaml, .yml), not "
                        f"{p.suffix or 'a file without a suffix'}")
    try:
        text = p.read_bytes().decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is fine
    except UnicodeDecodeError as e:
        raise UserError(f"{what}: not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise UserError(f"{what}: the file is empty")
    try:
        if kind == "JSON":
            config = strict_json(text)
        else:
            import yaml

            config = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except DuplicateKey as e:
        raise UserError(f"{what}: {e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{what}: not valid JSON: line {e.lineno}: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - yaml's errors, NaN
        raise UserError(f"{what}: not valid {kind}: {' '.join(str(e).split())[:200]}") from None
    if config is None:
        raise UserError(f"{what}: holds no settings (only comments or an empty document)")
    if not isinstance(config, dict):
        raise UserError(f"{what}: expected a mapping of names to values, got a {kind} {type(config).__name__}")
    return config

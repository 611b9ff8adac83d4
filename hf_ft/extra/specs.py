"""`--extra_data` strings → `SourceSpec`s, checked before any work.

A source is a hub dataset id or a local file or folder, optionally followed by settings in the form of a
URL query:

    ceval/ceval-exam?splits=val,dev&revision=main
    haonan-li/cmmlu?exclude=chinese_*,marxist_theory&cap=5000
    dataset-org/c3?configs=mixed,dialog&weight=0.5
    ./more_questions.csv?columns=question:stem,options:choices,answer:label&license=cc-by-4.0

Sources known to contain TMMLU+ itself are refused here, with the reason, whatever their settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from ..core.errors import UserError
from .adapters import ADAPTERS, COLUMN_ROLES, adapter_for

KEYS = {
    "adapter": f"the layout: {', '.join(ADAPTERS)} (default: from the repo id; a local source: columns)",
    "configs": "hub configs to read (comma-separated; default: all but the adapter's exclusions)",
    "splits": "splits to read (default: the adapter's labelled splits)",
    "revision": "hub revision (branch, tag or commit; resolved to its commit and recorded; default main)",
    "subjects": "only these subjects (the source's own names, comma-separated, * wildcards)",
    "exclude": "subjects left out (replaces the adapter's default exclusions; empty: none)",
    "cap": "at most this many rows from the source (a seeded sample)",
    "weight": "rows drawn per row kept (0.5: half of them, 2: each twice)",
    "convert": "script conversion: auto (s2twp when the text is Simplified), s2twp, s2tw, s2t or none",
    "columns": "the column map of the columns adapter: role:column pairs (roles: "
               f"{', '.join(COLUMN_ROLES)})",
    "license": "the source's licence, when its card does not say (recorded in the manifest and the card)",
    "name": "how ids, reports and the card name the source (default: the repo or file name)",
}
CONVERSIONS = ("auto", "s2twp", "s2tw", "s2t", "none")

# Sources that hold TMMLU+ itself: never training data, whatever their settings say.
BLOCKED = (
    (re.compile(r"^mediatek-research/tceval(-v2)?$", re.I),
     "its tmmluplus-* configs are TMMLU+ v1.0's test and dev splits verbatim (with the v1.0 answers)"),
    (re.compile(r"^ikala/tmmluplus$", re.I), "it is TMMLU+, the benchmark this run is tested on"),
    (re.compile(r"ttqa", re.I), "TTQA is inside TMMLU+ (its subject ttqav2)"),
)


@dataclass(frozen=True)
class SourceSpec:
    source: str  # a hub dataset id, or a local path
    adapter: str
    local: bool
    configs: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    revision: str = "main"
    subjects: tuple[str, ...] = ()
    exclude: tuple[str, ...] | None = None  # None: the adapter's defaults
    cap: int | None = None
    weight: float = 1.0
    convert: str = "auto"
    columns: dict = field(default_factory=dict, hash=False)
    license: str | None = None
    name: str = ""
    text: str = ""  # the string as given

    @property
    def excluded(self) -> tuple[str, ...]:
        return ADAPTERS[self.adapter].exclude if self.exclude is None else self.exclude

    @property
    def wanted_splits(self) -> tuple[str, ...]:
        return self.splits or ADAPTERS[self.adapter].splits

    def record(self) -> dict:
        return {"source": self.source if not self.local else Path(self.source).name, "name": self.name,
                "adapter": self.adapter, "configs": list(self.configs) or "all", "splits": list(self.wanted_splits)
                or "all", "requested_revision": None if self.local else self.revision,
                "subjects": list(self.subjects) or "all", "excluded_subjects": list(self.excluded),
                "cap": self.cap, "weight": self.weight, "convert": self.convert, "columns": self.columns or None}


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def blocked_reason(source: str) -> str | None:
    name = source.strip().strip("/")
    for pattern, why in BLOCKED:
        if pattern.search(name):
            return why
    return None


def parse_spec(text: str) -> SourceSpec:
    """One `--extra_data` value; a UserError names the value and what is wrong with it."""
    where = f"--extra_data {text}"
    source, _, query = text.partition("?")
    source = source.strip()
    if not source:
        raise UserError(f"{where}: no source before the settings; give a hub dataset id or a local path")
    why = blocked_reason(source)
    if why:
        raise UserError(f"{where}: refused: {why}; training on it would put test questions in the training data")
    try:
        settings = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise UserError(f"{where}: settings are key=value pairs joined by &, e.g. ?splits=val,dev&cap=1000") from None
    keys = [k for k, _ in settings]
    unknown = [k for k in keys if k not in KEYS]
    if unknown:
        raise UserError(f"{where}: unknown setting {unknown[0]!r}; the settings are {', '.join(KEYS)}")
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise UserError(f"{where}: {repeated[0]} is given twice")
    given = dict(settings)
    local = Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
    if local and not Path(source).expanduser().exists():
        raise UserError(f"{where}: no such file or folder (a hub dataset id is org/name)")
    adapter = given.get("adapter") or ("columns" if local else adapter_for(source))
    if adapter is None:
        raise UserError(f"{where}: no built-in adapter knows {source}; say its layout with adapter= "
                        f"({', '.join(ADAPTERS)}), or map its columns with adapter=columns&columns=...")
    if adapter not in ADAPTERS:
        raise UserError(f"{where}: adapter {adapter!r}: choose {', '.join(ADAPTERS)}")
    spec_adapter = ADAPTERS[adapter]
    for key in ("configs", "splits", "subjects", "revision", "convert", "columns", "license", "name", "adapter"):
        if key in given and not given[key].strip():
            raise UserError(f"{where}: {key}= is empty; leave it out for its default")
    cap = None
    if "cap" in given:
        if not re.fullmatch(r"\d+", given["cap"].strip()) or int(given["cap"]) < 1:
            raise UserError(f"{where}: cap={given['cap']}: need a whole number of rows, 1 or more")
        cap = int(given["cap"])
    weight = 1.0
    if "weight" in given:
        try:
            weight = float(given["weight"])
        except ValueError:
            weight = float("nan")
        if not (0 < weight <= 100):
            raise UserError(f"{where}: weight={given['weight']}: need a number in (0, 100]")
    convert = given.get("convert", "auto").strip()
    if convert not in CONVERSIONS:
        raise UserError(f"{where}: convert={convert}: choose {', '.join(CONVERSIONS)}")
    columns = {}
    if "columns" in given:
        if adapter != "columns":
            raise UserError(f"{where}: columns= is the column map of adapter=columns, not of {adapter}")
        for pair in _list(given["columns"]):
            role, _, column = pair.partition(":")
            if role not in COLUMN_ROLES or not column.strip():
                raise UserError(f"{where}: columns: {pair!r}: need role:column with a role among "
                                f"{', '.join(COLUMN_ROLES)}")
            columns[role] = column.strip()
    splits = _list(given.get("splits", ""))
    withheld = [s for s in splits if s in spec_adapter.unlabelled_splits]
    if withheld:
        raise UserError(f"{where}: split {withheld[0]}: {spec_adapter.unlabelled_why}")
    if local and ("configs" in given or "revision" in given):
        raise UserError(f"{where}: configs= and revision= are for hub datasets; this is a local path")
    if "revision" in given:
        from ..core.validation import revision_problem

        problem = revision_problem("revision", given["revision"].strip())
        if problem:
            raise UserError(f"{where}: {problem.removeprefix('--')}")
    name = given.get("name") or (Path(source).stem if local else source.split("/")[-1])
    return SourceSpec(
        source=str(Path(source).expanduser()) if local else source, adapter=adapter, local=local,
        configs=_list(given.get("configs", "")), splits=splits, revision=given.get("revision", "main").strip(),
        subjects=_list(given.get("subjects", "")),
        exclude=_list(given["exclude"]) if "exclude" in given else None, cap=cap, weight=weight, convert=convert,
        columns=columns, license=(given.get("license") or "").strip().lower() or None, name=name, text=text)


def spec_problems(texts: list[str] | None) -> list[str]:
    """One line per `--extra_data` value that cannot work (and per name given twice)."""
    specs, problems = [], []
    for text in texts or []:
        try:
            specs.append(parse_spec(text))
        except UserError as e:
            problems.append(str(e))
    names = [s.name for s in specs]
    problems += [f"--extra_data: two sources are named {n!r}; give one of them name=..." for n in sorted(set(names))
                 if names.count(n) > 1]
    return problems


def parse_specs(texts: list[str] | None) -> list[SourceSpec]:
    problems = spec_problems(texts)
    if problems:
        from ..core.validation import refusal

        raise UserError(refusal(problems))
    return [parse_spec(text) for text in texts or []]

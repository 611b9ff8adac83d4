"""The TMMLU+ subject registry: 66 official subjects (+ the hidden `linear_algebra`) and their categories."""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..core.errors import UserError

CATEGORIES = ("STEM", "humanities", "social_sciences", "other")
CATEGORY_ALIASES = {
    "stem": "STEM",
    "humanities": "humanities",
    "social_sciences": "social_sciences",
    "social sciences": "social_sciences",
    "social-sciences": "social_sciences",
    "other": "other",
}


@dataclass(frozen=True)
class Subject:
    name: str
    name_zh: str
    fine_category: str
    category: str
    official: bool  # in the 66 subjects that make up `all`


@lru_cache(maxsize=1)
def registry() -> dict[str, Subject]:
    """All known subjects by name, read once from the packaged table."""
    text = resources.files("hf_ft.resources").joinpath("tmmluplus_subjects.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    return {
        r["subject"]: Subject(r["subject"], r["name_zh"], r["fine_category"], r["category"], r["in_official_66"] == "yes")
        for r in rows
    }


def category_of(subject: str) -> str:
    """The TMMLU+ category of a subject; subjects outside the registry (user data) count as `other`."""
    known = registry().get(subject)
    return known.category if known else "other"


class UnknownSubjectError(UserError):
    pass


def resolve_subjects(spec: str | list[str]) -> list[str]:
    """Expand `all`, category names and subject names (comma-separated, mixable) into sorted subject names."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    parts = [p.strip() for p in parts if p.strip()]
    if not parts:
        raise UnknownSubjectError("--subjects is empty: give `all`, a category or subject names")
    table = registry()
    chosen: set[str] = set()
    for part in parts:
        key = part.lower()
        if key == "all":
            chosen.update(s.name for s in table.values() if s.official)
        elif key in CATEGORY_ALIASES:
            category = CATEGORY_ALIASES[key]
            chosen.update(s.name for s in table.values() if s.official and s.category == category)
        elif part in table:
            chosen.add(part)
        else:
            vocabulary = list(table) + ["all"] + sorted(set(CATEGORY_ALIASES))
            close = difflib.get_close_matches(part, vocabulary, n=3, cutoff=0.6)
            hint = f"; did you mean: {', '.join(close)}?" if close else "; use `all`, a category (STEM, humanities, social_sciences, other) or a subject name"
            raise UnknownSubjectError(f"unknown subject or category '{part}'{hint}")
    return sorted(chosen)

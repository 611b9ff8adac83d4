"""Questions as rows: validating every record read from a file (`files`), and handling bad ones.

Every row remembers the file and line it came from, so a problem can always be reported as
`file:line: reason`, and nothing is dropped without being counted and written down.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..core.errors import UserError
from ..core.run_dir import REJECTED_FILE, write_jsonl
from ..task.subjects import category_of

logger = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
REQUIRED_COLUMNS = ("question", "A", "B", "C", "D", "answer")
MAX_SHOWN_PROBLEMS = 50
_ANSWER_FORMS = {c: c for c in LETTERS} | {c.lower(): c for c in LETTERS} | {
    chr(ord("Ａ") + i): c for i, c in enumerate(LETTERS)
} | {chr(ord("ａ") + i): c for i, c in enumerate(LETTERS)}


DUPLICATE_KEYS = "__keys_given_twice__"  # set by the JSON readers on a record that gives a key twice


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


# NFKC folds compatibility characters into plain ones. Most folds keep the meaning (full-width Ａ１ is A1, an
# ideographic space is a space, ㎏ is kg), but these change it, so identity leaves them as they are:
# superscripts and subscripts (x² is not x2, H₂O is not H2O), fractions (1½ is not 11/2) and circled numbers and
# letters (①② name statements in combination options; 12 is a number).
KEPT_FROM_NFKC = ("<super>", "<sub>", "<fraction>", "<circle>")
CONTENT_HASH_RULE = ("sha256(NFKC except superscripts, subscripts, fractions and circled characters, format "
                     "characters removed, whitespace-collapsed question + options)[:32]")
LEGACY_HASH_RULE = "sha256(NFKC, format characters removed, whitespace-collapsed question + 4 options)[:32]"


@functools.lru_cache(maxsize=1)
def _kept_from_nfkc() -> re.Pattern:
    kept = "".join(re.escape(chr(c)) for c in range(0x10000)
                   if unicodedata.decomposition(chr(c)).startswith(KEPT_FROM_NFKC))
    return re.compile(f"([{kept}]+)")


def _nfkc_keeping_meaning(text: str) -> str:
    parts = _kept_from_nfkc().split(text)  # odd parts are runs of kept characters
    return "".join(part if i % 2 else unicodedata.normalize("NFKC", part) for i, part in enumerate(parts))


def normalise_text(text: str, keep_meaning: bool = True) -> str:
    """The text as identity and emptiness see it: NFKC (except where it would change the meaning, see
    KEPT_FROM_NFKC), no format characters, whitespace collapsed. A cell made of a zero-width space is empty,
    and copies that differ by one are duplicates. `keep_meaning=False`: full NFKC, the rule before."""
    if not unicodedata.is_normalized("NFKC", text):
        text = _nfkc_keeping_meaning(text) if keep_meaning else unicodedata.normalize("NFKC", text)
    if _invisible().search(text):
        text = _invisible().sub("", text)
    return " ".join(text.split())  # str.split's whitespace is re's \s


def content_hash(question: str, options) -> str:
    """Identity of an item for duplicate removal and the held-out proof: normalised question + options."""
    return _hash_normalised([normalise_text(t) for t in (question, *options)])


def hash_for_rule(rule: str | None):
    """row → its content hash under the rule a data manifest recorded (runs before this rule: full NFKC)."""
    if rule in (None, LEGACY_HASH_RULE):
        return lambda row: _hash_normalised([normalise_text(t, keep_meaning=False)
                                             for t in (row.question, *row.options)])
    return lambda row: row.content_hash


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

        if record.get(DUPLICATE_KEYS):
            twice = sorted(set(record[DUPLICATE_KEYS]))
            reject("duplicate_key", f"{', '.join(repr(k) for k in twice)}: given twice in one record (which value "
                                    "is meant?)")
            continue
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
        answer = _ANSWER_FORMS.get(normalise_text(raw_answer))  # an invisible joiner after the letter is nothing
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


def conflicting_answers(rows: list[QARow]) -> tuple[list[Problem], set[str]]:
    """The same question and options given twice with different answers: a data error naming both places (not
    a duplicate to drop, which would keep one answer at random). Returns the problems and the content hashes
    of every copy involved, which `--on_bad_rows skip` leaves out."""
    first: dict[str, QARow] = {}
    problems, conflicted = [], set()
    for row in rows:
        if row.answer is None:
            continue
        earlier = first.setdefault(row.content_hash, row)
        if earlier.answer != row.answer:
            conflicted.add(row.content_hash)
            problems.append(Problem(row.source, row.line, f"the same question and options as {earlier.source}:"
                                    f"{earlier.line}, but the answer is {row.answer} here and {earlier.answer} there",
                                    "conflicting_answers", row.to_item()))
    return problems, conflicted


# ----------------------------------------------------------------------------------------------
# Bad rows


def handle_problems(problems: list[Problem], on_bad_rows: str, output_dir: str | None,
                    kept: int | None = None, can_skip: bool = True) -> Counter:
    """`error`: raise with one line per problem. `skip`: count per reason and write them all to rejected_rows.jsonl,
    unless no row is `kept`: then every row was bad, which is said as such (not as an empty split later)."""
    counts = Counter(p.kind for p in problems)
    if not problems:
        return counts
    shown = "\n".join(f"  {p}" for p in problems[:MAX_SHOWN_PROBLEMS])
    if on_bad_rows == "error":
        more = (f"\n  ... and {len(problems) - MAX_SHOWN_PROBLEMS} more" + (
            f" (--on_bad_rows skip writes every one to {REJECTED_FILE})" if can_skip else "")
            if len(problems) > MAX_SHOWN_PROBLEMS else "")
        how = "fix them or pass --on_bad_rows skip to leave them out" if can_skip else "fix them"
        raise DataError(f"{len(problems)} bad row(s); {how}:\n{shown}{more}")
    if kept == 0:
        raise DataError(f"all {len(problems)} row(s) were rejected, so --on_bad_rows skip leaves nothing; the first "
                        f"reasons:\n{shown}")
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

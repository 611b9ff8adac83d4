"""What each numeric flag may be, declared once and checked the same way by every entry point.

A rule is a range with its message; `problems(values, rules)` returns one line per flag that breaks its rule.
NaN and infinities break every rule (a `<= 0` test lets NaN through), and so does a float where a count is
needed. Where transformers accepts more than a plain count (`--logging_steps 0.5` is a share of the run there),
the rule follows transformers.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    low: float | None = None  # the smallest allowed value (excluded when open_low)
    high: float | None = None  # the largest (excluded when open_high)
    need: str = ""  # what the message says is needed
    open_low: bool = False
    open_high: bool = False
    integer: bool = False  # a count: 2.5 is refused
    steps: bool = False  # transformers' *_steps: a share of the run below 1, a whole number of steps above

    def problem(self, name: str, value) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        if not isinstance(value, (int, float)):
            return f"--{name} {value!r}: {self.need}"
        bad = not math.isfinite(value)
        if not bad and self.low is not None:
            bad = value <= self.low if self.open_low else value < self.low
        if not bad and self.high is not None:
            bad = value >= self.high if self.open_high else value > self.high
        if not bad and (self.integer or (self.steps and value > 1)) and value != int(value):
            return f"--{name} {value}: need a whole number" + (" above 1 (a share of the run below 1)"
                                                               if self.steps else "")
        return f"--{name} {value}: {self.need}" if bad else None


def at_least(low: int, need: str | None = None) -> Rule:
    return Rule(low=low, need=need or f"need {low} or more", integer=True)


def positive(need: str = "need a positive number") -> Rule:
    return Rule(low=0, open_low=True, need=need)


def share(low: float, high: float, open_low: bool = False, open_high: bool = False) -> Rule:
    brackets = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    return Rule(low, high, f"need a share in {brackets}", open_low, open_high)


SEED = Rule(0, 2**32 - 1, "need a whole number in [0, 2^32)", integer=True)  # numpy's seed range
STEPS = Rule(low=0, open_low=True, need="need a positive number (below 1: a share of the run)", steps=True)


def problems(values: dict, rules: dict[str, Rule]) -> list[str]:
    """One line per flag of `values` that breaks its rule, in the order the rules are declared."""
    return [line for name, rule in rules.items() if name in values
            for line in [rule.problem(name, values[name])] if line]


def finite_floats(values: dict, names) -> list[str]:
    """Every float flag, with or without a rule: NaN or an infinity is never a setting."""
    return [f"--{name} {values[name]}: need a finite number" for name in names
            if isinstance(values.get(name), float) and not math.isfinite(values[name])]


# Flags several entry points share: one rule each, so training, evaluate and predict refuse the same values.
ROTATIONS = Rule(1, 4, "need 1 to 4 (one rotation per option slot of a four-option question)", integer=True)
MAX_SEQ_LENGTH = Rule(low=16, need="too short for a question and an option (use 64 or more)", integer=True)
SHARED = {
    "max_seq_length": MAX_SEQ_LENGTH,
    "joint_rotations": ROTATIONS,
    "joint_eval_rotations": ROTATIONS,
    "max_unk_rate": share(0, 1),
    "seed": SEED,
}


def parse_checked(parser, argv, rules: dict[str, Rule]):
    """Parse a command's arguments and check them against `rules` (keyed by the flag as the user types it,
    without the dashes: `rows-per-subject`); every float is finite. One line for all problems, before work."""
    from ..core.errors import UserError

    args = parser.parse_args(argv)
    names = {action.dest: (action.option_strings[-1].lstrip("-") if action.option_strings else action.dest)
             for action in parser._actions}
    values = {names.get(dest, dest): value for dest, value in vars(args).items()}
    given = {names.get(dest, dest) for dest in given_names(parser, args)}
    found = problems(values, rules) + finite_floats(values, [n for n in values if n not in rules])
    found += text_problems(values, given)
    if found:
        raise UserError(refusal(found))
    return args


def _printable(text: str) -> bool:
    return not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text)


def _visible(text: str) -> bool:
    return any(not (c.isspace() or unicodedata.category(c) == "Cf") for c in text)


def text_problems(values: dict, given, own=()) -> list[str]:
    """Every text setting (and every item of a list of texts): no control characters (a NUL in a path or a
    revision is a library traceback), and one the user gave is not empty or only invisible characters (an
    empty --run_name or --hub_model_id is a mistake, not a request for the default). `own`: flags whose
    emptiness the entry point reports itself, in its own words."""
    given = set(given) - set(own)
    found = []
    for name, value in values.items():
        texts = value if isinstance(value, (list, tuple)) else [value]
        for text in texts:
            if not isinstance(text, str):
                continue
            if not _printable(text):
                found.append(f"--{name} {text!r}: contains a control character")
            elif name in given and not _visible(text):
                found.append(f"--{name} {text!r}: empty; leave the flag out for its default")
            else:
                continue
            break
    return found


# Flags that name a hub branch, tag or commit, in every entry point.
REVISION_FLAGS = ("model_revision", "dataset_revision", "hub_revision", "retrieval_corpus_revision", "revision")
_REF_FORBIDDEN = set(" ~^:?*[\\")  # control characters: text_problems says so, once


def revision_problem(flag: str, value: str | None) -> str | None:
    """A branch, tag or commit name the hub (git's ref-name rules) would refuse, said before any work: spaces
    and ~^:?*[\\, '..', '@{', '//', a part starting with '.', a name starting or ending with '/' or ending with
    '.' or '.lock'."""
    if value is None:
        return None
    reasons = []
    if not value.strip():
        reasons.append("empty")
    if forbidden := sorted(set(value) & _REF_FORBIDDEN):
        reasons.append("holds " + " ".join(repr(c) for c in forbidden))
    if ".." in value or "@{" in value or "//" in value:
        reasons.append("holds '..', '@{' or '//'")
    if value.startswith("/") or value.endswith(("/", ".", ".lock")) or any(p.startswith(".") for p in value.split("/")):
        reasons.append("starts or ends with '/', ends with '.' or '.lock', or has a part starting with '.'")
    if value == "@":
        reasons.append("is '@'")
    return f"--{flag} {value!r}: not a branch, tag or commit name the hub accepts ({'; '.join(reasons)})" \
        if reasons else None


def revision_problems(values: dict) -> list[str]:
    return [p for name in REVISION_FLAGS if name in values for p in [revision_problem(name, values[name])] if p]


def given_names(parser, args) -> set[str]:
    """The arguments of an argparse namespace that differ from their defaults: what the user gave."""
    return {name for name, value in vars(args).items() if value != parser.get_default(name)}


def refusal(found: list[str]) -> str:
    """One problem: its line. Several: a count, then one indented line each (the boundary prints it as one
    `error:` line with the details under it)."""
    found = list(dict.fromkeys(found))
    return found[0] if len(found) == 1 else f"{len(found)} settings cannot work:\n" + "\n".join(f"  {p}" for p in found)

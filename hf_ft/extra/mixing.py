"""Extra sources, end to end: read → adapt → convert → deduplicate → check against the reference → cap and
weight, with one report per source of what each step kept and dropped (the manifest, the run record and the
card carry it)."""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field, replace

from ..core.errors import UserError
from ..data.rows import Problem, QARow
from ..retrieval.leak import POLICIES  # one list for the retrieval leak check and this one
from .adapters import ADAPTERS, MultipleAnswers, Unusable, to_row, wanted
from .contamination import exact_keys, find_copies, method, unique
from .reading import read_source
from .script import convert_rows, script_of
from .specs import SourceSpec

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5


@dataclass
class ExtraData:
    rows: list[QARow]
    problems: list[Problem]
    report: dict
    empty: list[str] = ()  # one line per source asked for that gives no training row
    # source name → rows held out of its training rows: each gets its own validation loss and accuracy, while
    # TMMLU+'s validation split stays the one that selects the model
    held_out: dict = field(default_factory=dict)

    def refuse_empty(self) -> None:
        """A source asked for and left empty is an error, not a run trained without it (after the bad rows, which
        --on_bad_rows error reports first)."""
        if self.empty:
            raise UserError(self.empty[0] + (f" (and {len(self.empty) - 1} more source(s) alike)"
                                             if len(self.empty) > 1 else ""))

    @property
    def licenses(self) -> dict[str, str | None]:
        return {s["source"]: s.get("license") for s in self.report.get("sources", [])}


def _jsonable(record: dict) -> dict:
    return {str(k): (v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v))
            for k, v in record.items()}


def _shown(source: str) -> str:
    """A file as the (pushed) manifest names it: never an absolute local path."""
    from pathlib import Path

    return Path(source).name if Path(source).is_absolute() else source


def adapt(spec: SourceSpec, files) -> tuple[list[QARow], list[Problem], Counter]:
    """Every record of every file through the adapter: rows, the problems (file:line: reason) and counts."""
    adapter = ADAPTERS[spec.adapter]
    rows, problems, counts = [], [], Counter()
    for file in files:
        for record, line in zip(file.records, file.lines):
            if "__cells__" in record:
                cells, header = record.pop("__cells__")
                problems.append(Problem(file.name, line, f"{cells} cells where the header has {header}", "bad_row",
                                        _jsonable(record)))
                continue
            try:
                candidates = adapter.candidates(record, spec.columns)
            except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:
                problems.append(Problem(file.name, line, f"not a {spec.adapter} record ({type(e).__name__}: {e})",
                                        "bad_row", _jsonable(record)))
                continue
            for candidate in candidates:
                counts["read"] += 1
                subject = candidate.subject or file.subject
                if candidate.subject and not wanted(candidate.subject, spec.subjects, spec.excluded):
                    counts["subject_filtered"] += 1
                    continue
                place = str(line).replace(" ", "") + (f".{candidate.key}" if candidate.key else "")
                try:
                    rows.append(to_row(candidate, f"{spec.name}/{file.subject}/{file.split}/{place}",
                                       f"{spec.name}/{subject}", file.name, line))
                except MultipleAnswers:
                    counts["multiple_answers_dropped"] += 1
                except Unusable as u:
                    reason = u.reason + (f" (question {candidate.key})" if candidate.key else "")
                    problems.append(Problem(file.name, line, reason, u.kind, _jsonable(record)))
    return rows, problems, counts


def recheck(rows: list[QARow], when: str) -> tuple[list[QARow], list[Problem]]:
    """A transformed row checked as a raw one is (a question left, options that can be told apart): conversion
    can turn two Simplified options into one Traditional text (后 and 後 both become 後)."""
    from ..data.rows import normalise_text, option_problem

    kept, problems = [], []
    for row in rows:
        problem = ("empty_question", "empty question") if not normalise_text(row.question) else \
            option_problem(row.options, [chr(65 + i) for i in range(len(row.options))])
        if problem:
            kind, reason = problem
            problems.append(Problem(row.source, row.line, f"{reason} {when}", kind,
                                    {"question": row.question, "options": list(row.options)}))
        else:
            kept.append(row)
    return kept, problems


def conversion_of(spec: SourceSpec, rows: list[QARow]) -> tuple[str | None, str]:
    """(the OpenCC configuration applied or None, the script detected)."""
    detected = script_of(rows) if rows else "unknown"
    if spec.convert == "auto":
        return ("s2twp" if detected == "simplified" else None), detected
    return (None if spec.convert == "none" else spec.convert), detected


HELD_OUT_SHARE, HELD_OUT_MAX, HELD_OUT_MIN_ROWS = 0.05, 200, 40


def held_out_slice(rows: list[QARow], rng: random.Random) -> tuple[list[QARow], list[QARow]]:
    """A seeded slice of a source (5%, at most 200 rows; none from a source under 40 rows) kept out of training
    to measure that source's own validation loss; the rest, in the source's order."""
    if len(rows) < HELD_OUT_MIN_ROWS:
        return rows, []
    chosen = set(rng.sample(range(len(rows)), min(HELD_OUT_MAX, max(1, round(HELD_OUT_SHARE * len(rows))))))
    return [r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen]


def sample(rows: list[QARow], cap: int | None, weight: float, rng: random.Random) -> list[QARow]:
    """At most `cap` rows (seeded), then `weight` draws per row: below 1 a sample, above 1 whole copies (ids
    suffixed ~2, ~3 ...) and a sample for the fraction. The order of the source is kept."""
    if cap is not None and len(rows) > cap:
        rows = [rows[i] for i in sorted(rng.sample(range(len(rows)), cap))]
    whole, fraction = int(weight), weight - int(weight)
    out = [replace(r, id=f"{r.id}~{k + 1}") if k else r for k in range(whole) for r in rows]
    extra = round(fraction * len(rows))
    if extra:
        out += [replace(rows[i], id=f"{rows[i].id}~{whole + 1}") if whole else rows[i]
                for i in sorted(rng.sample(range(len(rows)), extra))]
    return out


def load_extra(specs: list[SourceSpec], reference: list[QARow], reference_record: dict, policy: str = "drop",
               seed: int = 0, cache_dir: str | None = None) -> ExtraData:
    """The training rows the extra sources add, their bad rows, and the report."""
    if policy not in POLICIES:
        raise UserError(f"--contamination {policy}: choose {', '.join(POLICIES)}")
    reference = unique(reference)
    per_source, problems = [], []
    for spec in specs:
        read = read_source(spec, cache_dir)
        rows, bad, counts = adapt(spec, read.files)
        problems += bad
        applied, detected = conversion_of(spec, rows)
        originals = {r.id: r.question for r in rows}  # the text as the source wrote it, for the report's examples
        if applied:  # the converted rows pass the same checks as the raw ones
            rows, after = recheck(convert_rows(rows, applied), f"after conversion to Traditional ({applied})")
            bad += after
            problems += after
        counts["bad_rows"] = len(bad)
        counts["converted"] = len(rows) if applied else 0
        per_source.append({"spec": spec, "read": read, "rows": rows, "counts": counts, "originals": originals, "bad": bad,
                           "conversion": {"applied": applied, "script_detected": detected}})
    # one copy of each question across the extra sources (C3 is in dataset-org/c3 and clue/clue alike)
    seen: set[str] = set()
    everything_keys = []  # the exact keys of the rows kept, reused by the contamination check
    for source in per_source:
        keys = exact_keys(source["rows"])
        kept = [(r, k) for r, k in zip(source["rows"], keys) if not (k in seen or seen.add(k))]
        source["counts"]["duplicates_within_extra"] = len(source["rows"]) - len(kept)
        source["rows"] = [r for r, _ in kept]
        everything_keys += [k for _, k in kept]
    everything = [r for s in per_source for r in s["rows"]]
    copies = find_copies(everything, reference, everything_keys)
    start, total = 0, Counter()
    for source in per_source:
        rows = source["rows"]
        mine = {i - start: m for i, m in copies.items() if start <= i < start + len(rows)}
        start += len(rows)
        counts = source["counts"]
        counts["exact_copies"] = sum(m.kind == "exact" for m in mine.values())
        counts["near_copies"] = sum(m.kind == "near" for m in mine.values())
        source["examples"] = [{"row": f"{rows[i].source}:{rows[i].line}", "question": rows[i].question[:80],
                               "original": source["originals"].get(rows[i].id, rows[i].question)[:80]
                               if source["conversion"]["applied"] else None, "kind": m.kind,
                               "copies": f"{_shown(m.reference.source)}:{m.reference.line}",
                               "reference_question": m.reference.question[:80]}
                              for i, m in sorted(mine.items())[:MAX_EXAMPLES]]
        if policy == "drop":
            rows = [r for i, r in enumerate(rows) if i not in mine]
        counts["dropped_as_copies"] = len(mine) if policy == "drop" else 0
        total.update({"exact": counts["exact_copies"], "near": counts["near_copies"]})
        spec = source["spec"]
        rows, source["held_out"] = held_out_slice(rows, random.Random(f"{seed}:{spec.name}:held-out"))
        counts["held_out"] = len(source["held_out"])
        before = len(rows)
        rows = sample(rows, spec.cap, spec.weight, random.Random(f"{seed}:{spec.name}"))
        counts["capped_out"] = max(0, before - spec.cap) if spec.cap is not None else 0
        counts["used"] = len(rows)
        source["rows"] = rows
    if policy == "error" and copies:
        first = next(e for s in per_source for e in s["examples"])
        raise UserError(f"--extra_data: {len(copies)} row(s) copy questions the run is evaluated on ({total['exact']} "
                        f"exact, {total['near']} near), e.g. {first['row']} copies {first['copies']}; remove them from "
                        "the source, or use --contamination drop (the default)")
    report = {"policy": policy, "check": method(), "reference": {**reference_record, "unique_rows": len(reference)},
              "sources": []}
    for source in per_source:
        spec, counts = source["spec"], source["counts"]
        entry = {**spec.record(), **source["read"].record, "conversion": source["conversion"],
                 "counts": {k: counts.get(k, 0) for k in (
                     "read", "bad_rows", "multiple_answers_dropped", "subject_filtered", "converted",
                     "duplicates_within_extra", "exact_copies", "near_copies", "dropped_as_copies", "held_out",
                     "capped_out", "used")},
                 "options": dict(sorted(Counter(len(r.options) for r in source["rows"]).items())),
                 "subjects_used": len({r.subject for r in source["rows"]}), "examples": source["examples"]}
        report["sources"].append(entry)
        c = entry["counts"]
        logger.info("extra data %s (%s%s): %d read, %d bad, %d multi-answer, %d converted (%s), %d exact + %d near "
                    "copies of evaluated questions %s, %d used", spec.name, spec.source if not spec.local else "local",
                    f"@{entry['revision'][:12]}" if entry.get("revision") else "", c["read"], c["bad_rows"],
                    c["multiple_answers_dropped"], c["converted"], source["conversion"]["applied"] or "none",
                    c["exact_copies"], c["near_copies"], "dropped" if policy == "drop" else "KEPT", c["used"])
        if c["exact_copies"] + c["near_copies"] and policy == "keep":
            logger.warning("extra data %s: %d row(s) copy evaluated questions and are KEPT (--contamination keep): "
                           "results on those questions are not held out", spec.name,
                           c["exact_copies"] + c["near_copies"])
    empty = [f"--extra_data {source['spec'].name}: no row of it is left to train on "
             f"({empty_reason(entry['counts'], source['bad'])}); drop the source or fix what stops its rows"
             for source, entry in zip(per_source, report["sources"]) if not source["rows"]]
    rows = [r for s in per_source for r in s["rows"]]
    held_out = {s["spec"].name: s["held_out"] for s in per_source if s["held_out"]}
    return ExtraData(rows, problems, report, empty, held_out)


def empty_reason(counts: dict, bad: list[Problem]) -> str:
    """Why a source gave nothing: its counts, and the first bad row when rows were bad."""
    if not counts["read"]:
        return "no question was read from it"
    parts = [f"{counts['read']} read"] + [f"{counts[k]} {k.replace('_', ' ')}" for k in (
        "bad_rows", "multiple_answers_dropped", "subject_filtered", "duplicates_within_extra", "dropped_as_copies")
        if counts.get(k)]
    copies = counts.get("dropped_as_copies", 0)
    if copies and copies >= counts["read"] - counts.get("bad_rows", 0) - counts.get("subject_filtered", 0):
        parts.append("every usable row copies a TMMLU+ question: is it a copy or mirror of TMMLU+?")
    if bad:
        parts.append(f"first bad row: {bad[0]}")
    return "; ".join(parts)


def load_for_run(data_args, loaded, cache_dir: str | None, seed: int) -> ExtraData:
    """The run's extra sources, checked against its TMMLU+ source beyond what it trains on and every row it read."""
    from .contamination import tmmluplus_reference
    from .specs import parse_specs

    specs = parse_specs(data_args.extra_data)
    reference, record = tmmluplus_reference(data_args, cache_dir)
    own = [r for rows in loaded.pools.values() for r in rows]
    record["run_rows"] = len(own)
    return load_extra(specs, reference + own, record, data_args.contamination, seed, cache_dir)

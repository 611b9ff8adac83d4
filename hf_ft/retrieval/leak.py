"""The leak check: no passage may hold a copy of a validation or test item.

Both sides are normalised the same way (OpenCC t2s, NFKC, casefold, whitespace and punctuation dropped).
An item is the text of its question plus its gold option. A passage leaks an item when it holds the
item's normalised question whole (the exact check) or at least `LEAK_SHARE` of the item's character
13-grams (a near copy: another script, other punctuation, a reworded stem). The 13-grams of every passage
are hashed with numpy in chunks, so a million passages are checked in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import QARow
from .text import normalise_many

N = 13
LEAK_SHARE = 0.5
POLICIES = ("drop", "error", "keep")
_BASE = np.uint64(1_000_003)
_CHUNK_CHARS = 20_000_000


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _window_hashes(codes: np.ndarray, n: int = N) -> np.ndarray:
    """Polynomial hash (mod 2**64) of every window of n codes."""
    if len(codes) < n:
        return np.zeros(0, dtype=np.uint64)
    width = len(codes) - n + 1
    h = np.zeros(width, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _BASE + codes[j:j + width]
    return h


@dataclass
class LeakReport:
    items_checked: int
    items_too_short: int  # normalised question + gold shorter than N characters: only the exact check
    passages_checked: int
    leaking_passages: dict[int, list[str]] = field(default_factory=dict)  # passage index → item ids
    examples: list[dict] = field(default_factory=list)

    @property
    def items_hit(self) -> set[str]:
        return {i for ids in self.leaking_passages.values() for i in ids}

    def record(self, policy: str) -> dict:
        return {"policy": policy, "ngram": N, "share": LEAK_SHARE, "items_checked": self.items_checked,
                "items_too_short_for_ngrams": self.items_too_short, "passages_checked": self.passages_checked,
                "items_with_a_copy_in_the_corpus": len(self.items_hit),
                "passages_leaking": len(self.leaking_passages),
                "passages_dropped": len(self.leaking_passages) if policy == "drop" else 0,
                "examples": self.examples[:5]}


def find_leaks(passages: list[str], items: list[QARow], whole_question: bool = True) -> LeakReport:
    """Which passages (texts, in index order) hold a copy of which items. With `whole_question`, a passage
    that holds an item's whole question leaks it too, even without its answer (the right test for a corpus a
    reader searches; the contamination check of extra questions leaves it out: exam stems such as
    下列有關憲法之敘述何者正確 are shared by unrelated questions, and a copy there is question and answer)."""
    item_texts = normalise_many([r.question + (r.options[r.label] if r.label >= 0 else "") for r in items])
    questions = normalise_many([r.question for r in items])
    gram_items: dict[int, list[int]] = {}
    sizes = np.zeros(len(items), dtype=np.int64)
    short = 0
    for i, text in enumerate(item_texts):
        grams = set(_window_hashes(_codes(text)).tolist())
        sizes[i] = len(grams)
        short += not grams
        for g in grams:
            gram_items.setdefault(g, []).append(i)
    item_grams = np.fromiter(gram_items, dtype=np.uint64, count=len(gram_items))
    normalised = normalise_many(passages)
    hits: dict[tuple[int, int], set[int]] = {}
    start = 0
    while start < len(normalised):  # chunks of passages, joined with a separator no text contains
        end, chars = start, 0
        while end < len(normalised) and (chars < _CHUNK_CHARS or end == start):
            chars += len(normalised[end]) + 1
            end += 1
        joined = "\x00".join(normalised[start:end])
        codes = _codes(joined)
        owner = np.cumsum(codes == 0)[: max(0, len(codes) - N + 1)]  # passage (in chunk) of each window
        hashes = _window_hashes(codes)
        found = np.nonzero(np.isin(hashes, item_grams))[0]
        ends = np.cumsum(codes == 0)[np.minimum(found + N - 1, len(codes) - 1)]
        for position, end_owner in zip(found.tolist(), ends.tolist()):
            passage = int(owner[position])
            if end_owner != passage:  # the window spans two passages
                continue
            for item in gram_items.get(int(hashes[position]), ()):
                hits.setdefault((start + passage, item), set()).add(int(hashes[position]))
        start = end
    # the exact question: a passage holding every 13-gram of an item's question holds the question
    question_grams = [set(_window_hashes(_codes(q)).tolist()) for q in questions]
    leaking: dict[int, list[str]] = {}
    for (passage, item), grams in hits.items():
        if len(grams) >= LEAK_SHARE * sizes[item] or (whole_question and question_grams[item]
                                                        and question_grams[item] <= grams):
            leaking.setdefault(passage, []).append(items[item].id)
    # the exact question, for items too short for 13-grams: a substring test
    by_question: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        if q and sizes[i] == 0:
            by_question.setdefault(q, []).append(i)
    if by_question and whole_question:
        for p, text in enumerate(normalised):
            for q, ids in by_question.items():
                if q in text:
                    leaking.setdefault(p, []).extend(items[i].id for i in ids if items[i].id not in leaking[p])
    report = LeakReport(len(items), short, len(passages), {p: sorted(set(v)) for p, v in leaking.items()})
    index = {r.id: r for r in items}
    for p in sorted(leaking)[:5]:
        item = index[leaking[p][0]]
        report.examples.append({"passage": passages[p][:120], "item": item.id, "source": f"{item.source}:{item.line}",
                                "question": item.question[:120]})
    return report

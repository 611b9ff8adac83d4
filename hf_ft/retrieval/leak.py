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

from ..data.rows import QARow
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


def _windows(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash, owner) of every N-character window of `texts` joined by a separator no text contains (NUL: the
    normalisation drops control characters), leaving out windows that span two texts."""
    codes = _codes("\x00".join(texts))
    hashes = _window_hashes(codes)
    before = np.concatenate([[0], np.cumsum(codes == 0)])  # separators before each position
    starts = np.arange(len(hashes))
    inside = before[starts + N] == before[starts]
    return hashes[inside], before[starts[inside]]


def _distinct(*columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """The distinct rows of equal-length integer columns (the first column varies slowest)."""
    if not len(columns[0]):
        return columns
    order = np.lexsort(columns[::-1])
    sorted_columns = [c[order] for c in columns]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = np.any(np.stack([np.diff(c) != 0 for c in sorted_columns]), axis=0)
    return tuple(c[keep] for c in sorted_columns)


def find_leaks(passages: list[str], items: list[QARow], whole_question: bool = True) -> LeakReport:
    """Which passages (texts, in index order) hold a copy of which items. With `whole_question`, a passage
    that holds an item's whole question leaks it too, even without its answer (the right test for a corpus a
    reader searches; the contamination check of extra questions leaves it out: exam stems such as
    下列有關憲法之敘述何者正確 are shared by unrelated questions, and a copy there is question and answer).

    Vectorised: the items' distinct (13-gram, item) pairs are one sorted table; each chunk of passages is
    hashed at once and looked up in it with a binary search, so the work is numpy's, not Python's."""
    item_texts = normalise_many([r.question + (r.options[r.label] if r.label >= 0 else "") for r in items])
    gram_hash, gram_item = _windows(item_texts)
    gram_hash, gram_item = _distinct(gram_hash, gram_item.astype(np.int64))
    sizes = np.bincount(gram_item, minlength=len(items)).astype(np.int64)
    unique_hash, first, per_hash = np.unique(gram_hash, return_index=True, return_counts=True)
    short = int(np.sum(sizes == 0))
    questions = normalise_many([r.question for r in items]) if whole_question else []
    normalised = normalise_many(passages)
    pair_grams: dict[tuple[int, int], set[int]] = {}
    hit_counts: dict[tuple[int, int], int] = {}
    start = 0
    while start < len(normalised):  # chunks of passages
        end, chars = start, 0
        while end < len(normalised) and (chars < _CHUNK_CHARS or end == start):
            chars += len(normalised[end]) + 1
            end += 1
        hashes, owner = _windows(normalised[start:end])
        order = np.argsort(hashes, kind="stable")  # sorted keys: the binary search walks memory in order
        place = np.empty(len(hashes), dtype=np.int64)
        place[order] = np.searchsorted(unique_hash, hashes[order])
        place = np.minimum(place, max(0, len(unique_hash) - 1))
        matched = np.nonzero(unique_hash[place] == hashes)[0] if len(unique_hash) else np.zeros(0, dtype=np.int64)
        if len(matched):
            counts = per_hash[place[matched]]
            window = np.repeat(matched, counts)
            offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            item = gram_item[np.repeat(first[place[matched]], counts) + offset]
            passage, item, gram = _distinct(owner[window].astype(np.int64) + start, item, hashes[window])
            if whole_question:
                for p, i, g in zip(passage.tolist(), item.tolist(), gram.tolist()):
                    pair_grams.setdefault((p, i), set()).add(g)
            else:
                pairs, n = np.unique(passage * len(items) + item, return_counts=True)
                for key, count in zip(pairs.tolist(), n.tolist()):
                    hit_counts[divmod(key, len(items))] = count
        start = end
    leaking: dict[int, list[str]] = {}
    if whole_question:  # the exact question: a passage holding every 13-gram of an item's question holds it
        question_grams = [set(_window_hashes(_codes(q)).tolist()) for q in questions]
        for (passage, item), grams in pair_grams.items():
            if len(grams) >= LEAK_SHARE * sizes[item] or (question_grams[item] and question_grams[item] <= grams):
                leaking.setdefault(passage, []).append(items[item].id)
    else:
        for (passage, item), count in hit_counts.items():
            if count >= LEAK_SHARE * sizes[item]:
                leaking.setdefault(passage, []).append(items[item].id)
    # the exact question, for items too short for 13-grams: a substring test
    by_question: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        if q and sizes[i] == 0:
            by_question.setdefault(q, []).append(i)
    if by_question:
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

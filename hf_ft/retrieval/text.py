"""Text as BM25 and the leak check see it: one script, no width variants, no whitespace or punctuation.

OpenCC `t2s` on both sides lets a Simplified or mixed corpus serve Traditional questions (and the leak
check catch a Simplified copy of a test item). Terms are character bigrams, as Lucene's CJK analyzer makes
them: no dictionary, so nothing is biased towards one script or one segmenter's vocabulary. Unigrams are
left out: a common character is in most passages, so its postings cost ~99% of a query's time
(docs/benchmarks.md) and its idf says almost nothing; a one-character text keeps its character.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

import numpy as np

from .t2s import IDS_OPERATORS, convert_codes, converter, opencc_t2s

NORMALISATION = "nfkc+opencc-t2s+casefold+strip-space-punct"
TERMS = "char-2-grams"


@functools.lru_cache(maxsize=1)
def _dropped() -> dict:
    """Whitespace, punctuation, symbols and controls of the Basic Multilingual Plane → removed."""
    return {c: None for c in range(min(sys.maxunicode, 0xFFFF) + 1)
            if unicodedata.category(chr(c))[0] in "PZSC"}


def normalise(text: str) -> str:
    return opencc_t2s().convert(unicodedata.normalize("NFKC", text or "")).casefold().translate(_dropped())


@functools.lru_cache(maxsize=1)
def _dropped_table():
    """`_dropped` as a lookup table over all code points, for numpy (the newline that joins texts is kept)."""
    table = np.zeros(sys.maxunicode + 1, dtype=bool)
    table[list(_dropped())] = True
    table[ord("\n")] = False
    return table


def normalised_codes(texts: list[str], chunk: int = 20_000):
    """`normalise` of each text as code points (uint32), the texts joined by newlines: per chunk of texts, one
    NFKC (where any is needed), t2s through t2s.py's exact table, and one table for casefold and what is
    dropped (a newline inside a text is dropped by `normalise` anyway). The index builds its terms from these
    directly, without making strings again."""
    parts = []
    for start in range(0, len(texts), chunk):
        joined = "\n".join((t or "").replace("\n", " ") for t in texts[start:start + chunk])
        if not unicodedata.is_normalized("NFKC", joined):  # most text already is: the check is far cheaper
            joined = unicodedata.normalize("NFKC", joined)
        parts.append(_fold_and_drop(_simplified_codes(joined)))
    separator = np.full(1 if parts else 0, ord("\n"), dtype=np.uint32)
    return np.concatenate([x for part in parts for x in (separator, part)][1:]) if parts else separator


def _simplified_codes(joined: str):
    """OpenCC t2s of `joined` as code points: through the exact table of t2s.py where OpenCC's dictionaries
    can be read (5–9× faster), else OpenCC itself."""
    tables = converter()
    if tables is None:
        if _DESCRIPTION.search(joined):  # OpenCC would read a description sequence across the newline
            joined = "\n".join(opencc_t2s().convert(text) for text in joined.split("\n"))
        else:
            joined = opencc_t2s().convert(joined)
        return np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    return convert_codes(np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32), tables)


_DESCRIPTION = re.compile("[" + "".join(map(chr, IDS_OPERATORS)) + "]")
_CASED_BELOW = 0x20000  # every character with a case folding is in the first two planes (a test checks)
_SEVERAL, _DROPPED = np.uint32(0xFFFFFFFF), np.uint32(0xFFFFFFFE)  # not code points


@functools.lru_cache(maxsize=1)
def _fold_table():
    """Each code point as str.casefold and then `_dropped` leave it, for numpy: one code point, `_DROPPED`,
    or `_SEVERAL` where casefold gives several (ß → ss)."""
    folded = [chr(c).casefold() if not 0xD800 <= c < 0xE000 else chr(c) for c in range(_CASED_BELOW)]
    table = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    table[:_CASED_BELOW] = [ord(f) if len(f) == 1 else _SEVERAL for f in folded]
    single = table != _SEVERAL
    table[single & _dropped_table()[np.where(single, table, 0)]] = _DROPPED
    return table


def _fold_and_drop(codes: np.ndarray) -> np.ndarray:
    """str.casefold, then `_dropped` removed, of code points."""
    out = _fold_table()[codes]
    if (out == _SEVERAL).any():  # rare in Chinese text: str.casefold, which expands
        out = np.frombuffer(codes.tobytes().decode("utf-32-le").casefold().encode("utf-32-le"), dtype=np.uint32)
        return out[~_dropped_table()[out]]
    return out[out != _DROPPED]


def normalise_many(texts: list[str], chunk: int = 20_000) -> list[str]:
    """`normalise` of each text, for many texts at once (`normalised_codes`)."""
    if not texts:
        return []
    return normalised_codes(texts, chunk).tobytes().decode("utf-32-le").split("\n")


def terms(normalised: str) -> list[str]:
    """Character bigrams of normalised text (a one-character text: that character)."""
    if len(normalised) == 1:
        return [normalised]
    return [normalised[i:i + 2] for i in range(len(normalised) - 1)]


def to_simplified(text: str) -> str:
    return opencc_t2s().convert(text)

"""Script conversion with OpenCC: Simplified sources become Taiwan Traditional (`s2twp`: characters, Taiwan
variants and Taiwan phrasing: 数据 → 資料, 软件 → 軟體), so the model reads one script.

`convert=auto` converts a source whose text is Simplified: OpenCC's `s2t` changes more of its characters than
`t2s` does. One converter per configuration is built once; texts are converted in chunks joined by a
separator that no dictionary phrase spans, one C++ call per chunk.
"""

from __future__ import annotations

import functools
from dataclasses import replace

from ..data.rows import QARow

_JOIN = "\x1e"  # a record separator: in no OpenCC dictionary, so no conversion spans it
_CHUNK = 20_000
SAMPLE_ROWS = 200


@functools.lru_cache(maxsize=None)
def converter(config: str):
    import opencc

    return opencc.OpenCC(config)


def convert_texts(texts: list[str], config: str) -> list[str]:
    """Each text converted; chunks of texts share one call (a chunk whose pieces do not come back one for one
    is converted text by text)."""
    cc = converter(config)
    out = []
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start:start + _CHUNK]
        pieces = cc.convert(_JOIN.join(chunk)).split(_JOIN)
        out += pieces if len(pieces) == len(chunk) else [cc.convert(t) for t in chunk]
    return out


def changed_characters(texts: list[str], config: str) -> int:
    return sum(a != b for text, converted in zip(texts, convert_texts(texts, config)) for a, b in zip(text, converted))


def script_of(rows: list[QARow]) -> str:
    """`simplified`, `traditional` or `unknown` (no character changes either way) for a sample of rows."""
    texts = [r.question + "".join(r.options) for r in rows[:SAMPLE_ROWS]]
    to_traditional, to_simplified = changed_characters(texts, "s2t"), changed_characters(texts, "t2s")
    if to_traditional == to_simplified:
        return "unknown"
    return "simplified" if to_traditional > to_simplified else "traditional"


def convert_rows(rows: list[QARow], config: str) -> list[QARow]:
    """Question, every option and the context converted with the same converter (the answer is a letter, fixed
    before conversion, so a text answer cannot come apart from its option)."""
    if not rows:
        return rows
    flat, shape = [], []
    for row in rows:
        texts = [row.question, *row.options, row.context or ""]
        shape.append(len(texts))
        flat += texts
    converted = convert_texts(flat, config)
    out, start = [], 0
    for row, width in zip(rows, shape):
        q, *rest = converted[start:start + width]
        options, context = rest[:-1], rest[-1]
        out.append(replace(row, question=q, options=tuple(options), context=context or None))
        start += width
    return out

"""OpenCC's `t2s`, exactly, at numpy speed for many texts.

OpenCC converts by longest dictionary match, left to right. Where no multi-character key can match, it
converts each character on its own, so a table of every code point's own conversion (made by OpenCC)
gives its output there. Only around a place where a phrase key's first two characters occur (a few per
thousand characters of text), or an ideographic description sequence, does its context matter: those
windows go through OpenCC itself, each cut where no key can span, so the result is OpenCC's, character for
character (tests/test_open_book.py checks it against OpenCC on phrase-dense text). OpenCC over whole text
was ~55% of building a BM25 index; the table is 5–9× faster (4M characters: 0.04 s against 0.22–0.37 s).

The keys come from the dictionaries OpenCC's own `t2s.json` names, read with the `opencc_dict` tool its
package ships; the tables are cached under HF_HOME by their hash. Where the tool or a file is missing,
`converter()` is None and callers use OpenCC on the whole text (same result, slower).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.caches import hf_home

logger = logging.getLogger(__name__)

_CODE_POINTS = sys.maxunicode + 1
IDS_OPERATORS = [*range(0x2FF0, 0x3000), 0x31EF]  # an ideographic description sequence is one unit to OpenCC
_PAIR_SHIFT = 21  # a code point fits 21 bits: a bigram packs two
STARTS, TO_END, AROUND, ALONE, SECOND = 1, 2, 4, 8, 16  # the bits of Tables.flags


@dataclass(frozen=True)
class Tables:
    single: np.ndarray  # uint32 per code point: OpenCC's conversion of that character alone
    flags: np.ndarray  # uint8 per code point: STARTS a multi-character key; an ideographic description
    # operator, converted with its context TO_END of its text; normalised first, so converted with `longest`
    # characters AROUND it; converting to several code points, so converted ALONE by OpenCC; the SECOND
    # character of a multi-character key
    pairs: np.ndarray  # sorted int64: the first two characters of every multi-character key, packed
    reach: np.ndarray  # per pair: the longest key that begins with it, in characters
    longest: int


@functools.lru_cache(maxsize=1)
def opencc_t2s():
    """OpenCC's own t2s converter (the one `opencc` package: opencc-py and opencc-python-reimplemented install
    a module of the same name)."""
    import opencc

    return opencc.OpenCC("t2s")


def _opencc_files() -> tuple[Path, Path] | None:
    """OpenCC's data folder and its `opencc_dict` tool, as the official `opencc` wheel lays them out."""
    import opencc

    root = Path(opencc.__file__).parent / "clib"
    share, tool = root / "share" / "opencc", root / "bin" / "opencc_dict"
    if (share / "t2s.json").is_file() and os.access(tool, os.X_OK):
        return share, tool
    return None


def _dictionaries(config: dict) -> tuple[list[str], list[str]]:
    """The dictionary files of `t2s.json`: those of its normalisation stage, and those of its conversion."""
    def files(node) -> list[str]:
        if isinstance(node, dict):
            if node.get("type") == "ocd2" and "file" in node:
                return [node["file"]]
            return [f for value in node.values() for f in files(value)]
        if isinstance(node, list):
            return [f for value in node for f in files(value)]
        return []
    return files(config.get("normalization", [])), files(config.get("segmentation", {})) + files(
        config.get("conversion_chain", []))


def _keys(tool: Path, dictionary: Path, folder: Path) -> list[str]:
    out = folder / (dictionary.stem + ".txt")
    subprocess.run([str(tool), "-i", str(dictionary), "-o", str(out), "-f", "ocd2", "-t", "text"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return [line.split("\t", 1)[0] for line in out.read_text(encoding="utf-8").split("\n") if line]


def _build(share: Path, tool: Path) -> Tables:
    normalising, converting = _dictionaries(json.loads((share / "t2s.json").read_text(encoding="utf-8")))
    with tempfile.TemporaryDirectory() as folder:
        phrase_keys = [k for name in dict.fromkeys(converting) for k in _keys(tool, share / name, Path(folder))
                       if len(k) > 1]
        normalised_keys = [k for name in normalising for k in _keys(tool, share / name, Path(folder))]
    longest = max([len(k) for k in phrase_keys + normalised_keys], default=1)
    code_points = np.array([c for c in range(_CODE_POINTS) if not (0xD800 <= c < 0xE000) and c != 10])
    converted = opencc_t2s().convert("\n".join(map(chr, code_points))).split("\n")
    assert len(converted) == len(code_points), "OpenCC joined characters across a newline"
    single = np.arange(_CODE_POINTS, dtype=np.uint32)
    one = np.array([len(c) == 1 for c in converted])
    single[code_points[one]] = [ord(c) for c, keep in zip(converted, one) if keep]
    flags = np.zeros(_CODE_POINTS, dtype=np.uint8)
    flags[code_points[~one]] |= ALONE
    reach: dict[int, int] = {}
    for key in phrase_keys:
        flags[ord(key[0])] |= STARTS
        flags[ord(key[1])] |= SECOND
        pair = (ord(key[0]) << _PAIR_SHIFT) | ord(key[1])
        reach[pair] = max(reach.get(pair, 0), len(key))
    flags[IDS_OPERATORS] |= TO_END
    flags[[ord(ch) for k in normalised_keys for ch in k]] |= AROUND
    pairs = np.array(sorted(reach), dtype=np.int64)
    return Tables(single, flags, pairs, np.array([reach[p] for p in pairs.tolist()], dtype=np.int64), longest)


def _cache_key(share: Path) -> str:
    """A hash of OpenCC's version, t2s.json and every dictionary it names."""
    import opencc

    config = (share / "t2s.json").read_bytes()
    digest = hashlib.sha256(f"{opencc.__version__} {sys.version_info[:2]} format 3".encode() + config)
    normalising, converting = _dictionaries(json.loads(config))
    for name in sorted(set(normalising + converting)):
        digest.update(name.encode() + (share / name).read_bytes())
    return digest.hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def converter() -> Tables | None:
    """The tables for this OpenCC, built once per installation (~0.4 s) and cached under HF_HOME; None when
    OpenCC's dictionaries cannot be read (then OpenCC converts whole texts)."""
    found = _opencc_files()
    if found is None:
        logger.info("OpenCC's dictionaries or opencc_dict were not found: t2s runs through OpenCC alone")
        return None
    share, tool = found
    path = hf_home() / "hf_ft" / "opencc" / f"t2s-{_cache_key(share)}.npz"
    try:
        with np.load(path) as stored:
            fields = {name: stored[name] for name in stored.files}
        return Tables(**{**fields, "longest": int(fields["longest"])})
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):  # none yet, or damaged: built again
        pass
    try:
        tables = _build(share, tool)
    except (OSError, subprocess.CalledProcessError, ValueError) as error:
        logger.info("could not read OpenCC's dictionaries (%s): t2s runs through OpenCC alone", error)
        return None
    partial = path.with_name(f".{path.name}.{os.getpid()}.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(partial, **{name: getattr(tables, name) for name in Tables.__dataclass_fields__})
        os.replace(partial, path)  # whole or absent: a reader never sees half a file
    except OSError as error:  # a read-only HF_HOME: used, not cached
        logger.info("could not cache OpenCC's t2s tables in %s: %s", path.parent, error)
        with contextlib.suppress(OSError):
            partial.unlink()
    return tables


def _windows(codes: np.ndarray, tables: Tables, separator: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end of each stretch of `codes` that OpenCC must convert in context: where a key's first two
    characters occur (as far as the longest key with them), a description sequence (to the text's end), a
    character that normalises (its neighbourhood) or converts to several; overlapping stretches merged, none
    crossing a separator (no key holds one); and where description operators are. Outside the stretches
    every character converts on its own."""
    n = len(codes)
    flags = tables.flags[codes]
    pair = flags[:-1] & STARTS
    pair &= flags[1:] >> (SECOND.bit_length() - STARTS.bit_length())  # SECOND moved onto STARTS' bit
    candidates = np.flatnonzero(pair)  # might begin a key: a few per thousand characters
    pairs = (codes[candidates].astype(np.int64) << _PAIR_SHIFT) | codes[candidates + 1]
    where = np.minimum(np.searchsorted(tables.pairs, pairs), max(len(tables.pairs) - 1, 0))
    hit = tables.pairs[where] == pairs if len(tables.pairs) else np.zeros(len(pairs), dtype=bool)
    flagged = np.flatnonzero(flags & (TO_END | AROUND | ALONE))
    bits = flags[flagged]
    anchors, starts, ends = [candidates[hit]], [candidates[hit]], [candidates[hit] + tables.reach[where[hit]]]
    for bit, before, after in ((TO_END, 0, n), (AROUND, tables.longest, tables.longest + 1), (ALONE, 0, 1)):
        at = flagged[(bits & bit).astype(bool)]
        anchors.append(at)
        starts.append(at - before)
        ends.append(at + after)
    descriptions = anchors[1]
    anchors, starts, ends = np.concatenate(anchors), np.concatenate(starts), np.concatenate(ends)
    if not len(anchors):
        return anchors, anchors, descriptions
    breaks = np.flatnonzero(codes == separator)  # each stretch stays inside the text of the character it is for
    text = np.searchsorted(breaks, anchors)
    low = np.concatenate([[0], breaks + 1])[text]
    high = np.append(breaks, n)[text]
    starts, ends = np.maximum(starts, low), np.minimum(ends, high)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    new = np.concatenate([[True], starts[1:] >= ends[:-1]])
    last = np.append(np.flatnonzero(new)[1:] - 1, len(starts) - 1)
    return starts[new], ends[last], descriptions


def _convert(codes: np.ndarray) -> np.ndarray:
    return np.frombuffer(opencc_t2s().convert(codes.tobytes().decode("utf-32-le")).encode("utf-32-le"), dtype=np.uint32)


def convert_codes(codes: np.ndarray, tables: Tables, separator: int = ord("\n")) -> np.ndarray:
    """OpenCC t2s of texts given as code points (uint32) joined by `separator`, as code points: the table
    outside `_windows`, OpenCC inside them (one call for all, a separator between each two; a window with a
    description sequence alone, as OpenCC reads one across any character, a separator too)."""
    out = tables.single[codes]
    starts, ends, descriptions = _windows(codes, tables, separator)
    if not len(starts):
        return out
    alone = np.zeros(len(starts), dtype=bool)
    alone[np.searchsorted(starts, descriptions, side="right") - 1] = True
    converted: list = [None] * len(starts)
    for i in np.flatnonzero(alone).tolist():
        converted[i] = _convert(codes[starts[i]:ends[i]])
    together = np.flatnonzero(~alone)
    if len(together):
        joined = _convert(np.insert(codes[_positions(starts[together], ends[together])],
                                    np.cumsum(ends[together] - starts[together])[:-1], separator))
        parts = np.split(joined, np.flatnonzero(joined == separator))
        if len(parts) != len(together):
            raise RuntimeError("OpenCC's t2s changed a separator: its windows cannot be placed")
        for i, part in zip(together.tolist(), parts):
            converted[i] = part if i == together[0] else part[1:]
    sizes = np.array([len(c) for c in converted])
    if np.array_equal(sizes, ends - starts):
        out[_positions(starts, ends)] = np.concatenate(converted)
        return out
    # a window's conversion changed its length (no key of OpenCC's t2s does today): splice piece by piece
    spliced, done = [], 0
    for c, s, e in zip(converted, starts.tolist(), ends.tolist()):
        spliced += [out[done:s], c]
        done = e
    spliced.append(out[done:])
    return np.concatenate(spliced).astype(np.uint32)


def _positions(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Every position of the stretches [start, end), in order."""
    sizes = ends - starts
    positions = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    positions += np.arange(len(positions))
    return positions

"""A BM25 index over passages (bm25s), built once and cached under HF_HOME.

The cache key is the corpus's content hash plus every parameter that changes the index (normalisation,
terms, k1, b, the format version), so an index built from other parameters is never reused. The folder is
written under a temporary name and renamed when complete: a build killed halfway is never loaded. The
score matrix is loaded memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .corpus import Passage
from .text import NORMALISATION, TERMS, normalise_many

logger = logging.getLogger(__name__)

FORMAT = 2
# queries × passages from which numba's compile (~15 s) costs less than numpy's search: numpy ran ~26 ns per
# query and passage here (127 queries/s at 300k passages, docs/benchmarks.md), so ~13 s of work at this size
NUMBA_FROM_WORK = 5e8
K1, B = 1.5, 0.75  # bm25s' defaults (Lucene's BM25)


def cache_root() -> Path:
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hf_ft" / "bm25"


def _has_numba() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def is_built(folder: Path) -> bool:
    """A complete index of this format (an older hf_ft's cache, or a half-written one, is not)."""
    try:
        return json.loads((folder / "hf_ft_index.json").read_text())["format"] == FORMAT
    except (OSError, ValueError, KeyError):
        return False


def index_key(corpus_hash: str) -> str:
    params = json.dumps([corpus_hash, NORMALISATION, TERMS, K1, B, FORMAT])
    return hashlib.sha256(params.encode()).hexdigest()[:24]


def term_codes(normalised: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The terms of each text as int64 codes (a bigram: both code points, packed; the character of a
    one-character text: its code point) and the text each belongs to, for many texts at once: the `terms` of
    text.py, computed with numpy."""
    codes = np.frombuffer("\x00".join(normalised).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    owner = np.cumsum(codes == 0)
    real = codes != 0
    pair = real[:-1] & real[1:]
    alone = real & ~np.concatenate([[False], real[:-1]]) & ~np.concatenate([real[1:], [False]])
    bigrams = (codes[:-1][pair] << 21) + codes[1:][pair] + _BIGRAM
    return np.concatenate([codes[alone], bigrams]), np.concatenate([owner[alone], owner[:-1][pair]])


_BIGRAM = np.int64(1) << 42
_CHUNK = 50_000  # texts per chunk: a text's place in its chunk fits the low 16 bits of a (term, text) key
_TEXT_BITS = 16


def _chunk_pairs(normalised: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(term, text, tf) for each distinct term of each text, sorted by term then text (one sort of packed
    (term, text) keys); and each text's length in terms."""
    terms, owner = term_codes(normalised)
    lengths = np.bincount(owner, minlength=len(normalised))
    keys, tf = np.unique((terms << _TEXT_BITS) | owner, return_counts=True)
    return keys >> _TEXT_BITS, keys & ((1 << _TEXT_BITS) - 1), tf, lengths


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal values in a sorted array."""
    first = np.flatnonzero(np.diff(sorted_values, prepend=sorted_values[:1] - 1)) if len(sorted_values) else \
        np.zeros(0, dtype=np.int64)
    return first, np.diff(np.append(first, len(sorted_values)))


def build_scores(normalised: list[str], k1: float = K1, b: float = B, progress: bool = True, idf: str = "lucene"):
    """BM25 (bm25s' Lucene variant: idf = ln(1 + (N - df + .5)/(df + .5)), tf / (tf + k1(1 - b + b·dl/avgdl)))
    as bm25s' CSC score matrix (documents × terms), built in two vectorised passes over chunks of texts, so a
    million passages fit in a few GB (bm25s' own builder keeps every token as a Python object). Each pass
    sorts each chunk's packed (term, text) keys once; everything else is linear.
    `idf="okapi"`: rank_bm25's BM25Okapi instead (ln((N - df + .5)/(df + .5)), negatives raised to 0.25 × the
    mean idf, and tf × (k1 + 1)), for the benchmark that checks this implementation against rank_bm25."""
    assert _CHUNK <= 1 << _TEXT_BITS
    n = len(normalised)
    chunks = [normalised[i:i + _CHUNK] for i in range(0, n, _CHUNK)]
    vocab, df = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lengths = []
    for chunk in tqdm(chunks, desc="BM25 vocabulary", disable=not progress, leave=False):
        terms, _, _, chunk_lengths = _chunk_pairs(chunk)
        lengths.append(chunk_lengths)
        first, counts = _runs(terms)
        unique = terms[first]
        merged = np.union1d(vocab, unique)
        merged_df = np.zeros(len(merged), dtype=np.int64)
        merged_df[np.searchsorted(merged, vocab)] += df
        merged_df[np.searchsorted(merged, unique)] += counts
        vocab, df = merged, merged_df
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    average = max(float(lengths.mean()) if n else 1.0, 1e-9)
    if idf == "okapi":
        weights = np.log((n - df + 0.5) / (df + 0.5))
        weights[weights < 0] = 0.25 * weights.mean()
        idf = (weights * (k1 + 1)).astype(np.float32)
    else:
        idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    data = np.zeros(int(indptr[-1]), dtype=np.float32)
    indices = np.zeros(int(indptr[-1]), dtype=np.int32)
    offsets = indptr[:-1].copy()
    start = 0
    for chunk in tqdm(chunks, desc="BM25 scores", disable=not progress, leave=False):
        terms, docs, tf, _ = _chunk_pairs(chunk)  # sorted by term, then text: the CSC order
        first, counts = _runs(terms)
        column = np.searchsorted(vocab, terms[first])
        columns = np.repeat(column, counts)
        docs, tf = docs + start, tf.astype(np.float32)
        norm = k1 * (1 - b + b * lengths[docs] / average)
        place = np.repeat(offsets[column] - first, counts) + np.arange(len(terms))
        data[place] = idf[columns] * tf / (tf + norm)
        indices[place] = docs
        offsets[column] += counts
        start += len(chunk)
    return {"data": data, "indices": indices, "indptr": indptr, "num_docs": n}, vocab


@dataclass
class BM25Index:
    retriever: object  # bm25s.BM25, its score matrix built by build_scores
    vocab: np.ndarray  # sorted term codes; column i of the matrix is vocab[i]
    passages: list[Passage]
    key: str
    path: Path

    @classmethod
    def build_or_load(cls, passages: list[Passage], corpus_hash: str, root: Path | None = None,
                      progress: bool = True) -> BM25Index:
        key = index_key(corpus_hash)
        folder = (root or cache_root()) / key
        if is_built(folder):
            return cls.load(folder)
        import bm25s

        logger.info("indexing %d passages (BM25, %s, %s) into %s", len(passages), TERMS, NORMALISATION, folder)
        normalised = normalise_many([f"{p.title} {p.text}" if p.title else p.text for p in passages])
        retriever = bm25s.BM25(k1=K1, b=B, method="lucene", idf_method="lucene")
        retriever.scores, vocab = build_scores(normalised, K1, B, progress)
        retriever.vocab_dict = {}  # terms.npy holds the vocabulary (millions of bigrams: no JSON dict)
        retriever.nonoccurrence_array = None  # Lucene BM25 needs none
        del normalised
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        try:
            retriever.save(partial)
            np.save(partial / "terms.npy", vocab)
            with (partial / "passages.jsonl").open("w", encoding="utf-8") as f:
                for p in passages:
                    f.write(json.dumps({"id": p.id, "text": p.text, "title": p.title}, ensure_ascii=False) + "\n")
            (partial / "hf_ft_index.json").write_text(json.dumps(
                {"format": FORMAT, "corpus_sha256": corpus_hash, "passages": len(passages), "terms": TERMS,
                 "normalisation": NORMALISATION, "k1": K1, "b": B}))
            if folder.exists():  # an older format's or a broken cache under the same key: replaced
                shutil.rmtree(folder, ignore_errors=True)
            try:
                partial.rename(folder)
            except OSError:  # another process finished the same index first: use theirs
                shutil.rmtree(partial, ignore_errors=True)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return cls.load(folder)

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        import bm25s

        retriever = bm25s.BM25.load(folder, mmap=True)
        vocab = np.load(folder / "terms.npy", mmap_mode="r")
        retriever.unique_token_ids_set = range(len(vocab))  # O(1) membership for bm25s' query filter
        with (folder / "passages.jsonl").open(encoding="utf-8") as f:
            passages = [Passage(**json.loads(line)) for line in f]
        return cls(retriever, vocab, passages, folder.name, folder)

    def query_columns(self, queries: list[str]) -> list[list[int]]:
        """Each query's terms as columns of the score matrix (terms the corpus lacks are left out)."""
        terms, owner = term_codes(normalise_many(queries))
        columns = np.searchsorted(self.vocab, terms)
        found = (columns < len(self.vocab)) & (np.asarray(self.vocab)[np.minimum(columns, len(self.vocab) - 1)] == terms)
        out = [[] for _ in queries]
        for column, query in zip(columns[found].tolist(), owner[found].tolist()):
            out[query].append(column)
        return out

    def search(self, queries: list[str], k: int, exclude: list[str | None] | None = None,
               progress: bool = False, threads: int = -1) -> list[list[tuple[int, float]]]:
        """Top-k (passage index, score) per query; `exclude[i]` is a passage id query i may not retrieve
        (the training question itself, for the training pool). `threads` -1: every core."""
        out = [[] for _ in queries]
        columns = self.query_columns(queries)
        asked = [i for i, c in enumerate(columns) if c]  # a query with no term in the corpus finds nothing
        if not asked:
            return out
        want = min(len(self.passages), k + (1 if exclude else 0))
        # bm25s' jitted scorer is ~14x faster on 2 cores, but compiles for ~15 s in each process: worth it for
        # many questions over a large corpus, not for predict's one or a small corpus
        work = len(asked) * len(self.passages)
        self.retriever.backend = "numba" if work >= NUMBA_FROM_WORK and _has_numba() else "numpy"
        documents, scores = self.retriever.retrieve([columns[i] for i in asked], k=want, show_progress=progress,
                                                    n_threads=threads)
        for i, docs, values in zip(asked, documents, scores):
            hits = [(int(d), float(s)) for d, s in zip(docs, values)
                    if s > 0 and not (exclude and exclude[i] is not None and self.passages[int(d)].id == exclude[i])]
            out[i] = hits[:k]
        return out

    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

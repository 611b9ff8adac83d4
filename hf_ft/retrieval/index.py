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
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import Passage
from .scores import K1, MATRIX_FILES, B, build_scores, term_codes
from .text import NORMALISATION, TERMS, normalise_many

logger = logging.getLogger(__name__)

FORMAT = 3  # 3: passages in an Arrow file, not JSON lines (a million load in a second, not thirteen)
PASSAGES = "passages.arrow"
# queries × passages from which numba's compile (~15 s) costs less than numpy's search: numpy ran ~26 ns per
# query and passage here (127 queries/s at 300k passages, docs/benchmarks.md), so ~13 s of work at this size
NUMBA_FROM_WORK = 5e8

def _save_passages(passages: list[Passage], path: Path, batch: int = 8192) -> None:
    """The passages as one Arrow IPC file: written and read back in a fraction of a second for a million
    (JSON lines took 13 s to read), memory-mapped, and no pandas import. Written in batches, whose buffers
    are reused (one table of 100k passages took 0.06-0.26 s here, fresh pages costing; batches 0.05 s)."""
    import pyarrow as pa

    names = ("id", "text", "title")
    schema = pa.schema([(name, pa.string()) for name in names])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start in range(0, len(passages), batch):
            rows = passages[start:start + batch]
            # through bytes: pyarrow reading a str leaves CPython's UTF-8 copy cached in it (0.6 GB for a
            # million passages, held as long as the caller holds the passages)
            writer.write_batch(pa.record_batch([
                pa.array([getattr(p, name).encode("utf-8") for p in rows], pa.binary()).view(pa.string())
                for name in names], schema=schema))


def _load_passages(path: Path) -> list[Passage]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
        columns = [table.column(name).to_pylist() for name in ("id", "text", "title")]
    return [Passage(*row) for row in zip(*columns)]


def cache_root() -> Path:
    from ..core.caches import hf_home, usable

    return usable(hf_home() / "hf_ft" / "bm25")


def _has_numba() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def identity(corpus_hash: str, passages: int) -> dict:
    """What an index folder must record to be served for a corpus: its content, its size and every setting
    that changes the index."""
    return {"format": FORMAT, "corpus_sha256": corpus_hash, "passages": passages, "terms": TERMS,
            "normalisation": NORMALISATION, "k1": K1, "b": B}


def cache_problem(folder: Path, corpus_hash: str, passages: int | None = None) -> str | None:
    """Why the index cached in `folder` may not be served for the corpus `corpus_hash` (None: it may). A cache is
    trusted by what it holds, not by its folder's name: the record must match, and the passages it would hand
    the model must hash to the corpus (a foreign or stale index would feed passages the leak check never saw)."""
    try:
        recorded = json.loads((folder / "hf_ft_index.json").read_text())
    except FileNotFoundError:
        return "no complete index there"
    except (OSError, ValueError) as e:
        return f"its record is unreadable ({type(e).__name__})"
    expected = identity(corpus_hash, recorded.get("passages") if passages is None else passages)
    differing = [k for k in expected if recorded.get(k) != expected[k]]
    if differing:
        return f"it was built with other {', '.join(differing)}"
    missing = [name for name in (PASSAGES, "terms.npy", *MATRIX_FILES) if not (folder / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    try:
        held = _load_passages(folder / PASSAGES)
    except Exception as e:  # noqa: BLE001 - any way the file fails to read is a damaged cache
        return f"{PASSAGES} is damaged ({type(e).__name__})"
    from .corpus import content_hash

    if len(held) != recorded["passages"] or content_hash(held) != corpus_hash:
        return f"{PASSAGES} does not hold the corpus it records"
    return None


def index_key(corpus_hash: str) -> str:
    params = json.dumps([corpus_hash, NORMALISATION, TERMS, K1, B, FORMAT])
    return hashlib.sha256(params.encode()).hexdigest()[:24]


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
        if folder.exists():
            problem = cache_problem(folder, corpus_hash, len(passages))
            if problem is None:
                try:
                    return cls.load(folder)
                except Exception as e:  # noqa: BLE001 - a matrix file bm25s cannot read: rebuilt below
                    problem = f"it does not load ({type(e).__name__}: {str(e)[:80]})"
            logger.warning("the BM25 index cached in %s is not used: %s; rebuilding it", folder, problem)
        import bm25s

        logger.info("indexing %d passages (BM25, %s, %s) into %s", len(passages), TERMS, NORMALISATION, folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        try:
            retriever = bm25s.BM25(k1=K1, b=B, method="lucene", idf_method="lucene")
            scores, vocab = build_scores(
                [f"{p.title} {p.text}" if p.title else p.text for p in passages], K1, B, progress, scratch=partial,
                matrix_folder=partial,
                meanwhile=lambda: _save_passages(passages, partial / PASSAGES))
            # bm25s writes the rest (indptr, parameters); data and indices are already in their files
            retriever.scores = {**scores, "data": np.zeros(0, np.float32), "indices": np.zeros(0, np.int32)}
            retriever.vocab_dict = {}  # terms.npy holds the vocabulary (millions of bigrams: no JSON dict)
            retriever.nonoccurrence_array = None  # Lucene BM25 needs none
            retriever.save(partial, data_name=".unused-data.npy", indices_name=".unused-indices.npy")
            for unused in (".unused-data.npy", ".unused-indices.npy"):
                (partial / unused).unlink()
            del scores
            np.save(partial / "terms.npy", vocab)
            del retriever, vocab
            (partial / "hf_ft_index.json").write_text(json.dumps(identity(corpus_hash, len(passages))))
            if folder.exists():  # an older format's or a broken cache under the same key: replaced
                shutil.rmtree(folder, ignore_errors=True)
            try:
                partial.rename(folder)
            except OSError:  # another process finished the same index first: use theirs
                shutil.rmtree(partial, ignore_errors=True)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return cls.load(folder, passages)

    @classmethod
    def load(cls, folder: Path, passages: list[Passage] | None = None) -> BM25Index:
        """The index in `folder`, its matrix memory-mapped; `passages`: the ones it was just built from (the
        same content hash), so a fresh build does not read them back."""
        import bm25s

        retriever = bm25s.BM25.load(folder, mmap=True)
        vocab = np.load(folder / "terms.npy", mmap_mode="r")
        retriever.unique_token_ids_set = range(len(vocab))  # O(1) membership for bm25s' query filter
        return cls(retriever, vocab, _load_passages(folder / PASSAGES) if passages is None else list(passages),
                   folder.name, folder)

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

"""BM25's score matrix, built with numpy in chunks: terms of every passage (OpenCC-normalised character bigrams),
counted per chunk in worker processes for large corpora, merged into one vocabulary, then scored straight into
the memory-mapped arrays bm25s loads. `python -m hf_ft.retrieval.scores` is the worker (it imports numpy alone).
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .text import normalised_codes

logger = logging.getLogger(__name__)

K1, B = 1.5, 0.75  # bm25s' defaults (Lucene's BM25)
MATRIX_FILES = ("data.csc.index.npy", "indices.csc.index.npy")  # bm25s' names for the score matrix's arrays


def _terms_of_codes(codes: np.ndarray, separator: int) -> tuple[np.ndarray, np.ndarray]:
    """The terms of texts given as code points joined by `separator`, as int64 codes (a bigram: both code
    points, packed; the character of a one-character text: its code point), and the text each belongs to.
    The one term rule, for queries and for the index's chunks alike; written for few large temporaries (on
    this VM first touching a fresh page costs ~7 µs, as much as the work)."""
    is_separator = codes == separator
    sizes = np.diff(np.concatenate([[0], np.flatnonzero(is_separator) + 1, [len(codes)]]))
    owner = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)  # the text of each code point
    pair = ~is_separator[:-1] & ~is_separator[1:]
    terms = codes[:-1][pair].astype(np.int64)
    terms <<= 21
    terms |= codes[1:][pair]
    terms += _BIGRAM
    owners = owner[:-1][pair]
    if len(codes):
        alone = ~is_separator & np.concatenate([[True], is_separator[:-1]]) & np.concatenate([is_separator[1:], [True]])
        if alone.any():  # a one-character text keeps its character
            terms = np.concatenate([codes[alone].astype(np.int64), terms])
            owners = np.concatenate([owner[alone], owners])
    return terms, owners


def term_codes(normalised: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The `terms` of text.py for each of many normalised texts, computed with numpy (`_terms_of_codes`)."""
    codes = np.frombuffer("\x00".join(normalised).encode("utf-32-le"), dtype=np.uint32)
    return _terms_of_codes(codes, 0)


_BIGRAM = np.int64(1) << 42
_CHUNK = 50_000  # texts per chunk at most: a text's place in its chunk fits the low 16 bits of a (term, text) key
_CHUNK_CHARS = 2_000_000  # characters per chunk
_TEXT_BITS = 16
PARALLEL_FROM = 20_000  # passages from which chunks are normalised and counted in worker processes


def _chunk_postings(texts: list[str], normalised: bool, scratch: str, number: int):
    """One chunk of texts → its postings, sorted by term, then text (the CSC order), saved in `scratch` for
    the second pass: each posting's text (its place in the chunk) and tf; and the chunk's distinct terms with
    how many of its texts hold each (df). Returned: those terms, their df, and each text's length in terms."""
    codes = (np.frombuffer("\n".join(texts).encode("utf-32-le"), dtype=np.uint32) if normalised
             else normalised_codes(texts))
    keys, owner = _terms_of_codes(codes, ord("\n"))
    del codes
    keys <<= _TEXT_BITS
    keys |= owner
    lengths = np.bincount(owner, minlength=len(texts))
    del owner
    keys.sort()
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else keys
    tf = np.diff(np.append(first, len(keys))).astype(np.float32)
    keys = keys[first]
    local = (keys & ((1 << _TEXT_BITS) - 1)).astype(np.uint16)
    keys >>= _TEXT_BITS
    starts, df = _runs(keys)
    unique = keys[starts]
    for what, array in (("docs", local), ("tf", tf), ("vocab", unique), ("df", df)):
        np.save(_chunk_file(scratch, number, f"{what}.npy"), array)
    return unique, df, lengths


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal values in a sorted array."""
    first = np.flatnonzero(np.diff(sorted_values, prepend=sorted_values[:1] - 1)) if len(sorted_values) else \
        np.zeros(0, dtype=np.int64)
    return first, np.diff(np.append(first, len(sorted_values)))


def _chunk_file(scratch: str, number: int, what: str) -> Path:
    return Path(scratch) / f"chunk-{number}-{what}"


def _map_chunks(texts: list[str], spans: list[tuple[int, int]], normalised: bool, scratch: str, workers: int,
                progress: bool, meanwhile=None):
    """`_chunk_postings` of each span of `texts`, in order: here, or for several chunks and cores here and in
    `workers` - 1 worker processes (OpenCC and the string work hold the GIL, so threads would not help; this
    process takes its share rather than wait: one process start and one texts file less). A worker is a fresh
    `python -m hf_ft.retrieval.scores` that reads its chunks' texts from `scratch`: it imports only numpy and
    OpenCC (~0.3 s), and nothing of the caller is copied (a fork would copy the page tables of a process
    that may hold torch's threads and a corpus of gigabytes). `meanwhile()` runs here while they work."""
    from tqdm.auto import tqdm  # here: a worker process has no use for it

    bar = tqdm(total=len(spans), desc="BM25 terms", disable=not progress, leave=False)
    if workers <= 1 or len(spans) <= 1:
        if meanwhile is not None:
            meanwhile()
        for number, (a, b) in enumerate(spans):
            yield _chunk_postings(texts[a:b], normalised, scratch, number)
            bar.update()
        bar.close()
        return
    import subprocess
    import sys
    import time

    if not normalised:
        from .t2s import converter

        converter()  # its tables built and cached before the workers start, so that they load them
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1",
           # glibc: a chunk's arrays (< 32 MB) from the heap, kept for the next chunk instead of fresh pages
           # from the kernel (their faults were 0.3 of a worker's 1.7 s of CPU per 100k passages, then 0.17)
           "MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
    here = range(0, len(spans), workers)  # this process takes every `workers`-th chunk itself
    processes = []
    try:
        for worker in range(1, min(workers, len(spans))):
            numbers = ",".join(str(n) for n in range(worker, len(spans), workers))
            with _chunk_file(scratch, worker, "worker.log").open("wb") as log:  # a file: a pipe could fill
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "hf_ft.retrieval.scores", scratch, numbers, str(int(normalised))],
                    env=env, stdout=subprocess.DEVNULL, stderr=log))
        for number, (a, b) in enumerate(spans):  # written while the workers start; each renamed when whole
            if number not in here:
                partial = _chunk_file(scratch, number, "texts.partial")
                partial.write_text("\n".join((t or "").replace("\n", " ") for t in texts[a:b]), encoding="utf-8")
                partial.rename(_chunk_file(scratch, number, "texts.txt"))
        if meanwhile is not None:
            meanwhile()
        for number, (a, b) in enumerate(spans):
            if number in here:
                yield _chunk_postings(texts[a:b], normalised, scratch, number)
                bar.update()
                continue
            done = _chunk_file(scratch, number, "done")
            while not done.exists():
                failed = [w for w, p in enumerate(processes, 1) if p.poll() not in (None, 0)]
                if failed:
                    raise RuntimeError("a BM25 indexing worker failed: " + _worker_log(scratch, failed[0]))
                time.sleep(0.01)
            yield tuple(np.load(_chunk_file(scratch, number, f"{what}.npy")) for what in ("vocab", "df", "lengths"))
            bar.update()
        for worker, process in enumerate(processes, 1):
            if process.wait() != 0:
                raise RuntimeError("a BM25 indexing worker failed: " + _worker_log(scratch, worker))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    bar.close()


def _worker_log(scratch: str, worker: int) -> str:
    return _chunk_file(scratch, worker, "worker.log").read_text(errors="replace")[-2000:] or "(no output)"


def _worker(scratch: str, numbers: str, normalised: str) -> None:
    """A worker process: `_chunk_postings` of each chunk numbered in `numbers`, its results left in `scratch`
    (the `done` file written last, so the parent never reads a half-written chunk). It waits for each chunk's
    texts, and stops if the parent is gone."""
    import time

    parent = os.getppid()
    for number in map(int, numbers.split(",")):
        while not _chunk_file(scratch, number, "texts.txt").exists():
            if os.getppid() != parent:
                raise SystemExit("the indexing process is gone")
            time.sleep(0.005)
        texts = _chunk_file(scratch, number, "texts.txt").read_text(encoding="utf-8").split("\n")
        lengths = _chunk_postings(texts, normalised == "1", scratch, number)[2]
        np.save(_chunk_file(scratch, number, "lengths.npy"), lengths)
        _chunk_file(scratch, number, "texts.txt").unlink()
        _chunk_file(scratch, number, "done").touch()


_MERGE_FROM = 20_000_000  # distinct (chunk, term) pairs gathered before merging them into the vocabulary


def _merge_vocabulary(vocab: np.ndarray, df: np.ndarray, pending: list) -> tuple[np.ndarray, np.ndarray]:
    """The vocabulary and df with the pending chunks' terms added (and `pending` emptied): one sort for many
    chunks, not one per chunk."""
    terms = np.concatenate([vocab] + [u for u, _ in pending])
    counts = np.concatenate([df] + [c for _, c in pending])
    pending.clear()
    vocab, inverse = np.unique(terms, return_inverse=True)
    return vocab, np.bincount(inverse, weights=counts, minlength=len(vocab)).astype(np.int64)


def _spans(texts: list[str]) -> list[tuple[int, int]]:
    """Chunks of texts of about `_CHUNK_CHARS` characters each (at most `_CHUNK` texts): small enough that
    their arrays are reused from the heap, not fresh pages (which on this VM cost as much as the work)."""
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1)  # after each text
    spans, start = [], 0
    while start < len(texts):
        full = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _CHUNK_CHARS))  # reaches the size
        end = min(full + 1, start + _CHUNK, len(texts))
        spans.append((start, end))
        start = end
    return spans


def build_scores(texts: list[str], k1: float = K1, b: float = B, progress: bool = True, idf: str = "lucene",
                 normalised: bool = False, workers: int | None = None, scratch: Path | None = None,
                 matrix_folder: Path | None = None, meanwhile=None):
    """BM25 (bm25s' Lucene variant: idf = ln(1 + (N - df + .5)/(df + .5)), tf / (tf + k1(1 - b + b·dl/avgdl)))
    as bm25s' CSC score matrix (documents × terms), from raw texts (normalised here) or `normalised` ones.
    Two vectorised passes over chunks of texts, so a million passages fit in a few GB (bm25s' own builder
    keeps every token as a Python object). The first pass normalises each chunk and sorts its packed (term,
    text) keys once, in one process per core (`workers`, default every core) for a large corpus, and leaves
    the chunk's postings in `scratch`; the second scatters them into the matrix. The matrix does not depend on
    the chunks or the workers. `idf="okapi"`: rank_bm25's BM25Okapi instead (ln((N - df + .5)/(df + .5)),
    negatives raised to 0.25 × the mean idf, and tf × (k1 + 1)), for the benchmark that checks this
    implementation against rank_bm25. `matrix_folder`: the matrix's data and indices are written into its
    MATRIX_FILES (memory-mapped; writing them once is ~0.3 s per 100k passages less than building them in memory and
    saving a copy, as fresh pages cost on this VM). `meanwhile()` runs while worker processes work."""
    from tqdm.auto import tqdm

    assert _CHUNK <= 1 << _TEXT_BITS
    n = len(texts)
    workers = (_available_cores() if n >= PARALLEL_FROM else 1) if workers is None else workers
    spans = _spans(texts)
    starts = [a for a, _ in spans]
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        vocab, df = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        lengths, pending = [], []
        for unique, counts, chunk_lengths in _map_chunks(texts, spans, normalised, folder, workers, progress,
                                                          meanwhile):
            lengths.append(chunk_lengths)
            pending.append((unique, counts))
            if sum(len(u) for u, _ in pending) > _MERGE_FROM:
                vocab, df = _merge_vocabulary(vocab, df, pending)
        vocab, df = _merge_vocabulary(vocab, df, pending)
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
        if matrix_folder is None:
            data = np.zeros(int(indptr[-1]), dtype=np.float32)
            indices = np.zeros(int(indptr[-1]), dtype=np.int32)
        else:
            data, indices = (np.lib.format.open_memmap(matrix_folder / name, mode="w+", dtype=dtype,
                                                       shape=(int(indptr[-1]),))
                             for name, dtype in zip(MATRIX_FILES, (np.float32, np.int32)))
        offsets = indptr[:-1].copy()
        text_norm = (k1 * (1 - b + b * lengths / average)).astype(np.float32)  # tf's saturation, per text

        def score(number: int, start: int, column: np.ndarray, base: np.ndarray, counts: np.ndarray) -> None:
            """One chunk's postings into the matrix: disjoint places, so chunks are scored side by side."""
            first = np.cumsum(counts)
            first -= counts
            place = np.repeat(base - first, counts)  # each posting's place in the matrix
            place += np.arange(len(place))
            docs = np.load(_chunk_file(folder, number, "docs.npy")).astype(np.int32)
            docs += start
            tf = np.load(_chunk_file(folder, number, "tf.npy"))
            value = np.repeat(idf[column], counts)
            value *= tf
            tf += text_norm[docs]
            value /= tf
            data[place] = value
            indices[place] = docs

        # threads: numpy lets go of the GIL in all of `score` (1.75x on 2 cores); where each chunk's postings
        # go depends on the chunks before it, so that is found here, in order, a few chunks ahead
        threads = max(1, min(workers, len(starts)))
        with ThreadPoolExecutor(threads) as pool:
            running = []
            for number, start in enumerate(tqdm(starts, desc="BM25 scores", disable=not progress, leave=False)):
                unique, counts = (np.load(_chunk_file(folder, number, f"{what}.npy")) for what in ("vocab", "df"))
                column = np.searchsorted(vocab, unique)
                del unique
                running.append(pool.submit(score, number, start, column, offsets[column], counts))
                offsets[column] += counts
                if len(running) > threads:
                    running.pop(0).result()
            for future in running:
                future.result()
    if matrix_folder is not None:
        data.flush()
        indices.flush()
    return {"data": data, "indices": indices, "indptr": indptr, "num_docs": n}, vocab



if __name__ == "__main__":  # a worker of `_map_chunks`
    import sys

    _worker(*sys.argv[1:4])

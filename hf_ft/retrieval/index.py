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

from tqdm.auto import tqdm

from .corpus import Passage
from .text import NORMALISATION, TERMS, normalise, terms

logger = logging.getLogger(__name__)

FORMAT = 1
K1, B = 1.5, 0.75  # bm25s' defaults (Lucene's BM25)


def cache_root() -> Path:
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hf_ft" / "bm25"


def index_key(corpus_hash: str) -> str:
    params = json.dumps([corpus_hash, NORMALISATION, TERMS, K1, B, FORMAT])
    return hashlib.sha256(params.encode()).hexdigest()[:24]


@dataclass
class BM25Index:
    retriever: object  # bm25s.BM25
    passages: list[Passage]
    key: str
    path: Path

    @classmethod
    def build_or_load(cls, passages: list[Passage], corpus_hash: str, root: Path | None = None,
                      progress: bool = True) -> BM25Index:
        key = index_key(corpus_hash)
        folder = (root or cache_root()) / key
        if (folder / "passages.jsonl").is_file():
            return cls.load(folder)
        import bm25s

        logger.info("indexing %d passages (BM25, %s, %s) into %s", len(passages), TERMS, NORMALISATION, folder)
        tokens = [terms(normalise(f"{p.title} {p.text}" if p.title else p.text))
                  for p in tqdm(passages, desc="Normalising passages", disable=not progress, leave=False)]
        retriever = bm25s.BM25(k1=K1, b=B)
        retriever.index(tokens, show_progress=progress)
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        try:
            retriever.save(partial)
            with (partial / "passages.jsonl").open("w", encoding="utf-8") as f:
                for p in passages:
                    f.write(json.dumps({"id": p.id, "text": p.text, "title": p.title}, ensure_ascii=False) + "\n")
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
        with (folder / "passages.jsonl").open(encoding="utf-8") as f:
            passages = [Passage(**json.loads(line)) for line in f]
        return cls(retriever, passages, folder.name, folder)

    def search(self, queries: list[str], k: int, exclude: list[str | None] | None = None,
               progress: bool = False) -> list[list[tuple[int, float]]]:
        """Top-k (passage index, score) per query; `exclude[i]` is a passage id query i may not retrieve
        (the training question itself, for the training pool)."""
        if not queries:
            return []
        want = min(len(self.passages), k + (1 if exclude else 0))
        tokens = [terms(normalise(q)) or [""] for q in queries]
        documents, scores = self.retriever.retrieve(tokens, k=want, show_progress=progress, n_threads=0)
        out = []
        for i, (docs, values) in enumerate(zip(documents, scores)):
            hits = [(int(d), float(s)) for d, s in zip(docs, values)
                    if s > 0 and not (exclude and exclude[i] is not None and self.passages[int(d)].id == exclude[i])]
            out.append(hits[:k])
        return out

    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


"""The two pluggable parts of open book, each a registry: corpus readers (where passages come from: the training
pool, a local folder or file, a hub dataset, precomputed contexts) and retrievers (how passages are found: BM25).
Adding one is one `register(...)` here; OpenBook and the model card reach them only through these registries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from ..core.errors import UserError
from ..core.registry import Registry
from . import corpus as corpora
from .corpus import Passage

# ----------------------------------------------------------------------------------------------
# Corpus readers: settings → (passages, the source as recorded); a recorded source → the card's words


@dataclass(frozen=True)
class CorpusReader:
    name: str  # the recorded source kind
    claims: Callable[[object], bool]  # does this reader read these settings' corpus?
    read: Callable[[object, list, str | None], tuple[list[Passage], dict]] | None  # None: not a searchable corpus
    describe: Callable[[dict], str]  # the card's words for a recorded source


CORPUS_READERS: Registry[CorpusReader] = Registry("corpus reader")


def _read_pool(settings, train, cache_dir):
    if not train:
        raise UserError("--retrieval_corpus training_pool: the training split is empty")
    return corpora.pool_passages(train), {"kind": "training_pool", "questions": len(train)}


def _is_local(settings) -> bool:
    corpus = settings.retrieval_corpus or ""
    return bool(corpus) and (Path(corpus).exists() or "/" not in corpus or corpus.startswith((".", "/")))


def _read_local(settings, train, cache_dir):
    size, overlap = settings.passage_chars, settings.passage_overlap
    passages = corpora.read_local(settings.retrieval_corpus, size, overlap, settings.retrieval_text_column)
    return passages, {"kind": "local", "path": str(Path(settings.retrieval_corpus).resolve()), "passage_chars": size,
                      "passage_overlap": overlap}


def _read_hub(settings, train, cache_dir):
    s = settings
    size, overlap = s.passage_chars, s.passage_overlap
    passages, commit = corpora.read_hub(s.retrieval_corpus, s.retrieval_corpus_config, s.retrieval_corpus_revision,
                                        s.retrieval_corpus_split, size, overlap, s.retrieval_text_column, cache_dir)
    return passages, {"kind": "hub", "dataset": s.retrieval_corpus, "config": s.retrieval_corpus_config,
                      "split": s.retrieval_corpus_split, "revision": commit,
                      "requested_revision": s.retrieval_corpus_revision, "passage_chars": size,
                      "passage_overlap": overlap}


CORPUS_READERS.register(CorpusReader(
    "training_pool", lambda s: s.retrieval_corpus == corpora.POOL, _read_pool,
    lambda source: f"the training questions with their answers (leave-one-out; {source.get('questions')} questions)"))
CORPUS_READERS.register(CorpusReader(
    "precomputed", lambda s: bool(s.retrieval_contexts), None, lambda source: "precomputed contexts"))
CORPUS_READERS.register(CorpusReader(
    "local", _is_local, _read_local,
    lambda source: f"a local corpus (content sha256 `{str(source.get('content_sha256'))[:16]}…`)"))
CORPUS_READERS.register(CorpusReader(
    "hub", lambda s: bool(s.retrieval_corpus), _read_hub,
    lambda source: (f"hub dataset `{source.get('dataset')}` config `{source.get('config')}` split "
                    f"`{source.get('split')}` at commit `{str(source.get('revision'))[:12]}`")))


def reader_for(settings) -> CorpusReader:
    """The first registered reader that claims the settings' corpus (the order above: the pool, precomputed
    contexts, a local path, else a hub id)."""
    return next(reader for reader in CORPUS_READERS.values() if reader.claims(settings))


# ----------------------------------------------------------------------------------------------
# Retrievers: passages → a cached index that searches; a recorded source → that index again


class Index(Protocol):
    passages: list[Passage]
    key: str

    def search(self, queries: list[str], k: int, exclude: list[str | None] | None = None
               ) -> list[list[tuple[int, float]]]: ...

    def query_columns(self, queries: list[str]) -> list[list[int]]: ...


@dataclass(frozen=True)
class Retriever:
    name: str
    scoring: str  # what the record and the card say it ranks by
    build: Callable[[list[Passage], str], Index]  # (passages, their content hash) → an index, cached by content
    cached: Callable[[dict], tuple[Index | None, str | None]]  # a recorded source → (its index, or why not)


def _bm25_build(passages: list[Passage], corpus_hash: str) -> Index:
    from .index import BM25Index

    return BM25Index.build_or_load(passages, corpus_hash)


def _bm25_cached(source: dict):
    from .index import BM25Index, cache_problem, cache_root

    folder = cache_root() / str(source.get("index_key"))
    problem = cache_problem(folder, str(source.get("content_sha256")), source.get("passages"))
    if problem is None:
        try:
            return BM25Index.load(folder), None
        except Exception as e:  # noqa: BLE001 - damaged beyond what cache_problem reads
            problem = f"it does not load ({type(e).__name__})"
    return None, f"{folder}: {problem}"


RETRIEVERS: Registry[Retriever] = Registry("retriever", "--retriever")
RETRIEVERS.register(Retriever("bm25", "bm25 (bm25s, k1 1.5, b 0.75)", _bm25_build, _bm25_cached))

"""The same retrieval at training, evaluation and predict time: rows in, rows with a context out.

`OpenBook` is built from the user's settings at training time (corpus read, leak-checked against every
validation and test item, indexed) and recorded in the run (`record()`); evaluate and predict rebuild it
from that record (`OpenBook.from_record`), finding the cached index by its key, or re-reading the recorded
corpus when the cache is gone.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..core.errors import UserError
from ..data.rows import QARow
from . import corpus as corpora
from .leak import find_leaks
from .registries import CORPUS_READERS, RETRIEVERS, Index, reader_for
from .settings import QUERIES, RECORDED_BEFORE, RetrievalArguments
from .text import NORMALISATION, TERMS, normalise

logger = logging.getLogger(__name__)

_POOL_READER = CORPUS_READERS["training_pool"].read  # its index cannot be rebuilt from the record alone
CONTEXTS_FILE = "retrieved_contexts.jsonl"
SEPARATOR = "\n"


@dataclass
class OpenBook:
    settings: RetrievalArguments
    index: Index | None = None
    precomputed: dict | None = None
    source: dict = field(default_factory=dict)
    leak: dict | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, settings: RetrievalArguments, train: list[QARow], held_out: list[QARow],
              cache_dir: str | None = None) -> OpenBook:
        """Read the corpus, drop (or refuse) passages that copy a held-out item, index the rest."""
        if settings.retrieval_contexts:
            contexts = corpora.read_precomputed(settings.retrieval_contexts)
            texts = sorted({p["text"] for passages in contexts.values() for p in passages})
            book = cls(settings, precomputed=contexts,
                       source={"kind": "precomputed", "path": settings.retrieval_contexts})
            report = find_leaks(texts, held_out)
            bad = {texts[p] for p in report.leaking_passages}
            book.leak = book._apply_policy(report, f"--retrieval_contexts {settings.retrieval_contexts}")
            if bad and settings.leak_policy == "drop":
                book.precomputed = {i: [p for p in ps if p["text"] not in bad] for i, ps in contexts.items()}
            return book
        passages, source = cls._read_corpus(settings, train, cache_dir)
        passages, source["duplicates_removed"] = corpora.unique_passages(passages)
        if source["duplicates_removed"]:
            logger.info("%s: %d passage(s) repeat an earlier one's text and are left out", settings.retrieval_corpus,
                        source["duplicates_removed"])
        report = find_leaks([p.text for p in passages], held_out)
        book = cls(settings, source=source)
        book.leak = book._apply_policy(report, f"--retrieval_corpus {settings.retrieval_corpus}")
        source["read_sha256"] = corpora.content_hash(passages)
        if settings.leak_policy == "drop" and report.leaking_passages:
            source["dropped_ids"] = [passages[i].id for i in sorted(report.leaking_passages)]
            passages = [p for i, p in enumerate(passages) if i not in report.leaking_passages]
            if not passages:
                raise UserError(f"--retrieval_corpus {settings.retrieval_corpus}: every passage copies a validation or "
                                "test item; nothing is left to retrieve from")
        if not any(normalise(p.text) for p in passages):  # stops at the first passage that has text
            raise UserError(f"--retrieval_corpus {settings.retrieval_corpus}: none of its {len(passages)} passages "
                            f"has any text left after normalisation ({NORMALISATION}), "
                            f"e.g. {passages[0].text[:40]!r}: nothing "
                            "could be retrieved")
        source["content_sha256"] = corpora.content_hash(passages)
        source["passages"] = len(passages)
        book.index = RETRIEVERS[settings.retriever].build(passages, source["content_sha256"])
        source["index_key"] = book.index.key
        return book

    @staticmethod
    def _read_corpus(settings: RetrievalArguments, train: list[QARow], cache_dir) -> tuple[list, dict]:
        return reader_for(settings).read(settings, train, cache_dir)

    def _apply_policy(self, report, what: str) -> dict:
        record = report.record(self.settings.leak_policy)
        hit = len(report.items_hit)
        if hit:
            example = report.examples[0]
            message = (f"{what}: {len(report.leaking_passages)} passage(s) copy {hit} validation/test item(s), "
                       f"e.g. {example['source']} ({example['question'][:40]}…)")
            if self.settings.leak_policy == "error":
                raise UserError(message + "; remove them, or use --leak_policy drop")
            logger.warning("%s: %s", message, "dropped" if self.settings.leak_policy == "drop" else
                           "KEPT (--leak_policy keep): open-book results on those items read the answer key")
        else:
            logger.info("%s: no passage copies any of %d validation/test items", what, report.items_checked)
        return record

    # ------------------------------------------------------------------ recording and reloading

    def record(self, output_dir=None) -> dict:
        """What the manifest, the run record and the card say; `settings` is the parsed dataclass as it was given.
        Local paths are relative to `output_dir` (the run folder), so nothing recorded or pushed holds an absolute
        local path; `from_record` resolves them."""
        settings = asdict(self.settings)
        source = dict(self.source)
        local = []
        if output_dir is not None:
            from ..core.provenance import relative_to

            for name in ("retrieval_corpus", "retrieval_contexts"):
                value = settings[name]
                if value and value != corpora.POOL and Path(value).exists():
                    settings[name] = relative_to(value, output_dir)
                    local.append(name)
            if source.get("path"):
                source["path"] = relative_to(source["path"], output_dir)
        s = self.settings
        return {"source": source, "k": s.retrieval_k, "query": s.retrieval_query, "terms": TERMS,
                "normalisation": NORMALISATION,
                "scoring": RETRIEVERS[s.retriever].scoring if self.index else "precomputed",
                "retriever": s.retriever, "leak_check": self.leak, "relative_paths": local, "settings": settings}

    @classmethod
    def from_record(cls, record: dict, run_dir=None) -> OpenBook:
        """The run's own retrieval, for evaluate and predict: the cached index, else the recorded corpus again
        (recorded local paths are relative to `run_dir`)."""
        given = {RECORDED_BEFORE.get(name, name): value for name, value in record["settings"].items()}
        given.setdefault("retriever", record.get("retriever", "bm25"))  # runs recorded before the registry: BM25
        for name in (RECORDED_BEFORE.get(n, n) for n in record.get("relative_paths", [])):
            if run_dir is not None and given.get(name):
                given[name] = str((Path(run_dir) / given[name]).resolve())
        settings = RetrievalArguments(**given)
        source = record.get("source", {})
        if settings.retrieval_contexts:
            return cls(settings, precomputed=corpora.read_precomputed(settings.retrieval_contexts), source=source)
        retriever = RETRIEVERS[settings.retriever]
        index, problem = retriever.cached(source)
        if index is not None:
            return cls(settings, index, source=source)
        if CORPUS_READERS[source.get("kind", "local")].read is _POOL_READER:
            raise UserError(f"the run's training-pool index cannot be used ({problem}): run the training command "
                            "again (it resumes from the finished run and rebuilds the index), or set HF_HOME to where "
                            "it was built")
        logger.warning("the run's %s index cannot be used (%s); rebuilding it from the recorded corpus",
                       retriever.name, problem)
        passages, _ = cls._read_corpus(settings, [], None)
        if "duplicates_removed" in source:  # a run recorded before duplicates were left out kept them
            passages, _ = corpora.unique_passages(passages)
        book = cls(settings, source=source)
        if corpora.content_hash(passages) != source.get("read_sha256"):
            raise UserError(f"the run's retrieval index is gone ({problem}) and "
                            f"--retrieval_corpus {settings.retrieval_corpus} "
                            "no longer hashes to what the run read: restore the cache (HF_HOME) or retrain")
        dropped = set(source.get("dropped_ids", []))  # what the run's leak check removed stays removed
        passages = [p for p in passages if p.id not in dropped]
        book.index = retriever.build(passages, source["content_sha256"])
        return book

    def describe(self) -> str:
        return (f"--retrieval_contexts {self.settings.retrieval_contexts}" if self.settings.retrieval_contexts
                else f"--retrieval_corpus {self.settings.retrieval_corpus}")

    def why_nothing_found(self, rows: list[QARow], context_check: dict | None) -> str:
        """The first reasons no question received a context, for the one-line refusal."""
        removed = (context_check or {}).get("contexts_removed", 0)
        if removed:
            return (f"the leak check removed all {removed} contexts that were found (each held a held-out item); "
                    "see --leak_policy")
        if self.precomputed is not None:
            matched = sum(r.id in self.precomputed for r in rows)
            if not matched:
                theirs = next(iter(self.precomputed), "none")
                return (f"its {len(self.precomputed)} ids match none of the data's question ids (it has e.g. "
                        f"{theirs!r}, the data {rows[0].id!r} if rows else 'no rows'); ids are "
                        "<subject>-<split>-<line>, as in the run's test_qa_data.json")
            return f"the {matched} questions it names have no passages"
        query = QUERIES[self.settings.retrieval_query]
        asked = sum(bool(c) for c in self.index.query_columns([query(r) for r in rows]))
        return (f"{asked} of {len(rows)} questions share a term with its {len(self.index.passages)} passages, and "
                "none of those scored above zero" if asked else
                f"no question shares a single term with its {len(self.index.passages)} passages (is it in another "
                "language or script?)")

    # ------------------------------------------------------------------ what the model reads

    def guard(self, rows: dict[str, list[QARow]], held_out: list[QARow], where: str) -> tuple[dict, dict]:
        """The leak check on what the model reads: every row's assembled context (its passages joined, so a
        question and answer split over two neighbouring passages count as one copy) against every held-out item.
        Under --leak_policy drop a leaking context is removed (that row is read closed-book), under error the
        run stops, under keep it stays; the record says where each leak was found. Returns the rows and it."""
        names = [(split, i) for split, part in rows.items() for i, r in enumerate(part) if r.context]
        texts = [rows[split][i].context for split, i in names]
        report = find_leaks(texts, held_out) if texts and held_out else None
        found = [{"item": item, "found_in": f"{split} {rows[split][i].id}"}
                 for c, items in sorted((report.leaking_passages if report else {}).items())
                 for split, i in [names[c]] for item in items]
        policy = self.settings.leak_policy
        record = {"unit": "assembled context", "policy": policy, "contexts_checked": len(texts),
                  "items_checked": len(held_out), "contexts_leaking": len(report.leaking_passages) if report else 0,
                  "items_with_a_copy_in_a_context": len(report.items_hit) if report else 0,
                  "contexts_removed": 0, "leaks": found[:20]}
        if not found:
            return rows, record
        first = found[0]
        message = (f"{where}: {record['contexts_leaking']} assembled context(s) hold {record['items_with_a_copy_in_a_context']} "
                   f"held-out item(s), e.g. item {first['item']} in the context of {first['found_in']}")
        if policy == "error":
            raise UserError(message + "; remove the passages, or use --leak_policy drop")
        if policy == "keep":
            logger.warning("%s: KEPT (--leak_policy keep): results on those items read the answer key", message)
            return rows, record
        leaking = {names[c] for c in report.leaking_passages}
        rows = {split: [replace(r, context=None) if (split, i) in leaking else r for i, r in enumerate(part)]
                for split, part in rows.items()}
        record["contexts_removed"] = len(leaking)
        logger.warning("%s: those contexts are removed (the rows are read without one)", message)
        return rows, record

    # ------------------------------------------------------------------ retrieving

    def attach(self, rows: list[QARow], leave_one_out: bool = False) -> tuple[list[QARow], list[dict]]:
        """Rows with their context, and per row the passages used (ids, scores) and whether the gold option's
        text is in the context."""
        if not rows:
            return [], []
        if self.precomputed is not None:
            found = [self.precomputed.get(r.id, [])[: self.settings.retrieval_k] for r in rows]
        else:
            queries = [QUERIES[self.settings.retrieval_query](r) for r in rows]
            hits = self.index.search(queries, self.settings.retrieval_k,
                                     [r.id for r in rows] if leave_one_out else None)
            found = [[{"id": self.index.passages[i].id, "text": self.index.passages[i].text, "score": round(s, 4)}
                      for i, s in row_hits] for row_hits in hits]
        out, records = [], []
        for row, passages in zip(rows, found):
            if row.context:  # a reading question's own passage (C3) is its context; nothing is retrieved for it
                passages = []
            context = row.context or SEPARATOR.join(p["text"] for p in passages)
            gold = normalise(row.options[row.label]) if row.label >= 0 else ""
            out.append(replace(row, context=context or None))
            records.append({"id": row.id, "passages": [{"id": p.get("id"), "score": p.get("score")} for p in passages],
                            "gold_in_context": bool(gold) and gold in normalise(context)})
        return out, records

"""Open book's settings: the flags of `run_qa.py` as one dataclass, which is also what the retrieval code reads
and what a run records (`OpenBook.record`), so one setting has one home."""

from __future__ import annotations

from dataclasses import dataclass, field

from .leak import POLICIES
from .registries import RETRIEVERS

QUERIES = {
    "question": lambda row: row.question,
    "question_options": lambda row: " ".join([row.question, *row.options]),
}
# The names runs recorded before the settings were the parsed dataclass itself.
RECORDED_BEFORE = {"corpus": "retrieval_corpus", "contexts": "retrieval_contexts", "config": "retrieval_corpus_config",
                   "revision": "retrieval_corpus_revision", "split": "retrieval_corpus_split",
                   "text_column": "retrieval_text_column", "k": "retrieval_k", "query": "retrieval_query"}


@dataclass
class RetrievalArguments:
    """Open book: passages retrieved for each question go into the context segment of its input, the same way
    at training, evaluation and predict time."""

    retrieval_corpus: str | None = field(default=None, metadata={
        "help": "Where passages come from: a local folder or file (.txt/.md, or JSONL/CSV/parquet with a text "
                "column), a hub dataset id (e.g. wikimedia/wikipedia with --retrieval_corpus_config 20231101.zh), "
                "or `training_pool` (similar training questions with their answers, leave-one-out). Every passage "
                "is checked against every validation and test item first (--leak_policy)."})
    retrieval_contexts: str | None = field(default=None, metadata={
        "help": "Precomputed contexts instead of a corpus: JSONL of {\"id\": item id, \"passages\": [{\"id\", "
                "\"text\", \"score\"}]}, retrieved with any engine (Elasticsearch, pyserini)."})
    retrieval_corpus_config: str | None = field(default=None, metadata={"help": "The hub corpus's config."})
    retrieval_corpus_revision: str | None = field(default=None, metadata={
        "help": "The hub corpus's revision (resolved to its commit and recorded)."})
    retrieval_corpus_split: str = field(default="train", metadata={"help": "The hub corpus's split."})
    retrieval_text_column: str = field(default="text", metadata={"help": "The text column of a table corpus."})
    retrieval_k: int = field(default=5, metadata={"help": "Passages per question."})
    retrieval_query: str = field(default="question_options", metadata={
        "help": "What is searched for: `question_options` (question and all options) or `question`.",
        "choices": list(QUERIES)})
    passage_chars: int = field(default=200, metadata={"help": "Corpus texts are split into passages of this many "
                                                              "characters..."})
    passage_overlap: int = field(default=50, metadata={"help": "...overlapping by this many."})
    retriever: str = field(default="bm25", metadata={
        "help": "How passages are found (hf_ft.retrieval.registries.RETRIEVERS): bm25 over OpenCC-normalised "
                "character bigrams.", "choices": list(RETRIEVERS)})
    leak_policy: str = field(default="drop", metadata={
        "help": "A passage that copies a validation or test item: `drop` it (recorded), stop with an `error`, or "
                "`keep` it (recorded; its items' open-book results read the answer key).",
        "choices": ["drop", "error", "keep"]})

    @property
    def used(self) -> bool:
        return bool(self.retrieval_corpus or self.retrieval_contexts)

    def problems(self) -> list[str]:
        out = []
        if self.retrieval_corpus and self.retrieval_contexts:
            out.append("--retrieval_corpus and --retrieval_contexts: give one (a corpus to search, or contexts "
                       "retrieved elsewhere)")
        if self.passage_overlap >= self.passage_chars:  # the ranges are rules (hf_ft/arguments.py); this relates two
            out.append(f"--passage_overlap {self.passage_overlap}: need less than --passage_chars {self.passage_chars}")
        if self.retrieval_query not in QUERIES:
            out.append(f"--retrieval_query {self.retrieval_query}: choose {' or '.join(QUERIES)}")
        if self.leak_policy not in POLICIES:
            out.append(f"--leak_policy {self.leak_policy}: choose {', '.join(POLICIES)}")
        if self.retriever not in RETRIEVERS:
            out.append(f"--retriever {self.retriever}: unknown; available: {', '.join(RETRIEVERS)}")
        return out

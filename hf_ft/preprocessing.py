"""Rows → tokenized `datasets.Dataset`s for each formulation, and the collators that batch them.

Nothing is padded here: batches are padded by the collators to their own longest sequence, and a
`length` column lets the Trainer group similar lengths (`train_sampling_strategy=group_by_length`).
Tokenization is batched and cached by `datasets` under a fingerprint of the rows and the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from .data import QARow

logger = logging.getLogger(__name__)

MLM_ANSWER_PREFIX = "答案："
# A joint model scores each question in this many rotated option orders at evaluation (see merge_rotations).
JOINT_EVAL_ROTATIONS = 4


def rows_to_dataset(rows: list[QARow]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "id": [r.id for r in rows],
        "subject": [r.subject for r in rows],
        "question": [r.question for r in rows],
        "options": [list(r.options) for r in rows],
        "label": [r.label for r in rows],
    })


def _lengths(encodings) -> list[int]:
    return [len(ids) for ids in encodings["input_ids"]]


def _regroup(flat: list, counts: list[int]) -> list[list]:
    out, start = [], 0
    for n in counts:
        out.append(flat[start:start + n])
        start += n
    return out


@dataclass(frozen=True)
class PairTemplate:
    """The special tokens around a (first, second) pair, read off the tokenizer itself:
    BERT `[CLS] a [SEP] b [SEP]`, RoBERTa `<s> a </s></s> b </s>`, with their token types."""

    prefix: tuple
    middle: tuple
    suffix: tuple
    types: tuple | None  # (prefix, first, middle, second, suffix) token type ids, None if not used

    @classmethod
    def of(cls, tokenizer) -> PairTemplate | None:
        unk = tokenizer.unk_token
        if unk is None or tokenizer.unk_token_id is None:
            return None
        enc = tokenizer(unk, unk)
        ids = enc["input_ids"]
        where = [i for i, t in enumerate(ids) if t == tokenizer.unk_token_id]
        if len(where) != 2:
            return None
        a, b = where
        types = None
        if "token_type_ids" in enc:
            tt = enc["token_type_ids"]
            types = (tuple(tt[:a]), tt[a], tuple(tt[a + 1:b]), tt[b], tuple(tt[b + 1:]))
        return cls(tuple(ids[:a]), tuple(ids[a + 1:b]), tuple(ids[b + 1:]), types)

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def build(self, first: list[int], second: list[int]) -> dict:
        out = {"input_ids": [*self.prefix, *first, *self.middle, *second, *self.suffix]}
        if self.types is not None:
            p, f, m, s, x = self.types
            out["token_type_ids"] = [*p, *([f] * len(first)), *m, *([s] * len(second)), *x]
        return out


def encode_per_choice(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """One (question, option) pair per option; only the question is ever truncated.

    Each question and each option is tokenized once (not once per pair) and the pairs are assembled
    with the tokenizer's own special-token template; the result equals
    `tokenizer(question, option, truncation="only_first", max_length=max_length)` (tests check this).
    Attention masks are left to the collator, which creates them while padding.
    """
    counts = [len(options) for options in batch["options"]]
    questions = tokenizer(batch["question"], add_special_tokens=False)["input_ids"]
    flat_options = [option for options in batch["options"] for option in options]
    options = _regroup(tokenizer(flat_options, add_special_tokens=False)["input_ids"], counts)
    template = PairTemplate.of(tokenizer)
    if template is None:  # a tokenizer without a usable template: let it build the pairs itself
        return _encode_per_choice_by_pairs(batch, tokenizer, max_length, questions, options, counts)
    out = {"input_ids": [], "length": [], "truncated": []}
    if template.types is not None:
        out["token_type_ids"] = []
    for q, opts in zip(questions, options):
        choices = [template.build(q[: max(0, max_length - template.specials - len(o))], o) for o in opts]
        for key in ("input_ids", "token_type_ids"):
            if key in out:
                out[key].append([c[key] for c in choices])
        out["length"].append(max(len(c["input_ids"]) for c in choices))
        out["truncated"].append(any(len(q) + len(o) + template.specials > max_length for o in opts))
    out["labels"] = batch["label"]
    return out


def _encode_per_choice_by_pairs(batch, tokenizer, max_length, questions, options, counts) -> dict:
    firsts = [q for q, n in zip(batch["question"], counts) for _ in range(n)]
    seconds = [option for opts in batch["options"] for option in opts]
    enc = tokenizer(firsts, seconds, truncation="only_first", max_length=max_length)
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    out = {key: _regroup(values, counts) for key, values in enc.items() if key != "attention_mask"}
    out["length"] = [max(len(ids) for ids in choices) for choices in out["input_ids"]]
    out["truncated"] = [any(len(q) + len(o) + specials > max_length for o in opts)
                        for q, opts in zip(questions, options)]
    out["labels"] = batch["label"]
    return out


def option_markers(tokenizer, n_options: int) -> list[list[int]]:
    """Token ids of the slot letters "A", "B", ... that precede each option in the joint sequence."""
    return tokenizer([chr(ord("A") + j) for j in range(n_options)], add_special_tokens=False)["input_ids"]


def joint_overhead(tokenizer, n_options: int) -> int:
    """Tokens the joint sequence adds around the text: [CLS], [SEP] after the question and after each
    option, and each option's slot letter."""
    return 2 + n_options + sum(map(len, option_markers(tokenizer, n_options)))


def encode_joint(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """Token ids of the question and of each option, kept apart so the collator can reorder options."""
    counts = [len(options) for options in batch["options"]]
    question_ids = tokenizer(batch["question"], add_special_tokens=False)["input_ids"]
    flat = tokenizer([o for options in batch["options"] for o in options], add_special_tokens=False)["input_ids"]
    out_q, out_o, truncated, length = [], [], [], []
    overhead = {n: joint_overhead(tokenizer, n) for n in set(counts)}
    for q, opts in zip(question_ids, _regroup(flat, counts)):
        budget = max_length - overhead[len(opts)]
        if sum(map(len, opts)) > budget:  # options alone overflow: share the space evenly, question gets none
            opts = [o[: budget // len(opts)] for o in opts]
        room = budget - sum(map(len, opts))
        truncated.append(len(q) > room)
        q = q[:room]
        out_q.append(q)
        out_o.append(opts)
        length.append(len(q) + sum(map(len, opts)) + overhead[len(opts)])
    return {"question_ids": out_q, "option_ids": out_o, "labels": batch["label"], "length": length,
            "truncated": truncated}


def encode_mlm(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """Question followed by its correct answer: the text masked-LM adaptation learns from."""
    texts = [f"{q}{MLM_ANSWER_PREFIX}{options[label]}"
             for q, options, label in zip(batch["question"], batch["options"], batch["label"])]
    full = _lengths(tokenizer(texts))
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return {**enc, "length": _lengths(enc), "truncated": [f > max_length for f in full]}


ENCODERS = {"per_choice": encode_per_choice, "joint": encode_joint, "mlm": encode_mlm}


def _fingerprint(rows: list[QARow], tokenizer, formulation: str, max_length: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([formulation, max_length, tokenizer.name_or_path, len(tokenizer),
                         type(tokenizer).__name__, 4]).encode())
    h.update(datasets.fingerprint.Hasher.hash(tokenizer.get_vocab()).encode())
    for r in rows:
        h.update(f"{r.id}\x1f{r.subject}\x1f{r.content_hash}\x1f{r.label}\x1f{len(r.options)}\n".encode())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    return Path(os.environ.get("HF_DATASETS_CACHE", Path.home() / ".cache" / "huggingface" / "datasets")) / "hf_ft"


def encode(rows: list[QARow], tokenizer: PreTrainedTokenizerBase, formulation: str, max_length: int,
           cache_dir: str | os.PathLike | None = None, num_proc: int | None = None,
           sort_by_length: bool = False, progress: bool = True, drop_question: bool = False) -> datasets.Dataset:
    """Tokenize rows for `formulation` (per_choice/joint/mlm); cached on disk by content. `drop_question`
    leaves the question out (a choices-only baseline)."""
    if drop_question:
        rows = [replace(r, question="") for r in rows]
    if not rows:
        return datasets.Dataset.from_dict({"id": [], "subject": [], "labels": [], "length": []})
    fingerprint = _fingerprint(rows, tokenizer, formulation, max_length)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if not progress:
        datasets.disable_progress_bars()
    try:
        encoded = rows_to_dataset(rows).map(
            ENCODERS[formulation],
            batched=True,
            batch_size=1000,
            fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
            remove_columns=["question", "options", "label"],
            num_proc=num_proc,
            cache_file_name=str(cache / f"{formulation}-{fingerprint}.arrow"),
            new_fingerprint=fingerprint,
            desc=f"Tokenizing ({formulation})",
        )
        if sort_by_length:
            with warnings.catch_warnings():  # a pyarrow deprecation inside datasets' sort
                warnings.simplefilter("ignore", FutureWarning)
                encoded = encoded.sort("length")
    finally:
        if not progress:
            datasets.enable_progress_bars()
    return encoded


def count_truncated(dataset: datasets.Dataset) -> int:
    return int(sum(dataset["truncated"])) if "truncated" in dataset.column_names and len(dataset) else 0


MIN_QUESTION_TOKENS = 8


def required_length(rows: list[QARow], tokenizer, formulation: str) -> tuple[int, QARow | None]:
    """The shortest max_seq_length that fits every row's options (never truncated) with a question of at least
    MIN_QUESTION_TOKENS tokens and the special tokens, and the row that needs it."""
    if formulation == "mlm" or not rows:
        return 0, None
    flat = tokenizer([o for row in rows for o in row.options], add_special_tokens=False)["input_ids"]
    per_row = _regroup([len(ids) for ids in flat], [len(row.options) for row in rows])
    need, worst = 0, None
    for row, lengths in zip(rows, per_row):
        if formulation == "joint":
            total = sum(lengths) + joint_overhead(tokenizer, len(lengths))
        else:
            total = max(lengths) + tokenizer.num_special_tokens_to_add(pair=True)
        if total + MIN_QUESTION_TOKENS > need:
            need, worst = total + MIN_QUESTION_TOKENS, row
    return need, worst

"""Rows → tokenized `datasets.Dataset`s for each formulation, and the collators that batch them.

The encoders are pure functions, one per formulation; `formulations` registers them and runs them
(cached) over datasets. Nothing is padded here: batches are padded by the collators to their own longest sequence, and a
`length` column lets the Trainer group similar lengths (`train_sampling_strategy=group_by_length`).
Tokenization is batched and cached by `datasets` under a fingerprint of the rows and the tokenizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets
from transformers import PreTrainedTokenizerBase

from ..core.errors import UserError
from ..data.rows import QARow

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
        "context": [r.context or "" for r in rows],
        "label": [r.label for r in rows],
    })


def _contexts(batch: dict, tokenizer) -> list[list[int]]:
    """Token ids of each row's context (empty for a closed-book row)."""
    texts = batch.get("context") or [""] * len(batch["question"])
    if not any(texts):
        return [[] for _ in texts]
    return tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]


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

    def build(self, first: list[int], second: list[int], context: list[int] = ()) -> dict:
        """`prefix first middle second suffix`, and `context suffix` after it when there is a context
        (typed like the second segment): question and option keep the positions they have closed-book."""
        tail = [*context, *self.suffix] if context else []
        out = {"input_ids": [*self.prefix, *first, *self.middle, *second, *self.suffix, *tail]}
        if self.types is not None:
            p, f, m, s, x = self.types
            out["token_type_ids"] = [*p, *([f] * len(first)), *m, *([s] * len(second)), *x,
                                     *([s] * len(context)), *(x if context else ())]
        return out


def encode_per_choice(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """One (question, option[, context]) sequence per option. Options are never cut; the context is cut
    first (to the same length for every option, so options compete on the same evidence), the question
    only when no context is left.

    Each question, option and context is tokenized once (not once per pair) and the pairs are assembled
    with the tokenizer's own special-token template; without a context the result equals
    `tokenizer(question, option, truncation="only_first", max_length=max_length)` (tests check this).
    Attention masks are left to the collator, which creates them while padding.
    """
    counts = [len(options) for options in batch["options"]]
    questions = tokenizer(batch["question"], add_special_tokens=False)["input_ids"]
    flat_options = [option for options in batch["options"] for option in options]
    options = _regroup(tokenizer(flat_options, add_special_tokens=False)["input_ids"], counts)
    contexts = _contexts(batch, tokenizer)
    template = PairTemplate.of(tokenizer)
    if template is None:  # a tokenizer without a usable template: let it build the pairs itself
        if any(contexts):
            raise UserError(f"{tokenizer.name_or_path}: its tokenizer has no pair template to place a context in")
        return _encode_per_choice_by_pairs(batch, tokenizer, max_length, questions, options, counts)
    out = {"input_ids": [], "length": [], "truncated": [], "context_truncated": [], "context_tokens": []}
    if template.types is not None:
        out["token_type_ids"] = []
    for q, opts, ctx in zip(questions, options, contexts):
        room = max_length - template.specials - max(map(len, opts))
        kept = ctx[: max(0, room - len(q) - len(template.suffix))] if ctx else []
        choices = [template.build(q[: max(0, max_length - template.specials - len(o))], o, kept) for o in opts]
        for key in ("input_ids", "token_type_ids"):
            if key in out:
                out[key].append([c[key] for c in choices])
        out["length"].append(max(len(c["input_ids"]) for c in choices))
        out["truncated"].append(any(len(q) + len(o) + template.specials > max_length for o in opts))
        out["context_truncated"].append(len(kept) < len(ctx))
        out["context_tokens"].append(len(kept))
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
    out["context_truncated"] = [False] * len(questions)
    out["context_tokens"] = [0] * len(questions)
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
    """Token ids of the question, of each option and of the context, kept apart so the collator can
    reorder options. The context (once, after the options) is cut first, then the question; options only
    when they alone overflow."""
    counts = [len(options) for options in batch["options"]]
    question_ids = tokenizer(batch["question"], add_special_tokens=False)["input_ids"]
    flat = tokenizer([o for options in batch["options"] for o in options], add_special_tokens=False)["input_ids"]
    contexts = _contexts(batch, tokenizer)
    out = {"question_ids": [], "option_ids": [], "context_ids": [], "labels": batch["label"], "length": [],
           "truncated": [], "context_truncated": [], "context_tokens": []}
    overhead = {n: joint_overhead(tokenizer, n) for n in set(counts)}
    for q, opts, ctx in zip(question_ids, _regroup(flat, counts), contexts):
        budget = max_length - overhead[len(opts)]
        if sum(map(len, opts)) > budget:  # options alone overflow: share the space evenly, question gets none
            opts = [o[: budget // len(opts)] for o in opts]
        room = budget - sum(map(len, opts))
        out["truncated"].append(len(q) > room)
        q = q[:room]
        kept = ctx[: max(0, room - len(q) - 1)] if ctx else []  # 1: the [SEP] that closes the context
        out["question_ids"].append(q)
        out["option_ids"].append(opts)
        out["context_ids"].append(kept)
        out["context_truncated"].append(len(kept) < len(ctx))
        out["context_tokens"].append(len(kept))
        out["length"].append(len(q) + sum(map(len, opts)) + overhead[len(opts)] + (len(kept) + 1 if kept else 0))
    return out


def mlm_option_sequence(tokenizer, question: str, option: str, max_length: int,
                        context: str | None = None) -> tuple[list[int], int, int]:
    """`[CLS] question 答案： option [SEP] (context [SEP])` and the option's token span: the text the mlm
    formulation trains on (with the gold option) and the masked-LM scorers score (with each option).
    The context is cut first, then the question from its start (keeping the words next to the answer)."""
    q = tokenizer(question + MLM_ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    o = tokenizer(option, add_special_tokens=False)["input_ids"][: max_length - 3] or [tokenizer.unk_token_id]
    q = q[-(max_length - 2 - len(o)):] if len(q) > max_length - 2 - len(o) else q
    ids = [tokenizer.cls_token_id, *q, *o, tokenizer.sep_token_id]
    if context:
        kept = tokenizer(context, add_special_tokens=False)["input_ids"][: max(0, max_length - len(ids) - 1)]
        if kept:
            ids += [*kept, tokenizer.sep_token_id]
    start = 1 + len(q)
    return ids, start, start + len(o)


def encode_mlm(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """Question followed by its correct answer (and the context): the text masked-LM adaptation learns from."""
    contexts = batch.get("context") or [""] * len(batch["question"])
    out = {"input_ids": [], "length": [], "truncated": [], "context_truncated": [], "context_tokens": []}
    for q, options, label, ctx in zip(batch["question"], batch["options"], batch["label"], contexts):
        ids, _, _ = mlm_option_sequence(tokenizer, q, options[label], max_length, ctx)
        full = len(tokenizer(q + MLM_ANSWER_PREFIX + options[label], add_special_tokens=False)["input_ids"]) + 2
        with_context = len(tokenizer(ctx, add_special_tokens=False)["input_ids"]) + 1 if ctx else 0
        out["input_ids"].append(ids)
        out["length"].append(len(ids))
        out["truncated"].append(full > max_length)
        out["context_truncated"].append(full + with_context > len(ids) and bool(ctx))
        out["context_tokens"].append(max(0, len(ids) - full - 1) if ctx else 0)
    if "token_type_ids" in tokenizer.model_input_names:
        out["token_type_ids"] = [[0] * len(ids) for ids in out["input_ids"]]
    return out


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


def length_problem(rows: list[QARow], tokenizer, formulation: str, limits: dict[str, int]) -> str | None:
    """A row whose options cannot fit the shortest of `limits` ({what sets it: tokens}, e.g. --max_seq_length,
    the tokenizer's model_max_length, the model's max_position_embeddings): options are never truncated, so the
    model would get a sequence longer than its positions (a tensor-size error deep in the forward pass)."""
    need, row = required_length(rows, tokenizer, formulation)
    what, limit = min(limits.items(), key=lambda item: item[1])
    if need <= limit:
        return None
    where = f"{row.source}:{row.line}" if row.source else "the question given"
    return (f"{what} {limit}: too short for the options of {where} ({need} tokens with a question of "
            f"{MIN_QUESTION_TOKENS} and the special tokens; options are never truncated)" +
            (f"; use {need} or more" if what.startswith("--") else "; shorten that option"))

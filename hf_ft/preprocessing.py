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
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, DataCollatorForMultipleChoice, PreTrainedTokenizerBase

from .data import QARow

logger = logging.getLogger(__name__)

MLM_ANSWER_PREFIX = "答案："


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


def encode_per_choice(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """One (question, option) pair per option; only the question is ever truncated."""
    counts = [len(options) for options in batch["options"]]
    firsts = [q for q, n in zip(batch["question"], counts) for _ in range(n)]
    seconds = [option for options in batch["options"] for option in options]
    enc = tokenizer(firsts, seconds, truncation="only_first", max_length=max_length)
    question_lengths = _lengths(tokenizer(batch["question"], add_special_tokens=False))
    option_lengths = _regroup(_lengths(tokenizer(seconds, add_special_tokens=False)), counts)
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    out = {key: _regroup(values, counts) for key, values in enc.items()}
    out["length"] = [max(len(ids) for ids in choices) for choices in out["input_ids"]]
    out["truncated"] = [any(q + o + specials > max_length for o in opts)
                        for q, opts in zip(question_lengths, option_lengths)]
    out["labels"] = batch["label"]
    return out


def joint_special_tokens(n_options: int) -> int:
    return 2 + n_options  # [CLS] q [SEP] A [SEP] B [SEP] ...


def encode_joint(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """Token ids of the question and of each option, kept apart so the collator can reorder options."""
    counts = [len(options) for options in batch["options"]]
    question_ids = tokenizer(batch["question"], add_special_tokens=False)["input_ids"]
    flat = tokenizer([o for options in batch["options"] for o in options], add_special_tokens=False)["input_ids"]
    out_q, out_o, truncated, length = [], [], [], []
    for q, opts in zip(question_ids, _regroup(flat, counts)):
        budget = max_length - joint_special_tokens(len(opts))
        if sum(map(len, opts)) > budget:  # options alone overflow: share the space evenly, question gets none
            opts = [o[: budget // len(opts)] for o in opts]
        room = budget - sum(map(len, opts))
        truncated.append(len(q) > room)
        q = q[:room]
        out_q.append(q)
        out_o.append(opts)
        length.append(len(q) + sum(map(len, opts)) + joint_special_tokens(len(opts)))
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
                         type(tokenizer).__name__, 2]).encode())
    h.update(datasets.fingerprint.Hasher.hash(tokenizer.get_vocab()).encode())
    for r in rows:
        h.update(f"{r.id}\x1f{r.subject}\x1f{r.content_hash}\x1f{r.label}\x1f{len(r.options)}\n".encode())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    return Path(os.environ.get("HF_DATASETS_CACHE", Path.home() / ".cache" / "huggingface" / "datasets")) / "hf_ft"


def encode(rows: list[QARow], tokenizer: PreTrainedTokenizerBase, formulation: str, max_length: int,
           cache_dir: str | os.PathLike | None = None, num_proc: int | None = None,
           sort_by_length: bool = False, progress: bool = True) -> datasets.Dataset:
    """Tokenize rows for `formulation` (per_choice/joint/mlm); cached on disk by content."""
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


# ----------------------------------------------------------------------------------------------
# Collators: they read only the model inputs from each feature (extra columns such as `length`
# and `subject` stay in the dataset for the sampler and the metrics).


def _model_inputs(tokenizer) -> list[str]:
    return list(tokenizer.model_input_names)


@dataclass
class MultipleChoiceCollator:
    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        self._collate = DataCollatorForMultipleChoice(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)
        self._keys = [k for k in _model_inputs(self.tokenizer)] + ["labels"]

    def __call__(self, features: list[dict]) -> dict:
        return self._collate([{k: f[k] for k in self._keys if k in f} for f in features])


@dataclass
class JointCollator:
    """Builds `[CLS] q [SEP] A [SEP] B [SEP] C [SEP] D [SEP]`; with `shuffle_options` the option order
    is permuted per example (and the label follows the gold option), so position cannot be learned."""

    tokenizer: PreTrainedTokenizerBase
    shuffle_options: bool = False
    seed: int = 0
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)
        self._with_types = "token_type_ids" in self.tokenizer.model_input_names

    def build(self, question_ids, option_ids, order=None) -> dict:
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        ids = [cls, *question_ids, sep]
        types = [0] * len(ids)
        for j in range(len(option_ids)) if order is None else order:
            ids += [*option_ids[j], sep]
        types += [1] * (len(ids) - len(types))
        return {"input_ids": ids, "token_type_ids": types}

    def __call__(self, features: list[dict]) -> dict:
        examples, labels = [], []
        for f in features:
            n = len(f["option_ids"])
            order = self._rng.permutation(n) if self.shuffle_options else np.arange(n)
            examples.append(self.build(f["question_ids"], f["option_ids"], order))
            labels.append(int(np.nonzero(order == f["labels"])[0][0]) if f["labels"] >= 0 else -100)
        batch = self.tokenizer.pad(examples, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                   return_tensors="pt")
        if not self._with_types:
            batch.pop("token_type_ids", None)
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


@dataclass
class MaskedLMCollator:
    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = 0.15
    seed: int | None = None

    def __post_init__(self):
        self._collate = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.mlm_probability,
                                                        seed=self.seed)
        self._keys = _model_inputs(self.tokenizer)

    def __call__(self, features: list[dict]) -> dict:
        return self._collate([{k: f[k] for k in self._keys if k in f} for f in features])


def make_collator(formulation: str, tokenizer, *, train: bool, seed: int = 0, mlm_probability: float = 0.15,
                  pad_to_multiple_of: int | None = None):
    if formulation == "per_choice":
        return MultipleChoiceCollator(tokenizer, pad_to_multiple_of)
    if formulation == "joint":
        return JointCollator(tokenizer, shuffle_options=train, seed=seed, pad_to_multiple_of=pad_to_multiple_of)
    if formulation == "mlm":
        return MaskedLMCollator(tokenizer, mlm_probability, seed)
    raise ValueError(f"unknown formulation {formulation}")

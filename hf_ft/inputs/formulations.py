"""The formulations, registered in one place: how a row becomes model inputs, and everything that depends on it.

A formulation is one entry of `FORMULATIONS`: its transformers Auto class, its encoder (rows → token columns,
in `preprocessing`), its collator (token columns → tensors, in `collators`), whether it has a head that
scores options, how many sequences one item costs, and the plain-transformers code the model card shows.
Training, the scorers, predict, the audit and the card all reach a formulation through `get_formulation`,
and `model_inputs` is the one function that turns rows into the batch a model reads. Adding a
formulation means one `register(...)` here and its tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import datasets
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerBase,
)

from ..core.registry import Registry
from ..data.rows import LETTERS, QARow
from .collators import JointCollator, MaskedLMCollator, MultipleChoiceCollator
from .preprocessing import encode_joint, encode_mlm, encode_per_choice, rows_to_dataset

# How a per_choice model reads a question (preprocessing.encode_per_choice) in plain transformers: the card
# shows it, and tests run it against hf_ft's own inputs.
PER_CHOICE_USAGE = '''import torch
from transformers import AutoModelForMultipleChoice, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForMultipleChoice.from_pretrained("{repo_id}").eval()
question, options = "下列何者為哺乳類？", ["鯨魚", "鯊魚", "章魚", "海星"]
context = ""  # open book: the retrieved passages, joined (a model trained closed-book: leave it empty)
# [CLS] question [SEP] option [SEP] (context [SEP]), one sequence per option
seconds = [option + (tokenizer.sep_token + context if context else "") for option in options]
enc = tokenizer([question] * len(options), seconds, return_tensors="pt", padding=True)
with torch.no_grad():
    logits = model(**{{k: v.unsqueeze(0) for k, v in enc.items()}}).logits
print("ABCD"[logits.argmax().item()], logits.softmax(-1))'''
# How a joint model reads a question (collators.JointCollator) and how hf_ft merges rotations (merge_rotations).
JOINT_USAGE = '''import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForSequenceClassification.from_pretrained("{repo_id}").eval()
question, options = "下列何者為哺乳類？", ["鯨魚", "鯊魚", "章魚", "海星"]
context = ""  # open book: the retrieved passages, joined (a model trained closed-book: leave it empty)
# One sequence: [CLS] question [SEP] A option [SEP] B option [SEP] C option [SEP] D option [SEP] (context [SEP]),
# scored in `rotations` rotated option orders; each option's log-probability is averaged over its slots.
rotations = {rotations}  # as hf_ft evaluated this model (--joint_eval_rotations); 1: one pass
pieces = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
n = len(options)
shifts = [r * n // min(rotations, n) for r in range(min(rotations, n))]
scores = torch.zeros(n)
for shift in shifts:
    order = [(slot - shift) % n for slot in range(n)]  # which option sits in each slot
    ids = [tokenizer.cls_token_id, *pieces(question), tokenizer.sep_token_id]
    first = len(ids)
    for slot, option in enumerate(order):
        ids += [*pieces("ABCDEFGHIJ"[slot]), *pieces(options[option]), tokenizer.sep_token_id]
    if context:
        ids += [*pieces(context), tokenizer.sep_token_id]
    inputs = {{"input_ids": torch.tensor([ids])}}
    if "token_type_ids" in tokenizer.model_input_names:
        inputs["token_type_ids"] = torch.tensor([[0] * first + [1] * (len(ids) - first)])
    with torch.no_grad():
        log_probs = model(**inputs).logits[0].log_softmax(-1)
    scores += log_probs[[(option + shift) % n for option in range(n)]] / len(shifts)
print("ABCD"[scores.argmax().item()], scores.softmax(-1))'''
MLM_USAGE = '''from transformers import AutoModelForMaskedLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForMaskedLM.from_pretrained("{repo_id}")'''


@dataclass(frozen=True)
class Formulation:
    """Everything the rest of hf_ft asks of a formulation: other modules read these fields, never its name."""

    name: str
    auto_class: type  # the transformers Auto class of its model
    pipeline_tag: str
    encode: Callable  # batched rows → token columns (datasets.map), see preprocessing
    collator: Callable  # (tokenizer, train, seed, ...) → collator; token columns → tensors
    scores_options: bool  # a trained head scores the options: accuracy is its metric, "head" its scorer
    copies: Callable[[int, int], int]  # sequences one item costs: (options, rotations) → n
    usage: str  # the card's plain-transformers code; {repo_id}, {rotations}
    kind: str  # how the card names such a model
    architectures: tuple[str, ...] = ()  # checkpoint architectures (name endings) it recognises as its own
    labels: int | None = None  # a head with one output per option slot: its width (its config is set to it)
    order_invariant: bool = True  # each option scored on its own, so their order cannot change a prediction
    rotations_flags: tuple[str, ...] = ()  # the settings of its rotated copies (training, evaluation), recorded
    vocabulary_head: bool = False  # predicts over the vocabulary (memory: a vocab-wide logits tensor)
    options_column: str | None = None  # the tokenized column whose length is the option count

    def configure(self, config) -> None:
        """Set a loaded config up for this formulation's head (and record the formulation in it)."""
        if self.labels:
            config.num_labels = self.labels
            config.id2label = dict(enumerate(LETTERS[: self.labels]))
            config.label2id = {letter: i for i, letter in enumerate(LETTERS[: self.labels])}
        config.hf_ft_formulation = self.name

    def recognises(self, config) -> bool:
        """Whether a checkpoint's config is one of this formulation's (a config hf_ft wrote says so itself)."""
        return any(arch.endswith(self.architectures) and (not self.labels or getattr(config, "num_labels", 0) ==
                                                          self.labels)
                   for arch in getattr(config, "architectures", None) or [])

    def options_of(self, example: dict) -> int:
        """How many options a tokenized example has (1 for a formulation without options)."""
        return len(example[self.options_column]) if self.options_column else 1

    def rotations(self, settings) -> tuple[int, int]:
        """(training, evaluation) rotated copies of each item under `settings` (the data arguments)."""
        return tuple(getattr(settings, flag) for flag in self.rotations_flags) if self.rotations_flags else (1, 1)

    def sequences(self, options: int, settings) -> tuple[int, int]:
        """Sequences one item costs in a training batch and in an evaluation batch."""
        if self.rotations_flags:
            return tuple(min(r, options) for r in self.rotations(settings))
        return self.copies(options, 1), self.copies(options, 1)


FORMULATIONS: Registry[Formulation] = Registry("formulation", "--formulation")
register = FORMULATIONS.register


def get_formulation(name: str) -> Formulation:
    return FORMULATIONS[name]


def _joint_collator(tokenizer, train, seed=0, pad_to_multiple_of=None, joint_rotations=1, joint_eval_rotations=1,
                    **_):
    return JointCollator(tokenizer, shuffle_options=train, seed=seed, pad_to_multiple_of=pad_to_multiple_of,
                         rotations=joint_rotations if train else joint_eval_rotations)


register(Formulation(
    "per_choice", AutoModelForMultipleChoice, "multiple-choice", encode_per_choice,
    lambda tokenizer, train, pad_to_multiple_of=None, **_: MultipleChoiceCollator(tokenizer, pad_to_multiple_of),
    scores_options=True, copies=lambda options, rotations: options, usage=PER_CHOICE_USAGE,
    kind="a per_choice multiple-choice model", architectures=("ForMultipleChoice",), options_column="input_ids"))
register(Formulation(
    "joint", AutoModelForSequenceClassification, "text-classification", encode_joint, _joint_collator,
    scores_options=True, copies=lambda options, rotations: rotations, usage=JOINT_USAGE,
    kind="a joint multiple-choice model", architectures=("ForSequenceClassification",), labels=len(LETTERS),
    order_invariant=False, rotations_flags=("joint_rotations", "joint_eval_rotations"), options_column="option_ids"))
register(Formulation(
    "mlm", AutoModelForMaskedLM, "fill-mask", encode_mlm,
    lambda tokenizer, train, seed=0, mlm_probability=0.15, pad_to_multiple_of=None, **_: MaskedLMCollator(
        tokenizer, mlm_probability, seed, pad_to_multiple_of=pad_to_multiple_of),
    scores_options=False, copies=lambda options, rotations: options, usage=MLM_USAGE,
    kind="a masked-LM domain adaptation", architectures=("ForMaskedLM", "ForPreTraining"), vocabulary_head=True))


COLLATOR_SETTINGS = {"seed", "mlm_probability", "pad_to_multiple_of", "joint_rotations", "joint_eval_rotations"}


def make_collator(formulation: str, tokenizer, *, train: bool, **settings):
    """The collator of `formulation`; `settings`: seed, mlm_probability, pad_to_multiple_of, joint_rotations,
    joint_eval_rotations (each formulation reads the ones it uses; a setting none of them knows is a bug here)."""
    unknown = set(settings) - COLLATOR_SETTINGS
    if unknown:
        raise TypeError(f"make_collator: unknown setting(s) {', '.join(sorted(unknown))}")
    return get_formulation(formulation).collator(tokenizer, train, **settings)


def model_inputs(rows, tokenizer, formulation: str, max_length: int, **settings) -> dict:
    """Rows → the evaluation batch a `formulation` model reads: the one path from a row to model inputs
    (training maps the same encoder over its datasets and batches with the same collator)."""
    encoded = get_formulation(formulation).encode(rows_to_dataset(rows)[:], tokenizer, max_length)
    keys = [k for k in encoded if k not in ("length", "truncated", "context_truncated", "context_tokens")]
    features = [{**{k: encoded[k][i] for k in keys}, "id": rows[i].id} for i in range(len(rows))]
    return make_collator(formulation, tokenizer, train=False, **settings)(features)


def _fingerprint(rows: list[QARow], tokenizer, formulation: str, max_length: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([formulation, max_length, tokenizer.name_or_path, len(tokenizer),
                         type(tokenizer).__name__, 5]).encode())
    h.update(datasets.fingerprint.Hasher.hash(tokenizer.get_vocab()).encode())
    for r in rows:
        context = hashlib.sha256((r.context or "").encode("utf-8")).hexdigest()[:16] if r.context else ""
        h.update(f"{r.id}\x1f{r.subject}\x1f{r.content_hash}\x1f{r.label}\x1f{len(r.options)}\x1f{context}\n".encode())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    from ..core.caches import datasets_cache, usable

    return usable(datasets_cache() / "hf_ft")


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
            get_formulation(formulation).encode,
            batched=True,
            batch_size=1000,
            fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
            remove_columns=["question", "options", "context", "label"],
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


def count_truncated(dataset: datasets.Dataset, column: str = "truncated") -> int:
    """Items whose question (or, with column="context_truncated", context) was cut."""
    return int(sum(dataset[column])) if column in dataset.column_names and len(dataset) else 0

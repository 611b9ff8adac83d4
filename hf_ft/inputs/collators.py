"""Collators: they batch the tokenized rows for each formulation, reading only the model inputs (extra
columns such as `length` and `subject` stay in the dataset for the sampler and the metrics).

Randomness in a collator (joint's option order, masked-LM's masks) is drawn from the run's seed, the
epoch (`set_epoch`, called at each epoch start) and each example's id — never from a generator that
carries state from batch to batch. A run resumed mid-epoch, or split over two processes, then sees
exactly the sequences the uninterrupted one-process run saw.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from .preprocessing import option_markers


def _model_inputs(tokenizer) -> list[str]:
    return list(tokenizer.model_input_names)


def example_rng(seed: int, epoch: int, example_id: str) -> np.random.Generator:
    """A generator that depends on the seed, the epoch and the example only."""
    return np.random.default_rng([seed, epoch, zlib.crc32(str(example_id).encode("utf-8"))])


# A question may have 2 to 4 options (C3). A batch then carries `choice_mask` (batch × slots, True where an
# option is), and the slots without one get a logit of -inf: they can never be predicted and add nothing to
# the loss or its gradient. No fake option is ever shown to the model as a choice to learn to avoid.
MASK_KEY = "choice_mask"
MAX_SLOTS = 4  # the 4-way heads hf_ft trains (data.LETTERS)


def mask_choices(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits with -inf where the mask has no option (a mask narrower than the logits masks the rest too)."""
    width = logits.shape[-1]
    mask = mask.to(logits.device, torch.bool)
    if mask.shape[-1] < width:
        mask = torch.nn.functional.pad(mask, (0, width - mask.shape[-1]), value=False)
    return logits.masked_fill(~mask[..., :width], float("-inf"))


def masked_choice_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the options a question has (logits masked with -inf), the mean over the batch as the
    models' own loss; label smoothing spreads its share over the real options only."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    keep = labels != -100
    log_probs, labels = log_probs[keep], labels[keep]
    nll = -log_probs.gather(-1, labels[:, None]).squeeze(-1)
    if smoothing:
        real = torch.isfinite(log_probs)
        uniform = -(log_probs.where(real, torch.zeros_like(log_probs))).sum(-1) / real.sum(-1)
        nll = (1 - smoothing) * nll + smoothing * uniform
    return nll.mean() if len(nll) else logits.sum() * 0.0


def pad_batch(tokenizer, sequences: dict[str, list], pad_to_multiple_of: int | None = None) -> dict:
    """Token sequences → padded int64 tensors, as `tokenizer.pad(..., padding=True, return_tensors="pt")` makes
    them (its padding side and pad values, an attention mask when the model reads one), in one numpy pass: the
    tokenizer's per-sequence Python loop cost 19 ms per batch of 32 × 4 sequences, on the GPU's critical path.
    tests/test_formulations.py checks that both give the same tensors."""
    ids = sequences["input_ids"]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    width = int(lengths.max()) if len(ids) else 0
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    positions = np.arange(width)
    real = (positions >= (width - lengths)[:, None]) if tokenizer.padding_side == "left" else \
        (positions < lengths[:, None])
    pad_values = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id}
    batch = {}
    for key, rows in sequences.items():
        out = np.full((len(rows), width), pad_values.get(key, 0), dtype=np.int64)
        out[real] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        batch[key] = torch.from_numpy(out)
    if "attention_mask" in tokenizer.model_input_names:
        batch["attention_mask"] = torch.from_numpy(real.astype(np.int64))
    return batch


@dataclass
class MultipleChoiceCollator:
    """transformers' DataCollatorForMultipleChoice (every question's options flattened, padded together, shaped
    back to batch × options × length), with 2-4 options per question (the missing slots masked) and a
    vectorised pad."""

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        self._keys = [k for k in ("input_ids", "token_type_ids") if k in _model_inputs(self.tokenizer)]
        self._filler = {"input_ids": [self.tokenizer.cls_token_id or 0, self.tokenizer.sep_token_id or 0],
                        "token_type_ids": [0, 0]}

    def __call__(self, features: list[dict]) -> dict:
        counts = [len(f["input_ids"]) for f in features]
        width = max(counts)
        # the missing slots of a question with fewer options get a two-token stand-in, masked below
        flat = {key: [seq for f, n in zip(features, counts)
                      for seq in itertools.chain(f[key], [self._filler[key]] * (width - n))]
                for key in self._keys if key in features[0]}
        batch = {k: v.view(len(features), width, -1)
                 for k, v in pad_batch(self.tokenizer, flat, self.pad_to_multiple_of).items()}
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.int64)
        if min(counts) < width:
            batch[MASK_KEY] = torch.tensor([[j < n for j in range(width)] for n in counts])
        return batch


def rotation_shifts(n_options: int, rotations: int) -> list[int]:
    """How far each of k rotated copies moves the options (k ≤ n, spread evenly): 4 of 4 → 0, 1, 2, 3."""
    k = max(1, min(rotations, n_options))
    return [(r * n_options) // k for r in range(k)]


def merge_rotations(logits: torch.Tensor, rotations: int) -> torch.Tensor:
    """One row of option scores per example from the k rotated copies JointCollator lays out consecutively
    at evaluation: each option's log-probability averaged over the k slots it sat in, which cancels what
    the head has learnt about slots rather than options. With one copy the logits come back unchanged."""
    n = logits.shape[-1]
    shifts = rotation_shifts(n, rotations)
    if len(shifts) == 1:
        return logits
    copies = torch.log_softmax(logits.float(), dim=-1).view(-1, len(shifts), n)
    # Copy r holds option j in slot (j + shift_r) mod n; rolling back by shift_r puts it at j again.
    return torch.stack([copies[:, r].roll(-shift, dims=-1) for r, shift in enumerate(shifts)], dim=1).mean(dim=1)


@dataclass
class JointCollator:
    """Builds `[CLS] q [SEP] A o₁ [SEP] B o₂ [SEP] C o₃ [SEP] D o₄ [SEP]`; the letters mark the slots and
    the label names a slot. With `shuffle_options` the options are permuted per example (the label
    follows the gold option), so a position cannot be learned as the answer.

    With `rotations` k > 1 each example becomes k sequences in the batch: one random order, rotated by
    n/k slots each time, so the same options appear with the gold answer in k different slots. Features
    of the content alone then cannot tell the k copies apart, and the gradient goes to what does: which
    slot holds the option that fits the question (on the demo task this is what lets joint learn).

    Without `shuffle_options` (evaluation) the k copies are rotations of the given order, and
    `merge_rotations` folds their logits back into one score per option."""

    tokenizer: PreTrainedTokenizerBase
    shuffle_options: bool = False
    seed: int = 0
    pad_to_multiple_of: int | None = None
    rotations: int = 1
    epoch: int = 0

    def __post_init__(self):
        self._with_types = "token_type_ids" in self.tokenizer.model_input_names
        self._marker_cache: dict[int, list[list[int]]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _markers(self, n: int) -> list[list[int]]:
        if n not in self._marker_cache:
            self._marker_cache[n] = option_markers(self.tokenizer, n)
        return self._marker_cache[n]

    def build(self, question_ids, option_ids, order=None, context_ids=()) -> dict:
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        ids = [cls, *question_ids, sep]
        types = [0] * len(ids)
        markers = self._markers(len(option_ids))
        for slot, j in enumerate(range(len(option_ids)) if order is None else order):
            ids += [*markers[slot], *option_ids[j], sep]
        if context_ids:  # once, after the options (see preprocessing.encode_joint)
            ids += [*context_ids, sep]
        types += [1] * (len(ids) - len(types))
        return {"input_ids": ids, "token_type_ids": types}

    def orders(self, n: int, example_id: str = "") -> list[np.ndarray]:
        """The option orders one example is presented in: order[slot] = index of the option in that slot."""
        base = (example_rng(self.seed, self.epoch, example_id).permutation(n) if self.shuffle_options
                else np.arange(n))
        return [np.roll(base, shift) for shift in rotation_shifts(n, self.rotations)]

    def __call__(self, features: list[dict]) -> dict:
        examples, labels, counts = [], [], []
        for f in features:
            for order in self.orders(len(f["option_ids"]), f.get("id", "")):
                examples.append(self.build(f["question_ids"], f["option_ids"], order, f.get("context_ids") or ()))
                labels.append(int(np.nonzero(order == f["labels"])[0][0]) if f["labels"] >= 0 else -100)
                counts.append(len(f["option_ids"]))
        keys = ["input_ids"] + (["token_type_ids"] if self._with_types else [])
        batch = pad_batch(self.tokenizer, {k: [e[k] for e in examples] for k in keys}, self.pad_to_multiple_of)
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        if min(counts) < MAX_SLOTS:  # the head has a slot for each of 4 options: the empty ones are masked
            batch[MASK_KEY] = torch.tensor([[j < n for j in range(max(MAX_SLOTS, max(counts)))] for n in counts])
        return batch


@dataclass
class MaskedLMCollator:
    """transformers' masked-LM collator, its masks drawn from (seed, epoch, the batch's example ids)."""

    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = 0.15
    seed: int = 0
    epoch: int = 0
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        self._collate = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.mlm_probability,
                                                        seed=self.seed, pad_to_multiple_of=self.pad_to_multiple_of)
        self._keys = _model_inputs(self.tokenizer)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, features: list[dict]) -> dict:
        ids = "\x1f".join(str(f.get("id", i)) for i, f in enumerate(features))
        self._collate.seed = int(example_rng(self.seed, self.epoch, ids).integers(2**31))
        self._collate.generator = None  # the collator builds a new generator from `seed` on its next call
        return self._collate([{k: f[k] for k in self._keys if k in f} for f in features])

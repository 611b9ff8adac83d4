"""The Trainer as hf_ft uses it, and `build_trainer`: the one place a Trainer is assembled, shared by
`hf_ft.training.run.main`, the benchmarks and the tests.

What differs from a plain Trainer: a separate evaluation collator (no option shuffling, k rotations for
joint merged back into one prediction per question), evaluation in dataset order, length-grouped
training batches in a shuffled order that depends on the seed and the epoch only. The Trainer never
touches the hub: hf_ft pushes once, after the run is finished (hf_ft.training.run.finish_run).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re

import torch
from torch.utils.data import Sampler, SequentialSampler
from transformers import Trainer, TrainerCallback

from ..inputs.collators import (
    MASK_KEY,
    mask_choices,
    masked_choice_loss,
    merge_rotations,
)
from ..inputs.formulations import get_formulation, make_collator
from ..task.metrics import build_compute_metrics

logger = logging.getLogger(__name__)


class ShuffledLengthGroupedSampler(Sampler):
    """Batches of similar length, in random order.

    Like transformers' LengthGroupedSampler, indices are shuffled, cut into megabatches of 50 batches
    and sorted by length inside each, so a batch carries little padding. Unlike it, the batches are
    then shuffled across the epoch: the transformers sampler runs each megabatch longest-first, which
    puts a long→short sawtooth into the loss curve and makes any window of steps unrepresentative.
    `group_size` is the number of examples that go into one optimizer step across all processes.
    The order depends on (seed, epoch) only, like transformers' own samplers, so a resumed run and
    every process draw the same order.
    """

    def __init__(self, lengths, group_size: int, seed: int, megabatch_groups: int = 50):
        self.lengths = list(lengths)
        self.group_size = max(1, group_size)
        self.megabatch = self.group_size * megabatch_groups
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        groups = []
        for start in range(0, len(order), self.megabatch):
            megabatch = sorted(order[start:start + self.megabatch], key=self.lengths.__getitem__, reverse=True)
            groups += [megabatch[i:i + self.group_size] for i in range(0, len(megabatch), self.group_size)]
        for g in torch.randperm(len(groups), generator=generator).tolist():
            yield from groups[g]


class EpochCallback(TrainerCallback):
    """Tells the training sampler and collator which epoch it is (their random draws depend on it). The
    epoch comes from the Trainer's state, which a resumed run restores from its checkpoint; the Trainer's
    own `set_epoch` does not reach a sampler under a resumed multi-process loader (skip + shard wrappers)."""

    def __init__(self, trainer: "QATrainer"):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(state.epoch or 0)
        for part in (self.trainer.data_collator, self.trainer.length_sampler):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


class QATrainer(Trainer):
    """The Trainer with an evaluation collator, evaluation in dataset order (our evaluation sets are
    pre-sorted by length, and the metrics map predictions back to subjects by position), and, for a
    joint model scored in k rotated option orders, the k copies of each question merged back into one
    prediction."""

    def __init__(self, *args, eval_data_collator=None, source_sets=None, source_collator=None, **kwargs):
        self.eval_data_collator = eval_data_collator
        self.source_sets = source_sets or {}  # extra source → held-out slice: its own loss at every evaluation
        # their collator: one option order (a slice of 2-4-option questions is a loss to watch, not a score to
        # debias over rotations)
        self.source_collator = source_collator or eval_data_collator
        self.length_sampler = None
        super().__init__(*args, **kwargs)
        self.add_callback(EpochCallback(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """A batch of questions with different option counts (collators.MASK_KEY): the missing options' logits
        are -inf and the loss is over the real ones; any other batch is the Trainer's own."""
        mask = inputs.pop(MASK_KEY, None)
        if mask is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        outputs["logits"] = mask_choices(outputs["logits"], mask)
        loss = masked_choice_loss(outputs["logits"], labels, self.args.label_smoothing_factor)
        outputs["loss"] = loss
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The loss is the mean over all copies; predictions and labels are one row per question (the first
        copy is the unrotated order, so its label is the question's own)."""
        mask = inputs.pop(MASK_KEY, None) if "labels" not in inputs else None
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if mask is not None and logits is not None:
            logits = mask_choices(logits[0] if isinstance(logits, tuple) else logits, mask)
        rotations = getattr(self.eval_data_collator, "rotations", 1)  # a JointCollator's; others send one copy
        if rotations > 1 and logits is not None:
            logits = merge_rotations(logits[0] if isinstance(logits, tuple) else logits, rotations)
            labels = labels[:: len(labels) // len(logits)] if labels is not None else None
        return loss, logits, labels

    @contextlib.contextmanager
    def _evaluation_collator(self):
        train_collator = self.data_collator
        if self.eval_data_collator is not None:
            self.data_collator = self.eval_data_collator
        try:
            yield
        finally:
            self.data_collator = train_collator

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """The Trainer's evaluation (TMMLU+'s validation split, which selects the model), and before it, at every
        evaluation during training, each extra source's held-out slice: `eval_<source>_loss` and
        `eval_<source>_accuracy` in the log, the loss plot and the history."""
        extra = {}
        if eval_dataset is None and metric_key_prefix == "eval" and self.source_sets:
            extra = self.evaluate_sources(self.source_sets)
            self.log(extra)
        return {**super().evaluate(eval_dataset, ignore_keys, metric_key_prefix), **extra}

    def evaluate_sources(self, source_sets: dict) -> dict:
        """Loss (and, for a formulation that scores options, accuracy) on each held-out slice, by its name."""
        out = {}
        metrics, self.compute_metrics = self.compute_metrics, None  # those map TMMLU+'s items to subjects
        collator, self.eval_data_collator = self.eval_data_collator, self.source_collator
        try:
            for name, dataset in source_sets.items():
                key = "eval_" + re.sub(r"\W+", "_", name).strip("_").lower()
                output = self.evaluation_loop(self.get_eval_dataloader(dataset), description=f"extra source {name}",
                                              prediction_loss_only=False, metric_key_prefix=key)
                out[f"{key}_loss"] = output.metrics.get(f"{key}_loss")
                logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
                if logits is not None and output.label_ids is not None and logits.ndim == 2:
                    out[f"{key}_accuracy"] = float((logits.argmax(-1) == output.label_ids).mean())
        finally:
            self.compute_metrics, self.eval_data_collator = metrics, collator
        return out

    def get_eval_dataloader(self, eval_dataset=None):
        with self._evaluation_collator():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with self._evaluation_collator():
            return super().get_test_dataloader(test_dataset)

    # transformers offers no public way to give the Trainer a custom training sampler; this is the hook its
    # own subclasses use. tests/test_formulations.py::test_length_grouping_reduces_padding_on_a_skewed_set
    # fails if transformers stops calling it.
    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and "length" in dataset.column_names:
            self.length_sampler = ShuffledLengthGroupedSampler(
                dataset["length"], self.args.per_device_train_batch_size * max(1, self.args.world_size),
                seed=self.args.seed)
            return self.length_sampler
        return super()._get_train_sampler(train_dataset)

    # Same for evaluation: one process reads in dataset order; several are sharded in order by accelerate.
    def _get_eval_sampler(self, eval_dataset):
        if self.args.world_size <= 1:
            return SequentialSampler(eval_dataset)
        return None


def build_trainer(model, tokenizer, training_args, formulation: str, train_set, eval_set=None, *,
                  mlm_probability: float = 0.15, joint_rotations: int = 1, joint_eval_rotations: int = 1,
                  pad_to_multiple_of: int | None = None, callbacks=(), source_sets=None) -> QATrainer:
    """A QATrainer with hf_ft's collators and metrics for `formulation` (per_choice, joint or mlm)."""
    seed = training_args.seed
    scores_accuracy = get_formulation(formulation).scores_options
    has_eval = eval_set is not None and len(eval_set) > 0
    return QATrainer(
        model=model,
        args=without_hub_push(training_args),
        train_dataset=train_set,
        eval_dataset=eval_set if has_eval else None,
        processing_class=tokenizer,
        data_collator=make_collator(formulation, tokenizer, train=True, seed=seed, mlm_probability=mlm_probability,
                                    joint_rotations=joint_rotations, pad_to_multiple_of=pad_to_multiple_of),
        eval_data_collator=make_collator(formulation, tokenizer, train=False, seed=seed,
                                         mlm_probability=mlm_probability, joint_eval_rotations=joint_eval_rotations,
                                         pad_to_multiple_of=pad_to_multiple_of),
        compute_metrics=build_compute_metrics(eval_set["subject"]) if scores_accuracy and has_eval else None,
        callbacks=list(callbacks),
        source_sets=source_sets,
        source_collator=make_collator(formulation, tokenizer, train=False, seed=seed, mlm_probability=mlm_probability,
                                      joint_eval_rotations=1, pad_to_multiple_of=pad_to_multiple_of),
    )


def without_hub_push(training_args):
    """The Trainer's view of the arguments. With --push_to_hub the Trainer would create the repository as it is
    built and push at every save and checkpoint, before the run is finished; hf_ft pushes once, after the run's
    finished marker, so the Trainer is handed a copy with the push off (the run's own arguments keep it)."""
    if not training_args.push_to_hub:
        return training_args
    trainer_args = copy.copy(training_args)  # shares the device setup and DeepSpeed config already built
    trainer_args.push_to_hub = False
    return trainer_args

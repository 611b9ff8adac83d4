"""The Trainer as hf_ft uses it: our model card and push, a separate evaluation collator, evaluation in
dataset order, and length-grouped batches whose order is shuffled."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler, SequentialSampler
from transformers import Trainer

from .hub import push_output_dir, write_model_card
from .preprocessing import merge_rotations


class ShuffledLengthGroupedSampler(Sampler):
    """Batches of similar length, in random order.

    Like transformers' LengthGroupedSampler, indices are shuffled, cut into megabatches of 50 batches
    and sorted by length inside each, so a batch carries little padding. Unlike it, the batches are
    then shuffled across the epoch: the transformers sampler runs each megabatch longest-first, which
    puts a long→short sawtooth into the loss curve and makes any window of steps unrepresentative.
    `group_size` is the number of examples that go into one optimizer step across all processes.
    """

    def __init__(self, lengths, group_size: int, megabatch_groups: int = 50, generator=None):
        self.lengths = list(lengths)
        self.group_size = max(1, group_size)
        self.megabatch = self.group_size * megabatch_groups
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        groups = []
        for start in range(0, len(order), self.megabatch):
            megabatch = sorted(order[start:start + self.megabatch], key=self.lengths.__getitem__, reverse=True)
            groups += [megabatch[i:i + self.group_size] for i in range(0, len(megabatch), self.group_size)]
        for g in torch.randperm(len(groups), generator=self.generator).tolist():
            yield from groups[g]


class QATrainer(Trainer):
    """The Trainer, with a separate evaluation collator (no option shuffling at evaluation), evaluation
    in dataset order (our evaluation sets are pre-sorted by length, and the metrics map predictions back
    to subjects by position) and, for a joint model scored in k rotated option orders, the k copies of
    each question merged back into one prediction."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The loss is the mean over all copies; predictions and labels are one row per question (the first
        copy is the unrotated order, so its label is the question's own)."""
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        rotations = getattr(self.eval_data_collator, "rotations", 1)  # a JointCollator's; others send one copy
        if rotations > 1 and logits is not None:
            logits = merge_rotations(logits[0] if isinstance(logits, tuple) else logits, rotations)
            labels = labels[:: len(labels) // len(logits)] if labels is not None else None
        return loss, logits, labels

    def create_model_card(self, *args, **kwargs):
        """Our card (results, comparison, loss curve), not the Trainer's generic one."""
        if self.is_world_process_zero():
            write_model_card(self.args.output_dir, self.hub_model_id)

    def push_to_hub(self, commit_message: str | None = "Upload model trained with hf_ft", blocking: bool = True,
                    **kwargs):
        """The Trainer's push (it runs from `save_model` when --push_to_hub is set), uploading our card and
        only the model, tokenizer and result files: no checkpoints, optimizer states or rejected rows."""
        if not self.is_world_process_zero():
            return None
        self.create_model_card()
        return push_output_dir(self.args.output_dir, self.hub_model_id, private=bool(self.args.hub_private_repo),
                               commit_message=commit_message or "Upload model trained with hf_ft")

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and "length" in dataset.column_names:
            return ShuffledLengthGroupedSampler(dataset["length"],
                                                self.args.per_device_train_batch_size * max(1, self.args.world_size))
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        if self.args.world_size <= 1:
            return SequentialSampler(eval_dataset)
        return None  # accelerate shards in order and gathers back in order

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        if is_training or self.eval_data_collator is None:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        finally:
            self.data_collator = train_collator

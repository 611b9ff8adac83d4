"""What a training run writes beyond the model: the test predictions, the retrieved contexts, the run record the
model card is made from (no token, no absolute local path), and the one push of a finished run."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.arguments import PATH_ARGUMENTS, Arguments
from ..core import provenance, run_dir
from ..data.rows import LETTERS
from ..inputs.formulations import get_formulation

logger = logging.getLogger("hf_ft")


def hub_repo_id(training_args) -> str | None:
    """The repository a --push_to_hub run goes to (--hub_model_id, or the output folder's name); None without."""
    from ..publish.hub import repo_id_for

    return repo_id_for(training_args.hub_model_id, training_args.output_dir) if training_args.push_to_hub else None


def push_finished_run(output_dir: Path, training_args, push_test_items: bool = False):
    """--push_to_hub: one commit of the finished run, from the main process, after hf_ft_finished.json."""
    from ..publish.hub import push_output_dir

    return push_output_dir(output_dir, hub_repo_id(training_args), private=bool(training_args.hub_private_repo),
                           revision=training_args.hub_revision, include_test_items=push_test_items,
                           commit_message="Upload model trained with hf_ft")


def write_test_predictions(output_dir: Path, dataset, logits, rows) -> None:
    """`test_predictions.jsonl`: the trained model's option scores per test item, in test_qa_data.json order;
    `test_item_results.jsonl`: what a push carries by default instead of the questions (id, subject, content
    hash, correct or not)."""
    by_id, predicted = _predicted(dataset, logits, rows)
    run_dir.write_jsonl(output_dir / run_dir.TEST_PREDICTIONS_FILE, (
        {"id": row.id, "prediction": predicted[row.id], "scores": [float(x) for x in by_id[row.id]]}
        for row in rows))
    run_dir.write_jsonl(output_dir / run_dir.TEST_ITEM_RESULTS_FILE, (
        {"id": row.id, "subject": row.subject, "content_hash": row.content_hash,
         "correct": predicted[row.id] == row.answer} for row in rows))


def write_fold_predictions(output_dir: Path, dataset, logits, rows) -> None:
    """`fold_predictions.jsonl` (--folds): the run's answer to every item of the training-pool fold it did not
    train on, with what pooling them needs (subject, category, gold, correct)."""
    by_id, predicted = _predicted(dataset, logits, rows)
    run_dir.write_jsonl(output_dir / run_dir.FOLD_PREDICTIONS_FILE, (
        {"id": row.id, "subject": row.subject, "category": row.category, "content_hash": row.content_hash,
         "answer": row.answer, "prediction": predicted[row.id], "correct": predicted[row.id] == row.answer,
         "scores": [float(x) for x in by_id[row.id]]} for row in rows))


def _predicted(dataset, logits, rows):
    """Option scores by item id (the dataset may be sorted by length) and each row's predicted letter."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    by_id = {item_id: row for item_id, row in zip(dataset["id"], logits)}
    return by_id, {row.id: LETTERS[int(by_id[row.id].argmax())] for row in rows}


def write_contexts(data, output_dir: Path) -> None:
    """retrieved_contexts.jsonl (the passages used per item) and the retrieval's record in the manifest."""
    from ..retrieval.contexts import CONTEXTS_FILE

    run_dir.write_jsonl(output_dir / CONTEXTS_FILE, ({"split": split, **r} for split, part in data.contexts.items()
                                                     for r in part))
    manifest = run_dir.read_json_if_present(output_dir / run_dir.MANIFEST_FILE) or {}
    manifest["retrieval"] = {**data.book.record(output_dir), "context_leak_check": data.context_check,
                             "gold_in_context": {split: round(sum(r["gold_in_context"] for r in part) /
                                                              max(1, len(part)), 4)
                                                 for split, part in data.contexts.items()}}
    run_dir.write_json(output_dir / run_dir.MANIFEST_FILE, manifest)
    logger.info("open book: %s; the gold option's text is in the context of %s", data.book.source.get("kind"),
                manifest["retrieval"]["gold_in_context"])


def run_record(args: Arguments, formulation: str, trainer, max_length: int, base_model: dict,
               book=None, context_check: dict | None = None) -> dict:
    """What the model card needs to describe the run: no tokens, and no absolute local path (paths are relative
    to the output folder; `arguments_relative_paths` names the arguments that were rewritten)."""
    training_args = args.training
    hyperparameters = {name: getattr(training_args, name) for name in (
        "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
        "gradient_accumulation_steps", "warmup_steps", "weight_decay", "lr_scheduler_type", "seed", "bf16", "fp16")}
    hyperparameters["lr_scheduler_type"] = getattr(training_args.lr_scheduler_type, "value",
                                                   str(training_args.lr_scheduler_type))
    hyperparameters["train_sampling_strategy"] = str(training_args.train_sampling_strategy)
    if args.model.config_overrides:
        hyperparameters["config_overrides"] = args.model.config_overrides
    hyperparameters.update(world_size=training_args.world_size, max_seq_length=max_length,
                           global_step=trainer.state.global_step)
    for name in get_formulation(formulation).rotations_flags:
        hyperparameters[name] = getattr(args.data, name)
    if args.data.drop_question:
        hyperparameters["drop_question"] = True
    for name in ("max_eval_samples", "max_test_samples"):
        if getattr(args.data, name) is not None:
            hyperparameters[name] = getattr(args.data, name)
    output_dir = training_args.output_dir
    arguments, rewritten = provenance.relative_paths(args.given, PATH_ARGUMENTS, output_dir)
    deepspeed = args.deepspeed.record()
    if deepspeed.get("config") and Path(deepspeed["config"]).exists():
        deepspeed["config"] = provenance.relative_to(deepspeed["config"], output_dir)
    state = trainer.state
    early_stopping = None
    if args.run.early_stopping_patience:
        early_stopping = {
            "patience": args.run.early_stopping_patience, "threshold": args.run.early_stopping_threshold,
            "metric": training_args.metric_for_best_model, "stopped_early": state.global_step < state.max_steps,
            "stopped_at_step": state.global_step, "max_steps": state.max_steps,
            "stopped_at_epoch": round(float(state.epoch or 0), 2), "best_metric": state.best_metric,
            "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None}
    return {
        "base_model": base_model,
        "early_stopping": early_stopping,
        "formulation": formulation,
        "retrieval": {**book.record(training_args.output_dir), "context_leak_check": context_check}
        if book is not None else None,
        "extra_data": extra_summary(training_args.output_dir),
        "subjects": args.data.subjects,
        "hub_model_id": hub_repo_id(training_args),
        "hyperparameters": hyperparameters,
        "deepspeed": deepspeed,
        "arguments": arguments,
        "arguments_relative_paths": rewritten,
    }


def extra_summary(output_dir) -> list[dict] | None:
    """What the card says of each extra source: name, where from, commit, licence, conversion and counts."""
    manifest = run_dir.read_json_if_present(Path(output_dir) / run_dir.MANIFEST_FILE) or {}
    extra = manifest.get("extra_data")
    if not extra:
        return None
    keys = ("name", "source", "adapter", "revision", "license", "conversion", "counts", "splits", "configs")
    return [{k: s.get(k) for k in keys} | {"policy": extra["policy"]} for s in extra["sources"]]

"""Fine-tune an encoder on TMMLU+: files → validated rows → splits → tokenized → Trainer → outputs.

`main()` reads top to bottom like transformers' run_swag.py; each step lives in its own module.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import datasets
import torch
import transformers
from transformers import set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import data as data_lib
from .arguments import DataArguments, ModelArguments, RunArguments
from .callbacks import CURVE_FILE, LossCurveCallback
from .errors import UserError
from .hub import RUN_INFO_FILE, write_model_card
from .metrics import build_compute_metrics
from .modeling import load_model, load_tokenizer
from .preprocessing import count_truncated, encode, make_collator
from .trainer import QATrainer

logger = logging.getLogger("hf_ft")

FINAL_MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class OutputDirError(UserError):
    pass


def setup_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logging.getLogger("hf_ft").setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` whose trainer state was written (a run killed mid-save leaves a partial one)."""
    candidates = sorted((p for p in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()),
                        key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for path in candidates:
        if (path / "trainer_state.json").is_file():
            return str(path)
    return None


def resolve_checkpoint(output_dir: str, resume_from_checkpoint: str | None, overwrite: bool) -> str | None:
    """Resume from the last checkpoint in output_dir; refuse a finished or foreign non-empty one."""
    if resume_from_checkpoint:
        if not Path(resume_from_checkpoint).is_dir():
            raise OutputDirError(f"--resume_from_checkpoint {resume_from_checkpoint}: no such checkpoint directory")
        logger.info("resuming from %s", resume_from_checkpoint)
        return resume_from_checkpoint
    out = Path(output_dir)
    if overwrite or not out.is_dir() or not any(out.iterdir()):
        return None
    last = last_complete_checkpoint(out)
    finished = [name for name in FINAL_MODEL_FILES if (out / name).exists()]
    if last is not None and not finished:
        logger.info("resuming from %s", last)
        return last
    reason = (f"holds a finished run ({', '.join(finished)})" if finished
              else "is not empty and has no checkpoint to resume from")
    raise OutputDirError(f"output_dir {out} {reason}; pass --overwrite_output_dir to train into it anyway, "
                         "or choose another --output_dir")


def decide_on_main_process(training_args, fn, *args):
    """Run `fn` on the main process only and give every process its answer (or its error), so that
    no rank decides from files another rank has just written."""
    outcome = [None]
    if training_args.process_index == 0:
        try:
            outcome = [("ok", fn(*args))]
        except UserError as e:
            outcome = [("error", e)]
    if training_args.world_size > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(outcome, from_process=0)
    status, value = outcome[0]
    if status == "error":
        raise value
    return value


def load_rows(data_args: DataArguments, cache_dir: str | None) -> data_lib.LoadedData:
    """Pick the source: a TMMLU+-layout folder, flat files, or the hub."""
    if data_args.data_dir:
        return data_lib.load_data_dir(data_args.data_dir, data_args.subjects)
    files = {name: path for name, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                                            ("test", data_args.test_file)) if path}
    if files:
        if list(files) == ["train"]:
            files = {"all": files["train"]}
        return data_lib.load_files(files, data_args.subjects)
    return data_lib.load_hub(data_args.subjects, data_args.dataset_revision, cache_dir, data_args.dataset_name)


def main(model_args: ModelArguments, data_args: DataArguments, run_args: RunArguments, training_args) -> dict:
    setup_logging(training_args)
    output_dir = Path(training_args.output_dir)
    is_main = training_args.process_index == 0
    formulation = "mlm" if model_args.task == "mlm" else model_args.formulation

    # Our collators pick the model inputs themselves; the `length` column must reach the sampler.
    training_args.remove_unused_columns = False
    if formulation == "mlm" and training_args.metric_for_best_model == "accuracy":  # no accuracy to select on
        training_args.metric_for_best_model, training_args.greater_is_better = "loss", False
    checkpoint = decide_on_main_process(training_args, resolve_checkpoint, str(output_dir),
                                        training_args.resume_from_checkpoint, run_args.overwrite_output_dir)
    deepspeed = getattr(training_args, "hf_ft_deepspeed", None) or {"used": False}
    logger.info("DeepSpeed: %s", f"ZeRO stage {deepspeed['stage']} ({deepspeed['config']})" if deepspeed["used"]
                else f"not used ({deepspeed['reason']})" if deepspeed.get("reason") else "not used")
    set_seed(training_args.seed)

    # 1. Files → validated rows (bad rows stop the run, or are skipped and written down).
    loaded = load_rows(data_args, model_args.cache_dir)
    rejected = data_lib.handle_problems(loaded.problems, data_args.on_bad_rows, str(output_dir) if is_main else None)

    # 2. Rows → deduplicated, seeded splits; the test split and the manifest are written first.
    splits = data_lib.make_splits(loaded, data_args.split_scheme, training_args.seed,
                                  data_args.validation_fraction, data_args.ratios())
    if is_main:
        manifest = data_lib.write_split_outputs(str(output_dir), loaded, splits, rejected, training_args.seed)
        logger.info("splits (%s): %s; %d duplicate(s) removed, %d row(s) rejected", splits.scheme,
                    manifest["counts"], splits.duplicates_removed, sum(rejected.values()))

    # 3. Tokenizer and model.
    tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path, model_args.model_revision,
                               model_args.cache_dir, model_args.trust_remote_code)
    model = load_model(model_args.model_name_or_path, formulation, model_args.model_revision,
                       model_args.cache_dir, model_args.trust_remote_code, model_args.config_overrides)
    max_length = min(data_args.max_seq_length, tokenizer.model_max_length,
                     getattr(model.config, "max_position_embeddings", data_args.max_seq_length))

    # 4. Rows → tokenized datasets (the main process tokenizes first; the others read its cache).
    with training_args.main_process_first(desc="tokenizing"):
        def tokenized(rows, sort):
            return encode(rows, tokenizer, formulation, max_length, num_proc=data_args.preprocessing_num_workers,
                          sort_by_length=sort)

        train_set = tokenized(splits.train, False)
        eval_set = tokenized(splits.validation, run_args.sort_eval_by_length)
        test_set = tokenized(splits.test, run_args.sort_eval_by_length)
    for name, dataset in (("train", train_set), ("validation", eval_set), ("test", test_set)):
        logger.info("%s: %d examples, %d truncated to %d tokens", name, len(dataset), count_truncated(dataset),
                    max_length)
    has_eval = len(eval_set) > 0
    if not has_eval:
        training_args.eval_strategy = "no"
        training_args.load_best_model_at_end = False

    # 5. The Trainer.
    scores_accuracy = formulation != "mlm"
    trainer = QATrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set if has_eval else None,
        processing_class=tokenizer,
        data_collator=make_collator(formulation, tokenizer, train=True, seed=training_args.seed,
                                    mlm_probability=data_args.mlm_probability,
                                    joint_rotations=data_args.joint_rotations),
        eval_data_collator=make_collator(formulation, tokenizer, train=False, seed=training_args.seed,
                                         mlm_probability=data_args.mlm_probability,
                                         joint_eval_rotations=data_args.joint_eval_rotations),
        compute_metrics=build_compute_metrics(eval_set["subject"]) if scores_accuracy and has_eval else None,
        callbacks=[LossCurveCallback(str(output_dir))],
    )

    # 6. Train (resuming when there is a checkpoint).
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(train_set)
    metrics["deepspeed_stage"] = deepspeed["stage"] if deepspeed["used"] else -1
    if torch.cuda.is_available() and not training_args.use_cpu:
        metrics["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    # 7. Evaluate the final (best) model on validation and test, with per-subject accuracy.
    results = {}
    for split, dataset in (("eval", eval_set), ("test", test_set)):
        if len(dataset) == 0:
            continue
        if scores_accuracy:
            trainer.compute_metrics = build_compute_metrics(dataset["subject"], per_subject=True)
        if split == "test" and scores_accuracy:
            prediction = trainer.predict(dataset, metric_key_prefix=split)
            split_metrics = prediction.metrics
            if is_main:
                write_test_predictions(output_dir, dataset, prediction.predictions, [r.id for r in splits.test])
        else:
            split_metrics = trainer.evaluate(dataset, metric_key_prefix=split)
        split_metrics[f"{split}_samples"] = len(dataset)
        trainer.log_metrics(split, split_metrics)
        results.update(split_metrics)
    trainer.save_metrics("eval", results)  # eval_results.json, merged into all_results.json

    # 8. The run record and the model card (main process), then the final model in HF format. save_model
    # runs on every rank (DeepSpeed ZeRO-3 gathers the weights collectively) and, with --push_to_hub,
    # pushes the model, tokenizer, card and results once.
    if is_main:
        data_lib.write_json(output_dir / RUN_INFO_FILE, run_record(model_args, data_args, training_args, formulation,
                                                                   trainer, max_length))
        write_model_card(output_dir, trainer.hub_model_id)
    trainer.save_model()
    logger.info("model, tokenizer, results and model card saved to %s; loss curve: %s", output_dir,
                output_dir / CURVE_FILE)
    return {**metrics, **results}


def leave_process_group() -> None:
    """End a multi-process run cleanly: every rank waits for the others, then leaves the group. A process
    that exits while still in a gloo group can abort in the interpreter's teardown ("terminate called
    without an active exception", SIGABRT) after a run that succeeded: 9 of 30 bare 2-process gloo runs
    here. The Trainer never leaves the group; a script ending a run must. accelerate's state (the one the
    Trainer used) does it, and leaves a notebook-launcher's group alone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from accelerate import PartialState

        state = PartialState()
        state.wait_for_everyone()
        state.destroy_process_group()


def write_test_predictions(output_dir: Path, dataset, logits, item_order: list[str]) -> None:
    """`test_predictions.jsonl`: the trained model's option scores per test item, in test_qa_data.json order."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    by_id = {item_id: row for item_id, row in zip(dataset["id"], logits)}
    data_lib.write_jsonl(output_dir / "test_predictions.jsonl", (
        {"id": item_id, "prediction": data_lib.LETTERS[int(by_id[item_id].argmax())],
         "scores": [float(x) for x in by_id[item_id]]} for item_id in item_order))


def run_record(model_args, data_args, training_args, formulation: str, trainer, max_length: int) -> dict:
    """What the model card needs to describe the run (no tokens, no paths to secrets)."""
    hyperparameters = {name: getattr(training_args, name) for name in (
        "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
        "gradient_accumulation_steps", "warmup_steps", "weight_decay", "lr_scheduler_type", "seed", "bf16", "fp16")}
    hyperparameters["lr_scheduler_type"] = str(hyperparameters["lr_scheduler_type"])
    hyperparameters["train_sampling_strategy"] = str(training_args.train_sampling_strategy)
    if model_args.config_overrides:
        hyperparameters["config_overrides"] = model_args.config_overrides
    hyperparameters.update(world_size=training_args.world_size, max_seq_length=max_length,
                           global_step=trainer.state.global_step)
    if formulation == "joint":
        hyperparameters["joint_rotations"] = data_args.joint_rotations
        hyperparameters["joint_eval_rotations"] = data_args.joint_eval_rotations
    return {
        "base_model": model_args.model_name_or_path,
        "task": model_args.task,
        "formulation": formulation,
        "subjects": data_args.subjects,
        "hub_model_id": trainer.hub_model_id,
        "hyperparameters": hyperparameters,
        "deepspeed": getattr(training_args, "hf_ft_deepspeed", None),
    }

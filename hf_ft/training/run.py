"""Fine-tune an encoder on TMMLU+: files → validated rows → splits → tokenized → Trainer → outputs.

`main()` reads top to bottom like transformers' run_swag.py; each step lives in its own module.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median

import datasets
import torch
import transformers
from transformers import EarlyStoppingCallback, set_seed

from ..config.arguments import Arguments
from ..core import provenance, run_dir
from ..core.errors import UserError
from ..data.rows import conflicting_answers, handle_problems, write_rejected_rows
from ..data.sources import load_rows
from ..data.splits import cross_fit, make_splits, stratified_sample, write_split_outputs
from ..extra.mixing import load_for_run as load_extra_for_run
from ..inputs.formulations import count_truncated, encode, get_formulation
from ..inputs.modeling import check_vocabulary, hub_id, load_config, load_model, load_tokenizer
from ..inputs.preprocessing import length_problem
from ..publish.model_card import write_model_card
from ..retrieval.contexts import SEPARATOR, OpenBook
from ..task.metrics import build_compute_metrics
from . import memory, speed
from .callbacks import CheckpointMarkerCallback, LossCurveCallback
from .outputs import (
    hub_repo_id,
    push_finished_run,
    run_record,
    write_contexts,
    write_fold_predictions,
    write_test_predictions,
)
from .start import (  # noqa: F401
    NOT_IDENTITY,
    OutputDirError,
    claim_output_dir,
    decide_on_main_process,
    identity_of,
    resolve_start,
)
from .trainer import build_trainer

logger = logging.getLogger("hf_ft")


def setup_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logging.getLogger("hf_ft").setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


@dataclass
class RunData:
    """Everything `prepare_data` read and decided, nothing written yet."""
    loaded: object
    extra: object
    splits: object
    evaluated: dict  # "validation"/"test" → the rows evaluated (a stratified sample when asked)
    split_seed: int
    problems: list
    rejected: Counter
    book: OpenBook | None = None
    contexts: dict | None = None  # split → per-row retrieval records
    context_check: dict | None = None
    seconds: float = 0.0


@dataclass
class RunInputs:
    tokenizer: object
    model: object
    base_model: dict | None
    max_length: int
    train_set: object
    eval_set: object
    test_set: object
    seconds: float
    source_sets: dict = field(default_factory=dict)  # extra source → its held-out slice, tokenized
    fold_set: object = None  # --folds: the training-pool fold this run scores


def main(args: Arguments) -> dict:
    """One run: claim the folder, prepare data and inputs (every refusal happens here, before anything is
    written), begin the run, train, evaluate, finish."""
    training_args = args.training
    setup_logging(training_args)
    output_dir = Path(training_args.output_dir)
    is_main = training_args.process_index == 0
    identity = identity_of(args)
    logger.info("DeepSpeed: %s", f"ZeRO stage {args.deepspeed.stage} ({args.deepspeed.config_path})"
                if args.deepspeed.used else f"not used ({args.deepspeed.reason})" if args.deepspeed.reason
                else "not used")
    with contextlib.ExitStack() as holding:
        checkpoint = decide_on_main_process(training_args, claim_output_dir, output_dir, identity, args, holding)
        set_seed(training_args.seed)
        data = prepare_data(args)
        inputs = prepare_inputs(args, data, output_dir, is_main)
        if is_main:
            begin_run(output_dir, identity, args, data)
        trainer, metrics = train_model(args, data, inputs, identity, checkpoint)
        results = evaluate_model(trainer, args, data, inputs, output_dir, is_main)
        finish_run(trainer, args, data, inputs, output_dir, identity, is_main)
    logger.info("model, tokenizer, results and model card saved to %s; loss curve: %s", output_dir,
                output_dir / run_dir.CURVE_FILE)
    return {**metrics, **results}


def prepare_data(args: Arguments) -> RunData:
    """Files → validated rows → seeded splits (+ extra sources, + retrieved contexts, checked for leaks)."""
    data_args, training_args = args.data, args.training
    started = time.perf_counter()
    loaded = load_rows(data_args, args.model.cache_dir)
    extra = None
    if data_args.extra_data:  # other exam sets: converted, checked against all of TMMLU+, for training only
        with training_args.main_process_first(desc="reading the extra training data"):
            extra = load_extra_for_run(data_args, loaded, args.model.cache_dir, training_args.seed)
    conflicts, conflicted = conflicting_answers([r for rows in loaded.pools.values() for r in rows])
    if conflicted:  # left out everywhere (--on_bad_rows skip), or refused with both places named just below
        loaded.pools = {name: [r for r in rows if r.content_hash not in conflicted]
                        for name, rows in loaded.pools.items()}
    problems = loaded.problems + conflicts + (extra.problems if extra else [])
    rejected = handle_problems(problems, data_args.on_bad_rows, None,  # refused here; written by begin_run
                               kept=sum(len(rows) for rows in loaded.pools.values()))
    if extra is not None:
        extra.refuse_empty()
    split_seed = args.split_seed
    splits = make_splits(loaded, data_args.split_scheme, split_seed, data_args.validation_fraction,
                         data_args.ratios(), needs_validation=training_args.eval_strategy != "no")
    if data_args.fold is not None:  # cross-fitting: one fold of the training pool held out, scored at the end
        splits = cross_fit(splits, data_args.fold, data_args.folds, split_seed, data_args.validation_fraction,
                           data_args.ratios(), needs_validation=training_args.eval_strategy != "no")
    if extra is not None:  # the validation split stays the target task's; the test split is untouched
        splits = replace(splits, train=splits.train + extra.rows)
    evaluated = {"validation": splits.validation, "test": splits.test, "fold": splits.fold}
    for name, limit in (("validation", data_args.max_eval_samples), ("test", data_args.max_test_samples)):
        if limit is not None and limit < len(evaluated[name]):
            evaluated[name] = stratified_sample(evaluated[name], limit, split_seed)
            logger.info("%s: a stratified sample of %d of %d questions is evaluated", name, limit,
                        len(getattr(splits, name)))
    data = RunData(loaded, extra, splits, evaluated, split_seed, problems, rejected)
    if args.retrieval.used:  # open book: the corpus checked against every held-out item, then attached
        with training_args.main_process_first(desc="indexing the retrieval corpus"):
            data.book = OpenBook.build(args.retrieval, splits.train, held_out(splits), args.model.cache_dir)
        attach_contexts(data, args)
    data.seconds = time.perf_counter() - started
    return data


def prepare_inputs(args: Arguments, data: RunData, output_dir: Path, is_main: bool) -> RunInputs:
    """Tokenizer and model (the tokenizer must cover the data's text, the length must fit every option), rows →
    tokenized datasets, and the memory the run will need against what the machine has."""
    model_args, data_args, training_args = args.model, args.data, args.training
    formulation = model_args.formulation
    splits, evaluated = data.splits, data.evaluated
    tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path,
                               model_args.model_revision, model_args.cache_dir, model_args.trust_remote_code,
                               flag="--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path")
    check_vocabulary(tokenizer, splits.train + held_out(splits), data_args.max_unk_rate)
    config = load_config(model_args.model_name_or_path, model_args.model_revision, model_args.cache_dir,
                         model_args.trust_remote_code, flag="--model_name_or_path")
    limits = {"--max_seq_length": data_args.max_seq_length,
              "the tokenizer's model_max_length": tokenizer.model_max_length,
              "the model's max_position_embeddings": getattr(config, "max_position_embeddings",
                                                            data_args.max_seq_length)}
    problem = length_problem(splits.train + held_out(splits), tokenizer, formulation, limits)
    if problem:
        raise UserError(problem)
    max_length = min(limits.values())
    model = load_model(model_args.model_name_or_path, formulation, model_args.model_revision,
                       model_args.cache_dir, model_args.trust_remote_code, model_args.config_overrides,
                       use_kernels=model_args.use_kernels, config=config)  # read once, for the length check too
    base_model = provenance.base_model_record(model_args.model_name_or_path, hub_id(model_args.model_name_or_path),
                                              model.config, output_dir, model_args.model_revision,
                                              model_args.cache_dir) if is_main else None

    started = time.perf_counter()
    with training_args.main_process_first(desc="tokenizing"):  # the others read the main process's cache
        def tokenized(rows, sort):
            return encode(rows, tokenizer, formulation, max_length, num_proc=data_args.preprocessing_num_workers,
                          sort_by_length=sort, drop_question=data_args.drop_question)

        train_set = tokenized(splits.train, False)
        eval_set = tokenized(evaluated["validation"], args.run.sort_eval_by_length)
        test_set = tokenized(evaluated["test"], args.run.sort_eval_by_length)
        source_sets = {name: tokenized(rows, args.run.sort_eval_by_length)
                       for name, rows in (data.extra.held_out if data.extra else {}).items()}
        fold_set = tokenized(evaluated["fold"], args.run.sort_eval_by_length) if splits.fold_index else None
    seconds = time.perf_counter() - started
    for name, dataset in (("train", train_set), ("validation", eval_set), ("test", test_set)):
        logger.info("%s: %d examples, %d truncated to %d tokens", name, len(dataset), count_truncated(dataset),
                    max_length)
        if data.book is not None:
            logger.info("%s: %d contexts cut to fit; %.1f context tokens per item", name,
                        count_truncated(dataset, "context_truncated"),
                        sum(dataset["context_tokens"]) / max(1, len(dataset)))
    # a run that cannot fit stops here, not at a kernel OOM kill hours in
    scored = [eval_set, test_set] + ([fold_set] if fold_set is not None else [])
    memory.check(memory_shape(model, formulation, train_set, scored, training_args, args),
                 on_gpu=training_args.device.type == "cuda", skip=args.run.skip_memory_check)
    return RunInputs(tokenizer, model, base_model, max_length, train_set, eval_set, test_set, seconds, source_sets,
                     fold_set)


def begin_run(output_dir: Path, identity: str, args: Arguments, data: RunData) -> None:
    """The run's first writes, once every check has passed: what --overwrite_output_dir replaces is cleared, the
    folder is marked as this run's, then the rejected rows, the held-out items and the manifest, the contexts."""
    if args.run.overwrite_output_dir and not args.training.resume_from_checkpoint:
        for path in output_dir.iterdir():
            if path.name.startswith("checkpoint-") and path.is_dir():
                shutil.rmtree(path)
        for name in (run_dir.FINISHED_FILE, run_dir.STARTED_FILE):
            (output_dir / name).unlink(missing_ok=True)
    run_dir.mark_started(output_dir, identity)
    write_rejected_rows(data.problems, output_dir)
    manifest = write_split_outputs(str(output_dir), data.loaded, data.splits, data.rejected, data.split_seed,
                                   data.extra.report if data.extra else None)
    logger.info("splits (%s): %s; %d duplicate(s) removed, %d row(s) rejected", data.splits.scheme,
                manifest["counts"], data.splits.duplicates_removed, sum(data.rejected.values()))
    if data.book is not None:
        write_contexts(data, output_dir)


def train_model(args: Arguments, data: RunData, inputs: RunInputs, identity: str, checkpoint: str | None):
    """The Trainer, built and run (resuming when there is a checkpoint); its metrics with throughput added."""
    model_args, data_args, run_args, training_args = args.model, args.data, args.run, args.training
    formulation = model_args.formulation
    output_dir = Path(training_args.output_dir)
    speed.use_cudnn_attention(run_args.cudnn_attention)
    throughput = speed.ThroughputCallback(
        training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps *
        max(1, training_args.world_size),
        tokens_per_sample(inputs.train_set) * get_formulation(formulation).rotations(data_args)[0],
        6 * speed.non_embedding_parameters(inputs.model),
        torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32)
    callbacks = [LossCurveCallback(str(output_dir)), CheckpointMarkerCallback(identity), throughput]
    if run_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(run_args.early_stopping_patience, run_args.early_stopping_threshold))
    if run_args.profile_steps:
        callbacks.append(speed.StepProfileCallback(output_dir, run_args.profile_steps))
    trainer = build_trainer(
        inputs.model, inputs.tokenizer, training_args, formulation, inputs.train_set,
        inputs.eval_set if training_args.eval_strategy != "no" else None,
        mlm_probability=data_args.mlm_probability, joint_rotations=data_args.joint_rotations,
        joint_eval_rotations=data_args.joint_eval_rotations, pad_to_multiple_of=data_args.pad_to_multiple_of,
        callbacks=callbacks, source_sets=inputs.source_sets if training_args.eval_strategy != "no" else None)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics)
    metrics.update(trainer.evaluate_sources(inputs.source_sets))  # each extra source's slice, the final model
    metrics["train_samples"] = len(inputs.train_set)
    metrics["deepspeed_stage"] = args.deepspeed.stage if args.deepspeed.used else -1
    metrics.update(data_seconds=round(data.seconds, 2), tokenize_seconds=round(inputs.seconds, 2),
                   train_tokens_per_sample=round(tokens_per_sample(inputs.train_set), 1),
                   **throughput.summary(training_args.device))
    if torch.cuda.is_available() and not training_args.use_cpu:
        metrics["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return trainer, metrics


def evaluate_model(trainer, args: Arguments, data: RunData, inputs: RunInputs, output_dir: Path,
                   is_main: bool) -> dict:
    """The final (best) model on validation and test (and the held-out fold with --folds), with per-subject
    accuracy; the test (and fold) predictions written."""
    results = {}
    scored = [("eval", inputs.eval_set), ("test", inputs.test_set)]
    for split, dataset in scored + ([("fold", inputs.fold_set)] if inputs.fold_set is not None else []):
        if len(dataset) == 0:
            continue
        if get_formulation(args.model.formulation).scores_options:
            trainer.compute_metrics = build_compute_metrics(dataset["subject"], per_subject=True)
            prediction = trainer.predict(dataset, metric_key_prefix=split)
            split_metrics = prediction.metrics
            if split == "test" and is_main:
                write_test_predictions(output_dir, dataset, prediction.predictions, data.evaluated["test"])
            if split == "fold" and is_main:
                write_fold_predictions(output_dir, dataset, prediction.predictions, data.evaluated["fold"])
        else:
            split_metrics = trainer.evaluate(dataset, metric_key_prefix=split)
        split_metrics[f"{split}_samples"] = len(dataset)
        trainer.log_metrics(split, split_metrics)
        results.update(split_metrics)
    trainer.save_metrics("eval", results)  # eval_results.json, merged into all_results.json
    return results


def finish_run(trainer, args: Arguments, data: RunData, inputs: RunInputs, output_dir: Path, identity: str,
               is_main: bool) -> None:
    """The run record, the model card, the final model (save_model runs on every rank: DeepSpeed ZeRO-3 gathers
    the weights collectively), then the finished marker, last; only then one push."""
    if is_main:
        run_dir.write_json(output_dir / run_dir.RUN_RECORD_FILE,
                           run_record(args, args.model.formulation, trainer, inputs.max_length, inputs.base_model,
                                      data.book, data.context_check))
        write_model_card(output_dir, hub_repo_id(args.training))
    trainer.save_model()
    trainer.accelerator.wait_for_everyone()
    if is_main:
        run_dir.mark_finished(output_dir, identity)
    trainer.accelerator.wait_for_everyone()  # no rank returns before the run is finished for all of them
    if args.training.push_to_hub and is_main:
        push_finished_run(output_dir, args.training, args.run.push_test_items)


def memory_shape(model, formulation: str, train_set, eval_sets, training_args, args: Arguments) -> memory.Shape:
    """What the memory estimate needs: the model's size and the largest batches the data will produce."""
    config = model.config
    lengths = sorted(train_set["length"], reverse=True) if len(train_set) else [0]
    eval_lengths = [max(d["length"]) for d in eval_sets if len(d)] or [0]
    kind = get_formulation(formulation)
    options = kind.options_of(train_set[0]) if len(train_set) else 1
    sequences = kind.sequences(options, args.data)
    return memory.Shape(
        parameters=sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()),  # whole under ZeRO-3 too
        hidden=config.hidden_size,
        layers=config.num_hidden_layers, heads=config.num_attention_heads,
        intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size), vocab=config.vocab_size,
        formulation=formulation, choices=sequences[0], eval_choices=sequences[1], vocabulary_head=kind.vocabulary_head,
        # a batch holds at most the rows there are (a requested 128 over 40 training rows is a batch of 40)
        batch=max(1, min(training_args.per_device_train_batch_size, len(train_set))),
        accumulation=training_args.gradient_accumulation_steps, length=lengths[0],
        eval_batch=max(1, min(training_args.per_device_eval_batch_size, max((len(d) for d in eval_sets), default=1))),
        eval_length=max(eval_lengths),
        checkpointing=bool(training_args.gradient_checkpointing),
        attention_probabilities=not (training_args.device.type == "cuda" and
                                     getattr(config, "_attn_implementation", "eager") in ("sdpa", "flash_attention_2")),
        zero_stage=args.deepspeed.stage if args.deepspeed.used else 0, world_size=training_args.world_size,
        bytes_per_activation=2 if (training_args.bf16 or training_args.fp16) else 4)


def train(args: Arguments) -> dict:
    """One run, or one per seed with --seeds, or one per fold with --folds (per seed, with both)."""
    from .folds import run_folds
    from .seeds import run_seeds

    setup_logging(args.training)  # the loops' own lines ("fold 0 of 5: finished already") come before any run's

    def one_configuration(one: Arguments) -> dict:
        return run_folds(one, main) if one.data.folds and one.data.fold is None else main(one)

    return run_seeds(args, one_configuration) if args.run.seeds else one_configuration(args)


def held_out(splits) -> list:
    """Every item a run scores as unseen: validation, test and, with --folds, its fold of the training pool."""
    return splits.validation + splits.test + splits.fold


def tokens_per_sample(dataset) -> float:
    """Mean real (unpadded) tokens one training example feeds the model: all its choices, or its sequence."""
    column = dataset["input_ids"] if "input_ids" in dataset.column_names else None
    if column is None:  # joint keeps question and options apart until the collator
        return float(sum(dataset["length"]) / max(1, len(dataset)))
    total = sum(len(x) if not x or isinstance(x[0], int) else sum(map(len, x)) for x in column)
    return total / max(1, len(dataset))


def attach_contexts(data: RunData, args: Arguments) -> None:
    """Every split's rows with their passages (training questions never retrieve themselves), then the leak check
    on what the model reads (each assembled context against every held-out item), then the rule that open book
    asked for is open book: a run where no question received a context stops, with counts and the reasons."""
    book, splits = data.book, data.splits
    attached, records = {}, {}
    named = [("train", splits.train), ("validation", splits.validation), ("test", splits.test)]
    for split, rows in named + ([("fold", splits.fold)] if splits.fold_index else []):
        attached[split], records[split] = book.attach(rows, leave_one_out=split == "train")
    attached, data.context_check = book.guard(attached, held_out(splits), "open book")
    for split in records:
        for row, record in zip(attached[split], records[split]):
            if row.context is None and record["passages"]:
                record.update(passages=[], gold_in_context=False, removed_by_leak_check=True)
    with_context = {split: sum(r.context is not None for r in rows) for split, rows in attached.items()}
    if not any(with_context.values()):
        total = sum(len(rows) for rows in attached.values())
        raise UserError(f"open book ({book.describe()}): none of the {total} questions received a context; "
                        f"{book.why_nothing_found(splits.train + held_out(splits), data.context_check)}")
    logger.info("open book: questions with a context: %s", with_context)
    lengths = [len(p) for rows in attached.values() for r in rows if r.context for p in r.context.split(SEPARATOR)]
    limit = args.data.max_seq_length
    if lengths and median(lengths) > 2 * limit:  # the model would read the start of the first passage only
        raise UserError(f"open book ({book.describe()}): the passages it retrieves are {median(lengths):.0f} "
                        f"characters long (median), over twice what the model reads (--max_seq_length {limit} tokens, "
                        f"about a character each); use --passage_chars {limit} or less")
    by_id = {r.id: r for split, rows in attached.items() if split != "train" for r in rows}
    data.evaluated = {name: [by_id[r.id] for r in rows] for name, rows in data.evaluated.items()}
    data.splits = replace(splits, train=attached["train"], validation=attached["validation"], test=attached["test"],
                          fold=attached.get("fold", []))
    data.contexts = records
    for name, rows in (data.extra.held_out if data.extra else {}).items():  # read as their training rows are
        guarded, _ = book.guard({"slice": book.attach(rows, leave_one_out=True)[0]}, held_out(splits), "open book")
        data.extra.held_out[name] = guarded["slice"]

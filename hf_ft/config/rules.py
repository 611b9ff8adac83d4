"""The rules of a training command line: what a setting may be (ranges), which flags need or exclude others, the
defaults that depend on other settings or the machine, and the values transformers would take now and fail on
later. Each refusal is one line; all of them are made before any work."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from ..core import validation
from ..core.deepspeed_config import DeepSpeedPlan
from ..core.errors import UserError
from ..inputs.formulations import get_formulation
from ..inputs.modeling import kernels_problem
from . import flags
from .fields import ConfigError, DataArguments, RetrievalArguments


def derived_values(values: dict, given: set[str], plan: DeepSpeedPlan, cuda: bool) -> dict:
    """Defaults that depend on other arguments or on the machine (pure: the values to set, nothing else)."""
    derived = {}
    if not get_formulation(values["formulation"]).scores_options:  # no accuracy to select the best model on
        for key, value in (("metric_for_best_model", "loss"), ("greater_is_better", False)):
            if key not in given:
                derived[key] = value
    # No validation split asked for (--validation_fraction 0, or a zero validation share in --split_ratios):
    # no evaluation during training, and no best model to load at its end.
    validation_share = DataArguments(split_ratios=values["split_ratios"]).ratios()[1]  # checked already
    if 0 in (values["validation_fraction"], validation_share) and not values["validation_file"]:
        for key, value in (("eval_strategy", "no"), ("load_best_model_at_end", False), ("eval_on_start", False)):
            if key not in given:
                derived[key] = value
    if values["auto_bf16"] and cuda and not values["use_cpu"] and not values["fp16"] and "bf16" not in given:
        import torch

        derived["bf16"] = bool(torch.cuda.is_bf16_supported())
    if not cuda and not plan.used and not values["use_cpu"]:
        # Without CUDA, transformers 5 + accelerate see a launcher's processes as independent one-process
        # runs unless use_cpu is set; with it they form a real gloo process group.
        derived["use_cpu"] = True
    derived["deepspeed"] = plan.config
    return derived


def refuse_a_metric_the_run_cannot_report(values: dict) -> None:
    """--formulation mlm evaluates a masked-LM loss, no accuracy: a best-model metric other than the loss
    would be looked up in vain at the first evaluation (a KeyError hours in)."""
    metric = str(values.get("metric_for_best_model") or "loss")
    formulation = values["formulation"]
    if not get_formulation(formulation).scores_options and metric.removeprefix("eval_") != "loss":
        raise ConfigError(f"--metric_for_best_model {metric}: --formulation {formulation} reports only the loss; "
                          f"use --metric_for_best_model loss (the default for {formulation})")


def best_model_metrics() -> list[str]:
    """What an evaluation of a multiple-choice run reports (hf_ft/metrics.py), as --metric_for_best_model
    may name it (with or without `eval_`)."""
    from ..task.subjects import CATEGORIES

    return ["loss", "accuracy", "accuracy_macro", "tmmlu_average",
            *[f"accuracy_{c}" for c in CATEGORIES], *[f"accuracy_macro_{c}" for c in CATEGORIES]]


# TrainingArguments fields transformers reads as a JSON object; the two marked True may also name a JSON file.
JSON_OBJECT_FLAGS = {"lr_scheduler_kwargs": False, "gradient_checkpointing_kwargs": False,
                     "activation_checkpointing_kwargs": False, "accelerator_config": True, "fsdp_config": True}


def checkpoint_options() -> set[str]:
    """The keyword options torch.utils.checkpoint.checkpoint takes (what --gradient_checkpointing_kwargs may set)."""
    import inspect

    import torch.utils.checkpoint

    return {name for name, p in inspect.signature(torch.utils.checkpoint.checkpoint).parameters.items()
            if p.kind == p.KEYWORD_ONLY} | {"preserve_rng_state"}  # read from **kwargs


def training_value_problems(values: dict) -> list[str]:
    """Values transformers would take here and fail on hours later, or that name something that does not
    exist: a best-model metric the run never reports, a tracker, a JSON option, optimizer arguments."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from ..inputs.modeling import _override_items

    problems = []
    metric = values.get("metric_for_best_model")
    if metric and get_formulation(values["formulation"]).scores_options and \
            metric.removeprefix("eval_") not in best_model_metrics():
        problems.append(f"--metric_for_best_model {metric!r}: not reported by an evaluation (choose from "
                        f"{', '.join(best_model_metrics())})")
    from transformers.integrations import get_available_reporting_integrations

    trackers = values.get("report_to")
    for name in (trackers if isinstance(trackers, list) else [trackers] if trackers else []):
        if name not in (*INTEGRATION_TO_CALLBACK, "all", "none"):
            problems.append(f"--report_to {name!r}: not a tracker transformers knows ({', '.join(['none', 'all', *sorted(INTEGRATION_TO_CALLBACK)])})")
        elif name not in ("all", "none") and name not in get_available_reporting_integrations():
            problems.append(f"--report_to {name}: its package is not installed here (pip install {name}, or "
                            "`pip install hf_ft[tracking]` for tensorboard and trackio)")
    checkpointing = values.get("gradient_checkpointing_kwargs")
    if isinstance(checkpointing, str) and checkpointing.strip().startswith("{"):
        try:
            unknown = sorted(set(json.loads(checkpointing)) - checkpoint_options())
        except (ValueError, TypeError):
            unknown = []  # not a JSON object: said below
        if unknown:
            problems.append(f"--gradient_checkpointing_kwargs: {', '.join(unknown)}: not an option of "
                            f"torch.utils.checkpoint ({', '.join(sorted(checkpoint_options()))})")
    patience, epochs = values.get("early_stopping_patience"), values.get("num_train_epochs")
    if patience and values.get("eval_strategy") == "epoch" and values.get("max_steps", -1) <= 0 and epochs \
            and patience >= epochs:
        problems.append(f"--early_stopping_patience {patience}: a run of {epochs:g} epoch(s) evaluates {epochs:g} "
                        "time(s), so it could never stop early; use fewer, or train longer")
    for name in values.get("include_for_metrics") or []:
        if name not in ("inputs", "loss"):
            problems.append(f"--include_for_metrics {name!r}: choose from inputs, loss")
    for name, may_be_file in JSON_OBJECT_FLAGS.items():
        value = values.get(name)
        if not isinstance(value, str) or not value:
            continue
        if may_be_file and not value.lstrip().startswith("{"):
            if not Path(value).is_file():
                problems.append(f"--{name} {value}: neither a JSON object nor a JSON file")
            continue
        try:
            if not isinstance(json.loads(value), dict):
                raise ValueError
        except ValueError:
            problems.append(f"--{name} {value!r}: need a JSON object, e.g. '{{\"key\": 1}}'")
    optim_args = values.get("optim_args")
    if optim_args and any("=" not in item for item in optim_args.replace(" ", "").split(",")):
        problems.append(f"--optim_args {optim_args!r}: need key=value pairs separated by commas")
    if values.get("config_overrides"):
        try:
            _override_items(values["config_overrides"])
        except UserError as e:
            problems.append(str(e))
    return problems


def refuse_early_stopping_without_evaluation(values: dict) -> None:
    """Early stopping watches the evaluations of the best-model metric: with none (--eval_strategy no, or no
    validation split) or without loading the best model at the end, it cannot do what it says."""
    if values["early_stopping_patience"] is None:
        return
    if str(values["eval_strategy"]).split(".")[-1].lower() == "no":
        raise ConfigError("--early_stopping_patience: needs evaluations to watch (a validation split and "
                          "--eval_strategy epoch or steps)")
    if not values["load_best_model_at_end"]:
        raise ConfigError("--early_stopping_patience with --load_best_model_at_end false: the run would end on "
                          "the model that stopped improving; keep --load_best_model_at_end true")


# Every numeric training flag's range, declared once (hf_ft/validation.py checks them, NaN and infinities too).
TRAINING_RULES = {
    **validation.SHARED,
    **{name: validation.at_least(1) for name in (
        "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
        "max_eval_samples", "max_test_samples", "eval_accumulation_steps")},
    "split_seed": validation.SEED,
    "folds": validation.at_least(2, "need 2 or more folds (each fold is scored by the run that trained on the others)"),
    "fold": validation.at_least(0, "need a fold number from 0 (folds are numbered 0 to K-1)"),
    "data_seed": validation.SEED,
    "learning_rate": validation.positive("need a positive learning rate"),
    "num_train_epochs": validation.Rule(need="need a finite number of epochs"),
    "logging_steps": validation.STEPS,
    "eval_steps": validation.STEPS,
    "save_steps": validation.STEPS,
    "warmup_steps": validation.Rule(low=0, need="need 0 or more (below 1: a share of the run)", steps=True),
    "save_total_limit": validation.at_least(1, "need 1 or more (keep at least one checkpoint to resume from)"),
    "validation_fraction": validation.share(0, 1, open_high=True),
    "mlm_probability": validation.share(0, 1, open_low=True, open_high=True),
    "weight_decay": validation.Rule(low=0, need="need 0 or more"),
    "max_grad_norm": validation.Rule(low=0, need="need 0 or more (0: no clipping)"),
    "adam_epsilon": validation.positive(),
    "adam_beta1": validation.share(0, 1, open_high=True),
    "adam_beta2": validation.share(0, 1, open_high=True),
    "label_smoothing_factor": validation.share(0, 1, open_high=True),
    "dataloader_num_workers": validation.at_least(0),
    "preprocessing_num_workers": validation.at_least(1, "need 1 or more processes (leave it out for one)"),
    "profile_steps": validation.at_least(0),
    "pad_to_multiple_of": validation.Rule(1, 512, "need a whole number from 1 to 512", integer=True),
    "early_stopping_threshold": validation.Rule(low=0, need="need a finite number of 0 or more"),
    "early_stopping_patience": validation.at_least(1, "need 1 or more evaluations"),
    "retrieval_k": validation.at_least(1, "need 1 or more passages"),
    "passage_chars": validation.at_least(20, "need 20 or more characters"),
    "passage_overlap": validation.at_least(0),
}


def refuse_conflicts(values: dict, given: set) -> None:
    """Two flags of which one would be silently ignored, a flag without the one (or the value) it works with, a
    flag whose effect hf_ft replaces, a file whose rows would end up in another role: refused in one line each
    before any work (the declarations: hf_ft.config.flags)."""
    problems = flags.combination_problems(values, given) + flags.mode_problems(values, given)
    if problems:
        raise ConfigError(validation.refusal(problems))


# Flags that name a folder to read from or write into (the data and model folders are checked where they are read).
FOLDER_FLAGS = ("cache_dir", "logging_dir")


def refuse_nonsense(values: dict, cuda: bool, given: set) -> None:
    """Settings that cannot make sense, refused before anything heavy starts (one line each)."""
    problems = validation.problems(values, TRAINING_RULES)
    problems += validation.finite_floats(values, [n for n in values if n not in TRAINING_RULES])
    problems += validation.text_problems(values, given, own=("output_dir",))
    problems += validation.revision_problems(values)
    problems += [f"--{name} {values[name]}: is a file, not a folder" for name in FOLDER_FLAGS
                 if values.get(name) and Path(values[name]).is_file()]
    problems += training_value_problems(values)
    if values["max_steps"] <= 0 and values["num_train_epochs"] <= 0:
        problems.append(f"--num_train_epochs {values['num_train_epochs']}: need a positive number of epochs "
                        "(or --max_steps N)")
    try:
        train, _, test = DataArguments(split_ratios=values["split_ratios"]).ratios()
        if train == 0:
            problems.append(f"--split_ratios {values['split_ratios']}: the training share is 0")
        if test == 0 and not values["test_file"]:
            problems.append(f"--split_ratios {values['split_ratios']}: the test share is 0, so there would be no "
                            "held-out questions to report")
    except ConfigError as e:
        problems.append(str(e))
    if values["fp16"] and (not cuda or values["use_cpu"]):
        problems.append("--fp16: needs a GPU, and this run is on the CPU; train in fp32 here")
    kernels = kernels_problem(values["use_kernels"], values["use_cpu"])
    if kernels:
        problems.append(kernels)
    if values["remove_unused_columns"]:
        problems.append("--remove_unused_columns true: hf_ft's collators need the extra columns (length, ids)")
    if values["hub_token"]:
        problems.append("--hub_token is not accepted: it would be saved with the run's arguments; set HF_TOKEN "
                        "or run `hf auth login` instead")
    if values["push_to_hub"] and values["hub_model_id"]:
        from ..publish.hub import check_repo_id

        try:
            check_repo_id(values["hub_model_id"], "--hub_model_id")
        except UserError as e:
            problems.append(str(e))
    output_dir = values["output_dir"]
    if output_dir is not None and not str(output_dir).strip():
        problems.append(f"--output_dir '{output_dir}': empty; name the run's folder")
    elif output_dir and Path(output_dir).exists() and not Path(output_dir).is_dir():
        problems.append(f"--output_dir {output_dir}: is a file, not a folder")
    if values["fold"] is not None and values["folds"] and values["fold"] >= values["folds"] >= 2:
        problems.append(f"--fold {values['fold']} with --folds {values['folds']}: folds are numbered 0 to "
                        f"{values['folds'] - 1}")
    if values["seeds"]:
        try:
            seeds = [int(s) for s in values["seeds"].split(",") if s.strip()]
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError
            out_of_range = [s for s in seeds if validation.SEED.problem("seeds", s)]
            if out_of_range:
                problems.append(f"--seeds {values['seeds']}: seed {out_of_range[0]}: {validation.SEED.need}")
        except ValueError:
            problems.append(f"--seeds {values['seeds']}: need distinct integers separated by commas, e.g. 1,2,3")
    problems += RetrievalArguments(**{f.name: values[f.name] for f in fields(RetrievalArguments)}).problems()
    from ..extra.specs import spec_problems

    problems += spec_problems(values["extra_data"])
    if problems:
        raise ConfigError(validation.refusal(problems))


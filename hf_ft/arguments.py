"""Command-line arguments: our dataclasses next to `TrainingArguments`, with defaults fit for TMMLU+.

`python run_qa.py config.yaml --learning_rate 3e-5`: a JSON/YAML file supplies defaults, the command
line overrides them. `parse_args` reads the command line once, derives what depends on it (bf16 on a
capable GPU, the CPU without CUDA, the DeepSpeed plan), refuses settings that cannot make sense, and
builds each dataclass once. TrainingArguments stays the one place the Trainer reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments

from . import deepspeed_config, processes, validation
from .deepspeed_config import DeepSpeedPlan
from .errors import UserError, did_you_mean
from .formulations import FORMULATIONS
from .modeling import KERNELS_FLAG_HELP, kernels_problem
from .preprocessing import JOINT_EVAL_ROTATIONS
from .sources import HUB_DATASET, HUB_DEFAULT_REVISION



@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="bert-base-chinese",
        metadata={"help": "Hub id or local path of the encoder to fine-tune (any AutoModelForMultipleChoice model)."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's own."})
    model_revision: str = field(default="main", metadata={"help": "Hub branch, tag or commit of the model."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data are cached."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the hub. Off unless you turn it on."}
    )
    use_kernels: bool = field(default=False, metadata={"help": KERNELS_FLAG_HELP})
    formulation: str = field(
        default="per_choice",
        metadata={"help": "per_choice: 4 sequences (question, option) scored by AutoModelForMultipleChoice; "
                          "joint: one sequence with all 4 options, 4-way AutoModelForSequenceClassification; "
                          "mlm: masked-LM domain adaptation on the training questions with their correct answers "
                          "(scored zero-shot by pseudo-log-likelihood).", "choices": list(FORMULATIONS)},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Change settings of the loaded model's config before training, as "
                          "`key=value,key=value` (e.g. `hidden_dropout_prob=0,attention_probs_dropout_prob=0`) or "
                          "a JSON object (`{\"classifier_dropout\": 0.2}`); only keys the config already has (one "
                          "whose value is None takes the value read as JSON). Saved with the fine-tuned model."},
    )


@dataclass
class DataArguments:
    subjects: str = field(
        default="all",
        metadata={"help": "Comma-separated: `all`, categories (STEM, humanities, social_sciences, other), "
                          "subject names, or a mix."},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "A folder in the hub's layout: <subject>_{dev,train,val,test}.csv."}
    )
    train_file: str | None = field(default=None, metadata={"help": "CSV/JSON/JSONL with question,A,B,C,D,answer."})
    validation_file: str | None = field(default=None, metadata={"help": "Optional validation file."})
    test_file: str | None = field(default=None, metadata={"help": "Optional test file."})
    dataset_name: str = field(default=HUB_DATASET, metadata={"help": "Hub dataset (used without data_dir/files)."})
    dataset_revision: str = field(
        default=HUB_DEFAULT_REVISION,
        metadata={"help": "Hub dataset revision (branch, tag or commit); resolved to a commit SHA and recorded. "
                          "The default is a pinned commit of ikala/tmmluplus (see the README)."},
    )
    split_scheme: str = field(
        default="auto",
        metadata={"help": "official: train on dev+val (minus a validation slice), test on test; resplit: pool, "
                          "shuffle and split by --split_ratios; auto: official for the TMMLU+ layout, resplit "
                          "for a single flat file.", "choices": ["auto", "official", "resplit"]},
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "official scheme: share of dev+val held out for validation, in [0, 1) "
                                       "(0: no validation; evaluation during training is then off)."}
    )
    split_ratios: str = field(default="0.7,0.25,0.05", metadata={"help": "resplit scheme: train,validation,test."})
    on_bad_rows: str = field(
        default="error",
        metadata={"help": "error: stop and list every bad row; skip: leave them out and write "
                          "output_dir/rejected_rows.jsonl.", "choices": ["error", "skip"]},
    )
    max_seq_length: int = field(
        default=512, metadata={"help": "Longest input in tokens (capped at the model's limit); only the question "
                                       "is truncated, never an option."}
    )
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={"help": "Pad each batch's length up to a multiple of this (e.g. 64): fewer distinct batch shapes, "
                          "so torch.compile graphs and GPU kernel plans are reused, for some padding. Default: no "
                          "rounding."},
    )
    max_unk_rate: float = field(
        default=0.05, metadata={"help": "Refuse a tokenizer that maps more than this share of the data's characters "
                                        "to its unknown token (a model folder without its own vocabulary)."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "--formulation mlm: share of tokens masked."})
    joint_rotations: int = field(
        default=4,
        metadata={"help": "--formulation joint, training only: each question enters its batch this many times, "
                          "its shuffled options rotated so the gold answer sits in a different slot each time "
                          "(1: one random order). Rotations make the head compare options instead of learning "
                          "content alone; each costs one more sequence."},
    )
    joint_eval_rotations: int = field(
        default=JOINT_EVAL_ROTATIONS,
        metadata={"help": "--formulation joint, validation and test: score each question in this many rotations of "
                          "its option order and average each option's log-probability over them, which cancels "
                          "slot bias (1: one pass, fastest). The same option exists in evaluate and predict."},
    )
    drop_question: bool = field(
        default=False,
        metadata={"help": "Train and evaluate without the question (a choices-only baseline: what the options alone "
                          "give away). Used by `evaluate --audit`."},
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on a seeded, subject-stratified sample of this many validation "
                                        "questions (quicker runs; recorded)."})
    max_test_samples: int | None = field(
        default=None, metadata={"help": "Report test accuracy at the end of training on a seeded, subject-stratified "
                                        "sample of this many test questions (test_qa_data.json keeps them all)."})
    split_seed: int | None = field(
        default=None, metadata={"help": "Seed of the train/validation(/test) split (default: --seed). --seeds keeps "
                                        "it fixed so every seed is tested on the same questions."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    extra_data: list[str] = field(default_factory=list, metadata={
        "help": "Extra training sources (other Chinese exam sets), each a hub dataset id or a local path with "
                "optional settings, e.g. 'ceval/ceval-exam?splits=val,dev' 'haonan-li/cmmlu?cap=5000' "
                "'dataset-org/c3' (settings: adapter, configs, splits, revision, subjects, exclude, cap, weight, "
                "convert, columns, license, name; see the README). Simplified text is converted to Taiwan "
                "Traditional (OpenCC s2twp); every row is checked against all of TMMLU+ first (--contamination); "
                "extra rows join the training split only."})
    contamination: str = field(default="drop", metadata={
        "help": "An extra row that copies a question the run evaluates on (exactly or nearly, in any script): "
                "`drop` it (counted and recorded), stop with an `error`, or `keep` it (recorded; results on "
                "those questions are then not held out).", "choices": ["drop", "error", "keep"]})

    def ratios(self) -> tuple[float, float, float]:
        try:
            parts = tuple(float(x) for x in self.split_ratios.split(","))
        except ValueError:
            parts = ()
        if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
            raise ConfigError(f"--split_ratios '{self.split_ratios}': need three non-negative numbers summing to 1")
        return parts


@dataclass
class RunArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train from scratch into a non-empty output_dir (otherwise a finished or foreign "
                          "output_dir is refused and this run's own unfinished one is resumed)."},
    )
    auto_bf16: bool = field(
        default=True, metadata={"help": "Use bf16 on GPUs that support it (--no_auto_bf16 turns it off). "
                                        "Never on CPU, where it is ~10x slower."}
    )
    require_deepspeed: bool = field(
        default=False, metadata={"help": "Fail instead of falling back to plain PyTorch if DeepSpeed cannot run."}
    )
    skip_memory_check: bool = field(
        default=False, metadata={"help": "Train even when the estimated peak memory (printed at the start of every "
                                         "run) is above 90%% of the free RAM or GPU memory."}
    )
    trust_deepspeed_checkpoint: bool = field(
        default=False,
        metadata={"help": "Resume DeepSpeed from a checkpoint this run did not write. RISK: DeepSpeed unpickles its "
                          "checkpoint files, so a checkpoint someone else prepared can run their code."},
    )
    sort_eval_by_length: bool = field(
        default=True, metadata={"help": "Evaluate in length order so batches carry little padding."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop when the best-model metric (--metric_for_best_model, validation "
                                        "accuracy by default) has not improved for this many evaluations "
                                        "(transformers' EarlyStoppingCallback); the best checkpoint is kept."}
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "With --early_stopping_patience: an improvement must exceed this much."}
    )
    push_test_items: bool = field(
        default=False, metadata={"help": "With --push_to_hub: also push the test questions' text and the model's "
                                         "answers (by default only item ids, content hashes and correctness)."}
    )
    profile_steps: int = field(
        default=0,
        metadata={"help": "Profile this many training steps after 5 warm-up steps (torch.profiler, each phase closed "
                          "by a device sync): data wait, forward+backward, optimizer, device busy time, kernel "
                          "launches and host-device syncs per step, the costliest operators, and each step's batch "
                          "shape; written to output_dir/step_profile.json. 0: off."},
    )
    cudnn_attention: bool = field(
        default=False,
        metadata={"help": "Let SDPA use cuDNN's attention kernel on CUDA. Off by default: it builds an execution plan "
                          "for every new batch shape (see the README's GPU section)."},
    )
    seeds: str | None = field(
        default=None,
        metadata={"help": "Train the same configuration once per seed (e.g. `1,2,3`), each run in "
                          "output_dir/seed-<n> (resumable one by one), then write output_dir/seeds_summary.json."},
    )


@dataclass
class RetrievalArguments:
    """Open book: passages retrieved for each question go into the context segment of its input, the same way
    at training, evaluation and predict time."""

    retrieval_corpus: str | None = field(default=None, metadata={
        "help": "Where passages come from: a local folder or file (.txt/.md, or JSONL/CSV/parquet with a text "
                "column), a hub dataset id (e.g. wikimedia/wikipedia with --retrieval_corpus_config 20231101.zh), "
                "or `training_pool` (similar training questions with their answers, leave-one-out). Every passage "
                "is checked against every validation and test item first (--leak_policy)."})
    retrieval_contexts: str | None = field(default=None, metadata={
        "help": "Precomputed contexts instead of a corpus: JSONL of {\"id\": item id, \"passages\": [{\"id\", "
                "\"text\", \"score\"}]}, retrieved with any engine (Elasticsearch, pyserini)."})
    retrieval_corpus_config: str | None = field(default=None, metadata={"help": "The hub corpus's config."})
    retrieval_corpus_revision: str | None = field(default=None, metadata={
        "help": "The hub corpus's revision (resolved to its commit and recorded)."})
    retrieval_corpus_split: str = field(default="train", metadata={"help": "The hub corpus's split."})
    retrieval_text_column: str = field(default="text", metadata={"help": "The text column of a table corpus."})
    retrieval_k: int = field(default=5, metadata={"help": "Passages per question."})
    retrieval_query: str = field(default="question_options", metadata={
        "help": "What is searched for: `question_options` (question and all options) or `question`.",
        "choices": ["question_options", "question"]})
    passage_chars: int = field(default=200, metadata={"help": "Corpus texts are split into passages of this many "
                                                              "characters..."})
    passage_overlap: int = field(default=50, metadata={"help": "...overlapping by this many."})
    leak_policy: str = field(default="drop", metadata={
        "help": "A passage that copies a validation or test item: `drop` it (recorded), stop with an `error`, or "
                "`keep` it (recorded; its items' open-book results read the answer key).",
        "choices": ["drop", "error", "keep"]})

    def settings(self):
        from .retrieval.contexts import RetrievalSettings

        return RetrievalSettings(
            corpus=self.retrieval_corpus, contexts=self.retrieval_contexts, config=self.retrieval_corpus_config,
            revision=self.retrieval_corpus_revision, split=self.retrieval_corpus_split,
            text_column=self.retrieval_text_column, k=self.retrieval_k, query=self.retrieval_query,
            passage_chars=self.passage_chars, passage_overlap=self.passage_overlap, leak_policy=self.leak_policy)


# Defaults for this task where transformers' generic ones are wrong for it: the one place they live.
TASK_DEFAULTS = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "steps",
    "logging_steps": 10,
    "logging_first_step": True,
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "greater_is_better": True,
    "report_to": "none",
    "average_tokens_across_devices": False,  # would multiply a choice head's loss by the process count
    # Trainer's default checks every step's loss for NaN with bool(tensor): a host-device sync per step, which
    # stops the host from queueing the next step. A NaN loss is logged as NaN instead of being papered over.
    "logging_nan_inf_filter": False,
    "train_sampling_strategy": "group_by_length",  # uses our `length` column
    "remove_unused_columns": False,  # our collators pick the model inputs; `length` must reach the sampler
    "per_device_eval_batch_size": 32,
    "num_train_epochs": 3.0,
    "learning_rate": 3e-5,
    "warmup_steps": 0.1,  # transformers 5: a value below 1 is a share of the training steps
    "hub_strategy": "end",  # one push of the finished model (with our card), not one per checkpoint
    # A resumed run restores stateful callbacks (early stopping's patience counter, the stop flag), so it
    # stops where the uninterrupted run stops.
    "restore_callback_states_from_checkpoint": True,
    # --report_to trackio logs locally; no static Space (public unless made private) is made at a push.
    "trackio_static_space_id": False,
}

ARGUMENT_CLASSES = (ModelArguments, DataArguments, RetrievalArguments, RunArguments, TrainingArguments)
# Flags that take a list (`--report_to a b`), read now: HfArgumentParser rewrites a field's type when it builds.
LIST_FLAGS = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls) if "list" in str(f.type).lower()}
MAPPING_FLAGS = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls) if "dict" in str(f.type).lower()}
# Flags transformers 4 had and 5 dropped, or hf_ft had: what to type instead.
RENAMED = {
    "--task": "--formulation mlm (masked-LM adaptation) or --formulation per_choice/joint",
    "--evaluation_strategy": "--eval_strategy",
    "--no_cuda": "--use_cpu",
    "--group_by_length": "--train_sampling_strategy group_by_length (the default)",
    "--warmup_ratio": "--warmup_steps with a value below 1 (a share of the training steps)",
}


class ConfigError(UserError):
    pass


@dataclass
class Arguments:
    """Everything a training run is told, parsed once."""

    model: ModelArguments
    data: DataArguments
    run: RunArguments
    training: TrainingArguments
    deepspeed: DeepSpeedPlan
    retrieval: RetrievalArguments = field(default_factory=RetrievalArguments)
    given: dict = field(default_factory=dict)  # what the user set (paths made absolute): hf_ft_run.json records it


def load_config_file(path: str) -> dict:
    """A JSON or YAML file of argument names → values."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    except Exception as e:
        raise ConfigError(f"{path}: not valid {p.suffix.lstrip('.').upper()}: {str(e).splitlines()[0]}") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of argument names to values, got {type(config).__name__}")
    known = {f.name: f for cls in ARGUMENT_CLASSES for f in fields(cls)}
    for key in config:
        if key not in known:
            raise ConfigError(f"{path}: unknown argument '{key}'{did_you_mean(key, known)}")
    for key, value in config.items():
        if isinstance(value, list):
            if key in COMMA_LISTS:  # `subjects: [music, physics]` is `--subjects music,physics`
                config[key] = ",".join(str(v) for v in value)
            elif key not in LIST_FLAGS:
                raise ConfigError(f"{path}: {key}: a list where one value is expected")
        elif isinstance(value, dict) and key not in MAPPING_FLAGS and key != "deepspeed":
            raise ConfigError(f"{path}: {key}: a mapping where one value is expected")
    return config


# Flags whose one value is a comma-separated list: a config file may give them as a YAML or JSON list.
COMMA_LISTS = ("subjects", "split_ratios", "seeds")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def build_parser(config: dict | None = None) -> HfArgumentParser:
    parser = HfArgumentParser(ARGUMENT_CLASSES, allow_abbrev=False)  # `--learning` is a typo, not a flag
    parser.set_defaults(**TASK_DEFAULTS)
    if config:
        parser.set_defaults(**config)

    def one_line_error(message: str):  # argparse would print the whole usage of TrainingArguments
        raise ConfigError(message)

    parser.error = one_line_error
    return parser


def read_command_line(parser: HfArgumentParser, argv: list[str]) -> tuple[dict, set[str]]:
    """argv → {argument: value} in one argparse pass, and the names the user gave explicitly."""
    namespace, unknown = parser.parse_known_args(argv)
    names = [f.name for cls in ARGUMENT_CLASSES for f in fields(cls) if f.init]
    flags = [f"--{name}" for name in names]
    for arg in unknown:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            hint = f" (use {RENAMED[name]})" if name in RENAMED else did_you_mean(name, sorted(flags))
            raise ConfigError(f"unknown argument {name}{hint}; `python run_qa.py --help` lists them all")
    if unknown:
        raise ConfigError(f"unexpected value {unknown[0]!r}: every value follows a --flag")
    spelled = {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}  # --train-file too
    given = {name for name in names if name in spelled or f"no_{name}" in spelled}
    return vars(namespace), given


def derived_values(values: dict, given: set[str], plan: DeepSpeedPlan, cuda: bool) -> dict:
    """Defaults that depend on other arguments or on the machine (pure: the values to set, nothing else)."""
    derived = {}
    if values["formulation"] == "mlm":  # no accuracy to select the best model on
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
    if values["formulation"] == "mlm" and metric.removeprefix("eval_") != "loss":
        raise ConfigError(f"--metric_for_best_model {metric}: --formulation mlm reports only the loss; "
                          "use --metric_for_best_model loss (the default for mlm)")


def best_model_metrics() -> list[str]:
    """What an evaluation of a multiple-choice run reports (hf_ft/metrics.py), as --metric_for_best_model
    may name it (with or without `eval_`)."""
    from .subjects import CATEGORIES

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

    from .modeling import _override_items

    problems = []
    metric = values.get("metric_for_best_model")
    if metric and values["formulation"] != "mlm" and metric.removeprefix("eval_") not in best_model_metrics():
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
    if values.get("label_names") not in (None, [], ["labels"]):
        problems.append(f"--label_names {values['label_names']}: hf_ft's collators name the labels `labels`; "
                        "leave the flag out")
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
    "profile_steps": validation.at_least(0),
    "pad_to_multiple_of": validation.Rule(1, 512, "need a whole number from 1 to 512", integer=True),
    "early_stopping_threshold": validation.Rule(low=0, need="need a finite number of 0 or more"),
    "early_stopping_patience": validation.at_least(1, "need 1 or more evaluations"),
    "retrieval_k": validation.at_least(1, "need 1 or more passages"),
    "passage_chars": validation.at_least(20, "need 20 or more characters"),
    "passage_overlap": validation.at_least(0),
}


# Flags that do nothing next to another one the user also gave: (given, ignored because of it, why).
CONFLICTS = [
    *[("data_dir", name, "a run reads one source: the folder, or the files") for name in (
        "train_file", "validation_file", "test_file")],
    *[(source, name, "the data comes from there, not from the hub") for source in (
        "data_dir", "train_file") for name in ("dataset_name", "dataset_revision")],
]


# Flags that do something only next to another: (given, needs one of these, what it is for).
_CORPUS_SEARCH = ("retrieval_corpus_config", "retrieval_corpus_revision", "retrieval_corpus_split",
                  "retrieval_text_column", "passage_chars", "passage_overlap", "retrieval_query")
REQUIRES = [
    *[(name, ("retrieval_corpus",), "it sets how the corpus is read and searched") for name in _CORPUS_SEARCH],
    *[(name, ("retrieval_corpus", "retrieval_contexts"), "it sets the passages each question reads")
      for name in ("retrieval_k", "leak_policy")],
    ("push_test_items", ("push_to_hub",), "it sets what a push sends"),
    ("contamination", ("extra_data",), "it sets what happens to extra rows that copy evaluated questions"),
    ("early_stopping_threshold", ("early_stopping_patience",), "it sets what early stopping counts as better"),
    ("gradient_checkpointing_kwargs", ("gradient_checkpointing",), "it sets how checkpointing recomputes"),
]


def refuse_conflicts(given: set) -> None:
    """Two flags of which one would be silently ignored, or a flag without the one it works with, refused
    in one line each before any work."""
    problems = [f"--{ignored} with --{source}: {why}; drop one" for source, ignored, why in CONFLICTS
                if source in given and ignored in given]
    problems += [f"--{name} without --{' or --'.join(needs)}: has no effect ({why})" for name, needs, why in REQUIRES
                 if name in given and not any(n in given for n in needs)]
    if problems:
        raise ConfigError(validation.refusal(problems))


def refuse_nonsense(values: dict, cuda: bool, given: set) -> None:
    """Settings that cannot make sense, refused before anything heavy starts (one line each)."""
    problems = validation.problems(values, TRAINING_RULES)
    problems += validation.finite_floats(values, [n for n in values if n not in TRAINING_RULES])
    problems += validation.text_problems(values, given, own=("output_dir",))
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
        from .hub import check_repo_id

        try:
            check_repo_id(values["hub_model_id"], "--hub_model_id")
        except UserError as e:
            problems.append(str(e))
    output_dir = values["output_dir"]
    if output_dir is not None and not str(output_dir).strip():
        problems.append(f"--output_dir '{output_dir}': empty; name the run's folder")
    elif output_dir and Path(output_dir).exists() and not Path(output_dir).is_dir():
        problems.append(f"--output_dir {output_dir}: is a file, not a folder")
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
    problems += RetrievalArguments(**{f.name: values[f.name] for f in fields(RetrievalArguments)}).settings().problems()
    from .extra.specs import spec_problems

    problems += spec_problems(values["extra_data"])
    if problems:
        raise ConfigError(validation.refusal(problems))


def parse_args(argv: list[str] | None = None) -> Arguments:
    """`[config.{json,yaml}] [--flag value ...]` → Arguments, parsed once.

    1. the command line (and config file) are read in one argparse pass;
    2. the DeepSpeed plan and the machine-dependent defaults are derived from them (pure);
    3. nonsense is refused (transformers' own DeepSpeed mismatch check included) while nothing has changed;
    4. the process is prepared for the plan (hf_ft.processes: TrainingArguments builds the process group
       as it is constructed, so this comes first), and each dataclass is built once.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    config = {}
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith(CONFIG_SUFFIXES):
        config = load_config_file(argv.pop(0))
    elif argv and not argv[0].startswith("-") and (Path(argv[0]).suffix[1:].isalpha() or Path(argv[0]).is_file()):
        raise ConfigError(f"{argv[0]}: a config file is YAML (.yaml, .yml) or JSON (.json); "
                          f"{Path(argv[0]).suffix or 'a file without a suffix'} is not read")
    parser = build_parser(config)
    values, given = read_command_line(parser, argv)
    given |= set(config)
    if "output_dir" not in given:
        raise ConfigError("--output_dir is required")
    cuda = processes.cuda_present()
    refuse_nonsense(values, cuda, given)
    refuse_conflicts(given)
    plan = deepspeed_config.plan(values["deepspeed"], require=values["require_deepspeed"],
                                 auto_find_batch_size=values["auto_find_batch_size"], fp16=values["fp16"],
                                 cuda=cuda and not values["use_cpu"])
    explicit = recorded_arguments(values, given)
    values.update(derived_values(values, given, plan, cuda))
    refuse_early_stopping_without_evaluation(values)
    refuse_a_metric_the_run_cannot_report(values)
    problems = deepspeed_config.mismatches(plan, values)
    if problems:
        raise ConfigError(validation.refusal(problems))
    values.update(processes.prepare(plan, values["use_cpu"]))
    model_args, data_args, retrieval_args, run_args, training_args = build_dataclasses(values)
    return Arguments(model_args, data_args, run_args, training_args, plan, retrieval=retrieval_args, given=explicit)


PATH_ARGUMENTS = ("model_name_or_path", "tokenizer_name", "data_dir", "train_file", "validation_file", "test_file",
                  "deepspeed", "output_dir", "cache_dir", "retrieval_corpus", "retrieval_contexts", "extra_data")


def recorded_arguments(values: dict, given: set[str]) -> dict:
    """The arguments the user set, with local paths made absolute, so the run can be repeated from its record
    (the audit's choices-only baseline does). Never a token: --hub_token is refused."""
    from .provenance import map_paths

    recorded = {}
    for name in sorted(given):
        value = values[name]
        if name in PATH_ARGUMENTS:
            value = map_paths(value, lambda p: str(Path(p).resolve()) if p and Path(p).exists() else p)
        recorded[name] = value
    return recorded


def build_dataclasses(values: dict) -> tuple:
    """Each dataclass built once; a value transformers rejects while building TrainingArguments is one line."""
    out = []
    for cls in ARGUMENT_CLASSES:
        names = {f.name for f in fields(cls) if f.init}
        try:
            out.append(cls(**{k: v for k, v in values.items() if k in names}))
        except (ValueError, TypeError, NotImplementedError) as e:
            raise ConfigError(f"invalid arguments: {str(e).strip().splitlines()[0]}") from None
    return tuple(out)

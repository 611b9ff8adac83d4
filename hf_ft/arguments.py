"""Command-line arguments: our dataclasses next to `TrainingArguments`, with defaults fit for TMMLU+.

`python run_qa.py config.yaml --learning_rate 3e-5`: a JSON/YAML file supplies defaults, the
command line overrides them, and `TrainingArguments` stays the one place the Trainer reads.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments

from .errors import UserError
from .data import HUB_DATASET, HUB_DEFAULT_REVISION
from .preprocessing import JOINT_EVAL_ROTATIONS


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
    task: str = field(
        default="multiple_choice",
        metadata={"help": "multiple_choice: fine-tune a choice head; mlm: masked-LM domain adaptation on the "
                          "training questions with their correct answers.", "choices": ["multiple_choice", "mlm"]},
    )
    formulation: str = field(
        default="per_choice",
        metadata={"help": "per_choice: 4 sequences (question, option) scored by AutoModelForMultipleChoice; "
                          "joint: one sequence with all 4 options, 4-way AutoModelForSequenceClassification.",
                  "choices": ["per_choice", "joint"]},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Change settings of the loaded model's config before training, as "
                          "`key=value,key=value` (e.g. `hidden_dropout_prob=0,attention_probs_dropout_prob=0`); "
                          "only keys the config already has. Saved with the fine-tuned model."},
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
        default=HUB_DEFAULT_REVISION, metadata={"help": "Hub dataset revision; resolved to a commit SHA and recorded."}
    )
    split_scheme: str = field(
        default="auto",
        metadata={"help": "official: train on dev+val (minus a validation slice), test on test; resplit: pool, "
                          "shuffle and split by --split_ratios; auto: official for the TMMLU+ layout, resplit "
                          "for a single flat file.", "choices": ["auto", "official", "resplit"]},
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "official scheme: share of dev+val held out for validation."}
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
    mlm_probability: float = field(default=0.15, metadata={"help": "--task mlm: share of tokens masked."})
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
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

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
                          "output_dir is refused and one with checkpoints is resumed)."},
    )
    auto_bf16: bool = field(
        default=True, metadata={"help": "Use bf16 on GPUs that support it (--no_auto_bf16 turns it off). "
                                        "Never on CPU, where it is ~10x slower."}
    )
    require_deepspeed: bool = field(
        default=False, metadata={"help": "Fail instead of falling back to plain PyTorch if DeepSpeed cannot run."}
    )
    sort_eval_by_length: bool = field(
        default=True, metadata={"help": "Evaluate in length order so batches carry little padding."}
    )


# Defaults for this task where transformers' generic ones are wrong for it.
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
    "train_sampling_strategy": "group_by_length",  # uses our `length` column
    "per_device_eval_batch_size": 32,
    "num_train_epochs": 3.0,
    "learning_rate": 3e-5,
    "warmup_steps": 0.1,
    "hub_strategy": "end",  # one push of the finished model (with our card), not one per checkpoint
}

ARGUMENT_CLASSES = (ModelArguments, DataArguments, RunArguments, TrainingArguments)


class ConfigError(UserError):
    pass


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
        raise ConfigError(f"{path}: not valid {p.suffix.lstrip('.').upper()}: {e}") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of argument names to values, got {type(config).__name__}")
    known = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{path}: unknown argument '{key}'{hint}")
    return config


def build_parser(config: dict | None = None) -> HfArgumentParser:
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.set_defaults(**TASK_DEFAULTS)
    if config:
        parser.set_defaults(**config)
    return parser


def _pop_deepspeed(argv: list[str], config: dict) -> tuple[str | None, list[str], dict]:
    """Take --deepspeed out: it is checked (and maybe dropped) before TrainingArguments sees it."""
    argv, config = list(argv), dict(config)
    path = config.pop("deepspeed", None)
    for i, arg in enumerate(argv):
        if arg == "--deepspeed" and i + 1 < len(argv):
            path = argv[i + 1]
            del argv[i:i + 2]
            break
        if arg.startswith("--deepspeed="):
            path = arg.split("=", 1)[1]
            del argv[i]
            break
    return path, argv, config


def parse_args(argv: list[str] | None = None):
    """Parse `[config.{json,yaml}] [--flag value ...]` into the four argument dataclasses.

    A first parse gives the user's choices; defaults that depend on them (bf16 on a capable GPU,
    use_cpu without CUDA, a checked DeepSpeed config) are then set and parsed once more.
    """
    import sys

    from .deepspeed_setup import decide

    argv = list(sys.argv[1:] if argv is None else argv)
    config = {}
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith((".json", ".yaml", ".yml")):
        config = load_config_file(argv.pop(0))
    ds_path, argv, config = _pop_deepspeed(argv, config)
    parser = build_parser(config)
    model_args, data_args, run_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if not training_args.output_dir or (training_args.output_dir == "trainer_output" and "output_dir" not in config
                                        and not any(a.startswith("--output_dir") for a in argv)):
        raise ConfigError("--output_dir is required")
    if training_args.hub_token:
        raise ConfigError("--hub_token is not accepted: it would be saved with the run's arguments; set HF_TOKEN "
                          "or run `hf auth login` instead")
    data_args.ratios()
    for name in ("joint_rotations", "joint_eval_rotations"):
        if getattr(data_args, name) < 1:
            raise ConfigError(f"--{name} {getattr(data_args, name)}: need 1 or more")

    overrides = {}
    if _bf16_wanted(run_args, training_args):
        overrides["bf16"] = True
        training_args.bf16 = True  # so the DeepSpeed check compares against the final value
    deepspeed = decide(ds_path, training_args, run_args)
    if not deepspeed.used and not training_args.use_cpu and not _cuda_present():
        # Without CUDA, transformers 5 + accelerate see a launcher's processes as independent one-process
        # runs unless use_cpu is set; with it they form a real gloo process group.
        overrides["use_cpu"] = True
    if deepspeed.used:
        overrides["deepspeed"] = deepspeed.effective_config
        if deepspeed.configured_state:
            overrides["accelerator_config"] = {"use_configured_state": True}
    if overrides:
        parser.set_defaults(**overrides)
        model_args, data_args, run_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    training_args.hf_ft_deepspeed = deepspeed.record()
    return model_args, data_args, run_args, training_args


def _cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


def _bf16_wanted(run_args: RunArguments, training_args: TrainingArguments) -> bool:
    if not run_args.auto_bf16 or training_args.use_cpu or training_args.bf16 or training_args.fp16:
        return False
    import torch

    return _cuda_present() and torch.cuda.is_bf16_supported()

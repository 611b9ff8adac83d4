"""hf_ft's own arguments, beside transformers' TrainingArguments: each field with its help, and the task defaults
that replace transformers' generic ones. Parsing and the rules live in `arguments` and `rules`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments
from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy

from ..core.errors import UserError
from ..data.sources import HUB_DATASET, HUB_DEFAULT_REVISION
from ..inputs.formulations import FORMULATIONS
from ..inputs.modeling import KERNELS_FLAG_HELP
from ..inputs.preprocessing import JOINT_EVAL_ROTATIONS
from ..retrieval.settings import RetrievalArguments  # noqa: F401  (one of run_qa.py's argument classes)


class ConfigError(UserError):
    pass


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
    folds: int | None = field(
        default=None, metadata={"help": "Cross-fitting: split the training pool (everything but the test split) into "
                                        "this many folds, stratified by subject, and train once per fold in "
                                        "output_dir/fold-<k> on the other folds, scoring the fold it did not see; "
                                        "then output_dir/folds_summary.json pools the out-of-fold accuracy per "
                                        "subject and category (resumable fold by fold, like --seeds)."})
    fold: int | None = field(
        default=None, metadata={"help": "With --folds K: train only fold k (0 to K-1), into output_dir itself (to "
                                        "share the folds among machines; name the folders fold-<k> under one "
                                        "parent for `evaluate`)."})
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


def task_default(name: str, value, why: str):
    """A TrainingArguments field with hf_ft's default for this task; its help is transformers' own plus why."""
    parent = TrainingArguments.__dataclass_fields__[name]
    help_text = f"{parent.metadata.get('help', '').rstrip()} hf_ft's default: {value!r} ({why})."
    return field(default=value, metadata={**parent.metadata, "help": help_text.strip()})


@dataclass
class QATrainingArguments(TrainingArguments):
    """transformers' TrainingArguments with defaults fit for TMMLU+ fine-tuning, as trl's SFTConfig does: the one
    place they live. Runs, benchmarks and tests construct this class; `--flag` still overrides each."""

    eval_strategy: IntervalStrategy | str = task_default("eval_strategy", "epoch", "validation accuracy per epoch")
    save_strategy: SaveStrategy | str = task_default("save_strategy", "epoch", "a checkpoint per evaluation")
    logging_steps: float = task_default("logging_steps", 10, "a loss curve with points on a ~2.5k-question run")
    logging_first_step: bool = task_default("logging_first_step", True, "the curve starts at step 1")
    save_total_limit: int | None = task_default("save_total_limit", 2, "the best and the latest checkpoint")
    load_best_model_at_end: bool = task_default("load_best_model_at_end", True, "the best epoch is the model")
    metric_for_best_model: str | None = task_default("metric_for_best_model", "accuracy", "what the task measures")
    greater_is_better: bool | None = task_default("greater_is_better", True, "accuracy")
    report_to: None | str | list[str] = task_default("report_to", "none", "nothing leaves the machine unless asked")
    average_tokens_across_devices: bool = task_default(
        "average_tokens_across_devices", False, "it would multiply a choice head's loss by the process count")
    logging_nan_inf_filter: bool = task_default(
        "logging_nan_inf_filter", False, "the filter reads every step's loss on the host, a device sync per step "
        "that stops the host from queueing the next; a NaN loss is logged as NaN instead")
    train_sampling_strategy: str = task_default(
        "train_sampling_strategy", "group_by_length", "batches of similar length, from hf_ft's `length` column")
    remove_unused_columns: bool = task_default(
        "remove_unused_columns", False, "hf_ft's collators pick the model inputs; `length` must reach the sampler")
    per_device_eval_batch_size: int = task_default("per_device_eval_batch_size", 32, "evaluation needs no gradients")
    learning_rate: float = task_default("learning_rate", 3e-5, "BERT fine-tuning's usual rate")
    warmup_steps: float = task_default("warmup_steps", 0.1, "10%% of the training steps")
    hub_strategy: HubStrategy | str = task_default(
        "hub_strategy", "end", "hf_ft pushes the finished run once, with its card")
    restore_callback_states_from_checkpoint: bool = task_default(
        "restore_callback_states_from_checkpoint", True,
        "a resumed run restores early stopping's counter and stops where the uninterrupted run stops")
    trackio_static_space_id: str | None | Literal[False] = task_default(
        "trackio_static_space_id", False, "--report_to trackio logs locally; no public static Space at a push")


def task_defaults() -> dict:
    """{field: value} where hf_ft's default differs from transformers' (for records and the benchmarks)."""
    return {name: f.default for name, f in QATrainingArguments.__dataclass_fields__.items()
            if f.default != TrainingArguments.__dataclass_fields__[name].default}

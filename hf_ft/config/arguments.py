"""Command-line arguments: our dataclasses next to `TrainingArguments`, with defaults fit for TMMLU+.

`python run_qa.py config.yaml --learning_rate 3e-5`: a JSON/YAML file supplies defaults, the command
line overrides them. `parse_args` reads the command line once, derives what depends on it (bf16 on a
capable GPU, the CPU without CUDA, the DeepSpeed plan), refuses settings that cannot make sense, and
builds each dataclass once. TrainingArguments stays the one place the Trainer reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser

from ..core import deepspeed_config, processes, validation
from ..core.deepspeed_config import DeepSpeedPlan
from ..core.errors import did_you_mean
from ..core.readers import read_mapping_file
from .fields import (  # noqa: F401
    ConfigError,
    DataArguments,
    ModelArguments,
    QATrainingArguments,
    RetrievalArguments,
    RunArguments,
)
from .rules import (
    derived_values,
    refuse_a_metric_the_run_cannot_report,
    refuse_conflicts,
    refuse_early_stopping_without_evaluation,
    refuse_nonsense,
)

ARGUMENT_CLASSES = (ModelArguments, DataArguments, RetrievalArguments, RunArguments, QATrainingArguments)
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


@dataclass
class Arguments:
    """Everything a training run is told, parsed once."""

    model: ModelArguments
    data: DataArguments
    run: RunArguments
    training: QATrainingArguments
    deepspeed: DeepSpeedPlan
    retrieval: RetrievalArguments = field(default_factory=RetrievalArguments)
    given: dict = field(default_factory=dict)  # what the user set (paths made absolute): hf_ft_run.json records it

    @property
    def split_seed(self) -> int:
        """The seed of the split (and of the folds): --split_seed, else --seed."""
        return self.data.split_seed if self.data.split_seed is not None else self.training.seed


def load_config_file(path: str) -> dict:
    """A JSON or YAML file of argument names → values (hf_ft.core.readers: BOM, emptiness, duplicate keys)."""
    config = read_mapping_file(path, path, ConfigError)
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



def parse_args(argv: list[str] | None = None) -> Arguments:
    """`[config.{json,yaml}] [--flag value ...]` → Arguments, parsed once.

    1. the command line (and config file) are read in one argparse pass;
    2. the DeepSpeed plan and the machine-dependent defaults are derived from them (pure);
    3. nonsense is refused (transformers' own DeepSpeed mismatch check included) while nothing has changed;
    4. the process is prepared for the plan (hf_ft.core.processes: TrainingArguments builds the process group
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
    refuse_conflicts(values, given)
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
    from ..core.provenance import map_paths

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

"""DeepSpeed: check a ds_config before anything heavy starts, decide whether it can run here, and
fall back to plain PyTorch (with one clear warning) when it cannot.

Checks: the file exists and is JSON; its keys are DeepSpeed's (the ZeRO section is validated by
DeepSpeed's own pydantic schema); numbers are numbers; values that are not "auto" agree with
TrainingArguments; unsupported combinations are refused. Each problem is one line.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

logger = logging.getLogger("hf_ft.deepspeed")

# Top-level sections and keys of a DeepSpeed config (deepspeed.runtime.constants adds the rest).
KNOWN_TOP_LEVEL = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
    "optimizer", "scheduler", "fp16", "bf16", "bfloat16", "amp", "zero_optimization", "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer", "activation_checkpointing", "flops_profiler", "comms_logger", "tensorboard",
    "wandb", "csv_monitor", "comet", "aio", "checkpoint", "data_types", "compression_training", "autotuning",
    "elasticity", "pipeline", "sparse_attention", "curriculum_learning", "data_efficiency", "steps_per_print",
    "wall_clock_breakdown", "memory_breakdown", "dump_state", "prescale_gradients", "gradient_predivide_factor",
    "sparse_gradients", "communication_data_type", "seq_parallel_communication_data_type", "dataloader_drop_last",
    "eigenvalue", "progressive_layer_drop", "quantize_training", "weight_quantization", "nebula", "timers",
    "disable_allgather", "torch_autocast", "compile", "graph_harvesting", "load_universal_checkpoint",
    "hybrid_engine", "mics_shard_size", "mics_hierarchical_params_gather", "use_data_before_expert_parallelism",
    "use_node_local_storage", "checkpoint_parallel_write_pipeline", "zero_optimization_stage", "tensor_parallel",
}
INTEGER_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "steps_per_print")
NUMBER_KEYS = ("gradient_clipping",)


@dataclass
class DeepSpeedDecision:
    used: bool
    config: str | None = None  # the file the Trainer gets
    stage: int | None = None
    offload: bool = False
    reason: str | None = None  # why it was dropped
    effective_config: str | None = None  # what the Trainer reads (see effective_config())
    configured_state: bool = False  # accelerate's state was set up here (see configure_cpu_state())

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("effective_config", "configured_state")}


def _known_keys() -> set[str]:
    keys = set(KNOWN_TOP_LEVEL)
    try:
        from deepspeed.runtime import constants

        keys |= {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str) and v.isidentifier()}
    except Exception:
        pass
    return keys


def load_ds_config(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--deepspeed {path}: config file not found")
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"--deepspeed {path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"--deepspeed {path}: expected a JSON object")
    return config


def _is_auto(value) -> bool:
    return value == "auto"


def zero_stage(config: dict) -> int:
    stage = config.get("zero_optimization", {}).get("stage", 0)
    return stage if isinstance(stage, int) else -1


def has_offload(config: dict) -> bool:
    zero = config.get("zero_optimization", {})
    return any(isinstance(zero.get(k), dict) and zero[k].get("device", "none") not in ("none", None)
               for k in ("offload_optimizer", "offload_param"))


def check_ds_config(path: str, config: dict, training_args) -> list[str]:
    """Every problem with the config, one line each (empty when it is fine)."""
    problems = []
    known = _known_keys()
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=2)
            problems.append(f"unknown key '{key}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    for key in INTEGER_KEYS:
        value = config.get(key)
        if value is not None and not _is_auto(value) and not (isinstance(value, int) and not isinstance(value, bool)):
            problems.append(f"'{key}' must be an integer or \"auto\", got {value!r}")
    for key in NUMBER_KEYS:
        value = config.get(key)
        if value is not None and not _is_auto(value) and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            problems.append(f"'{key}' must be a number or \"auto\", got {value!r}")
    for section in ("fp16", "bf16"):
        enabled = config.get(section, {}).get("enabled") if isinstance(config.get(section), dict) else None
        if enabled is not None and not _is_auto(enabled) and not isinstance(enabled, bool):
            problems.append(f"'{section}.enabled' must be true, false or \"auto\", got {enabled!r}")
    zero = config.get("zero_optimization", {})
    if not isinstance(zero, dict):
        problems.append("'zero_optimization' must be an object")
        zero = {}
    stage = zero.get("stage", 0)
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= 3:
        problems.append(f"'zero_optimization.stage' must be 0, 1, 2 or 3, got {stage!r}")
    problems += _validate_zero_section(zero)
    if has_offload(config) and isinstance(stage, int) and stage < 2:
        problems.append(f"offload needs ZeRO stage 2 or 3 (this config has stage {stage})")

    # Values the Trainer also sets must agree with TrainingArguments.
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))  # the launcher's; asking the args would start torch.distributed
    expected = {
        "train_micro_batch_size_per_gpu": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "gradient_clipping": training_args.max_grad_norm,
        "train_batch_size": training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world,
    }
    for key, value in expected.items():
        given = config.get(key)
        if given is not None and not _is_auto(given) and isinstance(given, (int, float)) and given != value:
            problems.append(f"'{key}' is {given} but TrainingArguments give {value} (use \"auto\")")
    for section, flag in (("fp16", training_args.fp16), ("bf16", training_args.bf16)):
        enabled = config.get(section, {}).get("enabled") if isinstance(config.get(section), dict) else None
        if isinstance(enabled, bool) and enabled != flag:
            problems.append(f"'{section}.enabled' is {str(enabled).lower()} but --{section} is {flag} (use \"auto\")")
    # Combinations that cannot work.
    if training_args.auto_find_batch_size:
        problems.append("--auto_find_batch_size cannot be used with DeepSpeed")
    fp16_wanted = training_args.fp16 or (isinstance(config.get("fp16"), dict) and config["fp16"].get("enabled") is True)
    if fp16_wanted and not _cuda_available(training_args):
        problems.append("fp16 needs a GPU; this run is on the CPU (use fp32 here)")
    return [f"--deepspeed {path}: {p}" for p in problems]


def _validate_zero_section(zero: dict) -> list[str]:
    """DeepSpeed's own schema for the ZeRO section (unknown keys, types); "auto" is left to the Trainer."""
    try:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
        from pydantic import ValidationError
    except Exception:
        return []
    concrete = {k: v for k, v in zero.items() if not _is_auto(v)}
    try:
        DeepSpeedZeroConfig(**concrete)
    except ValidationError as e:
        out = []
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"])
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            out.append(f"zero_optimization.{where}: {message}")
        return out
    except Exception as e:  # DeepSpeed's validators raise plain errors too
        return [f"zero_optimization: {e}"]
    return []


def _cuda_available(training_args) -> bool:
    import torch

    return torch.cuda.is_available() and not training_args.use_cpu


def deepspeed_importable() -> str | None:
    """None when DeepSpeed imports; otherwise why not."""
    try:
        import deepspeed  # noqa: F401
    except Exception as e:  # ImportError, or a broken build raising anything at import
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
    return None


def decide(path: str | None, training_args, run_args) -> DeepSpeedDecision:
    """Check the config; use DeepSpeed, or fall back with one warning (an error with --require_deepspeed)."""
    if not path:
        if run_args.require_deepspeed:
            raise UserError("--require_deepspeed given without --deepspeed CONFIG")
        return DeepSpeedDecision(used=False)
    config = load_ds_config(path)
    problems = check_ds_config(path, config, training_args)
    if problems:
        raise UserError("\n".join(problems))
    stage, offload = zero_stage(config), has_offload(config)
    reason = None
    why_not = deepspeed_importable()
    if why_not:
        reason = f"DeepSpeed cannot be imported ({why_not})"
    elif offload and not _cuda_available(training_args):
        reason = "ZeRO offload moves GPU memory to the CPU, and this run has no GPU"
    if reason:
        dropped = f"ZeRO stage {stage}{' with offload' if offload else ''} from {path}"
        if run_args.require_deepspeed:
            raise UserError(f"--require_deepspeed: {reason}; cannot use {dropped}")
        logger.warning("DeepSpeed not used: %s. Training continues with plain PyTorch (dropped: %s).", reason, dropped)
        if why_not:
            hide_broken_deepspeed()
        return DeepSpeedDecision(used=False, config=path, stage=stage, offload=offload, reason=reason)
    prepare_single_process_environment()
    return DeepSpeedDecision(used=True, config=path, stage=stage, offload=offload,
                             effective_config=effective_config(path, config),
                             configured_state=configure_cpu_state(training_args))


def configure_cpu_state(training_args) -> bool:
    """On a machine without GPUs, accelerate (1.15) finds no backend for DeepSpeed and records a
    one-process world: every rank would then read the whole dataset and evaluation gathers fail.
    Set up its state with gloo ourselves; TrainingArguments then uses it (use_configured_state)."""
    if _cuda_available(training_args):
        return False
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # the first, DeepSpeed-less parse made one
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    state = PartialState(backend="gloo")
    return state.num_processes == int(os.environ.get("WORLD_SIZE", "1"))


def effective_config(path: str, config: dict) -> str:
    """The file the Trainer reads: `path` itself, or a copy without an "auto" train_batch_size (DeepSpeed
    derives it; transformers 5 would fill it before the processes are counted, with a world size of 1)."""
    if config.get("train_batch_size") != "auto":
        return path
    import tempfile

    trimmed = {k: v for k, v in config.items() if k != "train_batch_size"}
    handle, name = tempfile.mkstemp(prefix="hf_ft_ds_", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        json.dump(trimmed, f)
    return name


def hide_broken_deepspeed() -> None:
    """An installed DeepSpeed that fails to import still counts as available to accelerate (it reads the
    package metadata) and would crash the Trainer when it unwraps the model. Make accelerate's check say
    "not installed" for DeepSpeed, as it would with no DeepSpeed at all."""
    from accelerate.utils import imports

    original = imports._is_package_available
    if getattr(original, "hf_ft_hides_deepspeed", False):
        return

    def is_package_available(pkg_name, metadata_name=None):
        return False if pkg_name == "deepspeed" else original(pkg_name, metadata_name)

    is_package_available.hf_ft_hides_deepspeed = True
    imports._is_package_available = is_package_available


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_single_process_environment() -> None:
    """`python run_qa.py --deepspeed ...` without a launcher: DeepSpeed would look for MPI (mpi4py);
    describe a one-process world instead, as a launcher would."""
    if "RANK" in os.environ or "LOCAL_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        return
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
                       "MASTER_PORT": os.environ.get("MASTER_PORT", str(free_port()))})

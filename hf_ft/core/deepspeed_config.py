"""DeepSpeed: check a ds_config before anything heavy starts and decide, from the arguments alone,
whether it can run here, falling back to plain PyTorch (with one clear warning) when it cannot.

Checks: the file exists and is JSON; its keys are DeepSpeed's (the ZeRO section is validated by
DeepSpeed's own pydantic schema); numbers are numbers; unsupported combinations are refused. Each
problem is one line. Setting the process up for the plan is `hf_ft.core.processes`.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

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


@dataclass(frozen=True)
class DeepSpeedPlan:
    """What --deepspeed amounts to here, decided from the arguments alone (no process is touched)."""

    used: bool
    config_path: str | None = None
    stage: int | None = None
    offload: bool = False
    reason: str | None = None  # why DeepSpeed was dropped
    importable: bool = True  # False: the installed DeepSpeed fails to import (processes.prepare hides it)
    config: dict | None = None  # what TrainingArguments(deepspeed=...) gets when used

    def record(self) -> dict:
        """For hf_ft_run.json and the model card."""
        return {"used": self.used, "config": self.config_path, "stage": self.stage, "offload": self.offload,
                "reason": self.reason}


def _known_keys() -> set[str]:
    keys = set(KNOWN_TOP_LEVEL)
    try:
        from deepspeed.runtime import constants

        keys |= {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str) and v.isidentifier()}
    except Exception:
        pass
    return keys


def load_ds_config(path: str) -> dict:
    from .readers import read_mapping_file

    return read_mapping_file(path, f"--deepspeed {path}", kind="JSON")


def _is_auto(value) -> bool:
    return value == "auto"


def zero_stage(config: dict) -> int:
    stage = config.get("zero_optimization", {}).get("stage", 0)
    return stage if isinstance(stage, int) else -1


def has_offload(config: dict) -> bool:
    zero = config.get("zero_optimization", {})
    return any(isinstance(zero.get(k), dict) and zero[k].get("device", "none") not in ("none", None)
               for k in ("offload_optimizer", "offload_param"))


def check_ds_config(path: str, config: dict, auto_find_batch_size: bool, fp16: bool, cuda: bool) -> list[str]:
    """Every problem with the config that transformers does not check itself, one line each. (Values that
    disagree with TrainingArguments are transformers' HfTrainerDeepSpeedConfig mismatch check, run as soon
    as TrainingArguments is built: see arguments.parse_args.)"""
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
    if "zero_optimization" not in config:
        problems.append("no 'zero_optimization' section (accelerate needs one; {\"stage\": 0} for plain data parallel)")
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
    if auto_find_batch_size:
        problems.append("--auto_find_batch_size cannot be used with DeepSpeed")
    fp16_wanted = fp16 or (isinstance(config.get("fp16"), dict) and config["fp16"].get("enabled") is True)
    if fp16_wanted and not cuda:
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


def deepspeed_importable() -> str | None:
    """None when DeepSpeed imports; otherwise why not."""
    try:
        import deepspeed  # noqa: F401
    except Exception as e:  # ImportError, or a broken build raising anything at import
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
    return None


def plan(path: str | None, *, require: bool, auto_find_batch_size: bool = False, fp16: bool = False,
         cuda: bool = False) -> DeepSpeedPlan:
    """Check the config and decide: use DeepSpeed, or fall back to plain PyTorch with one warning (an error
    with --require_deepspeed). Reads the config file; changes nothing in the process."""
    if not path:
        if require:
            raise UserError("--require_deepspeed given without --deepspeed CONFIG")
        return DeepSpeedPlan(used=False)
    config = load_ds_config(path)
    problems = check_ds_config(path, config, auto_find_batch_size, fp16, cuda)
    if problems:
        raise UserError("\n".join(problems))
    stage, offload = zero_stage(config), has_offload(config)
    why_not = deepspeed_importable()
    reason = (f"DeepSpeed cannot be imported ({why_not})" if why_not
              else "ZeRO offload moves GPU memory to the CPU, and this run has no GPU" if offload and not cuda
              else None)
    if reason:
        dropped = f"ZeRO stage {stage}{' with offload' if offload else ''} from {path}"
        if require:
            raise UserError(f"--require_deepspeed: {reason}; cannot use {dropped}")
        logger.warning("DeepSpeed not used: %s. Training continues with plain PyTorch (dropped: %s).", reason, dropped)
        return DeepSpeedPlan(used=False, config_path=path, stage=stage, offload=offload, reason=reason,
                             importable=why_not is None)
    return DeepSpeedPlan(used=True, config_path=path, stage=stage, offload=offload, config=config)


def mismatches(plan: DeepSpeedPlan, values: dict) -> list[str]:
    """transformers' own check of the config's non-"auto" values against the TrainingArguments values
    (HfTrainerDeepSpeedConfig.trainer_config_process and its `mismatches`), run on the parsed values before
    any process is set up, so a wrong config costs nothing."""
    import copy
    import os
    import types

    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    if not plan.used:
        return []
    check = HfTrainerDeepSpeedConfig(copy.deepcopy(plan.config))
    view = types.SimpleNamespace(**values, world_size=max(1, int(os.environ.get("WORLD_SIZE", "1"))))
    check.trainer_config_process(view, auto_find_batch_size=values.get("auto_find_batch_size", False))
    return [f"--deepspeed {plan.config_path}: {m.lstrip('- ')} (use \"auto\")" for m in check.mismatches]

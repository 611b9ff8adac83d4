"""How a run starts: its identity (the settings that change what it computes), the output folder claimed and
locked, and where it starts: from scratch, from this run's own checkpoint, or refused (a finished run, another
run's folder, foreign files), decided on the main process and shared with the others."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict
from pathlib import Path

from ..config.arguments import Arguments
from ..config.fields import RetrievalArguments
from ..core import run_dir
from ..core.errors import UserError

logger = logging.getLogger("hf_ft")

# Settings that do not change what a run computes: a rerun that differs only in these is the same run.
NOT_IDENTITY = {
    "output_dir", "logging_dir", "overwrite_output_dir", "resume_from_checkpoint", "push_to_hub", "push_test_items",
    "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision", "report_to",
    "run_name",
    "disable_tqdm", "log_level", "log_level_replica", "log_on_each_node", "dataloader_num_workers",
    "dataloader_persistent_workers", "preprocessing_num_workers", "trust_deepspeed_checkpoint", "seeds",
    "accelerator_config", "cache_dir", "skip_memory_check", "profile_steps", "cudnn_attention",
    "logging_nan_inf_filter",
}


class OutputDirError(UserError):
    pass


def train_each(runs: list[tuple[str, Arguments]], train_one) -> None:
    """The runs of a --seeds or --folds loop, (name, arguments) in turn: a finished one is skipped, an unfinished
    one resumes (the usual run-folder rules), and what each run held is freed before the next starts."""
    from .memory import release_finished_run

    for name, one in runs:
        folder = Path(one.training.output_dir)
        if (folder / run_dir.FINISHED_FILE).is_file() and run_dir.finished_problem(folder) is None:
            logger.info("%s: finished already (%s)", name, folder)
            continue
        logger.info("%s: training into %s", name, folder)
        train_one(one)
        release_finished_run()


def identity_of(args: Arguments) -> str:
    settings = {}
    model = asdict(args.model)
    if not model["use_kernels"]:  # runs from before the flag keep their identity
        model.pop("use_kernels")
    data = asdict(args.data)
    if not data["extra_data"]:  # a run without extra data keeps the identity it had before they existed
        data.pop("extra_data")
        data.pop("contamination")
    for name in ("pad_to_multiple_of", "folds", "fold"):  # likewise without rounding or cross-fitting
        if data[name] is None:
            data.pop(name)
    for part in (model, data, asdict(args.run), args.training.to_dict()):
        settings.update({k: v for k, v in part.items() if k not in NOT_IDENTITY})
    if args.retrieval.used:  # an open-book run is another run (closed-book identities unchanged)
        retrieval = asdict(args.retrieval)
        if retrieval["retriever"] == RetrievalArguments.retriever:  # runs from before the registry keep their identity
            retrieval.pop("retriever")
        settings.update(retrieval)
    return run_dir.run_identity(settings)


def resolve_start(output_dir: Path, identity: str, args: Arguments) -> str | None:
    """Where this run starts: None (from scratch) or a checkpoint. A finished run, another run's unfinished
    folder or foreign files are refused unless --overwrite_output_dir; this run's own unfinished folder is
    resumed from its newest usable checkpoint (or restarted if it has none). Reads only: `begin_run` clears
    what --overwrite_output_dir replaces, once every check has passed."""
    explicit = args.training.resume_from_checkpoint
    require_marker = args.deepspeed.used and not args.run.trust_deepspeed_checkpoint
    if explicit:
        problem = ("no such checkpoint directory" if not Path(explicit).is_dir()
                   else run_dir.checkpoint_problem(explicit, None, require_marker))
        if problem:
            hint = " (--trust_deepspeed_checkpoint resumes it anyway)" if "not written by this run" in problem else ""
            raise OutputDirError(f"--resume_from_checkpoint {explicit}: {problem}{hint}")
        logger.info("resuming from %s", explicit)
        return explicit
    contents = [p for p in output_dir.iterdir() if p.name not in (run_dir.LOCK_FILE, run_dir.STARTED_FILE)] \
        if output_dir.is_dir() else []
    if args.run.overwrite_output_dir or not contents:
        return None
    started = run_dir.read_json_if_present_quietly(output_dir / run_dir.STARTED_FILE)
    hint = "pass --overwrite_output_dir to train into it anyway, or choose another --output_dir"
    if (output_dir / run_dir.FINISHED_FILE).is_file():
        raise OutputDirError(f"output_dir {output_dir} holds a finished run; {hint}")
    if started is None:
        weights = [p.name for p in contents if p.name in run_dir.MODEL_WEIGHTS]
        what = f"holds a model ({', '.join(weights)}) not written by hf_ft" if weights else "is not empty"
        raise OutputDirError(f"output_dir {output_dir} {what} and has no run of these arguments to resume; {hint}")
    if started.get("identity") != identity:
        raise OutputDirError(f"output_dir {output_dir} holds an unfinished run with other arguments; rerun that "
                             f"command to finish it, or {hint}")
    checkpoint = run_dir.usable_checkpoint(output_dir, identity, require_marker)
    logger.info("resuming from %s" if checkpoint else "%s", checkpoint or
                f"restarting this run's unfinished output in {output_dir} (no usable checkpoint yet)")
    return checkpoint


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


def claim_output_dir(output_dir: Path, identity: str, args: Arguments, holding: contextlib.ExitStack) -> str | None:
    """The hub checked (before hours of training), the folder locked for this run, where to start decided."""
    if args.training.push_to_hub:
        from ..publish.hub import check_push_access, repo_id_for

        check_push_access(repo_id_for(args.training.hub_model_id, output_dir))
    holding.enter_context(run_dir.locked(output_dir))
    return resolve_start(output_dir, identity, args)

"""Setting the process up for a run, and leaving it cleanly: every change hf_ft makes to the process
happens here, in `prepare` (before TrainingArguments is built) and `leave_process_group` (at the end).

Why each step exists (transformers 5.24, accelerate 1.15, DeepSpeed 0.19):
- `python run_qa.py --deepspeed ...` without a launcher: DeepSpeed would look for MPI (mpi4py);
  describe a one-process world instead, as a launcher would.
- DeepSpeed on a machine without GPUs: accelerate finds no backend for it and records a one-process
  world, so every rank would read the whole data set and evaluation gathers fail. A gloo PartialState
  built first, and `use_configured_state`, make TrainingArguments use a real process group.
- An installed DeepSpeed that fails to import still counts as available to transformers and accelerate
  (they check the package metadata) and crashes the Trainer even without --deepspeed. Marking the module
  absent in `sys.modules` (the import system's documented way) makes both see it as not installed.
- A rank that exits while still in a gloo group can abort in interpreter teardown ("terminate called
  without an active exception", SIGABRT) after a run that succeeded: 9 of 30 bare 2-process gloo runs
  here. The Trainer never leaves the group; the end of a run must. Leaving is not enough while the run's
  DistributedDataParallel wrapper is alive: its reducer holds the group, and the wrapper outlives the run in
  reference cycles (Trainer ↔ callbacks ↔ accelerator) until the cyclic collector runs — possibly only in
  interpreter teardown, the very abort (a rare CI failure after a finished run). Collect it first.
"""

from __future__ import annotations

import gc
import os
import socket
import sys

from .deepspeed_config import DeepSpeedPlan

LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


def scoring_state(use_cpu: bool = False):
    """accelerate's process state for scoring (evaluate, predict), built once per process: on the CPU it must
    be asked for with cpu=True, or a launcher's processes each see a world of one."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu or not cuda_present())


def prepare(plan: DeepSpeedPlan, use_cpu: bool) -> dict:
    """Make the process ready for `plan`; returns the TrainingArguments values this setup implies."""
    if not plan.used:
        if not plan.importable:
            sys.modules["deepspeed"] = None  # "not installed" for transformers and accelerate alike
        return {}
    if not any(name in os.environ for name in LAUNCHER_VARIABLES):
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                           "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
                           "MASTER_PORT": os.environ.get("MASTER_PORT", str(free_port()))})
    if cuda_present() and not use_cpu:
        return {}
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    return {"accelerator_config": {"use_configured_state": True}}


def leave_process_group() -> None:
    """End a multi-process run cleanly: every rank waits for the others, then leaves the group.
    accelerate's state (the one the Trainer used) does it, and leaves a notebook-launcher's group alone."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from accelerate import PartialState

        state = PartialState()
        state.wait_for_everyone()
        gc.collect()  # the run's DDP wrapper (in reference cycles) holds the group: free it while Python is whole
        state.destroy_process_group()

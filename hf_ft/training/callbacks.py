"""Trainer callbacks: the live loss curve, and the marker that makes a checkpoint resumable."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..core.plotting import curves_from_log_history, plot_loss_curve
from ..core.run_dir import CURVE_FILE, HISTORY_FILE, mark_checkpoint, write_json


class LossCurveCallback(TrainerCallback):
    """Rebuilds `validation_loss_curve.png` and `loss_history.json` from `state.log_history` at every
    evaluation and at the end of training.

    The history is the Trainer's own, restored from the checkpoint on resume, so the curve of a
    resumed run still covers every step. Only the main process writes.
    """

    def __init__(self, output_dir: str):
        self.output_dir = Path(output_dir)

    def write(self, state) -> None:
        if not state.is_world_process_zero:
            return
        curves = curves_from_log_history(state.log_history)
        write_json(self.output_dir / HISTORY_FILE, {
            "global_step": state.global_step,
            "max_steps": state.max_steps,
            **{key: [{"step": s, "value": v} for s, v in points] for key, points in curves.items()},
            "log_history": state.log_history,
        })
        plot_loss_curve(curves, self.output_dir / CURVE_FILE)

    def on_evaluate(self, args, state, control, **kwargs):
        self.write(state)

    def on_train_end(self, args, state, control, **kwargs):
        self.write(state)


class CheckpointMarkerCallback(TrainerCallback):
    """After the Trainer has written a whole checkpoint (every rank's part of it), the main process adds
    `hf_ft_checkpoint.json`: the run's identity and each file's size. A checkpoint without it, or whose
    files no longer match it, is never resumed from (hf_ft.core.run_dir.checkpoint_problem)."""

    def __init__(self, identity: str):
        self.identity = identity

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # DeepSpeed ranks write their own shards
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            mark_checkpoint(folder, self.identity)

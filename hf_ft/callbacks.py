"""Trainer callbacks: the live loss curve (`validation_loss_curve.png` + `loss_history.json`)."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from .data import write_json
from .plotting import curves_from_log_history, plot_loss_curve

CURVE_FILE = "validation_loss_curve.png"
HISTORY_FILE = "loss_history.json"


class LossCurveCallback(TrainerCallback):
    """Rebuilds the curves from `state.log_history` at every evaluation and at the end of training.

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

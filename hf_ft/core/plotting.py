"""Figures: the training/validation loss curve and the original-vs-fine-tuned bar chart."""

from __future__ import annotations

import os
import re
from pathlib import Path


def _pyplot():
    """matplotlib (Agg), imported at the first figure: a run that stops on a bad flag does not pay ~1 s for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_atomically(fig, path: str | os.PathLike) -> None:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


SOURCE_LOSS = re.compile(r"^eval_(.+)_loss$")  # an extra source's held-out slice (hf_ft.training.trainer)


def curves_from_log_history(log_history: list[dict]) -> dict:
    """Training loss, validation loss and validation accuracy against the global step, and each extra source's
    held-out loss as `eval_loss:<source>`."""
    curves = {"train_loss": [], "eval_loss": [], "eval_accuracy": []}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        if "loss" in entry:
            curves["train_loss"].append((step, entry["loss"]))
        if "eval_loss" in entry:
            curves["eval_loss"].append((step, entry["eval_loss"]))
        if "eval_accuracy" in entry:
            curves["eval_accuracy"].append((step, entry["eval_accuracy"]))
        for key, value in entry.items():
            match = SOURCE_LOSS.match(key)
            if match and key != "eval_loss" and not key.startswith(("eval_runtime", "eval_samples")) \
                    and value is not None:
                curves.setdefault(f"eval_loss:{match.group(1)}", []).append((step, value))
    return curves


def plot_loss_curve(curves: dict, path: str | os.PathLike, title: str = "Training and validation loss") -> None:
    fig, ax = _pyplot().subplots(figsize=(8, 4.5))
    handles = []
    sources = [(key, f"held-out {key.split(':', 1)[1]} loss", "^:") for key in curves if key.startswith("eval_loss:")]
    for key, label, style in (("train_loss", "training loss", "-"), ("eval_loss", "validation loss", "o-"), *sources):
        points = curves.get(key) or []
        if points:
            steps, values = zip(*points)
            handles += ax.plot(steps, values, style, label=label, markersize=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    accuracy = curves.get("eval_accuracy") or []
    if accuracy:
        ax2 = ax.twinx()
        steps, values = zip(*accuracy)
        handles += ax2.plot(steps, values, "s--", color="tab:green", label="validation accuracy", markersize=4)
        ax2.set_ylabel("validation accuracy")
        ax2.set_ylim(0, 1)
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    else:
        ax.text(0.5, 0.5, "no points logged yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    _save_atomically(fig, path)


def plot_comparison(categories: list[str], series: dict[str, dict], path: str | os.PathLike,
                    title: str = "Accuracy on held-out questions", baselines: dict[str, float] | None = None,
                    seed_points: list[float] | None = None) -> None:
    """Grouped bars per category: series name → {"accuracy": [...], "ci_low": [...], "ci_high": [...]}.
    `baselines` (the audit's choices-only model and best heuristic) are drawn as lines across the plot;
    `seed_points` (each seed's overall accuracy) as points with their mean ± one standard deviation."""
    import numpy as np

    fig, ax = _pyplot().subplots(figsize=(max(6, 1.6 * len(categories) + 2), 4.5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(categories))
    for i, (name, values) in enumerate(series.items()):
        acc = np.asarray(values["accuracy"])
        err = np.clip(np.vstack([acc - np.asarray(values["ci_low"]), np.asarray(values["ci_high"]) - acc]), 0, None)
        ax.bar(x + (i - (len(series) - 1) / 2) * width, acc, width, yerr=err, capsize=3, label=name)
    ax.axhline(0.25, color="grey", linestyle=":", label="chance (25%)")
    for (name, value), style in zip((baselines or {}).items(), ("--", "-.", (0, (1, 1)))):
        ax.axhline(value, color="black", linestyle=style, linewidth=1, label=f"{name}: {100 * value:.1f}%")
    if seed_points:
        points = np.asarray(seed_points)
        where = np.full(len(points), x[-1] + 0.5)
        ax.scatter(where, points, color="tab:red", zorder=3, s=18, label=f"{len(points)} seeds (overall)")
        ax.errorbar([x[-1] + 0.5], [points.mean()], yerr=[points.std(ddof=1) if len(points) > 1 else 0],
                    fmt="_", color="tab:red", capsize=6, markersize=14)
    ax.set_xticks(x, categories)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title)
    _save_atomically(fig, path)

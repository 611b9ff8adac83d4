"""Statistics for models scored on the same items: intervals, paired tests, multiple comparisons (scipy)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..task.metrics import accuracy_ci  # noqa: F401  (lives with the metrics: cross-fitting's report needs it too)


def paired_bootstrap_ci(correct_a, correct_b, confidence: float = 0.95, n_resamples: int = 10_000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of accuracy(b) − accuracy(a), resampling items (pairs stay together)."""
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if len(a) == 0:
        return 0.0, 0.0
    if np.all(b - a == (b - a)[0]):  # no variation: the interval is the point
        return float(b.mean() - a.mean()), float(b.mean() - a.mean())
    result = stats.bootstrap(
        (a, b), lambda x, y, axis=-1: y.mean(axis=axis) - x.mean(axis=axis), paired=True, vectorized=True,
        confidence_level=confidence, n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact McNemar test: a two-sided binomial test on the discordant pairs."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_original_correct": only_a, "only_finetuned_correct": only_b, "p_value": p}


def paired_comparison(correct_a, correct_b, seed: int = 0) -> dict:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    low, high = paired_bootstrap_ci(a, b, seed=seed)
    return {
        "n": int(len(a)),
        "accuracy_original": float(a.mean()) if len(a) else 0.0,
        "accuracy_finetuned": float(b.mean()) if len(b) else 0.0,
        "difference": float(b.mean() - a.mean()) if len(a) else 0.0,
        "difference_ci95": [low, high],
        "mcnemar": mcnemar_exact(a, b),
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down; they keep the family-wise error rate)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return [float(p) for p in adjusted]


def mean_ci(values, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean of per-item values (e.g. a heuristic's expected accuracy)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return 0.0, 0.0
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=10_000,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def across_runs_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean over independent runs (seeds): it covers training randomness."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float(values[0]), float(values[0])) if len(values) else (0.0, 0.0)
    low, high = stats.t.interval(confidence, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    if not np.isfinite(low):  # all runs equal
        return float(values.mean()), float(values.mean())
    return float(low), float(high)

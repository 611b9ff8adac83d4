"""The out-of-fold estimate of cross-fitting (--folds K): every training-pool question scored once, by the run
that did not train on it, pooled per subject, per category and overall.

Its interval accounts for the folds. The K runs are different models, so two questions of one fold share a
model and are not independent: the interval treats each fold as a cluster (the cluster-robust standard error
of a mean, with the small-sample factor K/(K-1), and Student's t with K-1 degrees of freedom). The spread of the
fold accuracies holds both the sampling of questions and the differences between the K models. With a handful
of clusters that estimate is itself noisy, and can come out narrower than what the questions alone allow, so
the interval reported is never narrower than the Wilson interval of the pooled questions.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .metrics import accuracy_ci, accuracy_report

CI_RULE = ("95% interval with the folds as clusters (cluster-robust standard error, t with K-1 degrees of freedom), "
           "never narrower than the Wilson interval of the pooled questions")


def clustered_ci(values, folds, confidence: float = 0.95, bounds: tuple[float, float] = (0.0, 1.0)
                 ) -> tuple[float, float]:
    """Interval of the pooled mean of per-question values (correct: 0/1; a paired difference: -1/0/1) with the
    folds as clusters, within `bounds`."""
    values = np.asarray(values, dtype=float)
    folds = np.asarray(folds)
    clusters = np.unique(folds)
    mean = values.mean()
    if len(clusters) < 2:
        return float(mean), float(mean)
    k = len(clusters)
    sums = np.array([np.sum(values[folds == c] - mean) for c in clusters])
    se = np.sqrt(k / (k - 1) * np.sum(sums ** 2)) / len(values)
    half = stats.t.ppf(0.5 + confidence / 2, k - 1) * se
    return float(max(bounds[0], mean - half)), float(min(bounds[1], mean + half))


def pooled(correct, folds) -> dict:
    """One group's out-of-fold accuracy: the pooled questions, each fold's accuracy, and the intervals."""
    correct = np.asarray(correct, dtype=bool)
    folds = np.asarray(folds)
    by_fold = {str(k): float(correct[folds == k].mean()) for k in np.unique(folds)}  # JSON keys
    clustered, items = clustered_ci(correct, folds), accuracy_ci(correct)
    return {"n": int(len(correct)), "accuracy": float(correct.mean()),
            "ci95": [min(clustered[0], items[0]), max(clustered[1], items[1])],
            "ci95_folds_as_clusters": list(clustered), "ci95_questions_only": list(items),
            "accuracy_per_fold": by_fold}


def out_of_fold_report(predictions: list[dict]) -> dict:
    """`predictions`: one record per training-pool question (subject, category, fold, correct), from every
    fold's fold_predictions.jsonl. Overall, per category and per subject, with the macro averages (hf_ft.task.metrics'
    definitions)."""
    correct = np.array([p["correct"] for p in predictions], dtype=bool)
    folds = np.array([p["fold"] for p in predictions])

    def per(key: str) -> dict:
        values = np.array([p[key] for p in predictions])
        return {name: pooled(correct[values == name], folds[values == name]) for name in sorted(set(values))}

    averages = accuracy_report(correct.astype(int), np.ones(len(correct), dtype=int),
                               [p["subject"] for p in predictions], per_subject=False)
    return {"overall": pooled(correct, folds), "per_category": per("category"), "per_subject": per("subject"),
            "accuracy_macro": averages["accuracy_macro"], "tmmlu_average": averages["tmmlu_average"],
            "ci_rule": CI_RULE}

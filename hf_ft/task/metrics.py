"""Accuracy the TMMLU+ way: overall, per subject, per category, and the TMMLU+ average, each kind named.

- micro (`accuracy`, `accuracy_<category>`): every item counts once, so large subjects weigh more;
- macro over subjects (`accuracy_macro`, `accuracy_macro_<category>`): the mean of per-subject accuracies;
- the TMMLU+ average (`tmmlu_average`): per-subject accuracy → mean within each category → mean of the
  categories, so a large subject cannot drown out a small category.
`AVERAGES` says what each is and which published protocol it is comparable to.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .subjects import CATEGORIES, category_of

# Four options, one answer: what guessing scores.
CHANCE = 0.25
# A seed whose test accuracy is within this of chance is a failed restart (fine-tuning BERT sometimes
# does not take off at all; Dodge et al. 2020, Mosbach et al. 2021).
FAILED_RESTART_MARGIN = 0.05


def accuracy_ci(correct, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of one model's accuracy."""
    from scipy import stats

    correct = np.asarray(correct, dtype=bool)
    if len(correct) == 0:
        return 0.0, 0.0
    ci = stats.binomtest(int(correct.sum()), len(correct)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_report(predictions, labels, subjects, per_subject: bool = True) -> dict:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    correct = predictions == labels
    by_subject: dict[str, list[bool]] = defaultdict(list)
    for subject, ok in zip(subjects, correct):
        by_subject[subject].append(bool(ok))
    subject_acc = {s: float(np.mean(v)) for s, v in sorted(by_subject.items())}
    by_category: dict[str, list[float]] = defaultdict(list)
    category_correct: dict[str, list[bool]] = defaultdict(list)
    for subject, acc in subject_acc.items():
        by_category[category_of(subject)].append(acc)
    for subject, ok in zip(subjects, correct):
        category_correct[category_of(subject)].append(bool(ok))
    report = {"accuracy": float(correct.mean()) if len(correct) else 0.0}
    for category in CATEGORIES:
        if category in category_correct:
            report[f"accuracy_{category}"] = float(np.mean(category_correct[category]))
    for category in CATEGORIES:
        if category in by_category:
            report[f"accuracy_macro_{category}"] = float(np.mean(by_category[category]))
    report["accuracy_macro"] = float(np.mean(list(subject_acc.values()))) if subject_acc else 0.0
    category_means = [float(np.mean(by_category[c])) for c in CATEGORIES if c in by_category]
    report["tmmlu_average"] = float(np.mean(category_means)) if category_means else 0.0
    if per_subject:
        report["per_subject"] = subject_acc
    return report


# Each average: (label, definition, what it is comparable to). Comparable only over the same subjects.
AVERAGES = {
    "accuracy": ("micro", "all items pooled: every item counts once",
                 "lm-evaluation-harness's `tmmluplus` group score (size-weighted, over its 67 subjects)"),
    "accuracy_macro": ("macro over subjects", "the mean of the per-subject accuracies",
                       "iKala's published TMMLU+ average (over the 66 official subjects)"),
    "tmmlu_average": ("TMMLU+ average (hf_ft)", "per-subject accuracy averaged within each category, then the "
                      "mean of the categories", "hf_ft's own earlier reports"),
}


def percent(x) -> str:
    """An accuracy for reports and cards: 0.934 → "93.4%", None → "—"."""
    return "—" if x is None else f"{100 * x:.1f}%"


def flat_metrics(report: dict) -> dict:
    """The report with per-subject accuracies as `accuracy_subject_<name>` keys (Trainer metrics are flat)."""
    flat = {k: v for k, v in report.items() if k != "per_subject"}
    flat.update({f"accuracy_subject_{s}": v for s, v in report.get("per_subject", {}).items()})
    return flat


def build_compute_metrics(subjects: list[str], per_subject: bool = False):
    """`compute_metrics` for the Trainer, for an eval set whose rows have these subjects, in order."""
    subjects = list(subjects)

    def compute_metrics(eval_prediction) -> dict:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = np.argmax(logits, axis=-1)
        return flat_metrics(accuracy_report(predictions, eval_prediction.label_ids, subjects, per_subject))

    return compute_metrics

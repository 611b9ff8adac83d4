"""The comparison itself: models scored on the same items → accuracies with intervals, paired tests
(original vs fine-tuned; every model against a reference with Holm's correction), and, for several
seeds of one configuration, the difference across seeds. Pure functions of the scores: no files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..core.provenance import public_name
from ..data.rows import LETTERS, QARow
from ..task.metrics import CHANCE, FAILED_RESTART_MARGIN, accuracy_report
from ..task.question_forms import PASSAGE_FORMS, QUESTION_FORMS, describe, forms_of
from ..task.subjects import CATEGORIES, category_of
from .stats import accuracy_ci, across_runs_ci, holm, paired_comparison


@dataclass
class Scored:
    """One model's option scores on the items, and how it came by them."""

    label: str  # how reports name it
    path: str
    scorer: str
    scores: np.ndarray
    role: str  # "original", "finetuned" or "model"
    seed: int | None = None
    fold: int | None = None  # a --folds run: the training-pool fold it held out

    def predictions(self) -> np.ndarray:
        return self.scores.argmax(1)


def model_summary(model: Scored, rows: list[QARow]) -> dict:
    golds = np.array([r.label for r in rows])
    subjects = [r.subject for r in rows]
    predictions = model.predictions()
    correct = predictions == golds
    categories = np.array([category_of(s) for s in subjects])
    report = accuracy_report(predictions, golds, subjects)
    letters = Counter(LETTERS[p] for p in predictions)
    return {"label": model.label, "path": public_name(model.path), "scorer": model.scorer, "role": model.role,
            "seed": model.seed,
            **report, "accuracy_ci95": list(accuracy_ci(correct)),
            "ci95_per_category": {c: list(accuracy_ci(correct[categories == c])) for c in CATEGORIES
                                  if (categories == c).any()},
            "predicted_letters": {letter: letters.get(letter, 0) for letter in LETTERS}}


def pair_report(rows: list[QARow], a: Scored, b: Scored, seed: int) -> dict:
    """b against a on every item: overall, per category (paired bootstrap CI, exact McNemar), per subject."""
    golds = np.array([r.label for r in rows])
    subjects = np.array([r.subject for r in rows])
    categories = np.array([category_of(s) for s in subjects])
    correct_a, correct_b = a.predictions() == golds, b.predictions() == golds
    per_category = {}
    for category in CATEGORIES:
        mask = categories == category
        if mask.any():
            per_category[category] = paired_comparison(correct_a[mask], correct_b[mask], seed)
            per_category[category]["ci95_original"] = list(accuracy_ci(correct_a[mask]))
            per_category[category]["ci95_finetuned"] = list(accuracy_ci(correct_b[mask]))
    per_subject = []
    for subject in sorted(set(subjects)):
        mask = subjects == subject
        per_subject.append({"subject": str(subject), "category": category_of(subject), "n": int(mask.sum()),
                            "accuracy_original": float(correct_a[mask].mean()),
                            "accuracy_finetuned": float(correct_b[mask].mean()),
                            "difference": float(correct_b[mask].mean() - correct_a[mask].mean())})
    return {"overall": paired_comparison(correct_a, correct_b, seed), "per_category": per_category,
            "per_subject": per_subject}


def item_forms(rows: list[QARow], passages: list[bool] | None = None) -> list[list[str]]:
    """Each item's question forms (hf_ft.task.question_forms); `passages`: whether the fine-tuned open-book
    model read a passage for it."""
    return [forms_of(r.question, r.options, passages[i] if passages is not None else None)
            for i, r in enumerate(rows)]


def per_form_report(rows: list[QARow], a: Scored, b: Scored, forms: list[list[str]], seed: int) -> dict:
    """b against a on the items of each question form (and on `plain`, the items of none): the count, both
    accuracies with intervals, the paired difference with its bootstrap interval and McNemar's p. A form with
    few items has a wide interval; the count says so."""
    golds = np.array([r.label for r in rows])
    correct_a, correct_b = a.predictions() == golds, b.predictions() == golds
    names = [*QUESTION_FORMS, *PASSAGE_FORMS.values(), "plain"]
    out = {}
    for name in names:
        if name == "plain":
            mask = np.array([not [f for f in item if f not in PASSAGE_FORMS.values()] for item in forms])
        else:
            mask = np.array([name in item for item in forms])
        if not mask.any():
            continue
        out[name] = {**paired_comparison(correct_a[mask], correct_b[mask], seed),
                     "ci95_original": list(accuracy_ci(correct_a[mask])),
                     "ci95_finetuned": list(accuracy_ci(correct_b[mask])),
                     "description": "none of the forms above" if name == "plain" else describe(name)}
    return out


def leaderboard(rows: list[QARow], models: list[Scored], reference: int, seed: int) -> dict:
    """Every model's accuracies, and every model against the reference: paired CI, McNemar p, Holm p."""
    golds = np.array([r.label for r in rows])
    entries = [model_summary(m, rows) for m in models]
    ref = models[reference]
    tests = []
    for i, model in enumerate(models):
        if i == reference:
            continue
        paired = paired_comparison(ref.predictions() == golds, model.predictions() == golds, seed)
        tests.append({"model": model.label, "reference": ref.label, **paired})
    for test, adjusted in zip(tests, holm([t["mcnemar"]["p_value"] for t in tests])):
        test["p_holm"] = adjusted
    order = sorted(range(len(entries)), key=lambda i: -entries[i]["accuracy"])
    return {"reference": ref.label, "models": [entries[i] for i in order], "pairwise": tests,
            "correction": "Holm–Bonferroni over the exact McNemar p-values against the reference"}


def runs_report(rows: list[QARow], original: Scored, runs: list[Scored], seed: int, by: str = "seed") -> dict:
    """The original-vs-fine-tuned difference per run and across runs of one configuration that differ in the
    seed (or, `by="fold"`, in the fold of the training pool left out): a t interval over runs covers training
    randomness (and the choice of training questions); each run's own interval only the sampling of test items."""
    golds = np.array([r.label for r in rows])
    per_seed = []
    for run in runs:
        paired = paired_comparison(original.predictions() == golds, run.predictions() == golds, seed)
        summary = accuracy_report(run.predictions(), golds, [r.subject for r in rows], per_subject=False)
        per_seed.append({by: getattr(run, by), "path": public_name(run.path), "accuracy": summary["accuracy"],
                         "tmmlu_average": summary["tmmlu_average"], "difference": paired["difference"],
                         "difference_ci95": paired["difference_ci95"], "mcnemar_p": paired["mcnemar"]["p_value"],
                         "failed_restart": summary["accuracy"] < CHANCE + FAILED_RESTART_MARGIN})
    accuracies = [s["accuracy"] for s in per_seed]
    differences = [s["difference"] for s in per_seed]
    return {"runs": per_seed, "mean_accuracy": float(np.mean(accuracies)),
            "std_accuracy": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
            "mean_difference": float(np.mean(differences)),
            "std_difference": float(np.std(differences, ddof=1)) if len(differences) > 1 else 0.0,
            f"difference_ci95_across_{by}s": list(across_runs_ci(differences)),
            "failed_restarts": [s[by] for s in per_seed if s["failed_restart"]],
            "failed_restart_rule": f"test accuracy below chance + {FAILED_RESTART_MARGIN:.0%}"}


def build_report(rows: list[QARow], models: list[Scored], reference: int, seed: int,
                 passages: list[bool] | None = None) -> dict:
    """The comparison report: original vs (the first) fine-tuned overall, per category, per subject and per
    question form, plus a leaderboard when there are more than two models, and the seed summary when the
    fine-tuned model came with several seeds."""
    golds = [r.label for r in rows]
    gold_letters = Counter(LETTERS[g] for g in golds)
    original = next(m for m in models if m.role == "original")
    finetuned = [m for m in models if m.role == "finetuned"]
    first = finetuned[0] if finetuned else next(m for m in models if m is not original)
    pair = pair_report(rows, original, first, seed)
    report = {
        "items": len(rows),
        "original": model_summary(original, rows),
        "finetuned": model_summary(first, rows),
        "gold_letters": {letter: gold_letters.get(letter, 0) for letter in LETTERS},
        "paired": {"overall": pair["overall"], "per_category": pair["per_category"],
                   "per_form": per_form_report(rows, original, first, item_forms(rows, passages), seed)},
        "per_subject": pair["per_subject"],
    }
    if len(models) > 2:
        report["leaderboard"] = leaderboard(rows, models, reference, seed)
    if len(finetuned) > 1 and all(m.fold is not None for m in finetuned):  # a --folds folder
        report["folds"] = runs_report(rows, original, finetuned, seed, by="fold")
    elif len(finetuned) > 1:
        report["seeds"] = runs_report(rows, original, finetuned, seed)
    return report

"""Knowledge or option artifacts? (`python -m hf_ft.evaluate ... --audit`)

Multiple-choice exams leak answers through their options. The audit scores, on the same held-out items:
- surface heuristics that never read the question's meaning: the longest option, the shortest, the one
  sharing most characters with the question, the one that differs in form (trailing punctuation, digits,
  Latin letters), and the training split's most frequent gold letter;
- a choices-only model: the same fine-tuning (same formulation, settings and split, from the run's
  recorded arguments) with the question removed — the multiple-choice analogue of hypothesis-only
  baselines in NLI;
- permutation consistency: the fine-tuned model's answers when the options are cyclically rotated;
and says in plain words whether the options alone explain the gain, with the thresholds stated.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.run_dir import RUN_RECORD_FILE, read_json_if_present
from ..data.rows import LETTERS, QARow
from ..inputs.formulations import get_formulation
from ..task.metrics import CHANCE
from ..task.question_forms import QUESTION_FORMS, forms_of
from .stats import accuracy_ci, mean_ci

logger = logging.getLogger(__name__)

ABOVE_CHANCE_MARGIN = 0.05  # a baseline is "above chance" when its interval's lower end exceeds chance by this
PART_OF_THE_GAIN, MOST_OF_THE_GAIN = 0.25, 0.5  # shares of the gain a choices-only model explains
THRESHOLDS = (f"a baseline counts as above chance when the lower end of its 95% interval exceeds chance "
              f"({CHANCE:.0%}) by {ABOVE_CHANCE_MARGIN:.0%} or more; a choices-only model above chance explains the "
              "share (choices-only − original) / (fine-tuned − original) of the gain: 'a little' below "
              f"{PART_OF_THE_GAIN:.0%}, 'part' from {PART_OF_THE_GAIN:.0%}, 'most' from {MOST_OF_THE_GAIN:.0%}")
FINAL_PUNCTUATION = tuple("。．.！!？?；;")
# Arguments a choices-only rerun must not inherit: where it writes, pushing, resuming, the seed loop.
NOT_INHERITED = {"output_dir", "overwrite_output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id",
                 "hub_private_repo", "hub_strategy", "hub_revision", "seeds", "drop_question", "push_test_items"}


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _argmax_set(values: list[float]) -> set[int]:
    best = max(values)
    return {i for i, v in enumerate(values) if v == best}


def _unique_form(options: list[str]) -> set[int]:
    """The option that alone has (or alone lacks) a trait of form; empty when no trait singles one out."""
    traits = (lambda o: o.endswith(FINAL_PUNCTUATION), lambda o: bool(re.search(r"\d", o)),
              lambda o: bool(re.search(r"[A-Za-z]", o)))
    for trait in traits:
        has = [i for i, o in enumerate(options) if trait(o)]
        if len(has) == 1:
            return set(has)
        if len(has) == len(options) - 1:
            return set(range(len(options))) - set(has)
    return set()


def heuristic_picks(rows: list[QARow], training_letters: dict[str, int] | None) -> dict[str, list[set[int]]]:
    """For each heuristic, the option(s) it picks per item (ties are a set; an empty set abstains)."""
    picks: dict[str, list[set[int]]] = {"longest option": [], "shortest option": [],
                                        "most characters shared with the question": [],
                                        "option that differs in form": []}
    for row in rows:
        options = [_norm(o) for o in row.options]
        question = set(_norm(row.question))
        picks["longest option"].append(_argmax_set([len(o) for o in options]))
        picks["shortest option"].append(_argmax_set([-len(o) for o in options]))
        picks["most characters shared with the question"].append(
            _argmax_set([len(set(o) & question) / max(1, len(set(o))) for o in options]))
        picks["option that differs in form"].append(_unique_form(options))
    if training_letters and any(training_letters.values()):
        letter = max(LETTERS, key=lambda x: training_letters.get(x, 0))
        picks[f"most frequent training answer ({letter})"] = [{LETTERS.index(letter)} for _ in rows]
    return picks


def score_picks(name: str, picks: list[set[int]], rows: list[QARow], finetuned: np.ndarray, seed: int) -> dict:
    """Expected accuracy (a tie or an abstention guesses uniformly among its options) and agreement with the
    fine-tuned model where the heuristic names a single option."""
    credit = [(1 / len(p) if r.label in p else 0.0) if p else 1 / len(r.options) for p, r in zip(picks, rows)]
    single = [(next(iter(p)), f) for p, f in zip(picks, finetuned) if len(p) == 1]
    return {"name": name, "accuracy": float(np.mean(credit)), "ci95": list(mean_ci(credit, seed=seed)),
            "decided": len(single),
            "agreement_with_finetuned": float(np.mean([p == f for p, f in single])) if single else None}


def permutation_consistency(scorer, rows: list[QARow], batch_size: int) -> dict:
    """Answers under each cyclic rotation of the options, mapped back to the original option."""
    n = len(rows[0].options)
    answers, accuracy = [], []
    for shift in range(n):
        rotated = [replace(r, options=r.options[shift:] + r.options[:shift],
                           answer=LETTERS[(r.label - shift) % n]) for r in rows]
        predicted = (scorer.score(rotated, batch_size, progress=False).argmax(1) + shift) % n
        answers.append(predicted)
        accuracy.append(float(np.mean(predicted == np.array([r.label for r in rows]))))
    answers = np.array(answers)
    result = {"rotations": n, "consistent": float(np.mean((answers == answers[0]).all(axis=0))),
              "accuracy_per_rotation": accuracy}
    if get_formulation(scorer.formulation).order_invariant:
        result["note"] = "each option is scored on its own, so the order cannot matter by construction"
    elif scorer.joint_eval_rotations >= n:
        result["note"] = "merged over all rotations, so the order cannot matter by construction"
    return result


def rerun_arguments(finetuned_dir: Path, output_dir: Path) -> list[str]:
    """The fine-tuned run's own command line (from hf_ft_run.json), without the question, into output_dir."""
    record = read_json_if_present(finetuned_dir / RUN_RECORD_FILE) or {}
    given = record.get("arguments")
    if given is None:
        from ..core.errors import UserError

        raise UserError(f"{finetuned_dir}: {RUN_RECORD_FILE} has no recorded arguments (a run from an older hf_ft): "
                        "the choices-only baseline cannot repeat its training")
    from ..core.provenance import resolve_recorded

    given = resolve_recorded(given, record.get("arguments_relative_paths", []), finetuned_dir)
    argv = []
    for key, value in given.items():
        if key in NOT_INHERITED or value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return argv + ["--drop_question", "true", "--output_dir", str(output_dir)]


RERUN_INPUTS = ("data_dir", "train_file", "validation_file", "test_file", "retrieval_corpus", "retrieval_contexts",
                "deepspeed", "model_name_or_path", "tokenizer_name")


def check_choices_only_can_train(finetuned_dir: Path, output_dir: Path) -> None:
    """Before any scoring: the choices-only baseline repeats the fine-tuned run's training, so every local
    input that run read must still be there (unless the baseline has already been trained)."""
    from ..core.provenance import resolve_recorded
    from ..core.run_dir import finished_problem

    if (output_dir / "hf_ft_finished.json").is_file() and not finished_problem(output_dir):
        return
    record = read_json_if_present(finetuned_dir / RUN_RECORD_FILE) or {}
    rewritten = record.get("arguments_relative_paths", [])
    given = resolve_recorded(record.get("arguments") or {}, rewritten, finetuned_dir)
    for name in RERUN_INPUTS:
        value = given.get(name)
        local = isinstance(value, str) and (name in rewritten or Path(value).is_absolute())
        if local and not Path(value).exists():
            from ..core.errors import UserError

            raise UserError(f"--audit: the choices-only baseline repeats the training of {finetuned_dir}, whose "
                            f"--{name} {value} is gone; restore it, or pass --no_audit_choices_only to audit with "
                            "the surface heuristics and the permutation check only")


def choices_only(finetuned_dir: Path, output_dir: Path, rows: list[QARow], batch_size: int, use_cpu: bool):
    """Train (or resume, or reuse) the choices-only model and score it on the items without their question."""
    from ..config.arguments import parse_args
    from ..core.run_dir import finished_problem
    from ..training.run import main as train_main
    from .scoring import load_scorer

    if not (output_dir / "hf_ft_finished.json").is_file() or finished_problem(output_dir):
        logger.info("training the choices-only baseline in %s", output_dir)
        train_main(parse_args(rerun_arguments(finetuned_dir, output_dir)))
    scorer = load_scorer(str(output_dir), use_cpu=use_cpu)
    return scorer.score([replace(r, question="") for r in rows], batch_size, progress=False)


def verdict(heuristics: list[dict], choices: dict | None, original_accuracy: float,
            finetuned_accuracy: float) -> tuple[str, list[str]]:
    above = [h for h in heuristics if h["ci95"][0] > CHANCE + ABOVE_CHANCE_MARGIN]
    lines = [f"{h['name']}: {h['accuracy']:.1%} [{h['ci95'][0]:.1%}, {h['ci95'][1]:.1%}]" for h in heuristics]
    gain = finetuned_accuracy - original_accuracy
    if choices is not None:
        lines.append(f"choices-only model: {choices['accuracy']:.1%} [{choices['ci95'][0]:.1%}, "
                     f"{choices['ci95'][1]:.1%}]")
        if choices["ci95"][0] > CHANCE + ABOVE_CHANCE_MARGIN:
            share = choices.get("explained_share")
            head = (f"choices-only reaches {choices['accuracy']:.0%} [{choices['ci95'][0]:.0%}, "
                    f"{choices['ci95'][1]:.0%}]")
            if share is None:
                return f"{head}: the options alone give answers away", lines
            how_much = (f"the options alone account for about {share:.0%} of the fine-tuned model's "
                        f"{100 * gain:+.1f}-point gain over the original")
            if share >= MOST_OF_THE_GAIN:
                return f"{head}: most of the gain may be option artifacts ({how_much})", lines
            if share >= PART_OF_THE_GAIN:
                return f"{head}: part of the gain may be option artifacts ({how_much})", lines
            return f"{head}: the options give a little away ({how_much}); most of the gain is not option " \
                   "artifacts", lines
    if above:
        best = max(above, key=lambda h: h["accuracy"])
        return (f"the options carry an artifact: '{best['name']}' reaches {best['accuracy']:.0%} "
                f"[{best['ci95'][0]:.0%}, {best['ci95'][1]:.0%}] without reading the question"
                + (f"; the fine-tuned model agrees with it on {best['agreement_with_finetuned']:.0%} of the items it "
                   "decides" if best["agreement_with_finetuned"] is not None else "")
                + ("" if choices is None else "; the choices-only model stays near chance, so the gain is not "
                   "explained by this artifact alone"), lines)
    what = "the choices-only model and every surface heuristic stay" if choices is not None else \
        "every surface heuristic stays"
    return f"no sign of option artifacts: {what} within {ABOVE_CHANCE_MARGIN:.0%} of chance", lines


def choices_only_per_form(rows: list[QARow], choices_correct, finetuned_correct) -> dict:
    """Per question form: what the options alone get right next to what the fine-tuned model gets right (an
    "all of the above" gain the choices-only model shares is an artifact, not knowledge)."""
    forms = [forms_of(r.question, r.options) for r in rows]
    out = {}
    for name in [*QUESTION_FORMS, "plain"]:
        mask = np.array([not item if name == "plain" else name in item for item in forms])
        if mask.any():
            out[name] = {"n": int(mask.sum()), "accuracy_choices_only": float(choices_correct[mask].mean()),
                         "accuracy_finetuned": float(finetuned_correct[mask].mean())}
    return out


def run_audit(rows: list[QARow], finetuned_scorer, finetuned_scores: np.ndarray, original_accuracy: float,
              training_letters: dict | None, finetuned_dir: Path | None, out: Path, batch_size: int,
              use_cpu: bool, seed: int, train_choices_only: bool = True) -> dict:
    golds = np.array([r.label for r in rows])
    finetuned = finetuned_scores.argmax(1)
    finetuned_accuracy = float(np.mean(finetuned == golds))
    heuristics = [score_picks(name, picks, rows, finetuned, seed)
                  for name, picks in heuristic_picks(rows, training_letters).items()]
    choices = None
    if train_choices_only and finetuned_dir is not None:
        scores = choices_only(finetuned_dir, out / "choices_only", rows, batch_size, use_cpu)
        correct = scores.argmax(1) == golds
        gain = finetuned_accuracy - original_accuracy
        choices = {"accuracy": float(correct.mean()), "ci95": list(accuracy_ci(correct)), "items": len(rows),
                   "agreement_with_finetuned": float(np.mean(scores.argmax(1) == finetuned)),
                   "run": str(out / "choices_only"),
                   "explained_share": (float(np.clip((correct.mean() - original_accuracy) / gain, 0, 1))
                                       if gain > 0 else None),
                   "per_form": choices_only_per_form(rows, correct, finetuned == golds)}
    text, lines = verdict(heuristics, choices, original_accuracy, finetuned_accuracy)
    return {"verdict": text, "summary_lines": lines, "heuristics": heuristics, "choices_only": choices,
            "permutation": permutation_consistency(finetuned_scorer, rows, batch_size), "thresholds": THRESHOLDS,
            "chance": CHANCE}

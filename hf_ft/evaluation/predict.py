"""`hf-ft predict`: answer questions with a fine-tuned (or pretrained masked-LM) model.

    hf-ft predict out/bert-tmmlu --question "下列何者為哺乳類？" --choices 鯨魚 鯊魚 章魚 海星
    hf-ft predict out/bert-tmmlu --input questions.csv --output predictions.jsonl
    hf-ft predict out/bert-tmmlu --interactive
    hf-ft predict bert-base-chinese --fill "今天天氣很[MASK]。" --top_k 5

Options are ranked by the same scorers the evaluate module uses (trained head, or masked-LM
pseudo-log-likelihood), on the same preprocessing as training.
"""

from __future__ import annotations

import argparse
import re
import string
import sys
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from scipy.special import softmax

from ..core import validation
from ..core.errors import UserError, run_user_errors
from ..config.flags import command_problems
from ..core.writers import claim_file, first_json_line_has
from ..core.run_dir import write_jsonl
from ..data.files import read_records
from ..data.rows import (
    QARow,
    conflicting_answers,
    handle_problems,
    normalise_text,
    option_problem,
    validate_records,
)
from ..data.splits import skewed_letters_warning
from ..inputs.formulations import get_formulation
from ..inputs.modeling import check_model_path, check_vocabulary
from .options import ScoringArguments, ScoringParser
from .scoring import BATCH_TOKENS, LoadedScorer

OPTION_LETTERS = string.ascii_uppercase


def make_question(question: str, choices: list[str]) -> QARow:
    question = (question or "").strip()
    choices = [c.strip() for c in choices]
    if not normalise_text(question):
        raise UserError("the question is empty")
    if len(choices) < 2:
        raise UserError(f"need at least 2 options, got {len(choices)}")
    if len(choices) > len(OPTION_LETTERS):
        raise UserError(f"at most {len(OPTION_LETTERS)} options")
    problem = option_problem(choices, OPTION_LETTERS)
    if problem:
        raise UserError(f"--choices: {problem[1]}")
    return QARow("question", "unknown", question, tuple(choices), None)


def rank(scorer: LoadedScorer, rows: list[QARow], batch_size: int = 32, progress: bool = False,
         batch_tokens: int = BATCH_TOKENS) -> list[dict]:
    """For each row: the options ranked with probabilities (softmax of the scores) and the chosen letter."""
    if get_formulation(scorer.formulation).labels:  # a head with one output per option slot
        n_labels = scorer.model.config.num_labels
        if any(len(r.options) != n_labels for r in rows):
            raise UserError(f"{scorer.path}: a {scorer.formulation} model answers exactly {n_labels} options")
    scores = scorer.score(rows, batch_size, progress, batch_tokens=batch_tokens)
    retrieved = scorer.retrieved or [None] * len(rows)
    results = []
    for row, row_scores, found in zip(rows, scores, retrieved):
        row_scores = row_scores[: len(row.options)]
        probs = softmax(row_scores)
        order = np.argsort(-row_scores, kind="stable")
        results.append({
            "prediction": OPTION_LETTERS[int(order[0])],
            "ranking": [{"letter": OPTION_LETTERS[int(i)], "option": row.options[int(i)],
                         "probability": round(float(probs[i]), 6), "score": round(float(row_scores[i]), 6)}
                        for i in order],
            **({"context_passages": found["passages"]} if found else {}),
        })
    return results


def format_ranking(result: dict, scorer: LoadedScorer) -> str:
    lines = [f"answer: {result['prediction']}   (scorer: {scorer.name})"]
    for place, r in enumerate(result["ranking"], start=1):
        bar = "█" * int(round(20 * r["probability"]))
        lines.append(f"  {place}. {r['letter']}  {r['probability']:6.1%}  {bar:<20}  {r['option']}")
    if result.get("context_passages"):
        lines.append("  open book, passages: " + ", ".join(f"{p['id']} ({p['score']})" for p in result["context_passages"]))
    return "\n".join(lines)


def read_questions(path: str) -> list[QARow]:
    """The training formats, with the answer column optional (accuracy is reported when present) and 2 to 4
    options (C and D may be left out or empty; `options` may be a list)."""
    records, lines, unit = read_records(path, required=("question", "A", "B"), flag="--input")
    rows, problems = validate_records(records, lines, str(path), None, {}, unit, require_answer=False,
                                      fewer_options=True)
    handle_problems(problems + conflicting_answers(rows)[0], "error", None, can_skip=False)
    warning = skewed_letters_warning(rows, str(path))  # the check training makes of its splits
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return rows


def predict_file(scorer: LoadedScorer, rows: list[QARow], input_path: str, output_path: str | None,
                 scoring: ScoringArguments) -> dict:
    check_vocabulary(scorer.tokenizer, rows, scoring.max_unk_rate, name=scorer.path)
    results = rank(scorer, rows, scoring.batch_size, progress=True, batch_tokens=scoring.batch_tokens)
    output = Path(output_path) if output_path else Path(input_path).with_suffix(".predictions.jsonl")
    labelled = [row.answer is not None for row in rows]
    write_jsonl(output, (
        {"id": row.id, "subject": row.subject, "question": row.question, **res,
         **({"answer": row.answer, "correct": res["prediction"] == row.answer} if row.answer else {})}
        for row, res in zip(rows, results)))
    summary = {"items": len(rows), "output": str(output), "scorer": scorer.name}
    if any(labelled):
        correct = [res["prediction"] == row.answer for row, res in zip(rows, results) if row.answer]
        summary["accuracy"] = float(np.mean(correct))
        summary["labelled"] = len(correct)
    print(f"{summary['items']} questions → {output}" + (
        f"; accuracy {summary['accuracy']:.1%} on {summary['labelled']} labelled" if "accuracy" in summary else ""))
    return summary


_LETTERED = re.compile(r"(?:^|\s)([A-Za-z])\s*[:：]\s*")


def parse_options_line(line: str) -> list[str] | None:
    """`A: 鯨魚 B: 大 白鯊 C: ...` on one line → options (which may contain spaces); None if not lettered."""
    marks = list(_LETTERED.finditer(line))
    if len(marks) < 2 or marks[0].start() > 0 and line[: marks[0].start()].strip():
        return None
    letters = [m.group(1).upper() for m in marks]
    if letters != list(OPTION_LETTERS[: len(letters)]):
        return None
    return [line[m.end(): (marks[i + 1].start() if i + 1 < len(marks) else len(line))].strip()
            for i, m in enumerate(marks)]


def interactive(scorer: LoadedScorer, read=input, write=print) -> None:
    """Question, then options (one per line and an empty line, or `A: .. B: ..` on one line); quit/Ctrl-D/Ctrl-C leave."""
    write(f"hf-ft predict — {scorer.path} ({scorer.name}). Type 'quit' or press Ctrl-D to leave.")
    try:
        while True:
            question = read("\nquestion> ").strip()
            if question.lower() in ("quit", "exit", "q"):
                break
            if not question:
                continue
            first = read("options (one per line, empty line to finish; or A: .. B: .. on one line)\n> ")
            if first.strip().lower() in ("quit", "exit"):
                break
            options = parse_options_line(first)
            if options is None:
                options = [first.strip()] if first.strip() else []
                while True:
                    line = read("> ")
                    if not line.strip():
                        break
                    options.append(line.strip())
            try:
                row = make_question(question, options)
                write(format_ranking(rank(scorer, [row])[0], scorer))
            except UserError as e:
                write(f"error: {e}")
    except (EOFError, KeyboardInterrupt):
        pass
    write("\nbye")


def fill_mask(scorer: LoadedScorer, text: str, top_k: int) -> list[list[dict]]:
    """Top-k tokens for each mask token in `text` (masked-LM models only), by transformers' fill-mask pipeline."""
    from transformers import pipeline

    if not get_formulation(scorer.formulation).vocabulary_head:
        raise UserError(f"{scorer.path}: --fill needs a masked-LM model; this one is a {scorer.formulation} model")
    mask = scorer.tokenizer.mask_token
    if not mask or mask not in text:
        raise UserError(f"--fill: the text has no {mask or 'mask'} token")
    if top_k > len(scorer.tokenizer):
        raise UserError(f"--top_k {top_k}: the vocabulary has only {len(scorer.tokenizer)} tokens")
    fill = pipeline("fill-mask", model=scorer.model, tokenizer=scorer.tokenizer, device=scorer.model.device)
    results = fill(text, top_k=top_k, tokenizer_kwargs={"truncation": True, "max_length": scorer.max_length})
    per_mask = results if isinstance(results[0], list) else [results]
    return [[{"token": c["token_str"], "probability": float(c["score"])} for c in candidates]
            for candidates in per_mask]


def build_parser() -> ScoringParser:
    """predict's own arguments beside the ScoringArguments it shares with evaluate."""
    parser = ScoringParser("hf-ft predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a fine-tuned output_dir, or a pretrained masked-LM (hub id or path)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--question", help="one question; give its options with --choices")
    mode.add_argument("--input", help="CSV/JSON/JSONL with question,A,B,C,D (answer optional)")
    mode.add_argument("--interactive", action="store_true", help="a question-and-options loop in the terminal")
    mode.add_argument("--fill", help="masked-LM: text with [MASK] tokens to fill")
    parser.add_argument("--choices", nargs="+", default=[], help="the options (2 or more)")
    parser.add_argument("--output", help="where the JSONL predictions go (--input: default <input>.predictions.jsonl; "
                                         "--question: also written there when given)")
    parser.add_argument("--top_k", type=int, default=5, help="--fill: how many tokens per mask")
    parser.add_argument("--json", action="store_true", help="single question: print JSON instead of a table")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an --output file that predict did not write")
    return parser


PREDICTIONS_FILE = first_json_line_has("prediction", "ranking")  # what predict's own output starts with


PREDICT_RULES = {"top_k": validation.at_least(1)}


def run(scoring: ScoringArguments, args) -> object:
    parser = build_parser()
    given = {name for name, value in vars(args).items() if value != parser.get_default(name)}
    given |= {f.name for f in fields(scoring) if getattr(scoring, f.name) != f.default}
    problems = validation.text_problems({**vars(args), **asdict(scoring)}, given, own=("question", "choices"))
    problems += command_problems("predict", given)
    if problems:
        raise UserError(validation.refusal(problems))
    check_model_path(args.model, "model")
    if args.question is not None:
        row = make_question(args.question, args.choices)  # check the input before loading a model
    if args.input:
        rows = read_questions(args.input)
        claim_file(args.output or Path(args.input).with_suffix(".predictions.jsonl"), "hf-ft predict", "--output",
                   is_own=PREDICTIONS_FILE, overwrite=args.overwrite, inputs={"--input": args.input})
    elif args.output:
        if args.question is None:
            raise UserError("--output: writes the predictions of --input or --question; this run has neither")
        claim_file(args.output, "hf-ft predict", "--output", is_own=PREDICTIONS_FILE, overwrite=args.overwrite)
    problems = scoring.scoring_problems() + validation.problems(vars(args), PREDICT_RULES)
    if problems:
        raise UserError(validation.refusal(problems))
    scorer = scoring.load(args.model)
    if args.question is not None:
        result = rank(scorer, [row])[0]
        if args.output:
            write_jsonl(Path(args.output), [{"id": row.id, "question": row.question, **result, "scorer": scorer.name}])
        if args.json:
            import json

            print(json.dumps({**result, "scorer": scorer.name}, ensure_ascii=False))
        else:
            print(format_ranking(result, scorer))
        return result
    if args.input:
        return predict_file(scorer, rows, args.input, args.output, scoring)
    if args.fill:
        results = fill_mask(scorer, args.fill, args.top_k)
        for n, candidates in enumerate(results, start=1):
            print(f"[MASK] {n}: " + "  ".join(f"{c['token']} ({c['probability']:.1%})" for c in candidates))
        return results
    interactive(scorer)
    return None


def main(argv: list[str] | None = None):
    return run_user_errors(lambda: run(*build_parser().parse_command(list(sys.argv[1:] if argv is None else argv))))


if __name__ == "__main__":
    main(sys.argv[1:])

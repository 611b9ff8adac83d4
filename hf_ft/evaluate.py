"""Original vs fine-tuned on the same held-out questions, with honest statistics.

    python -m hf_ft.evaluate --original bert-base-chinese --finetuned out/bert-tmmlu

Items default to the fine-tuned run's test_qa_data.json and are checked against its
data_manifest.json, so no training or validation item is ever scored. Each model is scored by the
scorer its checkpoint supports (trained head, or masked-LM pseudo-log-likelihood for a pretrained
model) and the report says which. Outputs: comparison.json/.md/.png and predictions.jsonl.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import LETTERS, QARow, load_data_dir, load_items, read_json_if_present, write_json, write_jsonl
from .errors import UserError
from .metrics import accuracy_report, percent
from .modeling import check_model_path
from .plotting import plot_comparison
from .preprocessing import JOINT_EVAL_ROTATIONS
from .scoring import SCORERS, load_scorer
from .stats import accuracy_ci, paired_comparison
from .subjects import CATEGORIES, category_of

logger = logging.getLogger("hf_ft.evaluate")


@dataclass
class EvaluateArguments:
    original: str = field(metadata={"help": "The model before fine-tuning (hub id or path), e.g. bert-base-chinese."})
    finetuned: str = field(metadata={"help": "The fine-tuned model: a run's output_dir."})
    test_file: str | None = field(
        default=None, metadata={"help": "Items to score (CSV/JSON/JSONL); default: <finetuned>/test_qa_data.json."})
    data_dir: str | None = field(default=None, metadata={"help": "Score the test split of a TMMLU+-layout folder."})
    subjects: str = field(default="all", metadata={"help": "With --data_dir: subjects/categories to score."})
    output_dir: str | None = field(default=None, metadata={"help": "Default: <finetuned>/comparison."})
    scorer: str = field(default="auto", metadata={
        "help": "auto: from each checkpoint's config (trained head, else masked-LM pseudo-log-likelihood); "
                "head or mlm: force one for both models.", "choices": list(SCORERS)})
    allow_overlap: bool = field(default=False, metadata={
        "help": "Remove (and report) items that were in training/validation instead of stopping."})
    joint_eval_rotations: int = field(default=JOINT_EVAL_ROTATIONS, metadata={
        "help": "A joint model scores each question in this many rotations of its option order, averaging each "
                "option's log-probability over them (1: one pass, fastest)."})
    batch_size: int = field(default=32, metadata={"help": "Items per forward pass."})
    max_seq_length: int = field(default=512, metadata={"help": "Longest input in tokens."})
    use_cpu: bool = field(default=False, metadata={"help": "Score on the CPU even when CUDA is available."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code from the hub."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    judge: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint for the optional LLM judge, e.g. http://127.0.0.1:8000/v1 "
                "(token from $HF_FT_JUDGE_API_KEY or $OPENAI_API_KEY)."})
    judge_model: str | None = field(default=None, metadata={
        "help": "With --judge: the served model's name; alone: a local causal LM path loaded with transformers."})
    judge_max_items: int = field(default=200, metadata={"help": "Judge at most this many items (0: all)."})
    judge_concurrency: int = field(default=8, metadata={"help": "Concurrent requests to a remote judge."})


# ----------------------------------------------------------------------------------------------
# Items and the held-out proof


def load_manifest(finetuned: str) -> tuple[dict | None, Path | None]:
    path = Path(finetuned) / "data_manifest.json"
    manifest = read_json_if_present(path)
    return (manifest, path) if manifest is not None else (None, None)


def choose_items(args: EvaluateArguments) -> tuple[list[QARow], str]:
    if args.test_file:
        return load_items(args.test_file), args.test_file
    if args.data_dir:
        loaded = load_data_dir(args.data_dir, args.subjects)
        if not loaded.pools.get("test"):
            raise UserError(f"{args.data_dir}: no <subject>_test.csv files to score")
        return loaded.pools["test"], args.data_dir
    default = Path(args.finetuned) / "test_qa_data.json"
    if not default.is_file():
        raise UserError(f"{default}: not found; give --test_file or --data_dir")
    return load_items(default), str(default)


def check_held_out(rows: list[QARow], manifest: dict | None, allow_overlap: bool, where: str) -> tuple[list[QARow], dict]:
    """Every item's content hash must be absent from the training and validation hashes."""
    if manifest is None:
        logger.warning("no data_manifest.json next to the fine-tuned model: cannot prove the items were held out")
        return rows, {"verified": False, "reason": "no data_manifest.json", "overlap_removed": 0}
    seen = set(manifest.get("content_hashes", {}).get("train", [])) | set(
        manifest.get("content_hashes", {}).get("validation", []))
    overlap = [r for r in rows if r.content_hash in seen]
    if overlap and not allow_overlap:
        shown = ", ".join(r.id for r in overlap[:5]) + (" …" if len(overlap) > 5 else "")
        raise UserError(f"{len(overlap)} of {len(rows)} items were in the fine-tuning data ({shown}); a comparison "
                        f"on them is not held out. Use the run's test_qa_data.json, or --allow_overlap to drop them")
    kept = [r for r in rows if r.content_hash not in seen]
    if overlap:
        logger.warning("removed %d item(s) that were in training/validation", len(overlap))
    return kept, {"verified": True, "manifest": where, "overlap_removed": len(overlap),
                  "overlap_ids": [r.id for r in overlap]}


# ----------------------------------------------------------------------------------------------
# The report


def _model_summary(path, scorer_name, predictions, golds, subjects) -> dict:
    report = accuracy_report(predictions, golds, subjects)
    correct = np.asarray(predictions) == np.asarray(golds)
    low, high = accuracy_ci(correct)
    letters = Counter(LETTERS[p] for p in predictions)
    return {"path": path, "scorer": scorer_name, **report, "accuracy_ci95": [low, high],
            "predicted_letters": {letter: letters.get(letter, 0) for letter in LETTERS}}


def build_report(rows, original, finetuned, scores_o, scores_f, seed: int) -> dict:
    golds = np.array([r.label for r in rows])
    subjects = [r.subject for r in rows]
    categories = np.array([category_of(s) for s in subjects])
    pred_o, pred_f = scores_o.argmax(1), scores_f.argmax(1)
    correct_o, correct_f = pred_o == golds, pred_f == golds
    paired = {"overall": paired_comparison(correct_o, correct_f, seed)}
    per_category = {}
    for category in CATEGORIES:
        mask = categories == category
        if mask.any():
            per_category[category] = paired_comparison(correct_o[mask], correct_f[mask], seed)
            per_category[category]["ci95_original"] = list(accuracy_ci(correct_o[mask]))
            per_category[category]["ci95_finetuned"] = list(accuracy_ci(correct_f[mask]))
    per_subject = []
    for subject in sorted(set(subjects)):
        mask = np.array([s == subject for s in subjects])
        per_subject.append({"subject": subject, "category": category_of(subject), "n": int(mask.sum()),
                            "accuracy_original": float(correct_o[mask].mean()),
                            "accuracy_finetuned": float(correct_f[mask].mean()),
                            "difference": float(correct_f[mask].mean() - correct_o[mask].mean())})
    gold_letters = Counter(LETTERS[g] for g in golds)
    return {
        "items": len(rows),
        "original": _model_summary(original.path, original.name, pred_o, golds, subjects),
        "finetuned": _model_summary(finetuned.path, finetuned.name, pred_f, golds, subjects),
        "gold_letters": {letter: gold_letters.get(letter, 0) for letter in LETTERS},
        "paired": {**paired, "per_category": per_category},
        "per_subject": per_subject,
    }


def render_markdown(report: dict) -> str:
    o, f, overall = report["original"], report["finetuned"], report["paired"]["overall"]
    ci = overall["difference_ci95"]
    lines = [
        "# Original vs fine-tuned",
        "",
        f"{report['items']} held-out items (held-out check: "
        f"{'verified against data_manifest.json' if report['held_out']['verified'] else 'NOT verified'}"
        f"; dataset revision: {report.get('dataset_revision') or 'n/a'}).",
        "",
        "| model | path | scorer | accuracy (95% CI) | TMMLU+ average |",
        "|---|---|---|---|---|",
        f"| original | `{o['path']}` | {o['scorer']} | {percent(o['accuracy'])} ({percent(o['accuracy_ci95'][0])}–"
        f"{percent(o['accuracy_ci95'][1])}) | {percent(o['tmmlu_average'])} |",
        f"| fine-tuned | `{f['path']}` | {f['scorer']} | {percent(f['accuracy'])} ({percent(f['accuracy_ci95'][0])}–"
        f"{percent(f['accuracy_ci95'][1])}) | {percent(f['tmmlu_average'])} |",
        "",
        f"**Difference** (fine-tuned − original): {100 * overall['difference']:+.1f} points, paired bootstrap 95% CI "
        f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}], exact McNemar p = {overall['mcnemar']['p_value']:.3g} "
        f"({overall['mcnemar']['only_finetuned_correct']} items only fine-tuned got right, "
        f"{overall['mcnemar']['only_original_correct']} only original).",
        "",
        "## Per category",
        "",
        "| category | n | original | fine-tuned | Δ | 95% CI of Δ | McNemar p |",
        "|---|---|---|---|---|---|---|",
    ]
    for category, c in report["paired"]["per_category"].items():
        lines.append(f"| {category} | {c['n']} | {percent(c['accuracy_original'])} | {percent(c['accuracy_finetuned'])} | "
                     f"{100 * c['difference']:+.1f} | [{100 * c['difference_ci95'][0]:+.1f}, "
                     f"{100 * c['difference_ci95'][1]:+.1f}] | {c['mcnemar']['p_value']:.3g} |")
    lines += ["", "## Predicted letters (position bias check)", "", "| | A | B | C | D |", "|---|---|---|---|---|"]
    for name, counts in (("gold", report["gold_letters"]), ("original", o["predicted_letters"]),
                         ("fine-tuned", f["predicted_letters"])):
        lines.append(f"| {name} | " + " | ".join(str(counts[letter]) for letter in LETTERS) + " |")
    lines += ["", "## Per subject", "", "| subject | category | n | original | fine-tuned | Δ |", "|---|---|---|---|---|---|"]
    for s in report["per_subject"]:
        lines.append(f"| {s['subject']} | {s['category']} | {s['n']} | {percent(s['accuracy_original'])} | "
                     f"{percent(s['accuracy_finetuned'])} | {100 * s['difference']:+.1f} |")
    judge = report.get("judge")
    if judge:
        lines += ["", "## LLM judge", "", f"Judge: `{judge['judge']}`, {judge['items']} items asked in both orders "
                  f"({judge['unparseable_replies']} of {judge['requests']} replies unparseable).", "",
                  f"- mean score: original {judge['mean_score_original']}, fine-tuned {judge['mean_score_finetuned']}",
                  f"- fine-tuned wins / ties / original wins / undecided: {judge['finetuned_wins']} / {judge['ties']} / "
                  f"{judge['original_wins']} / {judge['undecided']}",
                  f"- agreement between the two orders: {percent(judge['order_agreement'])}; agreement with exact "
                  f"match: {percent(judge['agreement_with_exact_match'])} ({judge['exact_match_items_compared']} items)"]
    return "\n".join(lines) + "\n"


def terminal_table(report: dict) -> str:
    o, f = report["original"], report["finetuned"]
    rows = [("", "original", "fine-tuned", "Δ", "95% CI", "p")]
    overall = report["paired"]["overall"]
    rows.append(("overall", percent(o["accuracy"]), percent(f["accuracy"]), f"{100 * overall['difference']:+.1f}",
                 f"[{100 * overall['difference_ci95'][0]:+.1f},{100 * overall['difference_ci95'][1]:+.1f}]",
                 f"{overall['mcnemar']['p_value']:.2g}"))
    for category, c in report["paired"]["per_category"].items():
        rows.append((category, percent(c["accuracy_original"]), percent(c["accuracy_finetuned"]),
                     f"{100 * c['difference']:+.1f}",
                     f"[{100 * c['difference_ci95'][0]:+.1f},{100 * c['difference_ci95'][1]:+.1f}]",
                     f"{c['mcnemar']['p_value']:.2g}"))
    rows.append(("TMMLU+ avg", percent(o["tmmlu_average"]), percent(f["tmmlu_average"]),
                 f"{100 * (f['tmmlu_average'] - o['tmmlu_average']):+.1f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows)
    return f"{text}\nscorers: original = {o['scorer']}, fine-tuned = {f['scorer']}; {report['items']} items"


def write_outputs(out: Path, report: dict, rows, scores_o, scores_f) -> None:
    write_json(out / "comparison.json", report)
    (out / "comparison.md").write_text(render_markdown(report), encoding="utf-8")
    categories = list(report["paired"]["per_category"]) + ["overall"]
    series = {}
    for who, key in (("original", "original"), ("fine-tuned", "finetuned")):
        acc, low, high = [], [], []
        for category in categories[:-1]:
            c = report["paired"]["per_category"][category]
            acc.append(c[f"accuracy_{key}"])
            low.append(c[f"ci95_{key}"][0])
            high.append(c[f"ci95_{key}"][1])
        acc.append(report[key]["accuracy"])
        low.append(report[key]["accuracy_ci95"][0])
        high.append(report[key]["accuracy_ci95"][1])
        series[f"{who} — {report[key]['scorer']}"] = {"accuracy": acc, "ci_low": low, "ci_high": high}
    plot_comparison(categories, series, out / "comparison.png")
    write_jsonl(out / "predictions.jsonl", (
        {"id": r.id, "subject": r.subject, "gold": r.answer,
         "original": LETTERS[int(so.argmax())], "finetuned": LETTERS[int(sf.argmax())],
         "original_scores": [round(float(x), 6) for x in so], "finetuned_scores": [round(float(x), 6) for x in sf]}
        for r, so, sf in zip(rows, scores_o, scores_f)))


def run(args: EvaluateArguments) -> dict:
    """Score both models on the same held-out items and write the report; returns it."""
    for path in (args.original, args.finetuned):  # fail before minutes of scoring, not after
        check_model_path(path)
    rows, items_from = choose_items(args)
    manifest, manifest_path = load_manifest(args.finetuned)
    rows, held_out = check_held_out(rows, manifest, args.allow_overlap, str(manifest_path))
    if not rows:
        raise UserError(f"{items_from}: no items left to score")
    out = Path(args.output_dir or Path(args.finetuned) / "comparison")

    seconds = {}
    scores = {}
    scorers = {}
    for who, path in (("original", args.original), ("finetuned", args.finetuned)):
        scorer = load_scorer(path, args.scorer, args.use_cpu, args.max_seq_length, args.trust_remote_code,
                             joint_eval_rotations=args.joint_eval_rotations)
        start = time.perf_counter()
        scores[who] = scorer.score(rows, args.batch_size)
        seconds[who] = time.perf_counter() - start
        scorers[who] = scorer
        logger.info("%s scored %d items with %s in %.1f s", path, len(rows), scorer.name, seconds[who])
        del scorer
    report = build_report(rows, scorers["original"], scorers["finetuned"], scores["original"], scores["finetuned"],
                          args.seed)
    report.update({
        "items_from": items_from,
        "held_out": held_out,
        "dataset_revision": (manifest or {}).get("revision"),
        "dataset_source": (manifest or {}).get("source"),
        "scoring_seconds": seconds,
        "seconds_per_1000_items": {k: 1000 * v / len(rows) for k, v in seconds.items()},
    })
    if args.judge or args.judge_model:
        report["judge"] = run_judge(args, rows, scores["original"], scores["finetuned"], out)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, report, rows, scores["original"], scores["finetuned"])
    print(terminal_table(report))
    print(f"report: {out / 'comparison.md'}  plot: {out / 'comparison.png'}")
    return report


def run_judge(args, rows, scores_o, scores_f, out: Path) -> dict:
    from .judge import LocalJudge, RemoteJudge, judge_pairs

    judge = (RemoteJudge(args.judge, args.judge_model, args.judge_concurrency) if args.judge
             else LocalJudge(args.judge_model, use_cpu=args.use_cpu, trust_remote_code=args.trust_remote_code))
    limit = len(rows) if args.judge_max_items <= 0 else min(len(rows), args.judge_max_items)
    items = []
    for r, so, sf in zip(rows[:limit], scores_o, scores_f):
        po, pf = int(so.argmax()), int(sf.argmax())
        items.append({"id": r.id, "question": r.question, "reference": r.options[r.label],
                      "original_answer": r.options[po], "finetuned_answer": r.options[pf],
                      "original_correct": po == r.label, "finetuned_correct": pf == r.label})
    summary, per_item = judge_pairs(judge, items)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "judge.jsonl", per_item)
    return summary


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    from .cli import run_user_errors

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr)
    parser = HfArgumentParser(EvaluateArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return run_user_errors(run, args)


if __name__ == "__main__":
    main()

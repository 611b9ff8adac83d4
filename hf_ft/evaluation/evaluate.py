"""Original vs fine-tuned on the same held-out questions, with honest statistics.

    python -m hf_ft.evaluate --original bert-base-chinese --finetuned out/bert-tmmlu [--audit]
    python -m hf_ft.evaluate --original bert-base-chinese --finetuned out/seeds        # a --seeds folder
    python -m hf_ft.evaluate --original bert-base-chinese --finetuned out/a --models macbert=out/b roberta=out/c
    accelerate launch --multi_gpu --num_processes 2 -m hf_ft.evaluate ...           # scoring split over processes

Items default to the fine-tuned run's test_qa_data.json and are checked against its data_manifest.json,
so no training or validation item is ever scored. Each model is scored by the scorer its checkpoint
supports (trained head, or masked-LM pseudo-log-likelihood for a pretrained model) and the report says
which. Outputs: comparison.json/.md/.png and predictions.jsonl.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..core import validation
from ..core.errors import UserError, run_user_errors, writable_folder
from ..config.flags import command_problems
from ..core.writers import claim_folder
from ..core.run_dir import COMPARISON_DIR, MANIFEST_FILE, RUN_RECORD_FILE, read_json_if_present
from ..data.splits import skewed_letters_warning, stratified_sample
from ..inputs.modeling import check_model_path, check_vocabulary
from ..publish.model_card import data_facts, write_model_card
from .compare import Scored, build_report
from .cross_fit import fold_items, out_of_fold_comparison
from .items import (
    check_held_out,
    choose_items,
    expand_runs,
    fold_of,
    parse_models,
    reference_index,
    retrieval_summary,
)
from .reports import terminal_table, write_outputs
from .options import ScoringArguments, ScoringParser
from .scoring import run_settings

logger = logging.getLogger("hf_ft.evaluation.evaluate")


@dataclass
class EvaluateArguments(ScoringArguments):
    """`python -m hf_ft.evaluate`: which models, on which items, what else to report; how to score them is
    the ScoringArguments it shares with predict."""

    original: str = field(metadata={"help": "The model before fine-tuning (hub id or path), e.g. bert-base-chinese."})
    finetuned: list[str] = field(metadata={
        "help": "The fine-tuned model: a run's output_dir; several runs of one configuration (or a --seeds "
                "folder) give the difference per seed and across seeds."})
    models: list[str] | None = field(default=None, metadata={
        "help": "More models for the leaderboard, as path or label=path (any number): every model is scored on "
                "the same items and tested against --reference, with Holm's correction."})
    reference: str = field(default="original", metadata={
        "help": "The leaderboard's reference: `original`, `finetuned` or a label given in --models."})
    test_file: str | None = field(
        default=None, metadata={"help": "Items to score (CSV/JSON/JSONL); default: <finetuned>/test_qa_data.json."})
    data_dir: str | None = field(default=None, metadata={"help": "Score the test split of a TMMLU+-layout folder."})
    subjects: str = field(default="all", metadata={"help": "With --data_dir: subjects/categories to score."})
    output_dir: str | None = field(default=None, metadata={"help": "Default: <finetuned>/comparison."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Write into --output_dir even when it holds files evaluate did not write."})
    max_items: int | None = field(default=None, metadata={
        "help": "Score a seeded sample of this many items, stratified by subject (the same items for every model); "
                "the report says it is a sample."})
    audit: bool = field(default=False, metadata={
        "help": "Check whether the gain is knowledge or option artifacts: surface heuristics, a choices-only model "
                "(trained like the fine-tuned run, without the question) and permutation consistency."})
    audit_choices_only: bool = field(default=True, metadata={
        "help": "With --audit: train the choices-only baseline (--no_audit_choices_only: heuristics only)."})
    gold_passages: str | None = field(default=None, metadata={
        "help": "JSONL, {\"id\": item id, \"passages\": [passage or document ids]} per line: the passages "
                "known to support each item (synthetic data; the open-book demo writes gold_passages.jsonl). "
                "Adds recall@1..k for each open-book model."})
    allow_overlap: bool = field(default=False, metadata={
        "help": "Remove (and report) items that were in training/validation instead of stopping."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample and the bootstrap."})
    judge: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint for the optional LLM judge, e.g. http://127.0.0.1:8000/v1 "
                "(token from $HF_FT_JUDGE_API_KEY or $OPENAI_API_KEY)."})
    judge_model: str | None = field(default=None, metadata={
        "help": "With --judge: the served model's name; alone: a local causal LM path loaded with transformers."})
    judge_max_items: int = field(default=200, metadata={"help": "Judge at most this many items (0: all)."})
    judge_concurrency: int = field(default=8, metadata={"help": "Concurrent requests to a remote judge."})

    def __post_init__(self):
        if isinstance(self.finetuned, str):  # EvaluateArguments(finetuned="out/run") from Python
            self.finetuned = [self.finetuned]
        if isinstance(self.models, str):
            self.models = [self.models]


EVALUATE_RULES = {
    "seed": validation.SHARED["seed"],
    "max_items": validation.at_least(1),
    "judge_max_items": validation.at_least(0),
    "judge_concurrency": validation.at_least(1),
}


def check_settings(args: EvaluateArguments) -> None:
    """The same ranges as training for the flags they share (hf_ft/validation.py), before any model loads."""
    values = {f.name: getattr(args, f.name) for f in fields(args)}
    defaults = EvaluateArguments.__dataclass_fields__
    given = {name for name, value in values.items() if value != defaults[name].default}
    problems = args.scoring_problems() + validation.problems(values, EVALUATE_RULES)
    problems += validation.text_problems(values, given)
    problems += command_problems("evaluate", given)
    if problems:
        raise UserError(validation.refusal(problems))


# ----------------------------------------------------------------------------------------------
# The run


def run(args: EvaluateArguments) -> dict:
    """Score every model on the same held-out items and write the report; returns it."""
    from ..core.processes import scoring_state

    check_settings(args)
    state = scoring_state(args.use_cpu)  # under `accelerate launch`, the processes share the scoring
    runs = expand_runs(args.finetuned)
    entries = parse_models(args, runs)
    reference = reference_index(args, entries)
    for _, path, role, _ in entries:  # fail before minutes of scoring, not after
        check_model_path(path, {"original": "--original", "finetuned": "--finetuned"}.get(role, "--models"))
    rows, items_from = choose_items(args, runs[0][0])
    manifests = [(str(Path(p) / MANIFEST_FILE), read_json_if_present(Path(p) / MANIFEST_FILE)) for p, _ in runs]
    rows, held_out = check_held_out(rows, manifests, args.allow_overlap)
    per_fold = fold_items(runs)  # a --folds folder: each fold's own held-out questions, checked now too
    if not rows:
        raise UserError(f"{items_from}: no items left to score")
    skew = skewed_letters_warning(rows, items_from)  # the check training makes of its splits
    if skew:
        logger.warning(skew)
    population = len(rows)
    if args.max_items is not None and args.max_items < len(rows):
        rows = stratified_sample(rows, args.max_items, args.seed)
    out = Path(args.output_dir or Path(runs[0][0]) / COMPARISON_DIR)
    writable_folder(out, "--output_dir")  # claimed below, once everything else is checked
    if args.audit and args.audit_choices_only:
        from .audit import check_choices_only_can_train

        check_choices_only_can_train(Path(next(p for _, p, role, _ in entries if role == "finetuned")),
                                     out / "choices_only")
    if args.judge_model and not args.judge:
        from .judge import check_local_judge

        check_local_judge(args.judge_model, args.trust_remote_code)
    is_main = state.is_main_process
    gold = None
    if args.gold_passages:
        from ..retrieval.corpus import read_gold_passages

        if not any(run_settings(path).get("retrieval") for _, path, _, _ in entries):
            raise UserError(f"--gold_passages {args.gold_passages}: no model here retrieves passages (recall@k is "
                            "for open-book runs)")
        gold = read_gold_passages(args.gold_passages)
    if gold is not None and not any(r.id in gold for r in rows):
        raise UserError(f"--gold_passages {args.gold_passages}: none of its {len(gold)} item ids is among the "
                        f"{len(rows)} items scored (ids look like {rows[0].id})")
    claim_folder(out, "python -m hf_ft.evaluate", "--output_dir", overwrite=args.overwrite_output_dir,
                 overwrite_flag="--overwrite_output_dir",  # before minutes of scoring, not after
                 inputs={"--test_file": args.test_file, "--data_dir": args.data_dir,
                         "--gold_passages": args.gold_passages},
                 written_before=lambda names: "comparison.json" in names)

    models, seconds, passes, scorers, retrieval = [], {}, {}, {}, {}
    for label, path, role, seed in entries:
        scorer = args.load(path)
        check_vocabulary(scorer.tokenizer, rows, args.max_unk_rate, name=path)
        start = time.perf_counter()
        scores = args.score(scorer, rows)
        seconds[label] = time.perf_counter() - start
        passes[label] = scorer.passes
        logger.info("%s scored %d items with %s in %.1f s", path, len(rows), scorer.name, seconds[label])
        models.append(Scored(label, path, scorer.name, scores, role, seed,
                             fold_of(path) if role == "finetuned" else None))
        if scorer.retrieved is not None:
            retrieval[label] = retrieval_summary(scorer, rows, scores, gold)
            if is_main:
                import re

                from ..core.run_dir import write_jsonl

                name = re.sub(r"[^\w.-]+", "_", label).strip("_")
                write_jsonl(out / f"retrieved_contexts-{name}.jsonl", scorer.retrieved)
        if role == "finetuned" and "finetuned" not in scorers:
            scorers["finetuned"] = scorer  # kept for the audit's permutation check
    finetuned_book = scorers.get("finetuned")
    passages = ([bool(record["passages"]) for record in finetuned_book.retrieved]
                if finetuned_book is not None and finetuned_book.retrieved is not None else None)
    report = build_report(rows, models, reference, args.seed, passages)
    if per_fold:
        report["cross_fit"] = out_of_fold_comparison(args, per_fold, args.seed)
    manifest = manifests[0][1] or {}
    report.update({
        "items_from": items_from,
        "held_out": held_out,
        "dataset_revision": manifest.get("revision"),
        "dataset_source": manifest.get("source"),
        "data_description": data_facts(manifest)["description"] if manifest else None,
        "scoring_seconds": seconds,
        "seconds_per_1000_items": {k: 1000 * v / len(rows) for k, v in seconds.items()},
        "forward_passes_per_item": {k: v / len(rows) for k, v in passes.items()},
    })
    if retrieval:
        report["retrieval"] = retrieval
    if len(rows) < population:
        report["sample"] = {"items": len(rows), "population": population, "seed": args.seed,
                            "stratified_by": "subject", "per_subject": dict(Counter(r.subject for r in rows))}
    if args.audit:
        from .audit import run_audit

        finetuned = next(m for m in models if m.role == "finetuned")
        report["audit"] = run_audit(
            rows, scorers["finetuned"], finetuned.scores, report["original"]["accuracy"],
            manifest.get("gold_letters", {}).get("train"), Path(finetuned.path), out, args.batch_size,
            args.use_cpu, args.seed, train_choices_only=args.audit_choices_only)
    if is_main and (args.judge or args.judge_model):
        report["judge"] = run_judge(args, rows, models[0].scores, models[1].scores, out)
    if is_main:
        write_outputs(out, report, rows, models)
        if out.resolve() == (Path(runs[0][0]) / COMPARISON_DIR).resolve() and \
                (Path(runs[0][0]) / RUN_RECORD_FILE).is_file():
            write_model_card(runs[0][0])  # the card now shows the comparison
        print(terminal_table(report))
        print(f"report: {out / 'comparison.md'}  plot: {out / 'comparison.png'}")
    return report


def run_judge(args, rows, scores_o, scores_f, out: Path) -> dict:
    from ..core.run_dir import write_jsonl
    from .judge import LocalJudge, RemoteJudge, judge_pairs

    judge = (RemoteJudge(args.judge, args.judge_model, args.judge_concurrency) if args.judge
             else LocalJudge(args.judge_model, use_cpu=args.use_cpu, trust_remote_code=args.trust_remote_code,
                                    use_kernels=args.use_kernels))
    limit = len(rows) if args.judge_max_items <= 0 else min(len(rows), args.judge_max_items)
    items = []
    for r, so, sf in zip(rows[:limit], scores_o, scores_f):
        po, pf = int(so.argmax()), int(sf.argmax())
        items.append({"id": r.id, "question": r.question, "reference": r.options[r.label],
                      "original_answer": r.options[po], "finetuned_answer": r.options[pf],
                      "original_correct": po == r.label, "finetuned_correct": pf == r.label})
    summary, per_item = judge_pairs(judge, items)
    write_jsonl(out / "judge.jsonl", per_item)
    if summary["requests"] and summary["unparseable_replies"] > summary["requests"] / 2:
        raise UserError(f"judge {summary['judge']}: {summary['unparseable_replies']} of {summary['requests']} replies "
                        f"could not be parsed, so its verdict would be noise, not a result (the replies are in "
                        f"{out / 'judge.jsonl'}); use a chat or instruction model, or drop --judge/--judge_model")
    return summary


def build_parser() -> ScoringParser:
    return ScoringParser("python -m hf_ft.evaluate", EvaluateArguments)


def parse(argv: list[str] | None) -> EvaluateArguments:
    (args,) = build_parser().parse_command(list(sys.argv[1:] if argv is None else argv))
    return args


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr)
    return run_user_errors(lambda: run(parse(argv)))


if __name__ == "__main__":
    main()

"""Extra training data at the size users run it, and on a task built so that it must help.

    python -m benchmarks.extra_data --output bench_extra_data.json            # the full run (~6 min here)
    python -m benchmarks.extra_data --output bench_extra_data.json --quick    # small sizes, a smoke test

1. The contamination check: 50,000 extra rows (Simplified script) against 22,700 TMMLU+-like rows (Traditional,
   the size of v1.0's test + val + dev), with 200 planted copies (100 exact in Simplified with options
   reordered, 100 reworded). Target: <= 30 s here; every planted copy found, nothing else.
2. OpenCC s2twp conversion of those 50,000 rows (question, options, a passage), in chunks, against one
   `convert` call per text.
3. Must help: the demo task with 60 questions per subject (a starved TMMLU+), alone and with 2,000 extra
   questions in Simplified script (other wordings of the same facts, a passage each; 4 options, or C3-like 2-4),
   converted and checked, then compared on the same test items with `python -m hf_ft.evaluate --models`.

Timings are only comparable inside one run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, synthetic_row, parse_benchmark_args, write_report
from hf_ft.data.rows import LETTERS, QARow

REFERENCE_ROWS, EXTRA_ROWS, PLANTED = 22_700, 50_000, 100


def _rows(n: int, seed: int, prefix: str, simplified: bool) -> list[QARow]:
    from hf_ft.extra.script import convert_texts

    rng = random.Random(seed)
    raw = [synthetic_row(rng) for _ in range(n)]
    texts = [t for r in raw for t in (r["question"], *(r[c] for c in LETTERS))]
    if simplified:
        texts = convert_texts(texts, "t2s")
    rows = []
    for i, r in enumerate(raw):
        q, *options = texts[5 * i:5 * i + 5]
        rows.append(QARow(f"{prefix}{i}", "s", q, tuple(options), r["answer"], f"{prefix}.csv", i + 2))
    return rows


def contamination_check(quick: bool) -> dict:
    from hf_ft.extra.contamination import find_copies
    from hf_ft.extra.script import convert_texts

    n_ref, n_extra, planted = (2_000, 5_000, 20) if quick else (REFERENCE_ROWS, EXTRA_ROWS, PLANTED)
    reference = _rows(n_ref, 0, "tmmlu", simplified=False)
    extra = _rows(n_extra, 1, "extra", simplified=True)
    rng = random.Random(2)
    # long enough for 13-grams (the synthetic rows have short questions too; those only an exact copy catches)
    candidates = [r for r in reference if len(r.question) > 40]
    targets = rng.sample(candidates, 2 * planted)
    for k, ref in enumerate(targets):
        q, *options = convert_texts([ref.question, *ref.options], "t2s")
        if k < planted:  # exact: Simplified, options reversed, letter prefixes
            options = [f"({letter}){o}" for letter, o in zip(LETTERS, reversed(options))]
            answer = LETTERS[3 - ref.label]
        else:  # reworded: a prefix, other punctuation, one character changed at the end
            q = "下列问题：" + q.replace("，", " ").rstrip("？")[:-1] + "呢"
            answer = ref.answer
        extra[k * (n_extra // (2 * planted))] = QARow(f"planted{k}", "s", q, tuple(options), answer, "extra.csv", k)
    start = time.perf_counter()
    found = find_copies(extra, reference)
    seconds = time.perf_counter() - start
    planted_ids = {f"planted{k}" for k in range(2 * planted)}
    hits = {extra[i].id: m.kind for i, m in found.items()}
    return {"reference_rows": n_ref, "extra_rows": n_extra, "planted_exact": planted, "planted_near": planted,
            "seconds": round(seconds, 2), "rows_per_s": round(n_extra / seconds),
            "found_exact": sum(1 for i, k in hits.items() if i in planted_ids and k == "exact"),
            "found_near": sum(1 for i, k in hits.items() if i in planted_ids and k == "near"),
            "false_positives": sum(1 for i in hits if i not in planted_ids), "target_s": 30}


def conversion(quick: bool) -> dict:
    from hf_ft.extra.script import convert_rows, converter

    rows = _rows(5_000 if quick else EXTRA_ROWS, 3, "c", simplified=True)
    passage_rng = random.Random(4)
    rows = [QARow(r.id, r.subject, r.question, r.options, r.answer,
                  context=_rows(1, passage_rng.randrange(10**6), "p", True)[0].question) if i % 4 == 0 else r
            for i, r in enumerate(rows)]
    chars = sum(len(r.question) + sum(map(len, r.options)) + len(r.context or "") for r in rows)
    start = time.perf_counter()
    convert_rows(rows, "s2twp")
    chunked = time.perf_counter() - start
    cc = converter("s2twp")
    start = time.perf_counter()
    for r in rows:
        cc.convert(r.question)
        for o in r.options:
            cc.convert(o)
        if r.context:
            cc.convert(r.context)
    one_by_one = time.perf_counter() - start
    return {"rows": len(rows), "characters": chars, "seconds": round(chunked, 2),
            "chars_per_s": round(chars / chunked), "rows_per_s": round(len(rows) / chunked),
            "one_call_per_text_s": round(one_by_one, 2), "speedup": round(one_by_one / chunked, 2)}


ROWS_PER_SUBJECT = 60


def must_help(work: Path, quick: bool) -> dict:
    """The demo task starved (60 questions per subject: ~33 train, 16 test), alone and with extra questions
    of other wordings that teach the same category facts: 4 options each, and C3-like 2-4 options."""
    from hf_ft.config.arguments import parse_args
    from hf_ft.demo import make_demo_data, make_extra_questions, make_tiny_model
    from hf_ft.extra.script import convert_texts
    from hf_ft.training.run import train

    n_extra = 400 if quick else 2000
    data = make_demo_data(work / "data", rows_per_subject=ROWS_PER_SUBJECT, seed=0)
    sources = {"extra_4_options": make_extra_questions(work / "source4" / "practice.jsonl", n=n_extra, seed=7,
                                                       min_options=4),
               "extra_2_to_4_options": make_extra_questions(work / "source2" / "practice.jsonl", n=n_extra, seed=7)}
    # the encoder's vocabulary covers both sets' characters after conversion, as a pretrained one would
    converted = work / "converted_source.txt"
    converted.write_text(convert_texts([p.read_text(encoding="utf-8") for p in sources.values()], "s2twp")[0],
                         encoding="utf-8")
    model = make_tiny_model(work / "model", [data, converted], seed=0)
    common = ["--model_name_or_path", str(model), "--data_dir", str(data), "--max_seq_length", "128",
              "--per_device_train_batch_size", "16", "--learning_rate", "2e-3", "--num_train_epochs",
              "2" if quick else "6", "--use_cpu", "--seed", "0", "--disable_tqdm", "true",
              "--save_strategy", "no", "--eval_strategy", "epoch", "--load_best_model_at_end", "false",
              "--validation_fraction", "0.2"]
    runs = {}
    arms = [("only", [])] + [(label, ["--extra_data", f"{path}?name=practice"]) for label, path in sources.items()]
    for label, more in arms:
        start = time.perf_counter()
        metrics = train(parse_args([*common, "--output_dir", str(work / label), *more]))
        runs[label] = {"test_accuracy": round(metrics["test_accuracy"], 4), "train_samples": metrics["train_samples"],
                       "seconds": round(time.perf_counter() - start, 1)}
        if more:
            source = json.loads((work / label / "data_manifest.json").read_text())["extra_data"]["sources"][0]
            runs[label].update(extra_counts=source["counts"], conversion=source["conversion"],
                               options=source["options"])
    comparison = work / "comparison"
    result = subprocess.run([sys.executable, "-m", "hf_ft.evaluate", "--original", str(model), "--finetuned",
                             str(work / "only"), "--models", *(f"{label}={work / label}" for label in sources),
                             "--reference", "finetuned", "--output_dir", str(comparison), "--use_cpu"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    report = json.loads((comparison / "comparison.json").read_text())
    board = report["leaderboard"]
    return {"rows_per_subject": ROWS_PER_SUBJECT, "extra_questions": n_extra, "test_items": report["items"],
            "runs": runs, "leaderboard": {m["label"]: round(m["accuracy"], 4) for m in board["models"]},
            "vs_only": {t["model"]: {"difference": round(t["difference"], 4),
                                     "ci95": [round(x, 4) for x in t["difference_ci95"]],
                                     "mcnemar_p": t["mcnemar"]["p_value"], "holm_p": t["p_holm"]}
                        for t in board["pairwise"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="bench_extra_data.json")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parse_benchmark_args(parser)
    report = {"machine": machine(), "quick": args.quick}
    report["contamination_check"] = contamination_check(args.quick)
    print("contamination check:", report["contamination_check"], flush=True)
    report["conversion"] = conversion(args.quick)
    print("conversion:", report["conversion"], flush=True)
    with tempfile.TemporaryDirectory() as work:
        report["must_help"] = must_help(Path(work), args.quick)
    print("must help:", report["must_help"], flush=True)
    write_report(args.output, report)


if __name__ == "__main__":
    main()

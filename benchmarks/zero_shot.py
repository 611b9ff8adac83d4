"""The zero-shot scorer at bert-base size: time and FLOPs per item before and after, scores unchanged.

    python -m benchmarks.zero_shot --output bench_zero_shot.json [--items 6] [--quick]

`before` is the scorer as it was: one sequence per option token, batches of 128 sequences, and the
masked-LM head (a 768×21,128 projection) over every position of every sequence. `after` is
hf_ft.evaluation.scoring's mlm-pll: the same sequences in token-budget batches, the head only at the masked
position. Both run here on the same random-init bert-base-chinese-shaped model and the same items with
TMMLU+'s lengths (questions ~50 tokens, options ~12); their scores must agree to float rounding.
`mlm-masked` (all option tokens masked at once, one pass per option) and the trained-head scorer are
timed beside them, and mlm-masked's agreement with mlm-pll is measured on the demo task with a
pretrained demo model (on a random model, agreement would mean nothing).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from benchmarks.common import machine, parse_benchmark_args, write_report
from hf_ft.data.rows import LETTERS, QARow
from hf_ft.evaluation.scoring import LoadedScorer, mlm_queries, score_masked_lm, token_budget_batches
from tests.hub_fixtures import BERT_BASE_CHINESE, SMALL, _row, chinese_vocab


def build(work: Path, size: dict) -> tuple[Path, BertTokenizer]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "vocab.txt").write_text("\n".join(chinese_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(work / "vocab.txt"), model_max_length=512)
    tokenizer.save_pretrained(work)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=21128, **size)).save_pretrained(work)
    return work, tokenizer


def items(n: int, seed: int = 0) -> list[QARow]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        row = _row(rng, False)
        out.append(QARow(f"q{i}", "physics", row["question"], tuple(row[x] for x in LETTERS), row["answer"]))
    return out


def before(scorer: LoadedScorer, rows: list[QARow], batch_size: int = 32) -> tuple[np.ndarray, int]:
    """The scorer as it was before this change (kept here as the baseline): full head, fixed batches."""
    tokenizer, model = scorer.tokenizer, scorer.model
    queries = mlm_queries(tokenizer, rows, scorer.max_length, all_at_once=False)
    order = sorted(range(len(queries)), key=lambda k: len(queries[k][2]))
    totals, counts = np.zeros((len(rows), 4)), np.zeros((len(rows), 4))
    padded = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size * 4):
            chunk = [queries[k] for k in order[start:start + batch_size * 4]]
            width = max(len(q[2]) for q in chunk)
            padded += width * len(chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for k, q in enumerate(chunk):
                ids[k, : len(q[2])] = torch.tensor(q[2])
                mask[k, : len(q[2])] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            rows_idx = torch.arange(len(chunk))
            positions = torch.tensor([q[3][0] for q in chunk])
            values = torch.log_softmax(logits[rows_idx, positions].float(), -1)[rows_idx, torch.tensor(
                [q[4][0] for q in chunk])]
            for q, v in zip(chunk, values.tolist()):
                totals[q[0], q[1]] += v
                counts[q[0], q[1]] += 1
    return totals / counts, padded


def flops(config, padded_tokens: int, head_positions: int) -> float:
    """Forward FLOPs: 2 × (encoder weights) per padded token + 2 × (head weights) per position the head sees
    (attention's sequence-squared term left out: it is under 10% at these lengths)."""
    d, layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    encoder = layers * (4 * d * d + 2 * d * inter)
    head = d * d + d * vocab
    return 2.0 * encoder * padded_tokens + 2.0 * head * head_positions


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def speed(work: Path, n_items: int, quick: bool) -> dict:
    size = SMALL if quick else BERT_BASE_CHINESE
    path, tokenizer = build(work / "model", size)
    model = BertForMaskedLM.from_pretrained(path, use_kernels=False).eval()
    rows = items(n_items)
    pll = LoadedScorer(str(path), model, tokenizer, "mlm", "mlm-pll", 512)
    masked = LoadedScorer(str(path), model, tokenizer, "mlm", "mlm-masked", 512)
    (old_scores, old_padded), old_s = timed(lambda: before(pll, rows))
    new_scores, new_s = timed(lambda: score_masked_lm(pll, rows, 32, False))
    masked_scores, masked_s = timed(lambda: score_masked_lm(masked, rows, 32, False))
    queries = mlm_queries(tokenizer, rows, 512, all_at_once=False)
    lengths = [len(q[2]) for q in queries]
    new_padded = sum(max(lengths[k] for k in b) * len(b) for b in token_budget_batches(lengths, 16384, 512))
    masked_queries = mlm_queries(tokenizer, rows, 512, all_at_once=True)
    masked_lengths = [len(q[2]) for q in masked_queries]
    masked_padded = sum(max(masked_lengths[k] for k in b) * len(b)
                        for b in token_budget_batches(masked_lengths, 16384, 512))
    config = model.config
    return {
        "model": "bert-base-chinese shape, random init" if not quick else "small (quick)",
        "items": n_items, "forward_passes_per_item": len(queries) / n_items,
        "option_tokens_per_item": len(queries) / n_items,
        "before": {"seconds_per_item": old_s / n_items,
                   "gflops_per_item": flops(config, old_padded, old_padded) / n_items / 1e9},
        "after": {"seconds_per_item": new_s / n_items,
                  "gflops_per_item": flops(config, new_padded, len(queries)) / n_items / 1e9},
        "mlm_masked": {"seconds_per_item": masked_s / n_items,
                       "gflops_per_item": flops(config, masked_padded, len(queries)) / n_items / 1e9},
        "max_abs_score_difference_before_after": float(np.max(np.abs(old_scores - new_scores))),
        "same_predictions_before_after": bool((old_scores.argmax(1) == new_scores.argmax(1)).all()),
        "speedup": old_s / new_s,
        "mlm_masked_speedup_over_after": new_s / masked_s,
        "masked_vs_pll_same_prediction_random_model": float(np.mean(masked_scores.argmax(1) == new_scores.argmax(1))),
    }


def agreement(work: Path, quick: bool) -> dict:
    """mlm-masked against mlm-pll where a zero-shot scorer has something to find: the demo task, on a demo
    model pretrained by masked LM on fact sentences."""
    from hf_ft.data.files import load_items
    from hf_ft.demo import make_demo_data, make_tiny_model, pretrain_tiny_model
    from hf_ft.evaluation.scoring import load_scorer

    data = make_demo_data(work / "demo", rows_per_subject=60 if quick else 160, seed=0)
    model = make_tiny_model(work / "demo_model", [data], hidden_size=128, num_layers=4, num_heads=4,
                            intermediate_size=256)
    pretrain_tiny_model(model, sentences=500 if quick else 8000, epochs=1 if quick else 10)
    rows = [r for p in sorted((work / "demo").glob("*_test.csv")) for r in load_items(p)]
    golds = np.array([r.label for r in rows])
    scores = {name: load_scorer(str(model), scorer=name, use_cpu=True).score(rows, progress=False)
              for name in ("mlm-pll", "mlm-masked")}
    return {"items": len(rows),
            "accuracy": {name: float(np.mean(s.argmax(1) == golds)) for name, s in scores.items()},
            "same_prediction": float(np.mean(scores["mlm-pll"].argmax(1) == scores["mlm-masked"].argmax(1)))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--quick", action="store_true")
    args = parse_benchmark_args(parser, argv)
    work = Path(tempfile.mkdtemp(prefix="hf_ft_bench_zero_shot_"))
    try:
        report = {"machine": machine(), "quick": args.quick, "speed": speed(work, args.items, args.quick),
                  "agreement_on_demo_task": agreement(work, args.quick)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(args.output, report)
    s, a = report["speed"], report["agreement_on_demo_task"]
    print(f"zero-shot scoring, {s['model']}, {s['items']} items, {s['forward_passes_per_item']:.0f} passes/item:")
    for name in ("before", "after", "mlm_masked"):
        print(f"  {name:<11} {s[name]['seconds_per_item']:8.2f} s/item  {s[name]['gflops_per_item']:9.1f} GFLOP/item")
    print(f"  after is {s['speedup']:.2f}x faster; max |score difference| {s['max_abs_score_difference_before_after']:.2e}")
    print(f"  demo task ({a['items']} items): accuracy {a['accuracy']}, mlm-masked agrees with mlm-pll on "
          f"{a['same_prediction']:.1%}")
    return report


if __name__ == "__main__":
    main()

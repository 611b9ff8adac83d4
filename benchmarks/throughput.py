"""Training and evaluation throughput: hf_ft against the HF multiple-choice example (run_swag.py).

    python -m benchmarks.throughput --output bench_throughput.json [--quick] [--model mid|bert-base] [--device cuda --bf16]

Every arm trains the same randomly initialised model (same weights, same seed) on the same synthetic rows
with TMMLU+'s length profile, in this one process, and is reported as a ratio to `baseline`: what
transformers' examples/pytorch/multiple-choice/run_swag.py does with the Trainer (per-choice encoding,
`DataCollatorForMultipleChoice` dynamic padding, random sampling, evaluation in file order). The hf_ft
arms are built by `hf_ft.training.trainer.build_trainer` with hf_ft's task defaults, exactly as `run_qa.py` does.
On a GPU the matmul peak is measured on the GPU in the training dtype, steps are timed after a device
sync, and peak GPU memory is reported beside peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    DataCollatorForMultipleChoice,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from benchmarks.common import (
    MODEL_SIZES,
    PeakRSS,
    build_model,
    machine,
    matmul_gflops,
    parse_benchmark_args,
    sync,
    write_layout,
    write_report,
)
from hf_ft.config.arguments import DataArguments, QATrainingArguments
from hf_ft.data.sources import load_data_dir
from hf_ft.data.splits import make_splits
from hf_ft.inputs.formulations import encode
from hf_ft.training.trainer import ShuffledLengthGroupedSampler, build_trainer


class StepTimer(TrainerCallback):
    """Wall time of the whole timed epoch: from the start of training (optimizer and loader built) to the end
    of the last step. The model has taken one untimed warm-up step before (`warm_up`)."""

    def __init__(self, device: str):
        self.device = device
        self.start = self.end = None
        self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        sync(self.device)
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.end = time.perf_counter()
        self.steps = state.global_step


def warm_up(trainer) -> None:
    """One untimed forward and backward pass on the longest training batch, so the timed epoch starts with
    warm kernels and an allocator that has seen the largest shapes; the gradients are thrown away."""
    model = trainer.model
    batch = max(trainer.get_train_dataloader(), key=lambda b: b["input_ids"].numel())
    batch = {k: v.to(model.device) for k, v in batch.items()}
    model.train()
    model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)


def row_lengths(dataset, formulation: str) -> list[int]:
    """Each row's padded length in a batch of its own: the longest choice sequence (per-choice) or the one
    joint sequence."""
    if "length" in dataset.column_names:
        return list(dataset["length"])
    return [max(len(ids) for ids in choices) for choices in dataset["input_ids"]]


def sampled_epoch(lengths: list[int], order: list[int], batch: int, steps: int) -> list[int]:
    """The rows of `steps` batches that stand for the whole epoch `order` (the arm's own sampler order, cut into
    batches as its loader would): the epoch's batches sorted by padded length and taken at evenly spaced
    quantiles, kept in epoch order. Their mean step time estimates the whole epoch's.

    Timing the first few steps instead does not: which batches come first is fixed by the sampler's seed, and
    at seed 0 hf_ft's first 16 length-grouped batches held several near-512-token ones, which read as a 3×
    slowdown (seed 4 read 3× faster) that was not in the code (docs/benchmarks.md, "The 3× that was not")."""
    batches = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
    if len(batches) < steps:
        raise SystemExit(f"bench: {steps} timed steps need {steps * batch} training rows, the data has {len(order)}")
    by_cost = sorted(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    chosen = sorted(by_cost[int((k + 0.5) * len(batches) / steps)] for k in range(steps))
    return [i for b in chosen for i in batches[b]]


def epoch_order(lengths: list[int], batch: int, strategy: str, seed: int = 0) -> list[int]:
    """One epoch of the arm's training sampler: hf_ft's length-grouped one, or random (run_swag.py)."""
    if strategy == "group_by_length":
        return list(ShuffledLengthGroupedSampler(lengths, batch, seed=seed))
    return torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()


def run_swag_encode(rows, tokenizer, max_length: int, pad_to_max: bool):
    """Preprocessing exactly as run_swag.py: four (context, ending) pairs, truncation=True."""
    from hf_ft.inputs.preprocessing import rows_to_dataset

    def preprocess(batch):
        firsts = [q for q in batch["question"] for _ in range(4)]
        seconds = [o for options in batch["options"] for o in options]
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length,
                        padding="max_length" if pad_to_max else False)
        out = {k: [v[i:i + 4] for i in range(0, len(v), 4)] for k, v in enc.items()}
        out["label"] = batch["label"]
        return out

    return rows_to_dataset(rows).map(preprocess, batched=True, remove_columns=["id", "subject", "question",
                                                                               "options"])


def real_tokens(dataset, formulation: str) -> float:
    """Mean non-padding tokens per example."""
    if formulation == "joint":
        return float(np.mean(dataset["length"]))
    if "attention_mask" in dataset.column_names:  # run_swag's preprocessing (padded in the fixed arm)
        return float(np.mean([sum(sum(mask) for mask in choices) for choices in dataset["attention_mask"]]))
    return float(np.mean([sum(len(ids) for ids in choices) for choices in dataset["input_ids"]]))  # unpadded


def padding_fraction(trainer, n_batches: int) -> float:
    """Share of the tokens in the first training batches that are padding."""
    padded = real = 0
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if i == n_batches:
            break
        padded += batch["attention_mask"].numel()
        real += int(batch["attention_mask"].sum())
    return 1 - real / max(1, padded)


def training_args(out: Path, steps: int, batch: int, device: str, bf16: bool, arguments_class=QATrainingArguments,
                  **overrides) -> TrainingArguments:
    """The arm's arguments: hf_ft's QATrainingArguments (its task defaults) for hf_ft arms, transformers' own
    TrainingArguments for the baseline, with the benchmark's fixed schedule on top."""
    settings = dict(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, per_device_eval_batch_size=32,
        learning_rate=1e-4, use_cpu=device == "cpu", bf16=bf16, report_to="none", save_strategy="no",
        eval_strategy="no", logging_strategy="no", load_best_model_at_end=False, seed=0, dataloader_drop_last=True,
        disable_tqdm=True, average_tokens_across_devices=False)
    return arguments_class(**{**settings, **overrides})


def run_arm(arm: dict, model_dir: Path, tokenizer, splits, max_length: int, steps: int, batch: int,
            work: Path, peak_gflops: float, device: str = "cpu", bf16: bool = False, evaluate: bool = True,
            callbacks: tuple = ()) -> dict:
    set_seed(0)
    formulation = arm["formulation"]
    eval_rotations = arm.get("joint_eval_rotations", 1)
    model_cls = AutoModelForSequenceClassification if formulation == "joint" else AutoModelForMultipleChoice
    kwargs = {"num_labels": 4} if formulation == "joint" else {}
    transformers.logging.set_verbosity_error()
    model = model_cls.from_pretrained(model_dir, attn_implementation=arm.get("attention", "sdpa"), use_kernels=False,
                                      **kwargs)
    transformers.logging.set_verbosity_warning()
    if arm["kind"] == "run_swag":
        train_set = run_swag_encode(splits.train, tokenizer, max_length, arm["pad_to_max"])
        eval_set = run_swag_encode(splits.validation, tokenizer, max_length, arm["pad_to_max"])
        strategy = "random"
        args = training_args(work / arm["name"], steps, batch, device, bf16, TrainingArguments,
                             train_sampling_strategy="sequential")
        trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                          processing_class=tokenizer, data_collator=DataCollatorForMultipleChoice(tokenizer))
    else:
        train_set = encode(splits.train, tokenizer, formulation, max_length, cache_dir=work / "cache", progress=False)
        eval_set = encode(splits.validation, tokenizer, formulation, max_length, cache_dir=work / "cache",
                          sort_by_length=True, progress=False)
        strategy = arm.get("training_args", {}).get("train_sampling_strategy",
                                                    QATrainingArguments.train_sampling_strategy)
        args = training_args(work / arm["name"], steps, batch, device, bf16,
                             **{**arm.get("training_args", {}), "train_sampling_strategy": "sequential"})
        trainer = build_trainer(model, tokenizer, args, formulation, train_set, eval_set,
                                joint_rotations=arm.get("joint_rotations", 1), joint_eval_rotations=eval_rotations)
        trainer.compute_metrics = None  # throughput only
    # The timed epoch: the batches that stand for the arm's own epoch, fed in that order.
    lengths = row_lengths(train_set, formulation)
    train_set = train_set.select(sampled_epoch(lengths, epoch_order(lengths, batch, strategy), batch, steps))
    trainer.train_dataset = train_set
    timer = StepTimer(device)
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    for callback in callbacks:  # a thread policy (benchmarks.contention)
        trainer.add_callback(callback)
    n_params = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    tokens_per_example = real_tokens(train_set, formulation) * arm.get("joint_rotations", 1)
    padding = padding_fraction(trainer, n_batches=steps)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        warm_up(trainer)
        trainer.train()
        if timer.steps != steps:
            raise RuntimeError(f"bench: arm {arm['name']} ran {timer.steps} steps, expected one epoch of {steps}")
        train_sps = timer.steps * batch / (timer.end - timer.start)
        start = time.perf_counter()
        if evaluate:
            trainer.evaluate(eval_set)
        eval_sps = len(eval_set) / (time.perf_counter() - start) if evaluate else float("nan")
    eval_tokens = real_tokens(eval_set, formulation) * eval_rotations
    return {
        "name": arm["name"],
        "description": arm["description"],
        "train_samples_per_s": round(train_sps, 3),
        "eval_samples_per_s": round(eval_sps, 3),
        "train_real_tokens_per_s": round(train_sps * tokens_per_example, 1),
        "eval_real_tokens_per_s": round(eval_sps * eval_tokens, 1),
        "padding_fraction": round(padding, 3),
        "mfu": round(6 * n_params * train_sps * tokens_per_example / (peak_gflops * 1e9), 4),
        "eval_mfu": round(2 * n_params * eval_sps * eval_tokens / (peak_gflops * 1e9), 4),
        "peak_rss_mb": round(rss.peak / 2 ** 20, 1),
        **({"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)} if device == "cuda" else {}),
        "steps_timed": timer.steps,
    }


ARMS = [
    {"name": "baseline", "kind": "run_swag", "formulation": "per_choice", "pad_to_max": False,
     "description": "run_swag.py: per-choice, dynamic padding, random sampling, eval in file order"},
    {"name": "seed_fixed_padding", "kind": "run_swag", "formulation": "per_choice", "pad_to_max": True,
     "description": "the seed notebook: every sequence padded to max_seq_length"},
    {"name": "hf_ft_per_choice", "kind": "hf_ft", "formulation": "per_choice",
     "description": "hf_ft default: length-grouped batches (length column), length-sorted eval, SDPA"},
    {"name": "hf_ft_per_choice_eager_attention", "kind": "hf_ft", "formulation": "per_choice", "attention": "eager",
     "description": "as hf_ft default with eager attention instead of SDPA (kept only as evidence for SDPA)"},
    {"name": "hf_ft_per_choice_2_dataloader_workers", "kind": "hf_ft", "formulation": "per_choice",
     "training_args": {"dataloader_num_workers": 2},
     "description": "as hf_ft default with 2 dataloader worker processes collating batches"},
    {"name": "hf_ft_per_choice_torch_compile", "kind": "hf_ft", "formulation": "per_choice", "full_only": True,
     "training_args": {"torch_compile": True},
     "description": "as hf_ft default under torch.compile (inductor); compilation after step 1 is timed"},
    {"name": "hf_ft_joint", "kind": "hf_ft", "formulation": "joint", "joint_rotations": DataArguments.joint_rotations,
     "joint_eval_rotations": DataArguments.joint_eval_rotations,
     "description": "--formulation joint with its default --joint_rotations and --joint_eval_rotations (each "
                    "question in rotated option orders, in training and in evaluation)"},
    {"name": "hf_ft_joint_one_order", "kind": "hf_ft", "formulation": "joint", "joint_rotations": 1,
     "joint_eval_rotations": 1,
     "description": "--formulation joint --joint_rotations 1 --joint_eval_rotations 1: each question once, "
                    "in one order (random in training)"},
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs, measures nothing")
    parser.add_argument("--model", choices=sorted(MODEL_SIZES), default="mid")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per arm")
    parser.add_argument("--work_dir", default=None)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the arms train (auto: the GPU when there is one)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU); the matmul peak is then bf16")
    parser.add_argument("--skip_eval", action="store_true", help="time training only (eval/s is then nan)")
    parser.add_argument("--arms", default=None,
                        help="comma-separated arm names to run (baseline always runs); default: all")
    args = parse_benchmark_args(parser, argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda, but torch sees no CUDA device")
    chosen = set(args.arms.split(",")) | {"baseline"} if args.arms else None
    unknown = (chosen or set()) - {a["name"] for a in ARMS}
    if unknown:
        raise SystemExit(f"bench: unknown arm(s) {', '.join(sorted(unknown))}")
    quick = args.quick
    steps = args.steps or (3 if quick else 16)
    batch = 8
    max_length = 256 if quick else 512
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="hf_ft_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        dtype = torch.bfloat16 if args.bf16 else torch.float32
        peak = matmul_gflops(device, dtype)
        where = torch.cuda.get_device_name(0) if device == "cuda" else f"{torch.get_num_threads()} threads"
        print(f"matmul peak: {peak:.1f} GFLOP/s ({str(dtype).removeprefix('torch.')}, {where})")
        model_dir, tokenizer = build_model(work / "model", args.model)
        data = write_layout(work / "data", 700 if quick else 3000, seed=0)
        splits = make_splits(load_data_dir(str(data)), "resplit", 0, 0.1, (0.85, 0.15, 0.0), needs_test=False)
        splits.validation = splits.validation[: 64 if quick else 256]
        arms = []
        for arm in ARMS:
            if (chosen and arm["name"] not in chosen) or (quick and arm.get("full_only") and not chosen):
                continue
            result = run_arm(arm, model_dir, tokenizer, splits, max_length, steps, batch, work, peak, device,
                             args.bf16, evaluate=not args.skip_eval)
            arms.append(result)
            print(f"  {result['name']:<40} train {result['train_samples_per_s']:7.2f}/s  "
                  f"eval {result['eval_samples_per_s']:7.2f}/s  padding {result['padding_fraction']:.0%}", flush=True)
        base = next(a for a in arms if a["name"] == "baseline")
        for a in arms:
            a["train_ratio"] = round(a["train_samples_per_s"] / base["train_samples_per_s"], 3)
            a["eval_ratio"] = round(a["eval_samples_per_s"] / base["eval_samples_per_s"], 3)
        report = {"machine": machine(), "device": device, "precision": "bf16" if args.bf16 else "fp32",
                  "quick": quick, "model": args.model, "steps_per_arm": steps, "batch_size": batch,
                  "train_rows": len(splits.train), "eval_rows": len(splits.validation), "max_seq_length": max_length,
                  "train_rows_note": "one epoch of the timed rows: a seeded sample, the same for every arm",
                  "matmul_gflops": round(peak, 2), "arms": arms}
        write_report(args.output, report)
        print_table(report)
        return report
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def print_table(report: dict) -> None:
    print(f"\nhf_ft benchmark — {report['model']} model on {report['device']}, {report['precision']}, batch {report['batch_size']}, "
          f"{report['steps_per_arm']} timed steps/arm, {report['train_rows']} train rows, matmul peak "
          f"{report['matmul_gflops']} GFLOP/s{' (QUICK: numbers are not measurements)' if report['quick'] else ''}")
    gpu = all("peak_gpu_mb" in a for a in report["arms"])
    header = (f"{'arm':<40}{'train/s':>9}{'×base':>7}{'eval/s':>9}{'×base':>7}{'tok/s':>9}{'MFU':>7}{'pad':>6}"
              f"{'RSS MB':>8}" + (f"{'GPU MB':>8}" if gpu else ""))
    print(header)
    print("-" * len(header))
    for a in report["arms"]:
        print(f"{a['name']:<40}{a['train_samples_per_s']:>9.2f}{a['train_ratio']:>7.2f}{a['eval_samples_per_s']:>9.2f}"
              f"{a['eval_ratio']:>7.2f}{a['train_real_tokens_per_s']:>9.0f}{a['mfu']:>7.1%}{a['padding_fraction']:>6.0%}"
              f"{a['peak_rss_mb']:>8.0f}" + (f"{a['peak_gpu_mb']:>8.0f}" if gpu else ""))


if __name__ == "__main__":
    main()

"""hf_ft vs the HF multiple-choice example: training/evaluation throughput, MFU, memory, preprocessing.

    python benchmarks/bench.py --output bench.json [--quick] [--model mid|bert-base] [--device cuda --bf16]

Every arm trains the same randomly initialised model (same weights, same seed) on the same synthetic
rows with TMMLU+'s length profile, in this one process, and is reported as a ratio to `baseline`:
what transformers' examples/pytorch/multiple-choice/run_swag.py does with the Trainer (per-choice
encoding, `DataCollatorForMultipleChoice` dynamic padding, random sampling, evaluation in file order).
On a GPU (`--device cuda`, the default where one exists) the matmul peak is measured on the GPU in the
training dtype, steps are timed after a device sync, and peak GPU memory is reported beside peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertTokenizer,
    DataCollatorForMultipleChoice,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from hf_ft.arguments import TASK_DEFAULTS, DataArguments  # noqa: E402
from hf_ft.data import LETTERS, load_data_dir, load_items, make_splits  # noqa: E402
from hf_ft.preprocessing import encode, make_collator  # noqa: E402
from hf_ft.scoring import load_scorer  # noqa: E402
from hf_ft.trainer import QATrainer  # noqa: E402

# Common Traditional-Chinese characters for synthetic text.
CHARS = ("的一是不了人我在有他這中大來上國個到說們為子和你地出道也時年得就那要下以生會自著去之過家學對可她裡後小麼心多"
         "天而能好都然沒日於起還發成事只作當想看文無開手十用主行方又如前所本見經頭面公同三已老從動兩長知民樣現分將外"
         "但身些與高意進把法此實回二理美點月明其種聲全工己話兒者向情部正名定女問力機給等幾很業最間新什打便位因重被走"
         "電四第門相次東政海口使教西再平真聽世氣信北少關並內加化由卻代軍產入先山五太水萬市眼體別處總才場師書比住員九"
         "笑性通目華報立馬命張活難神數件安表原車白應路期叫死常提感金何更反合放做系計或司利受光王果親界及今京務制解各"
         "任至清物台象記邊共風戰干接它許八特覺望直服毛林題建南度統色字請交愛讓認算論百吃義科怎元社術結六功指思非流每"
         "青管夫連遠資隊跟帶花快條院變聯言權往展該領傳近留紅治決周保達辦運武半候七必城父強步完革深區即求品士轉量空甚")
MODEL_SIZES = {
    "mid": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


# ----------------------------------------------------------------------------------------------
# Synthetic data with TMMLU+'s length profile


def question_length(rng: random.Random) -> int:
    """Mostly tens of characters, a long tail, and some passages close to 512 tokens."""
    r = rng.random()
    if r < 0.55:
        return rng.randint(15, 60)
    if r < 0.85:
        return rng.randint(60, 180)
    if r < 0.95:
        return rng.randint(180, 350)
    return rng.randint(350, 500)


def synthetic_row(rng: random.Random) -> dict:
    text = lambda n: "".join(rng.choice(CHARS) for _ in range(n))  # noqa: E731
    return {"question": text(question_length(rng)) + "？",
            **{letter: text(rng.randint(1, 12)) for letter in LETTERS}, "answer": rng.choice(LETTERS)}


def write_layout(out: Path, total_rows: int, seed: int) -> Path:
    """A TMMLU+-layout folder: every official subject, sized like the real one, `total_rows` in all."""
    table = list(csv.DictReader((ROOT / "hf_ft" / "resources" / "tmmluplus_subjects.tsv").open(encoding="utf-8"),
                                delimiter="\t"))
    table = [r for r in table if r["in_official_66"] == "yes"]
    weights = np.array([int(r["test_rows_v1_0"]) for r in table], dtype=float)
    sizes = np.maximum(8, np.round(weights / weights.sum() * total_rows)).astype(int)
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for row, size in zip(table, sizes):
        n_val = max(1, int(round(size * 0.1)))
        split_sizes = {"dev": 5, "val": n_val, "test": max(1, size - 5 - n_val)}
        for split, n in split_sizes.items():
            with open(out / f"{row['subject']}_{split}.csv", "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["question", *LETTERS, "answer"])
                writer.writeheader()
                writer.writerows(synthetic_row(rng) for _ in range(n))
    return out


def build_model(out: Path, size: str) -> tuple[Path, BertTokenizer]:
    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "？", *sorted(set(CHARS))]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(out / "vocab.txt"), model_max_length=512)
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **MODEL_SIZES[size])
    BertForMaskedLM(config).save_pretrained(out)
    return out, tokenizer


# ----------------------------------------------------------------------------------------------
# Measurement helpers


def matmul_gflops(device: str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 10,
                  trials: int = 5) -> float:
    """Achieved matmul throughput on `device` in `dtype`, the best of `trials`: the ceiling MFU is measured
    against. One short trial can land on a slow moment (a single 0.4 s trial read 103 GFLOP/s where the
    best is over 140), which would put MFU above 100%."""
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(trials):
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def cpu_name() -> str:
    """The CPU's model name where Linux tells it (platform.processor() often says only "x86_64")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class PeakRSS:
    """Highest resident set size seen while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        process = psutil.Process()
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class StepTimer(TrainerCallback):
    """Wall time of the training steps after the first (warm-up) step."""

    def __init__(self, device: str):
        self.device = device
        self.start = None
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        if state.global_step == 1:
            self.start = time.perf_counter()
        self.end = time.perf_counter()
        self.steps = state.global_step - 1


def run_swag_encode(rows, tokenizer, max_length: int, pad_to_max: bool):
    """Preprocessing exactly as run_swag.py: four (context, ending) pairs, truncation=True."""
    from hf_ft.preprocessing import rows_to_dataset

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


def training_args(out: Path, steps: int, batch: int, sampling: str, device: str, bf16: bool,
                  **overrides) -> TrainingArguments:
    settings = dict(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, per_device_eval_batch_size=32,
        learning_rate=1e-4, use_cpu=device == "cpu", bf16=bf16, report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="no", train_sampling_strategy=sampling,
        average_tokens_across_devices=False, seed=0, dataloader_drop_last=True, disable_tqdm=True)
    return TrainingArguments(**{**settings, **overrides})


def run_arm(arm: dict, model_dir: Path, tokenizer, splits, max_length: int, steps: int, batch: int,
            work: Path, peak_gflops: float, device: str = "cpu", bf16: bool = False) -> dict:
    set_seed(0)
    formulation = arm["formulation"]
    eval_rotations = arm.get("joint_eval_rotations", 1)
    model_cls = AutoModelForSequenceClassification if formulation == "joint" else AutoModelForMultipleChoice
    kwargs = {"num_labels": 4} if formulation == "joint" else {}
    transformers.logging.set_verbosity_error()
    model = model_cls.from_pretrained(model_dir, attn_implementation=arm.get("attention", "sdpa"), **kwargs)
    transformers.logging.set_verbosity_warning()
    if arm["kind"] == "run_swag":
        train_set = run_swag_encode(splits.train, tokenizer, max_length, arm["pad_to_max"])
        eval_set = run_swag_encode(splits.validation, tokenizer, max_length, arm["pad_to_max"])
        trainer = Trainer(model=model, args=training_args(work / arm["name"], steps, batch, "random", device, bf16),
                          train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer,
                          data_collator=DataCollatorForMultipleChoice(tokenizer))
    else:
        train_set = encode(splits.train, tokenizer, formulation, max_length, cache_dir=work / "cache", progress=False)
        eval_set = encode(splits.validation, tokenizer, formulation, max_length, cache_dir=work / "cache",
                          sort_by_length=True, progress=False)
        sampling = TASK_DEFAULTS["train_sampling_strategy"]  # what users get
        # As in hf_ft.train: the collators need the length and option columns the model's forward does not take.
        trainer = QATrainer(model=model, args=training_args(work / arm["name"], steps, batch, sampling, device, bf16,
                                                            remove_unused_columns=False, **arm.get("training_args", {})),
                            train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer,
                            data_collator=make_collator(formulation, tokenizer, train=True,
                                                        joint_rotations=arm.get("joint_rotations", 1)),
                            eval_data_collator=make_collator(formulation, tokenizer, train=False,
                                                             joint_eval_rotations=eval_rotations))
    timer = StepTimer(device)
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    n_params = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    tokens_per_example = real_tokens(train_set, formulation) * arm.get("joint_rotations", 1)
    padding = padding_fraction(trainer, n_batches=40)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        trainer.train()
        train_sps = timer.steps * batch / (timer.end - timer.start)
        start = time.perf_counter()
        trainer.evaluate()
        eval_sps = len(eval_set) / (time.perf_counter() - start)
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


# ----------------------------------------------------------------------------------------------
# Preprocessing and the demo accuracy comparison


def time_preprocessing(work: Path, tokenizer, rows: int, max_length: int) -> tuple[float, float, int]:
    data = write_layout(work / "prep_data", rows, seed=1)
    cache = work / "prep_cache"

    def once() -> int:
        loaded = load_data_dir(str(data))
        splits = make_splits(loaded, "auto", 0, 0.1, (0.7, 0.25, 0.05))
        for part, sort in ((splits.train, False), (splits.validation, True), (splits.test, True)):
            encode(part, tokenizer, "per_choice", max_length, cache_dir=cache, sort_by_length=sort, progress=False)
        return sum(len(v) for v in loaded.pools.values())

    start = time.perf_counter()
    n = once()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    once()
    cached = time.perf_counter() - start
    return cold, cached, n


def demo_accuracy(work: Path, quick: bool) -> dict:
    """Per-choice vs joint on the learnable demo task, on a demo-vocabulary BERT (4 layers, hidden 128) pretrained
    by masked LM on fact sentences: a stand-in for the pretrained encoder joint is meant for (a random-init
    model does not learn joint at all, and the demo's 2-layer model, pretrained, stops near 80–84%; see
    README). Both fine-tune with dropout off (`--config_overrides`). Per-choice uses the demo's settings;
    joint trains 4 examples × 4 rotations per batch (16 sequences, as per-choice's 16 examples) at lr 5e-4
    for 32 epochs (a 24-epoch run was still rising on validation). Joint's validation and test accuracy merge
    the default evaluation rotations, as users get them; the same model's one-pass test accuracy is reported
    beside it."""
    from hf_ft.arguments import parse_args
    from hf_ft.demo import make_demo_data, make_tiny_model, pretrain_tiny_model
    from hf_ft.train import main as train_main

    data = make_demo_data(work / "demo_data", rows_per_subject=120 if quick else 400, seed=0)
    model = make_tiny_model(work / "demo_model", [data], hidden_size=128, num_layers=4, num_heads=4,
                            intermediate_size=256)
    start = time.perf_counter()
    pretrain_tiny_model(model, sentences=500 if quick else 20000, epochs=1 if quick else 20)
    results = {"pretraining_s": round(time.perf_counter() - start, 1)}
    schedules = {"per_choice": ["--per_device_train_batch_size", "16", "--learning_rate", "1e-3",
                                "--num_train_epochs", "1" if quick else "12"],
                 "joint": ["--per_device_train_batch_size", "4", "--joint_rotations", "4", "--learning_rate", "5e-4",
                           "--num_train_epochs", "1" if quick else "32"]}
    for formulation, schedule in schedules.items():
        out = work / f"demo_{formulation}"
        metrics = train_main(*parse_args([
            "--model_name_or_path", str(model), "--data_dir", str(data), "--output_dir", str(out),
            "--formulation", formulation, "--use_cpu", "--max_seq_length", "128", *schedule,
            "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0",
            "--warmup_steps", "0.1", "--seed", "0", "--disable_tqdm", "true", "--log_level", "warning"]))
        results[formulation] = {"eval_accuracy": metrics["eval_accuracy"], "test_accuracy": metrics["test_accuracy"],
                                "train_runtime_s": metrics["train_runtime"], "settings": " ".join(schedule)}
    # Joint's test accuracy above merges the default rotations; the same model scored in one pass:
    rows = load_items(work / "demo_joint" / "test_qa_data.json")
    one_pass = load_scorer(str(work / "demo_joint"), use_cpu=True, max_length=128, joint_eval_rotations=1)
    hits = one_pass.score(rows, progress=False).argmax(axis=1) == np.array([r.label for r in rows])
    results["joint"]["test_accuracy_one_pass"] = float(hits.mean())
    results["joint"]["eval_rotations"] = DataArguments.joint_eval_rotations
    results["test_accuracy_difference_points"] = round(
        100 * (results["joint"]["test_accuracy"] - results["per_choice"]["test_accuracy"]), 2)
    results["test_accuracy_difference_points_one_pass"] = round(
        100 * (results["joint"]["test_accuracy_one_pass"] - results["per_choice"]["test_accuracy"]), 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs, measures nothing")
    parser.add_argument("--model", choices=sorted(MODEL_SIZES), default="mid")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per arm")
    parser.add_argument("--work_dir", default=None)
    parser.add_argument("--skip_demo", action="store_true", help="leave out the demo accuracy comparison")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the arms train (auto: the GPU when there is one)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU); the matmul peak is then bf16")
    parser.add_argument("--arms", default=None,
                        help="comma-separated arm names to run (baseline always runs); default: all")
    args = parser.parse_args()
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
        splits = make_splits(load_data_dir(str(data)), "resplit", 0, 0.1, (0.85, 0.15, 0.0))
        if quick:
            splits.validation = splits.validation[:64]
        else:
            splits.validation = splits.validation[:256]
        arms = []
        for arm in ARMS:
            if (chosen and arm["name"] not in chosen) or (quick and arm.get("full_only") and not chosen):
                continue
            result = run_arm(arm, model_dir, tokenizer, splits, max_length, steps, batch, work, peak, device,
                             args.bf16)
            arms.append(result)
            print(f"  {result['name']:<40} train {result['train_samples_per_s']:7.2f}/s  "
                  f"eval {result['eval_samples_per_s']:7.2f}/s  padding {result['padding_fraction']:.0%}", flush=True)
        base = next(a for a in arms if a["name"] == "baseline")
        for a in arms:
            a["train_ratio"] = round(a["train_samples_per_s"] / base["train_samples_per_s"], 3)
            a["eval_ratio"] = round(a["eval_samples_per_s"] / base["eval_samples_per_s"], 3)
        cold, cached, n_rows = time_preprocessing(work, tokenizer, 2000 if quick else 22700, max_length)
        report = {
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "device": device, "precision": "bf16" if args.bf16 else "fp32",
            "quick": quick, "model": args.model, "steps_per_arm": steps, "batch_size": batch,
            "train_rows": len(splits.train), "eval_rows": len(splits.validation), "max_seq_length": max_length,
            "matmul_gflops": round(peak, 2),
            "preprocess_rows": n_rows, "preprocess_cold_s": round(cold, 2), "preprocess_cached_s": round(cached, 2),
            "arms": arms,
        }
        if not args.skip_demo:
            report["demo_accuracy"] = demo_accuracy(work, quick)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print_table(report)
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
    print(f"preprocessing {report['preprocess_rows']} rows: cold {report['preprocess_cold_s']} s, "
          f"cached {report['preprocess_cached_s']} s")
    if "demo_accuracy" in report:
        d = report["demo_accuracy"]
        print(f"demo task test accuracy (pretrained demo model): per_choice {d['per_choice']['test_accuracy']:.1%}, "
              f"joint {d['joint']['test_accuracy']:.1%} ({d['test_accuracy_difference_points']:+.2f} points; "
              f"{d['joint']['eval_rotations']} rotations merged), joint in one pass "
              f"{d['joint']['test_accuracy_one_pass']:.1%} ({d['test_accuracy_difference_points_one_pass']:+.2f})")


if __name__ == "__main__":
    main()

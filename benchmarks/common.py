"""What every benchmark shares: synthetic data with TMMLU+'s length profile, a randomly initialised BERT of
a chosen size, the matmul peak MFU is measured against, peak RSS, and the machine's description."""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import threading
from pathlib import Path

import numpy as np
import psutil
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from hf_ft.data.rows import LETTERS
from hf_ft.training.speed import matmul_peak_flops, sync  # noqa: F401 - sync: the benchmarks' one

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Common Traditional-Chinese characters for synthetic text.
CHARS = ("的一是不了人我在有他這中大來上國個到說們為子和你地出道也時年得就那要下以生會自著去之過家學對可她裡後小麼心多"
         "天而能好都然沒日於起還發成事只作當想看文無開手十用主行方又如前所本見經頭面公同三已老從動兩長知民樣現分將外"
         "但身些與高意進把法此實回二理美點月明其種聲全工己話兒者向情部正名定女問力機給等幾很業最間新什打便位因重被走"
         "電四第門相次東政海口使教西再平真聽世氣信北少關並內加化由卻代軍產入先山五太水萬市眼體別處總才場師書比住員九"
         "笑性通目華報立馬命張活難神數件安表原車白應路期叫死常提感金何更反合放做系計或司利受光王果親界及今京務制解各"
         "任至清物台象記邊共風戰干接它許八特覺望直服毛林題建南度統色字請交愛讓認算論百吃義科怎元社術結六功指思非流每"
         "青管夫連遠資隊跟帶花快條院變聯言權往展該領傳近留紅治決周保達辦運武半候七必城父強步完革深區即求品士轉量空甚")
MODEL_SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "mid": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


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
    question = text(question_length(rng)) + "？"
    options = [text(rng.randint(1, 12)) for _ in LETTERS]
    for k in range(len(options)):  # the options of a row differ (without drawing again: the same stream)
        while options[k] in options[:k]:
            options[k] += "甲"
    return {"question": question, **dict(zip(LETTERS, options)), "answer": rng.choice(LETTERS)}


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


BERT_BASE_CHINESE_VOCAB = 21128


def build_model(out: Path, size: str, vocab_size: int | None = None) -> tuple[Path, BertTokenizer]:
    """A randomly initialised BertForMaskedLM of `size` whose vocabulary is the synthetic text's characters,
    padded with unused tokens up to `vocab_size` (bert-base-chinese's 21,128: the embedding and the optimizer
    then hold what they hold for the real model)."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "？", *sorted(set(CHARS))]
    vocab += [f"[unused{i}]" for i in range(max(0, (vocab_size or 0) - len(vocab)))]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(out / "vocab.txt"), model_max_length=512)
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **MODEL_SIZES[size])
    BertForMaskedLM(config).save_pretrained(out)
    return out, tokenizer


def matmul_gflops(device: str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 10,
                  trials: int = 5) -> float:
    """The matmul ceiling in GFLOP/s, measured as training measures it (hf_ft.training.speed), with longer trials:
    one short trial can land on a slow moment (a single 0.4 s trial read 103 GFLOP/s where the best is over
    140), which would put MFU above 100%."""
    return matmul_peak_flops(device, dtype, n=2048 if device == "cpu" else 8192, repeats=repeats, trials=trials) / 1e9


def cpu_name() -> str:
    """The CPU's model name where Linux tells it (platform.processor() often says only "x86_64")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class PeakRSS:
    """Highest resident set size seen while the block runs (sampled every 20 ms), this process's plus its
    children's (the index's worker processes): an upper bound, since forked pages they share count twice."""

    def __enter__(self):
        self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        process = psutil.Process()
        while not self._stop.wait(0.02):
            total = process.memory_info().rss
            for child in process.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # ended between the listing and the reading
                    pass
            self.peak = max(self.peak, total)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def machine() -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


WRITTEN_BY = "hf_ft benchmarks"  # in every report, so a rerun may replace it (hf_ft.core.writers)


def parse_benchmark_args(parser, argv=None):
    """The benchmark's arguments, and its outputs claimed through hf_ft's one guarded writer before any work:
    an --output that is a folder, lies under a file or is a file no benchmark wrote, and a --work_dir that holds
    files no benchmark wrote, are one line each (--overwrite writes over them); so is a numeric flag that is
    not a positive finite number."""
    from hf_ft.core.errors import UserError
    from hf_ft.core.writers import claim_file, claim_folder, json_written_by

    parser.add_argument("--overwrite", action="store_true",
                        help="write over an --output or --work_dir that a benchmark did not write")
    args = parser.parse_args(argv)
    import math

    bad = [f"--{name} {value}: need a positive finite number" for name, value in vars(args).items()
           if isinstance(value, (int, float)) and not isinstance(value, bool) and not (math.isfinite(value)
                                                                                      and value > 0)]
    if bad:  # every count, size, scale and budget of a benchmark: a sweep of nothing is a mistake
        parser.exit(2, f"error: {'; '.join(bad)}\n")
    try:
        if getattr(args, "work_dir", None):
            claim_folder(args.work_dir, WRITTEN_BY, "--work_dir", overwrite=args.overwrite)
        if getattr(args, "output", None):
            claim_file(args.output, WRITTEN_BY, "--output", is_own=json_written_by(WRITTEN_BY),
                       overwrite=args.overwrite)
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    return args


def write_report(path: str | os.PathLike, report: dict) -> None:
    report = {**report, "written_by": WRITTEN_BY}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

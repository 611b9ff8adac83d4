"""Shared fixtures: demo data and a tiny model built locally (no hub), and one trained demo run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (`make test`: two workers on two cores) each worker and every process it starts uses one
# thread: two workers of two threads each would spin at torch's barriers on the same two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]

# Small enough for seconds per run on 2 CPU cores, large enough to learn the demo task.
TRAIN_ARGS = [
    "--max_seq_length", "128", "--per_device_train_batch_size", "16", "--learning_rate", "2e-3",
    "--num_train_epochs", "6", "--use_cpu", "--seed", "0", "--logging_steps", "5",
]


def run_cli(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: int = 600, stdin: str | None = None):
    """Run a command line as a user would; returns CompletedProcess with text output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, input=stdin)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


@pytest.fixture(autouse=True)
def _restore_environment():
    """A test may parse arguments in this process; whatever that sets in os.environ ends with the test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from hf_ft.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "data", rows_per_subject=160, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, demo_data) -> Path:
    from hf_ft.demo import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", [demo_data], seed=0)


def train_in_process(argv: list[str]) -> dict:
    from hf_ft.config.arguments import parse_args
    from hf_ft.training.run import train

    return train(parse_args(argv))


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`hf-ft ...` in this process (no interpreter start-up): exit status, stdout, stderr."""
    from hf_ft.cli import main

    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_data, tiny_model):
    """One fine-tuning run on the demo data; several test modules read its outputs."""
    out = tmp_path_factory.mktemp("run") / "out"
    metrics = train_in_process([
        "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--output_dir", str(out),
        *TRAIN_ARGS,
    ])
    return out, metrics


def run_card_usage(output_dir: Path) -> dict:
    """Run the model card's plain-transformers snippet against the local model; returns its variables."""
    import re

    card = (output_dir / "README.md").read_text(encoding="utf-8")
    code = card.split("With plain transformers:")[1].split("```python")[1].split("```")[0]
    code = re.sub(r'from_pretrained\("[^"]*"\)', f"from_pretrained({str(output_dir)!r})", code)
    namespace: dict = {}
    exec(compile(code, "model card usage", "exec"), namespace)
    return namespace


def override(base: list[str], extra: list[str]) -> list[str]:
    """`base` with the flags of `extra` replacing its own, as a user edits a command line: a strategy turned
    away from `steps` takes its `*_steps` with it (hf_ft refuses an interval that would do nothing)."""
    flags = {a for a in extra if a.startswith("--")}
    for strategy, steps in (("--eval_strategy", "--eval_steps"), ("--save_strategy", "--save_steps")):
        if strategy in extra and extra[extra.index(strategy) + 1] != "steps":
            flags.add(steps)
    out, skip = [], False
    for i, arg in enumerate(base):
        if skip:
            skip = False
            continue
        if arg in flags:
            skip = i + 1 < len(base) and not base[i + 1].startswith("--")
            continue
        out.append(arg)
    return out + list(extra)

"""What a `pip install .` user gets: the wheel alone, with no checkout beside it, trains, predicts and writes
the card. An editable install reads resources from the source tree and hides a file missing from the wheel."""

import json
import shutil
import zipfile

import pytest

from conftest import ROOT, python, run_cli

pytestmark = pytest.mark.slow


def test_wheel_install_trains_predicts_and_writes_the_card(tmp_path, demo_data, tiny_model):
    source = tmp_path / "source"  # a clean copy: a build/ folder left in the checkout would hide a missing file
    shutil.copytree(ROOT / "hf_ft", source / "hf_ft", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    built = run_cli(python("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                           str(source)), cwd=tmp_path, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheels.glob("hf_ft-*.whl"))
    packaged = set(zipfile.ZipFile(wheel).namelist())
    resources = {p.name for p in (ROOT / "hf_ft" / "resources").iterdir() if p.is_file() and p.suffix != ".pyc"}
    assert {f"hf_ft/resources/{name}" for name in resources} <= packaged

    site = tmp_path / "site"
    installed = run_cli(python("-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)),
                        cwd=tmp_path, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}  # ahead of site-packages, where the editable install points at the checkout
    where = run_cli(python("-c", "import hf_ft; print(hf_ft.__file__)"), cwd=elsewhere, env=env)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr

    out = elsewhere / "out"
    trained = run_cli(python("-m", "hf_ft.cli", "train", "--model_name_or_path", str(tiny_model),
                             "--data_dir", str(demo_data), "--subjects", "music,STEM", "--output_dir", str(out),
                             "--max_seq_length", "128", "--max_steps", "3", "--use_cpu", "--eval_strategy", "no",
                             "--save_strategy", "no", "--load_best_model_at_end", "false"),
                      cwd=elsewhere, env=env, timeout=600)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "hf_ft_finished.json").is_file()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---") and "## How to use" in card

    predicted = run_cli(python("-m", "hf_ft.cli", "predict", str(out), "--question", "下列何者正確？",
                               "--choices", "甲", "乙", "丙", "丁", "--json"), cwd=elsewhere, env=env, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout.strip().splitlines()[-1])["prediction"] in "ABCD"

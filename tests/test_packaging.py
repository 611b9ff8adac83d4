"""What a `pip install .` user gets: the wheel alone, in a fresh virtual environment with no checkout beside it,
imports every module of the package, trains, predicts and writes the card.

The environment shares the test's installed dependencies through a path file, which adds their folder to sys.path
without running the path files inside it: the editable install's finder (which would serve any module missing from
the wheel straight from the checkout) never loads. A wheel with a subpackage removed must fail here."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, python, run_cli

pytestmark = pytest.mark.slow

IMPORT_ALL = """
import importlib, json, sys
names = json.loads(sys.argv[1])
venv = sys.argv[2]
problems = []
for name in names:
    try:
        module = importlib.import_module(name)
        if not module.__file__.startswith(venv):
            problems.append(f"{name}: imported from {module.__file__}, not from the environment")
    except Exception as e:
        problems.append(f"{name}: {type(e).__name__}: {e}")
print(json.dumps(problems))
"""


def package_modules() -> list[str]:
    """Every module of the checkout's package, dotted."""
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in (ROOT / "hf_ft").rglob("*.py"))


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"  # a clean copy: a build/ folder left in the checkout would hide a missing file
    shutil.copytree(ROOT / "hf_ft", source / "hf_ft", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    built = run_cli(python("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                           str(source)), cwd=tmp_path, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    return next(wheels.glob("hf_ft-*.whl"))


# The fresh environment's processes get no PYTHONPATH: a checkout on it would be imported instead of the wheel.
CLEAN_ENV = {"PYTHONPATH": ""}


def fresh_environment(path: Path, wheel: Path) -> Path:
    """A new virtual environment holding the wheel, with this environment's packages (not its path files)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    venv_python = path / "bin" / "python"
    purelib = subprocess.run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "_shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = run_cli([sys.executable, "-m", "pip", "--python", str(venv_python), "install", "-q", "--no-deps",
                         "--no-index", str(wheel)], cwd=path.parent, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv_python


def import_problems(venv_python: Path, cwd: Path) -> list[str]:
    done = run_cli([str(venv_python), "-c", IMPORT_ALL, json.dumps(package_modules()), str(venv_python.parents[1])],
                   cwd=cwd, env=CLEAN_ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_wheel_in_a_fresh_environment_imports_everything_trains_predicts_and_writes_the_card(
        tmp_path, demo_data, tiny_model):
    wheel = build_wheel(tmp_path)
    packaged = set(zipfile.ZipFile(wheel).namelist())
    resources = {p.name for p in (ROOT / "hf_ft" / "resources").iterdir() if p.is_file() and p.suffix != ".pyc"}
    assert {f"hf_ft/resources/{name}" for name in resources} <= packaged
    venv_python = fresh_environment(tmp_path / "venv", wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert import_problems(venv_python, elsewhere) == []

    out = elsewhere / "out"
    hf_ft = str(venv_python.parent / "hf-ft")  # the console script the wheel installs
    trained = run_cli([hf_ft, "train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                       "--subjects", "music,STEM", "--output_dir", str(out), "--max_seq_length", "128", "--max_steps",
                       "3", "--use_cpu", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end",
                       "false"], cwd=elsewhere, env=CLEAN_ENV, timeout=600)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "hf_ft_finished.json").is_file()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---") and "## How to use" in card

    predicted = run_cli([hf_ft, "predict", str(out), "--question", "下列何者正確？", "--choices", "甲", "乙", "丙", "丁",
                         "--json"], cwd=elsewhere, env=CLEAN_ENV, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout.strip().splitlines()[-1])["prediction"] in "ABCD"


def test_a_wheel_missing_a_subpackage_fails_the_check(tmp_path):
    """The mutation the old test could not see: hf_ft/extra/ taken out of the wheel."""
    wheel = build_wheel(tmp_path)
    broken = tmp_path / "broken" / wheel.name
    broken.parent.mkdir()
    with zipfile.ZipFile(wheel) as original, zipfile.ZipFile(broken, "w") as copy:
        for item in original.infolist():
            if not item.filename.startswith("hf_ft/extra/"):
                copy.writestr(item, original.read(item.filename))
    venv_python = fresh_environment(tmp_path / "venv", broken)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    problems = import_problems(venv_python, elsewhere)
    assert any(p.startswith("hf_ft.extra") for p in problems), problems
    assert any(p.startswith("hf_ft.training.run:") and "hf_ft.extra" in p for p in problems), problems

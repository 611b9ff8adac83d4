"""Hub kernels (transformers 5's `use_kernels`, on by default): compiled code fetched from the hub and run on the
GPU, which died offline at the first model.train()/eval() on the first GPU run. hf_ft loads every model without
them unless --use_kernels is given, whatever USE_HUB_KERNELS says."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT, TRAIN_ARGS


@pytest.fixture
def kernels_on_by_environment(monkeypatch):
    pytest.importorskip("kernels")  # transformers 5 installs it; without it there is nothing to turn off
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_plain_transformers_would_load_with_kernels(kernels_on_by_environment, tiny_model):
    """The default this file guards against is still the library's: otherwise the tests below prove nothing."""
    from transformers import AutoModelForMultipleChoice

    assert AutoModelForMultipleChoice.from_pretrained(tiny_model).use_kernels is True


def test_models_load_without_kernels(kernels_on_by_environment, tiny_model, trained_run):
    from hf_ft.evaluation.scoring import load_scorer
    from hf_ft.inputs.modeling import load_model

    assert load_model(str(tiny_model), "per_choice").use_kernels is False
    assert load_model(str(tiny_model), "joint").use_kernels is False
    assert load_model(str(tiny_model), "mlm").use_kernels is False
    assert load_scorer(str(trained_run[0]), use_cpu=True).model.use_kernels is False
    assert load_scorer(str(tiny_model), scorer="mlm-pll", use_cpu=True).model.use_kernels is False


def test_training_loads_without_kernels(kernels_on_by_environment, tiny_model, demo_data, tmp_path, monkeypatch):
    from conftest import train_in_process

    import hf_ft.training.run

    loaded = []
    real = hf_ft.training.run.load_model
    monkeypatch.setattr(hf_ft.training.run, "load_model", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects",
                      "music", "--output_dir", str(tmp_path / "out"), *TRAIN_ARGS, "--num_train_epochs",
                      "1", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"])
    assert loaded and all(model.use_kernels is False for model in loaded)


def test_the_flag_turns_them_on(tiny_model, monkeypatch):
    pytest.importorskip("kernels")
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    from hf_ft.inputs.modeling import load_model

    assert load_model(str(tiny_model), "per_choice", use_kernels=True).use_kernels is True


def test_use_kernels_with_use_cpu_is_refused_before_work(tmp_path, demo_data, tiny_model):
    from hf_ft.config.arguments import parse_args
    from hf_ft.core.errors import UserError

    with pytest.raises(UserError, match="--use_kernels with --use_cpu"):
        parse_args(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--output_dir",
                    str(tmp_path / "out"), "--use_cpu", "--use_kernels"])
    assert not (tmp_path / "out").exists()


def test_use_kernels_offline_without_a_cached_kernel_is_one_line(tmp_path, monkeypatch, trained_run, capsys):
    import huggingface_hub.constants as hub

    from hf_ft.evaluation.predict import main as predict
    from hf_ft.inputs.modeling import kernels_problem

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert "holds no kernels-community kernel" in kernels_problem(True)
    with pytest.raises(SystemExit) as exit_:
        predict([str(trained_run[0]), "--question", "1+1=?", "--choices", "1", "2", "3", "4",
                 "--use_kernels"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--use_kernels: the hub is offline" in err[0]
    # a cache that holds one is accepted (the user warmed it online)
    (tmp_path / "empty-cache" / "models--kernels-community--activation").mkdir(parents=True)
    assert kernels_problem(True) is None


MODEL_CLASSES = ("AutoModel", "BertFor", "ForMaskedLM", "ForMultipleChoice", "ForSequenceClassification",
                 "auto_class", "model_cls")


def test_every_model_load_in_the_package_and_benchmarks_says_use_kernels():
    """A fence: a new `from_pretrained` of a model (not a tokenizer or config) or a `pipeline(...)` in hf_ft/ or
    benchmarks/ must pass use_kernels, or this fails and names it."""
    missing = []
    for path in sorted([*(ROOT / "hf_ft").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            given = {k.arg: ast.unparse(k.value) for k in node.keywords}
            loads_model = (func.endswith(".from_pretrained") and any(c in func for c in MODEL_CLASSES)) or \
                (func == "pipeline" and not given.get("model", "").endswith(".model"))  # not a loaded model
            said = {k.arg for k in node.keywords} | {
                key.value for k in node.keywords if k.arg == "model_kwargs" and isinstance(k.value, ast.Dict)
                for key in k.value.keys if isinstance(key, ast.Constant)}
            if loads_model and "use_kernels" not in said:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {func}")
    assert not missing, "model loads without use_kernels:\n" + "\n".join(missing)

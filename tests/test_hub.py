"""Model card and push, against a real HTTP server on 127.0.0.1 that speaks the hub's push protocol."""

import json
import shutil

import pytest
import yaml
from conftest import TRAIN_ARGS, python, run_card_usage, run_cli
from fake_hub import GOOD_TOKEN, FakeHub


@pytest.fixture()
def run_dir(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run[0], out)
    (out / "rejected_rows.jsonl").write_text('{"line": 3}\n')
    (out / "checkpoint-5").mkdir(exist_ok=True)
    (out / "checkpoint-5" / "optimizer.pt").write_bytes(b"x")
    return out


def hub_env(hub, tmp_path, token=GOOD_TOKEN):
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def card_metadata(readme: bytes) -> dict:
    text = readme.decode("utf-8")
    return yaml.safe_load(text.split("---")[1])


def test_push_uploads_the_model_card_and_results_only(run_dir, tmp_path):
    with FakeHub() as hub:
        result = run_cli(python("-m", "hf_ft.cli", "push", str(run_dir), "--repo_id", "me/tiny-tmmlu"),
                         env=hub_env(hub, tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pushed" in result.stdout and "commit " + "a" * 40 in result.stdout
    assert len(hub.commits) == 1 and hub.commits[0]["repo"] == "me/tiny-tmmlu"
    uploaded = hub.commits[0]["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md",
            "validation_loss_curve.png", "eval_results.json", "all_results.json", "loss_history.json",
            "test_item_results.jsonl", "data_manifest.json", "hf_ft_run.json"} <= set(uploaded)
    # By default the test questions' text (and the answers to them) stay local.
    assert "test_qa_data.json" not in uploaded and "test_predictions.jsonl" not in uploaded
    items = json.loads((run_dir / "test_qa_data.json").read_text())
    results = [json.loads(line) for line in uploaded["test_item_results.jsonl"].decode().splitlines()]
    assert [r["id"] for r in results] == [i["id"] for i in items]
    assert set(results[0]) == {"id", "subject", "content_hash", "correct"}
    assert not any(i["question"] in content.decode("utf-8", "replace") for i in items[:50]
                   for name, content in uploaded.items() if not name.endswith((".safetensors", ".png")))
    assert not any(name.startswith("checkpoint-") or name.endswith((".pt", ".bin")) or "rejected" in name
                   for name in uploaded)
    # Token: sent as a header on every request, present in no uploaded file.
    assert all(r["auth"] == f"Bearer {GOOD_TOKEN}" for r in hub.requests)
    assert not any(GOOD_TOKEN.encode() in content for content in uploaded.values())
    # Local data: the card claims no hub dataset and no model-index results on one; its table is the run's own.
    meta = card_metadata(uploaded["README.md"])
    results = json.loads(uploaded["eval_results.json"])
    assert "model-index" not in meta and "datasets" not in meta and "tmmluplus" not in meta["tags"]
    assert meta["pipeline_tag"] == "multiple-choice"
    # The tiny model's folder has no card: the licence is unknown, and the card says so instead of guessing.
    assert meta["license"] == "other" and "zh" in meta["language"]
    assert meta.get("model_name") == "me/tiny-tmmlu" and "base_model" not in meta  # a local base model: no claim
    body = uploaded["README.md"].decode()
    assert "The licence is unknown: the model folder has no README.md" in body
    assert "The test questions' text is not in this repository" in body
    results = json.loads(uploaded["eval_results.json"])
    assert f"| micro: all items pooled: every item counts once | {100 * results['test_accuracy']:.1f}% |" in body
    assert f"| macro over subjects: the mean of the per-subject accuracies | {100 * results['test_accuracy_macro']:.1f}% |" in body
    assert "![Training and validation loss](validation_loss_curve.png)" in body
    assert "hf-ft predict me/tiny-tmmlu" in body and "AutoModelForMultipleChoice" in body


def test_dry_run_lists_and_sends_nothing(run_dir, tmp_path):
    with FakeHub() as hub:
        result = run_cli(python("-m", "hf_ft.cli", "push", str(run_dir), "--repo_id", "me/x", "--dry_run"),
                         env=hub_env(hub, tmp_path))
    assert result.returncode == 0 and hub.requests == []
    assert "model.safetensors" in result.stdout and "checkpoint-5" not in result.stdout


@pytest.mark.parametrize("case,expected", [
    ("bad_token", "rejected the token (401)"),
    ("foreign_repo", "push to other/x failed: no write access (403)"),
    ("server_error", "failed with HTTP 500; nothing was committed"),
    ("no_token", "no Hugging Face token: set HF_TOKEN"),
    ("network_down", "cannot reach the hub"),
])
def test_push_errors_are_one_clear_line(run_dir, tmp_path, case, expected):
    repo = {"foreign_repo": "other/x", "server_error": "me/broken"}.get(case, "me/x")
    with FakeHub() as hub:
        env = hub_env(hub, tmp_path, token={"bad_token": "hf_wrong", "no_token": None}.get(case, GOOD_TOKEN))
        if case == "network_down":
            env["HF_ENDPOINT"] = "http://127.0.0.1:9"
        result = run_cli(python("-m", "hf_ft.cli", "push", str(run_dir), "--repo_id", repo), env=env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert "pushed" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert not hub.commits


@pytest.mark.slow
def test_push_to_hub_during_training(demo_data, tiny_model, tmp_path):
    out = tmp_path / "out"
    with FakeHub() as hub:
        result = run_cli(python("run_qa.py", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                                "--output_dir", str(out), *TRAIN_ARGS, "--num_train_epochs", "1",
                                "--push_to_hub", "--hub_model_id", "me/trained-and-pushed"),
                         env=hub_env(hub, tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert hub.created and hub.created[0]["name"] == "trained-and-pushed"
    assert len(hub.commits) == 1
    uploaded = hub.commits[0]["files"]
    assert "model.safetensors" in uploaded and "README.md" in uploaded
    assert not any(n.startswith("checkpoint-") or n == "training_args.bin" for n in uploaded)
    assert "hf_ft" in card_metadata(uploaded["README.md"])["tags"]
    assert (out / "README.md").read_bytes() == uploaded["README.md"]


def test_card_is_written_at_the_end_of_training(trained_run):
    """Every claim of the card comes from the run's records: local data is named as local, with its hash."""
    out, _ = trained_run
    text = (out / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---")[1])
    manifest = json.loads((out / "data_manifest.json").read_text())
    results = json.loads((out / "eval_results.json").read_text())
    run = json.loads((out / "hf_ft_run.json").read_text())
    assert "model-index" not in meta and "datasets" not in meta
    assert "fine-tuned on TMMLU+" not in text and "fine-tuned on local data" in text
    assert manifest["source"]["content_sha256"][:16] in text and manifest["source"]["path"] in text
    assert f"{manifest['counts']['train']} train / {manifest['counts']['validation']} validation / " \
           f"{manifest['counts']['test']} test" in text
    assert f"| micro: all items pooled: every item counts once | {100 * results['test_accuracy']:.1f}% |" in text
    assert "model_name" not in meta  # no repo id before a push: the card names none
    assert manifest["source"]["path"].startswith("../")  # relative to the output folder, never absolute
    assert f"| learning rate | {run['hyperparameters']['learning_rate']} |" in text
    assert "| warmup | 10% of the training steps |" in text and "SchedulerType" not in text
    assert "| lr scheduler type | linear |" in text and "| DeepSpeed | not used |" in text
    assert "pip install hf_ft" not in text and "pip install -e ." in text
    assert "No comparison with the original model has been run" in text  # no claim of numbers "above"


def test_card_usage_code_answers_like_hf_ft(trained_run, capsys):
    from hf_ft.evaluation.predict import make_question, rank
    from hf_ft.evaluation.scoring import load_scorer

    out, _ = trained_run
    usage = run_card_usage(out)
    expected = rank(load_scorer(str(out), use_cpu=True), [make_question(usage["question"], usage["options"])])[0]
    assert capsys.readouterr().out.startswith(expected["prediction"])
    assert {r["letter"]: r["probability"] for r in expected["ranking"]} == pytest.approx(
        dict(zip("ABCD", usage["logits"].softmax(-1)[0].tolist())), abs=1e-5)


def test_hub_token_argument_is_refused(tmp_path):
    from hf_ft.config.arguments import ConfigError, parse_args

    with pytest.raises(ConfigError, match="--hub_token is not accepted"):
        parse_args(["--output_dir", str(tmp_path), "--hub_token", "hf_secret"])


def test_nothing_pushed_holds_an_absolute_path(run_dir, tmp_path, tmp_path_factory):
    """The run was given absolute paths (model, data, output folder): every pushed file keeps them relative to
    the output folder, or names the folder only."""
    with FakeHub() as hub:
        result = run_cli(python("-m", "hf_ft.cli", "push", str(run_dir), "--repo_id", "me/paths",
                                "--include_test_items"), env=hub_env(hub, tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    uploaded = hub.commits[0]["files"]
    assert {"test_qa_data.json", "test_predictions.jsonl"} <= set(uploaded)  # asked for
    assert "This repository holds the test questions' text" in uploaded["README.md"].decode()
    base = str(tmp_path_factory.getbasetemp())
    leaking = [name for name, content in uploaded.items() if base.encode() in content]
    assert not leaking, leaking
    run = json.loads(uploaded["hf_ft_run.json"])
    assert run["arguments"]["data_dir"].startswith("../") and "output_dir" not in run["arguments"]
    assert set(run["arguments_relative_paths"]) >= {"data_dir", "model_name_or_path"}

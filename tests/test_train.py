"""End to end: run_qa.py on demo data with a tiny model."""

import json
import signal
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, TRAIN_ARGS, cli, python, run_cli


def test_trained_run_learns_and_writes_everything(trained_run):
    out, metrics = trained_run
    assert metrics["eval_accuracy"] > 0.45 and metrics["test_accuracy"] > 0.45  # chance is 0.25
    for name in ("model.safetensors", "config.json", "tokenizer.json", "validation_loss_curve.png",
                 "loss_history.json", "test_qa_data.json", "data_manifest.json", "eval_results.json",
                 "all_results.json"):
        assert (out / name).is_file(), name
    assert (out / "validation_loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "loss_history.json").read_text())
    assert len(history["train_loss"]) >= 5 and len(history["eval_loss"]) >= 6
    assert history["eval_accuracy"][-1]["value"] > history["eval_accuracy"][0]["value"]
    results = json.loads((out / "eval_results.json").read_text())
    # Per-subject accuracies agree with the predictions written for each test item.
    items = {i["id"]: i for i in json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))}
    predictions = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    by_subject = {}
    for p in predictions:
        by_subject.setdefault(items[p["id"]]["subject"], []).append(p["prediction"] == items[p["id"]]["answer"])
    assert len(by_subject) == 8
    for subject, hits in by_subject.items():
        assert results[f"test_accuracy_subject_{subject}"] == pytest.approx(np.mean(hits)), subject
    assert results["test_accuracy"] == pytest.approx(np.mean([h for v in by_subject.values() for h in v]))
    assert {"eval_accuracy_STEM", "eval_accuracy_humanities", "eval_accuracy_social_sciences",
            "eval_accuracy_other"} <= set(results)


def test_held_out_file_and_manifest(trained_run):
    out, _ = trained_run
    items = json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))
    manifest = json.loads((out / "data_manifest.json").read_text(encoding="utf-8"))
    assert len(items) == manifest["counts"]["test"] > 100
    assert set(items[0]) == {"id", "subject", "category", "question", "options", "answer"}
    assert set(items[0]["options"]) == {"A", "B", "C", "D"} and items[0]["answer"] in "ABCD"
    from hf_ft.data.rows import content_hash

    seen = set(manifest["content_hashes"]["train"]) | set(manifest["content_hashes"]["validation"])
    assert len(manifest["content_hashes"]["train"]) == manifest["counts"]["train"]
    assert not any(content_hash(i["question"], i["options"].values()) in seen for i in items)
    assert manifest["split_scheme"] == "official" and manifest["source"]["kind"] == "data_dir"


def test_reloaded_model_predicts_like_the_trained_one(trained_run):
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    out, metrics = trained_run
    model = AutoModelForMultipleChoice.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    items = json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))
    correct = 0
    for item in items:
        enc = tokenizer([item["question"]] * 4, list(item["options"].values()), return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits
        correct += "ABCD"[int(logits.argmax())] == item["answer"]
    assert correct / len(items) == pytest.approx(metrics["test_accuracy"], abs=1e-9)


def test_refuses_non_empty_output_dir(tmp_path, demo_data, tiny_model, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                        "--output_dir", str(tmp_path), "--use_cpu"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "is not empty and has no run of these arguments to resume" in err and "--overwrite_output_dir" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_refuses_a_finished_run(trained_run, tiny_model, demo_data, capsys):
    out, _ = trained_run
    before = (out / "model.safetensors").stat().st_mtime_ns
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                        "--output_dir", str(out), *TRAIN_ARGS], capsys)
    assert code == 2 and "holds a finished run" in err and "--overwrite_output_dir" in err
    assert (out / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, demo_data, tiny_model):
    out = tmp_path / "out"
    cmd = python("run_qa.py", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                 "--output_dir", str(out), *TRAIN_ARGS, "--max_steps", "120", "--save_strategy", "steps",
                 "--save_steps", "20", "--eval_strategy", "steps", "--eval_steps", "20", "--logging_steps", "5",
                 "--save_total_limit", "10")
    import os
    import subprocess

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (out / "checkpoint-40" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()
    result = run_cli(cmd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resuming from" in result.stdout + result.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 120
    history = json.loads((out / "loss_history.json").read_text())
    steps = [p["step"] for p in history["train_loss"]]
    assert steps[0] == 1 and steps[-1] == 120 and steps == sorted(set(steps))
    assert [p["step"] for p in history["eval_loss"]][:2] == [20, 40]

    # The resumed run reproduces an uninterrupted one: same losses at the same steps.
    reference = tmp_path / "reference"
    cmd_ref = [a if a != str(out) else str(reference) for a in cmd]
    assert run_cli(cmd_ref).returncode == 0
    ref = json.loads((reference / "loss_history.json").read_text())
    np.testing.assert_allclose([p["value"] for p in history["train_loss"]],
                               [p["value"] for p in ref["train_loss"]], rtol=1e-4)


@pytest.mark.parametrize("formulation", ["per_choice", "joint"])
def test_gradient_checkpointing_trains_the_same_model_and_resumes_exactly(formulation, tmp_path, demo_data,
                                                                          tiny_model):
    """--gradient_checkpointing recomputes each layer in the backward pass (with the forward's dropout RNG),
    so it trains the very same model; a run stopped after its checkpoint and started again ends there too."""
    import shutil

    from conftest import train_in_process

    def run(out, *extra):
        train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects",
                          "music,agriculture", "--output_dir", str(out), *TRAIN_ARGS, "--formulation", formulation,
                          "--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4", "--eval_strategy",
                          "no", "--load_best_model_at_end", "false", "--logging_steps", "1", *extra])
        return [p["value"] for p in json.loads((out / "loss_history.json").read_text())["train_loss"]]

    plain = run(tmp_path / "plain")
    checkpointed = run(tmp_path / "ckpt", "--gradient_checkpointing")
    np.testing.assert_allclose(checkpointed, plain, rtol=1e-5)
    # As if killed right after checkpoint-4: the later checkpoint, the model and the finished marker gone.
    out = tmp_path / "ckpt"
    assert (out / "checkpoint-4" / "trainer_state.json").is_file()
    shutil.rmtree(out / "checkpoint-8")
    for name in ("hf_ft_finished.json", "model.safetensors", "trainer_state.json"):
        (out / name).unlink(missing_ok=True)
    resumed = run(out, "--gradient_checkpointing")
    np.testing.assert_allclose(resumed, plain, rtol=1e-5)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 8
    from safetensors.torch import load_file

    for name, tensor in load_file(tmp_path / "plain" / "model.safetensors").items():
        torch.testing.assert_close(load_file(out / "model.safetensors")[name], tensor, rtol=1e-5, atol=1e-6)

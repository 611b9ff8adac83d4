"""Resume is exact: from every checkpoint, in every epoch, for both formulations; and a run killed with
kill -9 at any moment, started again with the same command, ends where the uninterrupted run ends."""

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, override, run_cli, train_in_process
from safetensors.numpy import load_file

pytestmark = pytest.mark.slow

STEPS = 30  # music alone: ~13 steps per epoch at batch 8, so the run spans three epochs


def run_args(model, data, out, formulation="per_choice", *extra):
    return override(["--model_name_or_path", str(model), "--data_dir", str(data), "--subjects", "music",
                     "--formulation", formulation, "--output_dir", str(out), "--max_seq_length", "64",
                     "--per_device_train_batch_size", "8", "--learning_rate", "2e-3", "--max_steps", str(STEPS),
                     "--save_strategy", "steps", "--save_steps", "5", "--eval_strategy", "steps", "--eval_steps",
                     "5", "--logging_steps", "1", "--save_total_limit", "10", "--seed", "0", "--use_cpu",
                     "--disable_tqdm", "true"], list(extra))


def losses(out) -> dict[int, float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def weights(out) -> dict:
    return load_file(str(out / "model.safetensors"))


def assert_same_run(out, reference):
    assert losses(out) == losses(reference)  # every step's loss, bit for bit
    a, b = weights(out), weights(reference)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    results = json.loads((out / "eval_results.json").read_text())
    expected = json.loads((reference / "eval_results.json").read_text())
    assert {k: v for k, v in results.items() if "runtime" not in k and "per_second" not in k} == \
           {k: v for k, v in expected.items() if "runtime" not in k and "per_second" not in k}
    assert (out / "hf_ft_finished.json").is_file()


@pytest.fixture(scope="module", params=["per_choice", "joint"])
def reference(request, tmp_path_factory, demo_data, tiny_model):
    out = tmp_path_factory.mktemp(f"ref_{request.param}") / "out"
    train_in_process(run_args(tiny_model, demo_data, out, request.param))
    return request.param, out


@pytest.mark.parametrize("step", [10, 20, 25])
def test_resume_from_every_epoch_is_exact(reference, step, tmp_path, demo_data, tiny_model):
    """Checkpoints in the first, second and third epoch: the continued run equals the uninterrupted one
    (the sampler and joint's option orders depend on the seed and the epoch, not on what ran before)."""
    formulation, ref = reference
    steps_per_epoch = json.loads((ref / "trainer_state.json").read_text())["log_history"]
    out = tmp_path / "resumed"
    train_in_process(run_args(tiny_model, demo_data, out, formulation, "--resume_from_checkpoint",
                              str(ref / f"checkpoint-{step}")))
    assert_same_run(out, ref)
    assert steps_per_epoch  # the reference logged


def kill_and_rerun(point: str, out, model, data, reference, after_kill=None, extra=()) -> str:
    args = run_args(model, data, out, "per_choice", *extra)
    killed = run_cli([sys.executable, str(ROOT / "tests" / "kill_helper.py"), point, "--", *args], timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (out / "hf_ft_finished.json").exists()
    if after_kill:
        after_kill(out)
    rerun = run_cli([sys.executable, "run_qa.py", *args], timeout=600)  # the same command
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert_same_run(out, reference)
    return rerun.stdout + rerun.stderr


def train_in_a_fresh_process(args: list[str]) -> None:
    """The uninterrupted run a killed one is compared with, in a new process like the rerun: a long-lived test
    process (a pytest worker that ran other tests) can differ from a fresh one in the last bit of a loss."""
    result = run_cli([sys.executable, "run_qa.py", *args], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def per_choice_reference(tmp_path_factory, demo_data, tiny_model):
    out = tmp_path_factory.mktemp("kill_ref") / "out"
    start = time.perf_counter()
    train_in_a_fresh_process(run_args(tiny_model, demo_data, out))
    return out, time.perf_counter() - start


@pytest.mark.parametrize("point", ["checkpoint:20", "final"])  # a checkpoint after the first one, and the end
def test_kill_during_a_save_then_rerun(point, per_choice_reference, tmp_path, demo_data, tiny_model):
    reference, _ = per_choice_reference
    log = kill_and_rerun(point, tmp_path / "out", tiny_model, demo_data, reference)
    if point.startswith("checkpoint"):  # the half-written checkpoint was skipped, the one before it used
        step = int(point.split(":")[1])
        assert f"skipping {tmp_path / 'out' / f'checkpoint-{step}'}" in log
        assert f"resuming from {tmp_path / 'out' / f'checkpoint-{step - 5}'}" in log


def test_a_run_with_extra_data_killed_then_rerun_ends_where_it_would_have(tmp_path, demo_data, tiny_model):
    """Extra questions (Simplified, 2-4 options, passages) are read, converted, checked and mixed the same way
    on the rerun, so the resumed run is the uninterrupted one, loss for loss."""
    from hf_ft.demo import make_extra_questions

    extra = ["--extra_data", f"{make_extra_questions(tmp_path / 'extra.jsonl', n=80, seed=5)}?cap=60"]
    reference = tmp_path / "reference"
    train_in_a_fresh_process(run_args(tiny_model, demo_data, reference, "per_choice", *extra))
    assert json.loads((reference / "data_manifest.json").read_text())["extra_data"]["sources"][0]["counts"]["used"] == 60
    log = kill_and_rerun("checkpoint:20", tmp_path / "out", tiny_model, demo_data, reference, extra=extra)
    assert f"resuming from {tmp_path / 'out' / 'checkpoint-15'}" in log


def test_kill_at_random_moments_then_rerun(per_choice_reference, tmp_path, demo_data, tiny_model):
    """Two kills at random moments of the same run (start-up, training, evaluation or a save), each followed
    by the same command; the run ends as the uninterrupted one."""
    reference, duration = per_choice_reference
    rng = random.Random(int(time.time()))
    out = tmp_path / "out"
    for _ in range(2):
        moment = rng.uniform(1.0, duration + 6.0)  # + interpreter start-up, which the in-process reference skipped
        args = run_args(tiny_model, demo_data, out)
        killed = run_cli([sys.executable, str(ROOT / "tests" / "kill_helper.py"), f"time:{moment:.2f}", "--",
                          *args], timeout=600)
        assert killed.returncode in (0, -signal.SIGKILL), killed.stderr[-3000:]
    rerun = run_cli([sys.executable, "run_qa.py", *run_args(tiny_model, demo_data, out)], timeout=600)
    assert rerun.returncode in (0, 2), rerun.stderr[-3000:]
    if rerun.returncode == 2:  # both kills came after the run had finished: the same command refuses to redo it
        assert "holds a finished run" in rerun.stderr
    assert_same_run(out, reference)


def test_truncated_newest_checkpoint_is_skipped(per_choice_reference, tmp_path, demo_data, tiny_model):
    reference, _ = per_choice_reference

    def truncate_newest_complete(out):  # checkpoint-25 was cut short by the kill; damage checkpoint-20 too
        with open(out / "checkpoint-20" / "optimizer.pt", "r+b") as f:
            f.truncate(100)

    log = kill_and_rerun("checkpoint:25", tmp_path / "out", tiny_model, demo_data, reference,
                         truncate_newest_complete)
    assert f"skipping {tmp_path / 'out' / 'checkpoint-25'}" in log
    assert f"skipping {tmp_path / 'out' / 'checkpoint-20'}: optimizer.pt" in log
    assert f"resuming from {tmp_path / 'out' / 'checkpoint-15'}" in log


def test_killed_before_the_first_checkpoint_restarts(per_choice_reference, tmp_path, demo_data, tiny_model):
    """A folder holding only this run's early files is this run's: the same command restarts it."""
    reference, _ = per_choice_reference
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "run_qa.py", *run_args(tiny_model, demo_data, out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "test_qa_data.json").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(out.glob("checkpoint-*"))
    rerun = run_cli([sys.executable, "run_qa.py", *run_args(tiny_model, demo_data, out)], timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "restarting this run's unfinished output" in rerun.stdout + rerun.stderr
    assert_same_run(out, reference)


def early_stopping_args(model, data, out):
    """Evaluate and save every 5 steps; an improvement must beat 1.0 in accuracy, which none can, so the
    run stops at the third evaluation (step 15 of 30): the first sets the best, two more fail to beat it."""
    return run_args(model, data, out, "per_choice", "--early_stopping_patience", "2",
                    "--early_stopping_threshold", "1.0")


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory, demo_data, tiny_model):
    out = tmp_path_factory.mktemp("early") / "out"
    train_in_a_fresh_process(early_stopping_args(tiny_model, demo_data, out))
    return out


def test_early_stopping_stops_and_the_card_says_when_and_why(early_stopped):
    record = json.loads((early_stopped / "hf_ft_run.json").read_text())["early_stopping"]
    assert record["stopped_early"] and record["stopped_at_step"] == 15 and record["max_steps"] == STEPS
    assert record["best_checkpoint"] == "checkpoint-5"  # nothing beat the first evaluation by more than 1.0
    assert (early_stopped / "hf_ft_finished.json").is_file()  # finished like any other run
    card = (early_stopped / "README.md").read_text(encoding="utf-8")
    assert f"stopped at step 15 of {STEPS}" in card and "did not improve by more than 1.0 for 2 evaluation(s)" in card


def test_early_stopped_run_killed_then_rerun_stops_at_the_same_step(early_stopped, tmp_path, demo_data, tiny_model):
    """Killed inside the checkpoint of step 15 (the stopping step): the rerun resumes from step 10 with the
    patience counter restored, and stops at 15 again with the same weights and results."""
    out = tmp_path / "out"
    args = early_stopping_args(tiny_model, demo_data, out)
    killed = run_cli([sys.executable, str(ROOT / "tests" / "kill_helper.py"), "checkpoint:15", "--", *args],
                     timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    rerun = run_cli([sys.executable, "run_qa.py", *args], timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint-10'}" in rerun.stdout + rerun.stderr
    assert_same_run(out, early_stopped)
    assert json.loads((out / "hf_ft_run.json").read_text())["early_stopping"]["stopped_at_step"] == 15


def test_early_stopping_without_evaluations_is_refused(tmp_path, demo_data, tiny_model, capsys):
    from conftest import cli

    code, _, err = cli(["train", *run_args(tiny_model, demo_data, tmp_path / "o", "per_choice",
                                           "--early_stopping_patience", "2", "--eval_strategy", "no",
                                           "--load_best_model_at_end", "false")], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: --early_stopping_patience: needs evaluations")
    assert not (tmp_path / "o").exists()

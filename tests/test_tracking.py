"""Run tracking with the real packages, offline: TensorBoard event files and trackio's local store hold the
run's losses, and a --push_to_hub run with trackio asks the hub for no Space."""

import json

import pytest
from conftest import python, run_cli
from fake_hub import GOOD_TOKEN, FakeHub

pytestmark = pytest.mark.slow


def small_run(model, data, out, *extra):
    return python("run_qa.py", "--model_name_or_path", str(model), "--data_dir", str(data), "--subjects", "music",
                  "--output_dir", str(out), "--max_seq_length", "64", "--per_device_train_batch_size", "8",
                  "--max_steps", "6", "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
                  "--load_best_model_at_end", "false", "--use_cpu", *extra)


def trainer_losses(out) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [e["loss"] for e in history if "loss" in e]


def test_tensorboard_logs_hold_the_losses(tmp_path, demo_data, tiny_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    result = run_cli(small_run(tiny_model, demo_data, out, "--report_to", "tensorboard"))
    assert result.returncode == 0, result.stderr[-3000:]
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert events, list(out.iterdir())
    accumulator = EventAccumulator(str(events[0].parent)).Reload()
    logged = [e.value for e in accumulator.Scalars("train/loss")]
    assert logged == pytest.approx(trainer_losses(out), abs=1e-4) and len(logged) == 6


def test_trackio_logs_locally_and_a_push_makes_no_space(tmp_path, demo_data, tiny_model):
    out = tmp_path / "out"
    store = tmp_path / "trackio"
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": GOOD_TOKEN,
               "TRACKIO_DIR": str(store)}
        result = run_cli(small_run(tiny_model, demo_data, out, "--report_to", "trackio", "--project", "hf_ft_test",
                                   "--run_name", "tiny", "--push_to_hub", "--hub_model_id", "me/tracked"), env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert len(hub.commits) == 1 and hub.commits[0]["repo"] == "me/tracked"
    creates = [json.loads(r["body"] or b"{}") for r in hub.requests if r["path"].startswith("/api/repos/create")]
    assert [c.get("type", "model") for c in creates] == ["model"]  # no Space created or synced
    assert not [r["path"] for r in hub.requests if "space" in r["path"].lower()]
    script = ("import json; from trackio.sqlite_storage import SQLiteStorage as S; "
              "print(json.dumps([l['train/loss'] for l in S.get_logs('hf_ft_test', 'tiny') if 'train/loss' in l]))")
    read = run_cli(python("-c", script), env={"TRACKIO_DIR": str(store)})
    assert read.returncode == 0, read.stderr[-2000:]
    assert json.loads(read.stdout.strip().splitlines()[-1]) == pytest.approx(trainer_losses(out), abs=1e-4)

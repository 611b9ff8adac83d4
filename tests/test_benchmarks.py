"""The benchmark scripts run (quick mode: tiny sizes, nothing measured) and write the reports they promise."""

import json
import sys

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def run_benchmark(name: str, tmp_path, *extra: str) -> dict:
    output = tmp_path / f"{name}.json"
    result = run_cli([sys.executable, "-m", f"benchmarks.{name}", "--quick", "--output", str(output), *extra],
                     timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(output.read_text())


def test_throughput_benchmark(tmp_path):
    # the command line, evaluation and the joint arm (test_training_speed_guard runs baseline and per_choice
    # training at full length in-process; the other arms are settings of the same code path)
    report = run_benchmark("throughput", tmp_path, "--arms", "baseline,hf_ft_joint_one_order")
    assert {"matmul_gflops", "arms", "machine"} <= set(report)
    names = [a["name"] for a in report["arms"]]
    assert names == ["baseline", "hf_ft_joint_one_order"]
    for arm in report["arms"]:
        assert {"name", "train_samples_per_s", "eval_samples_per_s", "train_ratio", "eval_ratio", "mfu",
                "peak_rss_mb", "padding_fraction"} <= set(arm)
        assert arm["train_samples_per_s"] > 0 and arm["eval_samples_per_s"] > 0
    assert next(a for a in report["arms"] if a["name"] == "baseline")["train_ratio"] == 1.0


def test_preprocessing_and_accuracy_benchmarks(tmp_path):
    prep = run_benchmark("preprocessing", tmp_path)
    assert prep["preprocess_rows"] > 1500 and prep["preprocess_cached_s"] < prep["preprocess_cold_s"]
    demo = run_benchmark("accuracy", tmp_path)["demo_accuracy"]
    assert {"per_choice", "joint"} <= set(demo)
    assert 0 <= demo["joint"]["test_accuracy_one_pass"] <= 1 and demo["joint"]["eval_rotations"] == 4


@pytest.mark.alone
def test_training_speed_guard(tmp_path):
    """A regression guard: hf_ft's per-choice training against run_swag.py's, mid model, 512 tokens, one process,
    the same stratified sample of each arm's epoch (benchmarks.throughput.sampled_epoch). Measured here at
    2.3-2.5x (docs/benchmarks.md); a change that halves hf_ft's speed lands below 1.7x and fails."""
    from benchmarks import throughput

    report = throughput.main(["--arms", "hf_ft_per_choice", "--steps", "8", "--skip_eval", "--output", str(tmp_path / "guard.json")])
    per_choice = next(a for a in report["arms"] if a["name"] == "hf_ft_per_choice")
    baseline = next(a for a in report["arms"] if a["name"] == "baseline")
    assert per_choice["steps_timed"] == 8
    assert per_choice["train_ratio"] >= 1.7, per_choice
    # hf_ft's length-grouped batches carry less padding than run_swag's random ones
    assert per_choice["padding_fraction"] < baseline["padding_fraction"], (per_choice, baseline)


def test_contention_benchmark(tmp_path):
    # the command line, a competitor started and stopped around each loaded arm, a policy's report
    report = run_benchmark("contention", tmp_path, "--policies", "free_cores")
    policy = report["policies"]["free_cores"]
    assert set(report["policies"]) == {"free_cores"} and policy["env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    for load in ("quiet", "one_competitor"):
        assert policy[load]["train_samples_per_s"] > 0 and policy[load]["threads_at_end"] >= 1
    assert policy["loaded_share_of_quiet"] > 0

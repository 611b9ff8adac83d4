"""Is the gain real? The artifact audit finds a planted shortcut and stays quiet without one; seeds give a
difference across training randomness; any number of models side by side with Holm's correction; cards
and reports claim only what the run's records show."""

import json

import numpy as np
import pytest
import yaml
from conftest import TRAIN_ARGS, cli, train_in_process

pytestmark = pytest.mark.slow


def evaluate(capsys, *argv):
    code, out, err = cli(["evaluate", *argv, "--use_cpu"], capsys)
    assert code == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_model):
    """Demo data whose gold option is the longest in 90% of the items of four subjects, and a run on it."""
    from hf_ft.demo import make_demo_data

    root = tmp_path_factory.mktemp("planted")
    data = make_demo_data(root / "data", rows_per_subject=160, seed=0, artifact="longest",
                          artifact_subjects=["music", "agriculture", "physical_education", "introduction_to_law"])
    out = root / "out"
    train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(data), "--output_dir", str(out),
                      *TRAIN_ARGS])
    return data, out


def test_audit_flags_a_planted_artifact(planted, tiny_model, capsys):
    _, out = planted
    printed = evaluate(capsys, "--original", str(tiny_model), "--finetuned", str(out), "--audit")
    report = json.loads((out / "comparison" / "comparison.json").read_text())
    audit = report["audit"]
    heuristics = {h["name"]: h for h in audit["heuristics"]}
    assert heuristics["longest option"]["accuracy"] > 0.5 and heuristics["longest option"]["ci95"][0] > 0.3
    choices = audit["choices_only"]
    assert choices["ci95"][0] > 0.3  # the options alone answer far above chance
    assert audit["verdict"].startswith(f"choices-only reaches {choices['accuracy']:.0%}")
    assert "of the gain may be option artifacts" in audit["verdict"]  # "part" or "most", by the stated thresholds
    assert 0.25 <= choices["explained_share"] <= 1
    # the demo's questions have no special form: all of them are "plain", where the same numbers hold
    assert choices["per_form"] == {"plain": {"n": choices["items"], "accuracy_choices_only": choices["accuracy"],
                                             "accuracy_finetuned": report["finetuned"]["accuracy"]}}
    # The choices-only run is a real run of the same recorded arguments, without the question.
    run = json.loads((out / "comparison" / "choices_only" / "hf_ft_run.json").read_text())
    assert run["hyperparameters"]["drop_question"] is True and run["formulation"] == "per_choice"
    assert run["arguments"]["learning_rate"] == 2e-3
    markdown = (out / "comparison" / "comparison.md").read_text()
    assert "Knowledge or option artifacts?" in markdown and "Thresholds:" in markdown
    assert "audit: choices-only reaches" in printed
    card = (out / "README.md").read_text(encoding="utf-8")  # evaluate refreshed the run's card
    assert "Knowledge or option artifacts?" in card and audit["verdict"] in card
    assert "No comparison with the original model has been run" not in card


def test_audit_is_quiet_on_the_clean_demo(trained_run, tiny_model, tmp_path, capsys):
    out, _ = trained_run
    evaluate(capsys, "--original", str(tiny_model), "--finetuned", str(out), "--audit", "--output_dir",
             str(tmp_path / "c"))
    audit = json.loads((tmp_path / "c" / "comparison.json").read_text())["audit"]
    verdict = audit["verdict"]
    assert "part of the gain may be option artifacts" not in verdict and "most of the gain may be" not in verdict
    choices = audit["choices_only"]
    if choices["ci95"][0] > 0.30:  # the demo's own small artifact (which words tend to be answers), named and sized
        assert choices["explained_share"] < 0.25 and "most of the gain is not option artifacts" in verdict
    elif any(h["ci95"][0] > 0.30 for h in audit["heuristics"]):
        assert verdict.startswith("the options carry an artifact") and "stays near chance" in verdict
    else:
        assert verdict.startswith("no sign of option artifacts")
    consistency = audit["permutation"]
    assert consistency["consistent"] == 1.0 and "by construction" in consistency["note"]  # per-choice
    assert len(consistency["accuracy_per_rotation"]) == 4


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory, demo_data, tiny_model):
    out = tmp_path_factory.mktemp("seeds") / "out"
    args = ["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--output_dir", str(out),
            *TRAIN_ARGS, "--num_train_epochs", "3", "--seeds", "1,2,3"]
    summary = train_in_process(args)
    return out, summary, args


def test_seeds_train_one_run_each_and_summarise(seeds_run, capsys):
    out, summary, args = seeds_run
    assert [r["seed"] for r in summary["runs"]] == [1, 2, 3]
    for run in summary["runs"]:
        results = json.loads((out / f"seed-{run['seed']}" / "eval_results.json").read_text())
        assert run["test_accuracy"] == results["test_accuracy"]
        assert json.loads((out / f"seed-{run['seed']}" / "hf_ft_run.json").read_text())["hyperparameters"]["seed"] \
            == run["seed"]
    accuracies = [r["test_accuracy"] for r in summary["runs"]]
    assert summary["mean_test_accuracy"] == pytest.approx(np.mean(accuracies))
    assert summary["std_test_accuracy"] == pytest.approx(np.std(accuracies, ddof=1))
    assert len(set(accuracies)) > 1  # the seeds differ
    manifests = [json.loads((out / f"seed-{s}" / "data_manifest.json").read_text()) for s in (1, 2, 3)]
    assert all(m["content_hashes"] == manifests[0]["content_hashes"] for m in manifests)  # one split for all
    assert json.loads((out / "seeds_summary.json").read_text()) == summary
    assert "Trained with 3 seeds" in (out / "seed-2" / "README.md").read_text(encoding="utf-8")
    # The same command again: every seed is finished, nothing is retrained.
    stamps = [(out / f"seed-{s}" / "model.safetensors").stat().st_mtime_ns for s in (1, 2, 3)]
    code, _, err = cli(["train", *args], capsys)
    assert code == 0, err
    assert stamps == [(out / f"seed-{s}" / "model.safetensors").stat().st_mtime_ns for s in (1, 2, 3)]


def test_evaluate_a_seeds_folder(seeds_run, tiny_model, tmp_path, capsys):
    out, summary, _ = seeds_run
    printed = evaluate(capsys, "--original", str(tiny_model), "--finetuned", str(out), "--output_dir",
                       str(tmp_path / "c"))
    report = json.loads((tmp_path / "c" / "comparison.json").read_text())
    seeds = report["seeds"]
    assert [r["seed"] for r in seeds["runs"]] == [1, 2, 3]
    assert [r["accuracy"] for r in seeds["runs"]] == pytest.approx([r["test_accuracy"] for r in summary["runs"]])
    differences = [r["difference"] for r in seeds["runs"]]
    assert seeds["mean_difference"] == pytest.approx(np.mean(differences))
    low, high = seeds["difference_ci95_across_seeds"]
    assert low < seeds["mean_difference"] < high or low == high
    assert "seeds: Δ" in printed and "## Seeds" in (tmp_path / "c" / "comparison.md").read_text()
    assert (tmp_path / "c" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_a_seeds_folder_is_compared_only_whole(seeds_run, tiny_model, tmp_path, capsys):
    """A killed seed must not turn three seeds into two; a --seeds folder is not one model; a label needs a
    path. Each is one line before any model is scored."""
    import shutil

    out, _, _ = seeds_run
    copy = tmp_path / "seeds"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoint-*", "comparison"))
    (copy / "seed-2" / "hf_ft_finished.json").unlink()  # seed 2 was killed before it finished
    shutil.rmtree(copy / "seed-3")  # and seed 3 never started
    code, _, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(copy), "--use_cpu"], capsys)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: --finetuned {copy}: a --seeds folder with unfinished seeds")
    assert "seed-2: its run has not finished" in line and "seed-3 was never started" in line
    code, _, err = cli(["evaluate", "--original", str(out), "--finetuned", str(out / "seed-1"), "--use_cpu"], capsys)
    assert code == 2 and f"error: {out}: a --seeds folder (seed-1, seed-2, seed-3), not one model" in err
    code, _, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(out / "seed-1"),
                        "--models", "mine=", "--use_cpu"], capsys)
    assert code == 2 and "error: --models 'mine=': no model path after '='; give label=path" in err
    assert not (copy / "comparison").exists() and not (out / "seed-1" / "comparison" / "comparison.json").exists()


def test_several_models_side_by_side(trained_run, seeds_run, tiny_model, tmp_path, capsys):
    out, _ = trained_run
    seeds, _, _ = seeds_run
    evaluate(capsys, "--original", str(tiny_model), "--finetuned", str(out), "--models",
             f"seed1={seeds / 'seed-1'}", f"seed2={seeds / 'seed-2'}", "--output_dir", str(tmp_path / "c"))
    report = json.loads((tmp_path / "c" / "comparison.json").read_text())
    board = report["leaderboard"]
    assert {m["label"] for m in board["models"]} == {"original", "fine-tuned", "seed1", "seed2"}
    accuracies = [m["accuracy"] for m in board["models"]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert board["reference"] == "original" and len(board["pairwise"]) == 3
    raw = sorted(t["mcnemar"]["p_value"] for t in board["pairwise"])
    holm = sorted(t["p_holm"] for t in board["pairwise"])
    assert holm[0] == pytest.approx(min(1, 3 * raw[0]))  # the smallest p times the number of tests
    assert all(h >= r for h, r in zip(holm, raw))
    assert "## Leaderboard" in (tmp_path / "c" / "comparison.md").read_text()


def test_holm_on_a_hand_computed_case():
    from hf_ft.evaluation.stats import holm

    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_card_and_report_on_hub_data_name_the_data(trained_run):
    """The demo came from a local folder: neither the card nor the report may claim TMMLU+ results."""
    out, _ = trained_run
    card = (out / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert "model-index" not in meta and "fine-tuned on TMMLU+" not in card
    report_path = out / "comparison" / "comparison.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        assert "not the hub's ikala/tmmluplus" in report["data_description"]

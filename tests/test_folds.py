"""Cross-fitting (--folds K): the training pool dealt into K subject-stratified folds, one run per fold scoring
the fold it never saw, pooled into an out-of-fold estimate whose interval treats the folds as clusters;
resumable fold by fold; `evaluate` reads a folds folder whole; bad settings refused in one line."""

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from conftest import TRAIN_ARGS, cli, train_in_process

from hf_ft.config.arguments import ConfigError, parse_args
from hf_ft.data.rows import QARow
from hf_ft.data.splits import DataError, Splits, assign_folds, cross_fit
from hf_ft.task.cross_fitting import clustered_ci, out_of_fold_report, pooled


def rows(counts: dict[str, int]) -> list[QARow]:
    return [QARow(f"{subject}-{i}", subject, f"{subject} 問題 {i}", ("甲", "乙", "丙", "丁"), "A")
            for subject, n in counts.items() for i in range(n)]


# ----------------------------------------------------------------------------------------------
# The folds


def test_folds_are_stratified_balanced_seeded_and_cover_the_pool():
    pool = rows({"music": 23, "physics": 17, "law": 5})
    fold_of = assign_folds(pool, 4, seed=0)
    assert fold_of == assign_folds(pool, 4, seed=0)  # seeded
    assert fold_of != assign_folds(pool, 4, seed=1)
    sizes = Counter(fold_of)
    assert sorted(sizes) == [0, 1, 2, 3] and max(sizes.values()) - min(sizes.values()) <= 1
    for subject in ("music", "physics", "law"):
        per_fold = Counter(k for row, k in zip(pool, fold_of) if row.subject == subject)
        assert sorted(per_fold) == [0, 1, 2, 3] and max(per_fold.values()) - min(per_fold.values()) <= 1


def test_each_run_scores_a_fold_it_never_trained_on_and_the_folds_partition_the_pool():
    pool = rows({"music": 40, "physics": 30})
    test = rows({"music": 5})[:0] + [QARow("t-1", "music", "考題", ("甲", "乙", "丙", "丁"), "B")]
    splits = Splits(train=pool[:60], validation=pool[60:], test=test, scheme="official")
    seen = []
    for k in range(3):
        one = cross_fit(splits, k, 3, seed=0, validation_fraction=0.1, split_ratios=(0.8, 0.1, 0.1))
        fold_ids = {r.id for r in one.fold}
        assert not fold_ids & {r.id for r in one.train + one.validation}
        assert fold_ids | {r.id for r in one.train + one.validation} == {r.id for r in pool}
        assert one.test == test and one.fold_index == (k, 3)
        assert len(one.validation) == pytest.approx(0.1 * (len(pool) - len(one.fold)), abs=2)
        seen.append(fold_ids)
    assert set.union(*seen) == {r.id for r in pool} and sum(map(len, seen)) == len(pool)


def test_more_folds_than_a_subject_has_questions_is_one_line_naming_the_subject_and_the_fix():
    pool = rows({"music": 30, "law": 3})
    with pytest.raises(DataError, match=r"^--folds 5: subject 'law' has only 3 question\(s\) in the training pool, "
                                        r"and every fold needs each subject; use --folds 3 or fewer, or leave 'law' "
                                        r"out with --subjects$"):
        assign_folds(pool, 5, seed=0)


# ----------------------------------------------------------------------------------------------
# The interval


def test_the_interval_treats_folds_as_clusters_and_is_never_narrower_than_the_questions_allow():
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(5), 40)
    # the five fold models differ a lot: the clusters' spread must widen the interval past the binomial one
    correct = rng.random(200) < np.repeat([0.3, 0.8, 0.4, 0.9, 0.5], 40)
    low, high = clustered_ci(correct, folds)
    k, n, mean = 5, 200, correct.mean()
    sums = np.array([correct[folds == f].sum() - 40 * mean for f in range(5)])
    half = 2.7764451051977987 * np.sqrt(k / (k - 1) * (sums ** 2).sum()) / n  # t(0.975, 4)
    assert (low, high) == pytest.approx((mean - half, mean + half))
    group = pooled(correct, folds)
    assert group["ci95"] == pytest.approx([low, high]) and group["ci95"][1] - group["ci95"][0] > \
        group["ci95_questions_only"][1] - group["ci95_questions_only"][0]
    # identical folds: the clustered interval collapses, the reported one keeps the questions' own uncertainty
    same = np.tile([True, True, False, True], 50)
    group = pooled(same, folds)
    assert group["ci95_folds_as_clusters"][0] == pytest.approx(group["ci95_folds_as_clusters"][1])
    assert group["ci95"] == pytest.approx(group["ci95_questions_only"]) and group["ci95"][0] < 0.75 < group["ci95"][1]


def test_the_out_of_fold_report_pools_every_question_once_per_subject_and_category():
    predictions = [{"subject": s, "category": c, "fold": i % 2, "correct": ok}
                   for i, (s, c, ok) in enumerate([("music", "other", True), ("music", "other", False),
                                                   ("physics", "STEM", True), ("physics", "STEM", True)])]
    report = out_of_fold_report(predictions)
    assert report["overall"]["n"] == 4 and report["overall"]["accuracy"] == 0.75
    assert report["per_subject"]["music"]["accuracy"] == 0.5 and report["per_category"]["STEM"]["accuracy"] == 1.0
    assert report["accuracy_macro"] == 0.75 and report["tmmlu_average"] == 0.75


# ----------------------------------------------------------------------------------------------
# Settings that cannot make sense


@pytest.mark.parametrize("extra,message", [
    (["--folds", "1"], "--folds 1: need 2 or more folds"),
    (["--fold", "0"], "--fold without --folds: has no effect (it picks one of the --folds K folds)"),
    (["--folds", "3", "--fold", "3"], "--fold 3 with --folds 3: folds are numbered 0 to 2"),
    (["--folds", "3", "--validation_file", "v.csv", "--train_file", "t.csv", "--test_file", "x.csv"],
     "--folds with --validation_file: each fold's validation slice is carved from the training pool"),
    (["--folds", "3", "--formulation", "mlm"], "--folds: has no effect without --formulation per_choice or joint"),
    (["--folds", "3", "--push_to_hub"], "--push_to_hub with --folds: every fold would push to one repository"),
    (["--seeds", "1,2", "--push_to_hub"], "--push_to_hub with --seeds: every seed would push to one repository"),
])
def test_fold_settings_that_cannot_make_sense_are_refused_before_work(extra, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_args(["--model_name_or_path", "m", "--output_dir", str(tmp_path / "out"), *extra])
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Training K folds, resuming, and reading them back


@pytest.fixture(scope="module")
def folds_run(tmp_path_factory, demo_data, tiny_model):
    out = tmp_path_factory.mktemp("folds") / "out"
    args = ["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--output_dir", str(out),
            "--subjects", "music,advance_chemistry", *TRAIN_ARGS, "--num_train_epochs", "2", "--folds", "3"]
    return out, train_in_process(args), args


@pytest.mark.slow
def test_folds_train_one_run_each_and_pool_every_training_pool_question_once(folds_run, demo_data, tiny_model,
                                                                            tmp_path, capsys):
    out, summary, args = folds_run
    manifests = [json.loads((out / f"fold-{k}" / "data_manifest.json").read_text()) for k in range(3)]
    # the same test split for every fold; each fold's questions absent from that run's training and validation
    assert all(m["counts"]["test"] == manifests[0]["counts"]["test"] for m in manifests)
    fold_hashes = []
    for k, manifest in enumerate(manifests):
        assert manifest["fold"] == {"index": k, "of": 3, "seed": 0, "items_file": "fold_qa_data.json"}
        scored = [json.loads(line) for line in (out / f"fold-{k}" / "fold_predictions.jsonl").read_text().splitlines()]
        hashes = {p["content_hash"] for p in scored}
        trained = set(manifest["content_hashes"]["train"]) | set(manifest["content_hashes"]["validation"])
        assert hashes and not hashes & trained
        fold_hashes.append(hashes)
        results = json.loads((out / f"fold-{k}" / "eval_results.json").read_text())
        assert results["fold_accuracy"] == pytest.approx(np.mean([p["correct"] for p in scored]))
        assert summary["runs"][k]["fold_accuracy"] == results["fold_accuracy"]
    # an unfolded run of the same split trains on exactly the questions the folds partition
    plain = train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--output_dir",
                              str(tmp_path / "plain"), "--subjects", "music,advance_chemistry", *TRAIN_ARGS,
                              "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
                              "--load_best_model_at_end", "false"])
    assert plain
    unfolded = json.loads((tmp_path / "plain" / "data_manifest.json").read_text())["content_hashes"]
    assert set.union(*fold_hashes) == set(unfolded["train"]) | set(unfolded["validation"])
    assert sum(map(len, fold_hashes)) == summary["out_of_fold"]["overall"]["n"] == len(set.union(*fold_hashes))
    assert set(summary["out_of_fold"]["per_subject"]) == {"music", "advance_chemistry"}
    assert json.loads((out / "folds_summary.json").read_text()) == summary
    assert "## Cross-fitting" in (out / "folds_report.md").read_text(encoding="utf-8")
    assert "## Cross-fitting" in (out / "fold-1" / "README.md").read_text(encoding="utf-8")
    # The same command again: every fold is finished, nothing is retrained.
    stamps = [(out / f"fold-{k}" / "model.safetensors").stat().st_mtime_ns for k in range(3)]
    code, _, err = cli(["train", *args], capsys)
    assert code == 0, err
    assert stamps == [(out / f"fold-{k}" / "model.safetensors").stat().st_mtime_ns for k in range(3)]


@pytest.mark.slow
def test_a_killed_fold_resumes_and_the_others_are_not_redone(folds_run, tmp_path, capsys):
    out, summary, args = folds_run
    copy = tmp_path / "folds"
    shutil.copytree(out, copy)
    (copy / "fold-1" / "hf_ft_finished.json").unlink()  # killed after its last checkpoint, before it finished
    (copy / "fold-1" / "fold_predictions.jsonl").unlink()
    shutil.rmtree(copy / "fold-2")  # and fold 2 never started
    stamp = (copy / "fold-0" / "model.safetensors").stat().st_mtime_ns
    code, _, err = cli(["train", *[str(copy) if a == str(out) else a for a in args]], capsys)
    assert code == 0, err
    assert (copy / "fold-0" / "model.safetensors").stat().st_mtime_ns == stamp
    again = json.loads((copy / "folds_summary.json").read_text())
    assert again["out_of_fold"] == summary["out_of_fold"]  # ends where the uninterrupted loop ended


@pytest.mark.slow
def test_evaluate_a_folds_folder_pools_the_training_pool_out_of_fold(folds_run, tiny_model, tmp_path, capsys):
    out, summary, _ = folds_run
    code, printed, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(out), "--use_cpu",
                              "--output_dir", str(tmp_path / "c")], capsys)
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert [r["fold"] for r in report["folds"]["runs"]] == [0, 1, 2] and "seeds" not in report
    assert [r["accuracy"] for r in report["folds"]["runs"]] == pytest.approx([r["test_accuracy"]
                                                                               for r in summary["runs"]])
    cross = report["cross_fit"]
    # evaluate scores each fold model on its own fold again: the same answers training recorded
    assert cross["items"] == summary["out_of_fold"]["overall"]["n"]
    assert cross["finetuned"]["accuracy"] == pytest.approx(summary["out_of_fold"]["overall"]["accuracy"])
    assert cross["difference"] == pytest.approx(cross["finetuned"]["accuracy"] - cross["original"]["accuracy"])
    low, high = cross["difference_ci95"]
    assert low <= cross["difference"] <= high
    markdown = (tmp_path / "c" / "comparison.md").read_text(encoding="utf-8")
    assert "## Cross-fitting: the whole training pool, out of fold" in markdown
    assert "## Folds on the test items" in markdown
    assert "cross-fitting: out of fold over" in printed
    # --max_items bounds the pool's scoring too: a stratified sample, said so
    code, _, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(out), "--use_cpu",
                        "--max_items", "40", "--output_dir", str(tmp_path / "sample")], capsys)
    assert code == 0, err[-3000:]
    sampled = json.loads((tmp_path / "sample" / "comparison.json").read_text())["cross_fit"]
    assert sampled["items"] == 40 and sampled["population"] == cross["items"]
    assert f"40 training-pool questions in 3 folds (a sample of {cross['items']}" in \
        (tmp_path / "sample" / "comparison.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_folds_folder_with_a_fold_missing_is_refused_in_one_line(folds_run, tiny_model, tmp_path, capsys):
    out, _, _ = folds_run
    copy = tmp_path / "folds"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoint-*", "comparison"))
    shutil.rmtree(copy / "fold-1")
    code, _, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(copy), "--use_cpu"], capsys)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line == (f"error: --finetuned {copy}: a --folds folder with unfinished folds (fold-1 was never started); "
                    "run the same --folds command again to complete them, or name the finished fold-<n> folders")
    code, _, err = cli(["push", str(copy), "--repo_id", "me/x", "--dry_run"], capsys)
    assert code == 2 and "a --folds folder (fold-0, fold-2), not one model" in err


@pytest.mark.slow
def test_fold_runs_of_another_k_or_another_split_are_not_pooled(folds_run, tiny_model, tmp_path, capsys):
    """Folds dealt for another K, or with another split seed, hold other questions: pooled, some questions would
    count twice and others never. Each is one line before scoring."""
    out, _, args = folds_run
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed, ignore=shutil.ignore_patterns("checkpoint-*", "comparison"))
    record = json.loads((mixed / "fold-2" / "hf_ft_run.json").read_text())
    record["arguments"]["folds"] = 4
    (mixed / "fold-2" / "hf_ft_run.json").write_text(json.dumps(record))
    code, _, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(mixed), "--use_cpu"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"error: --finetuned {mixed}: its fold runs were trained with different --folds (fold-0: 3, fold-2: 4); "
        "compare the folds of one --folds run, or train the others again with the same --folds")
    # fold 1 trained alone with another split seed: the same K, but not the same pool's fold
    other = tmp_path / "other"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("checkpoint-*", "comparison", "fold-1"))
    alone = [a for a in args if a != str(out)]
    train_in_process([*alone[:alone.index("--output_dir") + 1], str(other / "fold-1"),
                      *alone[alone.index("--output_dir") + 1:], "--fold", "1", "--split_seed", "7", "--max_steps", "1",
                      "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"])
    code, _, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(other), "--use_cpu"], capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "these fold runs do not partition one training pool" in line, err[-2000:]
    assert not (other / "comparison" / "comparison.json").exists()


@pytest.mark.slow
def test_seeds_and_folds_together_run_every_fold_per_seed_and_give_the_spread(tmp_path, demo_data, tiny_model,
                                                                              capsys):
    out = tmp_path / "out"
    summary = train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--output_dir",
                                str(out), "--subjects", "music", *TRAIN_ARGS, "--max_steps", "3", "--eval_strategy",
                                "no", "--save_strategy", "no", "--load_best_model_at_end", "false", "--seeds", "1,2",
                                "--folds", "2"])
    per_seed = [json.loads((out / f"seed-{s}" / "folds_summary.json").read_text()) for s in (1, 2)]
    assert [r["out_of_fold_accuracy"] for r in summary["runs"]] == [f["out_of_fold"]["overall"]["accuracy"]
                                                                    for f in per_seed]
    assert summary["mean_out_of_fold_accuracy"] == pytest.approx(np.mean([r["out_of_fold_accuracy"]
                                                                          for r in summary["runs"]]))
    # the folds are the split's, not the seed's: both seeds hold out the same questions in fold 0
    assert (out / "seed-1" / "fold-0" / "fold_qa_data.json").read_text() == \
        (out / "seed-2" / "fold-0" / "fold_qa_data.json").read_text()
    card = (out / "seed-2" / "fold-1" / "README.md").read_text(encoding="utf-8")
    assert "Trained with 2 seeds" in card and "out-of-fold accuracy (--folds) mean" in card
    assert "## Cross-fitting" in card
    # evaluate compares one seed's folds at a time, and says so
    code, _, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(out), "--use_cpu"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"error: --finetuned {out}: a --seeds folder of --folds runs; compare one seed's folds at a time, e.g. "
        f"--finetuned {out / 'seed-1'}")


@pytest.mark.slow
def test_open_book_treats_the_fold_as_held_out(tmp_path):
    """A passage that copies a training-pool question with its answer may be read while that question is a
    training question; in the fold run that scores it, it is a held-out item, so the passage is dropped there."""
    import csv

    from hf_ft.demo import make_open_book_data, make_tiny_model

    root = tmp_path / "ob"
    data, corpus = make_open_book_data(root, rows_per_subject=60, seed=0)
    model = make_tiny_model(root / "model", [data, corpus], hidden_size=32, num_heads=2, intermediate_size=64)
    with open(next(data.glob("*_val.csv")), encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    with open(corpus / "facts.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "planted", "title": "copy", "text": row["question"] + row[row["answer"]]},
                           ensure_ascii=False) + "\n")
    out = tmp_path / "folds"
    train_in_process(["--model_name_or_path", str(model), "--data_dir", str(data), "--retrieval_corpus", str(corpus),
                      "--output_dir", str(out), "--use_cpu", "--max_steps", "2", "--eval_strategy", "no",
                      "--save_strategy", "no", "--load_best_model_at_end", "false", "--max_seq_length", "96",
                      "--folds", "2"])
    dropped, holds = {}, {}
    for k in (0, 1):
        manifest = json.loads((out / f"fold-{k}" / "data_manifest.json").read_text())
        dropped[k] = "planted#0" in manifest["retrieval"]["source"].get("dropped_ids", [])
        items = json.loads((out / f"fold-{k}" / "fold_qa_data.json").read_text())
        holds[k] = any(item["question"] == row["question"] for item in items)
        assert manifest["retrieval"]["gold_in_context"]["fold"] > 0.5  # the fold's questions read their facts
    assert sorted(holds.values()) == [False, True]
    assert dropped == holds  # dropped exactly where the copied question is held out


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["--folds", "--seeds"])
def test_each_run_of_a_loop_starts_with_the_last_one_freed(loop, tmp_path, demo_data, tiny_model):
    """A finished run's Trainer (model, optimizer states) sits in reference cycles; unless the loop frees it,
    it is still alive when the next run loads its model, and the next memory check counts it as in use."""
    import gc

    from hf_ft.training import run
    from hf_ft.training.folds import run_folds
    from hf_ft.training.seeds import run_seeds

    alive = []

    def counted(args):
        alive.append(sum(type(o).__name__ == "QATrainer" for o in gc.get_objects()))
        return run.main(args)

    args = parse_args(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--output_dir",
                       str(tmp_path / "out"), "--subjects", "music", "--use_cpu", "--max_steps", "2", "--eval_strategy",
                       "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                       *({"--folds": ["--folds", "3"], "--seeds": ["--seeds", "1,2,3"]}[loop])])
    gc.collect()  # what earlier tests in this process left
    (run_folds if loop == "--folds" else run_seeds)(args, counted)
    assert alive == [0, 0, 0]

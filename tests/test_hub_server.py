"""The path every user takes first, for real: ikala/tmmluplus and google-bert/bert-base-chinese downloaded
from a real hub server (olah, serving local git repos in the hub's layout on 127.0.0.1, offline)."""

import json
import subprocess

import pytest
import yaml
from conftest import python, run_cli

pytestmark = pytest.mark.slow

SCALE = 0.05  # TMMLU+'s per-subject sizes × 0.05: ~1,100 questions over 67 subjects


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from hub_fixtures import (
        LoopbackHub,
        write_dataset_repo,
        write_extra_repos,
        write_fixtures,
        write_model_repo,
        write_tceval_repo,
        write_wikipedia_repo,
    )

    root = tmp_path_factory.mktemp("hub")
    shas = write_fixtures(root / "mirrors", scale=SCALE, model_size="small")
    # The Traditional-script BERT, whose card says GPL-3.0: the fine-tuned card must say so too.
    write_model_repo(root / "mirrors", "small", repo_path="models/ckiplab/bert-base-chinese", license="gpl-3.0")
    # A second, smaller data set for "a subject the hub lacks".
    (root / "mini").mkdir()
    write_dataset_repo(root / "mini", scale=0.01)
    mini = root / "mirrors" / "datasets" / "hf-ft" / "tmmluplus-mini"
    mini.parent.mkdir(parents=True)
    (root / "mini" / "datasets" / "ikala" / "tmmluplus").rename(mini)
    subprocess.run(["git", "-C", str(mini), "rm", "-q", "data/physics_dev.csv", "data/physics_val.csv",
                    "data/physics_test.csv"], check=True)
    subprocess.run(["git", "-C", str(mini), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "no physics"],
                   check=True)
    # Retrieval corpora: Chinese Wikipedia's layout, and TCEval-v2 (TMMLU+ v1.0's test split, verbatim).
    wiki = write_wikipedia_repo(root / "mirrors")
    write_tceval_repo(root / "mirrors", ["music", "physics"])
    # Other exam sets in their real layouts, with planted copies of TMMLU+ rows (tests/hub_fixtures.py).
    extra = write_extra_repos(root / "mirrors")
    with LoopbackHub(root / "mirrors", root / "olah") as server:
        server.env = server.client_env(root / "hf_home")
        server.shas = shas["dataset"]
        server.wiki = wiki
        server.extra = extra
        server.work = root / "olah"
        yield server


def run(args, hub, timeout=900):
    return run_cli(args, env=hub.env, timeout=timeout)


def test_readme_train_command_with_hub_data_and_a_hub_model(hub, tmp_path):
    """`accelerate launch run_qa.py --model_name_or_path bert-base-chinese --subjects all` (limited to a few
    steps): the model id without its organisation and the pinned default revision, recorded as a commit."""
    out = tmp_path / "bert-tmmlu"
    result = run(python("-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no",
                        "--dynamo_backend", "no", "run_qa.py", "--model_name_or_path", "bert-base-chinese",
                        "--subjects", "all", "--output_dir", str(out), "--max_steps", "6",
                        "--per_device_train_batch_size", "4", "--max_seq_length", "128", "--eval_strategy", "no",
                        "--save_strategy", "no", "--load_best_model_at_end", "false"), hub)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "bert-base-chinese is google-bert/bert-base-chinese on the hub" in result.stdout + result.stderr
    manifest = json.loads((out / "data_manifest.json").read_text())
    assert manifest["source"]["kind"] == "hub" and manifest["source"]["requested_revision"] == "v1.1"
    assert manifest["revision"] == hub.shas["v1.1"]  # the default revision is pinned, and recorded as its commit
    assert len(manifest["subjects"]) == 66 and "linear_algebra" not in manifest["subjects"]
    counts = manifest["counts"]
    assert counts["train"] + counts["validation"] + counts["test"] + manifest["duplicates_removed"] \
        == hub.shas["rows_v1_1"] - _linear_algebra_rows(hub)  # every row of the 66 subjects at v1.1
    card, meta = pushed_card(out)
    assert meta["datasets"] == ["ikala/tmmluplus"] and meta["base_model"] == "google-bert/bert-base-chinese"
    assert meta["license"] == "apache-2.0"  # from the base model's own card, read at its commit
    record = json.loads((out / "hf_ft_run.json").read_text())
    assert record["base_model"]["revision"] and record["base_model"]["revision"] in card
    index = meta["model-index"][0]["results"][0]
    assert index["dataset"]["type"] == "ikala/tmmluplus" and index["dataset"]["revision"] == hub.shas["v1.1"]
    assert index["dataset"]["name"] == "TMMLU+ v1.1" and index["dataset"]["split"] == "test"
    assert index["dataset"]["args"] == {"subjects": "all official"}
    results = json.loads((out / "eval_results.json").read_text())
    metrics = {m["name"]: m["value"] for m in index["metrics"]}
    assert metrics["Accuracy (micro)"] == pytest.approx(results["test_accuracy"], abs=1e-4)
    assert metrics["Accuracy (macro over subjects)"] == pytest.approx(results["test_accuracy_macro"], abs=1e-4)
    assert "fine-tuned on TMMLU+" in card and hub.shas["v1.1"] in card
    hub.trained = out


def pushed_card(out, repo_id="me/bert-tmmlu"):
    """The card a push to `repo_id` would send (built from the run's records; nothing is written)."""
    from hf_ft.publish.model_card import build_model_card

    card = str(build_model_card(out, repo_id))
    return card, yaml.safe_load(card.split("---")[1])


def train_small(hub, out, *extra):
    result = run(python("run_qa.py", "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size",
                        "4", "--max_seq_length", "128", "--eval_strategy", "no", "--save_strategy", "no",
                        "--load_best_model_at_end", "false", *extra), hub)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("case", ["subset", "resplit", "ckiplab"])
def test_card_claims_exactly_what_the_run_recorded(hub, tmp_path, case):
    """A subject subset is named as one; a re-split claims no official test split; the Traditional-script
    BERT's GPL-3.0 is the card's licence, and its hub id (at its commit) the base model."""
    out = tmp_path / case
    model = "ckiplab/bert-base-chinese" if case == "ckiplab" else "bert-base-chinese"
    subjects = "music,physics,geography_of_taiwan" if case != "ckiplab" else "all"
    train_small(hub, out, "--model_name_or_path", model, "--subjects", subjects,
                *(["--split_scheme", "resplit"] if case == "resplit" else []))
    card, meta = pushed_card(out)
    dataset = meta["model-index"][0]["results"][0]["dataset"]
    run_record = json.loads((out / "hf_ft_run.json").read_text())
    if case == "ckiplab":
        assert meta["license"] == "gpl-3.0" and meta["base_model"] == "ckiplab/bert-base-chinese"
        assert "from ckiplab/bert-base-chinese's card" in card
        assert run_record["base_model"]["license"] == "gpl-3.0"
        assert dataset["name"] == "TMMLU+ v1.1"
    else:
        assert dataset["name"].startswith("TMMLU+ v1.1, 3 of 66 subjects")
        assert dataset["args"] == {"subjects": "geography_of_taiwan,music,physics"} or \
            sorted(dataset["args"]["subjects"].split(",")) == ["geography_of_taiwan", "music", "physics"]
    if case == "resplit":
        assert "split" not in dataset and "not the official test split" in dataset["name"]
    else:
        assert dataset["split"] == "test"


def _linear_algebra_rows(hub) -> int:
    """Rows of the one subject with files but no config, which `all` leaves out."""
    script = ("import json; from hf_ft.data.sources import load_hub; d = load_hub('linear_algebra', 'v1.1'); "
              "print(json.dumps(sum(len(v) for v in d.pools.values())))")
    result = run_cli(python("-c", script), env=hub.env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_revisions_give_their_own_rows_and_commits(hub):
    script = """
import json
from hf_ft.data.sources import load_hub
out = {}
for revision in ("v1.0", "v1.1"):
    data = load_hub("all", revision)
    out[revision] = {"rows": sum(len(v) for v in data.pools.values()), "sha": data.source["revision"]}
algebra = load_hub("linear_algebra", "v1.0")
out["linear_algebra"] = {"subjects": algebra.subjects, "test": len(algebra.pools["test"])}
print(json.dumps(out))
"""
    result = run_cli(python("-c", script), env=hub.env)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["v1.0"]["sha"] == hub.shas["v1.0"] and found["v1.1"]["sha"] == hub.shas["v1.1"]
    assert found["v1.0"]["rows"] > found["v1.1"]["rows"]  # v1.1 removed questions
    assert found["linear_algebra"]["subjects"] == ["linear_algebra"] and found["linear_algebra"]["test"] > 0


def test_hub_errors_are_one_line(hub, tmp_path):
    common = ["--output_dir", str(tmp_path / "o"), "--model_name_or_path", "bert-base-chinese", "--max_steps", "1"]
    lacking = run(python("run_qa.py", *common, "--dataset_name", "hf-ft/tmmluplus-mini", "--dataset_revision",
                         "main", "--subjects", "physics,music"), hub)
    assert lacking.returncode == 2 and "no data for subject(s) physics" in lacking.stderr
    bad_revision = run(python("run_qa.py", *common, "--dataset_revision", "v9.9"), hub)
    assert bad_revision.returncode == 2 and "ikala/tmmluplus (revision v9.9)" in bad_revision.stderr
    down = run_cli(python("run_qa.py", *common), env={**hub.env, "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert down.returncode == 2
    line = down.stderr.strip().splitlines()[-1]
    assert "cannot reach the hub at http://127.0.0.1:9" in line and "--data_dir" in line
    for result in (lacking, bad_revision, down):
        assert "Traceback" not in result.stderr


def test_evaluate_and_predict_with_hub_ids(hub, tmp_path):
    if not hasattr(hub, "trained"):
        pytest.skip("needs the trained run of test_readme_train_command_with_hub_data_and_a_hub_model")
    result = run(python("-m", "hf_ft.evaluate", "--original", "bert-base-chinese", "--finetuned", str(hub.trained),
                        "--max_items", "60", "--output_dir", str(tmp_path / "c")), hub)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert report["original"]["scorer"] == "mlm-pll" and report["items"] == 60
    assert report["sample"]["population"] > 60 and "forward passes" in result.stderr
    predicted = run(python("-m", "hf_ft.cli", "predict", "google-bert/bert-base-chinese", "--question",
                           "下列何者為哺乳類？", "--choices", "鯨魚", "鯊魚"), hub)
    assert predicted.returncode == 0 and "mlm-pll" in predicted.stdout, predicted.stderr[-2000:]


def test_open_book_from_a_hub_corpus_at_its_commit(hub, tmp_path):
    """Chinese Wikipedia's layout (Simplified script) through the hub: its commit is recorded, every item gets
    passages, and evaluate and predict retrieve from the same index."""
    out = tmp_path / "wiki"
    train_small(hub, out, "--model_name_or_path", "bert-base-chinese",
                "--retrieval_corpus", "wikimedia/wikipedia", "--retrieval_corpus_config", "20231101.zh",
                "--retrieval_k", "2")
    retrieval = json.loads((out / "data_manifest.json").read_text())["retrieval"]
    assert retrieval["source"]["kind"] == "hub" and retrieval["source"]["revision"] == hub.wiki
    assert retrieval["source"]["dataset"] == "wikimedia/wikipedia" and retrieval["source"]["config"] == "20231101.zh"
    assert json.loads((out / "hf_ft_run.json").read_text())["retrieval"]["source"]["revision"] == hub.wiki
    contexts = [json.loads(line) for line in (out / "retrieved_contexts.jsonl").read_text().splitlines()]
    assert {c["split"] for c in contexts} == {"train", "validation", "test"}
    # every item gets its 2 passages, except where the two together hold a held-out item (the fixture's corpus is
    # made from the items' own facts): those contexts are removed, and the manifest says so
    removed = [c for c in contexts if c.get("removed_by_leak_check")]
    assert all(len(c["passages"]) == 2 for c in contexts if c not in removed)
    assert retrieval["context_leak_check"]["contexts_removed"] == len(removed) < len(contexts) // 10
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "wikimedia/wikipedia" in card and hub.wiki[:12] in card
    result = run(python("-m", "hf_ft.predict", str(out), "--question", "下列何者正確？", "--choices", "甲", "乙",
                        "丙", "丁", "--json"), hub)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["context_passages"]


def test_the_leak_check_fires_on_tceval(hub, tmp_path):
    """TCEval-v2 holds TMMLU+ v1.0's test split: as a retrieval corpus it is reading the answer key. The leak
    check finds the copies (v1.1 questions against v1.0 text) and drops them, or stops before training."""
    common = ["--model_name_or_path", "bert-base-chinese",
              "--retrieval_corpus", "MediaTek-Research/TCEval-v2", "--retrieval_corpus_config", "tmmluplus-music",
              "--retrieval_text_column", "question"]
    out = tmp_path / "dropped"
    train_small(hub, out, *common, "--retrieval_corpus_split", "test+dev")  # dev: training rows, no leak
    leak = json.loads((out / "data_manifest.json").read_text())["retrieval"]["leak_check"]
    music = [i for i in json.loads((out / "test_qa_data.json").read_text()) if i["subject"] == "music"]
    assert leak["items_with_a_copy_in_the_corpus"] >= len(music) > 0  # every music test item has its v1.0 copy
    assert leak["passages_dropped"] == leak["passages_leaking"] > 0 and leak["examples"]
    # at v1.0 every one of TCEval's music test rows is a test item: nothing is left to retrieve from
    for split, policy, revision, message in (("test+dev", "error", "v1.1", "--leak_policy drop"),
                                             ("test", "drop", "v1.0", "nothing is left to retrieve from")):
        stopped = run(python("run_qa.py", "--output_dir", str(tmp_path / policy), "--max_steps", "1", *common,
                             "--retrieval_corpus_split", split, "--leak_policy", policy, "--dataset_revision",
                             revision), hub)
        assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
        line = stopped.stderr.strip().splitlines()[-1]
        assert "cop" in line and "validation or test item" in line.replace("/", " or ") and message in line, line
        assert not (tmp_path / policy / "checkpoint-1").exists()


EXTRA_SOURCES = ["ceval/ceval-exam", "haonan-li/cmmlu", "dataset-org/c3", "clue/clue?configs=c3",
                 "hails/agieval-gaokao-history"]


def test_extra_sources_from_the_hub_are_converted_checked_and_on_the_card(hub, tmp_path):
    """C-Eval (Parquet configs), CMMLU (a loading script and its zip), C3 (nested, 2-4 options, passages), CLUE's
    c3 and an AGIEval task, each at its resolved commit: converted to Traditional script, the planted copies of
    TMMLU+ rows dropped (an exact one, a reworded one, and one only v1.0 has), and the pushed card says every
    source, its licence, and that the model is for non-commercial use."""
    from fake_hub import GOOD_TOKEN, FakeHub

    from hf_ft.retrieval.text import to_simplified

    out = tmp_path / "extra"
    train_small(hub, out, "--model_name_or_path", "bert-base-chinese", "--extra_data", *EXTRA_SOURCES)
    manifest = json.loads((out / "data_manifest.json").read_text())
    extra = manifest["extra_data"]
    assert {r: v["commit"] for r, v in extra["reference"]["revisions"].items()} == \
        {"v1.0": hub.shas["v1.0"], "v1.1": hub.shas["v1.1"]}  # all of TMMLU+ at both versions, not the run's rows
    by = {s["name"]: s for s in extra["sources"]}
    assert {name: by[name]["revision"] for name in ("ceval-exam", "cmmlu", "c3", "clue")} == {
        "ceval-exam": hub.extra["ceval"], "cmmlu": hub.extra["cmmlu"], "c3": hub.extra["c3"], "clue": hub.extra["clue"]}
    assert all(s["conversion"] == {"applied": "s2twp", "script_detected": "simplified"} for s in by.values())
    ceval = by["ceval-exam"]
    assert ceval["configs"] == ["accountant", "law"] and ceval["splits"] == ["dev", "val"]  # marxism, test: out
    assert ceval["license"] == "cc-by-nc-sa-4.0" and ceval["counts"]["read"] == 34
    assert (ceval["counts"]["exact_copies"], ceval["counts"]["near_copies"], ceval["counts"]["used"]) == (1, 0, 33)
    example = ceval["examples"][0]  # the copy was in Simplified script; the check compared it across scripts
    assert example["original"] != example["question"] and to_simplified(example["question"]) == example["original"]
    assert example["copies"].startswith("ikala/tmmluplus@v1.0:data/")
    cmmlu = by["cmmlu"]
    assert cmmlu["loading_script"] == "cmmlu.py" and cmmlu["data_file"] == "cmmlu_v1_0_1.zip"
    assert cmmlu["counts"]["read"] == 19 and cmmlu["counts"]["exact_copies"] == 1  # chinese_driving_rule: out
    assert cmmlu["license"] == "cc-by-nc-4.0"
    c3 = by["c3"]
    assert c3["counts"]["near_copies"] == 1 and set(c3["options"]) == {"2", "3", "4"}
    assert c3["splits"] == ["train", "validation"] and by["clue"]["splits"] == ["train", "validation"]
    assert by["agieval-gaokao-history"]["counts"]["multiple_answers_dropped"] == 1
    assert manifest["counts"]["train"] >= sum(s["counts"]["used"] for s in by.values())
    record = json.loads((out / "hf_ft_run.json").read_text())
    assert [s["name"] for s in record["extra_data"]] == list(by)
    with FakeHub() as server:
        pushed = run_cli(python("-m", "hf_ft.cli", "push", str(out), "--repo_id", "me/extra"), env={
            "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "push_home"), "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": GOOD_TOKEN})
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    card = server.commits[0]["files"]["README.md"].decode("utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "other" and set(meta["datasets"]) == {
        "ikala/tmmluplus", "ceval/ceval-exam", "haonan-li/cmmlu", "dataset-org/c3", "clue/clue",
        "hails/agieval-gaokao-history"}
    assert "ceval/ceval-exam (cc-by-nc-sa-4.0), haonan-li/cmmlu (cc-by-nc-4.0) allow non-commercial use only" in card
    for name, source in by.items():
        assert f"extra training data: {name}" in card and source["revision"][:12] in card
    assert "1 copies of TMMLU+ questions (1 exact, 0 near) dropped; 33 used for training only" in card


def test_sources_holding_tmmluplus_are_refused_and_a_gone_one_is_one_line(hub, tmp_path):
    common = ["run_qa.py", "--output_dir", str(tmp_path / "o"), "--model_name_or_path", "bert-base-chinese",
              "--max_steps", "1", "--subjects", "music,physics"]
    tceval = run(python(*common, "--extra_data", "MediaTek-Research/TCEval-v2?configs=tmmluplus-music"), hub)
    assert tceval.returncode == 2 and "Traceback" not in tceval.stderr
    assert "TMMLU+ v1.0's test and dev splits verbatim" in tceval.stderr.strip().splitlines()[-1]
    log = hub.work / "olah.log"
    before = log.read_text().count("miulab/tmlu")
    gone = run(python(*common, "--extra_data", "miulab/tmlu?adapter=columns"), hub)  # 401 since 2026-08
    assert gone.returncode == 2 and "Traceback" not in gone.stderr, gone.stderr[-2000:]
    line = gone.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --extra_data miulab/tmlu (revision main): not found on ") and "private" in line
    assert log.read_text().count("miulab/tmlu") - before == 1  # asked once: no retries
    assert not (tmp_path / "o" / "model.safetensors").exists()
    # CMMLU's fixture is faithful: datasets >= 4 refuses its loading script, which is why hf_ft reads the zip
    script = run(python("-c", "import datasets; datasets.load_dataset('haonan-li/cmmlu', 'agronomy')"), hub)
    assert script.returncode != 0 and "scripts are no longer supported" in script.stderr, script.stderr[-1500:]

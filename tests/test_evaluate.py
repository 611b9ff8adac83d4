"""Original vs fine-tuned: scorers, statistics, the held-out check, reports, the judge, --formulation mlm."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import TRAIN_ARGS, cli, python, run_cli, train_in_process

from hf_ft.core.errors import UserError
from hf_ft.evaluation.evaluate import EvaluateArguments, run
from hf_ft.evaluation.stats import mcnemar_exact, paired_bootstrap_ci, paired_comparison


@pytest.fixture(scope="module")
def comparison(trained_run, tiny_model, tmp_path_factory):
    """The command line users run, in a subprocess once (the other tests call the module in-process)."""
    out, _ = trained_run
    report_dir = tmp_path_factory.mktemp("compare")
    result = run_cli(python("-m", "hf_ft.cli", "evaluate", "--original", str(tiny_model), "--finetuned", str(out),
                            "--output_dir", str(report_dir), "--use_cpu"))
    assert result.returncode == 0, result.stderr[-3000:]
    return report_dir, result


def test_finetuned_beats_original_with_honest_statistics(comparison):
    report_dir, result = comparison
    report = json.loads((report_dir / "comparison.json").read_text())
    overall = report["paired"]["overall"]
    assert report["original"]["scorer"] == "mlm-pll" and report["finetuned"]["scorer"] == "head (per_choice)"
    assert 0.1 < report["original"]["accuracy"] < 0.4  # a random masked LM is near chance, not a random head
    assert overall["difference"] > 0.15 and overall["difference_ci95"][0] > 0
    assert overall["mcnemar"]["p_value"] < 1e-3
    assert report["held_out"]["verified"] and report["held_out"]["overlap_removed"] == 0
    assert set(report["paired"]["per_category"]) == {"STEM", "humanities", "social_sciences", "other"}
    assert sum(report["original"]["predicted_letters"].values()) == report["items"] == sum(report["gold_letters"].values())
    assert "tmmlu_average" in report["finetuned"] and len(report["per_subject"]) == 8
    assert "overall" in result.stdout and "mlm-pll" in result.stdout  # the terminal table


def test_report_files_exist_and_parse(comparison):
    report_dir, _ = comparison
    report = json.loads((report_dir / "comparison.json").read_text())
    predictions = [json.loads(line) for line in (report_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == report["items"]
    assert set(predictions[0]) == {"id", "subject", "gold", "original", "finetuned", "original_scores",
                                   "finetuned_scores", "forms"}
    assert all(p["finetuned"] == "ABCD"[int(np.argmax(p["finetuned_scores"]))] for p in predictions)
    markdown = (report_dir / "comparison.md").read_text()
    assert "McNemar" in markdown and "| music |" in markdown and "Predicted letters" in markdown
    assert (report_dir / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_mcnemar_and_bootstrap_on_a_hand_computed_case():
    # 20 items: 5 both right, 9 only fine-tuned right, 1 only original right, 5 both wrong.
    original = np.array([1] * 5 + [0] * 9 + [1] + [0] * 5, dtype=bool)
    finetuned = np.array([1] * 5 + [1] * 9 + [0] + [0] * 5, dtype=bool)
    test = mcnemar_exact(original, finetuned)
    assert (test["only_original_correct"], test["only_finetuned_correct"]) == (1, 9)
    assert test["p_value"] == pytest.approx(2 * (1 + 10) / 2 ** 10)  # 2·P(X ≤ 1), X ~ Bin(10, ½)
    low, high = paired_bootstrap_ci(original, finetuned)
    d = finetuned.astype(float) - original.astype(float)  # difference 0.4, se = sqrt(var(d)/n)
    se = np.sqrt(d.var() / len(d))
    assert low == pytest.approx(0.4 - 1.96 * se, abs=0.03) and high == pytest.approx(0.4 + 1.96 * se, abs=0.03)
    same = paired_comparison(original, original)
    assert same["difference_ci95"] == [0.0, 0.0] and same["mcnemar"]["p_value"] == 1.0


def test_masked_lm_scoring_is_identical_on_repeat(tiny_model, trained_run):
    from hf_ft.data.files import load_items
    from hf_ft.evaluation.scoring import load_scorer

    rows = load_items(trained_run[0] / "test_qa_data.json")[:40]
    scorer = load_scorer(str(tiny_model), use_cpu=True)
    assert scorer.name == "mlm-pll"
    first = scorer.score(rows, batch_size=7, progress=False)
    second = load_scorer(str(tiny_model), use_cpu=True).score(rows, batch_size=7, progress=False)
    np.testing.assert_array_equal(first, second)
    other_batching = scorer.score(rows, batch_size=16, progress=False)  # other padding: float rounding only
    np.testing.assert_allclose(first, other_batching, rtol=1e-5)
    assert first.shape == (40, 4) and np.all(first < 0)


def test_overlap_with_training_data_is_refused_or_removed(trained_run, tiny_model, demo_data, tmp_path, capsys):
    from hf_ft.data.rows import content_hash
    from hf_ft.data.sources import load_data_dir

    out, _ = trained_run
    manifest = json.loads((out / "data_manifest.json").read_text())
    train_hashes = set(manifest["content_hashes"]["train"])
    leaked = next(r for r in load_data_dir(str(demo_data)).pools["val"] if r.content_hash in train_hashes)
    items = json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))[:20]
    items.append({**leaked.to_item(), "id": "leaked-1"})
    assert content_hash(leaked.question, leaked.options) in train_hashes
    test_file = tmp_path / "with_leak.json"
    test_file.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    args = dict(original=str(tiny_model), finetuned=str(out), test_file=str(test_file),
                output_dir=str(tmp_path / "cmp"), use_cpu=True)
    code, _, err = cli(["evaluate", *[x for k, v in args.items() for x in
                                      ((f"--{k}",) if v is True else (f"--{k}", v))]], capsys)
    assert code == 2
    assert "1 of 21 items were in the fine-tuning data (leaked-1)" in err
    assert "Traceback" not in err
    report = run(EvaluateArguments(**args, allow_overlap=True))
    assert report["items"] == 20 and report["held_out"]["overlap_ids"] == ["leaked-1"]


@pytest.mark.parametrize("case", ["missing_file", "malformed_file", "missing_model", "headless_model",
                                  "unreachable_judge", "output_dir_is_a_file"])
def test_bad_input_gives_one_clear_error(case, trained_run, tiny_model, tmp_path, capsys):
    out, _ = trained_run
    args = ["--original", str(tiny_model), "--finetuned", str(out), "--output_dir", str(tmp_path / "c"), "--use_cpu"]
    expected = {
        "missing_file": "nope.json: file not found",
        "malformed_file": "bad.csv: missing column(s) answer",
        "missing_model": "does/not/exist: no such folder (and, being a path, not a hub id)",
        "headless_model": "cannot score multiple choice",
        "unreachable_judge": "judge http://127.0.0.1:9/v1/chat/completions: unreachable",
        "output_dir_is_a_file": "is a file, not a folder",
    }[case]
    if case == "missing_file":
        args += ["--test_file", str(tmp_path / "nope.json")]
    elif case == "malformed_file":
        (tmp_path / "bad.csv").write_text("question,A,B,C,D\nq,a,b,c,d\n", encoding="utf-8")
        args += ["--test_file", str(tmp_path / "bad.csv")]
    elif case == "missing_model":
        args[1] = "./does/not/exist"
        expected = "--original ./" + expected
    elif case == "headless_model":
        from transformers import BertConfig, BertModel

        BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                             intermediate_size=16)).save_pretrained(tmp_path / "headless")
        args[1] = str(tmp_path / "headless")
    elif case == "output_dir_is_a_file":  # refused before any model is scored
        (tmp_path / "c").write_text("a file", encoding="utf-8")
    else:
        args += ["--judge", "http://127.0.0.1:9/v1", "--judge_max_items", "3"]
    if case == "unreachable_judge":  # InferenceClient is silent while HF_HUB_OFFLINE=1, so a fresh process
        result = run_cli(python("-m", "hf_ft.evaluate", *args), env={"HF_HUB_OFFLINE": "0"})
        code, err = result.returncode, result.stderr
    else:
        code, _, err = cli(["evaluate", *args], capsys)
    assert code == 2, err[-2000:]
    assert expected in err and "Traceback" not in err


class ChatServer(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible chat-completions server: it prefers the answer equal to the reference,
    and replies nonsense to one question so the unparseable path is exercised."""

    requests: list = []
    nonsense_question: str = ""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        prompt = body["messages"][-1]["content"]
        reference = re.search(r"Reference answer: (.*)", prompt).group(1)
        first = re.search(r"Answer 1: (.*)", prompt).group(1)
        second = re.search(r"Answer 2: (.*)", prompt).group(1)
        if self.nonsense_question and self.nonsense_question in prompt:
            content = "I would rather not say."
        else:
            s1, s2 = (9 if first == reference else 2), (9 if second == reference else 2)
            winner = "tie" if s1 == s2 else ("1" if s1 > s2 else "2")
            content = f'Here is my verdict: {{"score_1": {s1}, "score_2": {s2}, "winner": "{winner}"}}'
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


def test_remote_judge_over_real_http(trained_run, tiny_model, tmp_path):
    """The judge speaks OpenAI-compatible chat through huggingface_hub's InferenceClient, to a real server on
    127.0.0.1 (in a subprocess: InferenceClient sends nothing while HF_HUB_OFFLINE=1, which the suite sets)."""
    out, _ = trained_run
    items = json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))
    ChatServer.requests = []
    questions = [i["question"] for i in items[:30]]
    ChatServer.nonsense_question = next(q for q in questions if questions.count(q) == 1 and
                                        not any(q in other for other in questions if other != q))
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_cli(python("-m", "hf_ft.evaluate", "--original", str(tiny_model), "--finetuned", str(out),
                                "--output_dir", str(tmp_path), "--use_cpu", "--judge",
                                f"http://127.0.0.1:{server.server_port}/v1", "--judge_model", "Qwen2.5-3B-Instruct",
                                "--judge_max_items", "30"),
                         env={"HF_FT_JUDGE_API_KEY": "sk-test-123", "HF_HUB_OFFLINE": "0"})
        offline = run_cli(python("-m", "hf_ft.evaluate", "--original", str(tiny_model), "--finetuned", str(out),
                                 "--output_dir", str(tmp_path / "offline"), "--use_cpu", "--judge",
                                 f"http://127.0.0.1:{server.server_port}/v1"), env={"HF_HUB_OFFLINE": "1"})
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    judge = json.loads((tmp_path / "comparison.json").read_text())["judge"]
    assert len(ChatServer.requests) == judge["requests"] == 60  # both orders for 30 items
    assert all(r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer sk-test-123" for r in ChatServer.requests)
    assert all(r["body"]["model"] == "Qwen2.5-3B-Instruct" for r in ChatServer.requests)
    assert judge["unparseable_replies"] == 2 and judge["undecided"] == 1
    assert judge["order_agreement"] == 1.0  # a reference-matching judge has no position bias
    assert judge["exact_match_items_compared"] > 0 and judge["agreement_with_exact_match"] == 1.0
    assert judge["finetuned_wins"] + judge["ties"] + judge["original_wins"] + judge["undecided"] == 30
    assert "sk-test-123" not in (tmp_path / "comparison.json").read_text()
    assert "LLM judge" in (tmp_path / "comparison.md").read_text()
    assert offline.returncode == 2 and "HF_HUB_OFFLINE=1 is set" in offline.stderr
    assert len(offline.stderr.strip().splitlines()) == 1 or "Traceback" not in offline.stderr


def test_local_judge_with_a_tiny_causal_lm(trained_run, tiny_model, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    judge_dir = tmp_path / "judge"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=1024)
                    ).save_pretrained(judge_dir)
    tokenizer.save_pretrained(judge_dir)
    out, _ = trained_run
    # A random LM says nothing parseable: a judge that fails on most items is an error, not a report.
    with pytest.raises(UserError, match=r"judge .*: 10 of 10 replies could not be parsed"):
        run(EvaluateArguments(original=str(tiny_model), finetuned=str(out), output_dir=str(tmp_path / "c"),
                              use_cpu=True, judge_model=str(judge_dir), judge_max_items=5))
    assert len((tmp_path / "c" / "judge.jsonl").read_text().splitlines()) == 5  # its replies, to look at
    assert not (tmp_path / "c" / "comparison.json").exists()
    # A masked LM as the judge is refused before any model is scored.
    with pytest.raises(UserError, match=r"--judge_model .*: a BertForMaskedLM, not a causal LM"):
        run(EvaluateArguments(original=str(tiny_model), finetuned=str(out), output_dir=str(tmp_path / "d"),
                              use_cpu=True, judge_model=str(tiny_model)))
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_task_mlm_adapts_and_is_compared_with_the_mlm_scorer(demo_data, tiny_model, tmp_path):
    out = tmp_path / "mlm"
    metrics = train_in_process(["--formulation", "mlm", "--model_name_or_path", str(tiny_model), "--data_dir",
                                str(demo_data), "--output_dir", str(out), *TRAIN_ARGS, "--num_train_epochs", "4"])
    history = json.loads((out / "loss_history.json").read_text())
    losses = [p["value"] for p in history["eval_loss"]]
    assert losses[-1] < losses[0] - 0.3
    assert history["train_loss"][-1]["value"] < history["train_loss"][0]["value"]
    assert (out / "test_qa_data.json").is_file() and (out / "validation_loss_curve.png").is_file()
    assert "eval_loss" in metrics
    report = run(EvaluateArguments(original=str(tiny_model), finetuned=str(out), output_dir=str(tmp_path / "c"),
                                   use_cpu=True))
    assert report["original"]["scorer"] == report["finetuned"]["scorer"] == "mlm-pll"
    assert report["paired"]["overall"]["difference_ci95"][0] > 0


def test_a_model_asked_to_do_what_it_cannot_is_refused_before_scoring(trained_run, tiny_model, tmp_path):
    """The masked-LM scorer on a multiple-choice checkpoint (its MLM head would be freshly initialised), and
    an audit whose recorded training data is gone (its choices-only baseline cannot be trained): each is one
    line that names what to do, before any item is scored."""
    import shutil

    from hf_ft.evaluation.scoring import load_scorer

    out, _ = trained_run
    with pytest.raises(UserError, match=r"--scorer mlm-pll: .* is a multiple-choice model \(per_choice.*use --scorer "
                                        r"head \(or auto\)"):
        load_scorer(str(out), scorer="mlm-pll", use_cpu=True)
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoint-*", "comparison"))
    record = json.loads((copy / "hf_ft_run.json").read_text())
    record["arguments"]["data_dir"] = str(tmp_path / "moved-away")
    (copy / "hf_ft_run.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"--audit: the choices-only baseline repeats the training of .*, whose "
                                        r"--data_dir .*moved-away is gone; .* --no_audit_choices_only"):
        run(EvaluateArguments(original=str(tiny_model), finetuned=str(copy), output_dir=str(tmp_path / "c"),
                              use_cpu=True, audit=True))
    assert not (tmp_path / "c" / "comparison.json").exists()

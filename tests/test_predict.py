"""hf-ft predict on the demo model: single, batch, interactive, fill-mask, and bad input."""

import csv
import io
import json

import pytest
import torch
from conftest import cli, python, run_cli

from hf_ft.evaluation.predict import interactive, make_question, parse_options_line, rank
from hf_ft.evaluation.scoring import load_scorer


@pytest.fixture(scope="module")
def scorer(trained_run):
    return load_scorer(str(trained_run[0]), use_cpu=True)


def test_ranking_matches_the_models_own_argmax(scorer, trained_run):
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    items = json.loads((trained_run[0] / "test_qa_data.json").read_text(encoding="utf-8"))[:25]
    model = AutoModelForMultipleChoice.from_pretrained(trained_run[0]).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_run[0])
    for item in items:
        options = list(item["options"].values())
        result = rank(scorer, [make_question(item["question"], options)])[0]
        enc = tokenizer([item["question"]] * 4, options, return_tensors="pt", padding=True)
        with torch.no_grad():
            probs = model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits.softmax(-1)[0]
        assert result["prediction"] == "ABCD"[int(probs.argmax())]
        assert [r["letter"] for r in result["ranking"]] == ["ABCD"[i] for i in probs.argsort(descending=True)]
        assert result["ranking"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert sum(r["probability"] for r in result["ranking"]) == pytest.approx(1.0, abs=1e-5)


def test_single_and_batch_modes_agree(trained_run, tmp_path, capsys):
    out = trained_run[0]
    items = json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))[:6]
    path = tmp_path / "questions.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "A", "B", "C", "D", "answer"])
        for item in items:
            w.writerow([item["question"], *item["options"].values(), item["answer"]])
    code, stdout, err = cli(["predict", str(out), "--input", str(path), "--output", str(tmp_path / "p.jsonl"),
                             "--use_cpu"], capsys)
    assert code == 0, err[-2000:]
    assert "accuracy" in stdout and "6 questions" in stdout
    batch = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(batch) == 6 and all("correct" in b for b in batch)
    for item, predicted in zip(items, batch):
        single = run_cli(python("-m", "hf_ft.cli", "predict", str(out), "--question", item["question"],
                                "--choices", *item["options"].values(), "--json", "--use_cpu"))
        assert single.returncode == 0, single.stderr[-2000:]
        assert json.loads(single.stdout.strip().splitlines()[-1])["prediction"] == predicted["prediction"]
        break  # one subprocess is enough to show the command line; the rest in-process below
    scorer = load_scorer(str(out), use_cpu=True)
    for item, predicted in zip(items, batch):
        assert rank(scorer, [make_question(item["question"], list(item["options"].values()))])[0]["prediction"] \
            == predicted["prediction"]


def test_batch_without_answers(trained_run, tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "下列何者屬於「樂器」？", "A": "二胡", "B": "老虎", "C": "芒果", "D": "氫"},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    code, stdout, err = cli(["predict", str(trained_run[0]), "--input", str(path), "--use_cpu"], capsys)
    assert code == 0, err[-2000:]
    assert "accuracy" not in stdout
    line = json.loads((tmp_path / "q.predictions.jsonl").read_text(encoding="utf-8"))
    assert line["prediction"] in "ABCD" and "correct" not in line


def test_interactive_through_stdin_with_spaces_and_ctrl_d(trained_run, capsys, monkeypatch):
    session = ("下列何者屬於「樂器」？\n"
               "A: 大 提琴 B: 老虎 C: 芒果 D: 氫\n"          # one line, an option with a space
               "下列何者屬於「水果」？\n"
               "芒果\n臺北\n\n")                            # one per line, then Ctrl-D (end of input)
    monkeypatch.setattr("sys.stdin", io.StringIO(session))
    code, stdout, err = cli(["predict", str(trained_run[0]), "--interactive", "--use_cpu"], capsys)
    assert code == 0, err[-2000:]
    assert stdout.count("answer: ") == 2
    assert "大 提琴" in stdout and "臺北" in stdout and "bye" in stdout


def test_interactive_quit_and_bad_options(scorer):
    answers = iter(["問題", "只有一個", "", "quit"])
    printed = []
    interactive(scorer, read=lambda prompt: next(answers), write=printed.append)
    assert any("need at least 2 options" in p for p in printed) and printed[-1].strip() == "bye"


def test_parse_options_line():
    assert parse_options_line("A: 鯨魚 B: 大 白鯊 C:章魚 D： 海星") == ["鯨魚", "大 白鯊", "章魚", "海星"]
    assert parse_options_line("鯨魚") is None and parse_options_line("B: x C: y") is None


def test_fill_mask_and_masked_lm_choices(tiny_model, capsys):
    code, stdout, err = cli(["predict", str(tiny_model), "--fill", "今天天氣很[MASK]。", "--top_k", "3", "--use_cpu"],
                            capsys)
    assert code == 0, err[-2000:]
    assert stdout.startswith("[MASK] 1:") and stdout.count("%") == 3
    code, stdout, _ = cli(["predict", str(tiny_model), "--question", "下列何者為樂器？", "--choices", "二胡", "老虎",
                           "--use_cpu"], capsys)
    assert code == 0 and "mlm-pll" in stdout


@pytest.mark.parametrize("args,expected", [
    (["--question", "問題", "--choices", "一個"], "need at least 2 options, got 1"),
    (["--question", " ", "--choices", "a", "b"], "the question is empty"),
    (["--question", "\u200b", "--choices", "a", "b"], "the question is empty"),
    (["--question", "問題", "--choices", "鯨魚", "海星", "鯨魚"], "--choices: options A and C are the same text"),
    (["--question", "問題", "--choices", "鯨魚", "\ufeff"], "--choices: empty option B"),
    (["--fill", "沒有遮罩"], "needs a masked-LM model"),
])
def test_bad_input(trained_run, args, expected, capsys):
    code, _, err = cli(["predict", str(trained_run[0]), *args, "--use_cpu"], capsys)
    assert code == 2 and expected in err and "Traceback" not in err


def test_model_that_can_do_neither(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=16)).save_pretrained(tmp_path / "m")
    code, _, err = cli(["predict", str(tmp_path / "m"), "--question", "q", "--choices", "a", "b"], capsys)
    assert code == 2 and "cannot score multiple choice" in err


def test_outputs_never_overwrite_inputs_and_are_always_written(trained_run, tmp_path, capsys):
    """--output equal to --input is refused before the model loads (the questions would be lost); with one
    --question, --output is written; --output with nothing to predict is refused."""
    out = trained_run[0]
    questions = tmp_path / "q.jsonl"
    text = json.dumps({"question": "下列何者為樂器？", "A": "二胡", "B": "老虎", "C": "獅子", "D": "大象"},
                      ensure_ascii=False) + "\n"
    questions.write_text(text, encoding="utf-8")
    code, _, err = cli(["predict", str(out), "--input", str(questions), "--output", str(questions), "--use_cpu"],
                       capsys)
    assert code == 2 and "is the --input file" in err and "Traceback" not in err
    assert questions.read_text(encoding="utf-8") == text
    code, _, err = cli(["predict", str(out), "--question", "下列何者為樂器？", "--choices", "二胡", "老虎",
                        "--output", str(tmp_path / "one.jsonl"), "--use_cpu"], capsys)
    assert code == 0, err[-2000:]
    written, = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written["prediction"] in "AB" and len(written["ranking"]) == 2
    code, _, err = cli(["predict", str(out), "--fill", "[MASK]", "--output", str(tmp_path / "x.jsonl")], capsys)
    assert code == 2 and "--output" in err

"""Extra training sources: adapters, script conversion, the contamination check, mixing, 2-4 options, and bad
input, on local files (the hub layouts, through olah, are in test_hub_server.py)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import TRAIN_ARGS, cli, train_in_process


def _ref(i, question, options=("二年", "三年", "四年", "六年"), answer="C"):
    from hf_ft.data.rows import QARow

    return QARow(f"law_test-{i}", "introduction_to_law", question, tuple(options), answer, "data/law_test.csv", i + 2)


# ----------------------------------------------------------------------------------------------
# Adapters


def test_each_adapter_maps_its_layout_to_a_checked_row():
    from hf_ft.extra.adapters import ADAPTERS, MultipleAnswers, to_row

    def rows(adapter, record, columns=None):
        return [to_row(c, "id", "s", "f", 2) for c in ADAPTERS[adapter].candidates(record, columns or {})]

    ceval = rows("ceval", {"id": 0, "question": "求问传送时要添加几个0", "A": "1", "B": "2", "C": "3", "D": "4",
                           "answer": "C", "explanation": ""})[0]
    assert ceval.options == ("1", "2", "3", "4") and ceval.answer == "C"
    cmmlu = rows("cmmlu", {"": "0", "Question": "最主要的基本生产资料是", "A": "农业生产工具", "B": "土地",
                           "C": "劳动力", "D": "资金", "Answer": "B"})[0]
    assert cmmlu.question == "最主要的基本生产资料是" and cmmlu.answer == "B"
    stored = {"documents": ["男：你好。", "女：你好。"], "document_id": "d1",
              "questions": {"question": ["他们在做什么？", "女的怎么样？"], "answer": ["打招呼", "很好"],
                            "choice": [["打招呼", "吵架"], ["很好", "不好", "一般"]]}}
    as_lists = dict(stored, questions=[{"question": q, "answer": a, "choice": c} for q, a, c in
                                       zip(*stored["questions"].values())])
    for record in (stored, as_lists):  # datasets' dict of lists, or a list of dicts
        c3 = rows("c3", record)
        assert [(r.options, r.answer) for r in c3] == [(("打招呼", "吵架"), "A"), (("很好", "不好", "一般"), "A")]
        assert c3[0].context == "男：你好。\n女：你好。"
    clue = rows("clue_c3", {"id": 1, "context": ["许多动物的某些器官感觉特别灵敏"], "question": "有什么不同?",
                            "choice": ["没有人的灵敏", "和人的差不多", "和人的一样好", "比人的灵敏"], "answer": "比人的灵敏"})[0]
    assert clue.answer == "D" and clue.context == "许多动物的某些器官感觉特别灵敏"
    record = {"query": "问题：下列说法正确的是 选项：(A)甲(B)乙(C)丙(D)丁\n答案：从A到D, 我们应选择",
              "choices": ["(A)甲", "(B)乙", "(C)丙", "(D)丁"], "gold": [2]}
    agieval = rows("agieval", record)[0]
    assert agieval.question == "下列说法正确的是" and agieval.options == ("甲", "乙", "丙", "丁") and agieval.answer == "C"
    with pytest.raises(MultipleAnswers):
        rows("agieval", dict(record, gold=[0, 2]))
    mapped = rows("columns", {"stem": "何者為哺乳類？", "choices": ["鯨魚", "鯊魚", "章魚"], "label": 0},
                  {"question": "stem", "options": "choices", "answer": "label"})[0]
    assert mapped.options == ("鯨魚", "鯊魚", "章魚") and mapped.answer == "A"


@pytest.mark.parametrize("answer, options, expected", [
    ("b", ["甲", "乙"], "B"), ("Ｃ", ["甲", "乙", "丙"], "C"), (1, ["甲", "乙"], "B"), ([0], ["甲", "乙"], "A"),
    ("乙 ", ["甲", "乙"], "B"), ("E", ["甲", "乙", "丙", "丁"], "answer 'E' is not one of A, B, C, D"),
    (4, ["甲", "乙", "丙", "丁"], "answer index 4 is outside the 4 options"), ("戊", ["甲", "乙"], "not one of the options"),
    ("A", ["甲"], "1 option(s)"), ("A", list("甲乙丙丁戊"), "5 options"), ("A", ["甲", " 甲"], "are the same text"),
    ("A", ["甲", ""], "empty option B"), (True, ["甲", "乙"], "is not an option"),
])
def test_answers_as_letters_indices_or_text_and_what_cannot_be_a_question(answer, options, expected):
    from hf_ft.extra.adapters import Candidate, Unusable, to_row

    if len(expected) == 1:
        assert to_row(Candidate("問題", options, answer), "id", "s", "f", 2).answer == expected
    else:
        with pytest.raises(Unusable, match=re.escape(expected)):
            to_row(Candidate("問題", options, answer), "id", "s", "f", 2)


# ----------------------------------------------------------------------------------------------
# Script conversion


def test_simplified_rows_come_out_in_taiwan_traditional_and_traditional_ones_are_left_alone():
    import random

    from hf_ft.data.rows import QARow
    from hf_ft.extra.script import convert_rows, convert_texts, converter, script_of

    row = QARow("x", "s", "使用位填充方法，数据为011011，求问传送时要添加几个0", ("软件", "硬件", "网络", "内存"), "A",
                context="这是一段关于计算机的说明。")
    converted = convert_rows([row], "s2twp")[0]
    assert converted.question == "使用位填充方法，資料為011011，求問傳送時要新增幾個0"  # Taiwan phrasing, not only characters
    assert converted.options == ("軟體", "硬體", "網路", "記憶體") and converted.answer == "A"
    assert converted.context == "這是一段關於計算機的說明。"
    assert script_of([row]) == "simplified" and script_of([converted]) == "traditional"
    rng = random.Random(0)
    pieces = ["数据", "软件", "发", "后", "干", "\n", "\x1f", " ", "臺灣", "", "。", "ＡＢ", "里"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 9))) for _ in range(2000)]
    assert convert_texts(texts, "s2twp") == [converter("s2twp").convert(t) for t in texts]  # chunks = text by text


# ----------------------------------------------------------------------------------------------
# The contamination check


def test_copies_are_found_across_scripts_option_orders_and_rewording():
    from hf_ft.data.rows import QARow
    from hf_ft.extra.contamination import find_copies
    from hf_ft.retrieval.text import to_simplified

    reference = [_ref(0, "依據中華民國憲法增修條文之規定，立法委員之任期為幾年？"),
                 _ref(1, "下列何者為我國現行法律所規定之成年年齡，並自何時開始施行？", ("十八歲", "二十歲", "十六歲", "二十一歲"), "A"),
                 _ref(2, "何者為哺乳類？", ("鯨魚", "鯊魚", "章魚", "海星"), "A")]
    extra = [
        QARow("e0", "s", to_simplified(reference[0].question), ("(A)六年", "(B)四年", "(C)二年", "(D)三年"), "B"),
        QARow("e1", "s", "请问：" + to_simplified(reference[1].question).replace("，", " ").rstrip("？") + "呢",
              ("二十岁", "十八岁", "十六岁", "二十一岁"), "B"),
        QARow("e2", "s", "下列何者为鸟类？", ("麻雀", "鲸鱼", "章鱼", "海星"), "A"),  # same topic, another question
        QARow("e3", "s", to_simplified(reference[2].question), ("鲸鱼", "鲨鱼", "章鱼", "海星"), "A"),  # short: exact
    ]
    found = find_copies(extra, reference)
    assert {i: (m.kind, m.reference.id) for i, m in found.items()} == {
        0: ("exact", "law_test-0"), 1: ("near", "law_test-1"), 3: ("exact", "law_test-2")}


@pytest.fixture
def extra_sources(tmp_path, demo_data):
    """A Simplified C3-style JSONL (2-4 options, passages, text answers) with two planted copies of demo test
    rows: one exact (Simplified, options reordered), one reworded."""
    import csv

    from hf_ft.demo import make_extra_questions
    from hf_ft.retrieval.text import to_simplified

    path = make_extra_questions(tmp_path / "extra" / "questions.jsonl", n=120, seed=11)
    with open(demo_data / "music_test.csv", encoding="utf-8") as f:
        test = [row for row in csv.DictReader(f)]
    long = [row for row in test if len(row["question"]) > 30][:2]  # questions with a passage: 13-grams to share
    lines = path.read_text(encoding="utf-8").splitlines()
    for k, (row, reword) in enumerate(((long[0], False), (long[1], True))):
        options = [to_simplified(row[c]) for c in "DCBA"]
        question = to_simplified(row["question"])
        if reword:
            question = "请回答：" + question.rstrip("？") + "呢"
        lines[10 + k] = json.dumps({"id": f"copy-{k}", "subject": "music", "question": question, "options": options,
                                    "answer": to_simplified(row[row["answer"]])}, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, [test.index(row) + 2 for row in long]  # their lines in music_test.csv


def run_args(demo_data, tiny_model, out, *extra):
    return ["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects", "music,agriculture",
            "--output_dir", str(out), "--max_steps", "4", "--eval_strategy", "no", "--save_strategy", "no",
            "--load_best_model_at_end", "false", "--disable_tqdm", "true", *TRAIN_ARGS[:2], "--use_cpu",
            "--per_device_train_batch_size", "8", *extra]


def test_a_run_with_an_extra_source_converts_checks_and_records_it(extra_sources, tmp_path, demo_data, tiny_model):
    path, lines = extra_sources
    out = tmp_path / "out"
    train_in_process(run_args(demo_data, tiny_model, out, "--extra_data", f"{path}?weight=0.5&name=practice"))
    manifest = json.loads((out / "data_manifest.json").read_text(encoding="utf-8"))
    source = manifest["extra_data"]["sources"][0]
    counts = source["counts"]
    assert counts["read"] == 120 and counts["exact_copies"] == 1 and counts["near_copies"] == 1
    assert counts["dropped_as_copies"] == 2 and counts["held_out"] == 6  # 5% of the 118 kept: its own loss
    assert counts["used"] == 56  # weight 0.5 of the other 112
    assert source["conversion"] == {"applied": "s2twp", "script_detected": "simplified"}
    assert source["path"] == "../extra/questions.jsonl"  # relative to the run folder: nothing local is pushed
    assert {e["copies"] for e in source["examples"]} == {f"{demo_data.name}/music_test.csv:{line}" for line in lines}
    assert {e["row"] for e in source["examples"]} == {"practice:questions.jsonl:11", "practice:questions.jsonl:12"}
    assert set(source["options"]) <= {"2", "3", "4"} and len(source["options"]) > 1
    items = json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))
    assert not any(i["id"].startswith("practice/") for i in items)
    assert manifest["counts_per_subject"]["train"]["practice/music"] > 0
    assert not any(s.startswith("practice/") for s in manifest["counts_per_subject"]["validation"])
    record = json.loads((out / "hf_ft_run.json").read_text(encoding="utf-8"))
    assert record["extra_data"][0]["counts"] == counts and record["extra_data"][0]["license"] is None
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "extra training data: practice" in card and "2 copies of TMMLU+ questions (1 exact, 1 near) dropped" in card
    assert "license: other" in card and "states no licence" in card  # a source without a licence: none is claimed


def test_contamination_policies_keep_and_error(extra_sources, tmp_path, demo_data, tiny_model, capsys):
    path, _ = extra_sources
    out = tmp_path / "keep"
    train_in_process(run_args(demo_data, tiny_model, out, "--extra_data", str(path), "--contamination", "keep"))
    counts = json.loads((out / "data_manifest.json").read_text())["extra_data"]["sources"][0]["counts"]
    assert counts["dropped_as_copies"] == 0 and counts["used"] + counts["held_out"] == 120 and counts["exact_copies"] == 1
    assert "**kept** (results on those questions are not held out)" in (out / "README.md").read_text()
    code, _, err = cli(["train", *run_args(demo_data, tiny_model, tmp_path / "error", "--extra_data", str(path),
                                           "--contamination", "error")], capsys)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "2 row(s) copy questions the run is evaluated on (1 exact, 1 near)" in line and "music_test.csv:" in line
    assert not (tmp_path / "error" / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------------
# Refusals and bad input: one line each, before any work


@pytest.mark.parametrize("spec, message", [
    ("MediaTek-Research/TCEval-v2?configs=tmmluplus-music", "TMMLU+ v1.0's test and dev splits verbatim"),
    ("mediatek-research/tceval-v2", "TMMLU+ v1.0's test and dev splits verbatim"),
    ("someone/TTQA-v2", "TTQA is inside TMMLU+"),
    ("ikala/tmmluplus", "it is TMMLU+, the benchmark this run is tested on"),
    ("ceval/ceval-exam?splits=test", "C-Eval's test answers are not released"),
    ("clue/clue?splits=test", "CLUE withholds its test answers"),
    ("ceval/ceval-exam?cap=0", "cap=0: need a whole number of rows"),
    ("ceval/ceval-exam?weight=nan", "weight=nan: need a number in (0, 100]"),
    ("ceval/ceval-exam?convert=t2s", "convert=t2s: choose auto, s2twp"),
    ("ceval/ceval-exam?colums=x", "unknown setting 'colums'"),
    ("ceval/ceval-exam?columns=question:q", "columns= is the column map of adapter=columns"),
    ("ceval/ceval-exam?splits=", "splits= is empty"),
    ("someone/unknown-set", "no built-in adapter knows someone/unknown-set"),
    ("./missing.csv", "no such file or folder"),
    ("ceval/ceval-exam?adapter=mmlu", "adapter 'mmlu': choose ceval"),
])
def test_sources_that_cannot_work_are_refused_in_one_line(spec, message, tmp_path, demo_data, tiny_model, capsys):
    code, _, err = cli(["train", *run_args(demo_data, tiny_model, tmp_path / "out", "--extra_data", spec)], capsys)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "out").exists()  # refused before the run's folder was touched


def test_contamination_without_extra_data_is_refused(tmp_path, demo_data, tiny_model, capsys):
    code, _, err = cli(["train", *run_args(demo_data, tiny_model, tmp_path / "out", "--contamination", "keep")], capsys)
    assert code == 2 and "--contamination without --extra_data: has no effect" in err


@pytest.mark.parametrize("name, text, message", [
    ("a.csv", "question,A,B,C,D\n題目,甲,乙,丙,丁\n", "a:a.csv: missing column(s) answer"),
    ("b.csv", "question,A,B,C,D,answer\n題目一,甲,乙,丙,丁,A\n題目二,甲,乙,丙,丁,E\n", "b:b.csv:3: answer 'E' is not one of"),
    ("c.jsonl", "", "c:c.jsonl: the file is empty"),
    ("d.jsonl", '{"question": "題目", "options": ["甲", "乙"], "answer": "丙"}\n', "d:d.jsonl:1: answer '丙' is not one"),
    ("e.csv", "question,A,B,C,D,answer\n題目,甲,乙,丙,丁,A,多\n", "e:e.csv:2: 7 cells where the header has 6"),
    ("f.jsonl", '{"question": "題目", "options": "甲乙", "answer": "A"}\n', "f:f.jsonl:1: the options are not a list"),
    ("g.csv", "question,A,B,C,D,answer\n題目,甲,乙,丙,丁,A\n".encode("utf-16").decode("latin-1"), "g:g.csv: not UTF-8 text"),
])
def test_bad_input_in_an_extra_source_names_its_file_and_line(name, text, message, tmp_path, demo_data, tiny_model,
                                                              capsys):
    path = tmp_path / name
    path.write_text(text, encoding="latin-1" if "UTF-8" in message else "utf-8")
    code, _, err = cli(["train", *run_args(demo_data, tiny_model, tmp_path / "out", "--extra_data", str(path))], capsys)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert message in err and len(err.strip().splitlines()) <= 2, err  # the line, or a count and the line


# ----------------------------------------------------------------------------------------------
# Mixing


def test_caps_and_weights_are_seeded_and_keep_the_source_order():
    import random

    from hf_ft.data.rows import QARow
    from hf_ft.extra.mixing import sample

    rows = [QARow(f"r{i}", "s", f"q{i}", ("a", "b"), "A") for i in range(10)]
    capped = sample(rows, 4, 1.0, random.Random("0:x"))
    assert capped == sample(rows, 4, 1.0, random.Random("0:x")) and len(capped) == 4
    assert [r.id for r in capped] == sorted((r.id for r in capped), key=lambda i: int(i[1:]))
    doubled = sample(rows, None, 2.5, random.Random("0:x"))
    assert len(doubled) == 25 and len({r.id for r in doubled}) == 25  # copies get their own ids
    assert sum(r.id.endswith("~3") for r in doubled) == 5 and len(sample(rows, None, 0.3, random.Random(1))) == 3


# ----------------------------------------------------------------------------------------------
# 2-4 options: masked, never padded with options to learn to avoid


def test_a_batch_of_two_to_four_options_masks_the_missing_ones(tiny_model):
    from transformers import AutoTokenizer

    from hf_ft.data.rows import QARow
    from hf_ft.inputs.collators import MASK_KEY, JointCollator, MultipleChoiceCollator, mask_choices, masked_choice_loss
    from hf_ft.inputs.formulations import encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [QARow("a", "s", "下列何者屬於樂器？", ("鋼琴", "蘋果"), "A"),
            QARow("b", "s", "下列何者屬於水果？", ("鋼琴", "蘋果", "籃球"), "B"),
            QARow("c", "s", "下列何者屬於球類運動？", ("鋼琴", "蘋果", "籃球", "老虎"), "C")]
    features = list(encode(rows, tokenizer, "per_choice", 64, progress=False))
    batch = MultipleChoiceCollator(tokenizer)(features)
    assert batch["input_ids"].shape[:2] == (3, 4)
    assert batch[MASK_KEY].tolist() == [[True, True, False, False], [True, True, True, False], [True] * 4]
    logits = torch.randn(3, 4, requires_grad=True)
    loss = masked_choice_loss(mask_choices(logits, batch[MASK_KEY]), batch["labels"])
    expected = sum(torch.nn.functional.cross_entropy(logits[i, :n][None], batch["labels"][i][None])
                   for i, n in enumerate((2, 3, 4))) / 3
    assert torch.allclose(loss, expected)
    loss.backward()
    assert logits.grad[0, 2:].abs().sum() == 0 and logits.grad[1, 3] == 0  # missing options get no gradient
    same = MultipleChoiceCollator(tokenizer)(features[2:])  # one option count: transformers' collator, no mask
    assert MASK_KEY not in same
    joint = JointCollator(tokenizer)(list(encode(rows, tokenizer, "joint", 64, progress=False)))
    assert joint[MASK_KEY].tolist()[:2] == [[True, True, False, False], [True, True, True, False]]


@pytest.mark.parametrize("formulation", ["per_choice", "joint"])
def test_two_to_four_options_train_and_predict(formulation, tmp_path, demo_data, tiny_model, capsys):
    from hf_ft.demo import make_extra_questions

    path = make_extra_questions(tmp_path / "c3.jsonl", n=60, seed=3)
    out = tmp_path / "out"
    train_in_process(run_args(demo_data, tiny_model, out, "--formulation", formulation, "--extra_data", str(path),
                              "--max_steps", "6"))
    options = json.loads((out / "data_manifest.json").read_text())["extra_data"]["sources"][0]["options"]
    assert set(options) == {"2", "3", "4"}
    state = json.loads((out / "trainer_state.json").read_text())
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in state["log_history"] if "loss" in e)
    if formulation == "joint":
        return  # a joint head answers exactly 4 options at predict time (its rotations need them all)
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in (
        {"question": "下列何者屬於樂器？", "options": ["鋼琴", "蘋果"]},
        {"question": "下列何者屬於水果？", "A": "鋼琴", "B": "蘋果", "C": "籃球", "D": ""},
        {"question": "下列何者屬於球類運動？", "A": "鋼琴", "B": "蘋果", "C": "籃球", "D": "老虎"})) + "\n",
        encoding="utf-8")
    code, _, err = cli(["predict", str(out), "--input", str(questions), "--output", str(tmp_path / "p.jsonl"),
                        "--use_cpu"], capsys)
    assert code == 0, err[-2000:]
    results = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [len(r["ranking"]) for r in results] == [2, 3, 4]
    for r in results:
        assert sum(x["probability"] for x in r["ranking"]) == pytest.approx(1, abs=1e-5)
        assert r["prediction"] in "ABCD"[:len(r["ranking"])]


def test_an_extra_source_revision_the_hub_would_refuse_is_refused_at_parse():
    from hf_ft.core.errors import UserError
    from hf_ft.extra.specs import parse_spec

    with pytest.raises(UserError, match=r"revision 'v1\.\.v2': not a branch, tag or commit name the hub accepts"):
        parse_spec("ceval/ceval-exam?revision=v1..v2")
    assert parse_spec("ceval/ceval-exam?revision=refs/pr/3").revision == "refs/pr/3"


def test_each_extra_source_gets_its_own_held_out_loss(extra_sources, tmp_path, demo_data, tiny_model):
    """TMMLU+'s validation split still selects the model; each extra source's held-out slice (never trained on)
    gets its own loss and accuracy at every evaluation (log, loss_history.json, the plot) and at the end
    (train_results.json)."""
    from conftest import override

    path, _ = extra_sources
    out = tmp_path / "out"
    metrics = train_in_process(override(run_args(demo_data, tiny_model, out, "--extra_data",
                                                 f"{path}?name=Practice Set"),
                                        ["--eval_strategy", "steps", "--eval_steps", "2"]))
    assert metrics["eval_practice_set_loss"] > 0 and 0 <= metrics["eval_practice_set_accuracy"] <= 1
    results = json.loads((out / "train_results.json").read_text(encoding="utf-8"))
    assert results["eval_practice_set_loss"] == metrics["eval_practice_set_loss"]
    history = json.loads((out / "loss_history.json").read_text(encoding="utf-8"))
    assert [p["step"] for p in history["eval_loss:practice_set"]] == [2, 4]  # one point per evaluation
    assert [p["step"] for p in history["eval_loss"]] == [2, 4]  # TMMLU+'s validation loss, as before
    manifest = json.loads((out / "data_manifest.json").read_text(encoding="utf-8"))
    assert manifest["extra_data"]["sources"][0]["counts"]["held_out"] == 6


def test_the_held_out_slice_of_a_source_is_never_trained_on():
    import random

    from hf_ft.data.rows import QARow
    from hf_ft.extra.mixing import held_out_slice

    rows = [QARow(f"s-{i}", "music", f"題{i}？", ("一", "二", "三", "四"), "A") for i in range(400)]
    train, held = held_out_slice(rows, random.Random("0:s:held-out"))
    assert len(held) == 20 and len(train) == 380 and not {r.id for r in train} & {r.id for r in held}
    assert held == held_out_slice(rows, random.Random("0:s:held-out"))[1]  # seeded: a resumed run holds the same
    assert held_out_slice(rows[:39], random.Random(0)) == (rows[:39], [])  # too small a source to slice
    assert len(held_out_slice(rows * 20, random.Random(0))[1]) == 200  # at most 200

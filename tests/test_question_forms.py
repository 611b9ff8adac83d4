"""Question forms (hf_ft.task.question_forms): recognised on hand-written items of each form, and reported per
form by evaluate, comparison.md and the card, where a planted form the model never trained on shows up."""

import json

import pytest
from conftest import TRAIN_ARGS, train_in_process

from hf_ft.task.question_forms import QUESTION_FORMS, forms_of

ITEMS = [  # (question, options, the forms it has)
    ("下列敘述何者錯誤？", ["甲", "乙", "丙", "丁"], ["negation"]),
    ("下列何者不屬於水果？", ["蘋果", "香蕉", "老虎", "芒果"], ["negation"]),
    ("依民法規定，下列何者不正確？", ["一", "二", "三", "四"], ["negation"]),
    ("下列何者除外？", ["一", "二", "三", "四"], ["negation"]),
    ("非洲面積最大的國家是？", ["埃及", "奈及利亞", "阿爾及利亞", "南非"], []),  # 非洲 is Africa, not negation
    ("這首曲子非常好聽，作曲者是誰？", ["巴哈", "莫札特", "貝多芬", "蕭邦"], []),
    ("下列何者正確？", ["甲說法", "乙說法", "丙說法", "以上皆是"], ["all_of_the_above"]),
    ("下列何者正確？", ["甲說法", "乙說法", "丙說法", "以上皆非"], ["none_of_the_above"]),
    ("下列敘述正確者為何？", ["甲乙", "甲丙", "乙丙丁", "甲乙丙丁"], ["combination"]),
    ("下列正確者為？", ["①②", "①③", "②④", "①②③④"], ["combination"]),
    ("下列正確者為？", ["(1)(2)", "(1)(3)", "(2)(4)", "(1)(2)(3)"], ["combination"]),
    ("若 x = 3，則 2x + 1 = ？", ["5", "6", "7", "8"], ["numeric"]),
    ("某物重多少？", ["5公斤", "6.5公斤", "1/2公斤", "10%"], ["numeric"]),
    ("甲" * 130 + "？", ["一", "二", "三", "四"], ["long_stem"]),
    ("下列何者屬於水果？", ["蘋果", "老虎", "鋼琴", "籃球"], []),
    ("下列何者錯誤？", ["甲乙", "甲丙", "以上皆非", "乙丙"], ["negation", "none_of_the_above", "combination"]),
]


@pytest.mark.parametrize("question, options, expected", ITEMS)
def test_forms_are_recognised_on_hand_written_items(question, options, expected):
    assert forms_of(question, options) == expected
    assert forms_of(question, options, read_a_passage=True) == [*expected, "with_passage"]
    assert forms_of(question, options, read_a_passage=False) == [*expected, "without_passage"]


def test_every_form_is_documented_and_seen_here():
    seen = {form for *_, forms in ITEMS for form in forms}
    assert seen == set(QUESTION_FORMS)  # a new form needs hand-written items here
    assert all(form.description for form in QUESTION_FORMS.values())


@pytest.mark.slow
def test_a_planted_form_the_model_never_trained_on_shows_in_every_report(tmp_path, tiny_model):
    """The demo task with negated test questions in music (下列何者不屬於…, never seen in training): the per-form
    table shows the fine-tuned model failing them (its whole interval below chance) while fine-tuning helped on
    the plain questions (the paired interval above zero); comparison.md and the card carry the table, predictions.jsonl each item's forms."""
    from hf_ft.demo import make_demo_data
    from hf_ft.evaluation.evaluate import EvaluateArguments, run

    data = make_demo_data(tmp_path / "data", rows_per_subject=160, seed=3, subjects=["music", "agriculture"],
                          artifact="negation", artifact_subjects=["music"], artifact_rate=1.0)
    out = tmp_path / "run"
    train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(data), "--output_dir", str(out),
                      *TRAIN_ARGS])
    report = run(EvaluateArguments(original=str(tiny_model), finetuned=str(out), use_cpu=True))
    forms = report["paired"]["per_form"]
    negation, plain = forms["negation"], forms["plain"]
    assert negation["n"] == 46 and plain["n"] == 46  # music's test questions, agriculture's
    assert negation["ci95_finetuned"][1] < 0.25 < plain["accuracy_finetuned"], forms
    assert plain["difference_ci95"][0] > 0 and negation["difference_ci95"][0] < 0.05
    markdown = (out / "comparison" / "comparison.md").read_text(encoding="utf-8")
    assert "## By question form" in markdown and "| negation | 46 |" in markdown
    assert "By question form" in (out / "README.md").read_text(encoding="utf-8")
    items = [json.loads(line) for line in (out / "comparison" / "predictions.jsonl").read_text().splitlines()]
    assert sum("negation" in item["forms"] for item in items) == 46

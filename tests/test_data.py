"""Reading, validation (nothing lost, every problem named by file and line) and splitting."""

import csv
import json

import pytest

from hf_ft.data.files import read_records
from hf_ft.data.rows import DataError, QARow, content_hash, handle_problems
from hf_ft.data.sources import LoadedData, load_data_dir, load_files
from hf_ft.data.splits import make_splits

HEADER = ["question", "A", "B", "C", "D", "answer"]


def write_csv(path, rows, header=HEADER, bom=False):
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


GOOD = ["一加一等於幾？", "一", "二", "三", "四", "B"]


def test_every_bad_row_kind_is_named_with_file_and_line(tmp_path):
    path = write_csv(tmp_path / "x.csv", [
        GOOD,
        ["", "a", "b", "c", "d", "A"],                    # line 3: empty question
        ["問題二", "a", "", "c", " ", "A"],                # line 4: empty options B, D
        ["問題三", "a", "b", "c", "d", "E"],               # line 5: bad answer
        ["問題四", "a", "b", "c", "d", ""],                # line 6: empty answer
    ])
    loaded = load_files({"all": str(path)})
    assert len(loaded.pools["all"]) == 1
    with pytest.raises(DataError) as err:
        handle_problems(loaded.problems, "error", None)
    message = str(err.value)
    assert f"{path}:3: empty question" in message
    assert f"{path}:4: empty option B, D" in message
    assert f"{path}:5: answer 'E' is not one of A, B, C, D" in message
    assert f"{path}:6: answer empty is not one of A, B, C, D" in message
    assert message.count("\n") == 4  # a headline and one line per problem


def test_duplicate_ids_and_line_numbers_of_multiline_records(tmp_path):
    path = write_csv(tmp_path / "x.csv", [
        ["q1", *GOOD[:0], "甲\n乙", "b", "c", "d", "a", "x1"],  # record spans lines 2-3
        ["q2", "a", "b", "c", "d", "Ｃ", "x1"],                  # line 4: duplicate id
    ], header=[*HEADER, "id"])
    loaded = load_files({"all": str(path)})
    assert [r.answer for r in loaded.pools["all"]] == ["A"]  # lower-case a normalised
    assert [str(p) for p in loaded.problems] == [f"{path}:4: id 'x1' already used at {path}:2"]


def test_answers_are_normalised_and_bom_is_accepted(tmp_path):
    path = write_csv(tmp_path / "x.csv", [
        ["q1", "a", "b", "c", "d", "a"], ["q2", "a", "b", "c", "d", "Ｄ"], ["q3", "a", "b", "c", "d", " b "],
        ["q4", "0.50", "1.0", "007", "NA", "c"],
    ], bom=True)
    rows = load_files({"all": str(path)}).pools["all"]
    assert [r.answer for r in rows] == ["A", "D", "B", "C"]
    assert rows[3].options == ("0.50", "1.0", "007", "NA")  # strings stay strings: nothing lost


def test_skip_writes_every_rejected_row(tmp_path):
    path = write_csv(tmp_path / "x.csv", [GOOD, ["", "a", "b", "c", "d", "A"], ["q", "a", "b", "c", "d", "Z"]])
    loaded = load_files({"all": str(path)})
    counts = handle_problems(loaded.problems, "skip", str(tmp_path))
    assert counts == {"empty_question": 1, "bad_answer": 1}
    rejected = [json.loads(line) for line in (tmp_path / "rejected_rows.jsonl").read_text().splitlines()]
    assert [(r["line"], r["kind"]) for r in rejected] == [(3, "empty_question"), (4, "bad_answer")]
    assert rejected[1]["row"]["answer"] == "Z" and rejected[1]["file"] == str(path)


@pytest.mark.parametrize("name,content,expected", [
    ("empty.csv", "", "the file is empty"),
    ("bom_only.csv", "\ufeff\n", "the file is empty"),
    ("cols.csv", "question,A,B\nq,a,b\n", r"missing column\(s\) C, D, answer"),
    ("header_only.csv", "question,A,B,C,D,answer\n", "header but no rows"),
    ("bad.json", "[\n{not json", r"bad.json:2: not valid JSON"),
    ("bad.jsonl", '{"question": "q"}\n\n{oops\n', r"bad.jsonl:3: not valid JSON"),  # the file's own line, 1-based
    ("list.jsonl", '{"question": "q"}\n[1, 2]\n', r"list.jsonl:2: not a JSON object"),
    ("dict.json", '{"question": "q"}', "expected a JSON array"),
    ("dup.csv", "question,A,B,C,D,A,answer\nq,a,b,c,d,e,A\n", r"dup.csv:1: column 'A' appears more than once"),
    ("quote.csv", 'question,A,B,C,D,answer\n"q,a,b,c,d,A\n', r"quote.csv:\d+: not valid CSV|not a valid CSV file"),
    ("x.txt", "hello", "unsupported file type"),
])
def test_unusable_files_give_one_clear_error(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=expected) as err:
        read_records(path)
    assert str(path) in str(err.value)


def test_json_and_jsonl_with_subject_and_id(tmp_path):
    items = [{"id": f"i{i}", "subject": "music", "question": f"q{i}", "A": "a", "B": "b", "C": "c", "D": "d",
              "answer": "A"} for i in range(3)]
    (tmp_path / "x.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n\n", encoding="utf-8")
    for name in ("x.json", "x.jsonl"):
        rows = load_files({"all": str(tmp_path / name)}).pools["all"]
        assert [(r.id, r.subject, r.category) for r in rows] == [(f"i{i}", "music", "other") for i in range(3)]


def _rows(n, subject="music", prefix="q"):
    return [QARow(f"{subject}-{prefix}{i}", subject, f"{subject} {prefix}{i}", ("a", "b", "c", f"d{i}"), "ABCD"[i % 4])
            for i in range(n)]


def test_resplit_is_deterministic_disjoint_stratified_and_deduplicated():
    rows = _rows(100, "music") + _rows(40, "physics")
    duplicate = QARow("dup", "music", " music  q3 ", ("a", "b", "c", "d3"), "D")  # same normalised content as q3
    loaded = LoadedData({"all": rows + [duplicate]}, [], {"kind": "files"}, "flat", ["music", "physics"])
    a = make_splits(loaded, "auto", seed=7, validation_fraction=0.1, split_ratios=(0.7, 0.25, 0.05))
    b = make_splits(loaded, "resplit", seed=7, validation_fraction=0.1, split_ratios=(0.7, 0.25, 0.05))
    assert a.scheme == "resplit" and a.duplicates_removed == 1
    assert [r.id for r in a.test] == [r.id for r in b.test] and [r.id for r in a.train] == [r.id for r in b.train]
    ids = [set(r.id for r in part) for part in (a.train, a.validation, a.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 140
    assert sum(r.subject == "music" for r in a.test) == 5 and sum(r.subject == "physics" for r in a.test) == 2
    c = make_splits(loaded, "resplit", seed=8, validation_fraction=0.1, split_ratios=(0.7, 0.25, 0.05))
    assert [r.id for r in c.test] != [r.id for r in a.test]


def test_official_split_keeps_test_and_drops_training_copies_of_test_items():
    test = _rows(10, prefix="t")
    dev = _rows(5, prefix="d") + [QARow("copy", "music", "music t1", ("a", "b", "c", "d1"), "B")]
    val = _rows(50, prefix="v")
    loaded = LoadedData({"dev": dev, "val": val, "test": test}, [], {}, "tmmluplus", ["music"])
    s = make_splits(loaded, "auto", seed=0, validation_fraction=0.2, split_ratios=(0.7, 0.25, 0.05))
    assert s.scheme == "official" and s.duplicates_removed == 1
    assert [r.id for r in s.test] == [r.id for r in test]
    assert len(s.validation) == 11 and len(s.train) == 44
    test_hashes = {r.content_hash for r in s.test}
    assert not any(r.content_hash in test_hashes for r in s.train + s.validation)


def test_data_dir_layout_subject_selection(demo_data):
    loaded = load_data_dir(str(demo_data), "music,STEM")
    assert loaded.subjects == ["advance_chemistry", "basic_medical_science", "music"]
    assert {r.subject for r in loaded.pools["test"]} == set(loaded.subjects)
    with pytest.raises(DataError, match="no data for subject.*physics"):
        load_data_dir(str(demo_data), "physics")
    assert len(load_data_dir(str(demo_data)).subjects) == 8


def test_a_broken_file_in_a_folder_is_named(tmp_path):
    for subject in ("music", "physics"):
        for split in ("dev", "val", "test"):
            write_csv(tmp_path / f"{subject}_{split}.csv", [[f"{subject} {split} q{i}", "a", "b", "c", "d", "A"]
                                                          for i in range(3)])
    loaded = load_data_dir(str(tmp_path))
    assert [r.line for r in loaded.pools["test"]] == [2, 3, 4, 2, 3, 4]
    assert [r.source.rsplit("/", 1)[-1] for r in loaded.pools["test"]] == ["music_test.csv"] * 3 + ["physics_test.csv"] * 3
    assert [r.subject for r in loaded.pools["val"]] == ["music"] * 3 + ["physics"] * 3
    (tmp_path / "physics_val.csv").write_text('question,A,B,C,D,answer\n"unclosed,a,b,c,d,A\nq,a,b,c,d\n',
                                              encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_data_dir(str(tmp_path))
    assert "physics_val.csv" in str(err.value) and "music" not in str(err.value)


def test_invisible_characters_make_a_cell_empty_and_a_copy_a_duplicate(tmp_path):
    """A zero-width space, BOM or joiner is no content: a question of only that is empty, and two rows that
    differ only by one are the same item (deduplicated, and caught by the held-out check's hash)."""
    path = write_csv(tmp_path / "x.csv", [
        GOOD,
        ["\u200b", "a", "b", "c", "d", "A"],                          # line 3: a zero-width space only
        ["問題二", "a", "\ufeff", "c", "\u2060\u200d", "A"],           # line 4: options B, D invisible
        ["一加一\u200b等於幾？", "一", "二", "\u200c三", "四", "B"],     # line 5: GOOD with invisible marks
    ])
    loaded = load_files({"all": str(path)})
    with pytest.raises(DataError) as err:
        handle_problems(loaded.problems, "error", None)
    message = str(err.value)
    assert f"{path}:3: empty question (only invisible characters)" in message
    assert f"{path}:4: empty option B, D" in message
    first, copy = loaded.pools["all"]
    assert copy.question != first.question and copy.content_hash == first.content_hash
    assert copy.content_hash == content_hash(copy.question, copy.options)  # validation's hash is the function's
    kept = make_splits(LoadedData({"all": _rows(40) + [first, copy]}, [], {"kind": "files"}, "flat", ["music"]),
                       "resplit", seed=0, validation_fraction=0.1, split_ratios=(0.7, 0.25, 0.05))
    assert kept.duplicates_removed == 1


def test_skewed_gold_letters_are_warned_about(tmp_path, caplog):
    """Every gold answer C in a split: a model that always says C scores 100%. The manifest and the log say
    so; a balanced split, or a small one whose skew is chance, says nothing."""
    from collections import Counter

    from hf_ft.data.splits import Splits, skewed_gold_letters, write_split_outputs

    balanced = _rows(40)
    skewed = [QARow(r.id, r.subject, r.question, r.options, "C") for r in _rows(40, prefix="s")]
    few = [QARow(r.id, r.subject, r.question, r.options, "A") for r in _rows(3, prefix="f")]
    splits = Splits(train=skewed, validation=few, test=balanced, scheme="resplit")
    warnings = skewed_gold_letters(splits)
    assert len(warnings) == 1 and warnings[0].startswith("train: 40 of 40 gold answers (100%) are C")
    assert skewed_gold_letters(Splits(balanced, few, balanced, "resplit")) == []
    data = LoadedData({"all": skewed + few + balanced}, [], {"kind": "files"}, "flat", ["music"])
    with caplog.at_level("WARNING"):
        manifest = write_split_outputs(str(tmp_path), data, splits, Counter(), 0)
    assert manifest["warnings"] == warnings and "always answering C" in caplog.text


def test_options_of_a_row_must_differ_and_headers_are_trimmed(tmp_path):
    """Two options that are the same text (after NFKC and invisible characters) make the gold one a twin the
    model cannot prefer: the row is named. A header `A ` or JSON key `"B "` is the column it names."""
    path = write_csv(tmp_path / "x.csv", [
        GOOD,
        ["問題二", "甲", "乙", "甲", "丁", "A"],                 # line 3: A and C
        ["問題三", "ＡＢ", "AB\u200b", "c", "d", "A"],            # line 4: A and B after NFKC and the ZWSP
    ], header=["question ", " A", "B ", "C", "D", "answer"])
    loaded = load_files({"all": str(path)})
    assert [r.question for r in loaded.pools["all"]] == [GOOD[0]]  # the spaced header was read
    with pytest.raises(DataError) as err:
        handle_problems(loaded.problems, "error", None)
    assert f"{path}:3: options A and C are the same text ('甲')" in str(err.value)
    assert f"{path}:4: options A and B are the same text ('AB')" in str(err.value)
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps({"question ": "q", "A": "a", "B ": "b", " C": "c", "D": "d", "answer": "B"}) + "\n",
                     encoding="utf-8")
    row, = load_files({"all": str(jsonl)}).pools["all"]
    assert row.options == ("a", "b", "c", "d") and row.question == "q"


def test_a_folder_with_both_dev_and_train_files_reads_both(tmp_path):
    """`music_dev.csv` and `music_train.csv` are both the training pool: every row of both is read."""
    write_csv(tmp_path / "music_dev.csv", [GOOD])
    write_csv(tmp_path / "music_train.csv", [["二加二等於幾？", "一", "二", "三", "四", "D"],
                                             ["三加三等於幾？", "五", "六", "七", "八", "B"]])
    write_csv(tmp_path / "music_test.csv", [["四加四等於幾？", "五", "六", "七", "八", "D"]])
    loaded = load_data_dir(str(tmp_path))
    assert len(loaded.pools["dev"]) == 3 and len(loaded.pools["test"]) == 1
    assert {r.source.rsplit("/", 1)[-1] for r in loaded.pools["dev"]} == {"music_dev.csv", "music_train.csv"}


# ----------------------------------------------------------------------------------------------
# Bad input, round three: each class where it enters


def test_json_nan_and_keys_given_twice_are_row_problems_and_a_joiner_after_the_answer_is_nothing(tmp_path):
    from hf_ft.data.files import load_items

    path = tmp_path / "x.jsonl"
    lines = [
        '{"question": "一加一？", "A": "1", "B": "2", "C": NaN, "D": "4", "answer": "B"}',  # pandas' missing value
        '{"question": "二加二？", "A": "1", "B": "2", "A": "3", "C": "4", "D": "5", "answer": "D"}',
        '{"question": "三加三？", "A": "1", "B": "2", "C": "6", "D": "5", "answer": "C\u200d"}',
        '{"question": "四加四？", "A": "1", "B": "8", "C": "6", "D": "5", "answer": "B", "B ": "9"}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_items(path)
    message = str(err.value)
    assert f"{path}:1: empty option C" in message
    assert f"{path}:2: 'A': given twice in one record" in message
    assert f"{path}:4: 'B': given twice" in message  # "B " is the column B, as in a CSV header
    assert ":3:" not in message  # the zero-width joiner after C is removed, as everywhere else
    assert [r.answer for r in load_items(path, "skip")] == ["C"]


def test_every_row_rejected_says_so_instead_of_an_empty_split(tmp_path):
    from hf_ft.data.files import load_items

    path = write_csv(tmp_path / "bad.csv", [["q", "a", "a", "b", "c", "A"], ["", "x", "y", "z", "w", "B"]])
    with pytest.raises(DataError, match=r"all 2 row\(s\) were rejected, so --on_bad_rows skip leaves nothing") as err:
        load_items(path, "skip")
    assert f"{path}:2: options A and B are the same text" in str(err.value) and f"{path}:3: empty question" in str(err.value)


def test_the_same_question_with_two_answers_is_an_error_naming_both_places(tmp_path):
    from hf_ft.data.rows import conflicting_answers

    train = write_csv(tmp_path / "train.csv", [GOOD, ["二加二？", "一", "二", "三", "四", "D"]])
    test = write_csv(tmp_path / "test.csv", [GOOD[:-1] + ["C"], ["三加三？", "一", "二", "三", "六", "D"]])
    loaded = load_files({"train": str(train), "test": str(test)})
    rows = [r for pool in loaded.pools.values() for r in pool]
    problems, conflicted = conflicting_answers(rows)
    assert [str(p) for p in problems] == [f"{test}:2: the same question and options as {train}:2, but the answer is "
                                          f"C here and B there"]
    assert conflicted == {rows[0].content_hash}
    exact_copy = write_csv(tmp_path / "copy.csv", [GOOD])  # the same answer twice is a duplicate, not a conflict
    assert conflicting_answers(rows[:1] + load_files({"all": str(exact_copy)}).pools["all"]) == ([], set())


def test_a_data_folder_by_kind(tmp_path, caplog):
    from hf_ft.data.sources import layout_files

    write_csv(tmp_path / "music_test.CSV", [GOOD])  # an upper-case extension is a CSV file too
    (tmp_path / "music_dev.json").write_text("[]", encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert layout_files(tmp_path) == {"music": {"test": tmp_path / "music_test.CSV"}}
    assert "music_dev.json is not read" in caplog.text
    with pytest.raises(DataError, match="music_test.CSV: is a file, not a folder"):
        layout_files(tmp_path / "music_test.CSV")


def test_identity_folds_width_but_not_what_changes_the_meaning(tmp_path):
    from hf_ft.data.rows import normalise_text, option_problem

    assert normalise_text("ＡＢ１　㎏") == "AB1 kg"  # width and units: the same text
    assert normalise_text("x² H₂O 1½ ①②") == "x² H₂O 1½ ①②"  # NFKC would make these x2 H2O 11/2 12
    assert option_problem(["x²", "x2", "2x", "x"], "ABCD") is None  # a valid row, not "the same text"
    assert option_problem(["①②", "12", "①③", "②③"], "ABCD") is None
    assert option_problem(["Ａ", "A", "B", "C"], "ABCD")[0] == "same_options"
    path = write_csv(tmp_path / "x.csv", [["下列何者等於 x·x？", "x²", "x2", "2x", "x", "A"]])
    assert [r.options for r in load_files({"all": str(path)}).pools["all"]] == [("x²", "x2", "2x", "x")]


def test_a_run_recorded_under_the_old_hash_rule_is_still_checked_by_it():
    """A data_manifest.json written before (full NFKC) holds its training items' hashes under that rule; the
    held-out check hashes the scored items the same way, so a copy with a superscript is still found."""
    from hf_ft.data.rows import CONTENT_HASH_RULE, LEGACY_HASH_RULE, hash_for_rule
    from hf_ft.evaluation.items import check_held_out

    item = QARow("t-1", "music", "x² 等於？", ("x·x", "2x", "x+2", "x/2"), "A")
    old = {"hash": LEGACY_HASH_RULE, "content_hashes": {"train": [hash_for_rule(LEGACY_HASH_RULE)(item)]}}
    with pytest.raises(DataError.__mro__[1], match="1 of 1 items were in the fine-tuning data"):
        check_held_out([item], [("old/data_manifest.json", old)], allow_overlap=False)
    new = {"hash": CONTENT_HASH_RULE, "content_hashes": {"train": [hash_for_rule(LEGACY_HASH_RULE)(item)]}}
    assert check_held_out([item], [("new/data_manifest.json", new)], allow_overlap=False)[0] == [item]
    assert hash_for_rule(CONTENT_HASH_RULE)(item) == item.content_hash != hash_for_rule(LEGACY_HASH_RULE)(item)


def test_a_validation_file_is_never_pooled_into_training_silently(tmp_path):
    train = write_csv(tmp_path / "train.csv", [[f"第{i}題？", "一", "二", "三", "四", "A"] for i in range(30)])
    validation = write_csv(tmp_path / "val.csv", [[f"驗{i}？", "一", "二", "三", "四", "B"] for i in range(5)])
    loaded = load_files({"train": str(train), "validation": str(validation)})
    with pytest.raises(DataError, match="--validation_file: the resplit scheme .* its rows would not stay validation"):
        make_splits(loaded, "auto", 0, 0.1, (0.7, 0.25, 0.05))

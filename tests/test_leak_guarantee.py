"""The leak guarantee under inputs of other shapes than the happy path: an index cache is trusted by what it holds,
the unit checked is the context the model reads, test files that arrive later are checked too, and open book
asked for never silently becomes closed book. Property-based: for random corpora with planted held-out items
split at random places over neighbouring passages, no context that reaches the model holds one."""

from __future__ import annotations

import json
import random

import pytest
from conftest import TRAIN_ARGS, cli, train_in_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CHARS = "的一是不了人我在有他這中大來上國個到說們為子和你地出道也時年得就那要下以生會自著去之過家學對可她裡後小麼心多"


def _row(i, question, options=("甲乙", "丙丁", "戊己", "庚辛"), answer="A", subject="music", split="test"):
    from hf_ft.data.rows import QARow

    return QARow(f"{subject}_{split}-{i}", subject, question, tuple(options), answer, f"{split}.csv", i + 2)


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(CHARS) for _ in range(n))


# ----------------------------------------------------------------------------------------------
# 1. An index cache is served only when it holds the corpus


def _passages(texts):
    from hf_ft.retrieval.corpus import Passage

    return [Passage(f"p{i}", t) for i, t in enumerate(texts)]


def test_a_foreign_index_under_the_corpus_key_is_rebuilt_not_served(tmp_path, monkeypatch, caplog):
    from hf_ft.retrieval.corpus import content_hash
    from hf_ft.retrieval.index import BM25Index, index_key

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    mine = _passages(["玉山是臺灣最高的山。", "日月潭位於南投縣。"])
    foreign = _passages(["這份語料含有測驗題的答案。", "另一段外來的文字。", "第三段。"])
    built = BM25Index.build_or_load(foreign, content_hash(foreign), progress=False)
    built.path.rename(built.path.parent / index_key(content_hash(mine)))  # a stale copy under my corpus's key
    with caplog.at_level("WARNING"):
        index = BM25Index.build_or_load(mine, content_hash(mine), progress=False)
    assert [p.text for p in index.passages] == [p.text for p in mine]
    assert "is not used: it was built with other corpus_sha256, passages; rebuilding it" in caplog.text


@pytest.mark.parametrize("damage", ["passages", "record", "matrix"])
def test_a_damaged_index_cache_is_rebuilt(tmp_path, monkeypatch, caplog, damage):
    from hf_ft.retrieval.corpus import content_hash
    from hf_ft.retrieval.index import MATRIX_FILES, PASSAGES, BM25Index

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    mine = _passages(["玉山是臺灣最高的山。", "日月潭位於南投縣。", "淡水河流經臺北。"])
    index = BM25Index.build_or_load(mine, content_hash(mine), progress=False)
    target = {"passages": PASSAGES, "record": "hf_ft_index.json", "matrix": MATRIX_FILES[0]}[damage]
    (index.path / target).write_bytes(b"\x00garbage")
    with caplog.at_level("WARNING"):
        again = BM25Index.build_or_load(mine, content_hash(mine), progress=False)
    assert "rebuilding it" in caplog.text
    assert again.passages[again.search(["玉山"], 1)[0][0][0]].id == "p0"


# ----------------------------------------------------------------------------------------------
# 2. The unit is the assembled context


def _book_with_contexts(tmp_path, contexts: dict, held_out, policy="drop"):
    from hf_ft.retrieval.contexts import OpenBook
    from hf_ft.retrieval.settings import RetrievalArguments

    path = tmp_path / "contexts.jsonl"
    path.write_text("".join(json.dumps({"id": i, "passages": [{"id": f"{i}-{n}", "text": t, "score": 1.0}
                                                                for n, t in enumerate(texts)]},
                                       ensure_ascii=False) + "\n" for i, texts in contexts.items()), encoding="utf-8")
    return OpenBook.build(RetrievalArguments(retrieval_contexts=str(path), leak_policy=policy, retrieval_k=10), [], held_out)


def test_an_item_split_over_two_passages_is_caught_in_the_context(tmp_path):
    """Each half holds under half the item's 13-grams, so the per-passage check passes both; the context the
    model reads holds the whole item, and is removed."""
    rng = random.Random(0)
    item = _row(0, _text(rng, 40), answer="B")
    gold = item.options[item.label]
    halves = [_text(rng, 30) + item.question[:24], item.question[24:] + gold + _text(rng, 30)]
    reader = _row(5, _text(rng, 30), split="train")
    book = _book_with_contexts(tmp_path, {reader.id: halves, item.id: [_text(rng, 50)]}, [item])
    assert book.leak["passages_leaking"] == 0  # the old unit sees nothing
    attached, _ = book.attach([reader, item])
    guarded, record = book.guard({"train": attached[:1], "test": attached[1:]}, [item], "test")
    assert guarded["train"][0].context is None and guarded["test"][0].context is not None
    assert record["contexts_removed"] == 1 and record["leaks"] == [{"item": item.id, "found_in": f"train {reader.id}"}]


def test_leak_policy_error_refuses_and_keep_records(tmp_path):
    from hf_ft.core.errors import UserError

    rng = random.Random(1)
    item = _row(0, _text(rng, 40))
    halves = [item.question[:20], item.question[20:] + item.options[0]]
    reader = _row(1, _text(rng, 20), split="train")
    for policy in ("error", "keep"):
        book = _book_with_contexts(tmp_path, {reader.id: halves}, [item], policy)
        attached, _ = book.attach([reader])
        if policy == "error":
            with pytest.raises(UserError, match=f"hold 1 held-out item.*item {item.id} in the context of train"):
                book.guard({"train": attached}, [item], "open book")
        else:
            guarded, record = book.guard({"train": attached}, [item], "open book")
            assert guarded["train"][0].context == attached[0].context and record["contexts_leaking"] == 1


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), planted=st.integers(1, 4), passages=st.integers(2, 6),
       question_length=st.integers(8, 60), gold_length=st.integers(1, 12), k=st.integers(1, 6))
def test_no_context_that_reaches_the_model_holds_a_planted_item(tmp_path_factory, seed, planted, passages,
                                                               question_length, gold_length, k):
    """Planted held-out items (question + gold) cut at random places over consecutive passages of random readers'
    contexts; whatever the cut, what the model reads never holds an item's question and answer."""
    from hf_ft.retrieval.text import normalise

    rng = random.Random(seed)
    items = [_row(i, _text(rng, question_length), (_text(rng, gold_length), "乙", "丙", "丁")) for i in range(planted)]
    contexts = {}
    readers = [_row(100 + j, _text(rng, 20), split="train") for j in range(planted + 2)]
    for j, reader in enumerate(readers):
        texts = [_text(rng, rng.randint(5, 60)) for _ in range(passages)]
        if j < planted:  # this reader's passages carry item j, cut into pieces at random places
            whole = items[j].question + items[j].options[0]
            cuts = sorted(rng.sample(range(1, len(whole)), min(len(whole) - 1, rng.randint(1, passages - 1))))
            pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)])]
            start = rng.randint(0, max(0, passages - len(pieces)))
            for n, piece in enumerate(pieces):
                at = min(start + n, passages - 1)
                texts[at] = (texts[at][-rng.randint(0, 5):] if n == 0 else "") + piece + (
                    texts[at][:rng.randint(0, 5)] if n == len(pieces) - 1 else "")
        contexts[reader.id] = texts
    book = _book_with_contexts(tmp_path_factory.mktemp("p"), contexts, items)
    book.settings.retrieval_k = passages
    attached, _ = book.attach(readers)
    guarded, _ = book.guard({"train": attached}, items, "property")
    for row in guarded["train"]:
        read = normalise(row.context or "")
        for item in items:
            assert normalise(item.question + item.options[0]) not in read


# ----------------------------------------------------------------------------------------------
# 3. Test items that arrive later, and predict


def test_evaluate_checks_the_contexts_of_a_test_file_the_training_never_saw(tmp_path, demo_data, tiny_model,
                                                                           monkeypatch):
    """An open-book run whose corpus holds a later test file's items whole (the training's check could not know
    them): scoring that file finds the copies in what the model would read and removes those contexts (the run's
    --leak_policy drop), saying where."""
    from hf_ft.data.sources import load_data_dir
    from hf_ft.evaluation.scoring import load_scorer

    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    rng = random.Random(3)
    later = [_row(i, _text(rng, 36), (_text(rng, 4), "乙", "丙", "丁"), subject="music", split="later")
             for i in range(3)]
    training = load_data_dir(str(demo_data), "music").pools["dev"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "facts.txt").write_text("\n".join([*(r.question for r in training[:5]),
                                                 *(r.question + r.options[0] for r in later)]) + "\n",
                                      encoding="utf-8")
    out = tmp_path / "run"
    train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects", "music",
                      "--output_dir", str(out), *TRAIN_ARGS, "--max_steps", "2", "--eval_strategy", "no",
                      "--save_strategy", "no", "--load_best_model_at_end", "false", "--retrieval_corpus",
                      str(corpus), "--retrieval_k", "3", "--passage_chars", "60", "--passage_overlap", "0"])
    scorer = load_scorer(str(out), use_cpu=True)
    scorer.score(later, progress=False)
    assert scorer.context_check["contexts_removed"] == len(later)
    assert all(r.get("removed_by_leak_check") for r in scorer.retrieved)
    assert {leak["item"] for leak in scorer.context_check["leaks"]} == {r.id for r in later}


# ----------------------------------------------------------------------------------------------
# 5. Open book asked for is open book; every refusal before the folder is written


def test_contexts_whose_ids_match_nothing_stop_before_the_folder_is_written(tmp_path, demo_data, tiny_model,
                                                                           capsys):
    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text(json.dumps({"id": "q-1", "passages": [{"id": "x", "text": "音樂常識", "score": 1}]},
                                   ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                        "--subjects", "music", "--output_dir", str(out), *TRAIN_ARGS, "--retrieval_contexts",
                        str(contexts)], capsys)
    assert code == 2 and "none of the" in err and "received a context" in err and "match none of the data" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == [".hf_ft.lock"] if out.exists() else True


def test_a_corpus_that_normalises_to_nothing_is_refused(tmp_path, demo_data, tiny_model, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "punctuation.txt").write_text("，。！？…… —— 、、\n\u200b\u200b\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                        "--subjects", "music", "--output_dir", str(out), *TRAIN_ARGS, "--retrieval_corpus",
                        str(corpus)], capsys)
    assert code == 2 and "has any text left after normalisation" in err, err
    assert not out.exists() or {p.name for p in out.iterdir()} <= {".hf_ft.lock"}


def test_a_refused_run_leaves_the_folder_so_the_corrected_command_runs(tmp_path, demo_data, tiny_model, capsys):
    """The leak policy `error` refuses after the corpus is read: the folder holds nothing of the run, and the
    corrected command (--leak_policy drop) trains into it."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    from hf_ft.data.sources import load_data_dir

    test_rows = load_data_dir(str(demo_data), "music").pools["test"]
    (corpus / "copy.txt").write_text(test_rows[0].question + test_rows[0].options[test_rows[0].label] + "\n",
                                     encoding="utf-8")
    (corpus / "facts.txt").write_text("\n".join("、".join(r.options) for r in load_data_dir(str(demo_data), "music")
                                                .pools["dev"]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    common = ["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects", "music",
              "--output_dir", str(out), *TRAIN_ARGS, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy",
              "no", "--load_best_model_at_end", "false", "--retrieval_corpus", str(corpus)]
    code, _, err = cli([*common, "--leak_policy", "error"], capsys)
    assert code == 2 and "copy" in err
    assert {p.name for p in out.iterdir()} <= {".hf_ft.lock"}
    code, _, err = cli([*common, "--leak_policy", "drop"], capsys)
    assert code == 0, err
    assert (out / "hf_ft_finished.json").is_file()


# ----------------------------------------------------------------------------------------------
# 4. Extra sources: checked after every transformation; a source that gives nothing is an error


def _simplified_source(path, extra_lines=()):
    from hf_ft.demo import make_extra_questions

    make_extra_questions(path, n=40, seed=5)
    lines = path.read_text(encoding="utf-8").splitlines() + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _extra_args(demo_data, tiny_model, out, *extra):
    return ["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects", "music",
            "--output_dir", str(out), *TRAIN_ARGS, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy",
            "no", "--load_best_model_at_end", "false", *extra]


def test_options_that_conversion_makes_equal_are_caught_after_it(tmp_path, demo_data, tiny_model, capsys):
    """发展 and 發展 differ as written; s2twp makes both 發展. The converted row fails the same check as a raw row
    with two equal options would, named by file and line."""
    twin = json.dumps({"question": "下列哪一个词语正确", "options": ["发展", "發展", "经济", "政治"], "answer": "A"},
                      ensure_ascii=False)
    path = _simplified_source(tmp_path / "extra.jsonl", [twin])
    line = len(path.read_text(encoding="utf-8").splitlines())
    code, _, err = cli(_extra_args(demo_data, tiny_model, tmp_path / "out", "--extra_data", str(path)), capsys)
    assert code == 2 and f"extra.jsonl:{line}:" in err and "after conversion to Traditional (s2twp)" in err, err
    assert not (tmp_path / "out").exists() or {p.name for p in (tmp_path / "out").iterdir()} <= {".hf_ft.lock"}
    code, _, err = cli(_extra_args(demo_data, tiny_model, tmp_path / "out2", "--extra_data", str(path),
                                   "--on_bad_rows", "skip"), capsys)
    assert code == 0, err
    rejected = [json.loads(x) for x in (tmp_path / "out2" / "rejected_rows.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [line] and "after conversion" in rejected[0]["reason"]


def test_a_source_that_copies_tmmluplus_is_refused_by_content(tmp_path, demo_data, tiny_model, capsys):
    """A mirror of TMMLU+ under another name: every row is a copy of a question the run reads, so nothing is
    left; that is a one-line error that says so, not a run trained without the source."""
    from hf_ft.data.sources import load_data_dir

    rows = [r for pool in load_data_dir(str(demo_data), "music").pools.values() for r in pool]
    mirror = tmp_path / "mirror" / "music_test.jsonl"
    mirror.parent.mkdir()
    mirror.write_text("".join(json.dumps({"question": r.question, "options": list(r.options), "answer": r.answer},
                                         ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code, _, err = cli(_extra_args(demo_data, tiny_model, tmp_path / "out", "--extra_data", str(mirror)), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "no row of it is left to train on" in err and "is it a copy or mirror of TMMLU+?" in err


# ----------------------------------------------------------------------------------------------
# 8. Estimates and environments


def test_an_unusable_hf_home_makes_a_slower_run_not_a_refused_one(tmp_path, demo_data, tiny_model, capsys,
                                                                    monkeypatch):
    """HF_HOME under a file (as unusable as a read-only one, which root could still write): the CSV tables, the
    tokenized sets and the BM25 index go to temporary folders, said once each; the run trains."""
    import hf_ft.core.caches
    from hf_ft.data.sources import load_data_dir

    hf_ft.core.caches._usable.cache_clear()
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "a-file" / "home"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "facts.txt").write_text("\n".join("、".join(r.options) for r in load_data_dir(str(demo_data), "music")
                                                .pools["dev"]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    try:
        code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                            "--subjects", "music", "--output_dir", str(out), *TRAIN_ARGS, "--max_steps", "2",
                            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                            "--retrieval_corpus", str(corpus)], capsys)
    finally:
        hf_ft.core.caches._usable.cache_clear()
    assert code == 0, err
    assert (out / "hf_ft_finished.json").is_file()


def test_the_memory_check_counts_the_batch_the_data_can_fill(tmp_path, demo_data, tiny_model, caplog):
    """A requested batch of 4096 over ~100 training rows is a batch of ~100: the estimate says so."""
    with caplog.at_level("INFO"):
        train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects",
                          "music", "--output_dir", str(tmp_path / "out"), *TRAIN_ARGS, "--max_steps", "1",
                          "--per_device_train_batch_size", "4096", "--per_device_eval_batch_size", "4096",
                          "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"])
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("memory: estimated"))
    assert "for 4096 ×" not in line and "largest batch" in line
    batch = int(line.split("largest batch")[1].split("for ")[1].split(" ×")[0])
    assert batch < 200, line


# ----------------------------------------------------------------------------------------------
# 6, 7. Shapes that waste or hide passages; settings no run can use, refused before any work


def test_duplicate_passages_are_left_out_and_skipped_files_are_named(tmp_path, caplog):
    from hf_ft.retrieval.contexts import OpenBook
    from hf_ft.retrieval.settings import RetrievalArguments

    corpus = tmp_path / "corpus"
    (corpus / ".git").mkdir(parents=True)
    (corpus / ".git" / "config").write_text("[core]")
    (corpus / "a.txt").write_text("玉山是臺灣最高的山。\n", encoding="utf-8")
    (corpus / "b.TXT").write_text("玉山是台湾最高的山。\n", encoding="utf-8")  # the same text in the other script
    (corpus / "c.md").write_text("日月潭位於南投縣。\n", encoding="utf-8")
    (corpus / "notes.docx").write_bytes(b"PK\x03\x04")
    with caplog.at_level("INFO"):
        book = OpenBook.build(RetrievalArguments(retrieval_corpus=str(corpus), retrieval_k=3), [], [], None)
    assert book.source["duplicates_removed"] == 1 and book.source["passages"] == 2
    assert "1 file(s) not read" in caplog.text and "notes.docx" in caplog.text and ".git" not in caplog.text


@pytest.mark.parametrize("extra, message", [
    (["--report_to", "wandb"], "--report_to wandb: its package is not installed here"),
    (["--gradient_checkpointing", "--gradient_checkpointing_kwargs", '{"use_reentrant": false, "reentrant": 1}'],
     "--gradient_checkpointing_kwargs: reentrant: not an option of torch.utils.checkpoint"),
    (["--gradient_checkpointing_kwargs", '{"use_reentrant": false}'],
     "--gradient_checkpointing_kwargs without --gradient_checkpointing: has no effect"),
    (["--early_stopping_patience", "3", "--num_train_epochs", "3"],
     "--early_stopping_patience 3: a run of 3 epoch(s) evaluates 3 time(s), so it could never stop early"),
])
def test_settings_no_run_can_use_are_refused_before_any_work(extra, message, tmp_path, demo_data, tiny_model,
                                                             capsys):
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                        "--output_dir", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_lettered_row_with_more_options_than_its_layout_is_named_not_cut(tmp_path, demo_data, tiny_model, capsys):
    path = tmp_path / "five.csv"
    path.write_text("question,A,B,C,D,E,answer\n哪一個正確,甲,乙,丙,丁,戊,E\n", encoding="utf-8")
    code, _, err = cli(_extra_args(demo_data, tiny_model, tmp_path / "out", "--extra_data",
                                   f"{path}?adapter=ceval"), capsys)
    assert code == 2 and "five.csv:2" in err and "beyond A-D" in err, err


def test_passages_far_longer_than_the_model_reads_are_refused(tmp_path, demo_data, tiny_model, capsys):
    """With --max_seq_length 128 the model reads the start of one 600-character passage: refused with the fix."""
    from hf_ft.data.sources import load_data_dir

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    options = "、".join("、".join(r.options) for r in load_data_dir(str(demo_data), "music").pools["dev"])
    (corpus / "long.txt").write_text((options * 20)[:5000] + "\n", encoding="utf-8")
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects",
                        "music", "--output_dir", str(tmp_path / "o"), *TRAIN_ARGS, "--retrieval_corpus", str(corpus),
                        "--passage_chars", "600", "--passage_overlap", "0"], capsys)
    assert code == 2 and "600 characters long (median), over twice what the model reads" in err, err
    assert "--passage_chars 128 or less" in err

"""Open book: retrieval that must help on a task built so it must, and cannot leak a held-out item."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli, python, run_cli, train_in_process


def _row(i, question, options=("甲", "乙", "丙", "丁"), answer="A", subject="music"):
    from hf_ft.data.rows import QARow

    return QARow(f"{subject}_test-{i}", subject, question, tuple(options), answer, "test.csv", i + 2)


# ----------------------------------------------------------------------------------------------
# Text as retrieval and the leak check see it


def test_a_corpus_is_normalised_exactly_as_each_text_alone():
    """normalise_many (one OpenCC call per chunk) is normalise, text by text, whatever the texts hold."""
    import random

    from hf_ft.retrieval.text import normalise, normalise_many, terms

    rng = random.Random(0)
    pieces = ["臺灣", "后", "發", "乾隆", "ＡＢＣ", "ß", "İ", "e\u0301", "\u0301", "\n", "\r\n", "\u200b", "\ufeff", " ",
              "，", "。", "\x00", "𠀋", "①", "ﬁ", "ｶ", "\u2028", "", "1.5"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(3000)] + [None, ""]
    assert normalise_many(texts, chunk=97) == [normalise(t) for t in texts]
    assert normalise("臺灣的ＡＢＣ，\u200b乾隆") == "台湾的abc乾隆"
    assert terms("台湾的") == ["台湾", "湾的"] and terms("铁") == ["铁"] and terms("") == []


def _opencc_keys():
    """Every key of the dictionaries OpenCC's t2s reads (phrases, characters, compatibility ideographs)."""
    import tempfile
    from pathlib import Path

    from hf_ft.retrieval import t2s

    share, tool = t2s._opencc_files()
    with tempfile.TemporaryDirectory() as folder:
        return {name: t2s._keys(tool, share / f"{name}.ocd2", Path(folder))
                for name in ("TSPhrases", "TSCharacters", "TSCharactersExt", "CJK_Compatibility_Ideographs")}


def _phrase_dense_texts(keys, count, seed=0):
    """Texts made to trip a table: whole phrase keys, their prefixes and suffixes (a key cut by a text's edge
    or by another key), characters of every dictionary, description sequences (whole, cut, at a text's end),
    letters that fold to several, and plain Han characters."""
    import random

    rng = random.Random(seed)
    phrases = keys["TSPhrases"]
    pieces = (phrases * 4 + [p[:k] for p in phrases for k in range(1, len(p))]
              + [p[k:] for p in phrases for k in range(1, len(p))] + keys["TSCharacters"] + keys["TSCharactersExt"]
              + keys["CJK_Compatibility_Ideographs"][:300] + [chr(c) for c in range(0x2FF0, 0x3000)]
              + ["\u31ef", "⿰氵青", "⿱艹⿰日月", "ß", "Σ", "ΣΑΣ", "ﬁ", "Ａ", " ", "，", "。", "\u0301", "𠀀"]
              + [chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(2000)])
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(count)] + ["", "⿰"]


def test_t2s_table_is_opencc_character_for_character(tmp_path, monkeypatch):
    """Normalising a corpus runs OpenCC t2s as a code-point table, and OpenCC itself only on the windows where
    a phrase key can match: the result must be OpenCC's on every text, on text made of nothing but keys."""
    import numpy as np

    from hf_ft.retrieval import t2s, text

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t2s.converter.cache_clear()
    tables = t2s.converter()
    assert tables is not None, "the opencc wheel ships its dictionaries and opencc_dict: the table must be used"
    keys = _opencc_keys()
    texts = _phrase_dense_texts(keys, 4000)
    expected = [t2s.opencc_t2s().convert(t) for t in texts]
    codes = np.frombuffer("\n".join(texts).encode("utf-32-le"), dtype=np.uint32)
    assert t2s.convert_codes(codes, tables).tobytes().decode("utf-32-le").split("\n") == expected
    assert text.normalise_many(texts, chunk=333) == [text.normalise(t) for t in texts]
    starts, ends, _ = t2s._windows(codes, tables, ord("\n"))
    assert 0 < (ends - starts).sum() < len(codes)  # windows where phrases are, the table everywhere else

    # built once, cached under HF_HOME; a damaged cache is built again, not read
    cached = list((tmp_path / "hf_ft" / "opencc").glob("t2s-*.npz"))
    assert len(cached) == 1
    t2s.converter.cache_clear()
    assert np.array_equal(t2s.converter().single, tables.single)
    cached[0].write_bytes(cached[0].read_bytes()[:1000])
    t2s.converter.cache_clear()
    assert np.array_equal(t2s.converter().flags, tables.flags)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "not-a-folder"))
    (tmp_path / "not-a-folder").write_text("")  # nowhere to cache: the tables are used all the same
    t2s.converter.cache_clear()
    assert np.array_equal(t2s.converter().single, tables.single)

    # a window whose conversion changes its length is spliced in (no OpenCC t2s key does so today)
    convert = t2s._convert
    monkeypatch.setattr(t2s, "_convert", lambda c: np.frombuffer(
        convert(c).tobytes().decode("utf-32-le").replace("乾隆", "乾隆帝").encode("utf-32-le"), dtype=np.uint32))
    mixed = ["乾隆年間", "臺灣", "他說乾隆", "乾"]
    codes = np.frombuffer("\n".join(mixed).encode("utf-32-le"), dtype=np.uint32)
    assert t2s.convert_codes(codes, tables).tobytes().decode("utf-32-le").split("\n") == [
        "乾隆帝年间", "台湾", "他说乾隆帝", "干"]
    monkeypatch.setattr(t2s, "_convert", convert)

    # without OpenCC's dictionaries, OpenCC converts whole texts: the same result
    monkeypatch.setattr(t2s, "_opencc_files", lambda: None)
    t2s.converter.cache_clear()
    assert t2s.converter() is None
    assert text.normalise_many(texts, chunk=333) == [text.normalise(t) for t in texts]
    t2s.converter.cache_clear()


def test_casefold_table_covers_every_cased_character():
    """The fold table holds str.casefold below text._CASED_BELOW; above it nothing folds."""
    import sys

    from hf_ft.retrieval import text

    assert all(chr(c).casefold() == chr(c) for c in range(text._CASED_BELOW, sys.maxunicode + 1))


# ----------------------------------------------------------------------------------------------
# The leak check


def test_leak_check_finds_copies_in_another_script_and_punctuation():
    from hf_ft.retrieval.leak import find_leaks
    from hf_ft.retrieval.text import to_simplified

    item = _row(0, "依據中華民國憲法增修條文之規定，立法委員之任期為幾年？", ("二年", "三年", "四年", "六年"), "C")
    short = _row(1, "何者為哺乳類？", ("鯨魚", "鯊魚", "章魚", "海星"))
    passages = [
        "立法院是國家最高立法機關。立法委員由人民選舉產生。",  # about the topic, not a copy
        to_simplified(item.question) + "（A）二年（B）三年（C）四年（D）六年",  # TCEval-style, Simplified
        "依據 中華民國憲法增修條文之規定 立法委員之任期為幾年 四年",  # reworded punctuation and spacing
        "題目：何者為哺乳類？答案：鯨魚",  # a question too short for 13-grams: the exact check
        "",
    ]
    report = find_leaks(passages, [item, short])
    assert sorted(report.leaking_passages) == [1, 2, 3]
    assert report.leaking_passages[1] == [item.id] and report.leaking_passages[3] == [short.id]
    assert report.items_hit == {item.id, short.id} and report.items_too_short == 1
    assert report.examples[0]["source"] == "test.csv:2"
    assert find_leaks(passages[:1], [item, short]).leaking_passages == {}


def test_leak_check_scales_to_many_passages_in_chunks(monkeypatch):
    """Passages are hashed in chunks: a copy at a chunk's edge, and windows that would span two passages."""
    from hf_ft.retrieval import leak

    monkeypatch.setattr(leak, "_CHUNK_CHARS", 50)
    item = _row(0, "下列關於臺灣氣候的敘述何者正確而且完整無誤？", ("夏季多雨", "冬季乾燥", "全年無雨", "四季如春"))
    filler = [f"第{i}段與題目無關的文字內容。" * 2 for i in range(40)]
    half = len(item.question) // 2
    passages = filler[:17] + [item.question + "夏季多雨"] + filler[17:] + [item.question[:half], item.question[half:]]
    report = leak.find_leaks(passages, [item])
    assert list(report.leaking_passages) == [17]  # the copy split over two passages is no copy of either


# ----------------------------------------------------------------------------------------------
# Corpora, the index and the training pool


def test_corpus_files_become_passages_with_ids(tmp_path):
    from hf_ft.core.errors import UserError
    from hf_ft.retrieval.corpus import read_local, split_text

    assert split_text("一二三四五六七八九十", 4, 1) == ["一二三四", "四五六七", "七八九十"]
    (tmp_path / "notes.md").write_text("臺灣的最高峰是玉山。" * 30, encoding="utf-8")
    (tmp_path / "table.jsonl").write_text(json.dumps({"id": "w1", "title": "玉山", "text": "玉山海拔3952公尺。"},
                                                     ensure_ascii=False) + "\n", encoding="utf-8")
    passages = read_local(str(tmp_path), 100, 20)
    assert [p.id for p in passages][:2] == ["notes.md#0", "notes.md#1"] and passages[-1].id == "w1#0"
    assert all(len(p.text) <= 100 for p in passages) and passages[-1].title == "玉山"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no passages to read"):
        read_local(str(empty), 100, 20)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "t.jsonl").write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"t.jsonl:1: no 'text' column \(found: body\)"):
        read_local(str(tmp_path / "bad"), 100, 20)


def test_index_is_cached_by_content_and_never_half_written(tmp_path, monkeypatch):
    from hf_ft.retrieval.corpus import Passage, content_hash
    from hf_ft.retrieval.index import BM25Index

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    passages = [Passage(f"p{i}", text) for i, text in enumerate(
        ["玉山是臺灣最高的山。", "日月潭位於南投縣。", "台北101曾是世界最高的大樓。", "淡水河流經臺北。"])]
    index = BM25Index.build_or_load(passages, content_hash(passages), progress=False)
    # Simplified query, Traditional corpus (OpenCC t2s on both sides), and a 台/臺 variant
    assert index.passages[index.search(["玉山是台湾最高的山吗"], 1)[0][0][0]].id == "p0"
    assert index.passages[index.search(["臺北101大樓"], 1)[0][0][0]].id == "p2"
    again = BM25Index.build_or_load(passages, content_hash(passages), progress=False)
    assert again.path == index.path and len(list(index.path.parent.iterdir())) == 1  # loaded, not rebuilt
    changed = passages[:3] + [Passage("p3", "淡水河流經新北。")]
    other = BM25Index.build_or_load(changed, content_hash(changed), progress=False)
    assert other.path != index.path  # another corpus never reuses the cache
    assert [i for i, _ in index.search(["玉山"], 2)[0]] == [0]
    assert index.search(["玉山"], 2, exclude=["p0"]) == [[]]  # leave-one-out: the only match is itself


def test_vectorised_index_scores_like_bm25s_own_builder(tmp_path, monkeypatch):
    """hf_ft builds bm25s' score matrix with numpy (a million passages in a few GB); the ranking and the scores
    must be those of bm25s indexing the same terms itself, over several chunks of passages."""
    import random

    from hf_ft.retrieval import scores as build_module

    monkeypatch.setattr(build_module, "_CHUNK", 97)
    import bm25s

    from hf_ft.retrieval.corpus import Passage, content_hash
    from hf_ft.retrieval.index import BM25Index
    from hf_ft.retrieval.scores import term_codes
    from hf_ft.retrieval.text import normalise, terms

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    rng = random.Random(0)
    chars = "的一是不了人我在有他這中大來上國個到說們為子和你地出道也時年得就那要下以生會自著去之過家學對可"
    texts = ["".join(rng.choice(chars) for _ in range(rng.randint(1, 120))) for _ in range(600)] + ["A.B c"]
    codes, owner = term_codes([normalise(t) for t in texts[:50]])
    assert len(codes) == sum(len(terms(normalise(t))) for t in texts[:50]) and owner.max() == 49
    passages = [Passage(str(i), t) for i, t in enumerate(texts)]
    index = BM25Index.build_or_load(passages, content_hash(passages), progress=False)
    reference = bm25s.BM25(k1=1.5, b=0.75)
    reference.index([terms(normalise(t)) for t in texts], show_progress=False)
    queries = ["".join(rng.choice(chars) for _ in range(30)) for _ in range(100)]
    mine = index.search(queries, 5)
    docs, scores = reference.retrieve([terms(normalise(q)) for q in queries], k=5, show_progress=False)
    assert [[d for d, _ in m] for m in mine] == docs.tolist()
    np.testing.assert_allclose([[s for _, s in m] for m in mine], scores, atol=1e-5)
    assert index.search(["ㄅㄆㄇ"], 5) == [[]]  # no term in the corpus: nothing, not an error
    from hf_ft.retrieval import index as search_module

    monkeypatch.setattr(search_module, "NUMBA_FROM_WORK", 0)  # the jitted backend, used for large searches
    assert index.search(queries, 5) == mine and index.retriever.backend == "numba"


def test_index_matrix_is_the_same_from_worker_processes_and_reloads_its_passages(tmp_path, monkeypatch):
    """A large corpus is normalised and counted here and in worker processes, chunk by chunk; the matrix must be
    the one a single process builds (no chunk's terms lost or double-counted across the vocabulary merges),
    and a reloaded index must hold the passages it was built from."""
    import random
    import sys

    from hf_ft.retrieval import scores as build_module
    from hf_ft.retrieval.corpus import Passage, content_hash
    from hf_ft.retrieval.index import BM25Index
    from hf_ft.retrieval.scores import build_scores

    rng = random.Random(3)
    chars = "的一是不了人我在有他這中大來上國個到說們為子和你地出道也時年得就那要下以生會自著去之過家學對可"
    texts = ["".join(rng.choice(chars) for _ in range(rng.randint(0, 80))) for _ in range(900)] + ["漢", "A"]
    single, single_vocab = build_scores(texts, progress=False, workers=1)
    assert build_scores(["", "。"], progress=False)[0]["indptr"].tolist() == [0]  # a chunk without a term
    monkeypatch.setattr(build_module, "_CHUNK_CHARS", 3_000)  # ~75 texts a chunk: 13 chunks
    monkeypatch.setattr(build_module, "_MERGE_FROM", 2_000)  # several merges of the vocabulary
    assert len(build_module._spans(texts)) > 10
    forked, forked_vocab = build_scores(texts, progress=False, workers=2)
    np.testing.assert_array_equal(forked_vocab, single_vocab)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(forked[name], single[name])
    with monkeypatch.context() as patch:  # a worker that dies is an error, not a wait for ever
        patch.setattr(sys, "executable", "/bin/false")
        with pytest.raises(RuntimeError, match="a BM25 indexing worker failed"):
            build_scores(texts, progress=False, workers=2)
    passages = [Passage(str(i), t, "題" if i % 7 == 0 else "") for i, t in enumerate(texts)]
    built = BM25Index.build_or_load(passages, content_hash(passages), root=tmp_path, progress=False)
    again = BM25Index.build_or_load(passages, content_hash(passages), root=tmp_path, progress=False)
    assert again.passages == passages == built.passages
    assert again.search(texts[:20], 3) == built.search(texts[:20], 3)
    assert sorted(f.name for f in tmp_path.iterdir()) == [built.key]  # no scratch or partial folder left


def test_training_pool_never_retrieves_the_question_itself_or_a_held_out_one(tmp_path, monkeypatch, demo_data):
    from hf_ft.data.sources import load_data_dir
    from hf_ft.data.splits import make_splits
    from hf_ft.retrieval.contexts import OpenBook
    from hf_ft.retrieval.settings import RetrievalArguments

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    splits = make_splits(load_data_dir(str(demo_data), "all"), "official", 0, 0.1, (0.8, 0.1, 0.1),
                         needs_validation=True)
    book = OpenBook.build(RetrievalArguments(retrieval_corpus="training_pool", retrieval_k=3), splits.train,
                          splits.validation + splits.test)
    train_ids = {r.id for r in splits.train}
    rows, records = book.attach(splits.train, leave_one_out=True)
    assert all(r["id"] not in {p["id"] for p in r["passages"]} for r in records)
    held_out, held_records = book.attach(splits.test)
    assert all({p["id"] for p in r["passages"]} <= train_ids for r in held_records)
    assert all(row.context and "答案：" in row.context for row in rows + held_out)
    assert book.record()["source"] == {**book.source, "kind": "training_pool"}


def test_precomputed_contexts_are_read_and_leak_checked(tmp_path):
    from hf_ft.retrieval.contexts import OpenBook
    from hf_ft.retrieval.settings import RetrievalArguments

    item = _row(0, "依據中華民國憲法增修條文之規定，立法委員之任期為幾年？", ("二年", "三年", "四年", "六年"), "C")
    path = tmp_path / "contexts.jsonl"
    path.write_text(json.dumps({"id": item.id, "passages": [
        {"id": "a", "text": "立法委員任期四年，連選得連任。", "score": 3.0},
        {"id": "b", "text": item.question + "答案四年", "score": 2.0}]}, ensure_ascii=False) + "\n", encoding="utf-8")
    book = OpenBook.build(RetrievalArguments(retrieval_contexts=str(path)), [], [item])
    (row,), (record,) = book.attach([item])
    assert row.context == "立法委員任期四年，連選得連任。" and record["passages"] == [{"id": "a", "score": 3.0}]
    assert record["gold_in_context"] and book.leak["passages_dropped"] == 1

    # The run records the parsed settings under their flag names, and reads them back; a run recorded before
    # (short names: corpus, contexts, k, ...) is read the same way.
    recorded = book.record(tmp_path / "run")
    assert recorded["settings"]["retrieval_contexts"] == "../contexts.jsonl"
    assert recorded["relative_paths"] == ["retrieval_contexts"]
    again = OpenBook.from_record(recorded, tmp_path / "run")
    assert again.settings == book.settings  # (evaluate's scorer guards what it attaches: test_leak_guarantee)
    old = {"corpus": None, "contexts": "../contexts.jsonl", "config": None, "revision": None, "split": "train",
           "text_column": "text", "k": 5, "query": "question_options", "passage_chars": 200, "passage_overlap": 50,
           "leak_policy": "drop"}
    before = OpenBook.from_record({**recorded, "settings": old, "relative_paths": ["contexts"]}, tmp_path / "run")
    assert before.settings == book.settings


# ----------------------------------------------------------------------------------------------
# Bad settings and corpora: one line, before any training


@pytest.mark.parametrize("line, message", [
    ('{"id": "a"}', "gold.jsonl:2: need"), ('{"id": "a", "passages": []}', "gold.jsonl:2: need"),
    ('["a"]', "gold.jsonl:2: need"), ('{"id": "a", "passages": [" "]}', "gold.jsonl:2: need"),
    ("{oops", "gold.jsonl:2")])
def test_gold_passage_files_are_read_or_named_by_line(tmp_path, line, message):
    from hf_ft.core.errors import UserError
    from hf_ft.retrieval.corpus import read_gold_passages

    good = '{"id": "music_test-2", "passages": ["fact-1", 7]}'
    (tmp_path / "gold.jsonl").write_text(good + "\n", encoding="utf-8")
    assert read_gold_passages(str(tmp_path / "gold.jsonl")) == {"music_test-2": {"fact-1", "7"}}
    (tmp_path / "gold.jsonl").write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_gold_passages(str(tmp_path / "gold.jsonl"))


@pytest.mark.parametrize("extra, message", [
    (["--retrieval_k", "0"], "--retrieval_k 0: need 1 or more passages"),
    (["--passage_overlap", "300"], "--passage_overlap 300: need less than --passage_chars 200"),
    (["--passage_overlap", "-1"], "--passage_overlap -1: need 0 or more"),
    (["--retrieval_contexts", "x.jsonl"], "give one (a corpus to search, or contexts"),
])
def test_retrieval_settings_that_cannot_make_sense_are_refused(extra, message, tmp_path, demo_data, tiny_model,
                                                               capsys):
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                        "--output_dir", str(tmp_path / "o"), "--retrieval_corpus", str(demo_data), *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, message", [
    (["--retrieval_k", "3"], "--retrieval_k without --retrieval_corpus or --retrieval_contexts: has no effect"),
    (["--retrieval-corpus-revision", "v1"], "--retrieval_corpus_revision without --retrieval_corpus: has no effect"),
    (["--push_test_items"], "--push_test_items without --push_to_hub: has no effect"),
])
def test_a_flag_without_the_one_it_works_with_is_refused(extra, message, tmp_path, demo_data, tiny_model, capsys):
    """Closed book, a retrieval flag would be ignored; a dashed alias counts as given like the flag itself."""
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                        "--output_dir", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_corpus_with_nothing_to_read_stops_before_training(tmp_path, demo_data, tiny_model):
    (tmp_path / "empty").mkdir()
    result = run_cli(python("run_qa.py", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                            "--output_dir", str(tmp_path / "o"), "--use_cpu", "--retrieval_corpus",
                            str(tmp_path / "empty")), env={"HF_HOME": str(tmp_path / "home")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --retrieval_corpus {tmp_path / 'empty'}: no passages to read (no text in .txt, .md, .jsonl, "
        ".json, .csv, .parquet files)")
    assert not list((tmp_path / "o").glob("checkpoint-*"))


# ----------------------------------------------------------------------------------------------
# The demo: closed book at chance, open book clearly above, through the comparison we already have


@pytest.mark.slow
def test_open_book_beats_closed_book_on_facts_the_model_never_saw(tmp_path, monkeypatch, capsys):
    from hf_ft.core.errors import UserError
    from hf_ft.demo import make_open_book_data, make_tiny_model
    from hf_ft.evaluation.evaluate import EvaluateArguments, run

    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    data, corpus = make_open_book_data(tmp_path / "ob", rows_per_subject=160, seed=0)
    model = make_tiny_model(tmp_path / "model", [data, corpus], hidden_size=128, num_heads=4, intermediate_size=256)
    common = ["--model_name_or_path", str(model), "--data_dir", str(data), "--use_cpu", "--seed", "0",
              "--max_seq_length", "96", "--num_train_epochs", "12", "--per_device_train_batch_size", "16",
              "--learning_rate", "1e-3", "--warmup_steps", "0.1", "--save_strategy", "no", "--eval_strategy", "no",
              "--load_best_model_at_end", "false"]
    closed = train_in_process([*common, "--output_dir", str(tmp_path / "closed")])
    opened = train_in_process([*common, "--output_dir", str(tmp_path / "open"), "--retrieval_corpus", str(corpus),
                               "--retrieval_k", "2"])
    assert closed["test_accuracy"] < 0.40  # nothing in a question says which value is right
    report = run(EvaluateArguments(original=str(tmp_path / "closed"), finetuned=str(tmp_path / "open"),
                                   output_dir=str(tmp_path / "cmp"), use_cpu=True,
                                   gold_passages=str(tmp_path / "ob" / "gold_passages.jsonl")))
    paired = report["paired"]["overall"]
    assert paired["difference_ci95"][0] > 0, paired  # the paired CI of open − closed excludes 0
    assert report["finetuned"]["accuracy"] == pytest.approx(opened["test_accuracy"])  # evaluate retrieves the same
    retrieval = report["retrieval"]["fine-tuned"]
    assert retrieval["gold_in_context"] > 0.95 and retrieval["context_tokens_per_item"] > 10
    assert retrieval["items_with_gold_passages"] == report["items"]  # the demo knows every item's fact
    assert retrieval["recall_at"]["1"] > 0.95 and retrieval["recall_at"]["2"] >= retrieval["recall_at"]["1"]
    with pytest.raises(UserError, match="no model here retrieves passages"):
        run(EvaluateArguments(original=str(tmp_path / "closed"), finetuned=str(tmp_path / "closed"),
                              output_dir=str(tmp_path / "cmp2"), use_cpu=True,
                              gold_passages=str(tmp_path / "ob" / "gold_passages.jsonl")))
    assert "original" not in report["retrieval"]  # the closed-book model reads no context
    contexts = (tmp_path / "cmp" / "retrieved_contexts-fine-tuned.jsonl").read_text().splitlines()
    assert len(contexts) == report["items"]
    card = (tmp_path / "open" / "README.md").read_text(encoding="utf-8")
    assert "open book (retrieval)" in card and "leak check" in card
    for name in ("hf_ft_run.json", "data_manifest.json", "README.md"):  # recorded paths are relative
        assert str(tmp_path) not in (tmp_path / "open" / name).read_text(encoding="utf-8"), name
    # predict finds the run's index through its record, and rebuilds it when the cache is gone
    question = json.loads(contexts[0])
    import shutil

    shutil.rmtree(tmp_path / "home" / "hf_ft" / "bm25")
    code, out, err = cli(["predict", str(tmp_path / "open"), "--question", "請問甲乙丙村飼養的動物是下列何者？",
                          "--choices", "老虎", "獅子", "大象", "熊貓", "--json"], capsys)
    assert code == 0, err[-2000:]
    assert len(json.loads(out.strip().splitlines()[-1])["context_passages"]) == 2 and question["passages"]

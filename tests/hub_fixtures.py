"""Local git repositories in the hub's layout, for a loopback hub server (olah) to serve as the real thing:

    datasets/ikala/tmmluplus             data/<subject>_{dev,val,test}.csv for all 67 subjects at TMMLU+'s
                                         per-subject sizes (× --scale), a README whose `configs:` block maps
                                         train→_dev, validation→_val, test→_test for the 66 official subjects;
                                         tags v1.0 and v1.1 (v1.1 drops and corrects rows, as the real one), and
                                         a later commit adding _train.csv files for some subjects
    models/google-bert/bert-base-chinese bert-base-chinese's config and tokenizer layout (21,128 ids, [PAD]=0,
                                         [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103), random weights, a
                                         masked-LM head; `--model-size small` keeps the tokenizer and shrinks
                                         the encoder, for fast tests

The text is synthetic, with TMMLU+'s lengths (questions ~50 tokens, options ~12) and its quirks: quoted
commas and line breaks, numbers that must stay strings, a final "。" on one option in some subjects,
stray spaces. Nothing here is committed to the project: the files are written where you say.
"""

from __future__ import annotations

import csv
import io
import os
import random
import subprocess
from importlib import resources
from pathlib import Path

from hf_ft.core.errors import ArgumentParser, UserError, writable_folder
from hf_ft.data.rows import LETTERS

DATASET_REPO = "datasets/ikala/tmmluplus"
MODEL_REPO = "models/google-bert/bert-base-chinese"
V10_TOTALS = {"test": 20118, "dev": 330, "val": 2242}
V11_REMOVED, V11_CORRECTED = 539, 197
TEXT = ("的一是不了人我在有他這中大來上國個到說們為子和你地出道也時年得就那要下以生會自著去之過家學對可她裡後小麼心多"
        "天而能好都然沒日於起還發成事只作當想看文無開手十用主行方又如前所本見經頭面公同三已老從動兩長知民樣現分將外"
        "但身些與高意進把法此實回二理美點月明其種聲全工己話兒者向情部正名定女問力機給等幾很業最間新什打便位因重被走"
        "電四第門相次東政海口使教西再平真聽世氣信北少關並內加化由卻代軍產入先山五太水萬市眼體別處總才場師書比住員九")
BERT_BASE_CHINESE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
GIT_ENV = {"GIT_AUTHOR_NAME": "hf_ft fixtures", "GIT_AUTHOR_EMAIL": "fixtures@hf-ft.invalid",
           "GIT_COMMITTER_NAME": "hf_ft fixtures", "GIT_COMMITTER_EMAIL": "fixtures@hf-ft.invalid"}


def subject_table() -> list[dict]:
    text = resources.files("hf_ft.resources").joinpath("tmmluplus_subjects.tsv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


def _git(repo: Path, *args: str, date: str = "2024-01-01T00:00:00+00:00") -> str:
    env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    done = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


def _commit(repo: Path, message: str, date: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message, date=date)
    return _git(repo, "rev-parse", "HEAD")


# ----------------------------------------------------------------------------------------------
# The dataset


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(TEXT) for _ in range(n))


def _question(rng: random.Random) -> str:
    r = rng.random()
    n = rng.randint(15, 60) if r < 0.6 else rng.randint(60, 160) if r < 0.92 else rng.randint(160, 400)
    text = _text(rng, n)
    quirk = rng.random()
    if quirk < 0.05:  # a quoted passage with commas and a line break: needs CSV quoting
        text = f"閱讀下文，回答問題：「{_text(rng, 20)}，{_text(rng, 10)}」\n{text}"
    elif quirk < 0.08:
        text = f"{text}（{rng.randint(1, 99)}%）"
    return text + "？"


def _option(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.06:  # numbers stay strings: 0.50, 007, 1/2
        return rng.choice(["0.50", "1.0", "007", f"{rng.randint(1, 9)}/{rng.randint(2, 9)}", f"{rng.randint(10, 999)}"])
    return _text(rng, rng.randint(2, 22)) + (" " if rng.random() < 0.02 else "")


def _row(rng: random.Random, period_subject: bool) -> dict:
    from hf_ft.data.rows import normalise_text

    options = [_option(rng) for _ in LETTERS]
    seen = set()
    for k, option in enumerate(options):  # the options of a row differ (without drawing again: same stream)
        while normalise_text(options[k]) in seen:
            options[k] = options[k].rstrip() + "甲"
        seen.add(normalise_text(options[k]))
    if period_subject and rng.random() < 0.3:  # the real quirk: a final "。" on one option only
        k = rng.randrange(4)
        options[k] = options[k].rstrip() + "。"
    return {"question": _question(rng), **dict(zip(LETTERS, options)), "answer": rng.choice(LETTERS)}


def _write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["question", *LETTERS, "answer"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _readme(subjects: list[dict]) -> str:
    lines = ["---", "license: mit", "language:", "- zh", "task_categories:", "- question-answering", "configs:"]
    for s in subjects:
        if s["in_official_66"] != "yes":
            continue  # linear_algebra: files, but no config (as the real repository)
        lines += [f"- config_name: {s['subject']}", "  data_files:"]
        for split, suffix in (("train", "dev"), ("validation", "val"), ("test", "test")):
            lines += [f"  - split: {split}", f"    path: data/{s['subject']}_{suffix}.csv"]
    lines += ["---", "", "# TMMLU+ (hf_ft fixture)", "",
              "Synthetic questions in ikala/tmmluplus's layout and sizes, for offline tests of the hub path."]
    return "\n".join(lines) + "\n"


def write_dataset_repo(root: Path, scale: float = 1.0, seed: int = 0) -> dict:
    """The dataset repository with its three commits; returns {"v1.0": sha, "v1.1": sha, "main": sha, ...}."""
    repo = root / DATASET_REPO
    (repo / "data").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    rng = random.Random(seed)
    table = subject_table()
    period_subjects = {s["subject"] for s in table[::9]}
    files: dict[str, list[dict]] = {}
    for s in table:
        test = max(2, round(int(s["test_rows_v1_0"]) * scale))
        val = max(1, round(test * V10_TOTALS["val"] / V10_TOTALS["test"]))
        for split, n in (("dev", int(s["dev_rows_v1_0"])), ("val", val), ("test", test)):
            rows = [_row(rng, s["subject"] in period_subjects) for _ in range(n)]
            files[f"data/{s['subject']}_{split}.csv"] = rows
    for name, rows in files.items():
        _write_csv(repo / name, rows)
    (repo / "README.md").write_text(_readme(table), encoding="utf-8")
    (repo / ".gitattributes").write_text("*.csv text eol=lf\n", encoding="utf-8")
    shas = {"v1.0": _commit(repo, "TMMLU+ v1.0", "2024-01-01T00:00:00+00:00")}
    _git(repo, "tag", "v1.0")
    total = sum(len(r) for r in files.values())
    removed = max(1, round(total * V11_REMOVED / sum(V10_TOTALS.values())))
    corrected = max(1, round(total * V11_CORRECTED / sum(V10_TOTALS.values())))
    places = [(name, i) for name, rows in files.items() for i in range(1, len(rows)) if not name.endswith("_dev.csv")]
    chosen = rng.sample(places, removed + corrected)
    drop = set(chosen[:removed])
    for name, i in chosen[removed:]:
        row = files[name][i]
        row["answer"] = LETTERS[(LETTERS.index(row["answer"]) + 1) % 4]
    for name in files:
        files[name] = [row for i, row in enumerate(files[name]) if (name, i) not in drop]
        _write_csv(repo / name, files[name])
    shas["v1.1"] = _commit(repo, f"TMMLU+ v1.1: {removed} questions removed, {corrected} answers corrected",
                           "2024-06-01T00:00:00+00:00")
    _git(repo, "tag", "v1.1")
    for k, s in enumerate(t for t in table if t["in_official_66"] == "yes" and int(t["test_rows_v1_0"]) > 300):
        dev = files[f"data/{s['subject']}_dev.csv"]
        train = dev if k % 2 == 0 else [_row(rng, False) for _ in range(len(dev))]
        _write_csv(repo / f"data/{s['subject']}_train.csv", train)
    shas["main"] = _commit(repo, "add _train.csv files for some subjects", "2025-01-01T00:00:00+00:00")
    shas["rows_v1_0"] = total
    shas["rows_v1_1"] = sum(len(r) for r in files.values())
    return shas


# ----------------------------------------------------------------------------------------------
# Retrieval corpora: Chinese Wikipedia's layout, and TCEval-v2, which holds TMMLU+ v1.0's test split

WIKIPEDIA_REPO = "datasets/wikimedia/wikipedia"
WIKIPEDIA_CONFIG = "20231101.zh"
TCEVAL_REPO = "datasets/MediaTek-Research/TCEval-v2"


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _configs_readme(configs: dict[str, dict[str, str]], license: str) -> str:
    lines = ["---", f"license: {license}", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {pattern}" for split, pattern in splits.items()]
    return "\n".join(lines) + "\n---\n"


def write_wikipedia_repo(root: Path, articles: int = 300, seed: int = 0) -> str:
    """`wikimedia/wikipedia` config `20231101.zh`: one parquet of id, url, title, text, in Simplified script
    (as zh.wikipedia serves it). Returns the commit."""
    from hf_ft.retrieval.text import to_simplified

    repo = root / WIKIPEDIA_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    rng = random.Random(seed)
    rows = []
    for i in range(articles):
        title = to_simplified(_text(rng, rng.randint(2, 5)))
        body = "。".join(to_simplified(_text(rng, rng.randint(20, 80))) for _ in range(rng.randint(2, 8))) + "。"
        rows.append({"id": str(1000 + i), "url": f"https://zh.wikipedia.org/wiki/{title}", "title": title, "text": body})
    _parquet(repo / WIKIPEDIA_CONFIG / "train-00000-of-00001.parquet", rows)
    (repo / "README.md").write_text(_configs_readme(
        {WIKIPEDIA_CONFIG: {"train": f"{WIKIPEDIA_CONFIG}/train-*"}}, "cc-by-sa-3.0"), encoding="utf-8")
    return _commit(repo, "20231101.zh", "2024-01-01T00:00:00+00:00")


def write_tceval_repo(root: Path, subjects: list[str]) -> str:
    """`MediaTek-Research/TCEval-v2` configs `tmmluplus-<subject>`: TMMLU+ v1.0's test (and dev) rows verbatim,
    read from the TMMLU+ fixture at its v1.0 tag, as the real repo holds them. Returns the commit."""
    source = root / DATASET_REPO
    repo = root / TCEVAL_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    configs = {}
    for subject in subjects:
        for split, suffix in (("test", "test"), ("dev", "dev")):
            text = subprocess.run(["git", "-C", str(source), "show", f"v1.0:data/{subject}_{suffix}.csv"],
                                  check=True, capture_output=True, text=True).stdout
            rows = list(csv.DictReader(io.StringIO(text)))
            _parquet(repo / f"tmmluplus-{subject}" / f"{split}-00000-of-00001.parquet", rows)
        configs[f"tmmluplus-{subject}"] = {"test": f"tmmluplus-{subject}/test-*", "dev": f"tmmluplus-{subject}/dev-*"}
    (repo / "README.md").write_text(_configs_readme(configs, "apache-2.0"), encoding="utf-8")
    return _commit(repo, "TCEval-v2", "2024-01-05T00:00:00+00:00")


# ----------------------------------------------------------------------------------------------
# Other Chinese exam sets, in their real layouts (../shared/reference/extra_datasets.md), in Simplified script,
# with planted copies of TMMLU+ rows that the contamination check must catch.

CEVAL_REPO = "datasets/ceval/ceval-exam"
CMMLU_REPO = "datasets/haonan-li/cmmlu"
C3_REPO = "datasets/dataset-org/c3"
CLUE_REPO = "datasets/clue/clue"
AGIEVAL_REPO = "datasets/hails/agieval-gaokao-history"


def _simplified_row(rng: random.Random, n_options: int = 4) -> dict:
    from hf_ft.retrieval.text import to_simplified

    options = []
    while len(options) < n_options:
        option = to_simplified(_text(rng, rng.randint(2, 10)))
        if option not in options:
            options.append(option)
    return {"question": to_simplified(_text(rng, rng.randint(20, 60))) + "？", "options": options,
            "answer": rng.randrange(n_options)}


def _tmmluplus_rows(root: Path, revision: str, path: str) -> list[dict]:
    text = subprocess.run(["git", "-C", str(root / DATASET_REPO), "show", f"{revision}:{path}"], check=True,
                          capture_output=True, text=True).stdout
    return list(csv.DictReader(io.StringIO(text)))


def planted_copies(root: Path) -> dict:
    """TMMLU+ rows to plant: a v1.1 test row (copied exactly, in Simplified), another one reworded (a near
    copy), and a v1.0 test row that v1.1 removed (only a check of v1.0 finds it)."""
    from hf_ft.retrieval.text import to_simplified

    v10 = _tmmluplus_rows(root, "v1.0", "data/music_test.csv") + _tmmluplus_rows(root, "v1.0", "data/physics_test.csv")
    v11 = {r["question"] for r in _tmmluplus_rows(root, "v1.1", "data/music_test.csv")
           + _tmmluplus_rows(root, "v1.1", "data/physics_test.csv")}
    kept = [r for r in v10 if r["question"] in v11]
    removed = [r for r in v10 if r["question"] not in v11]
    if len(kept) < 2 or not removed:
        raise RuntimeError("the TMMLU+ fixture is too small to plant copies (raise --scale)")

    def simplified(row, reword=False):
        question = to_simplified(row["question"])
        if reword:  # other punctuation, a prefix and a changed last character: no exact hash matches
            question = "下列问题：" + question.replace("，", " ").rstrip("？") + "呢"
        return {"question": question, "options": [to_simplified(row[c]) for c in LETTERS],
                "answer": LETTERS.index(row["answer"])}

    return {"exact": simplified(kept[0]), "near": simplified(kept[1], reword=True), "v1_0_only": simplified(removed[0])}


def _lettered(row: dict) -> dict:
    return {"question": row["question"], **dict(zip(LETTERS, row["options"])), "answer": LETTERS[row["answer"]]}


def write_ceval_repo(root: Path, copies: dict, seed: int = 1) -> str:
    """`ceval/ceval-exam`: <subject>/{test,val,dev}-00000-of-00001.parquet, test answers empty (withheld), a
    card with cc-by-nc-sa-4.0 and a configs block; `law` val holds the exact copy of a TMMLU+ test row."""
    rng = random.Random(seed)
    repo = root / CEVAL_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    configs = {}
    for subject in ("accountant", "law", "marxism"):
        for split, n in (("test", 6), ("val", 12), ("dev", 5)):
            rows = [_lettered(_simplified_row(rng)) for _ in range(n)]
            if subject == "law" and split == "val":
                rows[3] = _lettered(copies["exact"])
            for i, row in enumerate(rows):
                row.update(id=i, explanation="" if split != "dev" else "解析")
                if split == "test":
                    row["answer"] = ""
            _parquet(repo / subject / f"{split}-00000-of-00001.parquet", rows)
        configs[subject] = {split: f"{subject}/{split}-*" for split in ("test", "val", "dev")}
    (repo / "README.md").write_text(_configs_readme(configs, "cc-by-nc-sa-4.0"), encoding="utf-8")
    return _commit(repo, "Convert dataset to Parquet", "2024-01-01T00:00:00+00:00")


def write_cmmlu_repo(root: Path, copies: dict, seed: int = 2) -> str:
    """`haonan-li/cmmlu`: a loading script (cmmlu.py, which datasets >= 4 refuses) and cmmlu_v1_0_1.zip with
    dev/ and test/<subject>.csv (header `,Question,A,B,C,D,Answer`: an unnamed index column); agronomy's
    test holds the copy of a v1.0 row that v1.1 removed; chinese_driving_rule is excluded by default."""
    import zipfile

    rng = random.Random(seed)
    repo = root / CMMLU_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    with zipfile.ZipFile(repo / "cmmlu_v1_0_1.zip", "w") as archive:
        for subject in ("agronomy", "chinese_driving_rule"):
            for split, n in (("dev", 5), ("test", 14)):
                rows = [_lettered(_simplified_row(rng)) for _ in range(n)]
                if subject == "agronomy" and split == "test":
                    rows[5] = _lettered(copies["v1_0_only"])
                buffer = io.StringIO()
                writer = csv.writer(buffer, lineterminator="\n")
                writer.writerow(["", "Question", *LETTERS, "Answer"])
                writer.writerows([[i, r["question"], *(r[c] for c in LETTERS), r["answer"]] for i, r in enumerate(rows)])
                archive.writestr(f"{split}/{subject}.csv", buffer.getvalue())
    (repo / "cmmlu.py").write_text('"""CMMLU (a stub of the loading script: datasets >= 4 runs none)."""\n'
                                   '_URL = "cmmlu_v1_0_1.zip"\n', encoding="utf-8")
    (repo / "README.md").write_text("---\nlicense: cc-by-nc-4.0\nlanguage:\n- zh\n---\n# CMMLU (hf_ft fixture)\n",
                                    encoding="utf-8")
    return _commit(repo, "v1.0.1", "2024-01-01T00:00:00+00:00")


def _c3_question(rng: random.Random, n_options: int) -> dict:
    row = _simplified_row(rng, n_options)
    return {"question": row["question"], "choice": row["options"], "answer": row["options"][row["answer"]]}


def write_c3_repo(root: Path, copies: dict, seed: int = 3) -> str:
    """`dataset-org/c3`: configs dialog and mixed, one row per document with `documents` and `questions` (a
    sequence of {question, answer text, choice}, stored as datasets writes it: a struct of lists), 2-4 options.
    The near copy of a TMMLU+ test row is one of mixed's training questions."""
    from hf_ft.retrieval.text import to_simplified

    rng = random.Random(seed)
    repo = root / C3_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    configs = {}
    for config in ("dialog", "mixed"):
        for split, docs in (("train", 8), ("validation", 3), ("test", 3)):
            rows = []
            for d in range(docs):
                questions = [_c3_question(rng, 2 + (d + q) % 3) for q in range(1 + d % 3)]
                if config == "mixed" and split == "train" and d == 2:
                    near = copies["near"]
                    questions[0] = {"question": near["question"], "choice": near["options"],
                                    "answer": near["options"][near["answer"]]}
                rows.append({"documents": [to_simplified(_text(rng, 60)), to_simplified(_text(rng, 40))],
                             "document_id": f"{config}-{split}-{d}",
                             "questions": {k: [q[k] for q in questions] for k in ("question", "answer", "choice")}})
            _parquet(repo / config / f"{split}-00000-of-00001.parquet", rows)
        configs[config] = {split: f"{config}/{split}-*" for split in ("train", "validation", "test")}
    (repo / "README.md").write_text(_configs_readme(configs, "other"), encoding="utf-8")
    return _commit(repo, "Convert dataset to Parquet (#2)", "2024-01-01T00:00:00+00:00")


def write_clue_repo(root: Path, seed: int = 4) -> str:
    """`clue/clue` config c3: one question per row (id, context, question, choice, answer text); test answers
    withheld."""
    from hf_ft.retrieval.text import to_simplified

    rng = random.Random(seed)
    repo = root / CLUE_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    for split, n in (("train", 10), ("validation", 4), ("test", 4)):
        rows = []
        for i in range(n):
            q = _c3_question(rng, 2 + i % 3)
            rows.append({"id": i, "context": [to_simplified(_text(rng, 50))], "question": q["question"],
                         "choice": q["choice"], "answer": q["answer"] if split != "test" else ""})
        _parquet(repo / "c3" / f"{split}-00000-of-00001.parquet", rows)
    (repo / "README.md").write_text(_configs_readme(
        {"c3": {split: f"c3/{split}-*" for split in ("train", "validation", "test")}}, "unknown"), encoding="utf-8")
    return _commit(repo, "Add c3 data files", "2024-01-01T00:00:00+00:00")


def write_agieval_repo(root: Path, seed: int = 5) -> str:
    """`hails/agieval-gaokao-history`: data/test-00000-of-00001.parquet with query (the whole prompt), choices
    `(A)…` and gold (a list of indices; one row has two correct answers)."""
    rng = random.Random(seed)
    repo = root / AGIEVAL_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    rows = []
    for i in range(12):
        row = _simplified_row(rng)
        choices = [f"({letter}){option}" for letter, option in zip(LETTERS, row["options"])]
        rows.append({"query": f"问题：{row['question']} 选项：{''.join(choices)}\n答案：从A到D, 我们应选择",
                     "choices": choices, "gold": [row["answer"]] if i != 7 else [0, 2]})
    _parquet(repo / "data" / "test-00000-of-00001.parquet", rows)
    (repo / "README.md").write_text("---\ndataset_info:\n  features:\n  - name: query\n    dtype: string\n---\n",
                                    encoding="utf-8")
    return _commit(repo, "Upload dataset", "2024-01-01T00:00:00+00:00")


def write_extra_repos(root: Path) -> dict:
    """Every extra-source fixture; needs the TMMLU+ fixture in `root` (its rows are planted). Returns the
    commits and the planted copies."""
    root = Path(root)
    copies = planted_copies(root)
    return {"ceval": write_ceval_repo(root, copies), "cmmlu": write_cmmlu_repo(root, copies),
            "c3": write_c3_repo(root, copies), "clue": write_clue_repo(root), "agieval": write_agieval_repo(root),
            "copies": copies}


# ----------------------------------------------------------------------------------------------
# The model


def chinese_vocab(size: int = 21128) -> list[str]:
    """bert-base-chinese's id layout: [PAD]=0, [unused1-99], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103,
    then punctuation, digits, lower-case letters, CJK punctuation and ideographs up to `size` ids."""
    vocab = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<S>", "<T>"]
    ascii_part = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    cjk_punctuation = list("，。、；：？！「」『』（）《》〈〉—…·．％")
    fullwidth = [chr(c) for c in range(0xFF01, 0xFF5F) if chr(c) not in cjk_punctuation and not chr(c).isupper()]
    vocab += ascii_part + cjk_punctuation + fullwidth
    code = 0x4E00
    while len(vocab) < size:
        vocab.append(chr(code))
        code += 1
    return vocab[:size]


def write_model_repo(root: Path, size: str = "base", seed: int = 0, repo_path: str = MODEL_REPO,
                     license: str = "apache-2.0") -> str:
    """The model repository (one commit); returns its commit sha. `repo_path` and `license` give another
    bert-base-chinese-shaped repo (e.g. models/ckiplab/bert-base-chinese, whose real card says gpl-3.0)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    repo = root / repo_path
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "vocab.txt").write_text("\n".join(chinese_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(repo / "vocab.txt"), do_lower_case=True, tokenize_chinese_chars=True,
                              model_max_length=512)
    if len(tokenizer) != 21128 or tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) \
            != [0, 100, 101, 102, 103]:
        raise RuntimeError("the fixture tokenizer does not have bert-base-chinese's id layout")
    tokenizer.save_pretrained(repo)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=21128, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
                        architectures=["BertForMaskedLM"], **(BERT_BASE_CHINESE if size == "base" else SMALL))
    BertForMaskedLM(config).save_pretrained(repo, safe_serialization=True)
    (repo / "additional_chat_templates").mkdir()  # olah answers 401 (not 404) for a missing folder
    (repo / "additional_chat_templates" / ".gitkeep").write_text("")
    (repo / "README.md").write_text(f"---\nlanguage: zh\nlicense: {license}\n---\n# {repo_path.split('/', 1)[1]} "
                                    f"(hf_ft fixture: {size} size, random weights)\n", encoding="utf-8")
    return _commit(repo, f"{repo_path.split('/', 1)[1]} fixture", "2024-01-01T00:00:00+00:00")


def write_fixtures(root: str | Path, scale: float = 1.0, model_size: str = "base", seed: int = 0) -> dict:
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root}: not empty; give a new folder for the hub fixtures")
    if not 0 < scale <= 1:
        raise UserError(f"--scale {scale}: need a share in (0, 1]")
    return {"dataset": write_dataset_repo(root, scale, seed), "model": write_model_repo(root, model_size, seed),
            "root": str(root)}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python tests/hub_fixtures.py", description=__doc__)
    parser.add_argument("out_dir", help="the mirrors folder olah serves (datasets/ and models/ go inside)")
    parser.add_argument("--scale", type=float, default=1.0, help="share of TMMLU+'s per-subject sizes (1: full)")
    parser.add_argument("--model-size", choices=["base", "small"], default="base")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> dict:
    from hf_ft.core import validation

    args = validation.parse_checked(build_parser(), argv, {"scale": validation.share(0, 1, open_low=True),
                                                           "seed": validation.SEED})
    writable_folder(args.out_dir, "out_dir")
    result = write_fixtures(args.out_dir, args.scale, args.model_size, args.seed)
    print(f"hub fixtures in {args.out_dir}: {DATASET_REPO} (v1.0 {result['dataset']['v1.0'][:12]}, "
          f"v1.1 {result['dataset']['v1.1'][:12]}, main {result['dataset']['main'][:12]}; "
          f"{result['dataset']['rows_v1_0']} rows in v1.0), {MODEL_REPO} ({args.model_size})")
    return result


class LoopbackHub:
    """olah (a Hugging Face mirror server, `pip install olah`) serving `mirrors` on 127.0.0.1, offline.

        with LoopbackHub(mirrors) as hub:
            subprocess.run([...], env={**os.environ, **hub.client_env(hf_home)})

    `client_env` is what a client process needs: HF_ENDPOINT is read when huggingface_hub is imported, so
    set it in the environment of a new process, not after import."""

    def __init__(self, mirrors: str | Path, work: str | Path, port: int | None = None, timeout: float = 90.0):
        from hf_ft.core.processes import free_port

        self.mirrors, self.work = Path(mirrors), Path(work)
        self.port = port or free_port()
        self.timeout = timeout
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None

    def client_env(self, hf_home: str | Path) -> dict:
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                "HF_DATASETS_OFFLINE": "0", "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"}

    def __enter__(self) -> "LoopbackHub":
        import shutil
        import sys
        import time
        import urllib.request

        cli = shutil.which("olah-cli") or str(Path(sys.executable).with_name("olah-cli"))
        if not Path(cli).exists():
            raise UserError("olah is not installed: pip install olah (it is in hf_ft's [test] extra)")
        self.work.mkdir(parents=True, exist_ok=True)
        config = self.work / "olah.toml"
        config.write_text(
            f'[basic]\nhost = "127.0.0.1"\nport = {self.port}\nrepos-path = "{self.work / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\nmirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n\n[accessibility]\noffline = true\n', encoding="utf-8")
        self.log = open(self.work / "olah.log", "w")
        self.process = subprocess.Popen([cli, "-c", str(config)], stdout=self.log, stderr=subprocess.STDOUT,
                                        cwd=self.work, start_new_session=True)
        deadline = time.time() + self.timeout
        probe = f"{self.endpoint}/api/datasets/ikala/tmmluplus/revision/main"
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"olah exited: {(self.work / 'olah.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(probe, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"olah did not answer {probe} within {self.timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if getattr(self, "log", None):
            self.log.close()

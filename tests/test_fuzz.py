"""The fuzzer: every flag of every entry point, and every kind of row, given bad values (hypothesis).

The property, for each command line drawn: no traceback, exit status 0 or 2, and an exit 2 is one `error:`
line (indented lines may follow it: one per bad row). Each entry point runs in this process, for real, up to
the moment its heavy work would start (loading weights, writing a fixture): a patched function raises
`Reached` there, which counts as exit 0. So every check an entry point makes before its work is fuzzed,
and none of its work is paid for. HF_FT_FUZZ_EXAMPLES sets the budget per test (CI: the default);
HF_FT_FUZZ_RANDOM=1 draws new examples instead of the fixed, derandomized ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from conftest import ROOT  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("HF_FT_FUZZ_EXAMPLES", "150"))  # command lines of one or two bad flags, per entry point
ROUNDS = int(os.environ.get("HF_FT_FUZZ_ROUNDS", "3"))  # passes over every flag, per entry point
# The same examples on every run (CI included), so a red run is reproducible; HF_FT_FUZZ_RANDOM=1 explores.
FUZZ = dict(deadline=None, derandomize=not os.environ.get("HF_FT_FUZZ_RANDOM"), database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# The catalogue of bad values. The <...> ones become paths made fresh for each example: every kind of path a
# user gives by mistake (a file for a folder, a folder for a file, one under a file, a read-only folder, names
# with spaces or '=', an upper-case extension).
FILE, FOLDER, MISSING = "<a file>", "<a folder>", "<a missing path>"
PATH_KINDS = [FILE, FOLDER, MISSING, "<under a file>", "<a read-only folder>", "<a path with spaces>",
              "<a path with =>", "<an upper-case .CSV>", "<a folder of data>"]
BAD_VALUES = ["nan", "inf", "-inf", "-1", "0", "1e30", "99999999999999999999", "", " ", "\u200b", "abc",
              "1,2", "[1, 2]", "{}", "-", "--", "\x00", *PATH_KINDS]


class Reached(BaseException):
    """The entry point got past every check and was about to start its work."""


def _reach(*args, **kwargs):
    raise Reached


@dataclass
class EntryPoint:
    name: str
    run: object  # argv -> None: the entry point itself, behind its error boundary
    parser: object  # () -> argparse parser: where the flags come from
    base: object  # (fixtures, tmp) -> a command line that is valid
    work: tuple[str, ...]  # "module:function" patched to raise Reached: where the heavy work starts
    skip: tuple[str, ...] = ("-h", "--help")


def _run_qa(argv):
    saved = sys.argv
    sys.argv = ["run_qa.py", *argv]
    try:
        runpy.run_path(str(ROOT / "run_qa.py"), run_name="__main__")
    finally:
        sys.argv = saved


def _hf_ft(command):
    def run(argv):
        from hf_ft.cli import main

        main([command, *argv])
    return run


def _cli_parser(command):
    def parser():
        from hf_ft import cli

        return cli.PARSERS[command]()
    return parser


def _run_qa_parser():
    from hf_ft.config.arguments import build_parser

    return build_parser()


def _evaluate_parser():
    from hf_ft.evaluation.evaluate import build_parser

    return build_parser()


def _predict_parser():
    from hf_ft.evaluation.predict import build_parser

    return build_parser()


def _push_parser():
    from hf_ft.publish.hub import build_parser

    return build_parser()


ENTRY_POINTS = {
    "run_qa": EntryPoint(
        "run_qa", _run_qa, _run_qa_parser,
        lambda f, tmp: ["--model_name_or_path", str(f["model"]), "--data_dir", str(f["data"]),
                        "--output_dir", str(tmp / "out"), "--use_cpu", "--max_seq_length", "128"],
        ("hf_ft.training.run:load_model",)),
    "evaluate": EntryPoint(
        "evaluate", _hf_ft("evaluate"), _evaluate_parser,
        lambda f, tmp: ["--original", str(f["model"]), "--finetuned", str(f["run"]),
                        "--output_dir", str(tmp / "cmp"), "--use_cpu"],
        ("hf_ft.evaluation.options:load_scorer",)),
    "predict": EntryPoint(
        "predict", _hf_ft("predict"), _predict_parser,
        lambda f, tmp: [str(f["run"]), "--question", "一加一等於幾？", "--choices", "一", "二", "三", "--use_cpu"],
        ("hf_ft.evaluation.options:load_scorer",)),
    "push": EntryPoint(
        "push", _hf_ft("push"), _push_parser,
        lambda f, tmp: [str(f["run"]), "--repo_id", "someone/model", "--dry_run"],
        ("hf_ft.publish.hub:build_model_card",)),
    "make-demo-data": EntryPoint(
        "make-demo-data", _hf_ft("make-demo-data"), _cli_parser("make-demo-data"),
        lambda f, tmp: [str(tmp / "demo")], ("hf_ft.demo:make_demo_data",)),
    "make-open-book-data": EntryPoint(
        "make-open-book-data", _hf_ft("make-open-book-data"), _cli_parser("make-open-book-data"),
        lambda f, tmp: [str(tmp / "book")], ("hf_ft.demo:make_open_book_data",)),
    "make-tiny-model": EntryPoint(
        "make-tiny-model", _hf_ft("make-tiny-model"), _cli_parser("make-tiny-model"),
        lambda f, tmp: [str(tmp / "tiny"), "--vocab-from", str(f["data"])], ("hf_ft.demo:make_tiny_model",)),
}


def flags_of(entry: EntryPoint) -> list[tuple[str, bool]]:
    """(flag or positional index, takes a value) for every argument the entry point's parser knows."""
    out = []
    positional = 0
    for action in entry.parser()._actions:
        if not action.option_strings:
            out.append((f"#{positional}", True))
            positional += 1
            continue
        for flag in action.option_strings:
            if flag.startswith("--") and flag not in entry.skip:
                out.append((flag, action.nargs != 0))
    return out


def apply(base: list[str], changes, paths: dict[str, str]) -> list[str]:
    """The base command line with each (flag, value) set: a positional replaced, a flag's value replaced
    where the base has it, else the flag added."""
    argv = list(base)
    positions = [i for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or not argv[i - 1].startswith("--"))]
    for (flag, takes_value), value in changes:
        value = paths.get(value, value)
        if flag.startswith("#"):
            index = int(flag[1:])
            if index < len(positions):
                argv[positions[index]] = value
            continue
        if flag in argv and takes_value and argv.index(flag) + 1 < len(argv):
            argv[argv.index(flag) + 1] = value
        elif takes_value:
            argv += [flag, value]
        else:  # a switch: alone, or with a stray value after it
            argv += [flag] if value == "" else [flag, value]
    return argv


def invoke(entry: EntryPoint, argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run the entry point in this process, in `cwd` (a relative path the fuzzer made up lands there):
    (exit status, stderr). Any exception that escapes the error boundary escapes this too, with its
    traceback: that is a failure the fuzzer found."""
    import importlib

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.chdir(cwd)
    patches = []
    for target in entry.work:
        module, name = target.split(":")
        module = importlib.import_module(module)
        patches.append((module, name, getattr(module, name)))
        setattr(module, name, _reach)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                entry.run(argv)
                code = 0
            except Reached:
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        for module, name, original in patches:
            setattr(module, name, original)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        _reset_processes()
    return code, err.getvalue()


def _reset_processes():
    from hf_ft.core.processes import leave_process_group

    leave_process_group()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def check(entry: EntryPoint, argv: list[str], cwd: Path) -> None:
    code, err = invoke(entry, argv, cwd)
    shown = f"{entry.name} {' '.join(map(repr, argv))}\nexit {code}, stderr:\n{err[-2000:]}"
    assert "Traceback" not in err, shown
    assert code in (0, 2), shown
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
        assert len(errors) == 1, shown
        assert all(line.startswith("  ") for line in lines[errors[0] + 1:]), shown


@contextlib.contextmanager
def example_paths():
    """A fresh folder per example, with the catalogue's paths in it."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "a_file.txt").write_text("not,what\nwas expected\n", encoding="utf-8")
        (tmp / "a_folder").mkdir()
        (tmp / "read only").mkdir()
        (tmp / "read only" / "kept.txt").write_text("x", encoding="utf-8")
        (tmp / "read only").chmod(0o500)
        (tmp / "with space").mkdir()
        (tmp / "lr=3e-5").mkdir()
        (tmp / "a_data_folder").mkdir()
        (tmp / "a_data_folder" / "music_test.CSV").write_text("question,A,B,C,D,answer\n一？,一,二,三,四,A\n", encoding="utf-8")
        try:
            yield tmp, {FILE: str(tmp / "a_file.txt"), FOLDER: str(tmp / "a_folder"), MISSING: str(tmp / "gone" / "x"),
                        "<under a file>": str(tmp / "a_file.txt" / "x"), "<a read-only folder>": str(tmp / "read only"),
                        "<a path with spaces>": str(tmp / "with space" / "a b"),
                        "<a path with =>": str(tmp / "lr=3e-5"), "<an upper-case .CSV>": str(tmp / "a_data_folder" / "music_test.CSV"),
                        "<a folder of data>": str(tmp / "a_data_folder")}
        finally:
            (tmp / "read only").chmod(0o700)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, tiny_model, trained_run):
    from hf_ft.demo import make_demo_data

    data = make_demo_data(tmp_path_factory.mktemp("fuzz") / "data", rows_per_subject=20, seed=0,
                          subjects=["music", "agriculture"])
    return {"model": tiny_model, "data": data, "run": trained_run[0]}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_every_flag_with_a_bad_value(name, fixtures):
    """Each flag once, with a value drawn for it, and the base command line itself (which must pass)."""
    entry = ENTRY_POINTS[name]
    flags = flags_of(entry)
    with example_paths() as (tmp, paths):
        assert invoke(entry, entry.base(fixtures, tmp), tmp)[0] == 0, f"{name}: the base command line is refused"

    @settings(max_examples=ROUNDS, **FUZZ)
    @given(st.data())
    def every_flag(data):
        for flag in flags:
            value = data.draw(st.sampled_from(BAD_VALUES), label=flag[0])
            with example_paths() as (tmp, paths):
                check(entry, apply(entry.base(fixtures, tmp), [(flag, value)], paths), tmp)

    every_flag()


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_flags_in_pairs(name, fixtures):
    entry = ENTRY_POINTS[name]
    change = st.tuples(st.sampled_from(flags_of(entry)), st.sampled_from(BAD_VALUES))

    @settings(max_examples=EXAMPLES, **FUZZ)
    @given(st.lists(change, min_size=1, max_size=2))
    def pairs(changes):
        with example_paths() as (tmp, paths):
            check(entry, apply(entry.base(fixtures, tmp), changes, paths), tmp)

    pairs()


# ----------------------------------------------------------------------------------------------
# Rows: a mutated cell, header or encoding in a data file, through training and through predict --input

BAD_CELLS = ["", " ", "\u200b", "\ufeff", "\x00", "nan", "None", "A\nB", '"', '""x', "=1+1", "E", "a,b", "甲" * 20000,
             "\ud800", "\t", "{\"q\": 1}", "[1]"]
HEADER_EDITS = ["drop", "duplicate", "spaces", "upper", "bom", "empty", "rename"]
ENCODINGS = ["utf-16", "gbk", "big5", "latin-1-bytes", "truncate", "empty", "header-only", "binary", "crlf", "bom"]


def mutate_csv(path: Path, data) -> str:
    """Apply one drawn mutation to a CSV file; returns what it did (for the failure message)."""
    import csv as csv_module

    rows = list(csv_module.reader(path.read_text(encoding="utf-8").splitlines()))
    kind = data.draw(st.sampled_from(["cell", "cell", "header", "encoding", "row"]), label="kind")
    if kind == "cell":
        r = data.draw(st.integers(1, len(rows) - 1), label="row")
        c = data.draw(st.integers(0, len(rows[0]) - 1), label="column")
        rows[r][c] = data.draw(st.sampled_from(BAD_CELLS), label="value")
        text = "\n".join(_csv_line(row) for row in rows)
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        return f"cell {r},{c}"
    if kind == "row":
        r = data.draw(st.integers(1, len(rows) - 1), label="row")
        edit = data.draw(st.sampled_from(["short", "long", "blank", "copy"]), label="row edit")
        rows[r] = {"short": rows[r][:3], "long": rows[r] + ["extra"], "blank": [], "copy": rows[1]}[edit]
        path.write_text("\n".join(_csv_line(row) for row in rows), encoding="utf-8")
        return f"row {r} {edit}"
    if kind == "header":
        edit = data.draw(st.sampled_from(HEADER_EDITS), label="header edit")
        c = data.draw(st.integers(0, len(rows[0]) - 1), label="column")
        header = list(rows[0])
        if edit == "drop":
            rows = [row[:c] + row[c + 1:] for row in rows]
        elif edit == "duplicate":
            header[c] = header[(c + 1) % len(header)]
            rows[0] = header
        else:
            header[c] = {"spaces": f" {header[c]} ", "upper": header[c].upper(), "bom": "\ufeff" + header[c],
                         "empty": "", "rename": header[c] + "x"}[edit]
            rows[0] = header
        path.write_text("\n".join(_csv_line(row) for row in rows), encoding="utf-8")
        return f"header {edit} {c}"
    edit = data.draw(st.sampled_from(ENCODINGS), label="encoding")
    text = path.read_text(encoding="utf-8")
    raw = {"utf-16": lambda: text.encode("utf-16"), "gbk": lambda: text.encode("gbk", errors="replace"),
           "big5": lambda: text.encode("big5", errors="replace"),
           "latin-1-bytes": lambda: text.encode("utf-8") + b"\xe9\xff\n",
           "truncate": lambda: text.encode("utf-8")[: len(text.encode("utf-8")) // 2 + 1],
           "empty": lambda: b"", "header-only": lambda: text.splitlines()[0].encode("utf-8"),
           "binary": lambda: bytes(range(256)) * 4, "crlf": lambda: text.replace("\n", "\r\n").encode("utf-8"),
           "bom": lambda: b"\xef\xbb\xbf" + text.encode("utf-8")}[edit]()
    path.write_bytes(raw)
    return f"encoding {edit}"


def _csv_line(row) -> str:
    import csv as csv_module

    out = io.StringIO()
    csv_module.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


def test_rows_with_a_bad_cell_header_or_encoding_in_training(fixtures):
    import shutil

    entry = ENTRY_POINTS["run_qa"]
    files = sorted(p.name for p in Path(fixtures["data"]).glob("*.csv"))

    @settings(max_examples=EXAMPLES, **FUZZ)
    @given(st.data())
    def rows(data):
        with example_paths() as (tmp, paths):
            folder = tmp / "data"
            shutil.copytree(fixtures["data"], folder)
            name = data.draw(st.sampled_from(files), label="file")
            what = mutate_csv(folder / name, data)
            argv = apply(entry.base({**fixtures, "data": folder}, tmp), [], paths)
            try:
                check(entry, argv, tmp)
            except AssertionError as e:
                raise AssertionError(f"{name}: {what}\n{e}") from None

    rows()


BAD_JSON_LINES = ["{", "[]", "1", "null", '"text"', '{"question": {"a": 1}, "A": "x", "B": "y"}',
                  '{"question": "q", "A": "x"}', '{"question": "q", "A": 1, "B": 2.5, "C": null, "D": true}',
                  '{"question": "q", "A": "x", "B": "x"}', '{"question": "\\u200b", "A": "x", "B": "y"}',
                  '{"question": "q", "A": "x", "B": "y", "answer": "Z"}', '{"Question": "q", "a": "x", "b": "y"}',
                  '{"question": "q", "A": "x", "B": "y", "extra": [1, 2]}', "\ufeff{\"question\": \"q\"}"]


def test_rows_of_a_bad_jsonl_into_predict(fixtures):
    entry = ENTRY_POINTS["predict"]
    good = json.dumps({"question": "一加一等於幾？", "A": "一", "B": "二", "C": "三", "D": "四"}, ensure_ascii=False)

    @settings(max_examples=EXAMPLES, **FUZZ)
    @given(st.lists(st.sampled_from([good, *BAD_JSON_LINES]), min_size=1, max_size=4))
    def lines(lines):
        with example_paths() as (tmp, paths):
            (tmp / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            check(entry, [str(fixtures["run"]), "--input", str(tmp / "q.jsonl"), "--use_cpu"], tmp)

    lines()


# ----------------------------------------------------------------------------------------------
# Config files: a valid run_qa.py config, mutated as editors and people do


CONFIG_EDITS = ["bom", "empty", "comments only", "duplicate key", "wrong type", "list for a value", "mapping for a value",
                "unknown key", "tabs", "truncated", "nan", "not a mapping"]


def mutate_config(config: dict, suffix: str, data) -> bytes:
    import yaml

    edit = data.draw(st.sampled_from(CONFIG_EDITS), label="edit")
    key = data.draw(st.sampled_from(sorted(config)), label="key")
    as_text = (json.dumps(config, ensure_ascii=False, indent=1) if suffix == ".json"
               else yaml.safe_dump(config, allow_unicode=True))
    if edit == "bom":
        return "\ufeff".encode() + as_text.encode()
    if edit == "empty":
        return b""
    if edit == "comments only":
        return b"# nothing here yet\n"
    if edit == "duplicate key":
        extra = f'"{key}": "x",' if suffix == ".json" else f"{key}: x\n"
        return (as_text.replace("{", "{" + extra, 1) if suffix == ".json" else as_text + extra).encode()
    if edit == "truncated":
        return as_text.encode()[: len(as_text) // 2]
    if edit == "not a mapping":
        return b"[1, 2]" if suffix == ".json" else b"- a\n- b\n"
    if edit == "tabs":
        return as_text.replace("  ", "\t").replace(" ", "\t").encode()
    value = {"wrong type": "many", "list for a value": [1, 2], "mapping for a value": {"a": 1},
             "nan": float("nan"), "unknown key": 1}[edit]
    changed = {**config, (key + "x" if edit == "unknown key" else key): value}
    return (json.dumps(changed) if suffix == ".json" else yaml.safe_dump(changed)).encode()


def test_config_files_mutated(fixtures):
    """A config file, mutated (BOM, empty, duplicate keys, wrong types, ...): run_qa.py accepts it or refuses it
    in one line, never a traceback."""
    entry = ENTRY_POINTS["run_qa"]

    @settings(max_examples=EXAMPLES // 2, **FUZZ)
    @given(st.data(), st.sampled_from([".json", ".yaml"]))
    def configs(data, suffix):
        with example_paths() as (tmp, _):
            config = {"model_name_or_path": str(fixtures["model"]), "data_dir": str(fixtures["data"]),
                      "output_dir": str(tmp / "out"), "use_cpu": True, "max_seq_length": 128,
                      "learning_rate": 3e-5, "subjects": "music"}
            path = tmp / f"config{suffix}"
            path.write_bytes(mutate_config(config, suffix, data))
            check(entry, [str(path)], tmp)

    configs()


# ----------------------------------------------------------------------------------------------
# Text: characters whose NFKC or casefold changes the meaning must not make two options "the same"


MEANINGFUL = {"²": "2", "³": "3", "₂": "2", "½": "1/2", "①": "1", "②": "2", "ⁿ": "n"}  # kept apart
WIDTH_ONLY = {"A": "Ａ", "1": "１", "x": "ｘ", " ": "\u3000", "kg": "㎏"}  # folded together


@settings(max_examples=EXAMPLES, **FUZZ)
@given(st.text(alphabet="甲乙丙丁abx+-=", min_size=1, max_size=8), st.sampled_from(sorted(MEANINGFUL)),
       st.sampled_from(sorted(WIDTH_ONLY)), st.integers(0, 8))
def test_text_mutations_that_nfkc_would_change(stem, meaningful, width, at):
    """Two options that differ by a superscript, subscript, fraction or circled character are two options (x² is
    not x2); two that differ only by width are one (Ａ is A), and the row is refused as such."""
    from hf_ft.data.rows import option_problem

    at = min(at, len(stem))
    plain = stem[:at] + MEANINGFUL[meaningful] + stem[at:]
    marked = stem[:at] + meaningful + stem[at:]
    assert option_problem([plain, marked, "丙丙丙", "丁丁丁"], "ABCD") is None, (plain, marked)
    narrow = stem[:at] + width + stem[at:]
    wide = stem[:at] + WIDTH_ONLY[width] + stem[at:]
    if narrow.strip() and narrow not in ("丙丙丙", "丁丁丁"):
        assert option_problem([narrow, wide, "丙丙丙", "丁丁丁"], "ABCD")[0] == "same_options", (narrow, wide)


# ----------------------------------------------------------------------------------------------
# Combinations: settings that are each valid, two or three at a time (the class of a flag that does nothing,
# or breaks, next to another)

GOOD_SETTINGS = [
    ["--formulation", "joint"], ["--formulation", "mlm"], ["--joint_rotations", "2"], ["--joint_eval_rotations", "1"],
    ["--mlm_probability", "0.2"], ["--split_scheme", "resplit"], ["--split_scheme", "official"],
    ["--split_ratios", "0.6,0.3,0.1"], ["--validation_fraction", "0"], ["--validation_fraction", "0.2"],
    ["--eval_strategy", "steps"], ["--eval_strategy", "no"], ["--eval_steps", "5"], ["--save_strategy", "no"],
    ["--save_steps", "5"], ["--load_best_model_at_end", "false"], ["--early_stopping_patience", "1"],
    ["--early_stopping_threshold", "0.01"], ["--max_steps", "3"], ["--push_test_items"], ["--hub_model_id", "me/x"],
    ["--retrieval_k", "3"], ["--leak_policy", "keep"], ["--retrieval_corpus", "training_pool"],
    ["--pad_to_multiple_of", "8"], ["--drop_question"], ["--max_eval_samples", "5"], ["--seeds", "1,2"],
    ["--do_eval", "false"], ["--hub_strategy", "checkpoint"], ["--gradient_checkpointing"],
    ["--metric_for_best_model", "loss"], ["--report_to", "none"], ["--on_bad_rows", "skip"],
    ["--contamination", "keep"], ["--test_file", "<a file>"], ["--validation_file", "<a file>"],
]


def test_valid_settings_in_combination(fixtures):
    """Each setting alone is valid; two or three together either work or are refused in one line (a flag that
    would do nothing next to another is a refusal: hf_ft.config.flags), never a traceback."""
    entry = ENTRY_POINTS["run_qa"]

    @settings(max_examples=EXAMPLES, **FUZZ)
    @given(st.lists(st.sampled_from(range(len(GOOD_SETTINGS))), min_size=2, max_size=3, unique=True))
    def combinations(chosen):
        with example_paths() as (tmp, paths):
            argv = entry.base(fixtures, tmp)
            for index in chosen:
                argv += [paths.get(value, value) for value in GOOD_SETTINGS[index]]
            check(entry, argv, tmp)

    combinations()

import re

import pytest

from hf_ft.config.arguments import ConfigError, parse_args


def test_config_file_with_command_line_override(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("model_name_or_path: some/model\nlearning_rate: 1.0e-4\nsubjects: STEM\n"
                      "output_dir: out/x\nnum_train_epochs: 2\n", encoding="utf-8")
    args = parse_args([str(config), "--learning_rate", "3e-5", "--use_cpu"])
    model_args, data_args, training_args = args.model, args.data, args.training
    assert model_args.model_name_or_path == "some/model"
    assert data_args.subjects == "STEM"
    assert training_args.learning_rate == 3e-5  # the command line wins
    assert training_args.num_train_epochs == 2
    assert training_args.output_dir == "out/x"


def test_task_defaults(tmp_path):
    parsed = parse_args(["--output_dir", str(tmp_path), "--use_cpu"])
    run_args, args = parsed.run, parsed.training
    assert args.eval_strategy == "epoch" and args.load_best_model_at_end
    assert args.metric_for_best_model == "accuracy" and args.report_to == []
    assert args.average_tokens_across_devices is False
    assert args.train_sampling_strategy == "group_by_length"
    assert not args.bf16  # never on CPU
    assert run_args.overwrite_output_dir is False


def test_task_defaults_are_one_class_that_runs_benchmarks_and_tests_construct(tmp_path):
    """run_qa.py's parser and a direct QATrainingArguments(...) (what the benchmarks and tests build) carry the
    same task defaults, each one differing from transformers' own, each named in --help."""
    from transformers import TrainingArguments

    from hf_ft.config.arguments import build_parser
    from hf_ft.config.fields import QATrainingArguments, task_defaults

    parsed = parse_args(["--output_dir", str(tmp_path / "o"), "--use_cpu"]).training
    built = QATrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True)
    plain = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True)
    defaults = task_defaults()
    assert {"logging_nan_inf_filter", "train_sampling_strategy", "warmup_steps",
            "remove_unused_columns"} <= set(defaults)
    help_text = " ".join(build_parser().format_help().split())
    for name in defaults:
        assert getattr(built, name) == getattr(parsed, name), name
        assert getattr(built, name) != getattr(plain, name), name
        entry = help_text[help_text.rindex(f"--{name} "):]  # its entry in the options list, not the usage line
        assert "hf_ft's default" in entry.split("(default:", 1)[0], name


def test_json_config_and_unknown_keys(tmp_path):
    good = tmp_path / "c.json"
    good.write_text('{"output_dir": "o", "seed": 3}', encoding="utf-8")
    assert parse_args([str(good)]).training.seed == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown argument 'learning_rat'.*learning_rate"):
        parse_args([str(bad)])
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        parse_args([str(broken)])


def test_config_files_take_lists_where_a_flag_takes_a_list_and_name_other_formats(tmp_path):
    listed = tmp_path / "c.yaml"
    listed.write_text("output_dir: o\nsubjects: [music, physics]\nreport_to: [none]\n", encoding="utf-8")
    assert parse_args([str(listed), "--use_cpu"]).data.subjects == "music,physics"
    scalar = tmp_path / "s.yaml"
    scalar.write_text("output_dir: o\nlearning_rate: [1, 2]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="s.yaml: learning_rate: a list where one value is expected"):
        parse_args([str(scalar)])
    toml = tmp_path / "c.toml"
    toml.write_text('output_dir = "o"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.toml: a config file is YAML \(.yaml, .yml\) or JSON \(.json\); "
                                          r"\.toml is not read"):
        parse_args([str(toml)])


def test_bad_split_ratios(tmp_path):
    with pytest.raises(ConfigError, match="split_ratios"):
        parse_args(["--output_dir", str(tmp_path), "--split_ratios", "0.5,0.5,0.5"])


@pytest.mark.parametrize("name", ["joint_rotations", "joint_eval_rotations"])
def test_joint_rotations_must_be_positive(tmp_path, name):
    with pytest.raises(ConfigError, match=f"--{name} 0: need 1 to 4"):
        parse_args(["--output_dir", str(tmp_path), "--formulation", "joint", f"--{name}", "0"])



def test_help_of_every_entry_point_renders(tmp_path):
    """`--help` formats every flag's help with argparse's %-formatting: one stray '%' (a "90% of" in a help
    text) made `python run_qa.py --help` a TypeError. Each entry point's help must render and name its flags."""
    import subprocess
    import sys

    from hf_ft.config.arguments import build_parser

    text = build_parser().format_help()
    assert "--skip_memory_check" in text and "90% of the free RAM" in " ".join(text.split())
    for command in ("train", "evaluate", "predict", "push", "make-demo-data", "make-open-book-data",
                    "make-tiny-model"):
        result = subprocess.run([sys.executable, "-m", "hf_ft.cli", command, "--help"], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr[-1500:])


@pytest.mark.parametrize("flag, value, message", [
    ("--batch_size", "0", "--batch_size 0: need 1 or more"),
    ("--batch_tokens", "0", "--batch_tokens 0: need 1 or more"),
    ("--joint_eval_rotations", "0", "--joint_eval_rotations 0"),
    ("--max_unk_rate", "1.5", "--max_unk_rate 1.5"),
    ("--max_seq_length", "nan", "--max_seq_length"),
])
def test_evaluate_and_predict_share_one_set_of_scoring_arguments(tmp_path, capsys, flag, value, message):
    """One dataclass, one parser path: every scoring flag exists in both commands and a bad value is refused by
    both in the same words, before any model loads (the paths here do not exist)."""
    from dataclasses import fields

    from hf_ft.evaluation import evaluate, predict
    from hf_ft.evaluation.options import ScoringArguments

    for parser in (evaluate.build_parser(), predict.build_parser()):
        usage = parser.format_usage()
        assert all(f"--{f.name}" in usage for f in fields(ScoringArguments)), parser.prog
    lines = []
    for command, argv in ((evaluate.main, ["--original", "o", "--finetuned", "f"]),
                          (predict.main, ["m", "--question", "問？", "--choices", "甲", "乙"])):
        with pytest.raises(SystemExit) as exit_info:
            command([*argv, flag, value])
        assert exit_info.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[0]
        lines.append(line.replace("python -m hf_ft.evaluate: ", "").replace("hf-ft predict: ", ""))
    assert message in lines[0] and lines[0] == lines[1], lines


@pytest.mark.parametrize("name, content, message", [
    ("bom.json", '\ufeff{"output_dir": "o", "seed": 3}', None),  # Windows editors save a byte-order mark
    ("bom.yaml", "\ufeffoutput_dir: o\nseed: 3\n", None),
    ("comments.yaml", "# settings to come\n", "comments.yaml: holds no settings"),
    ("blank.json", " \n", "blank.json: the file is empty"),
    ("twice.yaml", "output_dir: o\nseed: 1\nseed: 3\n", "line 3: the key 'seed' is given twice (first at line 2)"),
    ("twice.json", '{"output_dir": "o", "seed": 1, "seed": 3}', "twice.json: the key 'seed' is given twice"),
    ("nan.json", '{"output_dir": "o", "learning_rate": NaN}', "NaN is not a JSON value"),
    ("folder.yaml", None, "folder.yaml: is a folder, not a file"),
])
def test_config_files_are_read_by_kind(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content.encode("utf-8"))
    if message is None:
        assert parse_args([str(path), "--use_cpu"]).training.seed == 3
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_args([str(path), "--use_cpu"])


def test_deepspeed_config_is_read_by_the_same_rules(tmp_path):
    from hf_ft.core.deepspeed_config import load_ds_config
    from hf_ft.core.errors import UserError

    bom = tmp_path / "bom.json"
    bom.write_bytes('\ufeff{"zero_optimization": {"stage": 2}}'.encode())
    assert load_ds_config(str(bom)) == {"zero_optimization": {"stage": 2}}
    twice = tmp_path / "twice.json"
    twice.write_text('{"zero_optimization": {"stage": 2, "stage": 3}}', encoding="utf-8")
    with pytest.raises(UserError, match=r"--deepspeed .*twice.json: the key 'stage' is given twice"):
        load_ds_config(str(twice))


def _flag_names(parser) -> set[str]:
    return {flag.lstrip("-").replace("-", "_") for flag in parser.known_flags} - {"help", "h"}


def test_every_flag_of_every_entry_point_is_declared():
    """hf_ft.config.flags declares each flag: what it needs or excludes, that hf_ft replaces it, or that it
    stands alone. A flag without a declaration (one a new transformers adds, say) fails here; so does a
    declaration of a flag that does not exist, and a flag declared independent that also has needs."""
    from dataclasses import fields

    from hf_ft.cli import PARSERS
    from hf_ft.config import flags
    from hf_ft.config.arguments import ARGUMENT_CLASSES
    from hf_ft.evaluation import evaluate, predict
    from hf_ft.publish.hub import build_parser as push_parser

    training = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls) if f.init}
    assert training - flags.declared() == set(), "undeclared run_qa.py flags"
    assert flags.declared() - training == set(), "declarations of flags run_qa.py does not have"
    # a flag that needs another flag (or a value of one), or whose value hf_ft replaces, does not act alone
    with_needs = {name for name, _, _ in flags.REQUIRES} | {name for name, _, _ in flags.VALUE_REQUIRES}
    assert not set(flags.INDEPENDENT) & with_needs and not set(flags.INDEPENDENT) & set(flags.REPLACED)

    commands = {"evaluate": {f.name for f in fields(evaluate.EvaluateArguments)},
                "predict": _flag_names(predict.build_parser()) | {"model"},
                "push": _flag_names(push_parser()) | {"output_dir"},
                **{name: _flag_names(make()) | {"out_dir"} for name, make in PARSERS.items()}}
    assert set(commands) == set(flags.COMMANDS)
    for command, names in commands.items():
        assert names == flags.command_declared(command), command


@pytest.mark.parametrize("argv, expected", [
    (["--do_eval", "false"], "--do_eval False: the run evaluates per --eval_strategy"),
    (["--hub_strategy", "every_save"], "--hub_strategy every_save: hf_ft pushes the finished run once"),
    (["--ignore_data_skip"], "--ignore_data_skip True: a resumed run replays the data order"),
    (["--eval_steps", "5"], "--eval_steps: has no effect without --eval_strategy steps"),
    (["--save_strategy", "epoch", "--save_steps", "5"], "--save_steps: has no effect without --save_strategy steps"),
    (["--joint_rotations", "2"], "--joint_rotations: has no effect without --formulation joint"),
    (["--split_scheme", "official", "--split_ratios", "0.8,0.1,0.1"], "--split_ratios: has no effect without"),
    (["--split_scheme", "resplit", "--validation_fraction", "0.2"], "--validation_fraction: has no effect"),
    (["--split_scheme", "resplit", "--train_file", "t.csv", "--test_file", "x.csv"],
     "--test_file with --split_scheme resplit: its rows would be pooled and split again"),
    (["--hub_model_id", "me/x"], "--hub_model_id without --push_to_hub: has no effect"),
    (["--activation_checkpointing_kwargs", "{}"], "--activation_checkpointing_kwargs without --activation_checkp"),
])
def test_flags_that_would_do_nothing_in_a_combination_are_refused(tmp_path, argv, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_args(["--output_dir", str(tmp_path / "o"), "--use_cpu", *argv])


def test_what_hf_ft_honours_anyway_is_accepted(tmp_path):
    args = parse_args(["--output_dir", str(tmp_path / "o"), "--use_cpu", "--do_train", "--hub_strategy", "end",
                       "--eval_strategy", "steps", "--eval_steps", "5", "--save_strategy", "steps",
                       "--formulation", "joint",
                       "--joint_rotations", "2"])
    assert args.training.do_train and args.data.joint_rotations == 2

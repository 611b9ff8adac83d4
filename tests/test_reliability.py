"""Every user mistake is one line on stderr and a non-zero exit, naming the flag or the file:line; settings
that cannot make sense are refused before work starts; outputs are only served when complete."""

import errno
import json
import os
import re
import shutil

import pytest
from conftest import TRAIN_ARGS, cli, python, run_cli
from fake_hub import GOOD_TOKEN


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv,expected", [
    (["--learing_rate", "1e-3"], "unknown argument --learing_rate (did you mean --learning_rate?)"),
    (["--learning_rate=1e-3x"], "invalid float value: '1e-3x'"),
    (["--task", "mlm"], "unknown argument --task (use --formulation mlm"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0: need 1 or more"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps 0: need 1 or more"),
    (["--num_train_epochs", "-1"], "--num_train_epochs -1.0: need a positive number of epochs"),
    (["--validation_fraction", "1.5"], "--validation_fraction 1.5: need a share in [0, 1)"),
    (["--validation_fraction", "-0.2"], "--validation_fraction -0.2: need a share in [0, 1)"),
    (["--split_ratios", "0,0.5,0.5"], "--split_ratios 0,0.5,0.5: the training share is 0"),
    (["--split_ratios", "0.8,0.2,0"], "--split_ratios 0.8,0.2,0: the test share is 0"),
    (["--split_ratios", "0.5,0.5,0.5"], "need three non-negative numbers summing to 1"),
    (["--max_seq_length", "0"], "--max_seq_length 0: too short"),
    (["--max_seq_length", "8"], "--max_seq_length 8: too short"),
    (["--fp16"], "--fp16: needs a GPU"),
    (["--learning_rate", "0"], "--learning_rate 0.0: need a positive learning rate"),
    (["--save_total_limit", "0"], "--save_total_limit 0: need 1 or more"),
    (["--joint_rotations", "0"], "--joint_rotations 0: need 1 to 4"),
    (["--joint_rotations", "5"], "--joint_rotations 5: need 1 to 4"),  # was capped at 4 without a word
    (["--hub_token", "hf_secret"], "--hub_token is not accepted"),
    (["--push_to_hub", "--hub_model_id", "a b/c"], "--hub_model_id 'a b/c' is not a valid repository id"),
    (["--seeds", "1,1"], "--seeds 1,1: need distinct integers"),
    (["--seeds", "1,99999999999"], "--seeds 1,99999999999: seed 99999999999: need a whole number in [0, 2^32)"),
    (["--eval_accumulation_steps", "0"], "--eval_accumulation_steps 0: need 1 or more"),
    (["--metric_for_best_model", "acc"], "--metric_for_best_model 'acc': not reported by an evaluation"),
    (["--report_to", "-"], "--report_to '-': not a tracker transformers knows"),
    (["--lr_scheduler_kwargs", "1,2"], "--lr_scheduler_kwargs '1,2': need a JSON object"),
    (["--optim_args", "-1"], "--optim_args '-1': need key=value pairs"),
    (["--label_names", "answer"], "--label_names ['answer']: hf_ft's collators name the labels `labels`"),
    (["--run_name", "\u200b"], r"--run_name '\u200b': empty; leave the flag out for its default"),
    (["--model_revision", "ma\x00in"], r"--model_revision 'ma\x00in': contains a control character"),
    (["--preprocessing_num_workers", "-1"], "--preprocessing_num_workers -1: need 1 or more processes"),
    (["--cache_dir", __file__], f"--cache_dir {__file__}: is a file, not a folder"),
    (["--hub_revision", "my branch"], "--hub_revision 'my branch': not a branch, tag or commit name the hub accepts"),
    (["--dataset_revision", "v1..v2"], "--dataset_revision 'v1..v2': not a branch, tag or commit name"),
    (["--config_overrides", "99"], "--config_overrides '99': '99' is not key=value"),
    (["--data_dir", "d", "--train-file", "x.csv"], "--train_file with --data_dir: a run reads one source"),
    (["--formulation", "both"], "invalid choice: 'both'"),
    (["--eval_strategy", "steps", "--eval_steps", "-5"], "--eval_steps -5.0: need a positive number"),
    # the siblings of a check (NaN passes a `<= 0` test; a seed numpy cannot take; a count given a fraction)
    (["--learning_rate", "nan"], "--learning_rate nan: need a positive learning rate"),
    (["--num_train_epochs", "inf"], "--num_train_epochs inf: need a finite number of epochs"),
    (["--seed", "-1"], "--seed -1: need a whole number in [0, 2^32)"),
    (["--split_seed", "-3"], "--split_seed -3: need a whole number in [0, 2^32)"),
    (["--weight_decay", "-0.1"], "--weight_decay -0.1: need 0 or more"),
    (["--adam_beta2", "1"], "--adam_beta2 1.0: need a share in [0, 1)"),
    (["--warmup_steps", "2.5"], "--warmup_steps 2.5: need a whole number above 1"),
    (["--logging_steps", "0"], "--logging_steps 0.0: need a positive number"),
    (["--max_grad_norm=-inf"], "--max_grad_norm -inf: need 0 or more"),
    (["--early_stopping_threshold", "nan"], "--early_stopping_threshold nan: need a finite number"),
    # a flag the combination would ignore
    (["--data_dir", "d", "--train_file", "t.csv"], "--train_file with --data_dir: a run reads one source"),
    (["--train_file", "t.csv", "--dataset_revision", "v1.0"], "--dataset_revision with --train_file: the data"),
    (["--formulation", "mlm", "--metric_for_best_model", "accuracy"],
     "--metric_for_best_model accuracy: --formulation mlm reports only the loss"),
])
def test_bad_settings_are_refused_in_one_line(argv, expected, tmp_path, capsys):
    code, out, err = cli(["train", "--output_dir", str(tmp_path / "out"), *argv], capsys)
    assert code == 2
    assert expected in one_line(err)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_what_transformers_accepts_is_accepted(tmp_path):
    """--logging_steps 0.5 is half the run in transformers; hf_ft follows it rather than refusing it."""
    from hf_ft.config.arguments import parse_args

    parsed = parse_args(["--output_dir", str(tmp_path / "o"), "--logging_steps", "0.5", "--warmup_steps", "0.1",
                         "--use_cpu"])
    assert parsed.training.logging_steps == 0.5


def test_output_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    code, _, err = cli(["train", "--output_dir", str(tmp_path / "taken")], capsys)
    assert code == 2 and f"--output_dir {tmp_path / 'taken'}: is a file" in one_line(err)


def test_an_empty_output_dir_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" would have meant the current folder
    code, _, err = cli(["train", "--output_dir", ""], capsys)
    assert code == 2 and "--output_dir '': empty" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_errors_of_other_entry_points(trained_run, tmp_path, capsys):
    out, _ = trained_run
    (tmp_path / "file").write_text("x")
    cases = [
        (["push", str(out), "--repo_id", "a b/c"], "--repo_id 'a b/c' is not a valid repository id"),
        (["push", str(out), "--repo_id", "me/x", "--dry_run", "--privat"], "unknown argument --privat (did you mean"),
        (["push", str(out), "--repo_id", "me/x", "--dry_run", "--revision", "new feature"],
         "--revision 'new feature': not a branch, tag or commit name the hub accepts"),
        (["predict", str(out), "--input", str(out / "test_qa_data.json"), "--output", str(tmp_path / "file" / "p.jsonl")],
         "is a file, not a folder"),
        (["predict", str(out), "--question", "q", "--choices", "a", "b", "--batch_size", "0"], "--batch_size 0"),
        (["evaluate", "--original", str(out), "--finetuned", str(out), "--max_items", "0"], "--max_items 0: need 1"),
        (["evaluate", "--original", str(out), "--finetuned", str(out), "--reference", "nobody"],
         "--reference nobody: not a model of this comparison"),
        (["evaluate", "--originl", str(out)], "unknown argument --originl"),
        (["make-demo-data", str(tmp_path / "d"), "--rows-per-subject", "3"], "--rows-per-subject 3: need 20 or more"),
        (["tarin"], "unknown command 'tarin' (did you mean train?)"),
        (["make-tiny-model", str(tmp_path / "m"), "--vocab-from", str(tmp_path), "--hidden-size", "64", "--heads",
          "5"], "--heads 5: must divide --hidden-size 64"),
        (["make-tiny-model", str(tmp_path / "m"), "--vocab-from", str(tmp_path / "nope")], "--vocab-from"),
        (["evaluate", "--original", str(out), "--finetuned", str(out), "--max_seq_length", "8"],
         "--max_seq_length 8: too short"),  # the rule training uses
        (["evaluate", "--original", str(out), "--finetuned", str(out), "--max_unk_rate", "nan"], "--max_unk_rate nan"),
        (["predict", str(out), "--question", "q", "--choices", "a", "b", "--max_seq_length", "4"],
         "--max_seq_length 4: too short"),
        (["predict", str(out), "--fill", "今天[MASK]", "--top_k", "0"], "--top_k 0: need 1 or more"),
        # the make-* commands: declared rules, the output folder checked first, stray values named
        (["make-demo-data", str(tmp_path / "d"), "--artifact-rate", "nan"], "--artifact-rate nan: need a share in"),
        (["make-demo-data", str(out / "README.md")], f"out_dir {out / 'README.md'}: is a file, not a folder"),
        (["make-demo-data", str(tmp_path / "d"), "--plant-artifact", "longest", "--artifact-subjects", "physics"],
         "--artifact-subjects: physics not among the demo subjects"),
        (["make-open-book-data", str(tmp_path / "b"), "--seed", "-2"], "--seed -2: need a whole number"),
        (["make-tiny-model", str(tmp_path / "m"), "--vocab-from", str(tmp_path), "--layers", "0"], "--layers 0"),
        (["push", str(out), "--repo_id", "me/x", "--dry_run", "--private", " "], "unexpected value ' ': every value"),
    ]
    for argv, expected in cases:
        code, _, err = cli(argv, capsys)
        assert code == 2, argv
        assert expected in err.strip().splitlines()[-1], (argv, err)
        assert "Traceback" not in err


def test_permission_and_other_os_errors_are_named():
    from hf_ft.core.errors import explain

    assert explain(PermissionError(errno.EACCES, "Permission denied", "/data/x.csv")) == "/data/x.csv: permission denied"
    assert explain(IsADirectoryError(errno.EISDIR, "Is a directory", "/data")) == "/data: is a folder, not a file"
    assert explain(OSError(errno.ENOSPC, "No space left")) == "a file: no space left on the device"
    assert explain(RuntimeError("our bug")) is None  # keeps its traceback


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_data_file(tmp_path, demo_data, tiny_model, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    (data / "music_test.csv").chmod(0)
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(data),
                        "--output_dir", str(tmp_path / "o"), *TRAIN_ARGS], capsys)
    assert code == 2 and "music_test.csv: permission denied" in one_line(err)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name,content,expected", [
    ("two.csv", "question,A,B,C,D,answer\nq1,a,b,c,d,A\nq2,a,b,c,d,B\n", "only 2 training question(s) after splitting"),
    ("dup.csv", "question,A,B,C,D,answer,A\nq1,a,b,c,d,A,x\n", "dup.csv:1: column 'A' appears more than once"),
    ("bad.jsonl", '{"question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "A"}\n{"question": oops}\n',
     "bad.jsonl:2: not valid JSON"),
    ("nested.jsonl", '{"question": {"text": "q"}, "A": "a", "B": "b", "C": "c", "D": "d", "answer": "A"}\n',
     "nested.jsonl:1: question: not text"),
])
def test_bad_data_is_named_by_file_and_line(name, content, expected, tmp_path, tiny_model, capsys):
    path = write(tmp_path / name, content)
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--train_file", str(path),
                        "--output_dir", str(tmp_path / "o"), *TRAIN_ARGS], capsys)
    assert code == 2 and expected in err, err
    assert "Traceback" not in err


def test_a_long_field_is_a_long_question_not_an_error(tmp_path):
    from hf_ft.data.files import load_items

    long = "長" * 200_000  # over the csv module's default 128 KiB field limit
    path = write(tmp_path / "long.csv", f"question,A,B,C,D,answer\n{long},a,b,c,d,A\n")
    (row,) = load_items(path)
    assert row.question == long


def test_model_folder_without_tokenizer_files_is_refused(tmp_path, tiny_model, demo_data, capsys):
    headless = tmp_path / "weights_only"
    headless.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, headless / name)
    code, _, err = cli(["train", "--model_name_or_path", str(headless), "--data_dir", str(demo_data),
                        "--output_dir", str(tmp_path / "o"), *TRAIN_ARGS], capsys)
    assert code == 2 and "Traceback" not in err
    assert "tokenizer" in err.strip().splitlines()[-1] and str(headless) in err


def test_untrained_multiple_choice_head_is_not_scored(trained_run, tiny_model, tmp_path, capsys):
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    untrained = tmp_path / "untrained_head"
    AutoModelForMultipleChoice.from_pretrained(tiny_model).save_pretrained(untrained)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(untrained)
    out, _ = trained_run
    code, _, err = cli(["evaluate", "--original", str(untrained), "--finetuned", str(out), "--use_cpu",
                        "--output_dir", str(tmp_path / "c")], capsys)
    assert code == 2 and "head was never trained" in err.strip().splitlines()[-1]
    code, _, err = cli(["predict", str(untrained), "--question", "q", "--choices", "a", "b"], capsys)
    assert code == 2 and "head was never trained" in err.strip().splitlines()[-1]


def test_dry_run_writes_nothing_and_checks_the_repo_id(trained_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained_run[0], out)
    card = (out / "README.md").read_bytes()
    stamp = (out / "README.md").stat().st_mtime_ns
    code, _, err = cli(["push", str(out), "--repo_id", "bad repo", "--dry_run"], capsys)
    assert code == 2 and "not a valid repository id" in one_line(err)
    code, stdout, _ = cli(["push", str(out), "--repo_id", "me/x", "--dry_run"], capsys)
    assert code == 0 and "would push" in stdout
    assert (out / "README.md").read_bytes() == card and (out / "README.md").stat().st_mtime_ns == stamp


def test_an_unfinished_run_is_never_served_or_pushed(trained_run, tmp_path, capsys):
    """A run killed during its final save leaves model.safetensors without the finished marker: predict,
    evaluate and push refuse it; a file changed after the run finished is caught too."""
    out = tmp_path / "half"
    shutil.copytree(trained_run[0], out)
    (out / "hf_ft_finished.json").unlink()
    for argv in (["predict", str(out), "--question", "q", "--choices", "a", "b"],
                 ["push", str(out), "--repo_id", "me/x", "--dry_run"],
                 ["evaluate", "--original", str(out), "--finetuned", str(out)]):
        code, _, err = cli(argv, capsys)
        assert code == 2 and "not a complete run" in err.strip().splitlines()[-1], argv
    shutil.copy(trained_run[0] / "hf_ft_finished.json", out)
    with open(out / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    code, _, err = cli(["predict", str(out), "--question", "q", "--choices", "a", "b"], capsys)
    assert code == 2 and "model.safetensors has 1000 bytes" in err


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, tiny_model, demo_data, capsys):
    from hf_ft.core.run_dir import locked

    out = tmp_path / "busy"
    with locked(out):
        code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                            "--output_dir", str(out), *TRAIN_ARGS], capsys)
    assert code == 2 and f"is in use by process {os.getpid()}" in one_line(err)


def test_push_to_hub_without_network_fails_before_training(tmp_path, tiny_model, demo_data):
    result = run_cli(python("run_qa.py", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data),
                            "--output_dir", str(tmp_path / "o"), *TRAIN_ARGS, "--push_to_hub", "--hub_model_id",
                            "me/x"), env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": GOOD_TOKEN,
                                          "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "home")}, timeout=300)
    assert result.returncode == 2
    assert "--push_to_hub me/x: cannot reach the hub at http://127.0.0.1:9" in result.stderr
    assert not (tmp_path / "o" / "model.safetensors").exists() and "Traceback" not in result.stderr


def test_deepspeed_resumes_only_its_own_checkpoints(tmp_path, trained_run):
    """DeepSpeed unpickles checkpoint files: a checkpoint without this run's marker is refused, unless the
    user takes the risk with --trust_deepspeed_checkpoint."""
    from hf_ft.core.run_dir import CHECKPOINT_MARKER, checkpoint_problem

    checkpoint = tmp_path / "checkpoint-5"
    shutil.copytree(next(trained_run[0].glob("checkpoint-*")), checkpoint)
    assert checkpoint_problem(checkpoint, None, require_marker=True) is None
    (checkpoint / CHECKPOINT_MARKER).unlink()
    assert "not written by this run" in checkpoint_problem(checkpoint, None, require_marker=True)
    assert checkpoint_problem(checkpoint, None, require_marker=False) is None  # no pickle: transformers' own load
    with open(checkpoint / "model.safetensors", "r+b") as f:
        f.truncate(100)
    assert "model.safetensors" in checkpoint_problem(checkpoint, None, require_marker=False)


def test_marker_records_identity_and_sizes(trained_run):
    out, _ = trained_run
    marker = json.loads((out / "hf_ft_finished.json").read_text())
    started = json.loads((out / "hf_ft_started.json").read_text())
    assert marker["identity"] == started["identity"]
    assert marker["files"]["model.safetensors"] == (out / "model.safetensors").stat().st_size
    assert not any(name.startswith("checkpoint-") for name in marker["files"])


def test_max_seq_length_too_short_for_the_longest_option(tmp_path, tiny_model, capsys):
    rows = "".join(f"本題{i}？,鋼琴,二胡,老虎,{'考' * 40 if i == 7 else '芒果'},A\n" for i in range(40))
    path = write(tmp_path / "long_option.csv", "question,A,B,C,D,answer\n" + rows)
    code, _, err = cli(["train", "--model_name_or_path", str(tiny_model), "--train_file", str(path),
                        "--output_dir", str(tmp_path / "o"), *TRAIN_ARGS, "--max_seq_length", "32",
                        "--max_unk_rate", "0.2"], capsys)
    assert code == 2
    line = one_line(err)
    assert f"--max_seq_length 32: too short for the options of {path}:9" in line and "use 51 or more" in line

    # the same row, a model with fewer positions than the option needs: named before training, not a tensor-size
    # error in its first forward pass
    import shutil

    short = tmp_path / "short_model"
    shutil.copytree(tiny_model, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 40}))
    code, _, err = cli(["train", "--model_name_or_path", str(short), "--train_file", str(path),
                        "--output_dir", str(tmp_path / "o2"), *TRAIN_ARGS, "--max_unk_rate", "0.2"], capsys)
    line = one_line(err)
    assert code == 2 and f"the model's max_position_embeddings 40: too short for the options of {path}:9" in line


def test_predict_refuses_an_option_longer_than_the_model_reads(trained_run, capsys):
    out, _ = trained_run
    item = json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))[0]
    long_option = item["options"]["A"] * 400
    code, _, err = cli(["predict", str(out), "--question", item["question"], "--choices", long_option,
                        item["options"]["B"], "--use_cpu"], capsys)
    line = err.strip().splitlines()[-1]  # after transformers' weight-loading bar
    assert "Traceback" not in err
    assert code == 2 and "too short for the options of the question given" in line and "shorten that option" in line


def test_a_run_that_would_not_fit_stops_before_training_with_the_knobs(tmp_path, demo_data, tiny_model, capsys,
                                                                         monkeypatch, caplog):
    """The estimate is printed at the start of every run; above 90% of what the machine has free the run
    stops in one line naming each knob and what it brings the estimate to; --skip_memory_check runs it."""
    from hf_ft.training import memory

    argv = ["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects", "music",
            "--output_dir", str(tmp_path / "o"), *TRAIN_ARGS, "--max_steps", "1", "--eval_strategy", "no",
            "--save_strategy", "no", "--load_best_model_at_end", "false", "--per_device_eval_batch_size", "4"]
    real = memory.available_bytes
    monkeypatch.setattr(memory, "available_bytes", lambda on_gpu: (1, "available RAM"))  # a full machine
    code, out, err = cli(argv, capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("error: this run would need about ") and "Traceback" not in err
    assert "--per_device_train_batch_size 8 --gradient_accumulation_steps 2 (the same effective batch) →" in line
    assert "--gradient_checkpointing (about 20% slower) →" in line and "--skip_memory_check" in line
    assert not list((tmp_path / "o").glob("checkpoint-*")) and not (tmp_path / "o" / "model.safetensors").exists()
    code, out, err = cli([*argv, "--skip_memory_check"], capsys)
    assert code == 0, err[-2000:]
    monkeypatch.setattr(memory, "available_bytes", real)
    caplog.set_level("INFO", logger="hf_ft.training.memory")
    code, out, err = cli([*argv, "--overwrite_output_dir"], capsys)
    assert code == 0 and re.search(r"memory: estimated peak [\d.]+ GB per process", caplog.text)


def test_the_memory_estimate_follows_the_knobs():
    """Halving the batch halves the activations; checkpointing keeps one layer; ZeRO-3 partitions the states;
    attention grows with the square of the length."""
    from dataclasses import replace

    from hf_ft.training.memory import Shape, activation_bytes, estimate, state_bytes

    base = Shape(parameters=110_000_000, hidden=768, layers=12, heads=12, intermediate=3072, vocab=21128,
                 formulation="per_choice", choices=4, batch=8, accumulation=1, length=512, eval_batch=8,
                 eval_length=512)
    act = activation_bytes(base)
    assert 12 * 2**30 < act < 40 * 2**30  # bert-base, 32 sequences of 512 tokens: tens of GB
    assert activation_bytes(replace(base, batch=4)) == pytest.approx(act / 2, rel=0.01)
    assert activation_bytes(replace(base, checkpointing=True)) < act / 3
    assert activation_bytes(replace(base, length=256)) < act / 2  # the attention term is quadratic
    assert state_bytes(replace(base, zero_stage=3, world_size=4)) == (110_000_000, 220_000_000)
    assert estimate(base, now=2**30).peak == 2**30 + 2 * 12 * 110_000_000 + act


def test_one_guarded_writer_refuses_what_a_command_did_not_write(trained_run, tmp_path, capsys):
    """Every writing command claims its target through hf_ft.core.writers: a folder holding someone else's files,
    a target inside an input, a file another program wrote, are one line before any work, and nothing is lost;
    the command's own earlier output, and the overwrite flag, are accepted."""
    out, _ = trained_run
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work", encoding="utf-8")
    questions = tmp_path / "questions.json"  # the run's own (its tokenizer reads them)
    questions.write_text((out / "test_qa_data.json").read_text(encoding="utf-8"), encoding="utf-8")
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"my": "notes"}\n', encoding="utf-8")
    cases = [
        (["make-demo-data", str(mine)], f"out_dir {mine}: holds files something other than `hf-ft make-demo-data` "
                                        "did not write (thesis.tex)"),
        (["make-open-book-data", str(mine)], "pass --overwrite to write over them"),
        (["make-tiny-model", str(mine / "m"), "--vocab-from", str(mine)], None),  # a new subfolder: fine
        (["make-tiny-model", str(tmp_path / "v" / "model"), "--vocab-from", str(tmp_path / "v")],
         f"is inside the --vocab-from folder {tmp_path / 'v'}"),
        (["evaluate", "--original", str(out), "--finetuned", str(out), "--output_dir", str(mine)],
         "holds files something other than `python -m hf_ft.evaluate` did not write"),
        (["evaluate", "--original", str(out), "--finetuned", str(out), "--output_dir", str(out)],
         "did not write"),  # the run folder itself is not a comparison folder
        (["predict", str(out), "--input", str(questions), "--output", str(notes)],
         f"--output {notes}: a file `hf-ft predict` did not write is there"),
    ]
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "music_test.csv").write_text("question,A,B,C,D,answer\n一？,一,二,三,四,A\n", encoding="utf-8")
    for argv, expected in cases:
        if expected is None:
            continue
        code, _, err = cli(argv, capsys)
        assert code == 2 and "Traceback" not in err, (argv, err)
        assert expected in err.strip().splitlines()[-1], (argv, err)
    assert (mine / "thesis.tex").read_text(encoding="utf-8") == "years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]  # refused before anything was written
    assert notes.read_text(encoding="utf-8") == '{"my": "notes"}\n'

    # its own output again, a folder from before markers, and the overwrite flag are fine
    demo = tmp_path / "demo"
    for _ in range(2):
        assert cli(["make-demo-data", str(demo), "--rows-per-subject", "20"], capsys)[0] == 0
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "music_dev.csv").write_text("question,A,B,C,D,answer\n", encoding="utf-8")
    assert cli(["make-demo-data", str(legacy), "--rows-per-subject", "20"], capsys)[0] == 0
    assert cli(["make-demo-data", str(mine), "--rows-per-subject", "20", "--overwrite"], capsys)[0] == 0
    assert (mine / "thesis.tex").is_file()  # written over, never deleted
    predictions = tmp_path / "p.jsonl"
    for _ in range(2):
        assert cli(["predict", str(out), "--input", str(questions), "--output", str(predictions), "--use_cpu"],
                   capsys)[0] == 0
    assert cli(["predict", str(out), "--input", str(questions), "--output", str(notes), "--overwrite", "--use_cpu"],
               capsys)[0] == 0 and '"ranking"' in notes.read_text(encoding="utf-8")


@pytest.mark.parametrize("module", ["preprocessing", "retrieval", "memory"])
def test_a_benchmark_claims_its_report_path_before_work(tmp_path, capsys, module):
    import importlib

    (tmp_path / "file").write_text("x", encoding="utf-8")
    (tmp_path / "mine.json").write_text('{"my": "results"}', encoding="utf-8")
    main = importlib.import_module(f"benchmarks.{module}").main
    for output, expected in ((tmp_path / "file" / "r.json", "is a file, not a folder"),
                             (tmp_path / "mine.json", "a file `hf_ft benchmarks` did not write is there")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--output", str(output)])
        assert exit_info.value.code == 2
        assert expected in capsys.readouterr().err.strip().splitlines()[-1]
    numeric = {"retrieval": "--queries", "memory": "--steps"}.get(module)  # preprocessing has none
    if numeric:
        with pytest.raises(SystemExit) as exit_info:
            main(["--output", str(tmp_path / "new.json"), numeric, "0"])
        assert exit_info.value.code == 2
        assert f"{numeric.lstrip('-')} 0: need a positive finite number" in capsys.readouterr().err
    assert (tmp_path / "mine.json").read_text(encoding="utf-8") == '{"my": "results"}'


def test_paths_are_checked_by_kind_and_named_by_their_flag(trained_run, tiny_model, demo_data, tmp_path, capsys):
    out, _ = trained_run
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x", encoding="utf-8")
    train = ["train", "--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--output_dir",
             str(tmp_path / "o"), *TRAIN_ARGS]
    cases = [
        ([*train, "--tokenizer_name", "./no_tokenizer"], "--tokenizer_name ./no_tokenizer: no such folder"),
        ([*train, "--tokenizer_name", str(a_file)], f"--tokenizer_name {a_file}: is a file; a model or tokenizer"),
        ([*train[:2], str(a_file), *train[3:]], f"--model_name_or_path {a_file}: is a file"),
        (["predict", str(a_file), "--question", "q", "--choices", "a", "b"], f"model {a_file}: is a file"),
        (["evaluate", "--original", str(tiny_model), "--finetuned", str(a_file)], f"--finetuned {a_file}: is a file"),
        (["train", "--model_name_or_path", str(tiny_model), "--train_file", str(demo_data), "--output_dir",
          str(tmp_path / "o"), *TRAIN_ARGS], f"--train_file {demo_data}: is a folder, not a data file"),
        (["evaluate", "--original", str(tiny_model), "--finetuned", str(out), "--test_file", str(demo_data)],
         f"--test_file {demo_data}: is a folder, not a data file"),
        (["predict", str(out), "--input", str(a_file)], f"--input {a_file}: unsupported file type '.txt'"),
    ]
    for argv, expected in cases:
        code, _, err = cli(argv, capsys)
        assert code == 2 and "Traceback" not in err, (argv, err)
        assert expected in err.strip().splitlines()[-1], (argv, err)


def test_a_models_path_holding_an_equals_sign_is_a_path_not_a_label(trained_run, tmp_path):
    import shutil

    from hf_ft.evaluation.evaluate import EvaluateArguments
    from hf_ft.evaluation.items import parse_models

    out, _ = trained_run
    odd = tmp_path / "lr=3e-5"
    shutil.copytree(out, odd)
    args = EvaluateArguments(original="o", finetuned=[str(out)], models=[str(odd), f"mine={odd}"])
    entries = parse_models(args, [(str(out), None)])
    assert [(label, path) for label, path, role, _ in entries if role == "model"] == [(str(odd), str(odd)),
                                                                                      ("mine", str(odd))]


def test_sibling_checks_reach_every_command_that_reads_the_input(trained_run, tmp_path, capsys):
    """A check belongs to the input: the folder of several runs is recognised by push as by evaluate and
    predict; the same question with two answers and a skewed answer column are found in predict's input as in
    training's."""
    import shutil

    out, _ = trained_run
    seeds = tmp_path / "seeds"
    for n in (1, 2):
        shutil.copytree(out, seeds / f"seed-{n}")
    code, _, err = cli(["push", str(seeds), "--repo_id", "me/x", "--dry_run"], capsys)
    assert code == 2 and f"{seeds}: a --seeds folder (seed-1, seed-2), not one model" in err.strip().splitlines()[-1]

    items = json.loads((out / "test_qa_data.json").read_text(encoding="utf-8"))
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps([items[0], {**items[0], "id": "copy", "answer": "ABCD"[("ABCD".index(
        items[0]["answer"]) + 1) % 4]}], ensure_ascii=False), encoding="utf-8")
    code, _, err = cli(["predict", str(out), "--input", str(twice), "--use_cpu"], capsys)
    assert code == 2 and f"{twice}:2: the same question and options as {twice}:1" in err
    assert "--on_bad_rows" not in err  # predict has no such flag

    skewed = tmp_path / "skewed.json"
    skewed.write_text(json.dumps([{**item, "answer": "A"} for item in items[:40]], ensure_ascii=False),
                      encoding="utf-8")
    code, _, err = cli(["predict", str(out), "--input", str(skewed), "--use_cpu"], capsys)
    assert code == 0 and "warning: " in err and "gold answers (100%) are A" in err

"""`hf-ft`: one console script for every step (train, evaluate, predict, push, and the offline fixtures)."""

from __future__ import annotations

import sys
from pathlib import Path

from .core import validation
from .core.errors import ArgumentParser, UserError, did_you_mean, run_user_errors
from .core.writers import claim_folder, names_like

USAGE = """usage: hf-ft COMMAND [ARGS]

commands:
  train              fine-tune (same arguments as run_qa.py)
  evaluate           original vs fine-tuned on held-out questions (python -m hf_ft.evaluate)
  predict            answer questions with a model: single, --input FILE, --interactive, --fill
  push               upload a finished output_dir to the hub with its model card
  make-demo-data     write a learnable synthetic TMMLU+-layout data set: hf-ft make-demo-data DIR
                     [--plant-artifact longest|negation --artifact-subjects S,...: the gold option is the
                     longest | their test questions are negated]
  make-open-book-data  facts about invented names and questions only they answer (the open-book demo):
                     hf-ft make-open-book-data DIR → DIR/data, DIR/corpus/facts.jsonl
  make-tiny-model    a tiny BERT, vocabulary from data: hf-ft make-tiny-model DIR --vocab-from DATA...
                     [--pretrain-sentences N: masked-LM pretraining on N fact sentences]
"""


def train_command(argv: list[str]) -> None:
    from .config.arguments import parse_args
    from .training.run import train

    train(parse_args(argv))


def demo_data_parser() -> ArgumentParser:
    from .demo import ARTIFACTS, make_demo_data

    parser = ArgumentParser(prog="hf-ft make-demo-data", description=make_demo_data.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into out_dir even when it holds files this command did not write")
    parser.add_argument("--rows-per-subject", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plant-artifact", choices=list(ARTIFACTS), default=None,
                        help="longest: make the options give the answer away in --artifact-subjects; negation: make "
                             "their test questions ask which option does not belong (a form training never shows)")
    parser.add_argument("--artifact-subjects", default="music,agriculture,physical_education,introduction_to_law")
    parser.add_argument("--artifact-rate", type=float, default=0.9, help="share of those subjects' items affected")
    return parser


def open_book_data_parser() -> ArgumentParser:
    from .demo import make_open_book_data

    parser = ArgumentParser(prog="hf-ft make-open-book-data", description=make_open_book_data.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into out_dir even when it holds files this command did not write")
    parser.add_argument("--rows-per-subject", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def tiny_model_parser() -> ArgumentParser:
    from .demo import make_tiny_model

    parser = ArgumentParser(prog="hf-ft make-tiny-model", description=make_tiny_model.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into out_dir even when it holds files this command did not write")
    parser.add_argument("--vocab-from", nargs="+", required=True, help="data files or folders whose characters "
                                                                       "make the vocabulary")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-sentences", type=int, default=0,
                        help="masked-LM pretraining on this many fact sentences (0: leave it randomly initialised)")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    return parser


# What each make-* flag may be (hf_ft/validation.py), keyed as the user types it.
DEMO_DATA_RULES = {"rows-per-subject": validation.at_least(20), "seed": validation.SEED,
                   "artifact-rate": validation.share(0, 1)}
OPEN_BOOK_DATA_RULES = {"rows-per-subject": validation.at_least(20), "seed": validation.SEED}
TINY_MODEL_RULES = {**{name: validation.at_least(1) for name in ("hidden-size", "layers", "heads",
                                                                  "intermediate-size", "pretrain-epochs")},
                    "seed": validation.SEED, "pretrain-sentences": validation.at_least(0)}


def _parse(command: str, parser, argv: list[str], rules: dict):
    """A helper command's arguments: each value in its range, and each flag with what it needs
    (hf_ft.config.flags.COMMANDS), in one line before work."""
    from .config.flags import command_problems

    args = validation.parse_checked(parser, argv, rules)
    problems = command_problems(command, validation.given_names(parser, args), dashes=True)
    if problems:
        raise UserError(validation.refusal(problems))
    return args


def make_demo_data_command(argv: list[str]) -> None:
    from .demo import make_demo_data

    args = _parse("make-demo-data", demo_data_parser(), argv, DEMO_DATA_RULES)
    subjects = [s.strip() for s in args.artifact_subjects.split(",") if s.strip()]
    claim_folder(args.out_dir, "hf-ft make-demo-data", "out_dir", overwrite=args.overwrite,
                 written_before=names_like(r".+_(dev|val|test)\.csv"))
    out = make_demo_data(args.out_dir, args.rows_per_subject, args.seed, artifact=args.plant_artifact,
                         artifact_subjects=subjects, artifact_rate=args.artifact_rate)
    print(f"demo data written to {out}")


def make_open_book_data_command(argv: list[str]) -> None:
    from .demo import make_open_book_data

    args = _parse("make-open-book-data", open_book_data_parser(), argv, OPEN_BOOK_DATA_RULES)
    claim_folder(args.out_dir, "hf-ft make-open-book-data", "out_dir", overwrite=args.overwrite,
                 written_before=names_like("data", "corpus", "gold_passages.jsonl", "model"))
    data, corpus = make_open_book_data(args.out_dir, args.rows_per_subject, args.seed)
    print(f"open-book demo: questions in {data}, the facts that answer them in {corpus}")


def make_tiny_model_command(argv: list[str]) -> None:
    from .demo import make_tiny_model, pretrain_tiny_model

    args = _parse("make-tiny-model", tiny_model_parser(), argv, TINY_MODEL_RULES)
    problems = []
    if args.hidden_size % args.heads:
        problems.append(f"--heads {args.heads}: must divide --hidden-size {args.hidden_size}")
    missing = [p for p in args.vocab_from if not Path(p).exists()]
    if missing:
        problems.append(f"--vocab-from {missing[0]}: no such file or folder")
    if problems:
        raise UserError("; ".join(problems))
    claim_folder(args.out_dir, "hf-ft make-tiny-model", "out_dir", overwrite=args.overwrite,
                 inputs=[("--vocab-from", p) for p in args.vocab_from],
                 written_before=names_like(r"config\.json", r"model\.safetensors", r"(tokenizer|special_tokens_map|"
                                           r"generation_config)[\w.]*\.json", r"vocab\.txt"))
    out = make_tiny_model(args.out_dir, args.vocab_from, args.hidden_size, args.layers, args.heads,
                          args.intermediate_size, seed=args.seed)
    if args.pretrain_sentences:
        pretrain_tiny_model(out, args.pretrain_sentences, args.pretrain_epochs, seed=args.seed)
    print(f"tiny model written to {out}{' (pretrained)' if args.pretrain_sentences else ''}")


PARSERS = {  # the make-* commands' arguments (the fuzzer reads every flag from here)
    "make-demo-data": demo_data_parser,
    "make-open-book-data": open_book_data_parser,
    "make-tiny-model": tiny_model_parser,
}

COMMANDS = {
    "train": train_command,
    "make-demo-data": make_demo_data_command,
    "make-open-book-data": make_open_book_data_command,
    "make-tiny-model": make_tiny_model_command,
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "evaluate":
        from .evaluation.evaluate import main as evaluate_main

        evaluate_main(rest)
    elif command == "predict":
        from .evaluation.predict import main as predict_main

        predict_main(rest)
    elif command == "push":
        from .publish.hub import main as push_main

        push_main(rest)
    elif command in COMMANDS:
        run_user_errors(COMMANDS[command], rest)
    else:
        known = ["evaluate", "predict", "push", *COMMANDS]
        print(f"error: hf-ft: unknown command '{command}'{did_you_mean(command, known)}; `hf-ft --help` lists them",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

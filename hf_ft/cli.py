"""`hf-ft`: one console script for every step (train, make-demo-data, make-tiny-model, evaluate, predict, push)."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError

USAGE = """usage: hf-ft COMMAND [ARGS]

commands:
  train            fine-tune (same arguments as run_qa.py)
  make-demo-data   write a learnable synthetic TMMLU+-layout data set: hf-ft make-demo-data DIR
  make-tiny-model  a tiny BERT, vocabulary from data: hf-ft make-tiny-model DIR --vocab-from DATA...
                   [--pretrain-sentences N: masked-LM pretraining on N fact sentences]
  evaluate         original vs fine-tuned on held-out questions (python -m hf_ft.evaluate)
  predict          answer questions with a model: single, --input FILE, --interactive, --fill
  push             upload a trained output_dir to the hub with its model card
"""


def run_user_errors(fn, *args, **kwargs):
    """Run a command; a problem the user can fix becomes one line on stderr and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def train_command(argv: list[str]) -> None:
    from .arguments import parse_args
    from .train import leave_process_group, main

    run_user_errors(lambda: main(*parse_args(argv)))
    leave_process_group()


def make_demo_data_command(argv: list[str]) -> None:
    from .demo import make_demo_data

    parser = argparse.ArgumentParser(prog="hf-ft make-demo-data", description=make_demo_data.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--rows-per-subject", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = make_demo_data(args.out_dir, args.rows_per_subject, args.seed)
    print(f"demo data written to {out}")


def make_tiny_model_command(argv: list[str]) -> None:
    from .demo import make_tiny_model, pretrain_tiny_model

    parser = argparse.ArgumentParser(prog="hf-ft make-tiny-model", description=make_tiny_model.__doc__)
    parser.add_argument("out_dir")
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
    args = parser.parse_args(argv)
    out = make_tiny_model(args.out_dir, args.vocab_from, args.hidden_size, args.layers, args.heads,
                          args.intermediate_size, seed=args.seed)
    if args.pretrain_sentences:
        pretrain_tiny_model(out, args.pretrain_sentences, args.pretrain_epochs, seed=args.seed)
    print(f"tiny model written to {out}{' (pretrained)' if args.pretrain_sentences else ''}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        train_command(rest)
    elif command == "make-demo-data":
        make_demo_data_command(rest)
    elif command == "make-tiny-model":
        make_tiny_model_command(rest)
    elif command == "evaluate":
        from .evaluate import main as evaluate_main

        evaluate_main(rest)
    elif command == "predict":
        from .predict import main as predict_main

        predict_main(rest)
    elif command == "push":
        from .hub import main as push_main

        push_main(rest)
    else:
        print(f"hf-ft: unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

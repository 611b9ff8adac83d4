"""The push to the hub: `hf-ft push DIR --repo_id ns/name`, and `--push_to_hub` at the end of training.

Only a finished run is pushed (its hf_ft_finished.json matches the files), in one commit: the model,
tokenizer, card, curve and result files — never checkpoints, optimizer states or rejected-row dumps
unless asked. Tokens come from HF_TOKEN or the `hf auth login` store only. `--dry_run` validates what
a real push would (repo id, token-free checks, files, the card) and writes and sends nothing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.errors import ArgumentParser, UserError, hub_problem, run_user_errors
from ..core.run_dir import (
    CARD_FILE,
    COMPARISON_DIR,
    MODEL_WEIGHTS,
    REJECTED_FILE,
    RUN_RECORD_FILE,
    TEST_ITEM_RESULTS_FILE,
    TEST_ITEMS_FILE,
    TEST_PREDICTIONS_FILE,
    require_finished,
    several_runs_problem,
)
from .model_card import build_model_card, write_model_card

logger = logging.getLogger(__name__)

PUSHED_PATTERNS = [
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "*.model", "chat_template.jinja",
    CARD_FILE, "validation_loss_curve.png", "loss_history.json", "all_results.json", "eval_results.json",
    "train_results.json", TEST_ITEM_RESULTS_FILE, "data_manifest.json", RUN_RECORD_FILE,
    "seeds_summary.json", f"{COMPARISON_DIR}/comparison.json", f"{COMPARISON_DIR}/comparison.md",
    f"{COMPARISON_DIR}/comparison.png",
]
CHECKPOINT_PATTERNS = ["checkpoint-*/*"]
# The benchmark's test questions as text, and the model's answers to them: pushed only when asked
# (--include_test_items). Test sets re-hosted where crawlers read them end up in the next models' training data.
TEST_TEXT_FILES = [TEST_ITEMS_FILE, TEST_PREDICTIONS_FILE]


def check_repo_id(repo_id: str, flag: str = "--repo_id") -> str:
    """The hub's own rules for a repository id (huggingface_hub.utils.validate_repo_id), as one line."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        reason = str(e).strip().splitlines()[0]
        raise UserError(f"{flag} {repo_id!r} is not a valid repository id: {reason}") from None
    return repo_id


def check_push_access(repo_id: str) -> None:
    """Before a --push_to_hub run trains for hours: a valid repo id, a token, and a hub that answers to it."""
    from huggingface_hub import HfApi, get_token

    check_repo_id(repo_id, "--hub_model_id")
    token = get_token()
    if not token:
        raise UserError("--push_to_hub: no Hugging Face token: set HF_TOKEN or run `hf auth login` (tokens are never "
                        "read from arguments or files)")
    try:
        HfApi(token=token).whoami()
    except Exception as error:  # noqa: BLE001 - one line, or our bug re-raised
        raise UserError(f"--push_to_hub {repo_id}: {hub_problem(error, writing=True)}") from None


def repo_id_for(hub_model_id: str | None, output_dir: str | Path) -> str:
    """--hub_model_id, or (as the Trainer does) the output folder's name."""
    return hub_model_id or Path(output_dir).name


def files_to_push(output_dir: str | Path, include_checkpoints: bool = False, include_rejected: bool = False,
                  include_test_items: bool = False) -> list[str]:
    """The run's files to upload, chosen by huggingface_hub's own pattern filter."""
    from huggingface_hub.utils import filter_repo_objects

    out = Path(output_dir)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    allow = PUSHED_PATTERNS + (CHECKPOINT_PATTERNS if include_checkpoints else []) + (
        [REJECTED_FILE] if include_rejected else []) + (TEST_TEXT_FILES if include_test_items else [])
    ignore = [".*", "*/.*"] + ([] if include_checkpoints else ["checkpoint-*"])
    # A pattern without "/" names top-level files only (fnmatch's "*" would also match "a/b").
    return [f for f in filter_repo_objects(files, allow_patterns=allow, ignore_patterns=ignore)
            if "/" not in f or f.startswith((f"{COMPARISON_DIR}/", "checkpoint-"))]


def push_output_dir(output_dir: str | Path, repo_id: str, private: bool = False, dry_run: bool = False,
                    include_checkpoints: bool = False, include_rejected: bool = False,
                    commit_message: str = "Upload model trained with hf_ft", revision: str | None = None,
                    include_test_items: bool = False) -> dict:
    """Refresh the card, then upload the chosen files of a finished output_dir in one commit."""
    from huggingface_hub import HfApi, get_token

    check_repo_id(repo_id)
    out = Path(output_dir)
    if not out.is_dir():
        raise UserError(f"{out}: output directory not found")
    problem = several_runs_problem(out, "push one run at a time")
    if problem:
        raise UserError(problem)
    require_finished(out)
    if not any((out / name).is_file() for name in MODEL_WEIGHTS):
        raise UserError(f"{out}: no model weights (model.safetensors) here; is this a finished hf_ft run?")
    files = files_to_push(out, include_checkpoints, include_rejected, include_test_items)
    if dry_run:
        if (out / RUN_RECORD_FILE).is_file():
            build_model_card(out, repo_id, include_test_items)  # the card a push would send must build; not written
        target = f"{repo_id}{f'@{revision}' if revision else ''}{' (private)' if private else ''}"
        print(f"would push {len(files)} files from {out} to {target}:")
        for f in files:
            print(f"  {f}  ({(out / f).stat().st_size:,} bytes)")
        return {"repo_id": repo_id, "files": files, "dry_run": True}
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (tokens are never read from "
                        "arguments or files)")
    if (out / RUN_RECORD_FILE).is_file():
        write_model_card(out, repo_id, include_test_items)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(folder_path=str(out), repo_id=repo_id, allow_patterns=files,
                                   commit_message=commit_message, revision=revision)
    except Exception as error:  # noqa: BLE001 - every way a push can fail is one line (or our bug, re-raised)
        raise UserError(f"push to {repo_id} failed: {hub_problem(error, writing=True)}") from None
    print(f"pushed {len(files)} files to {url} (commit {commit.oid})")
    return {"repo_id": repo_id, "files": files, "url": str(url), "commit": commit.oid}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="hf-ft push", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="a finished training run's output_dir")
    parser.add_argument("--repo_id", required=True, help="namespace/name on the hub")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing); default main")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="check and list what would be sent; write and send "
                                                               "nothing")
    parser.add_argument("--include_checkpoints", action="store_true")
    parser.add_argument("--include_rejected_rows", action="store_true")
    parser.add_argument("--include_test_items", action="store_true",
                        help="also push the test questions' text and the model's answers (test_qa_data.json, "
                             "test_predictions.jsonl); by default only ids, content hashes and per-item correctness")
    parser.add_argument("--commit_message", default="Upload model trained with hf_ft")
    return parser


def push_command(argv: list[str] | None = None) -> dict:
    from ..core import validation

    args = validation.parse_checked(build_parser(), argv, {})
    problem = validation.revision_problem("revision", args.revision)
    if problem:
        raise UserError(problem)
    logging.basicConfig(level=logging.WARNING)
    return push_output_dir(args.output_dir, args.repo_id, args.private, args.dry_run, args.include_checkpoints,
                           args.include_rejected_rows, args.commit_message, args.revision, args.include_test_items)


def main(argv: list[str] | None = None):
    return run_user_errors(push_command, argv)

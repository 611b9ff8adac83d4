"""The model card and the push to the hub.

The card is built with huggingface_hub's ModelCard/ModelCardData (model-index from
eval_results.json, the comparison from comparison/comparison.json when present) and written to
output_dir/README.md at the end of training. `hf-ft push DIR --repo_id ns/name` uploads the model,
tokenizer, card, curve and result files in one commit — never checkpoints, optimizer states or
rejected-row dumps unless asked. Tokens come from HF_TOKEN or the `hf auth login` store only.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
from importlib import resources
from pathlib import Path

from .data import read_json_if_present
from .errors import UserError
from .metrics import percent
from .subjects import CATEGORIES

logger = logging.getLogger(__name__)

RUN_INFO_FILE = "hf_ft_run.json"
CARD_FILE = "README.md"
PUSHED_PATTERNS = [
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "*.model", "chat_template.jinja",
    CARD_FILE, "validation_loss_curve.png", "loss_history.json", "all_results.json", "eval_results.json",
    "train_results.json", "test_qa_data.json", "test_predictions.jsonl", "data_manifest.json", RUN_INFO_FILE,
    "comparison/comparison.json", "comparison/comparison.md", "comparison/comparison.png",
]
CHECKPOINT_PATTERNS = ["checkpoint-*/*", "checkpoint-*/**/*"]
REJECTED_PATTERNS = ["rejected_rows.jsonl"]
# How a joint model reads a question (hf_ft.preprocessing.JointCollator) and how hf_ft merges rotations
# (merge_rotations), in plain transformers: what the card shows, and what the tests run against hf_ft.
JOINT_USAGE = '''import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForSequenceClassification.from_pretrained("{repo_id}").eval()
question, options = "下列何者為哺乳類？", ["鯨魚", "鯊魚", "章魚", "海星"]
# One sequence: [CLS] question [SEP] A option [SEP] B option [SEP] C option [SEP] D option [SEP], scored in
# `rotations` rotated option orders; each option's log-probability is averaged over the slots it sat in.
rotations = {rotations}  # as hf_ft evaluated this model (--joint_eval_rotations); 1: one pass
pieces = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
n = len(options)
shifts = [r * n // min(rotations, n) for r in range(min(rotations, n))]
scores = torch.zeros(n)
for shift in shifts:
    order = [(slot - shift) % n for slot in range(n)]  # which option sits in each slot
    ids = [tokenizer.cls_token_id, *pieces(question), tokenizer.sep_token_id]
    first = len(ids)
    for slot, option in enumerate(order):
        ids += [*pieces("ABCDEFGHIJ"[slot]), *pieces(options[option]), tokenizer.sep_token_id]
    inputs = {{"input_ids": torch.tensor([ids])}}
    if "token_type_ids" in tokenizer.model_input_names:
        inputs["token_type_ids"] = torch.tensor([[0] * first + [1] * (len(ids) - first)])
    with torch.no_grad():
        log_probs = model(**inputs).logits[0].log_softmax(-1)
    scores += log_probs[[(option + shift) % n for option in range(n)]] / len(shifts)
print("ABCD"[scores.argmax().item()], scores.softmax(-1))'''

PIPELINE_TAGS = {"per_choice": "multiple-choice", "joint": "text-classification", "mlm": "fill-mask"}


# ----------------------------------------------------------------------------------------------
# The card


def eval_results_for_card(results: dict, revision: str | None, formulation: str):
    """model-index entries: accuracy, the TMMLU+ average and each category, on the test split."""
    from huggingface_hub import EvalResult

    entries = []
    for key, name in [("test_accuracy", "Accuracy"), ("test_tmmlu_average", "TMMLU+ average")] + [
            (f"test_accuracy_{c}", f"Accuracy ({c})") for c in CATEGORIES]:
        if key in results:
            entries.append(EvalResult(
                task_type="multiple-choice", task_name="Multiple choice", dataset_type="ikala/tmmluplus",
                dataset_name="TMMLU+", dataset_split="test", dataset_revision=revision,
                metric_type="accuracy", metric_name=name, metric_value=round(float(results[key]), 4)))
    return entries


def build_model_card(output_dir: str | Path, repo_id: str | None = None, license: str = "apache-2.0"):
    from huggingface_hub import ModelCard, ModelCardData
    import transformers

    from . import __version__

    out = Path(output_dir)
    run = read_json_if_present(out / RUN_INFO_FILE) or {}
    results = read_json_if_present(out / "eval_results.json") or {}
    comparison = read_json_if_present(out / "comparison" / "comparison.json")
    manifest = read_json_if_present(out / "data_manifest.json") or {}
    formulation = run.get("formulation", "per_choice")
    revision = manifest.get("revision")
    repo_id = repo_id or run.get("hub_model_id") or out.name
    base_model = run.get("base_model")
    card_data = ModelCardData(
        language=["zh"],
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS.get(formulation),
        base_model=base_model if base_model and not Path(base_model).exists() else None,
        datasets=["ikala/tmmluplus"],
        tags=["hf_ft", "tmmluplus", "zh-TW", "traditional-chinese", formulation],
        model_name=repo_id,
        eval_results=eval_results_for_card(results, revision, formulation) or None,
        metrics=["accuracy"],
    )
    rows = [("test", "test_accuracy"), ("TMMLU+ average (test)", "test_tmmlu_average")] + [
        (f"{c} (test)", f"test_accuracy_{c}") for c in CATEGORIES] + [("validation", "eval_accuracy")]
    present = [(label, results[key]) for label, key in rows if key in results]
    if present:
        results_table = "| split | accuracy |\n|---|---|\n" + "\n".join(f"| {l} | {percent(v)} |" for l, v in present)
    elif "eval_loss" in results:
        results_table = f"Masked-LM adaptation: validation loss {results['eval_loss']:.3f}" + (
            f", test loss {results['test_loss']:.3f}." if "test_loss" in results else ".")
    else:
        results_table = "No evaluation results were recorded."
    comparison_text = None
    if comparison:
        overall = comparison["paired"]["overall"]
        ci = overall["difference_ci95"]
        comparison_text = (
            f"On {comparison['items']} held-out questions "
            f"({'verified' if comparison['held_out']['verified'] else 'not verified'} against the training data): "
            f"original `{comparison['original']['path']}` ({comparison['original']['scorer']}) "
            f"{percent(comparison['original']['accuracy'])} → fine-tuned ({comparison['finetuned']['scorer']}) "
            f"{percent(comparison['finetuned']['accuracy'])}; difference {100 * overall['difference']:+.1f} points, "
            f"paired bootstrap 95% CI [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}], exact McNemar "
            f"p = {overall['mcnemar']['p_value']:.3g}.\n\n"
            "| category | original | fine-tuned | Δ |\n|---|---|---|---|\n" + "\n".join(
                f"| {c} | {percent(v['accuracy_original'])} | {percent(v['accuracy_finetuned'])} | "
                f"{100 * v['difference']:+.1f} |" for c, v in comparison["paired"]["per_category"].items()))
    hyper = run.get("hyperparameters", {})
    ds = run.get("deepspeed") or {"used": False}
    training_rows = [("base model", f"`{base_model}`"), ("formulation", formulation), ("task", run.get("task"))] + [
        (k.replace("_", " "), v) for k, v in hyper.items()] + [
        ("DeepSpeed", f"ZeRO stage {ds.get('stage')}" + (" with offload" if ds.get("offload") else "")
         if ds.get("used") else "not used" + (f" ({ds.get('reason')})" if ds.get("reason") else ""))]
    training_table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in training_rows if v is not None)
    counts = manifest.get("counts", {})
    data_description = (
        f"`ikala/tmmluplus` (revision `{revision or 'n/a'}`; source: {manifest.get('source', {}).get('kind', 'n/a')}), "
        f"{len(manifest.get('subjects', []))} subjects, split `{manifest.get('split_scheme')}`: "
        f"{counts.get('train', 0)} train / {counts.get('validation', 0)} validation / {counts.get('test', 0)} test; "
        f"{manifest.get('duplicates_removed', 0)} duplicates removed, {manifest.get('rows_rejected', 0)} rows rejected.")
    model_class = {"per_choice": "AutoModelForMultipleChoice", "joint": "AutoModelForSequenceClassification",
                   "mlm": "AutoModelForMaskedLM"}[formulation]
    if formulation == "per_choice":
        usage = (f'import torch\nfrom transformers import AutoModelForMultipleChoice, AutoTokenizer\n\n'
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                 f'model = AutoModelForMultipleChoice.from_pretrained("{repo_id}").eval()\n'
                 'question, options = "下列何者為哺乳類？", ["鯨魚", "鯊魚", "章魚", "海星"]\n'
                 'enc = tokenizer([question] * len(options), options, return_tensors="pt", padding=True)\n'
                 'with torch.no_grad():\n'
                 '    logits = model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits\n'
                 'print("ABCD"[logits.argmax().item()], logits.softmax(-1))')
    elif formulation == "joint":
        usage = JOINT_USAGE.format(repo_id=repo_id, rotations=hyper.get("joint_eval_rotations", 1))
    else:
        usage = (f'from transformers import {model_class}, AutoTokenizer\n\n'
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                 f'model = {model_class}.from_pretrained("{repo_id}")')
    template = resources.files("hf_ft.resources").joinpath("model_card_template.md").read_text(encoding="utf-8")
    summary = (f"`{base_model}` fine-tuned on TMMLU+ (Traditional-Chinese exam questions) as a "
               f"{'masked-LM domain adaptation' if formulation == 'mlm' else f'{formulation} multiple-choice model'}"
               f" with hf_ft.")
    return ModelCard.from_template(
        card_data, template_str=template, model_name=repo_id, repo_id=repo_id, summary=summary,
        results_table=results_table, comparison=comparison_text, training_table=training_table,
        data_description=data_description, usage_code=usage, hf_ft_version=__version__,
        transformers_version=transformers.__version__)


def write_model_card(output_dir: str | Path, repo_id: str | None = None) -> Path:
    path = Path(output_dir) / CARD_FILE
    build_model_card(output_dir, repo_id).save(path)
    return path


# ----------------------------------------------------------------------------------------------
# The push


def files_to_push(output_dir: str | Path, include_checkpoints: bool = False, include_rejected: bool = False) -> list[str]:
    out = Path(output_dir)
    patterns = PUSHED_PATTERNS + (CHECKPOINT_PATTERNS if include_checkpoints else []) + (
        REJECTED_PATTERNS if include_rejected else [])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    def matches(path: str, pattern: str) -> bool:  # a pattern without "/" names top-level files only
        return fnmatch.fnmatch(path, pattern) and ("/" in pattern or "/" not in path)

    return [f for f in files if any(matches(f, pattern) for pattern in patterns) and not Path(f).name.startswith(".")]


def _is_network_error(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"TransportError", "ConnectError", "TimeoutException", "NetworkError",
                         "ConnectionError", "OfflineModeIsEnabled"}) or isinstance(error, (ConnectionError, TimeoutError))


def _explain(error: Exception, repo_id: str, endpoint: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status == 401:
            return f"the hub at {endpoint} rejected the token (401): log in again or set a valid HF_TOKEN"
        if status == 403:
            return f"no write access to {repo_id} (403): the repository or namespace belongs to someone else"
        if status == 404:
            return f"{repo_id}: not found on {endpoint} (404)"
        if status >= 500:
            return f"the hub at {endpoint} failed with HTTP {status}; nothing was committed, try again later"
        return f"the hub at {endpoint} refused the upload: HTTP {status}"
    if _is_network_error(error):
        return f"cannot reach the hub at {endpoint} ({type(error).__name__}); check the network or HF_ENDPOINT"
    raise error


def push_output_dir(output_dir: str | Path, repo_id: str, private: bool = False, dry_run: bool = False,
                    include_checkpoints: bool = False, include_rejected: bool = False,
                    commit_message: str = "Upload model trained with hf_ft") -> dict:
    """Regenerate the card, then upload the chosen files of output_dir in one commit."""
    from huggingface_hub import HfApi, constants, get_token

    out = Path(output_dir)
    if not out.is_dir():
        raise UserError(f"{out}: output directory not found")
    if not any((out / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise UserError(f"{out}: no model.safetensors here; is this a finished hf_ft run?")
    if (out / RUN_INFO_FILE).is_file():
        write_model_card(out, repo_id)
    files = files_to_push(out, include_checkpoints, include_rejected)
    if dry_run:
        print(f"would push {len(files)} files from {out} to {repo_id}{' (private)' if private else ''}:")
        for f in files:
            print(f"  {f}  ({(out / f).stat().st_size:,} bytes)")
        return {"repo_id": repo_id, "files": files, "dry_run": True}
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (tokens are never read from "
                        "arguments or files)")
    endpoint = constants.ENDPOINT
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(out), repo_id=repo_id, allow_patterns=files,
                                   commit_message=commit_message)
    except Exception as error:  # one clear line for each way a push can fail
        raise UserError(f"push to {repo_id} failed: {_explain(error, repo_id, endpoint)}") from None
    print(f"pushed {len(files)} files to {url} (commit {commit.oid})")
    return {"repo_id": repo_id, "files": files, "url": str(url), "commit": commit.oid}


def main(argv: list[str] | None = None):
    from .cli import run_user_errors

    parser = argparse.ArgumentParser(prog="hf-ft push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="a finished training run's output_dir")
    parser.add_argument("--repo_id", required=True, help="namespace/name on the hub")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="list what would be sent, send nothing")
    parser.add_argument("--include_checkpoints", action="store_true")
    parser.add_argument("--include_rejected_rows", action="store_true")
    parser.add_argument("--commit_message", default="Upload model trained with hf_ft")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run_user_errors(push_output_dir, args.output_dir, args.repo_id, args.private, args.dry_run,
                           args.include_checkpoints, args.include_rejected_rows, args.commit_message)

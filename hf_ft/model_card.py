"""The model card: huggingface_hub's ModelCard/ModelCardData from the run's own records.

Every claim comes from a file of the run: `hf_ft_run.json` (what was trained how), `data_manifest.json`
(which data: the hub dataset and its commit only when it came from the hub; otherwise the local source
and its content hash, and no TMMLU+ dataset claim), `eval_results.json` (results), and, when they exist,
`comparison/comparison.json` (original vs fine-tuned, the audit) and `seeds_summary.json`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .metrics import percent
from .run_dir import (CARD_FILE, COMPARISON_DIR, EVAL_RESULTS_FILE, MANIFEST_FILE, RUN_RECORD_FILE,
                      read_json_if_present, write_text)
from .sources import HUB_DATASET
from .subjects import CATEGORIES

SEEDS_SUMMARY_FILE = "seeds_summary.json"
PIPELINE_TAGS = {"per_choice": "multiple-choice", "joint": "text-classification", "mlm": "fill-mask"}
MODEL_CLASSES = {"per_choice": "AutoModelForMultipleChoice", "joint": "AutoModelForSequenceClassification",
                 "mlm": "AutoModelForMaskedLM"}
# How a joint model reads a question (hf_ft.collators.JointCollator) and how hf_ft merges rotations
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
PER_CHOICE_USAGE = '''import torch
from transformers import AutoModelForMultipleChoice, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForMultipleChoice.from_pretrained("{repo_id}").eval()
question, options = "下列何者為哺乳類？", ["鯨魚", "鯊魚", "章魚", "海星"]
enc = tokenizer([question] * len(options), options, return_tensors="pt", padding=True)
with torch.no_grad():
    logits = model(**{{k: v.unsqueeze(0) for k, v in enc.items()}}).logits
print("ABCD"[logits.argmax().item()], logits.softmax(-1))'''


def data_facts(manifest: dict) -> dict:
    """What the card may say about the data: from the hub (name, commit) or a local source (content hash)."""
    source = manifest.get("source", {})
    from_hub = source.get("kind") == "hub"
    counts = manifest.get("counts", {})
    if from_hub:
        name = f"`{source.get('dataset')}` at commit `{source.get('revision')}`"
        if source.get("requested_revision") and source.get("requested_revision") != source.get("revision"):
            name += f" (`--dataset_revision {source['requested_revision']}`)"
    else:
        where = source.get("path") or ", ".join(source.get("files", {}).values()) or "local files"
        name = (f"local data in `{where}` ({source.get('kind', 'n/a')}; content sha256 "
                f"`{str(source.get('content_sha256', 'n/a'))[:16]}…`), not the hub's {HUB_DATASET}")
    description = (
        f"{name}; {len(manifest.get('subjects', []))} subjects, split `{manifest.get('split_scheme')}` "
        f"(seed {manifest.get('seed')}): {counts.get('train', 0)} train / {counts.get('validation', 0)} validation / "
        f"{counts.get('test', 0)} test questions; {manifest.get('duplicates_removed', 0)} duplicates removed, "
        f"{manifest.get('rows_rejected', 0)} rows rejected.")
    is_tmmluplus = from_hub and source.get("dataset") == HUB_DATASET
    return {"from_hub": from_hub, "is_tmmluplus": is_tmmluplus, "description": description,
            "short": "TMMLU+" if is_tmmluplus else (f"`{source.get('dataset')}`" if from_hub else "local data"),
            "revision": source.get("revision") if from_hub else None, "dataset": source.get("dataset")}


def eval_results_for_card(results: dict, facts: dict):
    """model-index entries (test accuracy, TMMLU+ average, categories) — only for data from the hub, which
    the index can name; a local data set has no hub identity to claim results on."""
    from huggingface_hub import EvalResult

    if not facts["from_hub"]:
        return []
    entries = []
    for key, name in [("test_accuracy", "Accuracy"), ("test_tmmlu_average", "TMMLU+ average")] + [
            (f"test_accuracy_{c}", f"Accuracy ({c})") for c in CATEGORIES]:
        if key in results:
            entries.append(EvalResult(
                task_type="multiple-choice", task_name="Multiple choice", dataset_type=facts["dataset"],
                dataset_name="TMMLU+" if facts["is_tmmluplus"] else facts["dataset"], dataset_split="test",
                dataset_revision=facts["revision"], metric_type="accuracy", metric_name=name,
                metric_value=round(float(results[key]), 4)))
    return entries


def results_table(results: dict) -> str:
    rows = [("test", "test_accuracy"), ("TMMLU+-style average (test)", "test_tmmlu_average")] + [
        (f"{c} (test)", f"test_accuracy_{c}") for c in CATEGORIES] + [("validation", "eval_accuracy")]
    present = [(label, results[key]) for label, key in rows if key in results]
    if present:
        return "| split | accuracy |\n|---|---|\n" + "\n".join(f"| {l} | {percent(v)} |" for l, v in present)
    if "eval_loss" in results:
        return f"Masked-LM adaptation: validation loss {results['eval_loss']:.3f}" + (
            f", test loss {results['test_loss']:.3f}." if "test_loss" in results else ".")
    return "No evaluation results were recorded."


def comparison_text(comparison: dict | None) -> str | None:
    if not comparison:
        return None
    overall = comparison["paired"]["overall"]
    ci = overall["difference_ci95"]
    sample = comparison.get("sample")
    text = (
        f"On {comparison['items']} held-out questions"
        + (f" (a seeded sample of {sample['population']}, stratified by subject)" if sample else "")
        + f" ({'verified' if comparison['held_out']['verified'] else 'not verified'} against the training data): "
        f"original `{comparison['original']['path']}` ({comparison['original']['scorer']}) "
        f"{percent(comparison['original']['accuracy'])} → fine-tuned ({comparison['finetuned']['scorer']}) "
        f"{percent(comparison['finetuned']['accuracy'])}; difference {100 * overall['difference']:+.1f} points, "
        f"paired bootstrap 95% CI [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}], exact McNemar "
        f"p = {overall['mcnemar']['p_value']:.3g}.\n\n"
        "| category | original | fine-tuned | Δ |\n|---|---|---|---|\n" + "\n".join(
            f"| {c} | {percent(v['accuracy_original'])} | {percent(v['accuracy_finetuned'])} | "
            f"{100 * v['difference']:+.1f} |" for c, v in comparison["paired"]["per_category"].items()))
    audit = comparison.get("audit")
    if audit:
        text += "\n\n### Knowledge or option artifacts?\n\n" + audit["verdict"] + "\n\n" + "\n".join(
            f"- {line}" for line in audit.get("summary_lines", []))
    return text


def seeds_text(summary: dict | None) -> str | None:
    if not summary:
        return None
    lines = ["| seed | test accuracy | TMMLU+-style average |", "|---|---|---|"]
    lines += [f"| {s['seed']} | {percent(s['test_accuracy'])} | {percent(s.get('test_tmmlu_average'))} |"
              for s in summary["runs"]]
    failed = summary.get("failed_restarts") or []
    return (f"Trained with {len(summary['runs'])} seeds: test accuracy mean {percent(summary['mean_test_accuracy'])}, "
            f"standard deviation {100 * summary['std_test_accuracy']:.1f} points"
            + (f"; failed restarts (near chance): {', '.join(str(s) for s in failed)}" if failed else "")
            + ".\n\n" + "\n".join(lines))


def seeds_summary(out: Path) -> dict | None:
    """A --seeds summary: in the folder itself, or beside a seed-<n> run."""
    for folder in (out, out.parent) if out.name.startswith("seed-") else (out,):
        summary = read_json_if_present(folder / SEEDS_SUMMARY_FILE)
        if summary:
            return summary
    return None


def training_table(run: dict) -> str:
    hyper = dict(run.get("hyperparameters", {}))
    warmup = hyper.pop("warmup_steps", None)
    if hyper.get("max_steps", -1) <= 0:
        hyper.pop("max_steps", None)
    else:
        hyper.pop("num_train_epochs", None)
    ds = run.get("deepspeed") or {"used": False}
    rows = [("base model", f"`{run.get('base_model')}`"), ("formulation", run.get("formulation"))]
    if warmup is not None:
        rows.append(("warmup", f"{warmup:.0%} of the training steps" if 0 < warmup < 1 else f"{int(warmup)} steps"))
    rows += [(k.replace("_", " "), v) for k, v in hyper.items()]
    rows.append(("DeepSpeed", f"ZeRO stage {ds.get('stage')}" + (" with offload" if ds.get("offload") else "")
                 if ds.get("used") else "not used" + (f" ({ds.get('reason')})" if ds.get("reason") else "")))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)


def build_model_card(output_dir: str | Path, repo_id: str | None = None, license: str = "apache-2.0"):
    from huggingface_hub import ModelCard, ModelCardData
    import transformers

    from . import __version__

    out = Path(output_dir)
    run = read_json_if_present(out / RUN_RECORD_FILE) or {}
    results = read_json_if_present(out / EVAL_RESULTS_FILE) or {}
    comparison = read_json_if_present(out / COMPARISON_DIR / "comparison.json")
    facts = data_facts(read_json_if_present(out / MANIFEST_FILE) or {})
    formulation = run.get("formulation", "per_choice")
    repo_id = repo_id or run.get("hub_model_id") or out.name
    base_model = run.get("base_model")
    card_data = ModelCardData(
        language=["zh"],
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS.get(formulation),
        base_model=base_model if base_model and not Path(base_model).exists() else None,
        datasets=[facts["dataset"]] if facts["from_hub"] else None,
        tags=["hf_ft", "zh-TW", "traditional-chinese", formulation] + (["tmmluplus"] if facts["is_tmmluplus"] else []),
        model_name=repo_id,
        eval_results=eval_results_for_card(results, facts) or None,
        metrics=["accuracy"],
    )
    if formulation == "per_choice":
        usage = PER_CHOICE_USAGE.format(repo_id=repo_id)
    elif formulation == "joint":
        usage = JOINT_USAGE.format(repo_id=repo_id, rotations=run.get("hyperparameters", {}).get("joint_eval_rotations", 1))
    else:
        usage = (f'from transformers import {MODEL_CLASSES[formulation]}, AutoTokenizer\n\n'
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                 f'model = {MODEL_CLASSES[formulation]}.from_pretrained("{repo_id}")')
    kind = "a masked-LM domain adaptation" if formulation == "mlm" else f"a {formulation} multiple-choice model"
    summary = (f"`{base_model}` fine-tuned on {facts['short']}"
               + (" (Traditional-Chinese exam questions)" if facts["is_tmmluplus"] else "") + f" as {kind} with hf_ft.")
    template = resources.files("hf_ft.resources").joinpath("model_card_template.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data, template_str=template, model_name=repo_id, repo_id=repo_id, summary=summary,
        results_heading=f"Results on held-out {facts['short']} questions", results_table=results_table(results),
        comparison=comparison_text(comparison), seeds=seeds_text(seeds_summary(out)),
        training_table=training_table(run), data_description=facts["description"], usage_code=usage,
        hf_ft_version=__version__, transformers_version=transformers.__version__)


def write_model_card(output_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write README.md only when its text changes (a push or an evaluation refreshes it)."""
    path = Path(output_dir) / CARD_FILE
    text = str(build_model_card(output_dir, repo_id))
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)
    return path

"""The model card: huggingface_hub's ModelCard/ModelCardData from the run's own records.

Every claim comes from a file of the run: `hf_ft_run.json` (what was trained how), `data_manifest.json`
(which data: the hub dataset and its commit only when it came from the hub; otherwise the local source
and its content hash, and no TMMLU+ dataset claim), `eval_results.json` (results), and, when they exist,
`comparison/comparison.json` (original vs fine-tuned, the audit) and `seeds_summary.json`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..core.provenance import card_licence
from ..core.run_dir import (
    CARD_FILE,
    COMPARISON_DIR,
    EVAL_RESULTS_FILE,
    MANIFEST_FILE,
    RUN_RECORD_FILE,
    TEST_ITEM_RESULTS_FILE,
    read_json_if_present,
    write_text,
)
from ..data.sources import HUB_DATASET
from ..inputs.formulations import get_formulation
from ..retrieval.registries import CORPUS_READERS
from ..task.metrics import AVERAGES, percent
from ..task.subjects import CATEGORIES, registry

SEEDS_SUMMARY_FILE = "seeds_summary.json"
FOLDS_SUMMARY_FILE = "folds_summary.json"
FOLDS_REPORT_FILE = "folds_report.md"
FEW_FOLDS = 5  # below this, a t interval over folds has too few degrees of freedom to say much


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
    subjects = manifest.get("subjects", [])
    official = {name for name, subject in registry().items() if subject.official}
    resplit = manifest.get("split_scheme") == "resplit"
    requested = source.get("requested_revision")
    version = requested if requested and requested != source.get("revision") else str(source.get("revision"))[:12]
    index_name = f"TMMLU+ {version}" if is_tmmluplus else str(source.get("dataset"))
    if is_tmmluplus and not official <= set(subjects):
        index_name += f", {len(official & set(subjects))} of {len(official)} subjects"
    if resplit:
        index_name += " (re-split: its test items are drawn from every split, not the official test split)"
    return {"from_hub": from_hub, "is_tmmluplus": is_tmmluplus, "description": description,
            "short": "TMMLU+" if is_tmmluplus else (f"`{source.get('dataset')}`" if from_hub else "local data"),
            "revision": source.get("revision") if from_hub else None, "dataset": source.get("dataset"),
            "license": source.get("license"), "subjects": subjects, "index_name": index_name, "resplit": resplit,
            "all_official": official <= set(subjects)}


def eval_results_for_card(results: dict, facts: dict):
    """model-index entries (test accuracy micro and macro, the TMMLU+ average, categories) — only for data from
    the hub, which the index can name; a local data set has no hub identity to claim results on. The dataset
    entry names the revision and the subjects, and a re-split claims no official test split."""
    from huggingface_hub import EvalResult

    if not facts["from_hub"]:
        return []
    subjects = "all official" if facts["all_official"] else ",".join(facts["subjects"])
    entries = []
    for key, name in [("test_accuracy", "Accuracy (micro)"), ("test_accuracy_macro", "Accuracy (macro over subjects)"),
                      ("test_tmmlu_average", "TMMLU+ average")] + [
            (f"test_accuracy_{c}", f"Accuracy ({c}, micro)") for c in CATEGORIES]:
        if key in results:
            entries.append(EvalResult(
                task_type="multiple-choice", task_name="Multiple choice", dataset_type=facts["dataset"],
                dataset_name=facts["index_name"], dataset_split=None if facts["resplit"] else "test",
                dataset_revision=facts["revision"], dataset_args={"subjects": subjects},
                metric_type="accuracy", metric_name=name, metric_value=round(float(results[key]), 4)))
    return entries


def results_table(results: dict) -> str:
    overall = [(f"{AVERAGES[key][0]}: {AVERAGES[key][1]}", f"test_{key}") for key in AVERAGES]
    present = [(label, results[key]) for label, key in overall if key in results]
    if present:
        table = "| test | accuracy |\n|---|---|\n" + "\n".join(f"| {l} | {percent(v)} |" for l, v in present)
        categories = [c for c in CATEGORIES if f"test_accuracy_{c}" in results]
        if categories:
            table += ("\n\n| category (test) | micro | macro over subjects |\n|---|---|---|\n" + "\n".join(
                f"| {c} | {percent(results[f'test_accuracy_{c}'])} | {percent(results.get(f'test_accuracy_macro_{c}'))} |"
                for c in categories))
        if "eval_accuracy" in results:
            table += f"\n\nValidation accuracy (micro): {percent(results['eval_accuracy'])}."
        return table + "\n\nComparable to: " + "; ".join(
            f"{label} — {protocol}" for label, _, protocol in AVERAGES.values()) + \
            ". Only numbers over the same subjects compare."
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
    per_form = comparison["paired"].get("per_form")  # comparisons recorded before question forms have none
    if per_form:
        text += ("\n\nBy question form (recognised from the text; a question may have several):\n\n"
                 "| form | n | original | fine-tuned | Δ | 95% CI of Δ |\n|---|---|---|---|---|---|\n" + "\n".join(
                     f"| {name} | {v['n']} | {percent(v['accuracy_original'])} | {percent(v['accuracy_finetuned'])} | "
                     f"{100 * v['difference']:+.1f} | [{100 * v['difference_ci95'][0]:+.1f}, "
                     f"{100 * v['difference_ci95'][1]:+.1f}] |" for name, v in per_form.items()))
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
            + (f"; out-of-fold accuracy (--folds) mean {percent(summary['mean_out_of_fold_accuracy'])}, standard "
               f"deviation {100 * summary['std_out_of_fold_accuracy']:.1f} points across seeds"
               if "mean_out_of_fold_accuracy" in summary else "")
            + ".\n\n" + "\n".join(lines))


def folds_markdown(summary: dict | None, heading: str = "## Cross-fitting") -> str | None:
    """The --folds report: the pooled out-of-fold accuracy overall, per category and per subject, with the
    interval that accounts for the folds, and each fold model's test accuracy."""
    if not summary:
        return None
    oof = summary["out_of_fold"]
    overall = oof["overall"]

    def row(name, g):
        return f"| {name} | {g['n']} | {percent(g['accuracy'])} | {_interval(g['ci95'])} |"

    lines = [heading, "", f"{summary['folds']} folds of the training pool (stratified by subject, split seed "
             f"{summary['split_seed']}); every training-pool question is scored once, by the run that did not "
             f"train on it. Out-of-fold accuracy {percent(overall['accuracy'])} {_interval(overall['ci95'])} over "
             f"{overall['n']} questions (macro over subjects {percent(oof['accuracy_macro'])}, TMMLU+-style average "
             f"{percent(oof['tmmlu_average'])}). Interval: {oof['ci_rule']}.", "",
             "| group | questions | out-of-fold accuracy | 95% CI |", "|---|---|---|---|", row("all", overall)]
    if summary["folds"] < FEW_FOLDS:
        lines[2] += (f" With {summary['folds']} folds the interval has {summary['folds'] - 1} degree(s) of freedom and "
                     f"is wide; {FEW_FOLDS} or 10 folds are usual.")
    lines += [row(f"category: {name}", g) for name, g in oof["per_category"].items()]
    lines += [row(name, g) for name, g in oof["per_subject"].items()]
    lines += ["", "| fold | questions scored | its fold | validation | test |", "|---|---|---|---|---|"]
    lines += [f"| {r['fold']} | {r['items']} | {percent(r['fold_accuracy'])} | {percent(r['eval_accuracy'])} | "
              f"{percent(r['test_accuracy'])} |" for r in summary["runs"]]
    if summary.get("test_accuracy_mean") is not None:
        lines += ["", f"Test accuracy of the {summary['folds']} fold models: mean "
                      f"{percent(summary['test_accuracy_mean'])}, standard deviation "
                      f"{100 * summary['test_accuracy_std']:.1f} points (the same test questions for every fold)."]
    return "\n".join(lines)


def _interval(ci) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def folds_summary(out: Path) -> dict | None:
    """A --folds summary: in the folder itself, or beside a fold-<k> run."""
    return _first_summary(FOLDS_SUMMARY_FILE, (out, out.parent) if out.name.startswith("fold-") else (out,))


def seeds_summary(out: Path) -> dict | None:
    """A --seeds summary: in the folder itself, beside a seed-<n> run, or two up from a seed's fold-<k> run."""
    seed_folder = out.parent if out.name.startswith("fold-") else out
    return _first_summary(SEEDS_SUMMARY_FILE, (out, seed_folder.parent) if seed_folder.name.startswith("seed-")
                          else (out,))


def _first_summary(name: str, folders) -> dict | None:
    return next((summary for folder in folders if (summary := read_json_if_present(folder / name))), None)


def base_model_text(base: dict | str | None) -> str:
    """The base model in words: a hub id at its commit, or a local folder (which the card cannot link)."""
    if not isinstance(base, dict):
        return f"`{base}` (source not recorded)" if base else "not recorded"
    if base.get("source") == "hub":
        return f"`{base['id']}`" + (f" at commit `{base['revision']}`" if base.get("revision") else "")
    return f"a local model folder `{base.get('name')}` (not on the hub)"


def test_items_text(pushed: bool) -> str:
    if pushed:
        return ("This repository holds the test questions' text and the model's answers (`test_qa_data.json`, "
                "`test_predictions.jsonl`), pushed on request.")
    return (f"Per-item test results are in `{TEST_ITEM_RESULTS_FILE}`: item ids, content hashes and whether each "
            "answer was right. The test questions' text is not in this repository, so crawlers cannot carry the "
            "benchmark into other models' training data.")


def retrieval_text(retrieval: dict) -> str:
    """The corpus (with its commit or content hash), k, the query, the terms and the leak check, as recorded."""
    source = retrieval.get("source", {})
    corpus = CORPUS_READERS[source.get("kind", "local")].describe(source)
    if source.get("passages"):
        corpus += f", {source['passages']:,} passages"
    leak = retrieval.get("leak_check") or {}
    check = (f"; leak check ({leak.get('ngram')}-grams, OpenCC t2s + NFKC): {leak.get('items_with_a_copy_in_the_corpus', 0)} "
             f"validation/test item(s) had a copy in the corpus, {leak.get('passages_dropped', 0)} passage(s) dropped "
             f"(policy `{leak.get('policy')}`)") if leak else ""
    return (f"{corpus}; top {retrieval.get('k')} by {retrieval.get('scoring')} on {retrieval.get('terms')} of the "
            f"{retrieval.get('query')}, normalised {retrieval.get('normalisation')}{check}")


def extra_source_text(source: dict) -> str:
    """Where an extra source came from (commit, licence, conversion) and what the run kept of it, as recorded."""
    c = source.get("counts") or {}
    where = (f"hub dataset `{source.get('source')}` at commit `{str(source.get('revision'))[:12]}`"
             if source.get("revision") else f"local `{source.get('source')}`")
    conversion = (source.get("conversion") or {}).get("applied")
    copies = c.get("exact_copies", 0) + c.get("near_copies", 0)
    fate = {"drop": "dropped", "keep": "**kept** (results on those questions are not held out)",
            "error": "none allowed"}.get(source.get("policy"), "")
    return (f"{where} ({source.get('adapter')}; licence {source.get('license') or 'not stated'}; splits "
            f"{', '.join(source.get('splits') or [])}; {'converted with OpenCC ' + conversion if conversion else 'not converted'}): "
            f"{c.get('read', 0):,} questions read, {c.get('bad_rows', 0)} bad, {c.get('multiple_answers_dropped', 0)} "
            f"with several answers dropped, {c.get('duplicates_within_extra', 0)} duplicates of other extra rows, "
            f"{copies} copies of TMMLU+ questions ({c.get('exact_copies', 0)} exact, {c.get('near_copies', 0)} near) "
            f"{fate}; {c.get('used', 0):,} used for training only")


def training_table(run: dict) -> str:
    hyper = dict(run.get("hyperparameters", {}))
    warmup = hyper.pop("warmup_steps", None)
    if hyper.get("max_steps", -1) <= 0:
        hyper.pop("max_steps", None)
    else:
        hyper.pop("num_train_epochs", None)
    ds = run.get("deepspeed") or {"used": False}
    rows = [("base model", base_model_text(run.get("base_model"))), ("formulation", run.get("formulation"))]
    if warmup is not None:
        rows.append(("warmup", f"{warmup:.0%} of the training steps" if 0 < warmup < 1 else f"{int(warmup)} steps"))
    rows += [(k.replace("_", " "), v) for k, v in hyper.items()]
    stop = run.get("early_stopping")
    if stop:
        rows.append(("early stopping", (
            f"stopped at step {stop['stopped_at_step']} of {stop['max_steps']} (epoch {stop['stopped_at_epoch']}): "
            f"validation {stop['metric']} did not improve by more than {stop['threshold']} for {stop['patience']} "
            f"evaluation(s); the best, {stop['best_metric']:.4f} at `{stop['best_checkpoint']}`, is this model"
            if stop["stopped_early"] else
            f"patience {stop['patience']} (threshold {stop['threshold']}): not triggered, the run went its full "
            f"{stop['max_steps']} steps")))
    if run.get("retrieval"):
        rows.append(("open book (retrieval)", retrieval_text(run["retrieval"])))
    for source in run.get("extra_data") or []:
        rows.append((f"extra training data: {source.get('name')}", extra_source_text(source)))
    rows.append(("DeepSpeed", f"ZeRO stage {ds.get('stage')}" + (" with offload" if ds.get("offload") else "")
                 if ds.get("used") else "not used" + (f" ({ds.get('reason')})" if ds.get("reason") else "")))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)


def build_model_card(output_dir: str | Path, repo_id: str | None = None, test_items_pushed: bool = False):
    """The card from the run's records. Without a repo id (a card written before any push) it carries no
    model-index, whose name must be the repo id; the push rebuilds it with one."""
    import transformers
    from huggingface_hub import ModelCard, ModelCardData

    from .. import __version__

    out = Path(output_dir)
    run = read_json_if_present(out / RUN_RECORD_FILE) or {}
    results = read_json_if_present(out / EVAL_RESULTS_FILE) or {}
    comparison = read_json_if_present(out / COMPARISON_DIR / "comparison.json")
    facts = data_facts(read_json_if_present(out / MANIFEST_FILE) or {})
    formulation = run.get("formulation", "per_choice")
    repo_id = repo_id or run.get("hub_model_id")
    base = run.get("base_model") if isinstance(run.get("base_model"), dict) else {}
    extra = run.get("extra_data") or []
    licence, licence_note = card_licence(base, {facts["dataset"] or "the data": facts["license"]}
                                         if facts["from_hub"] else {},
                                         {s.get("source") or s.get("name"): s.get("license") for s in extra})
    card_data = ModelCardData(
        language=["zh"],
        license=licence,
        library_name="transformers",
        pipeline_tag=get_formulation(formulation).pipeline_tag,
        base_model=base["id"] if base.get("source") == "hub" else None,
        datasets=([facts["dataset"]] if facts["from_hub"] else []) + [
            s["source"] for s in extra if s.get("revision") and s.get("source")] or None,
        tags=["hf_ft", "zh-TW", "traditional-chinese", formulation] + (["tmmluplus"] if facts["is_tmmluplus"] else []),
        model_name=repo_id,
        eval_results=(eval_results_for_card(results, facts) or None) if repo_id else None,
        metrics=["accuracy"],
    )
    where = repo_id or "path/to/this/model"
    usage = get_formulation(formulation).usage.format(
        repo_id=where, rotations=run.get("hyperparameters", {}).get("joint_eval_rotations", 1))
    kind = get_formulation(formulation).kind
    summary = (f"{base_model_text(run.get('base_model'))} fine-tuned on {facts['short']}"
               + (" (Traditional-Chinese exam questions)" if facts["is_tmmluplus"] else "") + f" as {kind} with hf_ft.")
    template = resources.files("hf_ft.resources").joinpath("model_card_template.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data, template_str=template, title=repo_id or out.resolve().name, repo_id=where, summary=summary,
        results_heading=f"Results on held-out {facts['short']} questions", results_table=results_table(results),
        test_items=test_items_text(test_items_pushed), licence_note=licence_note,
        comparison=comparison_text(comparison), seeds=seeds_text(seeds_summary(out)),
        folds=folds_markdown(folds_summary(out)),
        training_table=training_table(run), data_description=facts["description"], usage_code=usage,
        hf_ft_version=__version__, transformers_version=transformers.__version__)


def write_model_card(output_dir: str | Path, repo_id: str | None = None, test_items_pushed: bool = False) -> Path:
    """Write README.md only when its text changes (a push or an evaluation refreshes it)."""
    path = Path(output_dir) / CARD_FILE
    text = str(build_model_card(output_dir, repo_id, test_items_pushed))
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)
    return path

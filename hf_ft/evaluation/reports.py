"""The comparison report rendered: comparison.json/.md/.png, predictions.jsonl and the terminal table."""

from __future__ import annotations

from pathlib import Path

from ..core.plotting import plot_comparison
from ..core.run_dir import write_json, write_jsonl, write_text
from ..data.rows import LETTERS
from ..task.metrics import AVERAGES, percent
from ..task.question_forms import forms_of


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def _ci(ci) -> str:
    return f"[{_pp(ci[0])}, {_pp(ci[1])}]"


def render_markdown(report: dict) -> str:
    o, f, overall = report["original"], report["finetuned"], report["paired"]["overall"]
    sample = report.get("sample")
    lines = [
        "# Original vs fine-tuned",
        "",
        f"{report['items']} held-out items (held-out check: "
        f"{'verified against data_manifest.json' if report['held_out']['verified'] else 'NOT verified'}"
        f"; data: {report.get('data_description') or 'n/a'}).",
    ]
    if sample:
        lines += ["", f"**A sample**: {sample['items']} of {sample['population']} items, drawn with seed "
                      f"{sample['seed']} and stratified by subject (each subject in proportion to its size). Every "
                      "accuracy and interval below is over the sample, so the intervals are wider than the whole "
                      "split's would be."]
    lines += [
        "",
        "| model | path | scorer | micro accuracy (95% CI) | macro over subjects | TMMLU+ average |",
        "|---|---|---|---|---|---|",
        f"| original | `{o['path']}` | {o['scorer']} | {percent(o['accuracy'])} ({percent(o['accuracy_ci95'][0])}–"
        f"{percent(o['accuracy_ci95'][1])}) | {percent(o.get('accuracy_macro'))} | {percent(o['tmmlu_average'])} |",
        f"| fine-tuned | `{f['path']}` | {f['scorer']} | {percent(f['accuracy'])} ({percent(f['accuracy_ci95'][0])}–"
        f"{percent(f['accuracy_ci95'][1])}) | {percent(f.get('accuracy_macro'))} | {percent(f['tmmlu_average'])} |",
        "",
        averages_legend(),
        "",
        f"**Difference** (fine-tuned − original): {_pp(overall['difference'])} points, paired bootstrap 95% CI "
        f"{_ci(overall['difference_ci95'])}, exact McNemar p = {overall['mcnemar']['p_value']:.3g} "
        f"({overall['mcnemar']['only_finetuned_correct']} items only fine-tuned got right, "
        f"{overall['mcnemar']['only_original_correct']} only original).",
        "",
        "## Per category",
        "",
        "| category | n | original | fine-tuned | Δ | 95% CI of Δ | McNemar p |",
        "|---|---|---|---|---|---|---|",
    ]
    for category, c in report["paired"]["per_category"].items():
        lines.append(f"| {category} | {c['n']} | {percent(c['accuracy_original'])} | {percent(c['accuracy_finetuned'])} | "
                     f"{_pp(c['difference'])} | {_ci(c['difference_ci95'])} | {c['mcnemar']['p_value']:.3g} |")
    lines += render_forms(report["paired"].get("per_form"))
    lines += render_seeds(report.get("seeds")) + render_seeds(report.get("folds"), by="fold")
    lines += render_cross_fit(report.get("cross_fit")) + render_leaderboard(report.get("leaderboard"))
    lines += render_retrieval(report.get("retrieval"))
    lines += render_audit(report.get("audit"))
    lines += ["", "## Predicted letters (position bias check)", "", "| | A | B | C | D |", "|---|---|---|---|---|"]
    for name, counts in (("gold", report["gold_letters"]), ("original", o["predicted_letters"]),
                         ("fine-tuned", f["predicted_letters"])):
        lines.append(f"| {name} | " + " | ".join(str(counts[letter]) for letter in LETTERS) + " |")
    lines += ["", "## Per subject", "", "| subject | category | n | original | fine-tuned | Δ |", "|---|---|---|---|---|---|"]
    for s in report["per_subject"]:
        lines.append(f"| {s['subject']} | {s['category']} | {s['n']} | {percent(s['accuracy_original'])} | "
                     f"{percent(s['accuracy_finetuned'])} | {_pp(s['difference'])} |")
    lines += render_judge(report.get("judge"))
    return "\n".join(lines) + "\n"


def render_seeds(seeds: dict | None, by: str = "seed") -> list[str]:
    """The runs of a --seeds folder (or, `by="fold"`, a --folds folder's fold models) on the test items."""
    if not seeds:
        return []
    differ = "only in the seed" if by == "seed" else "in the fold of the training pool each left out"
    lines = ["", f"## {by.capitalize()}s" + (" on the test items" if by == "fold" else ""), "",
             f"{len(seeds['runs'])} fine-tuning runs of one configuration, differing {differ}. Across {by}s "
             f"the difference is {_pp(seeds['mean_difference'])} points (standard deviation "
             f"{100 * seeds['std_difference']:.1f}); t interval over {by}s "
             f"{_ci(seeds[f'difference_ci95_across_{by}s'])} — this one covers training randomness, each {by}'s own "
             "interval only the choice of test items.", "",
             f"| {by} | accuracy | TMMLU+-style average | Δ vs original | 95% CI of Δ | McNemar p | failed restart |",
             "|---|---|---|---|---|---|---|"]
    for s in seeds["runs"]:
        lines.append(f"| {s[by]} | {percent(s['accuracy'])} | {percent(s['tmmlu_average'])} | {_pp(s['difference'])} | "
                     f"{_ci(s['difference_ci95'])} | {s['mcnemar_p']:.3g} | {'yes' if s['failed_restart'] else ''} |")
    if seeds["failed_restarts"]:
        lines += ["", f"Failed restarts ({seeds['failed_restart_rule']}): {by}s "
                      f"{', '.join(str(s) for s in seeds['failed_restarts'])}."]
    return lines


def render_cross_fit(cross_fit: dict | None) -> list[str]:
    """evaluate on a --folds folder: original against fine-tuned on every training-pool question, each scored
    by the fold model that did not train on it."""
    if not cross_fit:
        return []
    o, f = cross_fit["original"], cross_fit["finetuned"]
    lines = ["", "## Cross-fitting: the whole training pool, out of fold", "",
             f"{cross_fit['items']} training-pool questions in {cross_fit['folds']} folds"
             + (f" (a sample of {cross_fit['population']}, stratified by subject)"
                if cross_fit["items"] < cross_fit["population"] else "") + "; each is scored by the fold "
             f"model that did not train on it, and by the original model. Original {percent(o['accuracy'])} "
             f"({percent(o['ci95'][0])}–{percent(o['ci95'][1])}), fine-tuned out of fold {percent(f['accuracy'])} "
             f"({percent(f['ci95'][0])}–{percent(f['ci95'][1])}), difference "
             f"{_pp(cross_fit['difference'])} points {_ci(cross_fit['difference_ci95'])} (exact McNemar p = "
             f"{cross_fit['mcnemar']['p_value']:.3g}). Intervals: {cross_fit['ci_rule']}.", "",
             "| category | questions | original | fine-tuned (out of fold) | Δ | 95% CI of Δ |",
             "|---|---|---|---|---|---|"]
    for name, c in cross_fit["per_category"].items():
        lines.append(f"| {name} | {c['n']} | {percent(c['accuracy_original'])} | {percent(c['accuracy_finetuned'])} | "
                     f"{_pp(c['difference'])} | {_ci(c['difference_ci95'])} |")
    return lines


def render_leaderboard(board: dict | None) -> list[str]:
    if not board:
        return []
    categories = sorted({c for m in board["models"] for c in m["ci95_per_category"]})
    lines = ["", "## Leaderboard", "", "| model | scorer | accuracy (95% CI) | TMMLU+-style average | "
             + " | ".join(categories) + " |", "|---|---|---|---|" + "---|" * len(categories)]
    for m in board["models"]:
        lines.append(f"| {m['label']} | {m['scorer']} | {percent(m['accuracy'])} ({percent(m['accuracy_ci95'][0])}–"
                     f"{percent(m['accuracy_ci95'][1])}) | {percent(m['tmmlu_average'])} | "
                     + " | ".join(percent(m.get(f"accuracy_{c}")) for c in categories) + " |")
    lines += ["", f"Against the reference `{board['reference']}` ({board['correction']}):", "",
              "| model | Δ | 95% CI of Δ | McNemar p | Holm p |", "|---|---|---|---|---|"]
    for t in board["pairwise"]:
        lines.append(f"| {t['model']} | {_pp(t['difference'])} | {_ci(t['difference_ci95'])} | "
                     f"{t['mcnemar']['p_value']:.3g} | {t['p_holm']:.3g} |")
    return lines


def retrieval_line(label: str, r: dict) -> str:
    recall = r.get("recall_at") or {}
    return (f"{label}: top {r['k']} by {r['query']}; gold option's text in the context for "
            f"{percent(r['gold_in_context'])} of items (accuracy {percent(r['accuracy_gold_in_context'])} there, "
            f"{percent(r['accuracy_gold_not_in_context'])} elsewhere); {r['context_tokens_per_item']:.0f} context "
            f"tokens per item" + ("; recall@" + ", @".join(f"{k} {percent(v)}" for k, v in recall.items())
                                  + f" ({r['items_with_gold_passages']} items with known passages)" if recall else ""))


def render_retrieval(retrieval: dict | None) -> list[str]:
    if not retrieval:
        return []
    return ["", "## Open book (retrieval)", "", *(f"- {retrieval_line(label, r)}" for label, r in retrieval.items())]


def render_audit(audit: dict | None) -> list[str]:
    if not audit:
        return []
    lines = ["", "## Knowledge or option artifacts? (audit)", "", f"**{audit['verdict']}**", "",
             "| baseline | accuracy (95% CI) | items it decides | agreement with fine-tuned |", "|---|---|---|---|"]
    for h in audit["heuristics"]:
        lines.append(f"| {h['name']} | {percent(h['accuracy'])} ({percent(h['ci95'][0])}–{percent(h['ci95'][1])}) | "
                     f"{h['decided']} | {percent(h['agreement_with_finetuned'])} |")
    choices = audit.get("choices_only")
    if choices:
        lines.append(f"| choices-only model (no question) | {percent(choices['accuracy'])} "
                     f"({percent(choices['ci95'][0])}–{percent(choices['ci95'][1])}) | {choices['items']} | "
                     f"{percent(choices['agreement_with_finetuned'])} |")
    consistency = audit.get("permutation")
    if consistency:
        lines += ["", f"Permutation consistency of the fine-tuned model: {percent(consistency['consistent'])} of items "
                      f"get the same option in all {consistency['rotations']} cyclic rotations of the options; "
                      "accuracy per rotation: " + ", ".join(percent(a) for a in consistency["accuracy_per_rotation"])
                      + (f" ({consistency['note']})" if consistency.get("note") else "") + "."]
    per_form = (choices or {}).get("per_form")
    if per_form:
        lines += ["", "Per question form, what the options alone get right next to the fine-tuned model:", "",
                  "| form | n | choices-only | fine-tuned |", "|---|---|---|---|"]
        lines += [f"| {name} | {f['n']} | {percent(f['accuracy_choices_only'])} | {percent(f['accuracy_finetuned'])} |"
                  for name, f in per_form.items()]
    lines += ["", "Thresholds: " + audit["thresholds"]]
    return lines


def render_judge(judge: dict | None) -> list[str]:
    if not judge:
        return []
    return ["", "## LLM judge", "", f"Judge: `{judge['judge']}`, {judge['items']} items asked in both orders "
            f"({judge['unparseable_replies']} of {judge['requests']} replies unparseable).", "",
            f"- mean score: original {judge['mean_score_original']}, fine-tuned {judge['mean_score_finetuned']}",
            f"- fine-tuned wins / ties / original wins / undecided: {judge['finetuned_wins']} / {judge['ties']} / "
            f"{judge['original_wins']} / {judge['undecided']}",
            f"- agreement between the two orders: {percent(judge['order_agreement'])}; agreement with exact "
            f"match: {percent(judge['agreement_with_exact_match'])} ({judge['exact_match_items_compared']} items)"]


def averages_legend() -> str:
    """What micro, macro and the TMMLU+ average are, and which published protocol each is comparable to."""
    return "Averages: " + "; ".join(f"**{label}**: {definition} (comparable to {protocol})"
                                    for label, definition, protocol in AVERAGES.values()) + \
        ". Numbers are comparable only over the same subjects."


def terminal_table(report: dict) -> str:
    o, f = report["original"], report["finetuned"]
    rows = [("", "original", "fine-tuned", "Δ", "95% CI", "p")]
    overall = report["paired"]["overall"]
    rows.append(("overall", percent(o["accuracy"]), percent(f["accuracy"]), _pp(overall["difference"]),
                 _ci(overall["difference_ci95"]).replace(" ", ""), f"{overall['mcnemar']['p_value']:.2g}"))
    for category, c in report["paired"]["per_category"].items():
        rows.append((category, percent(c["accuracy_original"]), percent(c["accuracy_finetuned"]), _pp(c["difference"]),
                     _ci(c["difference_ci95"]).replace(" ", ""), f"{c['mcnemar']['p_value']:.2g}"))
    rows.append(("macro/subj", percent(o.get("accuracy_macro")), percent(f.get("accuracy_macro")),
                 _pp(f.get("accuracy_macro", 0) - o.get("accuracy_macro", 0)), "", ""))
    rows.append(("TMMLU+ avg", percent(o["tmmlu_average"]), percent(f["tmmlu_average"]),
                 _pp(f["tmmlu_average"] - o["tmmlu_average"]), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows)
    sample = report.get("sample")
    text += (f"\nscorers: original = {o['scorer']}, fine-tuned = {f['scorer']}; {report['items']} items"
             + (f" (a stratified sample of {sample['population']})" if sample else ""))
    if report.get("seeds"):
        s = report["seeds"]
        text += (f"\nseeds: Δ {_pp(s['mean_difference'])} ± {100 * s['std_difference']:.1f} over {len(s['runs'])} "
                 f"seeds, t interval {_ci(s['difference_ci95_across_seeds'])}")
    if report.get("cross_fit"):
        c = report["cross_fit"]
        text += (f"\ncross-fitting: out of fold over {c['items']} training-pool questions, Δ {_pp(c['difference'])} "
                 f"{_ci(c['difference_ci95'])} ({c['folds']} folds as clusters)")
    for label, r in (report.get("retrieval") or {}).items():
        text += f"\nopen book, {retrieval_line(label, r)}"
    if report.get("audit"):
        text += f"\naudit: {report['audit']['verdict']}"
    return text


def plot_series(report: dict) -> tuple[list[str], dict, dict]:
    """Per-category accuracy with CIs for the models in the report, the audit's baselines, the seeds."""
    categories = list(report["paired"]["per_category"]) + ["overall"]
    models = report["leaderboard"]["models"] if report.get("leaderboard") else [
        {**report["original"], "label": "original"}, {**report["finetuned"], "label": "fine-tuned"}]
    series = {}
    for m in models:
        acc = [m.get(f"accuracy_{c}", 0.0) for c in categories[:-1]] + [m["accuracy"]]
        cis = [m["ci95_per_category"].get(c, [a, a]) for c, a in zip(categories[:-1], acc)] + [m["accuracy_ci95"]]
        series[f"{m['label']} — {m['scorer']}"] = {"accuracy": acc, "ci_low": [c[0] for c in cis],
                                                  "ci_high": [c[1] for c in cis]}
    baselines = {}
    audit = report.get("audit")
    if audit:
        if audit.get("choices_only"):
            baselines["choices-only model"] = audit["choices_only"]["accuracy"]
        best = max(audit["heuristics"], key=lambda h: h["accuracy"])
        baselines[f"best heuristic ({best['name']})"] = best["accuracy"]
    seeds = [s["accuracy"] for s in report["seeds"]["runs"]] if report.get("seeds") else []
    return categories, series, {"baselines": baselines, "seeds": seeds}


FEW_ITEMS = 30  # below this many items a form's interval is wide: the table says so


def render_forms(per_form: dict | None) -> list[str]:
    """Accuracy by question form (hf_ft.task.question_forms): where the errors are, with the count."""
    if not per_form:
        return []
    lines = ["", "## By question form", "",
             "Forms are recognised from the text (a question may have several). Few items: a wide interval.", "",
             "| form | n | original | fine-tuned | Δ | 95% CI of Δ | McNemar p | what it is |",
             "|---|---|---|---|---|---|---|---|"]
    for name, c in per_form.items():
        few = " (few items)" if c["n"] < FEW_ITEMS else ""
        lines.append(f"| {name} | {c['n']}{few} | {percent(c['accuracy_original'])} | "
                     f"{percent(c['accuracy_finetuned'])} | {_pp(c['difference'])} | {_ci(c['difference_ci95'])} | "
                     f"{c['mcnemar']['p_value']:.3g} | {c['description']} |")
    return lines


def write_outputs(out: Path, report: dict, rows, models) -> None:
    """comparison.json/.md/.png and predictions.jsonl (every model's choice and scores per item)."""
    write_json(out / "comparison.json", report)
    write_text(out / "comparison.md", render_markdown(report))
    categories, series, extras = plot_series(report)
    plot_comparison(categories, series, out / "comparison.png", baselines=extras["baselines"],
                    seed_points=extras["seeds"])
    by_role = {m.role: m for m in reversed(models)}  # the first original and fine-tuned
    original, finetuned = by_role.get("original"), by_role.get("finetuned")
    write_jsonl(out / "predictions.jsonl", (
        {"id": r.id, "subject": r.subject, "gold": r.answer, "forms": forms_of(r.question, r.options),
         **{key: LETTERS[int(m.scores[i].argmax())] for key, m in (("original", original), ("finetuned", finetuned))
            if m is not None},
         **{f"{key}_scores": [round(float(x), 6) for x in m.scores[i]]
            for key, m in (("original", original), ("finetuned", finetuned)) if m is not None},
         **({"others": {m.label: LETTERS[int(m.scores[i].argmax())] for m in models
                        if m is not original and m is not finetuned}} if len(models) > 2 else {})}
        for i, r in enumerate(rows)))

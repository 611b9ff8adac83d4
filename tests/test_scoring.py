"""The zero-shot scorer made affordable: the same scores as the plain algorithm, a cost estimate before long
scoring, a stratified --max_items sample, and scoring split over processes that gives the one-process report."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import python, run_cli


@pytest.fixture(scope="module")
def rows(trained_run):
    from hf_ft.data.files import load_items

    return load_items(trained_run[0] / "test_qa_data.json")


def plain_pseudo_log_likelihood(scorer, rows) -> np.ndarray:
    """The textbook algorithm: one sequence per option token, the whole model, the whole vocabulary."""
    from hf_ft.inputs.preprocessing import mlm_option_sequence

    tokenizer, model = scorer.tokenizer, scorer.model
    scores = np.zeros((len(rows), 4))
    with torch.no_grad():
        for i, row in enumerate(rows):
            for j, option in enumerate(row.options):
                ids, start, end = mlm_option_sequence(tokenizer, row.question, option, scorer.max_length)
                total = 0.0
                for position in range(start, end):
                    masked = torch.tensor([ids[:position] + [tokenizer.mask_token_id] + ids[position + 1:]])
                    logits = model(input_ids=masked).logits[0, position]
                    total += float(torch.log_softmax(logits, -1)[ids[position]])
                scores[i, j] = total / (end - start)
    return scores


def test_fast_pseudo_log_likelihood_equals_the_plain_one(tiny_model, rows):
    from hf_ft.evaluation.scoring import load_scorer

    scorer = load_scorer(str(tiny_model), use_cpu=True)
    fast = scorer.score(rows[:12], batch_size=4, progress=False, batch_tokens=512)
    np.testing.assert_allclose(fast, plain_pseudo_log_likelihood(scorer, rows[:12]), atol=1e-5)
    again = scorer.score(rows[:12], batch_size=32, progress=False)  # other batches: float rounding only
    np.testing.assert_allclose(fast, again, atol=1e-5)


def test_all_masked_scorer_is_a_named_choice(tiny_model, rows):
    from hf_ft.evaluation.scoring import load_scorer, mlm_queries

    scorer = load_scorer(str(tiny_model), scorer="mlm-masked", use_cpu=True)
    assert scorer.name == "mlm-masked"
    scores = scorer.score(rows[:20], progress=False)
    assert scores.shape == (20, 4) and np.all(scores < 0)
    passes = len(mlm_queries(scorer.tokenizer, rows[:20], 512, all_at_once=True))
    assert passes == 80  # one forward pass per option, not one per option token
    assert len(mlm_queries(scorer.tokenizer, rows[:20], 512, all_at_once=False)) > 2 * passes


def test_cost_estimate_is_printed_before_long_scoring(capsys, monkeypatch):
    from hf_ft.evaluation import scoring

    monkeypatch.setattr(scoring, "SAY_COST_ABOVE_S", 0.0)
    done = []

    def compute(batch):
        if len(done) == scoring.WARMUP_BATCHES:
            raise KeyboardInterrupt  # the user reads the estimate and stops
        done.append(batch)
        return batch

    with pytest.raises(KeyboardInterrupt):
        scoring.run_batches([[i] for i in range(1000)], compute, "scoring x", False, passes=123_456,
                            tokens=[64] * 1000)
    err = capsys.readouterr().err
    assert "scoring x: 123,456 forward passes (64,000 padded tokens) over 1 process(es); estimate ~" in err
    assert "use --max_items N, more processes (accelerate launch -m hf_ft.evaluate), or a GPU" in err


def test_token_budget_batches_hold_every_item_once():
    from hf_ft.evaluation.scoring import token_budget_batches

    lengths = [5, 300, 40, 41, 7, 512, 60, 8] * 10
    batches = token_budget_batches(lengths, batch_tokens=1024, max_sequences=16)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert max(lengths[i] for i in batch) * len(batch) <= 1024 or len(batch) == 1
        assert len(batch) <= 16


def test_stratified_sample():
    from hf_ft.data.rows import QARow
    from hf_ft.data.splits import stratified_sample

    rows = [QARow(f"{s}-{i}", s, f"q{s}{i}", ("a", "b", "c", "d"), "A")
            for s, n in (("music", 300), ("physics", 100), ("law", 7)) for i in range(n)]
    sample = stratified_sample(rows, 40, seed=3)
    counts = {s: sum(r.subject == s for r in sample) for s in ("music", "physics", "law")}
    # quotas 29.5, 9.8, 0.7: floors 29, 9, 0, and the two largest remainders (law, physics) get one more
    assert counts == {"music": 29, "physics": 10, "law": 1}
    assert [r.id for r in sample] == [r.id for r in rows if r in sample]  # in the items' own order
    assert [r.id for r in stratified_sample(rows, 40, seed=3)] == [r.id for r in sample]
    assert [r.id for r in stratified_sample(rows, 40, seed=4)] != [r.id for r in sample]


def test_max_items_sample_in_the_report(trained_run, tiny_model, tmp_path, capsys):
    from conftest import cli

    out, _ = trained_run
    code, stdout, err = cli(["evaluate", "--original", str(tiny_model), "--finetuned", str(out), "--use_cpu",
                             "--max_items", "80", "--output_dir", str(tmp_path / "sample")], capsys)
    assert code == 0, err
    sample = json.loads((tmp_path / "sample" / "comparison.json").read_text())
    full = json.loads((out / "comparison" / "comparison.json").read_text()) if (
        out / "comparison" / "comparison.json").exists() else None
    assert sample["items"] == 80 and sample["sample"]["population"] > 80
    assert sum(sample["sample"]["per_subject"].values()) == 80
    predictions = [json.loads(line) for line in (tmp_path / "sample" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 80 and all(p["original"] and p["finetuned"] for p in predictions)  # both models
    assert "A sample" in (tmp_path / "sample" / "comparison.md").read_text()
    assert "a stratified sample of" in stdout
    if full:  # fewer items: a wider interval
        width = lambda r: r["finetuned"]["accuracy_ci95"][1] - r["finetuned"]["accuracy_ci95"][0]  # noqa: E731
        assert width(sample) > width(full)


@pytest.mark.slow
def test_two_processes_give_the_one_process_report(trained_run, tiny_model, tmp_path):
    out, _ = trained_run
    common = ["--original", str(tiny_model), "--finetuned", str(out), "--use_cpu", "--batch_size", "8",
              "--batch_tokens", "2048"]
    one = run_cli(python("-m", "hf_ft.evaluate", *common, "--output_dir", str(tmp_path / "one")))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli(python("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
                         "hf_ft.evaluation.evaluate", *common, "--output_dir", str(tmp_path / "two")), timeout=900)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert "over 2 process(es)" in two.stderr
    reports = [json.loads((tmp_path / name / "comparison.json").read_text()) for name in ("one", "two")]
    for report in reports:
        for key in ("scoring_seconds", "seconds_per_1000_items"):
            report.pop(key)
    assert reports[0] == reports[1]
    assert (tmp_path / "one" / "predictions.jsonl").read_text() == (tmp_path / "two" / "predictions.jsonl").read_text()
    assert not sys.flags.optimize  # (the comparison above is the test)

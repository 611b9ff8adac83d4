"""Scores that do not depend on the batch (issue 36.4): evaluate and predict score an item the same way whether it
shares its forward pass with 0, 6 or 63 others (padding, masks and position ids are per sequence), for both
formulations and with retrieved contexts; the logits agree within 1e-5 in fp32."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TRAIN_ARGS, train_in_process


def _run(tmp_path_factory, demo_data, tiny_model, *extra) -> str:
    out = tmp_path_factory.mktemp("run") / "out"
    train_in_process(["--model_name_or_path", str(tiny_model), "--data_dir", str(demo_data), "--subjects",
                      "music,agriculture", "--output_dir", str(out), *TRAIN_ARGS, "--max_steps", "3",
                      "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false", *extra])
    return str(out)


@pytest.mark.parametrize("formulation", ["per_choice", "joint", "open_book"])
def test_scores_do_not_depend_on_the_batch_size(formulation, tmp_path_factory, demo_data, tiny_model, monkeypatch):
    from hf_ft.data.files import load_items
    from hf_ft.data.sources import load_data_dir
    from hf_ft.evaluation.predict import rank
    from hf_ft.evaluation.scoring import load_scorer

    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("home")))
    extra = {"per_choice": [], "joint": ["--formulation", "joint"]}.get(formulation)
    if extra is None:  # open book over the training pool's options (a corpus the leak check leaves alone)
        corpus = tmp_path_factory.mktemp("corpus")
        rows = [r for pool in load_data_dir(str(demo_data), "music,agriculture").pools.values() for r in pool]
        (corpus / "facts.txt").write_text("\n".join("、".join(r.options) for r in rows[:80]) + "\n", encoding="utf-8")
        extra = ["--retrieval_corpus", str(corpus), "--retrieval_k", "2", "--passage_chars", "60"]
    out = _run(tmp_path_factory, demo_data, tiny_model, *extra)
    items = load_items(f"{out}/test_qa_data.json")[:64]
    scorer = load_scorer(out, use_cpu=True)
    scores = {b: scorer.score(items, batch_size=b, progress=False) for b in (1, 7, 64)}
    for b in (7, 64):
        assert (scores[b].argmax(1) == scores[1].argmax(1)).all(), b
        finite = np.isfinite(scores[1])
        assert (np.isfinite(scores[b]) == finite).all()
        np.testing.assert_allclose(scores[b][finite], scores[1][finite], atol=1e-5, rtol=0)
    if formulation == "open_book":
        assert any(r["passages"] for r in scorer.retrieved)  # the contexts were there to vary with the batch
    # predict reads the same scores, whatever its batch
    assert [r["prediction"] for r in rank(scorer, items, batch_size=1)] == \
        [r["prediction"] for r in rank(scorer, items, batch_size=64)]

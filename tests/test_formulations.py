"""The joint formulation, option shuffling, length-grouped batching, and the benchmark script."""

import json

import numpy as np
import pytest
from conftest import TRAIN_ARGS, cli, run_card_usage, train_in_process

from hf_ft.data.files import load_items
from hf_ft.data.rows import QARow


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory, demo_data, tiny_model):
    out = tmp_path_factory.mktemp("joint") / "out"
    metrics = train_in_process(["--formulation", "joint", "--model_name_or_path", str(tiny_model), "--data_dir",
                                str(demo_data), "--output_dir", str(out), *TRAIN_ARGS,
                                "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0.0"])
    return out, metrics


def test_joint_trains_saves_reloads_and_predicts_the_same(joint_run):
    from transformers import AutoModelForSequenceClassification

    from hf_ft.evaluation.scoring import load_scorer

    out, metrics = joint_run
    # No accuracy bar here: joint needs a pretrained encoder and this tiny model is randomly initialised
    # (the benchmark's demo_accuracy measures joint on a pretrained one); what is checked is that it trains
    # (with the default 4 rotations), saves, reloads and predicts the same.
    assert np.isfinite(metrics["train_loss"]) and metrics["test_samples"] > 100
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 4 and model.config.hf_ft_formulation == "joint"
    assert model.config.hidden_dropout_prob == 0 and model.config.attention_probs_dropout_prob == 0  # overridden
    hyperparameters = json.loads((out / "hf_ft_run.json").read_text())["hyperparameters"]
    assert hyperparameters["train_sampling_strategy"] == "group_by_length"
    assert hyperparameters["joint_rotations"] == 4 and hyperparameters["joint_eval_rotations"] == 4
    assert hyperparameters["config_overrides"] == "hidden_dropout_prob=0,attention_probs_dropout_prob=0.0"
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| config overrides | hidden_dropout_prob=0,attention_probs_dropout_prob=0.0 |" in card
    # The Trainer's test predictions and the scorer both merge 4 rotations per question (the default).
    scorer = load_scorer(str(out), use_cpu=True, max_length=128)
    assert scorer.name == "head (joint, 4 rotations)"
    rows = load_items(out / "test_qa_data.json")
    trained = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    merged = scorer.score(rows, progress=False)
    np.testing.assert_allclose(merged, [t["scores"] for t in trained], atol=1e-5)
    assert (np.exp(merged).sum(axis=1) <= 1 + 1e-6).all()  # mean log-probabilities, not logits
    accuracy = np.mean([t["prediction"] == r.answer for t, r in zip(trained, rows)])
    assert accuracy == pytest.approx(metrics["test_accuracy"])
    one_pass = load_scorer(str(out), use_cpu=True, max_length=128, joint_eval_rotations=1)
    assert one_pass.name == "head (joint)"
    assert not np.allclose(one_pass.score(rows, progress=False), merged)  # raw logits of the given order


def test_joint_model_in_predict_and_evaluate(joint_run, tiny_model, tmp_path, capsys):
    out, _ = joint_run
    question = ["predict", str(out), "--question", "下列何者屬於「樂器」？", "--choices", "二胡", "老虎", "芒果", "氫",
                "--use_cpu"]
    code, stdout, err = cli(question, capsys)
    assert code == 0 and "head (joint, 4 rotations)" in stdout, err[-2000:]
    code, stdout, err = cli([*question, "--joint_eval_rotations", "1"], capsys)
    assert code == 0 and "(scorer: head (joint))" in stdout, err[-2000:]
    code, _, err = cli(["predict", str(out), "--question", "問題", "--choices", "a", "b", "c", "d",
                        "--joint_eval_rotations", "0"], capsys)
    assert code == 2 and "--joint_eval_rotations 0: need 1 to 4" in err
    code, _, err = cli(["predict", str(out), "--question", "問題", "--choices", "a", "b", "c"], capsys)
    assert code == 2 and "answers exactly 4 options" in err
    from hf_ft.evaluation.evaluate import EvaluateArguments, run

    report = run(EvaluateArguments(original=str(tiny_model), finetuned=str(out), output_dir=str(tmp_path),
                                   use_cpu=True, max_seq_length=128))
    assert report["finetuned"]["scorer"] == "head (joint, 4 rotations)" and report["original"]["scorer"] == "mlm-pll"
    assert sum(report["finetuned"]["predicted_letters"].values()) == report["items"] > 100


def test_card_usage_code_answers_like_hf_ft(joint_run, capsys):
    """The card shows how to use a joint model with transformers alone (build the sequence, merge the
    rotations); run as printed, it must give hf_ft's answer and probabilities."""
    from hf_ft.evaluation.predict import make_question, rank
    from hf_ft.evaluation.scoring import load_scorer

    out, _ = joint_run
    usage = run_card_usage(out)
    assert "rotations = 4" in (out / "README.md").read_text(encoding="utf-8")
    expected = rank(load_scorer(str(out), use_cpu=True), [make_question(usage["question"], usage["options"])])[0]
    probabilities = usage["scores"].softmax(-1).tolist()
    assert capsys.readouterr().out.startswith(expected["prediction"])
    assert {r["letter"]: r["probability"] for r in expected["ranking"]} == pytest.approx(
        dict(zip("ABCD", probabilities)), abs=1e-5)


@pytest.mark.parametrize("overrides, message", [
    ("hidden_dropout_prob", "'hidden_dropout_prob' is not key=value"),
    ("hiden_dropout_prob=0", "hiden_dropout_prob: not a key of this model's config .did you mean hidden_dropout_prob"),
    ("hidden_dropout_prob=zero", "hidden_dropout_prob: could not convert string to float"),
    ('{"hidden_dropout_prob": "zero"}', "hidden_dropout_prob: could not convert string to float"),
    ('{"classifier_dropout": 0.2', "not valid JSON"),
])
def test_bad_config_overrides_are_named(tiny_model, tmp_path, overrides, message):
    from hf_ft.inputs.modeling import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match=message):
        load_model(str(tiny_model), "per_choice", config_overrides=overrides)


def test_config_overrides_set_keys_whose_value_is_none():
    """BERT's classifier_dropout is None until set: `update_from_string` cannot type it, hf_ft reads JSON."""
    from transformers import BertConfig

    from hf_ft.inputs.modeling import apply_config_overrides

    config = BertConfig()
    apply_config_overrides(config, '{"classifier_dropout": 0.2, "hidden_dropout_prob": 0}')
    assert config.classifier_dropout == 0.2 and config.hidden_dropout_prob == 0.0
    apply_config_overrides(config, "classifier_dropout=0.3,attention_probs_dropout_prob=0")
    assert config.classifier_dropout == 0.3 and config.attention_probs_dropout_prob == 0.0


def test_option_shuffling_keeps_the_gold_option_labelled(tiny_model):
    from transformers import AutoTokenizer

    from hf_ft.inputs.formulations import encode, make_collator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [QARow(f"q{i}", "music", f"下列何者屬於「樂器」？第{i}題", ("二胡", "老虎", "芒果", "氫")[i % 4:] +
                  ("二胡", "老虎", "芒果", "氫")[:i % 4], "ABCD"[(4 - i % 4) % 4]) for i in range(40)]
    dataset = encode(rows, tokenizer, "joint", 128, progress=False)
    collate = make_collator("joint", tokenizer, train=True, seed=3)
    positions = []
    for start in range(0, 40, 8):
        features = [dataset[i] for i in range(start, start + 8)]
        batch = collate(features)
        for ids, label in zip(batch["input_ids"], batch["labels"]):
            tokens = ids[ids != tokenizer.pad_token_id].tolist()
            seps = [k for k, t in enumerate(tokens) if t == tokenizer.sep_token_id]
            slots = [tokenizer.decode(tokens[a + 1:b]).replace(" ", "") for a, b in zip(seps, seps[1:])]
            assert [slot[0] for slot in slots] == ["a", "b", "c", "d"]  # slot letters stay in order
            options = [slot[1:] for slot in slots]
            assert options[int(label)] == "二胡"  # the gold option text is the labelled one
            assert sorted(options) == sorted(["二胡", "老虎", "芒果", "氫"])
            positions.append(int(label))
    assert len(set(positions)) == 4  # the gold answer moves around: position cannot be learned
    evaluation = make_collator("joint", tokenizer, train=False)(features)
    assert evaluation["labels"].tolist() == [r.label for r in rows[32:40]]  # no shuffling at evaluation


def test_rotations_put_the_gold_option_in_every_slot(tiny_model):
    from transformers import AutoTokenizer

    from hf_ft.inputs.formulations import encode, make_collator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    options = ("二胡", "老虎", "芒果", "氫")
    rows = [QARow(f"q{i}", "music", f"下列何者屬於「樂器」？第{i}題", options, "A") for i in range(6)]
    features = [encode(rows, tokenizer, "joint", 128, progress=False)[i] for i in range(6)]
    batch = make_collator("joint", tokenizer, train=True, seed=1, joint_rotations=4)(features)
    assert batch["input_ids"].shape[0] == 4 * len(features)  # every question four times
    for q in range(len(features)):
        group = range(4 * q, 4 * q + 4)
        orders = []
        for row in group:
            tokens = batch["input_ids"][row][batch["attention_mask"][row] == 1].tolist()
            seps = [k for k, t in enumerate(tokens) if t == tokenizer.sep_token_id]
            slots = [tokenizer.decode(tokens[a + 2:b]).replace(" ", "") for a, b in zip(seps, seps[1:])]
            assert slots[int(batch["labels"][row])] == "二胡"  # the label still names the gold option
            orders.append(tuple(slots))
        assert sorted(int(batch["labels"][row]) for row in group) == [0, 1, 2, 3]  # gold in every slot once
        assert all(o == orders[0][4 - r:] + orders[0][:4 - r] for r, o in enumerate(orders))  # rotations of one order
    two = make_collator("joint", tokenizer, train=True, seed=1, joint_rotations=2)(features)
    assert two["input_ids"].shape[0] == 2 * len(features)
    assert make_collator("joint", tokenizer, train=False, joint_rotations=4)(features)["input_ids"].shape[0] == 6


def test_evaluation_rotations_cancel_a_slot_bias(tiny_model):
    """A head that prefers slot A by a wide margin and the gold option by a small one is wrong in one pass
    whenever the answer is not A; merged over 4 rotations, the slot preference cancels and every answer is
    right. The logits are computed from the collated tokens, so the collator's layout and merge_rotations'
    way back are checked together."""
    import torch
    from transformers import AutoTokenizer

    from hf_ft.inputs.collators import merge_rotations
    from hf_ft.inputs.formulations import encode, make_collator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    options = ("二胡", "老虎", "芒果", "氫")
    rows = [QARow(f"q{i}", "music", f"下列何者屬於「樂器」？第{i}題", options[i % 4:] + options[:i % 4],
                  "ABCD"[(4 - i % 4) % 4]) for i in range(8)]
    features = [encode(rows, tokenizer, "joint", 128, progress=False)[i] for i in range(8)]

    def biased_head(batch):
        logits = []
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            tokens = ids[mask == 1].tolist()
            seps = [k for k, t in enumerate(tokens) if t == tokenizer.sep_token_id]
            slots = [tokenizer.decode(tokens[a + 2:b]).replace(" ", "") for a, b in zip(seps, seps[1:])]
            logits.append([3.0, 0.0, 0.0, 0.0] + np.eye(4)[slots.index("二胡")])
        return torch.tensor(np.array(logits))

    golds = [r.label for r in rows]
    one = make_collator("joint", tokenizer, train=False)(features)
    assert biased_head(one).argmax(-1).tolist() == [0] * 8 and golds != [0] * 8  # one pass: always A
    batch = make_collator("joint", tokenizer, train=False, joint_eval_rotations=4)(features)
    assert batch["input_ids"].shape[0] == 32 and batch["labels"][::4].tolist() == golds
    merged = merge_rotations(biased_head(batch), 4)
    assert merged.shape == (8, 4) and merged.argmax(-1).tolist() == golds  # merged: always the gold option
    assert torch.equal(merge_rotations(biased_head(one), 1), biased_head(one))  # one copy: logits unchanged


def test_length_grouping_reduces_padding_on_a_skewed_set(tiny_model, tmp_path):
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    from hf_ft.config.fields import QATrainingArguments
    from hf_ft.inputs.formulations import encode, make_collator
    from hf_ft.training.trainer import QATrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rng = np.random.default_rng(0)
    rows = [QARow(f"q{i}", "music", "樂" * int(rng.choice([5, 200])) + f"{i}？", ("二胡", "老虎", "芒果", "氫"), "A")
            for i in range(256)]
    dataset = encode(rows, tokenizer, "per_choice", 512, progress=False)
    model = AutoModelForMultipleChoice.from_pretrained(tiny_model)

    def pad_tokens(strategy: str) -> int:
        args = QATrainingArguments(output_dir=str(tmp_path / strategy), per_device_train_batch_size=8, use_cpu=True,
                                   train_sampling_strategy=strategy, eval_strategy="no", save_strategy="no",
                                   load_best_model_at_end=False)
        trainer = QATrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            data_collator=make_collator("per_choice", tokenizer, train=True))
        return sum(int((batch["attention_mask"] == 0).sum()) for batch in trainer.get_train_dataloader())

    grouped, random_order = pad_tokens("group_by_length"), pad_tokens("random")
    assert grouped < 0.25 * random_order, (grouped, random_order)


@pytest.mark.slow
def test_pretraining_teaches_the_tiny_model_its_facts(tmp_path, demo_data):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from hf_ft.demo import fact_sentences, make_tiny_model, pretrain_tiny_model

    model_dir = make_tiny_model(tmp_path / "model", [demo_data], seed=0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    held_out = tokenizer(fact_sentences(60, seed=99))["input_ids"]  # sentences the pretraining never sees

    def pseudo_log_loss() -> float:
        """Mean loss of each token predicted with only itself masked, by the model saved in model_dir."""
        model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
        losses = []
        with torch.no_grad():
            for ids in held_out:
                masked = torch.tensor([ids] * (len(ids) - 2))
                positions = torch.arange(1, len(ids) - 1)
                masked[torch.arange(len(positions)), positions] = tokenizer.mask_token_id
                logits = model(input_ids=masked).logits[torch.arange(len(positions)), positions]
                losses.append(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:-1])).item())
        return float(np.mean(losses))

    before = pseudo_log_loss()
    pretrain_tiny_model(model_dir, sentences=1000, epochs=3)
    after = pseudo_log_loss()
    assert after < before - 1.0, (before, after)  # the saved weights changed and predict unseen facts better


# ----------------------------------------------------------------------------------------------
# The seam: every path builds the same model inputs for the same rows


def _sequences(batch: dict) -> list[tuple]:
    """Each sequence of a batch without its padding: (input_ids, token_type_ids) per sequence, in order."""
    ids = batch["input_ids"].reshape(-1, batch["input_ids"].shape[-1])
    mask = batch["attention_mask"].reshape(ids.shape).bool() if "attention_mask" in batch else ids >= 0
    types = batch.get("token_type_ids")
    types = types.reshape(ids.shape) if types is not None else None
    return [(tuple(ids[i][mask[i]].tolist()), tuple(types[i][mask[i]].tolist()) if types is not None else None)
            for i in range(ids.shape[0])]


def _captured(model, call) -> list[tuple]:
    """The sequences every model of `model`'s class read during `call()` (the card's code loads its own copy)."""
    seen, cls = [], type(model)
    forward = cls.forward

    def spy(self, *args, **kwargs):
        seen.extend(_sequences(kwargs))
        return forward(self, *args, **kwargs)

    cls.forward = spy
    try:
        call()
    finally:
        cls.forward = forward
    return seen


def _seam_rows():
    from hf_ft.data.rows import QARow

    question, options = "下列何者為哺乳類？", ("鯨魚", "鯊魚", "章魚", "海星")
    long_context = "鯨魚是哺乳類，用肺呼吸，胎生並以乳汁哺育幼體。" * 30  # longer than max_seq_length: cut first
    return [QARow("q0", "s", question, options, "A"),
            QARow("q1", "s", question, options, "A", context="鯨魚是生活在海洋中的哺乳類動物。"),
            QARow("q2", "s", question * 20, options, "A", context=long_context)]


@pytest.mark.parametrize("run", ["per_choice", "joint"])
def test_every_path_builds_the_same_model_inputs(run, trained_run, joint_run, tmp_path):
    """Training's evaluation collator, the head scorer, predict, the audit's choices-only inputs and the card's
    plain-transformers code give the model the same sequences as `model_inputs`, with and without context."""
    from dataclasses import replace

    from hf_ft.config.fields import QATrainingArguments
    from hf_ft.evaluation.predict import rank
    from hf_ft.evaluation.scoring import load_scorer
    from hf_ft.inputs.formulations import encode, model_inputs
    from hf_ft.training.trainer import build_trainer

    out = (trained_run if run == "per_choice" else joint_run)[0]
    scorer = load_scorer(str(out), use_cpu=True)
    assert scorer.max_length == 128  # the run's recorded max_seq_length, not evaluate's old 512 default
    settings = {"joint_eval_rotations": scorer.joint_eval_rotations}
    tokenizer, formulation, limit = scorer.tokenizer, scorer.formulation, scorer.max_length
    for row in _seam_rows():
        expected = _sequences(model_inputs([row], tokenizer, formulation, limit, **settings))
        assert all(len(ids) <= limit for ids, _ in expected)
        # training: the Trainer's evaluation collator over the tokenized dataset
        trainer = build_trainer(scorer.model, tokenizer, QATrainingArguments(str(tmp_path), use_cpu=True, eval_strategy="no",
                                load_best_model_at_end=False), formulation, encode([row], tokenizer, formulation, limit,
                                                                   cache_dir=tmp_path, progress=False),
                                joint_eval_rotations=scorer.joint_eval_rotations)
        dataset = encode([row], tokenizer, formulation, limit, cache_dir=tmp_path, progress=False)
        assert _sequences(trainer.eval_data_collator([dataset[0]])) == expected
        # the head scorer and predict
        assert _captured(scorer.model, lambda: scorer.score([row], progress=False)) == expected
        assert _captured(scorer.model, lambda: rank(scorer, [row])) == expected
        # the audit's choices-only model reads the same rows without their question
        blank = replace(row, question="")
        assert _sequences(model_inputs([blank], tokenizer, formulation, limit, **settings)) == _sequences(
            trainer.eval_data_collator([encode([row], tokenizer, formulation, limit, cache_dir=tmp_path,
                                               progress=False, drop_question=True)[0]]))
        if len(row.context or "") < 100:  # the card's code does not truncate: short rows only
            card = (out / "README.md").read_text(encoding="utf-8")
            code = card.split("With plain transformers:")[1].split("```python")[1].split("```")[0]
            code = code.replace('context = ""', f"context = {row.context!r}")
            code = code.replace('from_pretrained("path/to/this/model")', f"from_pretrained({str(out)!r})")
            code = code.replace("print(", "_ = (")
            assert _captured(scorer.model, lambda: exec(compile(code, "card", "exec"), {})) == expected
    context_row = _seam_rows()[1]
    closed, opened = (_sequences(model_inputs([r], tokenizer, formulation, limit, **settings))
                      for r in (replace(context_row, context=None), context_row))
    assert all(len(o[0]) > len(c[0]) for c, o in zip(closed, opened))  # the context is really in the input


def test_context_is_cut_first_then_the_question_and_never_an_option(tiny_model):
    """A context longer than the space left is cut; the question survives whole while any context is left;
    options are never cut; and the cuts are counted."""
    from hf_ft.inputs.formulations import encode
    from hf_ft.inputs.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model))
    rows = _seam_rows()
    for formulation in ("per_choice", "joint", "mlm"):
        dataset = encode(rows, tokenizer, formulation, 64, progress=False)
        assert dataset["truncated"] == [False, False, True], formulation
        assert dataset["context_truncated"] == [False, False, True], formulation
        assert dataset["context_tokens"][0] == 0 and dataset["context_tokens"][1] > 10, formulation
        assert dataset["context_tokens"][2] == 0, formulation  # the long question left no room for context
        assert max(dataset["length"]) <= 64
    short_question = [rows[1].__class__("q3", "s", "下列何者為哺乳類？", rows[1].options, "A", context=rows[2].context)]
    dataset = encode(short_question, tokenizer, "per_choice", 64, progress=False)
    assert dataset["truncated"] == [False] and dataset["context_truncated"] == [True]
    ids = dataset[0]["input_ids"][0]
    question = tokenizer("下列何者為哺乳類？", add_special_tokens=False)["input_ids"]
    assert ids[1:1 + len(question)] == question and len(ids) == 64
    for choice, option in zip(dataset[0]["input_ids"], rows[1].options):
        option_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
        start = 2 + len(question)
        assert choice[start:start + len(option_ids)] == option_ids


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("multiple", [None, 8, 64])
def test_vectorised_padding_equals_the_tokenizers(tiny_model, padding_side, multiple):
    """collators.pad_batch replaced tokenizer.pad on the training path (19 ms → 1 ms a batch): the same tensors,
    for per_choice (transformers' DataCollatorForMultipleChoice) and joint (tokenizer.pad), either padding side."""
    import random

    import torch
    from transformers import AutoTokenizer, DataCollatorForMultipleChoice

    from hf_ft.inputs.collators import MultipleChoiceCollator, pad_batch

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.padding_side = padding_side
    rng = random.Random(multiple or 1)
    features = []
    for i in range(13):
        ids = [[rng.randint(5, 60) for _ in range(rng.randint(1, 90))] for _ in range(4)]
        features.append({"input_ids": ids, "token_type_ids": [[rng.randint(0, 1)] * len(x) for x in ids],
                         "labels": rng.randint(0, 3), "id": str(i), "length": 0, "subject": "music"})
    ours = MultipleChoiceCollator(tokenizer, multiple)(features)
    theirs = DataCollatorForMultipleChoice(tokenizer, pad_to_multiple_of=multiple)(
        [{k: f[k] for k in ("input_ids", "token_type_ids", "labels")} for f in features])
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
    flat = {k: [seq for f in features for seq in f[k]] for k in ("input_ids", "token_type_ids")}
    reference = tokenizer.pad([{k: flat[k][i] for k in flat} for i in range(len(flat["input_ids"]))], padding=True,
                              pad_to_multiple_of=multiple, return_tensors="pt")
    padded = pad_batch(tokenizer, flat, multiple)
    assert padded.keys() == reference.keys()
    assert all(torch.equal(padded[k], reference[k]) for k in reference)

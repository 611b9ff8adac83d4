"""Option scores for multiple-choice items, one implementation per scorer, shared by evaluate and predict.

head:       a fine-tuned per_choice or joint model scores options with its trained head; the inputs are
            built by the training preprocessing and collators, so train and test see the same sequences.
            A joint model sees each question in `joint_eval_rotations` rotated option orders, merged.
mlm-pll:    a masked-LM (the original pretrained model, or a --formulation mlm adaptation) scores each
            option zero-shot by its length-normalised pseudo-log-likelihood given the question: every
            option token is masked in turn (one forward pass per option token) and the log-probability
            of the true token is averaged. The default for a model without a trained head.
mlm-masked: cheaper (one pass per option): all option tokens masked at once, each predicted from the
            question and the option's length. Offered as a named choice; its agreement with mlm-pll is
            measured in benchmarks/zero_shot.py.

Work is cut into batches by a token budget after sorting by length (little padding), and the masked-LM
head runs only at the masked positions. The batches are the same whatever the number of processes;
under `accelerate launch` each process scores every k-th batch and the results are gathered in item
order, so two processes give exactly the one-process scores. Before long scoring, a timed warm-up
prints what the whole job will cost.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import UserError
from ..core.processes import scoring_state
from ..core.registry import Registry
from ..data.rows import QARow
from ..inputs.collators import MASK_KEY, mask_choices, merge_rotations
from ..inputs.formulations import encode, get_formulation, make_collator
from ..inputs.modeling import ModelLoadError, formulation_of, load_config, load_model, load_tokenizer, untrained_head
from ..inputs.preprocessing import JOINT_EVAL_ROTATIONS, length_problem, mlm_option_sequence

logger = logging.getLogger(__name__)

BATCH_TOKENS = 16384  # padded tokens per forward pass
WARMUP_BATCHES = 3
SAY_COST_ABOVE_S = 60  # print the estimate (always logged) loudly when the job is longer than this


def pick_device(use_cpu: bool = False) -> torch.device:
    """Like training: CUDA when present unless told to use the CPU; under a launcher, this process's GPU."""
    return scoring_state(use_cpu).device


@dataclass
class LoadedScorer:
    """A model ready to score options; `name` says which scorer produced the numbers. `settings` are the
    run's recorded input settings (`run_settings`), so a model is scored on the inputs it was trained on."""

    path: str
    model: torch.nn.Module
    tokenizer: object
    formulation: str  # per_choice / joint / mlm
    method: str  # a key of SCORERS
    name: str  # "head (per_choice)", "head (joint, 4 rotations)", "mlm-pll" or "mlm-masked"
    max_length: int
    joint_eval_rotations: int = 1
    passes: int = 0  # forward-pass sequences of the last `score` call
    settings: dict | None = None
    retrieved: list | None = None  # per item of the last `score` call: the passages used (open book)
    context_check: dict | None = None  # the last `score` call's leak check of the assembled contexts
    _book: object = None

    def open_book(self):
        """The run's own retrieval (None for a closed-book model), rebuilt from its record once."""
        if self._book is None and (self.settings or {}).get("retrieval"):
            from ..retrieval.contexts import OpenBook

            self._book = OpenBook.from_record(self.settings["retrieval"], self.path)
        return self._book

    def recorded_test_items(self) -> list[QARow]:
        """The test items the run held out (its test_qa_data.json), if it recorded them."""
        from ..core.run_dir import TEST_ITEMS_FILE
        from ..data.files import load_items

        path = Path(self.path) / TEST_ITEMS_FILE
        return load_items(path) if path.is_file() else []

    def score(self, rows: list[QARow], batch_size: int = 32, progress: bool = True,
              batch_tokens: int = BATCH_TOKENS) -> np.ndarray:
        """(n, options) scores; higher is better. Deterministic for the same model and items. An open-book
        model reads each item with the passages its run's retrieval finds (rows that bring no context)."""
        self.retrieved = self.context_check = None
        if self.open_book() is not None and rows and all(r.context is None for r in rows):
            rows, self.retrieved = self.open_book().attach(rows)
            # what the model reads, checked against these items and the run's own test items (a question given to
            # predict may be one of them), whatever file they came from
            held_out = list({r.id: r for r in [*rows, *self.recorded_test_items()]}.values())
            guarded, self.context_check = self.open_book().guard({"scored": rows}, held_out, self.path)
            for row, record in zip(guarded["scored"], self.retrieved):
                if row.context is None and record["passages"]:
                    record.update(passages=[], gold_in_context=False, removed_by_leak_check=True)
            rows = guarded["scored"]
            for record, row in zip(self.retrieved, rows):
                record["context_tokens"] = len(self.tokenizer(row.context or "", add_special_tokens=False,
                                                              verbose=False)["input_ids"])
        limit = {"the scoring length (--max_seq_length, else the run's, at most the model's positions)":
                 self.max_length}
        problem = length_problem(rows, self.tokenizer, self.formulation, limit)
        if problem:  # (never for the masked-LM scorers, which fit what they read themselves)
            raise UserError(f"{self.path}: {problem}")
        return SCORERS[self.method].score(self, rows, batch_size, progress, batch_tokens)


def run_settings(path: str) -> dict:
    """The input settings a fine-tuned output folder recorded (`hf_ft_run.json`): formulation, max_seq_length,
    joint_eval_rotations, retrieval. Empty for a model hf_ft did not train."""
    from ..core.run_dir import RUN_RECORD_FILE, read_json_if_present

    record = read_json_if_present(Path(path) / RUN_RECORD_FILE) if Path(path).is_dir() else None
    if not record:
        return {}
    hyperparameters = record.get("hyperparameters", {})
    settings = {"formulation": record.get("formulation"), "max_seq_length": hyperparameters.get("max_seq_length"),
                "joint_eval_rotations": hyperparameters.get("joint_eval_rotations"),
                "retrieval": record.get("retrieval")}
    return {k: v for k, v in settings.items() if v is not None}


def load_scorer(path: str, scorer: str = "auto", use_cpu: bool = False, max_length: int | None = None,
                trust_remote_code: bool = False, revision: str = "main",
                joint_eval_rotations: int | None = None, use_kernels: bool = False) -> LoadedScorer:
    """Choose the scorer from the checkpoint's config (or `scorer`), load the model once, in eval mode.
    `max_length` and `joint_eval_rotations` default to what the run recorded (else 512 and 4): a flag given
    by the user overrides the record, a default never does."""
    recorded = run_settings(path)
    max_length = max_length if max_length is not None else recorded.get("max_seq_length", 512)
    joint_eval_rotations = (joint_eval_rotations if joint_eval_rotations is not None
                            else recorded.get("joint_eval_rotations", JOINT_EVAL_ROTATIONS))
    if joint_eval_rotations < 1:
        raise UserError(f"--joint_eval_rotations {joint_eval_rotations}: need 1 or more")
    if scorer != "auto":
        SCORERS[scorer]  # an unknown name is one line listing the scorers
    config = load_config(path, revision, None, trust_remote_code)
    formulation = formulation_of(config)
    if scorer == "auto" and formulation is None:
        raise UserError(f"{path}: cannot score multiple choice: it has neither a multiple-choice head nor a "
                        f"masked-LM head (architectures: {getattr(config, 'architectures', None)})")
    if scorer == "auto":
        scorer = "head" if get_formulation(formulation).scores_options else "mlm-pll"
    loads_as = SCORERS[scorer].loads_as  # a formulation of its own (masked-LM scorers), or the checkpoint's
    if loads_as and formulation is not None and get_formulation(formulation).scores_options:
        raise UserError(f"--scorer {scorer}: {path} is a multiple-choice model ({formulation}; architectures: "
                        f"{getattr(config, 'architectures', None)}): its checkpoint has no masked-LM head, so the "
                        "scores would come from a freshly initialised one; use --scorer head (or auto), or score "
                        "the pretrained model it came from")
    if loads_as:
        formulation = loads_as
    elif formulation is None or not get_formulation(formulation).scores_options:
        raise UserError(f"{path}: has no trained multiple-choice head (architectures: "
                        f"{getattr(config, 'architectures', None)}); score it with --scorer mlm-pll")
    tokenizer = load_tokenizer(path, revision, None, trust_remote_code)
    try:
        model = load_model(path, formulation, revision, None, trust_remote_code, use_kernels=use_kernels)
    except ModelLoadError:
        if not loads_as:
            raise
        raise UserError(f"{path}: has no masked-LM head to score with") from None
    if not loads_as and untrained_head(model):
        raise UserError(f"{path}: its {formulation} head was never trained (its bias is still exactly zero), so its "
                        "scores would be noise: fine-tune it first, or score the pretrained model it came from "
                        "(masked-LM scorer)")
    model.to(pick_device(use_cpu)).eval()
    limit = min(max_length, tokenizer.model_max_length, getattr(config, "max_position_embeddings", max_length))
    rotations = joint_eval_rotations if get_formulation(formulation).rotations_flags else 1
    name = scorer if loads_as else f"head ({formulation})"
    if rotations > 1:
        name = f"head ({formulation}, {min(rotations, config.num_labels)} rotations)"
    return LoadedScorer(path, model, tokenizer, formulation, scorer, name, limit, rotations, settings=recorded)


# ----------------------------------------------------------------------------------------------
# Work split into batches, shared over processes, with a cost estimate


def token_budget_batches(lengths: list[int], batch_tokens: int, max_sequences: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `batch_tokens` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, current, longest = [], [], 0
    for i in order:
        longest_if = max(longest, lengths[i])
        if current and (longest_if * (len(current) + 1) > batch_tokens or len(current) >= max_sequences):
            batches.append(current)
            current, longest_if = [], lengths[i]
        current.append(i)
        longest = longest_if
    if current:
        batches.append(current)
    return batches


def humanize(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"


def run_batches(batches: list, compute, label: str, progress: bool, passes: int, tokens: list[int]) -> dict:
    """Compute every batch this process owns (every k-th of k processes), print the cost estimate after a
    timed warm-up, and gather all results, keyed by batch index, on every process."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    mine = list(range(state.process_index, len(batches), state.num_processes))
    results, done_tokens, start = {}, 0, time.perf_counter()
    total_tokens = sum(tokens[b] for b in mine)
    for k, b in enumerate(tqdm(mine, desc=label, disable=not progress or not state.is_main_process, leave=False)):
        results[b] = compute(batches[b])
        done_tokens += tokens[b]
        if k + 1 == min(WARMUP_BATCHES, len(mine)):
            elapsed = time.perf_counter() - start
            estimate = elapsed / done_tokens * total_tokens
            message = (f"{label}: {passes:,} forward passes ({sum(tokens):,} padded tokens) over "
                       f"{state.num_processes} process(es); estimate ~{humanize(estimate)} on this machine")
            if estimate > SAY_COST_ABOVE_S and state.is_main_process:
                print(f"{message}: use --max_items N, more processes (accelerate launch -m hf_ft.evaluate), "
                      "or a GPU to do it faster", file=sys.stderr, flush=True)
            logger.info(message)
    if state.num_processes > 1:
        merged = {}
        for part in gather_object([results]):
            merged.update(part)
        results = merged
    return results


# ----------------------------------------------------------------------------------------------
# The trained head


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


def score_with_head(scorer: LoadedScorer, rows: list[QARow], batch_size: int, progress: bool,
                    batch_tokens: int = BATCH_TOKENS) -> np.ndarray:
    """Logits of the trained head, on the training preprocessing, in token-budget batches."""
    width = max(len(r.options) for r in rows)
    dataset = encode(rows, scorer.tokenizer, scorer.formulation, scorer.max_length, progress=False)
    copies = get_formulation(scorer.formulation).copies(width, scorer.joint_eval_rotations)
    lengths = [length * copies for length in dataset["length"]]
    batches = token_budget_batches(lengths, batch_tokens, batch_size)
    collator = make_collator(scorer.formulation, scorer.tokenizer, train=False,
                             joint_eval_rotations=scorer.joint_eval_rotations)
    device = next(scorer.model.parameters()).device

    def compute(indices):
        batch = collator([dataset[i] for i in indices])
        mask = batch.pop(MASK_KEY, None)  # questions with fewer options than others: those slots are -inf
        with torch.inference_mode():
            logits = scorer.model(**_to_device(batch, device)).logits
            if mask is not None:
                logits = mask_choices(logits, mask)
        return merge_rotations(logits, scorer.joint_eval_rotations).float().cpu().numpy()

    tokens = [max(lengths[i] for i in b) * len(b) for b in batches]
    scorer.passes = len(rows) * copies
    results = run_batches(batches, compute, f"scoring {scorer.path}", progress and len(rows) >= 200,
                          scorer.passes, tokens)
    scores = np.full((len(rows), width), -np.inf, dtype=np.float64)
    for b, indices in enumerate(batches):
        scores[indices, : results[b].shape[-1]] = results[b][:, :width]
    for i, row in enumerate(rows):  # a joint head has 4 slots: a question with fewer options scores only its own
        scores[i, len(row.options):] = -np.inf
    return scores


# ----------------------------------------------------------------------------------------------
# The masked-LM head, zero-shot


def mlm_queries(tokenizer, rows: list[QARow], max_length: int, all_at_once: bool) -> list[tuple]:
    """(row, option, masked input ids, masked positions, true tokens) per forward-pass sequence: one per option
    token (pseudo-log-likelihood), or one per option with all its tokens masked (`all_at_once`)."""
    queries = []
    mask = tokenizer.mask_token_id
    for i, row in enumerate(rows):
        for j, option in enumerate(row.options):
            ids, start, end = mlm_option_sequence(tokenizer, row.question, option, max_length, row.context)
            if all_at_once:
                queries.append((i, j, ids[:start] + [mask] * (end - start) + ids[end:], list(range(start, end)),
                                ids[start:end]))
                continue
            for position in range(start, end):
                queries.append((i, j, ids[:position] + [mask] + ids[position + 1:], [position], [ids[position]]))
    return queries


def masked_lm_head(model):
    """The base encoder and the head of a *ForMaskedLM model, so the vocabulary projection (a quarter of
    bert-base's FLOPs per token) runs only where a token is masked. None: run the whole model."""
    base = model.base_model
    heads = [module for name, module in model.named_children() if module is not base]
    return (base, heads[0]) if len(heads) == 1 and base is not model else None


def score_masked_lm(scorer: LoadedScorer, rows: list[QARow], batch_size: int, progress: bool,
                    batch_tokens: int = BATCH_TOKENS) -> np.ndarray:
    """Mean log p(option token | question, the rest) over the option's tokens (see the module docstring)."""
    tokenizer, model = scorer.tokenizer, scorer.model
    device = next(model.parameters()).device
    queries = mlm_queries(tokenizer, rows, scorer.max_length, all_at_once=scorer.method == "mlm-masked")
    lengths = [len(q[2]) for q in queries]
    batches = token_budget_batches(lengths, batch_tokens, batch_size * 16)
    split = masked_lm_head(model)
    pad = tokenizer.pad_token_id or 0

    def compute(indices):
        chunk = [queries[k] for k in indices]
        width = max(len(q[2]) for q in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for k, q in enumerate(chunk):
            input_ids[k, : len(q[2])] = torch.tensor(q[2])
            attention[k, : len(q[2])] = 1
        seq = torch.tensor([k for k, q in enumerate(chunk) for _ in q[3]], device=device)
        positions = torch.tensor([p for q in chunk for p in q[3]], device=device)
        targets = torch.tensor([t for q in chunk for t in q[4]], device=device)
        with torch.inference_mode():
            inputs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
            if split is not None:
                base, head = split
                hidden = base(**inputs).last_hidden_state
                logits = head(hidden[seq, positions])
            else:
                logits = model(**inputs).logits[seq, positions]
            token_scores = torch.log_softmax(logits.float(), dim=-1)[torch.arange(len(targets)), targets]
        sums = np.zeros(len(chunk))
        np.add.at(sums, seq.cpu().numpy(), token_scores.cpu().numpy().astype(np.float64))
        return sums

    tokens = [max(lengths[k] for k in b) * len(b) for b in batches]
    label = f"scoring {scorer.path} ({scorer.name})"
    scorer.passes = len(queries)
    results = run_batches(batches, compute, label, progress, len(queries), tokens)
    width = max(len(r.options) for r in rows)
    totals = np.zeros((len(rows), width))
    counts = np.zeros((len(rows), width))
    for b, indices in enumerate(batches):
        for k, value in zip(indices, results[b]):
            i, j = queries[k][0], queries[k][1]
            totals[i, j] += value
            counts[i, j] += len(queries[k][3])
    scores = totals / np.maximum(counts, 1)
    scores[counts == 0] = -np.inf  # rows with fewer options than the widest
    return scores


# ----------------------------------------------------------------------------------------------
# The registry: adding a scorer means one entry here and its tests.


@dataclass(frozen=True)
class Scorer:
    name: str
    loads_as: str | None  # the formulation the model is loaded as (None: the checkpoint's own trained head)
    score: object  # (LoadedScorer, rows, batch_size, progress, batch_tokens) → (n, options) scores
    help: str


SCORERS: Registry[Scorer] = Registry("scorer", "--scorer")
SCORERS.register(Scorer("head", None, score_with_head, "the fine-tuned model's own multiple-choice head"))
SCORERS.register(Scorer("mlm-pll", "mlm", score_masked_lm, "masked-LM pseudo-log-likelihood of each option "
                                                             "(zero-shot)"))
SCORERS.register(Scorer("mlm-masked", "mlm", score_masked_lm, "masked-LM, all option tokens masked at once "
                                                                "(cheaper)"))
SCORER_CHOICES = ("auto", *SCORERS)

"""Option scores for multiple-choice items, one implementation per scorer, shared by evaluate and predict.

head: a fine-tuned per_choice or joint model scores options with its trained head; the inputs are
      built by the training preprocessing and collators, so train and test see the same sequences. A
      joint model sees each question in `joint_eval_rotations` rotated option orders, merged into one
      log-probability per option.
mlm:  a masked-LM (the original pretrained model, or a --task mlm adaptation) scores each option
      zero-shot by its length-normalised pseudo-log-likelihood given the question: every option
      token is masked in turn and the log-probability of the true token is averaged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import QARow
from .errors import UserError
from .modeling import ModelLoadError, formulation_of, load_config, load_model, load_tokenizer
from .preprocessing import JOINT_EVAL_ROTATIONS, MLM_ANSWER_PREFIX, encode, make_collator, merge_rotations

logger = logging.getLogger(__name__)

SCORERS = ("auto", "head", "mlm")


def pick_device(use_cpu: bool = False) -> torch.device:
    """Like training: CUDA when present unless told to use the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")


@dataclass
class LoadedScorer:
    """A model ready to score options; `name` says which scorer produced the numbers."""

    path: str
    model: torch.nn.Module
    tokenizer: object
    formulation: str  # per_choice / joint / mlm
    name: str  # "head (per_choice)", "head (joint)", "head (joint, 4 rotations)" or "mlm-pll"
    max_length: int
    joint_eval_rotations: int = 1

    def score(self, rows: list[QARow], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """(n, options) scores; higher is better. Deterministic for the same model and items."""
        if self.formulation == "mlm":
            return score_masked_lm(self, rows, batch_size, progress)
        return score_with_head(self, rows, batch_size, progress)


def load_scorer(path: str, scorer: str = "auto", use_cpu: bool = False, max_length: int = 512,
                trust_remote_code: bool = False, revision: str = "main",
                joint_eval_rotations: int = JOINT_EVAL_ROTATIONS) -> LoadedScorer:
    """Choose the scorer from the checkpoint's config (or `scorer`), load the model once, in eval mode."""
    if joint_eval_rotations < 1:
        raise UserError(f"--joint_eval_rotations {joint_eval_rotations}: need 1 or more")
    config = load_config(path, revision, None, trust_remote_code)
    formulation = formulation_of(config)
    if scorer == "mlm":
        formulation = "mlm"
    elif scorer == "head" and formulation not in ("per_choice", "joint"):
        raise UserError(f"{path}: has no trained multiple-choice head (architectures: "
                        f"{getattr(config, 'architectures', None)}); score it with --scorer mlm")
    if formulation is None:
        raise UserError(f"{path}: cannot score multiple choice: it has neither a multiple-choice head nor a "
                        f"masked-LM head (architectures: {getattr(config, 'architectures', None)})")
    tokenizer = load_tokenizer(path, revision, None, trust_remote_code)
    try:
        model = load_model(path, formulation, revision, None, trust_remote_code)
    except ModelLoadError:
        if formulation != "mlm":
            raise
        raise UserError(f"{path}: has no masked-LM head to score with") from None
    device = pick_device(use_cpu)
    model.to(device).eval()
    limit = min(max_length, tokenizer.model_max_length, getattr(config, "max_position_embeddings", max_length))
    rotations = joint_eval_rotations if formulation == "joint" else 1
    name = "mlm-pll" if formulation == "mlm" else f"head ({formulation})"
    if rotations > 1:
        name = f"head (joint, {min(rotations, config.num_labels)} rotations)"
    return LoadedScorer(path, model, tokenizer, formulation, name, limit, rotations)


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


def score_with_head(scorer: LoadedScorer, rows: list[QARow], batch_size: int, progress: bool) -> np.ndarray:
    """Logits of the trained head, on the training preprocessing, length-sorted to keep padding small."""
    dataset = encode(rows, scorer.tokenizer, scorer.formulation, scorer.max_length, sort_by_length=True,
                     progress=progress and len(rows) >= 1000)
    index_of = {row_id: i for i, row_id in enumerate(r.id for r in rows)}
    order = [index_of[row_id] for row_id in dataset["id"]]
    collator = make_collator(scorer.formulation, scorer.tokenizer, train=False,
                             joint_eval_rotations=scorer.joint_eval_rotations)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    device = next(scorer.model.parameters()).device
    if len({len(r.options) for r in rows}) > 1:
        raise UserError("a trained head scores questions with the same number of options together; "
                        "split the input by option count")
    scores = np.zeros((len(rows), len(rows[0].options)), dtype=np.float64)
    position = 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"scoring {scorer.path}", disable=not progress, leave=False):
            logits = scorer.model(**_to_device(batch, device)).logits
            logits = merge_rotations(logits, scorer.joint_eval_rotations).float().cpu().numpy()
            for row_logits in logits:
                scores[order[position]] = row_logits
                position += 1
    return scores


def mlm_option_sequences(tokenizer, question: str, option: str, max_length: int) -> tuple[list[int], int, int]:
    """`[CLS] question 答案： option [SEP]` (the --task mlm text) and the option's token span."""
    q = tokenizer(question + MLM_ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    o = tokenizer(option, add_special_tokens=False)["input_ids"][: max_length - 3] or [tokenizer.unk_token_id]
    q = q[-(max_length - 2 - len(o)):] if len(q) > max_length - 2 - len(o) else q  # keep the words next to the answer
    ids = [tokenizer.cls_token_id, *q, *o, tokenizer.sep_token_id]
    start = 1 + len(q)
    return ids, start, start + len(o)


def score_masked_lm(scorer: LoadedScorer, rows: list[QARow], batch_size: int, progress: bool) -> np.ndarray:
    """Mean log p(option token | question, rest of option) with each option token masked in turn."""
    tokenizer, model = scorer.tokenizer, scorer.model
    device = next(model.parameters()).device
    # One masked copy per option token: (row, option, input ids, masked position, true token).
    queries = []
    for i, row in enumerate(rows):
        for j, option in enumerate(row.options):
            ids, start, end = mlm_option_sequences(tokenizer, row.question, option, scorer.max_length)
            for position in range(start, end):
                masked = list(ids)
                masked[position] = tokenizer.mask_token_id
                queries.append((i, j, masked, position, ids[position]))
    queries.sort(key=lambda q: len(q[2]))  # length-sorted batches carry little padding
    width = max(len(r.options) for r in rows)
    totals = np.zeros((len(rows), width))
    counts = np.zeros((len(rows), width))
    pad = tokenizer.pad_token_id or 0
    with torch.inference_mode():
        for start in tqdm(range(0, len(queries), batch_size * 4), desc=f"scoring {scorer.path} (mlm)",
                          disable=not progress, leave=False):
            chunk = queries[start:start + batch_size * 4]
            width = max(len(q[2]) for q in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for k, q in enumerate(chunk):
                input_ids[k, : len(q[2])] = torch.tensor(q[2])
                attention[k, : len(q[2])] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            rows_idx = torch.arange(len(chunk), device=device)
            positions = torch.tensor([q[3] for q in chunk], device=device)
            targets = torch.tensor([q[4] for q in chunk], device=device)
            log_probs = torch.log_softmax(logits[rows_idx, positions].float(), dim=-1)
            token_scores = log_probs[rows_idx, targets].cpu().numpy()
            for q, value in zip(chunk, token_scores):
                totals[q[0], q[1]] += value
                counts[q[0], q[1]] += 1
    scores = totals / np.maximum(counts, 1)
    scores[counts == 0] = -np.inf  # rows with fewer options than the widest
    return scores

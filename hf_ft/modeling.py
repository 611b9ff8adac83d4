"""Loading tokenizers and models for each formulation, and telling a checkpoint's formulation from its config.

per_choice: AutoModelForMultipleChoice (4 sequences, one score each)
joint:      AutoModelForSequenceClassification with 4 labels (one sequence holding all 4 options)
mlm:        AutoModelForMaskedLM (domain adaptation; scored zero-shot by pseudo-log-likelihood)
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from .data import LETTERS
from .errors import UserError

logger = logging.getLogger(__name__)

FORMULATIONS = ("per_choice", "joint", "mlm")
MODEL_CLASSES = {
    "per_choice": AutoModelForMultipleChoice,
    "joint": AutoModelForSequenceClassification,
    "mlm": AutoModelForMaskedLM,
}


class ModelLoadError(UserError):
    pass


def check_model_path(name_or_path: str) -> None:
    """A path-looking name that does not exist is a typo, not a hub id: say so instead of querying the hub."""
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or Path(name_or_path).exists()
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise ModelLoadError(f"{name_or_path}: model path does not exist")


def load_config(name_or_path: str, revision: str = "main", cache_dir: str | None = None,
                trust_remote_code: bool = False):
    check_model_path(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                                          trust_remote_code=trust_remote_code)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{name_or_path}: cannot load the model config: {first}") from None


def load_tokenizer(name_or_path: str, revision: str = "main", cache_dir: str | None = None,
                   trust_remote_code: bool = False):
    check_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                                             trust_remote_code=trust_remote_code)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{name_or_path}: cannot load the tokenizer: {first}") from None


def formulation_of(config) -> str | None:
    """What a checkpoint was trained as, from its config (None: no head that can score multiple choice)."""
    recorded = getattr(config, "hf_ft_formulation", None)
    if recorded in FORMULATIONS:
        return recorded
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForMultipleChoice"):
            return "per_choice"
        if arch.endswith("ForSequenceClassification") and getattr(config, "num_labels", 0) == 4:
            return "joint"
        if arch.endswith(("ForMaskedLM", "ForPreTraining")):
            return "mlm"
    return None


def apply_config_overrides(config, overrides: str | None) -> None:
    """`key=value,key=value` onto `config` (PretrainedConfig.update_from_string), with errors that name the key."""
    if not overrides:
        return
    for item in overrides.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ModelLoadError(f"--config_overrides '{overrides}': '{item}' is not key=value")
        try:
            config.update_from_string(f"{key.strip()}={value.strip()}")
        except (ValueError, TypeError) as e:
            raise ModelLoadError(f"--config_overrides '{overrides}': {key.strip()}: {e}") from None


def load_model(name_or_path: str, formulation: str, revision: str = "main", cache_dir: str | None = None,
               trust_remote_code: bool = False, config_overrides: str | None = None, **kwargs):
    """Load `name_or_path` with the head `formulation` needs (a fresh head when it has none yet)."""
    config = load_config(name_or_path, revision, cache_dir, trust_remote_code)
    apply_config_overrides(config, config_overrides)
    if formulation == "joint":
        config.num_labels = 4
        config.id2label = dict(enumerate(LETTERS))
        config.label2id = {letter: i for i, letter in enumerate(LETTERS)}
    config.hf_ft_formulation = formulation
    try:
        model = MODEL_CLASSES[formulation].from_pretrained(
            name_or_path, config=config, revision=revision, cache_dir=cache_dir,
            trust_remote_code=trust_remote_code, **kwargs)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{name_or_path}: cannot load as {formulation} model: {first}") from None
    return model

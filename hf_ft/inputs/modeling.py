"""Loading tokenizers and models for each formulation, and telling a checkpoint's formulation from its config.

per_choice: AutoModelForMultipleChoice (4 sequences, one score each)
joint:      AutoModelForSequenceClassification with 4 labels (one sequence holding all 4 options)
mlm:        AutoModelForMaskedLM (domain adaptation; scored zero-shot by pseudo-log-likelihood)
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from ..core.errors import UserError, hub_problem
from ..data.rows import QARow
from .formulations import FORMULATIONS, get_formulation

logger = logging.getLogger(__name__)



# Models the hub serves under an organisation since 2024 and still redirects from their old ids. A mirror
# (or olah serving local repositories) has no redirect, so hf_ft asks for the organisation form itself.
HUB_ALIASES = {
    "bert-base-chinese": "google-bert/bert-base-chinese",
    "bert-base-multilingual-cased": "google-bert/bert-base-multilingual-cased",
    "bert-base-multilingual-uncased": "google-bert/bert-base-multilingual-uncased",
    "xlm-roberta-base": "FacebookAI/xlm-roberta-base",
    "xlm-roberta-large": "FacebookAI/xlm-roberta-large",
}


class ModelLoadError(UserError):
    pass


# transformers 5 loads models with hub kernels on unless USE_HUB_KERNELS=NO: on CUDA, `model.train()` and
# `model.eval()` then fetch compiled code from the hub and run it (and die offline). hf_ft runs no downloaded code
# unless asked, so every load passes use_kernels explicitly: False unless --use_kernels.
KERNELS_FLAG_HELP = ("Let transformers replace layers with hub kernels: compiled code downloaded from the hub "
                     "(kernels-community/*) and run on the GPU. Needs the network, or a hub cache that already holds "
                     "them. Off unless you turn it on, whatever USE_HUB_KERNELS says.")


def kernels_problem(use_kernels: bool, use_cpu: bool = False) -> str | None:
    """Why --use_kernels cannot work here (None: it can, or it was not asked for), said before any work."""
    if not use_kernels:
        return None
    if use_cpu:
        return "--use_kernels with --use_cpu: hub kernels are GPU code; drop one of the two"
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE and not any(Path(hub.HF_HUB_CACHE).glob("models--kernels-community--*")):
        return (f"--use_kernels: the hub is offline (HF_HUB_OFFLINE=1) and its cache {hub.HF_HUB_CACHE} holds no "
                "kernels-community kernel; run once online to fetch them, or drop --use_kernels")
    return None


def hub_id(name_or_path: str) -> str:
    """`bert-base-chinese` → `google-bert/bert-base-chinese` unless a local folder of that name exists."""
    if name_or_path in HUB_ALIASES and not Path(name_or_path).exists():
        _say_alias(name_or_path)
        return HUB_ALIASES[name_or_path]
    return name_or_path


@functools.lru_cache(maxsize=None)
def _say_alias(name: str) -> None:
    logger.info("%s is %s on the hub", name, HUB_ALIASES[name])


def check_model_path(name_or_path: str, flag: str | None = None) -> None:
    """A path-looking name that does not exist is a typo, not a hub id: say so instead of querying the hub; a
    file is not a model folder. An hf_ft run folder must be finished: a half-written model is never loaded.
    `flag` names where the path came from (--tokenizer_name is not --model_name_or_path)."""
    where = f"{flag} {name_or_path}" if flag else name_or_path
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or Path(name_or_path).exists()
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise ModelLoadError(f"{where}: no such folder (and, being a path, not a hub id)")
    if Path(name_or_path).is_file():
        raise ModelLoadError(f"{where}: is a file; a model or tokenizer is a folder (config.json, weights, "
                             "tokenizer files) or a hub id")
    if Path(name_or_path).is_dir():
        from ..core.run_dir import require_finished, several_runs_problem

        problem = several_runs_problem(
            name_or_path, "give it to --finetuned (every seed is scored), or name one seed folder")
        if problem:
            raise ModelLoadError(problem)
        require_finished(name_or_path)


def _load_problem(error: Exception) -> str:
    """One clause for why from_pretrained failed: the hub's answer, or the library's first line."""
    try:
        return hub_problem(error)
    except Exception:  # noqa: BLE001 - not a hub error: the library's own message
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def load_config(name_or_path: str, revision: str = "main", cache_dir: str | None = None,
                trust_remote_code: bool = False, flag: str | None = None):
    check_model_path(name_or_path, flag)
    try:
        return AutoConfig.from_pretrained(hub_id(name_or_path), revision=revision, cache_dir=cache_dir,
                                          trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - every way a config can fail to load is one line
        raise ModelLoadError(f"{name_or_path}: cannot load the model config: {_load_problem(e)}") from None


def load_tokenizer(name_or_path: str, revision: str = "main", cache_dir: str | None = None,
                   trust_remote_code: bool = False, flag: str | None = None):
    check_model_path(name_or_path, flag)
    try:
        return AutoTokenizer.from_pretrained(hub_id(name_or_path), revision=revision, cache_dir=cache_dir,
                                             trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"{name_or_path}: cannot load the tokenizer: {_load_problem(e)}") from None


def unknown_rate(tokenizer, rows: list[QARow], sample: int = 2000) -> tuple[float, int]:
    """Share of the data's tokens the tokenizer maps to its unknown token, on up to `sample` rows."""
    unk = tokenizer.unk_token_id
    if unk is None or not rows:
        return 0.0, 0
    step = max(1, len(rows) // sample)
    texts = [text for row in rows[::step] for text in (row.question, *row.options) if text]
    ids = [i for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in encoded]
    return (sum(i == unk for i in ids) / len(ids) if ids else 0.0), len(ids)


def check_vocabulary(tokenizer, rows: list[QARow], max_unk_rate: float, name: str | None = None) -> float:
    """Refuse a tokenizer that cannot read the data (a model folder without its own vocabulary, say)."""
    rate, tokens = unknown_rate(tokenizer, rows)
    if rate > max_unk_rate:
        raise ModelLoadError(
            f"{name or tokenizer.name_or_path}: the tokenizer maps {rate:.0%} of the data's {tokens} tokens to "
            f"{tokenizer.unk_token} (limit {max_unk_rate:.0%}): does the model folder have its own tokenizer files "
            "(vocab.txt / tokenizer.json)? Use --tokenizer_name, or --max_unk_rate to accept it")
    return rate


def untrained_head(model) -> bool:
    """A classification head straight from initialisation: its bias is exactly zero, which no optimizer
    step leaves it at. (A head without bias is taken as trained.)"""
    head = getattr(model, "classifier", None)
    bias = getattr(head, "bias", None) if head is not None else None
    return bias is not None and bool((bias == 0).all())


def formulation_of(config) -> str | None:
    """What a checkpoint was trained as, from its config (None: no head that can score multiple choice)."""
    recorded = getattr(config, "hf_ft_formulation", None)
    if recorded in FORMULATIONS:
        return recorded
    return next((f.name for f in FORMULATIONS.values() if f.recognises(config)), None)


def _override_items(overrides: str) -> dict:
    """`key=value,key=value` (values as text) or a JSON object (values typed)."""
    text = overrides.strip()
    if text.startswith("{"):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"--config_overrides: not valid JSON ({e.msg})") from None
        if not isinstance(items, dict):
            raise ModelLoadError("--config_overrides: a JSON object of config keys and values")
        return items
    items = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ModelLoadError(f"--config_overrides '{overrides}': '{item}' is not key=value")
        items[key.strip()] = value.strip()
    return items


def apply_config_overrides(config, overrides: str | None) -> None:
    """`key=value,key=value` or `{"key": value}` onto keys `config` already has. A key whose value is None
    (BERT's `classifier_dropout`) takes the value read as JSON (0.2, 3, true); other keys keep their type
    (PretrainedConfig.update_from_string). Errors name the key."""
    if not overrides:
        return
    from ..core.errors import did_you_mean

    for key, value in _override_items(overrides).items():
        if not hasattr(config, key):
            raise ModelLoadError(f"--config_overrides: {key}: not a key of this model's config"
                                 f"{did_you_mean(key, sorted(config.to_dict()))}")
        current = getattr(config, key)
        if current is None or not isinstance(value, str):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass  # text stays text
            if current is not None and not isinstance(value, type(current)) and \
                    not (isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool)):
                raise ModelLoadError(f"--config_overrides: {key}: {value!r} is not a {type(current).__name__} "
                                     f"like its current value {current!r}")
            setattr(config, key, float(value) if isinstance(current, float) else value)
            continue
        try:
            config.update_from_string(f"{key}={value}")
        except (ValueError, TypeError) as e:
            raise ModelLoadError(f"--config_overrides '{overrides}': {key}: {e}") from None


def load_model(name_or_path: str, formulation: str, revision: str = "main", cache_dir: str | None = None,
               trust_remote_code: bool = False, config_overrides: str | None = None, use_kernels: bool = False,
               config=None, **kwargs):
    """Load `name_or_path` with the head `formulation` needs (a fresh head when it has none yet), without hub
    kernels unless `use_kernels`; `config`: its config, when the caller has read it already."""
    config = config if config is not None else load_config(name_or_path, revision, cache_dir, trust_remote_code)
    apply_config_overrides(config, config_overrides)
    get_formulation(formulation).configure(config)
    try:
        model = get_formulation(formulation).auto_class.from_pretrained(
            hub_id(name_or_path), config=config, revision=revision, cache_dir=cache_dir,
            trust_remote_code=trust_remote_code, use_kernels=use_kernels, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"{name_or_path}: cannot load as {formulation} model: {_load_problem(e)}") from None
    return model

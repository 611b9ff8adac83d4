"""Where hf_ft keeps what it can rebuild (parsed CSV tables, tokenized sets, BM25 indexes): the Hugging Face
cache, or, when that cannot be written (a read-only or broken HF_HOME), a temporary folder for this process.
A cache that cannot be written makes a run slower to repeat, never a run that cannot start."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger("hf_ft")


def hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def datasets_cache() -> Path:
    return Path(os.environ.get("HF_DATASETS_CACHE") or hf_home() / "datasets")


def usable(path: Path) -> Path:
    """`path`, created, if a file can be written in it; else a temporary folder of this process (removed at exit),
    said once per path."""
    return _usable(str(path))


@functools.lru_cache(maxsize=None)
def _usable(path: str) -> Path:
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hf_ft-write-test-"):
            pass
        return folder
    except OSError as e:
        scratch = Path(tempfile.mkdtemp(prefix="hf_ft-cache-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        logger.warning("the cache %s cannot be written (%s): using %s for this run; nothing is kept for the next",
                       folder, e.strerror or type(e).__name__, scratch)
        return scratch

"""More questions: other Chinese exam sets as extra training data.

    specs         `--extra_data` strings → SourceSpec (what to read, how), refused before work when they
                  cannot make sense, or name a source known to contain TMMLU+
    adapters      the known layouts (C-Eval, CMMLU, C3, CLUE c3, AGIEval, a column map) → QARows
    reading       a hub dataset at one resolved commit (its parquet configs, or CMMLU's zip) or local files
    script        OpenCC s2twp, on for sources written in Simplified script
    contamination every extra row against everything the run evaluates on, across scripts
    mixing        the steps above in order, with caps and weights, and the report the run records

Extra rows only ever join the training split: validation stays the target task and the test split is untouched.
"""

from .mixing import ExtraData, load_extra
from .specs import SourceSpec, parse_specs

__all__ = ["ExtraData", "SourceSpec", "load_extra", "parse_specs"]

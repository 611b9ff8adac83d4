"""hf_ft benchmarks: run each as `python -m benchmarks.<name>` from the repository root."""

import hf_ft  # noqa: F401  (first, before torch: the benchmarks run under hf_ft's OpenMP wait policy, as users do)

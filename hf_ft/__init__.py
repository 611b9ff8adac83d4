"""hf_ft: fine-tune Chinese BERT-style encoders on TMMLU+ with transformers.Trainer."""

import os

__version__ = "0.1.0"

# OpenMP threads that wait at a barrier sleep at once instead of spinning. libgomp reads this when torch loads
# it, so it is set here, before any hf_ft module imports torch (every hf_ft entry point imports hf_ft first).
# Measured on this 2-core CPU (benchmarks/contention.py): per-choice training 8-11% faster quiet, and 57-60%
# of its quiet speed beside one competing process instead of 50-53%. OMP_WAIT_POLICY=ACTIVE spins; set
# empty, it is removed, and libgomp keeps its own default (spin a while, then sleep).
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
elif not os.environ["OMP_WAIT_POLICY"].strip():
    del os.environ["OMP_WAIT_POLICY"]

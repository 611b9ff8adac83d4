"""CPU threads under load: hf_ft's OpenMP wait policy is in force before torch starts, and the contention
benchmark's meter sees a real competitor."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

SPIN = "while True:\n    sum(range(10000))\n"


@pytest.fixture
def competitor():
    process = subprocess.Popen([sys.executable, "-c", SPIN])
    time.sleep(0.3)  # started and spinning
    yield process
    process.kill()
    process.wait()


def test_contention_benchmark_meter_sees_a_competing_process_and_not_its_own_work(competitor):
    """The free-core candidate of benchmarks/contention.py must see the competitor it is measured against."""
    from benchmarks.contention import CoreMeter

    meter = CoreMeter()
    end = time.monotonic() + 1.5
    while time.monotonic() < end:  # this process busy too: its own CPU time must not count as another's
        sum(range(10000))
    others = meter.others()
    assert others >= 0.6, others  # the spinner held about one core (more if another test runs beside this one)


def test_entry_points_set_the_passive_wait_policy_before_torch_loads_openmp(tmp_path):
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: hf_ft must set it before any import of torch,
    in run_qa.py as in `python -m hf_ft.*`, and leave a value the user chose alone."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    probe = ("import os, sys; sys.argv = ['run_qa.py', '--help']; import runpy\n"
             "import builtins\nreal = builtins.__import__\nseen = {}\n"
             "def spy(name, *a, **k):\n"
             "    if name == 'torch' and 'torch' not in sys.modules: seen['policy'] = os.environ.get('OMP_WAIT_POLICY')\n"
             "    return real(name, *a, **k)\n"
             "builtins.__import__ = spy\n"
             "try:\n    runpy.run_path('run_qa.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('policy when torch loaded:', seen.get('policy'))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert "policy when torch loaded: PASSIVE" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    mine = subprocess.run([sys.executable, "-c", "import os, hf_ft; print(os.environ['OMP_WAIT_POLICY'])"],
                          cwd=root, env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True)
    assert mine.stdout.strip() == "ACTIVE"
    default = subprocess.run([sys.executable, "-c", "import os, hf_ft; print(os.environ.get('OMP_WAIT_POLICY'))"],
                             cwd=root, env={**env, "OMP_WAIT_POLICY": ""}, capture_output=True, text=True)
    assert default.stdout.strip() == "None"  # empty: removed, so libgomp keeps its own default, no warning

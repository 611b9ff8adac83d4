"""How fast a run trains, and where a step's time goes.

`ThroughputCallback` (every run, any device): questions/s, real tokens/s and MFU over the time spent in training
steps (evaluation and checkpoints left out), logged at each logging step and added to train_results.json. MFU
counts 6 × non-embedding parameters × real (unpadded) tokens per question against a matmul peak measured on the
same device in the training dtype.

`StepProfileCallback` (`--profile_steps N`): N steps after a warm-up, each phase closed by a device sync, under
torch.profiler: data wait, forward+backward, optimizer and the rest, the device's busy time, kernel launches and
host–device syncs per step, the costliest operators; and for every step of the run the batch shape and the host
time between steps, so that a cost paid per new shape shows. Written to step_profile.json.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

logger = logging.getLogger("hf_ft")

PROFILE_FILE = "step_profile.json"
PROFILE_WARMUP_STEPS = 5  # kernels picked, allocator warm, compiled graphs built before the profiled window


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=None)
def matmul_peak_flops(device: str, dtype: torch.dtype, n: int | None = None, repeats: int | None = None,
                      trials: int = 3) -> float:
    """Achieved dense matmul FLOP/s on `device` in `dtype`, the best of `trials` (cached per process): the ceiling
    MFU is measured against. A run's own measurement is short (8192² × 5 on a GPU, 1024² × 4 on a CPU); the
    benchmarks ask for longer trials, since one short trial can land on a slow moment. Random operands (zeros
    run faster on some GPUs)."""
    cuda = torch.device(device).type == "cuda"
    n = n or (8192 if cuda else 1024)
    repeats = repeats or (5 if cuda else 4)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    a @ b
    best = 0.0
    for _ in range(trials):
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start))
    return best


def use_cudnn_attention(enabled: bool) -> None:
    """Whether SDPA may pick cuDNN's attention kernel on CUDA (process-wide). cuDNN builds an execution plan for
    every new (batch, length) shape it sees, which length-varying batches pay again and again."""
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(enabled)


def non_embedding_parameters(model) -> int:
    """Counted in full also when DeepSpeed ZeRO-3 has partitioned them (`ds_numel`)."""
    return sum(getattr(p, "ds_numel", p.numel()) for name, p in model.named_parameters() if "embeddings" not in name)


class ThroughputCallback(TrainerCallback):
    """Questions/s, real tokens/s and MFU of the training steps. A step's time runs from the end of whatever came
    before it (the previous step, a log, an evaluation, a checkpoint) to its own end, so evaluation and saving
    are not counted; the host clock is read without a device sync (the queue is at most a step deep, so the sum
    over many steps is right)."""

    def __init__(self, questions_per_step: int, real_tokens_per_question: float, flops_per_token: float,
                 dtype: torch.dtype):
        self.questions_per_step = questions_per_step
        self.tokens_per_question = real_tokens_per_question
        self.flops_per_token = flops_per_token
        self.dtype = dtype
        self.seconds = 0.0
        self.steps = 0
        self._mark = None

    def _now(self, *_, **__):
        self._mark = time.perf_counter()

    on_train_begin = on_evaluate = on_save = on_predict = _now

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._mark is not None:
            self.seconds += now - self._mark
            self.steps += 1
        self._mark = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        summary = self.summary(args.device, peak=False)
        if summary and "loss" in (logs or {}):
            logger.info("step %d: %.1f questions/s, %.0f real tokens/s", state.global_step,
                        summary["train_questions_per_second"], summary["train_real_tokens_per_second"])
        self._mark = time.perf_counter()

    def summary(self, device, peak: bool = True) -> dict:
        if not self.steps or self.seconds <= 0:
            return {}
        questions = self.questions_per_step * self.steps / self.seconds
        out = {"train_questions_per_second": round(questions, 2),
               "train_real_tokens_per_second": round(questions * self.tokens_per_question, 1),
               "train_step_seconds": round(self.seconds / self.steps, 5)}
        if peak:
            ceiling = matmul_peak_flops(str(device), self.dtype)
            out["train_mfu"] = round(questions * self.tokens_per_question * self.flops_per_token / ceiling, 4)
            out["matmul_peak_tflops"] = round(ceiling / 1e12, 2)
            out["matmul_peak_dtype"] = str(self.dtype).removeprefix("torch.")
        return out


# Host reads of device values: each one waits for the device to catch up (a sync on CUDA).
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
              "cuStreamSynchronize", "cuCtxSynchronize")
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx",
                "cudaGraphLaunch", "cudaLaunchCooperativeKernel")


class StepProfileCallback(TrainerCallback):
    """`--profile_steps N`: see the module docstring. The synced phases cost the overlap of host and device, so
    the profiled steps run slower than the others: the split says where the time goes, not how fast."""

    def __init__(self, output_dir: str | Path, steps: int, warmup: int = PROFILE_WARMUP_STEPS):
        self.path = Path(output_dir) / PROFILE_FILE
        self.steps = steps
        self.warmup = warmup
        self.profiler = None
        self.phases: list[dict] = []
        self.trace: list[dict] = []  # every step: host time since the previous step's end, batch shape
        self._shape = None
        self._hook = None
        self._last_end = None
        self._t = {}
        self._device = None
        self._running = False

    def _active(self, state) -> bool:
        return self.profiler is not None and self.warmup < state.global_step + 1 <= self.warmup + self.steps

    def _mark(self, name, args):
        sync(args.device)
        self._t[name] = time.perf_counter()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._device = args.device

        def remember_shape(module, positional, named):
            ids = named.get("input_ids", positional[0] if positional else None)
            if isinstance(ids, torch.Tensor):
                self._shape = list(ids.shape)

        if model is not None:
            self._hook = model.register_forward_pre_hook(remember_shape, with_kwargs=True)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.device(args.device).type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=activities)
        self._last_end = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self._active(state):
            if state.global_step == self.warmup:
                sync(args.device)
                self.profiler.start()
                self._running = True
            self._t = {"before": self._last_end}
            self._mark("begin", args)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._active(state):
            self._mark("forward_backward", args)

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._active(state):
            self._mark("optimizer", args)

    def on_step_end(self, args, state, control, **kwargs):
        active = self.profiler is not None and self.warmup < state.global_step <= self.warmup + self.steps
        if active:
            self._mark("end", args)
            t = self._t
            self.phases.append({
                "data_wait_ms": 1e3 * (t["begin"] - t["before"]),
                "forward_backward_ms": 1e3 * (t["forward_backward"] - t["begin"]),
                "optimizer_ms": 1e3 * (t["optimizer"] - t["forward_backward"]),
                "rest_ms": 1e3 * (t["end"] - t["optimizer"]),
                "step_ms": 1e3 * (t["end"] - t["before"])})
            if state.global_step == self.warmup + self.steps:
                self.profiler.stop()
                self._running = False
        now = time.perf_counter()
        self.trace.append({"step": state.global_step, "ms": round(1e3 * (now - self._last_end), 3),
                           "shape": self._shape, "profiled": active})
        self._last_end = time.perf_counter()

    def _after_other_work(self, *_, **__):
        self._last_end = time.perf_counter()  # evaluation, logging and saving are not a step's time

    on_log = on_evaluate = on_save = _after_other_work

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
        if self._running:  # training ended inside the window: the steps so far are the profile
            self.profiler.stop()
            self._running = False
        if state.is_world_process_zero:
            from ..core.run_dir import write_json

            write_json(self.path, self.report())
            logger.info("step profile of %d steps: %s", len(self.phases), self.path)

    def report(self) -> dict:
        """The profiled steps' medians, the profiler's counts per step, and the whole run's trace."""
        n = len(self.phases)
        out = {"steps_profiled": n, "warmup_steps": self.warmup, "device": str(self._device)}
        if n:
            out["phase_ms_median"] = {k: round(statistics.median(p[k] for p in self.phases), 3)
                                      for k in self.phases[0]}
            out.update(self._profiler_counts(n))
        shapes, seen, new_ms, seen_ms = set(), set(), [], []
        for row in self.trace:
            key = tuple(row["shape"] or ())
            row["new_shape"] = key not in seen
            seen.add(key)
            shapes.add(key)
            if not row["profiled"] and row["step"] > 1:
                (new_ms if row["new_shape"] else seen_ms).append(row["ms"])
        out["distinct_batch_shapes"] = len(shapes)
        steady = new_ms + seen_ms  # every step but the first (start-up) and the profiled ones
        out["unprofiled_step_ms_mean"] = round(statistics.fmean(steady), 3) if steady else None
        out["unprofiled_step_ms_median"] = {
            "new_shape": round(statistics.median(new_ms), 3) if new_ms else None, "new_shape_steps": len(new_ms),
            "seen_shape": round(statistics.median(seen_ms), 3) if seen_ms else None,
            "seen_shape_steps": len(seen_ms)}
        out["trace"] = self.trace
        return out

    def _profiler_counts(self, n: int) -> dict:
        try:
            events = self.profiler.key_averages()
        except (AssertionError, RuntimeError):  # the profiler never ran
            return {}
        ours = 4 * n  # the phase syncs this callback adds
        count = lambda names: sum(e.count for e in events if e.key in names)  # noqa: E731
        device_us = sum(getattr(e, "self_device_time_total", 0) for e in events if e.device_type.name == "CUDA")
        syncs = count(SYNC_CALLS) - (ours if torch.device(self._device).type == "cuda" else 0)
        top_device = sorted((e for e in events if getattr(e, "self_device_time_total", 0) > 0),
                            key=lambda e: -e.self_device_time_total)[:12]
        top_host = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
        step_ms = statistics.median(p["step_ms"] for p in self.phases)
        busy = device_us / 1e3 / n
        return {
            "kernel_launches_per_step": round(count(LAUNCH_CALLS) / n, 1),
            "device_syncs_per_step": round(max(0, syncs) / n, 2),
            "host_reads_per_step": round(count(("aten::_local_scalar_dense",)) / n, 2),  # .item(), bool(t), ...
            "device_busy_ms_per_step": round(busy, 3),
            "host_gap_ms_per_step": round(max(0.0, step_ms - busy), 3) if busy else None,
            "top_device_ops": [{"op": e.key[:120], "calls_per_step": round(e.count / n, 2),
                                "ms_per_step": round(e.self_device_time_total / 1e3 / n, 3)} for e in top_device],
            "top_host_ops": [{"op": e.key[:120], "calls_per_step": round(e.count / n, 2),
                              "ms_per_step": round(e.self_cpu_time_total / 1e3 / n, 3)} for e in top_host],
        }

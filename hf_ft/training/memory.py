"""Peak memory of a training run, estimated before the first step, so a run that cannot fit stops in one
line instead of being killed by the kernel hours in.

Per process: what the process holds now (libraries, the loaded weights, the tokenized data), plus the
gradients and the AdamW states (per ZeRO stage and offload), plus the larger of the activations of the
largest batch the data will produce (batch × choices × its longest length, attention included) and the
evaluation batch. Activations follow the per-layer count of Korthikanti et al. (2022, "Reducing activation
recomputation") in fp32 with attention probabilities materialised (BERT's attention dropout keeps
PyTorch's CPU attention on the math path), plus BACKWARD_LAYERS layers' worth for the backward pass, which
measured runs calibrate (`python -m benchmarks.memory`; docs/benchmarks.md, "Memory before the run").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

logger = logging.getLogger("hf_ft.training.memory")

GB = 1024**3
STOP_ABOVE = 0.90  # of the memory this run can have
ALLOCATOR_OVERHEAD = 1.0  # measured / counted activation bytes, beyond BACKWARD_LAYERS (calibration runs)
# While a layer's backward runs, the gradients of its saved tensors and the allocator's freed-but-held blocks
# come to about two more layers' worth: measured on the mid model (4 layers: peak RSS 1.5x the counted
# layers), it predicts bert-base (12 layers) too (docs/benchmarks.md).
BACKWARD_LAYERS = 2
# Without the attention probabilities (SDPA's fused CUDA kernels) the count falls short of what a GPU holds: on an
# H200 at bert-base in bf16, 32 × 4 × 511 tokens measured 27.6 GB against 24.8 counted, 128 × 4 × 511 105.8 against
# 92.5 (autocast's fp32 LayerNorm outputs and the kernels' saved statistics are not in the per-layer count). This
# factor on the activations puts the estimate 4-6% above both.
FUSED_ATTENTION_OVERHEAD = 1.2


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a run."""
    parameters: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    formulation: str  # its name, for the log; what it costs is in the fields below
    choices: int  # sequences per training example (per_choice: the options; joint: its rotations; mlm: 1)
    batch: int
    accumulation: int
    length: int  # the longest padded length of the largest batch
    eval_batch: int
    eval_length: int
    eval_choices: int = 1  # sequences per evaluated example (per_choice: the options; joint: eval rotations)
    checkpointing: bool = False
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_parameters: bool = False
    world_size: int = 1
    bytes_per_activation: int = 4  # fp32; 2 under bf16/fp16 autocast
    # The attention probabilities (batch × heads × length²) are kept for the backward pass on the math path (eager
    # attention, and SDPA on a CPU with dropout); SDPA's fused CUDA kernels recompute them instead. Measured on an
    # H200 at bert-base, batch 32 × 4 × 511 tokens, bf16: 27.6 GB peak; 52 GB counted with them, 26 without.
    attention_probabilities: bool = True
    vocabulary_head: bool = False  # a masked-LM head: logits over the vocabulary for every token


def layer_activation_bytes(shape: Shape, sequences: int, length: int) -> int:
    """What one encoder layer keeps for its backward pass, for `sequences` sequences of `length` tokens."""
    tokens = sequences * length
    b = shape.bytes_per_activation
    h, i, a = shape.hidden, shape.intermediate, shape.heads
    # QKV input, Q, K, V, context, attention output, two LayerNorm inputs, MLP input (8h); the MLP's
    # intermediate before and after GELU (2i); dropout masks (2h, one byte each)
    per_token = b * (8 * h + 2 * i) + 2 * h
    # attention scores' softmax output and its dropout (two a·s² tensors) and the mask (one byte)
    attention = sequences * a * length * length * (2 * b + 1) if shape.attention_probabilities else 0
    return tokens * per_token + attention


def activation_bytes(shape: Shape) -> int:
    sequences = shape.batch * shape.choices
    one = layer_activation_bytes(shape, sequences, shape.length)
    tokens = sequences * shape.length
    if shape.checkpointing:  # each layer's input is kept; one layer is recomputed at a time
        layers = shape.layers * tokens * shape.hidden * shape.bytes_per_activation + (1 + BACKWARD_LAYERS) * one
    else:
        layers = (shape.layers + BACKWARD_LAYERS) * one
    head = tokens * shape.vocab * 4 * 3 if shape.vocabulary_head else 0  # logits, softmax, their gradient
    embeddings = 3 * tokens * shape.hidden * shape.bytes_per_activation
    overhead = ALLOCATOR_OVERHEAD if shape.attention_probabilities else FUSED_ATTENTION_OVERHEAD
    return int((layers + head + embeddings) * overhead)


def evaluation_bytes(shape: Shape) -> int:
    """Forward only, no graph: about two layers' tensors alive at once, for the evaluation batch."""
    sequences = shape.eval_batch * shape.eval_choices
    head = sequences * shape.eval_length * shape.vocab * 4 if shape.vocabulary_head else 0
    return int((2 * layer_activation_bytes(shape, sequences, shape.eval_length) + head) * ALLOCATOR_OVERHEAD)


def state_bytes(shape: Shape) -> tuple[int, int]:
    """(gradients, optimizer states) per process: fp32 gradients and AdamW's two moments, partitioned by
    ZeRO (stage 1: the optimizer, 2: and the gradients, 3: and the weights) over the processes."""
    p = shape.parameters
    gradients, optimizer = 4 * p, 8 * p
    if shape.zero_stage >= 1:
        optimizer //= shape.world_size
    if shape.zero_stage >= 2:
        gradients //= shape.world_size
    return gradients, optimizer


@dataclass(frozen=True)
class Estimate:
    now: int  # this process's memory already in use (weights and data loaded)
    gradients: int
    optimizer: int
    activations: int
    evaluation: int

    @property
    def peak(self) -> int:
        # the states counted twice: at the first optimizer step AdamW allocates its moments while the
        # gradients and the freed activations' blocks are still held (measured: docs/benchmarks.md)
        return self.now + 2 * (self.gradients + self.optimizer) + max(self.activations, self.evaluation)

    def describe(self, shape: Shape) -> str:
        return (f"{self.peak / GB:.1f} GB per process (in use now {self.now / GB:.1f}, gradients "
                f"{self.gradients / GB:.1f}, AdamW states {self.optimizer / GB:.1f} (both twice at the first "
                f"step), activations of the largest "
                f"batch {self.activations / GB:.1f} for {shape.batch} × {shape.choices} × {shape.length} tokens"
                f"{' with gradient checkpointing' if shape.checkpointing else ''}, evaluation batch "
                f"{self.evaluation / GB:.1f})")


def estimate(shape: Shape, now: int) -> Estimate:
    gradients, optimizer = state_bytes(shape)
    return Estimate(now, gradients, optimizer, activation_bytes(shape), evaluation_bytes(shape))


def available_bytes(on_gpu: bool) -> tuple[int, str]:
    """What this process may grow into: free GPU memory, or the machine's available RAM shared by the
    processes on this machine."""
    if on_gpu:
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free, "free GPU memory"
    import psutil

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return psutil.virtual_memory().available // max(1, local), "available RAM" + (
        f" / {local} processes" if local > 1 else "")


def process_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def knobs(shape: Shape, now: int) -> list[str]:
    """What each knob would bring the estimate to (the ones that help, best first)."""
    options = []
    if shape.batch > 1:
        half = replace(shape, batch=max(1, shape.batch // 2))
        options.append((f"--per_device_train_batch_size {half.batch} --gradient_accumulation_steps "
                        f"{shape.accumulation * 2} (the same effective batch)", half))
    if shape.length > 128:
        options.append((f"--max_seq_length {shape.length // 2}", replace(shape, length=shape.length // 2,
                                                                          eval_length=min(shape.eval_length,
                                                                                          shape.length // 2))))
    if shape.eval_batch > 1:
        options.append((f"--per_device_eval_batch_size {shape.eval_batch // 2}",
                        replace(shape, eval_batch=shape.eval_batch // 2)))
    if not shape.checkpointing:
        options.append(("--gradient_checkpointing (about 20% slower)", replace(shape, checkpointing=True)))
    if shape.world_size > 1 and shape.zero_stage < 3:
        options.append((f"--deepspeed ds_configs/zero3.json over {shape.world_size} processes",
                        replace(shape, zero_stage=3)))
    scored = [(estimate(s, now).peak, text) for text, s in options]
    return [f"{text} → {peak / GB:.1f} GB" for peak, text in sorted(scored) if peak < estimate(shape, now).peak]


def check(shape: Shape, on_gpu: bool, skip: bool) -> Estimate:
    """Log the estimate; stop (one line naming the knobs) when it is above STOP_ABOVE of what the run can
    have, unless `skip`."""
    from ..core.errors import UserError

    now = 0 if on_gpu else process_bytes()
    result = estimate(shape, now)
    free, what = available_bytes(on_gpu)
    budget = free + (0 if on_gpu else now)
    logger.info("memory: estimated peak %s; %s: %.1f GB", result.describe(shape), what, budget / GB)
    if result.peak > STOP_ABOVE * budget:
        line = (f"this run would need about {result.peak / GB:.1f} GB per process at its largest batch, above "
                f"{STOP_ABOVE:.0%} of the {budget / GB:.1f} GB it can have ({what}); "
                + "; ".join(knobs(shape, now) or ["no knob brings it under"])
                + " (--skip_memory_check runs it anyway)")
        if skip:
            logger.warning("--skip_memory_check: %s", line)
        else:
            raise UserError(line)
    return result


def release_finished_run() -> None:
    """Free what a finished run held before the next run of a --seeds or --folds loop starts. Its Trainer (the
    model, the optimizer states, a DDP wrapper) sits in reference cycles until the cyclic collector runs, which
    may be well into the next run: both runs' weights would coexist, and the next memory check would count the
    last run's as in use."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

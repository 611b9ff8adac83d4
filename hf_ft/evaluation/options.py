"""What `evaluate` and `predict` share: one dataclass of scoring arguments and one parser path.

Both commands load a model the way its run recorded and score questions with it; the flags that say how (which
scorer, how long an input, how many rotations, which device, whether downloaded code or kernels may run) are
`ScoringArguments`, parsed by `ScoringParser` beside each command's own arguments and checked by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from transformers import HfArgumentParser

from ..core import validation
from ..core.errors import ArgumentParser, UserError, did_you_mean
from ..inputs.modeling import KERNELS_FLAG_HELP, kernels_problem
from ..inputs.preprocessing import JOINT_EVAL_ROTATIONS
from .scoring import BATCH_TOKENS, SCORER_CHOICES, LoadedScorer, load_scorer


@dataclass(kw_only=True)
class ScoringArguments:
    scorer: str = field(default="auto", metadata={
        "help": "auto: from each checkpoint's config (trained head, else masked-LM pseudo-log-likelihood); "
                "head, mlm-pll or mlm-masked (all option tokens masked at once: one pass per option, cheaper, "
                "less faithful): force one.", "choices": list(SCORER_CHOICES)})
    joint_eval_rotations: int | None = field(default=None, metadata={
        "help": "A joint model scores each question in this many rotations of its option order, averaging each "
                "option's log-probability over them (1: one pass, fastest). Default: what the run recorded, "
                f"else {JOINT_EVAL_ROTATIONS}."})
    batch_size: int = field(default=32, metadata={"help": "Most questions (head) per forward pass."})
    batch_tokens: int = field(default=BATCH_TOKENS, metadata={"help": "Most padded tokens per forward pass."})
    max_seq_length: int | None = field(default=None, metadata={
        "help": "Longest input in tokens. Default: the max_seq_length the fine-tuned run recorded (so a model is "
                "scored on the inputs it was trained on), else 512."})
    max_unk_rate: float = field(default=0.05, metadata={
        "help": "Refuse a model whose tokenizer maps more than this share of the questions' tokens to [UNK]."})
    use_cpu: bool = field(default=False, metadata={"help": "Score on the CPU even when CUDA is available."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code from the hub."})
    use_kernels: bool = field(default=False, metadata={"help": KERNELS_FLAG_HELP})

    def scoring_problems(self) -> list[str]:
        """The shared ranges (the same as training's for the flags they share), before any model loads."""
        values = {f.name: getattr(self, f.name) for f in fields(ScoringArguments)}
        problems = validation.problems(values, SCORING_RULES) + validation.finite_floats(values, values)
        return problems + [p for p in [kernels_problem(self.use_kernels, self.use_cpu)] if p]

    def load(self, path: str) -> LoadedScorer:
        return load_scorer(path, self.scorer, self.use_cpu, self.max_seq_length, self.trust_remote_code,
                           joint_eval_rotations=self.joint_eval_rotations, use_kernels=self.use_kernels)

    def score(self, scorer: LoadedScorer, rows, progress: bool = True):
        return scorer.score(rows, self.batch_size, progress, batch_tokens=self.batch_tokens)


SCORING_RULES = {**validation.SHARED, "batch_size": validation.at_least(1), "batch_tokens": validation.at_least(1)}


class ScoringParser(ArgumentParser, HfArgumentParser):
    """HfArgumentParser over a command's dataclasses and ScoringArguments, plus any plain arguments the command
    adds (predict's positional model and its input modes); a bad command line is one line with a did-you-mean."""

    def __init__(self, prog: str, *dataclass_types, **kwargs):
        shared = any(issubclass(cls, ScoringArguments) for cls in dataclass_types)  # evaluate's extends it
        self.dataclass_types_in_order = dataclass_types if shared else (*dataclass_types, ScoringArguments)
        super().__init__(self.dataclass_types_in_order, prog=prog, **kwargs)

    def parse_command(self, argv: list[str]) -> tuple:
        """argv → one instance per dataclass, then a namespace of the plain arguments (if any)."""
        for arg in argv:  # before argparse's "required" errors, which would hide a typo
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and flag not in self.known_flags and flag != "--help":
                raise UserError(f"{self.prog}: unknown argument {flag}{did_you_mean(flag, self.known_flags)}")
        values = vars(self.parse_args(argv))
        out = []
        for cls in self.dataclass_types_in_order:
            names = {f.name for f in fields(cls) if f.init}
            out.append(cls(**{name: values.pop(name) for name in names if name in values}))
        if values:
            from argparse import Namespace

            out.append(Namespace(**values))
        return tuple(out)

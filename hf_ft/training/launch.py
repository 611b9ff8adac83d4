"""`make train ZERO=N [OFFLOAD=1] [NPROC=K]`: start run_qa.py through `accelerate launch` with the
matching ds_configs/ file.

On a machine without GPUs, `accelerate launch --cpu --num_processes 2` silently starts one process;
`--multi_gpu` makes accelerate start real processes (torch.distributed with gloo), so that is what
is used whenever more than one process is asked for.
"""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
from pathlib import Path

from ..core.errors import ArgumentParser, UserError, run_user_errors
from ..core.processes import free_port

ROOT = Path(__file__).resolve().parents[2]  # the checkout: run_qa.py and ds_configs/


def ds_config_for(zero: int, offload: bool) -> Path:
    if zero not in (0, 1, 2, 3):
        raise UserError(f"ZERO must be 0, 1, 2 or 3, got {zero}")
    if offload and zero < 2:
        raise UserError(f"OFFLOAD=1 needs ZERO=2 or ZERO=3 (got ZERO={zero})")
    return ROOT / "ds_configs" / (f"zero{zero}_offload.json" if offload else f"zero{zero}.json")


def build_command(zero: int, offload: bool, nproc: int, run_args: list[str], port: int | None = None) -> list[str]:
    if nproc < 1:
        raise UserError(f"NPROC must be at least 1, got {nproc}")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port or free_port())]
    if nproc > 1:
        command.append("--multi_gpu")  # real processes on CPU and GPU alike
    return [*command, str(ROOT / "run_qa.py"), "--deepspeed", str(ds_config_for(zero, offload)), *run_args]


def launch(argv: list[str]) -> None:
    ours, run_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = ArgumentParser(prog="python -m hf_ft.launch", description=__doc__)
    parser.add_argument("--zero", type=int, default=0)
    parser.add_argument("--offload", type=int, default=0)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--dry_run", action="store_true", help="print the command instead of running it")
    args = parser.parse_args(ours)
    command = build_command(args.zero, bool(args.offload), args.nproc, run_args)
    print("+ " + shlex.join(command), flush=True)
    if args.dry_run:
        return
    sys.exit(run_behind_the_boundary(command))


def run_behind_the_boundary(command: list[str]) -> int:
    """Run the launcher, passing its stderr through. Once a process has printed hf_ft's one-line `error:`,
    what follows (accelerate's CalledProcessError, torchrun's ChildFailedError report) is held back, so the
    error is the last line; exit 2 as a direct run would. A crash without such a line shows everything."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    stderr = io.TextIOWrapper(process.stderr, encoding="utf-8", errors="replace", newline="")  # "\r" kept: bars redraw
    error = None
    try:
        for line in stderr:
            if error is None:
                sys.stderr.write(line)
                sys.stderr.flush()
                if line.startswith("error: "):
                    error = line
    except KeyboardInterrupt:
        process.wait()
        raise
    code = process.wait()
    return 2 if code != 0 and error else code


def main(argv: list[str] | None = None) -> None:
    run_user_errors(launch, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()

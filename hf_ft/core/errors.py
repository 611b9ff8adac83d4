"""Problems the user can fix, and the one place every entry point turns them into a single line.

Library exceptions a user can cause (a file that cannot be read or written, a hub that cannot be
reached) are translated here, at the boundary, not one by one in the middle of the code. Anything
else is our bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import sys


class UserError(ValueError):
    """Bad input, arguments or environment: reported as one line, without a traceback."""


def did_you_mean(word: str, choices, prefix: str = "") -> str:
    """` (did you mean --learning_rate?)`, or "" when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.75)
    return f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for hf_ft's own commands: a bad command line is one `UserError` line (with a did-you-mean
    for a misspelt flag), not argparse's usage block."""

    known_flags: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--privat` is a typo, not --private
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        self.known_flags = (*self.known_flags, *[a for a in args if a.startswith("--")])
        return super().add_argument(*args, **kwargs)

    def add_mutually_exclusive_group(self, **kwargs):
        group = super().add_mutually_exclusive_group(**kwargs)
        original = group.add_argument

        def add_argument(*args, **inner):
            self.known_flags = (*self.known_flags, *[a for a in args if a.startswith("--")])
            return original(*args, **inner)

        group.add_argument = add_argument
        return group

    def error(self, message: str):
        if message.startswith("unrecognized arguments: "):
            # argparse joins the leftovers with spaces; the first one is what the user mistyped
            extra = message.split(": ", 1)[1]
            first = (extra.split() or [extra])[0]
            if first.startswith("--"):
                flag = first.split("=")[0]
                message = f"unknown argument {flag}{did_you_mean(flag, self.known_flags)}"
            else:
                message = f"unexpected value {first!r}: every value follows a --flag (or is one of the positional " \
                          "arguments, given once)"
        raise UserError(f"{self.prog}: {message}")


_OS_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EEXIST: "already exists",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
}


def explain(error: BaseException) -> str | None:
    """One line for an exception the user can cause, or None for our own bugs."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno in _OS_REASONS:
        where = error.filename if error.filename is not None else "a file"
        return f"{where}: {_OS_REASONS[error.errno]}"
    if isinstance(error, MemoryError):
        return "out of memory: use a smaller --per_device_train_batch_size / --batch_size or --max_seq_length"
    return None


def run_user_errors(fn, *args, **kwargs):
    """Run an entry point: a problem the user can fix becomes `error: ...` on stderr and exit status 2;
    Ctrl-C exits with 130 and one line; our own bugs keep their traceback. An entry point that succeeded
    leaves the process group here, after all its work: a library function (train.main, which evaluate's
    audit calls in-process) must leave it standing for what its caller does next."""
    try:
        result = fn(*args, **kwargs)
        from .processes import leave_process_group

        leave_process_group()
        return result
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `hf-ft ... | head`: the reader has gone, which is not an error
        sys.stdout = open(os.devnull, "w")
        sys.exit(0)
    except (UserError, OSError, MemoryError) as error:
        message = explain(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(2)


def writable_file(path: str | os.PathLike, flag: str, inputs: dict[str, str | os.PathLike] | None = None) -> None:
    """Refuse an output path that cannot become a file (a folder, or under a file), or that is one of the
    run's `inputs` ({flag: path}: writing it would destroy what is read), before any work."""
    from pathlib import Path

    p = Path(path)
    for input_flag, source in (inputs or {}).items():
        if source and p.resolve() == Path(source).resolve():
            raise UserError(f"{flag} {p}: is the {input_flag} file; the output would overwrite it (give another name)")
    if p.is_dir():
        raise UserError(f"{flag} {p}: is a folder; give a file name")
    _can_create_under(p.parent, p, flag)


def _can_create_under(start, target, flag: str) -> None:
    """The nearest existing folder at or above `start` is a folder and writable, so `target` can be made."""
    parent = start
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {target}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {target}: cannot write in {parent} (permission denied)")


def is_network_error(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"TransportError", "ConnectError", "TimeoutException", "NetworkError", "ConnectionError",
                         "RemoteProtocolError"}) or isinstance(error, (ConnectionError, TimeoutError))


def hub_problem(error: BaseException, writing: bool = False) -> str:
    """What went wrong talking to the hub (HF_ENDPOINT), in one clause; re-raises what is not the hub's."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hub_errors

    endpoint = constants.ENDPOINT
    cause = error
    while cause is not None and not isinstance(cause, (hub_errors.HfHubHTTPError, hub_errors.OfflineModeIsEnabled)) \
            and not is_network_error(cause):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        raise error
    if isinstance(cause, hub_errors.OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE=1 is set, so the hub at {endpoint} is not asked (unset it to download)"
    if isinstance(cause, hub_errors.RevisionNotFoundError):
        return f"no such revision on {endpoint}"
    if isinstance(cause, hub_errors.GatedRepoError):
        return f"gated on {endpoint}: accept its conditions there and log in (`hf auth login`)"
    if isinstance(cause, hub_errors.RepositoryNotFoundError):
        return f"not found on {endpoint} (or private: log in with `hf auth login`)"
    if isinstance(cause, hub_errors.EntryNotFoundError):
        return f"a file is missing on {endpoint}"
    if isinstance(cause, hub_errors.HfHubHTTPError) and cause.response is not None:
        status = cause.response.status_code
        if status == 401:
            return (f"the hub at {endpoint} rejected the token (401): log in again or set a valid HF_TOKEN"
                    if writing else f"the hub at {endpoint} refused access (401): check the name, or log in")
        if status == 403:
            return f"no write access (403) on {endpoint}: the repository or namespace belongs to someone else"
        if status == 404:
            return f"not found on {endpoint} (404)"
        if status >= 500:
            return (f"the hub at {endpoint} failed with HTTP {status}"
                    + ("; nothing was committed, try again later" if writing else "; try again later"))
        return f"the hub at {endpoint} answered HTTP {status}"
    return f"cannot reach the hub at {endpoint} ({type(cause).__name__}); check the network or HF_ENDPOINT"


def writable_folder(path: str | os.PathLike, flag: str) -> None:
    """Refuse an output folder that is a file, lies under a file, or cannot be written, before any work."""
    from pathlib import Path

    p = Path(path)
    if not str(path).strip():
        raise UserError(f"{flag} '{path}': empty; name a folder")
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p}: is a file, not a folder")
    _can_create_under(p, p, flag)

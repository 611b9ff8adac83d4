"""`Registry`: the one door to a kind of pluggable thing (formulations, scorers, extra-source adapters, retrievers,
corpus readers). Adding one is one `register(...)`; asking for a name that is not there is one line that lists
what is."""

from __future__ import annotations

from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """name → entry (each entry has a `name`). `registry[name]` raises a one-line UserError for an unknown name,
    naming the available ones, instead of a KeyError."""

    def __init__(self, kind: str, flag: str | None = None):
        super().__init__()
        self.kind = kind
        self.flag = flag  # the command-line flag that names an entry, for the message

    def register(self, entry: T) -> T:
        if entry.name in self:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self[entry.name] = entry
        return entry

    def __missing__(self, name) -> T:
        where = f"{self.flag} {name}" if self.flag else f"{self.kind} '{name}'"
        raise UserError(f"{where}: unknown {self.kind}; available: {', '.join(self)}")

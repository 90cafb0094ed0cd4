"""The one exception type a user's mistake becomes: a message that names where it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """A place in a spec file (1-based line and column)."""

    file: str
    line: int
    col: int

    def shifted(self, columns: int) -> Loc:
        return Loc(self.file, self.line, self.col + columns)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SpecError(Exception):
    """A bad spec: printed as `file:line:col: message`, exit code 2, never a traceback."""

    def __init__(self, message: str, loc: Loc | None = None, node: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.node = node

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        about = f"node '{self.node}': " if self.node else ""
        return f"{where}{about}{self.message}"

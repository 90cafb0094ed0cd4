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


@dataclass(frozen=True)
class ScalarLoc(Loc):
    """Where a YAML string was written, and where each character of its value is: a block
    (`|`), a quoted or a folded string is not its value character for character (quotes,
    indents, folded line breaks, escapes), so `shifted(n)` looks up the n-th character's
    place. `places[i]` is the (line, col) of character i; `index`, which one this is."""

    places: tuple[tuple[int, int], ...] = ()
    index: int | None = None  # None: the string itself, where YAML says it starts

    def shifted(self, columns: int) -> Loc:
        if not self.places:
            return super().shifted(columns)
        index = (self.index or 0) + columns
        last = len(self.places) - 1
        line, col = self.places[min(max(index, 0), last)]
        if index > last:  # past the end (a syntax error there): on along its line
            col += index - last
        return ScalarLoc(self.file, line, col, self.places, index)


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

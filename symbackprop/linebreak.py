"""How ruff format breaks a long line of generated code, for the forms the emitter writes.

The generated module must be left as it is by `ruff format` at ruff's default line length
(a user's repository formats generated code with its own settings, not ours), so a line
too long for one line is written the way ruff would write it:

- "call": `t = f(` / the arguments on one line / `)` (also a subscript, `cache[` ... `]`);
- "arguments": the same with one argument a line and a trailing comma, where the
  arguments fit on no one line;
- "parens": an operator expression in parentheses on a line of its own;
- "operands": the same with one operand a line, each after its operator, where the
  expression fits on no one line (split at its lowest-precedence operators).

The emitter first moves subexpressions to lines of their own where it can (`emit._fit`);
"arguments" and "operands" are for what is left, lines of long names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

LINE_LIMIT = 88  # ruff's default
INDENT = 4

_HEAD = re.compile(r"[A-Za-z_][\w.]*[(\[]")
_OPENING, _CLOSING = "([{", ")]}"
# binary operators by precedence class, the lowest first; ruff breaks before them
_OPERATORS = ((" + ", " - "), (" * ", " / ", " // ", " % ", " @ "))
_COMPARISONS = (" < ", " > ", " <= ", " >= ", " == ", " != ", " if ", " and ", " or ")


def fits_one_line(target: str, text: str, operator: str = "=") -> bool:
    return INDENT + len(target) + len(operator) + 2 + len(text) <= LINE_LIMIT


def _fits_indented(text: str) -> bool:
    return 2 * INDENT + len(text) <= LINE_LIMIT


def _depths(text: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, bracket depth outside it) for each character of `text`."""
    depth = 0
    for index, character in enumerate(text):
        if character in _CLOSING:
            depth -= 1
        yield index, character, depth
        if character in _OPENING:
            depth += 1


def _single_call(text: str) -> re.Match[str] | None:
    """The head `f(` or `x[` of a text that is one call or subscript, closed at its end."""
    head = _HEAD.match(text)
    if head is None:
        return None
    for index, character, depth in _depths(text[head.end() - 1 :]):
        if depth == 0 and index > 0:
            return head if character in _CLOSING and index == len(text) - head.end() else None
    return None


def call_parts(text: str) -> tuple[str, str, str]:
    """`f(a, b)` as ("f(", "a, b", ")")."""
    head = _single_call(text)
    assert head is not None, text
    return text[: head.end()], text[head.end() : -1], text[-1]


def top_level_arguments(body: str) -> list[str]:
    """A call's arguments: `body` split at the commas outside brackets."""
    cuts = [index for index, character, depth in _depths(body) if character == "," and depth == 0]
    starts, ends = [0] + [cut + 1 for cut in cuts], cuts + [len(body)]
    return [body[start:end].strip() for start, end in zip(starts, ends, strict=True)]


def operand_lines(text: str) -> list[str]:
    """An operator expression split before each of its lowest-precedence operators outside
    brackets (`a / b` as ["a", "/ b"]), or [] if it has none, or a comparison."""
    top = "".join(character if depth == 0 else "_" for _, character, depth in _depths(text))
    if any(word in top for word in _COMPARISONS):
        return []
    for operators in _OPERATORS:
        cuts = sorted(index for operator in operators for index in _find_all(top, operator))
        if cuts:
            starts = [0] + [cut + 1 for cut in cuts]
            ends = cuts + [len(text)]
            return [text[start:end] for start, end in zip(starts, ends, strict=True)]
    return []


def _find_all(text: str, word: str) -> list[int]:
    found, start = [], text.find(word)
    while start != -1:
        found.append(start)
        start = text.find(word, start + len(word))
    return found


def preferred_wrap(target: str, text: str, operator: str, is_operation: bool) -> str:
    """ "call" or "parens" where the right-hand side fits on a line of its own that way
    ("" if neither applies): what the emitter accepts before moving parts to other lines.
    `is_operation`: the text is an operator expression (a sum, a product, a negation)."""
    if text.endswith((")", "]")):
        head = _single_call(text)
        if head is None:
            return ""
        if not fits_one_line(target, text[: head.end()], operator):
            # `target = f(` alone is too long: ruff puts the whole call in parentheses
            return "parens" if _fits_indented(text) else ""
        return "call" if _fits_indented(text[head.end() : -1]) else ""
    if text.startswith("("):
        return ""  # ruff breaks inside the leading parentheses instead
    return "parens" if is_operation and _fits_indented(text) else ""


def last_resort_wrap(text: str) -> str:
    """ "arguments" for one call whose arguments each fit on a line of their own,
    "operands" for an operator expression whose operands do; else ""."""
    if _single_call(text):
        body = call_parts(text)[1]
        fits = all(_fits_indented(argument + ",") for argument in top_level_arguments(body))
        return "arguments" if fits else ""
    if text.endswith((")", "]")):
        return ""  # ruff may break inside the last brackets first: not a form we write
    lines = operand_lines(text)
    return "operands" if lines and all(_fits_indented(line) for line in lines) else ""


def wrap_for(target: str, text: str, operator: str = "=", is_operation: bool = False) -> str:
    """How the line `target operator text` is written: "" when it fits on one line."""
    if fits_one_line(target, text, operator):
        return ""
    return preferred_wrap(target, text, operator, is_operation) or last_resort_wrap(text)


@dataclass(frozen=True)
class Entry:
    """A dict entry `"key": head body tail,` of a dict written one entry a line, as ruff
    breaks it: whole, or with the call's arguments on a line of their own ("call"), or
    one a line ("arguments")."""

    key: str
    head: str  # `np.zeros(`
    body: str  # the call's arguments
    tail: str  # `)`, or `).astype(DTYPE)`

    @property
    def wrap(self) -> str:
        indent = 2 * INDENT
        if indent + len(f'"{self.key}": {self.head}{self.body}{self.tail},') <= LINE_LIMIT:
            return ""
        if indent + len(f'"{self.key}": {self.head}') > LINE_LIMIT:
            return ""  # ruff breaks this further than the forms we write
        if indent + INDENT + len(self.body) <= LINE_LIMIT:
            return "call"
        return "arguments"

    @property
    def arguments(self) -> list[str]:
        return top_level_arguments(self.body)

"""How ruff format breaks a long line of generated code, for the forms the emitter writes.

The generated module must be left as it is by `ruff format` at ruff's default line length
(a user's repository formats generated code with its own settings, not ours), so a line
too long for one line is written the way ruff would write it:

- "call": `t = f(` / the arguments on one line / `)`, split at the brackets that close
  the line (also a subscript, `cache[` ... `]`, and `(h > 0).astype(` ... `)`);
- "arguments": the same with one argument a line and a trailing comma, where the
  arguments fit on no one line;
- "parens": an operator expression (or an attribute, `x.shape`) in parentheses on a line
  of its own;
- "operands": the same with one operand a line, each after its operator, where the
  expression fits on no one line (split at its lowest-precedence operators);
- "leading": a text that starts with parentheses, `(h > 0).astype(DTYPE)`, broken inside
  them where the "call" form does not fit.

Dict entries of the module's constants and `init_params` have their own two: `Entry` (a
call) and `tuple_entry` (a tuple, one item a line). Checked against ruff itself by
tests/test_lint.py. The emitter first moves subexpressions to lines of their own where
it can (`emit._fit`); "arguments" and "operands" are for what is left, lines of long names.
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


def _last_group(text: str) -> int | None:
    """Where the brackets that close at the end of `text` open (None if it does not end in
    a bracket)."""
    if not text.endswith((")", "]")):
        return None
    depth = 0
    for index in range(len(text) - 1, -1, -1):
        depth += (text[index] in _CLOSING) - (text[index] in _OPENING)
        if depth == 0:
            return index
    return None


def _single_call(text: str) -> re.Match[str] | None:
    """The head `f(` or `x[` of a text that is one call or subscript, closed at its end."""
    head = _HEAD.match(text)
    return head if head is not None and _last_group(text) == head.end() - 1 else None


def call_parts(text: str) -> tuple[str, str, str]:
    """`f(a, b)` as ("f(", "a, b", ")"); `(h > 0).astype(DTYPE)` as ("(h > 0).astype(",
    "DTYPE", ")"): split at the brackets that close at the end."""
    start = _last_group(text)
    assert start is not None, text
    return text[: start + 1], text[start + 1 : -1], text[-1]


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
    """ "call", "leading" or "parens" where the right-hand side fits on a line of its own
    that way ("" if none applies): what the emitter accepts before moving parts to other
    lines. `is_operation`: the text is an operator expression (a sum, a negation, ...)."""
    operands = operand_lines(text)
    if text.startswith("(") and len(operands) == 2 and _last_group(operands[0]) == 0:
        # `(a - b) / c`, the one operator's left operand in parentheses and its right one
        # free of brackets: ruff breaks inside those parentheses, `t = (` / `a - b` / `) / c`
        # (with a bracket on the right it splits at the last one instead)
        body, tail = leading_parts(text)
        plain_right = not any(bracket in tail for bracket in "([")
        if plain_right and _fits_indented(body) and fits_one_line("", tail):
            return "leading"
    if text.startswith("(") and not operands:
        if _last_group(text):  # a call after the parentheses: `(h > 0).astype(DTYPE)`
            head, body, _ = call_parts(text)
            if fits_one_line(target, head, operator) and _fits_indented(body):
                return "call"  # `t = (h > 0).astype(` / `DTYPE` / `)`: ruff splits that call
        body, tail = leading_parts(text)
        return "leading" if _fits_indented(body) and fits_one_line("", tail) else ""
    head = _single_call(text)
    if head is not None and text[head.end() : -1]:  # a call with arguments
        if not fits_one_line(target, text[: head.end()], operator):
            # `target = f(` alone is too long: ruff puts the whole call in parentheses
            return "parens" if _fits_indented(text) else ""
        return "call" if _fits_indented(text[head.end() : -1]) else ""
    if text.endswith((")", "]")) and head is None:
        return ""  # an operation ending in a call: the emitter moves that part out first
    # an operation, or an attribute (`x.shape`, `h.T`, `x.sum()`); not a bare name
    parenthesize = is_operation or "." in text
    return "parens" if parenthesize and _fits_indented(text) else ""


def leading_parts(text: str) -> tuple[str, str]:
    """`(h > 0).astype(DTYPE)` as ("h > 0", ".astype(DTYPE)"): ruff breaks inside the
    leading parentheses."""
    close = next(i for i, c, depth in _depths(text) if depth == 0 and c == ")")
    return text[1:close], text[close + 1 :]


def last_resort_wrap(text: str) -> str:
    """ "arguments" for one call whose arguments each fit on a line of their own; for an
    operator expression, "parens" where it fits on a line of its own, else "operands"
    where each operand does; else ""."""
    head = _single_call(text)
    if head is not None and text[head.end() : -1]:
        body = call_parts(text)[1]
        fits = all(_fits_indented(argument + ",") for argument in top_level_arguments(body))
        return "arguments" if fits else ""
    lines = operand_lines(text)
    if not lines:
        return ""
    if _fits_indented(text):
        return "parens"
    return "operands" if all(_fits_indented(line) for line in lines) else ""


def string_assignment(target: str, literal: str, indent: int = 0) -> str:
    """`target = "..."` as ruff writes it: on one line, else the literal alone on a line
    of its own in parentheses where that fits (a spec name of 75 characters), else on one
    line again (ruff leaves a literal that fits nowhere as it is)."""
    pad = " " * indent
    line = f"{pad}{target} = {literal}"
    if len(line) <= LINE_LIMIT or indent + INDENT + len(literal) > LINE_LIMIT:
        return line
    return f"{pad}{target} = (\n{pad}{' ' * INDENT}{literal}\n{pad})"


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


Literal = str | tuple["Literal", ...]  # a tuple of literals, written out by `tuple_entry`


def _tuple_text(items: tuple[Literal, ...]) -> str:
    texts = [item if isinstance(item, str) else _tuple_text(item) for item in items]
    return f"({texts[0]},)" if len(texts) == 1 else f"({', '.join(texts)})"


def tuple_entry(key: str, value: tuple[Literal, ...], indent: int = INDENT) -> list[str]:
    """The lines of a dict entry `"key": (a, b),` as ruff writes it: whole where it fits,
    else one item a line with a trailing comma, and so on inside an item too long."""
    return _tuple_lines(f'"{key}": ', value, ",", indent)


def _tuple_lines(prefix: str, items: tuple[Literal, ...], suffix: str, indent: int) -> list[str]:
    whole = f"{' ' * indent}{prefix}{_tuple_text(items)}{suffix}"
    if len(whole) <= LINE_LIMIT or not items:
        return [whole]
    lines = [f"{' ' * indent}{prefix}("]
    for item in items:
        if isinstance(item, str):
            lines.append(f"{' ' * (indent + INDENT)}{item},")
        else:
            lines += _tuple_lines("", item, ",", indent + INDENT)
    return [*lines, f"{' ' * indent}){suffix}"]

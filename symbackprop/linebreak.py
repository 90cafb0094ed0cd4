"""How ruff format breaks a long line of generated code, for the forms the emitter writes.

The generated module must be left as it is by `ruff format` at ruff's default line length
(a user's repository formats generated code with its own settings, not ours), so a line
too long for one line is written the way ruff would write it:

- "call": `t = f(` / the arguments on one line / `)`, split at the brackets that close
  the line (also a subscript, `cache[` ... `]`, and `(h > 0).astype(` ... `)`);
- "arguments": the same with one argument a line and a trailing comma, where the
  arguments fit on no one line (an argument that is a call too long for its line broken
  the same way, `call_lines`); "parenthesized call": a call so broken inside parentheses,
  where `t = f(` alone is too long;
- "parens": an operator expression (or an attribute, `x.shape`, or a name) in parentheses
  on a line of its own;
- "operands": the same with one operand a line, each after its operator, where the
  expression fits on no one line (split at its lowest-precedence operators);
- "leading": a text that starts with parentheses, `(h > 0).astype(DTYPE)`, broken inside
  them where the "call" form does not fit;
- "groups": an operator expression whose parentheses ruff omits, broken inside its own
  bracket groups instead: `t = (a + b) / (` / `c + 3.25` / `)` (`group_layout`);
- "fluent": a chain of calls on a parenthesized value, `(x)` / `.sum(axis=1)` /
  `.sum(axis=0)` one a line in parentheses (`fluent_chain`).

Dict entries of the module's constants, `init_params` and `backward` have their own two:
`Entry` (a call) and `tuple_entry` (a tuple, one item a line). Checked against ruff itself by
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
_OPERATORS = ((" + ", " - "), (" * ", " / ", " // ", " % ", " @ "), (" ** ",))
_OPERATOR_TOKENS = {token.strip() for operators in _OPERATORS for token in operators}
_HUGGED_POWER = re.compile(r"(?<! )\*\*(?! )")  # `b**k`: ruff breaks it `b` / `** k`
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


def tuple_items(text: str) -> list[str] | None:
    """The items of `text` where it is a tuple, `(a, b)` or `(a,)`; None where it is not."""
    if not text.startswith("(") or _last_group(text) != 0:
        return None
    items = top_level_arguments(text[1:-1])
    return [item for item in items if item] if len(items) > 1 else None


def top_level_arguments(body: str) -> list[str]:
    """A call's arguments: `body` split at the commas outside brackets."""
    cuts = [index for index, character, depth in _depths(body) if character == "," and depth == 0]
    starts, ends = [0] + [cut + 1 for cut in cuts], cuts + [len(body)]
    return [body[start:end].strip() for start, end in zip(starts, ends, strict=True)]


def operand_lines(text: str) -> list[str]:
    """An operator expression split before each of its lowest-precedence operators outside
    brackets (`a / b` as ["a", "/ b"]; `b**k` as ["b", "** k"]), or [] if it has none, or
    a comparison."""
    top = _top_level(text)
    if any(word in top for word in _COMPARISONS):
        return []
    for operators in _OPERATORS:
        if operators == (" ** ",):  # the last: `b**k` is broken as `b` / `** k`
            for start in reversed([match.start() for match in _HUGGED_POWER.finditer(top)]):
                text, top = (f"{part[:start]} ** {part[start + 2 :]}" for part in (text, top))
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


def preferred_wrap(target: str, text: str, operator: str) -> str:
    """ "groups", "call", "leading" or "parens" where the right-hand side fits on a line of
    its own that way ("" if none applies): what the emitter accepts before moving parts to
    other lines."""
    layout = group_layout(target, text, operator)
    if layout is not None and not text.endswith(")"):
        # a body too long for its line ruff breaks further: the emitter moves parts out
        return "groups" if layout.bodies_fit else ""
    operands = operand_lines(text)
    chain = fluent_chain(text)
    if chain is not None:  # `(x).sum(...).sum(...)`: one line in parentheses, else a line each
        if _fits_indented(text):
            return "parens"
        return "fluent" if all(_fits_indented(link) for link in chain) else ""
    if (items := tuple_items(text)) is not None:  # a tuple: ruff writes one item a line
        return "tuple" if all(_fits_indented(f"{item},") for item in items) else ""
    if text.startswith("(") and not operands:
        if _last_group(text):  # a call after the parentheses: `(h > 0).astype(DTYPE)`
            head, body, _ = call_parts(text)
            if body and fits_one_line(target, head, operator) and _fits_indented(body):
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
        # an operation ending in a call or in parentheses: the emitter moves parts out
        # first, and breaks what is left as `last_resort_wrap` does
        return ""
    # an operation, an attribute (`x.shape`, `h.T`, `x.sum()`) or a name: ruff
    # parenthesizes each where that makes it fit
    return "parens" if _fits_indented(text) else ""


@dataclass(frozen=True)
class GroupLayout:
    """The lines of a statement broken inside its bracket groups, each after the first
    indented one step more than the statement; `bodies_fit`: every group's contents fit
    on their line."""

    lines: list[str]
    bodies_fit: bool


def group_layout(target: str, text: str, operator: str = "=") -> GroupLayout | None:
    """`target operator text` as ruff writes an operator expression whose optional
    parentheses it omits, or None where it keeps them (or `text` is not such an expression).

    ruff omits them (its `can_omit_optional_parentheses`) where the expression has at most
    one operator of its lowest-binding kind outside brackets, and starts or ends with a
    non-empty bracket group, or is a negation. Then each bracket group stays on the line
    while the line fits up to the next group's opening bracket (or to the end); else the
    line breaks after its opening bracket, the contents go on a line of their own, and the
    next line starts at its closing one. Where a line outside the groups is still too
    long, ruff keeps the parentheses after all.
    """
    groups = _bracket_groups(text)
    top = _top_level(text)
    if not groups or any(word in top for word in _COMPARISONS):
        return None
    operators = _lowest_binding_count(top)
    # an attribute of a call's result, `t.sum(axis=1).sum(axis=0)`: ruff omits them too
    chain = operators == 0 and ")." in top and not text.startswith("(")
    if operators > 1 or (operators == 0 and not text.startswith("-") and not chain):
        return None  # two or more: ruff keeps the parentheses; none: a call, the forms below
    if operators == 1 and not (text.startswith("(") or groups[-1][1] == len(text) - 1):
        return None
    return _group_lines(f"{target} {operator} ", text, groups, LINE_LIMIT - INDENT)


def chain_in_parentheses(text: str) -> GroupLayout | None:
    """A chain of calls on a name too long for `t = x.sum(`: ruff puts it in parentheses
    and breaks it inside its bracket groups there, `t = (` / `x.sum(` / `axis=1` /
    `).sum(axis=0)` / `)`. The lines are relative to the parentheses' contents."""
    groups = _bracket_groups(text)
    top = _top_level(text)
    if not groups or _lowest_binding_count(top) or ")." not in top or text.startswith("("):
        return None
    return _group_lines("", text, groups, LINE_LIMIT - 2 * INDENT)


def _group_lines(
    lead: str, text: str, groups: list[tuple[int, int]], width: int
) -> GroupLayout | None:
    """`lead + text` broken inside its bracket groups, as `group_layout` describes, on
    lines `width` long; None where a line outside the groups is too long."""
    lines, line, start = [], lead, 0
    outside, bodies = [], []  # the lines outside the groups, and the groups' contents
    for index, (opening, closing) in enumerate(groups):
        through = groups[index + 1][0] + 1 if index + 1 < len(groups) else len(text)
        if len(line) + through - start <= width:
            continue  # this group stays on the line
        outside.append(line + text[start : opening + 1])
        body = _group_body(text, opening, closing, width)
        bodies += body
        lines += [outside[-1], *body]
        line, start = "", closing
    outside.append(line + text[start:])
    lines.append(outside[-1])
    if any(len(line) > width for line in outside):
        return None
    return GroupLayout(lines, all(len(body) <= width for body in bodies))


def _group_body(text: str, opening: int, closing: int, width: int) -> list[str]:
    """The lines of a broken group's contents: on one line, or, for an operator expression
    in parentheses (not a call's arguments) too long for it, one operand a line."""
    body = text[opening + 1 : closing]
    called = opening > 0 and (text[opening - 1].isalnum() or text[opening - 1] in "_)]")
    operands = [] if called or INDENT + len(body) <= width else operand_lines(body)
    return [" " * INDENT + line for line in operands or [body]]


def _bracket_groups(text: str) -> list[tuple[int, int]] | None:
    """Where each non-empty pair of parentheses outside brackets opens and closes, in order;
    None with a subscript or other bracket among them (ruff breaks a subscript only inside
    parentheses)."""
    groups, opening = [], 0
    for index, character, depth in _depths(text):
        if depth == 0 and character in "[{":
            return None
        if depth == 0 and character == "(":
            opening = index
        elif depth == 0 and character == ")" and index > opening + 1:
            groups.append((opening, index))
    return groups


def _top_level(text: str) -> str:
    """`text` with every character inside brackets replaced by `_`."""
    return "".join(character if depth == 0 else "_" for _, character, depth in _depths(text))


def _lowest_binding_count(top: str) -> int:
    """How many binary operators of the lowest-binding kind `top` (outside brackets) has."""
    for operators in (*_OPERATORS[:-1], ("**",)):
        count = sum(len(_find_all(top, operator)) for operator in operators)
        if count:
            return count
    return 0


def fluent_chain(text: str) -> list[str] | None:
    """`(x).sum(axis=1).sum(axis=0)` as ["(x)", ".sum(axis=1)", ".sum(axis=0)"] where ruff
    writes it in its fluent style, one link a line: a chain of attributes and calls on a
    parenthesized value, with an attribute taken of a call's result; else None."""
    if not text.startswith("("):
        return None
    close = next(i for i, c, depth in _depths(text) if depth == 0 and c == ")")
    tail = text[close + 1 :]
    if not tail.startswith(".") or any(c in _top_level(tail) for c in " [{"):
        return None  # an operator, a subscript or nothing after the parentheses
    cuts = [i for i, c, depth in _depths(tail) if depth == 0 and c == "."]
    links = [tail[start:end] for start, end in zip(cuts, [*cuts[1:], len(tail)], strict=True)]
    if not any(link.endswith(")") for link in links[:-1]):
        return None  # ruff's fluent style wants a call's result taken an attribute of
    return [text[: close + 1], *links]


def leading_parts(text: str) -> tuple[str, str]:
    """`(h > 0).astype(DTYPE)` as ("h > 0", ".astype(DTYPE)"): ruff breaks inside the
    leading parentheses."""
    close = next(i for i, c, depth in _depths(text) if depth == 0 and c == ")")
    return text[1:close], text[close + 1 :]


def last_resort_wrap(target: str, text: str, operator: str = "=") -> str:
    """For one call: "arguments" where its arguments each fit on a line of their own, or
    break as `call_lines` breaks them; "parenthesized call" for the same inside
    parentheses, where `target = f(` alone is too long (ruff parenthesizes the call). For an
    operator expression, "parens" where it fits on a line of its own, else "operands"
    where each operand does; else "". Before these, "groups" where ruff omits the optional
    parentheses (`group_layout`) and each group's contents fit on their line."""
    layout = group_layout(target, text, operator)
    if layout is not None and layout.bodies_fit:
        return "groups"
    inner = chain_in_parentheses(text)
    if inner is not None and inner.bodies_fit:
        return "parenthesized groups"
    head = _single_call(text)
    if head is not None and text[head.end() : -1]:
        if not fits_one_line(target, text[: head.end()], operator):
            return "parenthesized call" if call_lines(text, depth=1) is not None else ""
        return "arguments" if call_lines(text) is not None else ""
    if not operand_lines(text):
        return ""
    if _fits_indented(text):
        return "parens"
    return "operands" if operand_block(text) is not None else ""


def operand_block(text: str, depth: int = 0) -> list[str] | None:
    """An operator expression one operand a line, as `operand_lines` splits it, `depth`
    steps further in than a statement's parentheses put it; an operand too long for its
    line that is in parentheses, `/ (a * b)`, broken inside them the same way (ruff's
    `/ (` / `a` / `* b` / `)`). None where an operand fits neither way."""
    width = LINE_LIMIT - (depth + 2) * INDENT
    lines: list[str] = []
    for operand in operand_lines(text):
        if len(operand) <= width:
            lines.append(operand)
            continue
        operator, _, rest = operand.partition(" ")  # `/ (a * b)`; `(a * b)` the first
        prefix, group = (f"{operator} ", rest) if operator in _OPERATOR_TOKENS else ("", operand)
        whole = group.startswith("(") and _last_group(group) == 0
        inner = operand_block(group[1:-1], depth + 1) if whole else None
        if inner is None:
            return None
        lines += [f"{prefix}(", *(" " * INDENT + line for line in inner), ")"]
    return lines


def call_lines(text: str, depth: int = 0) -> list[str] | None:
    """A call too long for its line, `depth` steps of indentation in, as ruff breaks it:
    its arguments on a line of their own, else as `argument_lines` breaks them. The first
    line is the call's head, to follow what the line starts with; the others are
    indented relative to it. None where an argument breaks no way we write."""
    opening, body, closing = call_parts(text)
    if len(body) <= LINE_LIMIT - (depth + 2) * INDENT:  # the statement is indented
        return [opening, " " * INDENT + body, closing]
    lines = argument_lines(top_level_arguments(body), depth)
    return None if lines is None else [opening, *lines, closing]


def argument_lines(arguments: list[str], depth: int) -> list[str] | None:
    """A call's arguments one a line with a trailing comma (none after a sole argument),
    one step in from the call (itself `depth` steps in from the statement's indentation),
    as ruff writes them; an argument too long for its line broken too: a call or a
    subscript inside its brackets, a tuple one item a line, an operator expression before
    each operator. None where an argument breaks no such way."""
    step, width = " " * INDENT, LINE_LIMIT - (depth + 2) * INDENT
    comma = "," if len(arguments) > 1 else ""
    lines = []
    for argument in arguments:
        if len(argument + comma) <= width:
            broken: list[str] | None = [argument]
        elif (head := _single_call(argument)) and argument[head.end() : -1]:
            broken = call_lines(argument, depth + 1)
        elif (items := tuple_items(argument)) is not None:  # a tuple, as an input shape
            broken = ["(", *(f"{step}{item}," for item in items), ")"]
            if any(len(line) > width for line in broken):
                broken = None
        else:
            broken = operand_lines(argument) or None
            if broken and any(len(line) > width for line in broken[:-1] + [broken[-1] + comma]):
                broken = None
        if broken is None:
            return None
        lines += [step + line for line in broken[:-1]] + [f"{step}{broken[-1]}{comma}"]
    return lines


def del_lines(names: list[str]) -> list[str]:
    """`del a, b` as ruff writes it: on one line, else, where it is too long, the names one
    a line in parentheses with a trailing comma."""
    line = f"del {', '.join(names)}"
    if INDENT + len(line) <= LINE_LIMIT or len(names) == 1:
        return [line]
    return ["del (", *(f"{' ' * INDENT}{name}," for name in names), ")"]


def string_assignment(target: str, literal: str, indent: int = 0) -> str:
    """`target = "..."` as ruff writes it: on one line, else the literal alone on a line
    of its own in parentheses where that fits (a spec name of 75 characters), else on one
    line again (ruff leaves a literal that fits nowhere as it is)."""
    pad = " " * indent
    line = f"{pad}{target} = {literal}"
    if len(line) <= LINE_LIMIT or indent + INDENT + len(literal) > LINE_LIMIT:
        return line
    return f"{pad}{target} = (\n{pad}{' ' * INDENT}{literal}\n{pad})"


def wrap_for(target: str, text: str, operator: str = "=") -> str:
    """How the line `target operator text` is written: "" when it fits on one line."""
    if fits_one_line(target, text, operator):
        return ""
    return preferred_wrap(target, text, operator) or last_resort_wrap(target, text, operator)


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
        if not self.body:
            return ""  # a name: nothing to break
        if self.last_call is not None and indent + len(self.last_call[0]) <= LINE_LIMIT:
            return "last call"  # ruff splits the last brackets first, where the rest fits
        if indent + INDENT + len(self.body) <= LINE_LIMIT:
            return "call"  # even where `"key": f(` alone is too long: ruff breaks the call
        return "arguments" if self.argument_lines is not None else ""

    @property
    def last_call(self) -> tuple[str, str, str] | None:
        """The entry split at the call its tail ends in, `.astype(DTYPE)`: the line up to
        that call's bracket, its arguments, `),`; None where the tail has no call."""
        opening = self.tail.rfind("(")
        if opening < 0 or not self.tail.endswith(")"):
            return None
        head = f'"{self.key}": {self.head}{self.body}{self.tail[: opening + 1]}'
        return head, self.tail[opening + 1 : -1], "),"

    @property
    def argument_lines(self) -> list[str] | None:
        """The arguments one a line, as `argument_lines` breaks them (an entry's arguments
        are one step further in than a statement's)."""
        return argument_lines(top_level_arguments(self.body), depth=1)


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

"""YAML text -> a tree of located values, so every later error can name file, line and column.

PyYAML only composes the node tree here; scalars are built by its *safe* constructor, so a
tag that would construct a Python object (`!!python/object/apply:os.system`) is an error.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import Loc, ScalarLoc, SpecError

MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_BYTES = 4_000_000
# How far past the last character found the next one of a string's value is looked for
# in its source (past an indent, a line break, a quote); past it (an escape such as
# `\u0051`), the character is placed where the search started.
_SEARCH_WINDOW = 256
# Strings longer than any formula (formula.MAX_FORMULA_CHARS) get no such map.
_MAPPED_CHARS = 20_000
_SPACE = re.compile(r"\s")
# The line breaks PyYAML counts lines by.
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
# The length of each escape of a double-quoted string after its backslash (else 1).
_ESCAPE_LENGTHS = {"x": 3, "u": 5, "U": 9}

_STANDARD_TAGS = {
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:omap",
}


def text_place(text: str, index: int) -> tuple[int, int]:
    """(line, col) of character `index`, lines counted at every break YAML counts (a CR
    alone too)."""
    breaks = list(_LINE_BREAK.finditer(text, 0, index))
    return len(breaks) + 1, index - (breaks[-1].end() if breaks else 0) + 1


@dataclass(frozen=True)
class YNode:
    """A YAML value with where it was written. `value` is a dict, a list or a scalar."""

    value: Any
    loc: Loc
    quoted: bool = False
    literal: bool = False  # a literal block (`|`): its line breaks are the value's own

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, list)

    def shown(self, limit: int = 40) -> str:
        """The value as a message quotes it: its repr without locations, cut at `limit`."""
        return shown(self, limit)

    def plain(self) -> Any:
        """The value with locations stripped (for small scalar-ish values)."""
        return _plain(self.value)


def _plain(value: Any) -> Any:
    """`value` (a YNode, or a list or dict that may hold YNodes) without locations."""
    if isinstance(value, YNode):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def shown(value: Any, limit: int = 40) -> str:
    """`repr(value)` for a message (a YNode's locations left out), cut at `limit`."""
    text = repr(_plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loc(mark: yaml.Mark, file: str) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


class _Converter:
    def __init__(self, file: str, text: str):
        self.file = file
        self.text = text
        self.line_starts = [0] + [match.end() for match in _LINE_BREAK.finditer(text)]
        self.count = 0
        self.constructor = yaml.SafeLoader("")

    def _index(self, mark: yaml.Mark) -> int:
        return self.line_starts[min(mark.line, len(self.line_starts) - 1)] + mark.column

    def _place(self, index: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, index) - 1
        return line + 1, index - self.line_starts[line] + 1

    def _escape_at(self, at: int, stop: int, char: str) -> tuple[int, int] | None:
        """(start, end) of the escape that makes `char`, the next character of a double-
        quoted string, where the source has a backslash next (past the blanks of a folded
        line, unless `char` is itself a blank); None where it has not."""
        index = at
        while index < stop and self.text[index] in " \t" and not char.isspace():
            index += 1
        if index + 1 >= stop or self.text[index] != "\\" or self.text[index + 1] in "\r\n":
            return None  # not an escape, or an escaped line break (it makes no character)
        return index, index + 1 + _ESCAPE_LENGTHS.get(self.text[index + 1], 1)

    def scalar_loc(self, node: yaml.ScalarNode, value: str, loc: Loc) -> Loc:
        """`loc`, with the place of each character of `value` where its source differs
        from it (see ScalarLoc): each is found in order in the source after the last."""
        start, end = self._index(node.start_mark), self._index(node.end_mark)
        if len(value) > _MAPPED_CHARS or self.text[start:end] == value:
            return loc
        places = []
        at = start + 1 if node.style in ("'", '"') else start
        for char in value:
            stop = min(end, at + _SEARCH_WINDOW)
            escape = self._escape_at(at, stop, char) if node.style == '"' else None
            if escape is not None:
                places.append(self._place(escape[0]))  # `\u0051` is one character
                at = escape[1]
                continue
            if char.isspace():  # a line break folded into a space, an indent kept
                space = _SPACE.search(self.text, at, stop)
                found = space.start() if space else -1
            else:
                found = self.text.find(char, at, stop)
            places.append(self._place(found if found >= 0 else at))
            if found >= 0:
                at = found + 1
        return ScalarLoc(loc.file, loc.line, loc.col, tuple(places))

    def convert(self, node: yaml.Node, depth: int) -> YNode:
        loc = _loc(node.start_mark, self.file)
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError(f"the spec has more than {MAX_NODES} YAML values (alias bomb?)", loc)
        if depth > MAX_DEPTH:
            raise SpecError(f"the spec nests deeper than {MAX_DEPTH} levels", loc)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:merge":
                raise SpecError(
                    "YAML merge keys (<<) are not supported in a spec: write the keys out "
                    "(an alias, *name, can stand for a whole value)",
                    loc,
                )
            try:
                value = self.constructor.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as err:
                raise SpecError(f"YAML tag {node.tag!r} is not allowed in a spec", loc) from err
            except (ValueError, OverflowError) as err:
                raise SpecError(f"bad YAML scalar: {err}", loc) from err
            if isinstance(value, str):
                loc = self.scalar_loc(node, value, loc)
            return YNode(value, loc, node.style in ("'", '"'), node.style == "|")
        if node.tag not in _STANDARD_TAGS:
            raise SpecError(f"YAML tag {node.tag!r} is not allowed in a spec", loc)
        if isinstance(node, yaml.SequenceNode):
            return YNode([self.convert(item, depth + 1) for item in node.value], loc)
        mapping: dict[Any, YNode] = {}
        for key_node, value_node in node.value:
            key = self.convert(key_node, depth + 1)
            if not isinstance(key.value, (str, int, float, bool)) or key.value is None:
                raise SpecError("a mapping key must be a plain name", key.loc)
            if key.value in mapping:
                raise SpecError(f"duplicate key {key.value!r}", key.loc)
            value = self.convert(value_node, depth + 1)
            mapping[key.value] = _Keyed(
                value.value, value.loc, value.quoted, value.literal, key.loc
            )
        return YNode(mapping, loc)


@dataclass(frozen=True)
class _Keyed(YNode):
    """A mapping value that also remembers where its key was written."""

    key_loc: Loc | None = None


def key_loc(node: YNode) -> Loc:
    """Where the key of a mapping value was written (its own place if it has none)."""
    return getattr(node, "key_loc", None) or node.loc


def load_yaml(text: str, file: str) -> YNode:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise SpecError(f"the spec is larger than {MAX_BYTES} bytes", Loc(file, 1, 1))
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        loc = _loc(mark, file) if mark else Loc(file, 1, 1)
        raise SpecError(f"malformed YAML: {err.problem or err}", loc) from None
    except yaml.reader.ReaderError as err:
        # a character YAML forbids (NUL, most controls): at its place, on one line, its
        # line counted at every break YAML counts (a CR alone too)
        code = err.character if isinstance(err.character, int) else ord(err.character)
        where = Loc(file, *text_place(text, err.position))
        raise SpecError(
            f"malformed YAML: the character U+{code:04X} is not allowed", where
        ) from None
    except yaml.YAMLError as err:
        raise SpecError(f"malformed YAML: {err}", Loc(file, 1, 1)) from None
    except RecursionError:
        raise SpecError("the spec nests too deeply", Loc(file, 1, 1)) from None
    if root is None:
        raise SpecError("the spec is empty", Loc(file, 1, 1))
    try:
        # PyYAML's marks count from after a byte-order mark
        return _Converter(file, text.removeprefix("\ufeff")).convert(root, 0)
    except RecursionError:
        raise SpecError("the spec nests too deeply", Loc(file, 1, 1)) from None

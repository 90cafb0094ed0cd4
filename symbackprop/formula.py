"""The formula language: text -> a small, typed syntax tree, through an `ast` allow-list.

Spec text is never evaluated: Python's parser only splits it into a tree, and every
node kind outside the allow-list below (attributes, subscripts, lambdas, comprehensions,
strings outside `reduction=`, ...) is an error at its column. Constant arithmetic is
folded here in float64 with overflow checks, so `9**9**9` is an error, not a hang.
"""

from __future__ import annotations

import ast
import math
import sys
from dataclasses import dataclass
from typing import TypeVar

from .errors import Loc, SpecError

MAX_FORMULA_CHARS = 20_000
MAX_DEPTH = 60
MAX_NODES = 5_000


@dataclass(frozen=True)
class Num:
    value: float | int
    loc: Loc


@dataclass(frozen=True)
class Ref:
    name: str
    loc: Loc


@dataclass(frozen=True)
class Text:
    value: str
    loc: Loc


@dataclass(frozen=True)
class Seq:
    items: tuple[Term, ...]
    loc: Loc


@dataclass(frozen=True)
class Neg:
    operand: Term
    loc: Loc


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / ** @
    left: Term
    right: Term
    loc: Loc


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Term, ...]
    kwargs: tuple[tuple[str, Term], ...]
    loc: Loc


Term = Num | Ref | Text | Seq | Neg | BinOp | Call

_BINOPS: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.MatMult: "@",
}

_FOLD = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a**b,
}

_DESCRIBE = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.Compare: "a comparison",
    ast.BoolOp: "`and`/`or`",
    ast.IfExp: "`if`/`else`",
    ast.NamedExpr: "`:=`",
    ast.Starred: "`*args`",
    ast.Await: "`await`",
    ast.Yield: "`yield`",
    ast.JoinedStr: "an f-string",
}


_BinaryNode = TypeVar("_BinaryNode", ast.BinOp, BinOp)


def left_spine(node: _BinaryNode) -> list[_BinaryNode]:
    """`node`, its left operand, that one's left operand, ... while each is a binary node
    too: `a + b + c + ...` nests leftwards, one level a term, and is read as this chain
    (here, and where it is lowered) so that a long flat sum is no deep recursion."""
    spine = [node]
    while isinstance(spine[-1].left, type(node)):
        spine.append(spine[-1].left)
    return spine


class _Reader:
    def __init__(self, text: str, base: Loc, node_name: str):
        self.base = base
        self.node_name = node_name
        self.count = 0

    def loc(self, node: ast.AST) -> Loc:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        if line == 1:
            return self.base.shifted(col)
        return Loc(self.base.file, self.base.line + line - 1, col + 1)

    def fail(self, message: str, node: ast.AST) -> SpecError:
        return SpecError(message, self.loc(node), self.node_name)

    def read(self, node: ast.AST, depth: int) -> Term:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(f"the formula is too large (more than {MAX_NODES} terms)", node)
        if depth > MAX_DEPTH:
            raise self.fail(f"the formula nests deeper than {MAX_DEPTH} levels", node)
        reader = getattr(self, "_read_" + type(node).__name__, None)
        if reader is None:
            what = _DESCRIBE.get(type(node), f"`{type(node).__name__}`")
            raise self.fail(f"{what} is not allowed in a formula", node)
        return reader(node, depth + 1)

    def _read_Constant(self, node: ast.Constant, depth: int) -> Term:
        value = node.value
        if value is None or isinstance(value, bool):
            # None only means something as `axis=None`; a keyword's name is checked first
            return Ref(str(value), self.loc(node))
        if not isinstance(value, (int, float)):
            if isinstance(value, str):
                return Text(value, self.loc(node))
            raise self.fail(f"the constant {value!r} is not a number", node)
        if isinstance(value, int) and abs(value) > 2**53:
            raise self.fail("integer constants must be below 2**53 in size", node)
        return Num(value, self.loc(node))

    def _read_Name(self, node: ast.Name, depth: int) -> Term:
        return Ref(node.id, self.loc(node))

    def _read_Tuple(self, node: ast.Tuple, depth: int) -> Term:
        return Seq(tuple(self.read(item, depth) for item in node.elts), self.loc(node))

    def _read_UnaryOp(self, node: ast.UnaryOp, depth: int) -> Term:
        operand = self.read(node.operand, depth)
        if isinstance(node.op, ast.UAdd):
            return operand
        if not isinstance(node.op, ast.USub):
            raise self.fail("only unary + and - are allowed", node)
        if isinstance(operand, Num):
            return Num(-operand.value, self.loc(node))
        return Neg(operand, self.loc(node))

    def _read_BinOp(self, node: ast.BinOp, depth: int) -> Term:
        spine = left_spine(node)  # a flat sum's terms add no depth
        self.count += len(spine) - 1
        if self.count > MAX_NODES:
            raise self.fail(f"the formula is too large (more than {MAX_NODES} terms)", node)
        term = self.read(spine[-1].left, depth)
        for binop in reversed(spine):
            op = _BINOPS.get(type(binop.op))
            if op is None:
                raise self.fail("only + - * / ** and @ are allowed", binop)
            right = self.read(binop.right, depth)
            if isinstance(term, Num) and isinstance(right, Num) and op in _FOLD:
                term = Num(self._fold(op, term.value, right.value, binop), self.loc(binop))
            else:
                term = BinOp(op, term, right, self.loc(binop))
        return term

    def _fold(self, op: str, left: float, right: float, node: ast.AST) -> float | int:
        try:
            value = _FOLD[op](float(left), float(right))
        except (OverflowError, ZeroDivisionError) as err:
            raise self.fail(f"constant arithmetic fails: {err}", node) from None
        if isinstance(value, complex) or not math.isfinite(value):
            raise self.fail("constant arithmetic gives a non-finite or complex number", node)
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and value == int(value)
            and abs(value) < 2**53
        ):
            return int(value)
        return value

    def _read_Call(self, node: ast.Call, depth: int) -> Term:
        if not isinstance(node.func, ast.Name):
            raise self.fail("only functions of the formula language may be called", node)
        args = tuple(self.read(arg, depth) for arg in node.args)
        kwargs = []
        for keyword in node.keywords:
            if keyword.arg is None:
                raise self.fail("`**kwargs` is not allowed", keyword)
            if any(keyword.arg == name for name, _ in kwargs):
                raise self.fail(f"keyword argument {keyword.arg}= is given twice", keyword)
            kwargs.append((keyword.arg, self.read(keyword.value, depth)))
        return Call(node.func.id, args, tuple(kwargs), self.loc(node))


def _one_line(source: str) -> str:
    """A formula written over several lines (a YAML block) as the one line Python parses,
    each character where it was. A `#` starts a comment to the end of its line, as in
    Python: joined first, it would swallow every line after it."""
    lines = source.split("\n")
    return " ".join(line.split("#", 1)[0].ljust(len(line)) for line in lines)


def parse_formula(text: str, loc: Loc, node_name: str) -> Term:
    """Parse one formula; `loc` is where its first character sits in the spec file."""
    if len(text) > MAX_FORMULA_CHARS:
        raise SpecError(
            f"the formula is longer than {MAX_FORMULA_CHARS} characters", loc, node_name
        )
    source = text.strip()
    if not source:
        raise SpecError("the formula is empty", loc, node_name)
    offset = len(text) - len(text.lstrip())
    base = loc.shifted(offset)
    source = _one_line(source)
    if not source.strip():
        raise SpecError("the formula is only a comment", base, node_name)
    for column, char in enumerate(source):
        if not char.isascii():
            # Python's parser NFKC-normalizes names: `ｘ` would silently mean `x`
            raise SpecError(
                f"non-ASCII character {char!r} in a formula", base.shifted(column), node_name
            )
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as err:
        # no offset: the formula ended too soon (`a +`), so the place is just past its end
        column = err.offset - 1 if err.offset else len(source.rstrip())
        message = err.msg
        if message.startswith("Exceeds the limit"):  # Python's, with advice for Python code
            message = f"a number of more than {sys.get_int_max_str_digits()} digits"
        raise SpecError(f"syntax error: {message}", base.shifted(column), node_name) from None
    except (RecursionError, MemoryError, ValueError):
        raise SpecError("the formula nests too deeply or is malformed", base, node_name) from None
    reader = _Reader(source, base, node_name)
    try:
        return reader.read(tree.body, 0)
    except RecursionError:
        raise SpecError("the formula nests too deeply", base, node_name) from None

"""Hypothesis strategies that draw valid specs, each together with its PyTorch twin.

Every node of a drawn spec is a small expression tree (`Expr`). The same tree prints as
the formula text the spec holds (`formula`) and runs in PyTorch (`evaluate`), so one
draw gives both the spec under test and its reference.

Drawing tracks two things so that every drawn spec is valid and well-conditioned:
- shapes: every subterm is drawn for a target shape, broadcasting splits a shape into
  two that broadcast back to it, and the output is a float scalar;
- a bound on each value's size, given leaf values in [-1, 1] (the tests draw them so):
  functions get arguments in their domain (`log(u * u + 1)`, `sqrt(abs(u) + 0.5)`,
  `(abs(u) + 1) ** v`), `exp` gets small arguments, and a value whose bound grows past
  `SQUASH_ABOVE` is squashed (`tanh(u / k)`) before it can overflow anything.

Kinks (relu, abs, maximum, max) are allowed: the tests draw continuous random values,
and `evaluate` reports how close the point came to a kink, so that finite differences
are only trusted away from one.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F
import yaml

Dim = int | str
Shape = tuple[Dim, ...]
Draw = Callable[[st.SearchStrategy[Any]], Any]

NAMED_DIMS = ("batch", "seq")
NAMED_DIM_MAX = 4  # tests give named dims sizes 1..NAMED_DIM_MAX
SQUASH_ABOVE = 20.0
EXP_ARG_LIMIT = 3.0
MAX_RANK = 3
LAYER_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "softmax")
UNARY = (
    "exp",
    "log",
    "log1p",
    "sqrt",
    "abs",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "relu",
    "softplus",
    "leaky_relu",
)
REDUCTIONS = ("sum", "mean", "max", "logsumexp")
LOSSES = ("mse", "binary_cross_entropy_with_logits", "softmax_cross_entropy")
NUMBERS: tuple[float | int | str, ...] = (2, 0.5, 1, 3, 1.5, -1, -2.5, 0.25, "pi", "e")
DEFAULT = object()  # an axis= or reduction= left out of the formula text
ALL_AXES = (DEFAULT, None)  # the spellings of "every axis"
# Compiler bugs these tests found that are still open, each an xfail test in
# test_random_specs.py. The strategy steers around them so that the random test stays
# green; when the lead fixes one, its xfail starts passing: drop its name here too.
OPEN_BUGS: frozenset[str] = frozenset()  # e.g. "constant_operand": steer around a known bug


@dataclass(frozen=True)
class Expr:
    """A formula term: `op` names an entry of OPS; `attr` holds names, numbers, axes."""

    op: str
    args: tuple[Expr, ...] = ()
    attr: Any = None
    shape: Shape = ()
    bound: float = 1.0


@dataclass(frozen=True)
class Leaf:
    """An input or param; int inputs are class labels below `classes`."""

    name: str
    kind: str  # "input" or "param"
    shape: Shape
    dtype: str = "float"  # "float" or "int64"
    classes: Dim | None = None
    declared: bool = True  # False for the params a layer declares itself


@dataclass(frozen=True)
class DrawnSpec:
    """A valid spec document and the node trees PyTorch evaluates, in dependency order."""

    document: dict[str, Any]
    leaves: tuple[Leaf, ...]
    nodes: tuple[tuple[str, Expr], ...]
    output: str
    wrt: tuple[str, ...]

    def yaml(self) -> str:
        return yaml.dump(self.document, Dumper=_SpecDumper, sort_keys=False, width=100)


class _SpecDumper(yaml.SafeDumper):
    """Block mappings, flow lists: shapes print as `[batch, 4]`, as specs are written."""


_SpecDumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True),
)


# --- the op table: formula text and PyTorch, side by side -------------------------------


def _literal(value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    return f"({value!r})" if value < 0 else repr(value)


def _axis_text(axis: Any) -> str:
    if isinstance(axis, tuple):
        return "(" + ", ".join(map(str, axis)) + ("," if len(axis) == 1 else "") + ")"
    return str(axis)


def _call_text(name: str, args: Sequence[str], keyword: str, value: Any) -> str:
    parts = list(args)
    if value is not DEFAULT:
        parts.append(f"{keyword}={_axis_text(value) if keyword == 'axis' else repr(value)}")
    return f"{name}({', '.join(parts)})"


def _torch_dims(axis: Any, rank: int) -> tuple[int, ...]:
    if axis is None or axis is DEFAULT:
        return tuple(range(rank))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % rank for a in axes))


def _reduce(
    fn: Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor],
) -> Callable[..., torch.Tensor]:
    """A reduction over the formula's axes; over no axis at all it is the identity, as in NumPy."""

    def apply(args: Sequence[torch.Tensor], axis: Any) -> torch.Tensor:
        dims = _torch_dims(axis, args[0].dim())
        return fn(args[0], dims) if dims else args[0]

    return apply


def _top_gap(args: Sequence[torch.Tensor], axis: Any) -> float:
    """How far the max is from the runner-up: the max reduction's distance from a tie."""
    x = args[0]
    dims = _torch_dims(axis, x.dim())
    if not dims:
        return math.inf
    kept = [d for d in range(x.dim()) if d not in dims]
    flat = x.permute(*kept, *dims).reshape(*(x.shape[d] for d in kept), -1)
    if flat.shape[-1] < 2:
        return math.inf
    top = torch.topk(flat, 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def _cross_entropy(args: Sequence[torch.Tensor], reduction: Any) -> torch.Tensor:
    logits, labels = args
    if logits.dim() >= 2:
        logits = logits.movedim(-1, 1)  # PyTorch wants the class axis second
    return F.cross_entropy(logits, labels, reduction=_reduction(reduction))


def _reduction(value: Any) -> str:
    return "mean" if value is DEFAULT else value


def _softplus(x: torch.Tensor) -> torch.Tensor:
    # not F.softplus: it turns linear past x = 20, 2e-9 away from the exact gradient
    return torch.logaddexp(x, torch.zeros_like(x))


@dataclass(frozen=True)
class OpDef:
    text: Callable[[Sequence[str], Any], str]
    torch: Callable[[Sequence[torch.Tensor], Any], torch.Tensor]
    kink: Callable[[Sequence[torch.Tensor], Any], float] | None = None  # distance from a kink


def _unary(name: str, fn: Callable[[torch.Tensor], torch.Tensor], kinked: bool = False) -> OpDef:
    kink = (lambda args, attr: float(args[0].abs().min())) if kinked else None
    return OpDef(lambda args, attr: f"{name}({args[0]})", lambda args, attr: fn(args[0]), kink)


def _infix(symbol: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> OpDef:
    return OpDef(lambda args, attr: f"({args[0]} {symbol} {args[1]})", lambda args, attr: fn(*args))


def _extremum(name: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> OpDef:
    return OpDef(
        lambda args, attr: f"{name}({args[0]}, {args[1]})",
        lambda args, attr: fn(*args),
        lambda args, attr: float((args[0] - args[1]).abs().min()),
    )


def _keyword_op(
    name: str, keyword: str, fn: Callable[..., torch.Tensor], kink: Any = None
) -> OpDef:
    return OpDef(lambda args, attr: _call_text(name, args, keyword, attr), fn, kink)


def _loss(name: str, fn: Callable[..., torch.Tensor]) -> OpDef:
    return _keyword_op(name, "reduction", lambda args, attr: fn(*args, reduction=_reduction(attr)))


OPS: dict[str, OpDef] = {
    "ref": OpDef(lambda args, attr: attr, lambda args, attr: None),  # type: ignore[arg-type]
    "num": OpDef(lambda args, attr: _literal(attr), lambda args, attr: None),  # type: ignore[arg-type]
    "neg": OpDef(lambda args, attr: f"(-{args[0]})", lambda args, attr: -args[0]),
    "+": _infix("+", torch.add),
    "-": _infix("-", torch.sub),
    "*": _infix("*", torch.mul),
    "/": _infix("/", torch.div),
    "**": _infix("**", torch.pow),
    "@": _infix("@", torch.matmul),
    "exp": _unary("exp", torch.exp),
    "log": _unary("log", torch.log),
    "log1p": _unary("log1p", torch.log1p),
    "sqrt": _unary("sqrt", torch.sqrt),
    "abs": _unary("abs", torch.abs, kinked=True),
    "sin": _unary("sin", torch.sin),
    "cos": _unary("cos", torch.cos),
    "tanh": _unary("tanh", torch.tanh),
    "sigmoid": _unary("sigmoid", torch.sigmoid),
    "relu": _unary("relu", torch.relu, kinked=True),
    "softplus": _unary("softplus", _softplus),
    "leaky_relu": OpDef(
        lambda args, attr: f"leaky_relu({args[0]}{'' if attr is None else f', {attr!r}'})",
        lambda args, attr: F.leaky_relu(args[0], 0.01 if attr is None else attr),
        lambda args, attr: float(args[0].abs().min()),
    ),
    "maximum": _extremum("maximum", torch.maximum),
    "minimum": _extremum("minimum", torch.minimum),
    "transpose": OpDef(
        lambda args, attr: f"transpose({args[0]})",
        lambda args, attr: args[0].permute(*reversed(range(args[0].dim())))
        if args[0].dim() > 1
        else args[0],
    ),
    "sum": _keyword_op("sum", "axis", _reduce(lambda x, dims: torch.sum(x, dim=dims))),
    "mean": _keyword_op("mean", "axis", _reduce(lambda x, dims: torch.mean(x, dim=dims))),
    "max": _keyword_op("max", "axis", _reduce(lambda x, dims: torch.amax(x, dim=dims)), _top_gap),
    "logsumexp": _keyword_op(
        "logsumexp", "axis", _reduce(lambda x, dims: torch.logsumexp(x, dim=dims))
    ),
    "softmax": _keyword_op(
        "softmax",
        "axis",
        lambda args, attr: torch.softmax(args[0], -1 if attr is DEFAULT else attr),
    ),
    "log_softmax": _keyword_op(
        "log_softmax",
        "axis",
        lambda args, attr: torch.log_softmax(args[0], -1 if attr is DEFAULT else attr),
    ),
    "mse": _loss("mse", F.mse_loss),
    "binary_cross_entropy_with_logits": _loss(
        "binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits
    ),
    "softmax_cross_entropy": _keyword_op("softmax_cross_entropy", "reduction", _cross_entropy),
}


def formula(expr: Expr, rename: Mapping[str, str] | None = None) -> str:
    """The formula text of `expr`; `rename` spells graph names as the spec sees them (`out`)."""
    if expr.op == "ref" and rename:
        return rename.get(expr.attr, expr.attr)
    return OPS[expr.op].text([formula(arg, rename) for arg in expr.args], expr.attr)


@dataclass
class Evaluation:
    env: dict[str, torch.Tensor]
    kink_margin: float = math.inf  # how close any kinked op came to its kink

    def run(self, expr: Expr) -> torch.Tensor:
        if expr.op == "ref":
            return self.env[expr.attr]
        if expr.op == "num":
            value = {"pi": math.pi, "e": math.e}.get(expr.attr, expr.attr)
            return torch.tensor(float(value), dtype=torch.float64)
        op = OPS[expr.op]
        args = [self.run(arg) for arg in expr.args]
        if op.kink is not None:
            with torch.no_grad():
                self.kink_margin = min(self.kink_margin, op.kink(args, expr.attr))
        return op.torch(args, expr.attr)


def leaf_values(drawn: DrawnSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Values for every leaf: floats uniform in [-1, 1] (the bound drawing assumes), labels
    below their class count; named dims get sizes 1..NAMED_DIM_MAX."""
    sizes: dict[str, int] = {}

    def concrete(dim: Dim) -> int:
        return (
            dim
            if isinstance(dim, int)
            else sizes.setdefault(dim, int(rng.integers(1, NAMED_DIM_MAX + 1)))
        )

    values = {}
    for leaf in drawn.leaves:
        shape = tuple(concrete(dim) for dim in leaf.shape)
        if leaf.dtype == "int64":
            values[leaf.name] = rng.integers(0, concrete(leaf.classes), size=shape)  # type: ignore[arg-type]
        else:
            values[leaf.name] = rng.uniform(-1.0, 1.0, size=shape)
    return values


def evaluate(drawn: DrawnSpec, values: Mapping[str, torch.Tensor]) -> Evaluation:
    """Run the drawn spec's nodes in PyTorch; `env[drawn.output]` is the output."""
    evaluation = Evaluation(dict(values))
    for name, expr in drawn.nodes:
        evaluation.env[name] = evaluation.run(expr)
    return evaluation


# --- building terms: shapes and bounds --------------------------------------------------


def dim_size(dim: Dim) -> int:
    return NAMED_DIM_MAX if isinstance(dim, str) else dim


def broadcast(*shapes: Shape) -> Shape:
    rank = max(len(shape) for shape in shapes)
    padded = [(1,) * (rank - len(shape)) + shape for shape in shapes]
    return tuple(next((d for d in dims if d != 1), 1) for dims in zip(*padded, strict=True))


def ref(name: str, shape: Shape, bound: float = 1.0) -> Expr:
    return Expr("ref", attr=name, shape=shape, bound=bound)


def num(value: float | int | str) -> Expr:
    size = {"pi": math.pi, "e": math.e}.get(value, value)  # type: ignore[call-overload]
    return Expr("num", attr=value, bound=abs(float(size)))


_UNARY_BOUND: dict[str, Callable[[float], float]] = {
    "exp": math.exp,
    "log": lambda b: max(b, math.log(2)),  # only ever of u*u + 1 or abs(u) + 0.5
    "log1p": lambda b: b,
    "sqrt": lambda b: math.sqrt(b),
    "sin": lambda b: 1.0,
    "cos": lambda b: 1.0,
    "tanh": lambda b: 1.0,
    "sigmoid": lambda b: 1.0,
    "softplus": lambda b: b + math.log(2),
    "softmax": lambda b: 1.0,
}


def unary(op: str, arg: Expr, attr: Any = None) -> Expr:
    bound = _UNARY_BOUND.get(op, lambda b: b)(arg.bound)
    return Expr(op, (arg,), attr, arg.shape, bound)


_BINARY_BOUND: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a + b,
    "*": lambda a, b: a * b,
    "**": lambda a, b: max(a, 2.0) ** b,  # bases are numbers >= 0.5 or at least 1
    "maximum": max,
    "minimum": max,
}


def binary(op: str, left: Expr, right: Expr) -> Expr:
    if op == "/":  # denominators are numbers, u * u + 1 or abs(u) + 0.5
        bound = left.bound / min(_denominator_floor(right), 1.0)
    else:
        bound = _BINARY_BOUND[op](left.bound, right.bound)
    return Expr(op, (left, right), None, broadcast(left.shape, right.shape), bound)


def _denominator_floor(expr: Expr) -> float:
    return expr.bound if expr.op == "num" else 0.5


def matmul(left: Expr, right: Expr) -> Expr:
    inner = dim_size(left.shape[-1])
    shape = left.shape[:-1] + right.shape[1:]
    return Expr("@", (left, right), None, shape, left.bound * right.bound * inner)


def transpose(arg: Expr) -> Expr:
    return Expr("transpose", (arg,), None, tuple(reversed(arg.shape)), arg.bound)


def reduction(op: str, arg: Expr, axis: Any) -> Expr:
    rank = len(arg.shape)
    dims = _torch_dims(axis, rank)
    shape = tuple(dim for index, dim in enumerate(arg.shape) if index not in dims)
    count = math.prod(dim_size(arg.shape[d]) for d in dims)
    bound = {"sum": arg.bound * count, "logsumexp": arg.bound + math.log(count)}.get(op, arg.bound)
    return Expr(op, (arg,), axis, shape, bound)


def axis_op(op: str, arg: Expr, axis: Any) -> Expr:
    size = dim_size(arg.shape[-1 if axis is DEFAULT else axis])
    bound = 1.0 if op == "softmax" else 2 * arg.bound + math.log(size)
    return Expr(op, (arg,), axis, arg.shape, bound)


def loss(op: str, first: Expr, second: Expr, reduction_: Any) -> Expr:
    count = math.prod(dim_size(d) for d in first.shape) if reduction_ == "sum" else 1
    if op == "mse":
        bound = (first.bound + second.bound) ** 2
    elif op == "softmax_cross_entropy":
        count = math.prod(dim_size(d) for d in first.shape[:-1]) if reduction_ == "sum" else 1
        bound = 2 * first.bound + math.log(dim_size(first.shape[-1]))
    else:
        bound = first.bound * (1 + second.bound) + math.log(2)
    return Expr(op, (first, second), reduction_, (), bound * count)


# --- the drawer -------------------------------------------------------------------------


_SYMPY_ARITHMETIC: dict[str, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
}
_ELEMENTWISE_OPS = frozenset(UNARY) | {"maximum", "minimum"}


def _sympy_value(expr: Expr) -> sp.Expr:
    """The elementwise algebra of `expr` as SymPy folds it, each tensor op a symbol named by
    its text (the compiler makes it a node, one for equal ops): enough to see `x - x` is 0."""
    if expr.op == "ref":
        return sp.Symbol(expr.attr, real=True)
    if expr.op == "num":
        constants = {"pi": sp.pi, "e": sp.E}
        if expr.attr in constants:
            return constants[expr.attr]
        return sp.Integer(expr.attr) if isinstance(expr.attr, int) else sp.Float(expr.attr)
    args = [_sympy_value(arg) for arg in expr.args]
    if expr.op == "neg":
        return -args[0]
    if expr.op in _SYMPY_ARITHMETIC:
        return _SYMPY_ARITHMETIC[expr.op](*args)
    if expr.op in ("exp", "log", "abs"):
        return {"exp": sp.exp, "log": sp.log, "abs": sp.Abs}[expr.op](args[0])
    if expr.op in _ELEMENTWISE_OPS:
        return sp.Function(expr.op)(*args)
    return sp.Symbol(formula(expr), real=True)


@dataclass
class _Drawer:
    """Draws terms of given shapes over a pool of leaves and earlier nodes.

    With `new_leaves` off (layer activations) terms use only the pool and numbers.
    """

    draw: Draw
    dims: tuple[Dim, ...]
    pool: list[Expr] = field(default_factory=list)
    leaves: dict[str, Leaf] = field(default_factory=dict)
    new_leaves: bool = True

    # leaves and shapes

    def shape(self, min_rank: int = 0, max_rank: int = MAX_RANK) -> Shape:
        rank = self.draw(st.integers(min_rank, max_rank))
        return tuple(self.draw(st.sampled_from(self.dims)) for _ in range(rank))

    def leaf(self, shape: Shape) -> Expr:
        """An earlier node or leaf of this shape (a shared node), or a new leaf."""
        known = [expr for expr in self.pool if expr.shape == shape]
        if known and (not self.new_leaves or self.draw(st.booleans())):
            return self.draw(st.sampled_from(known))
        named = any(isinstance(dim, str) for dim in shape)
        kind = "input" if named or self.draw(st.booleans()) else "param"
        name = self._fresh("x" if kind == "input" else "w")
        self.leaves[name] = Leaf(name, kind, shape)
        self.pool.append(ref(name, shape))
        return self.pool[-1]

    def labels(self, shape: Shape, classes: Dim) -> Expr:
        for leaf in self.leaves.values():
            if leaf.dtype == "int64" and leaf.shape == shape and leaf.classes == classes:
                return ref(leaf.name, shape)
        name = self._fresh("y")
        self.leaves[name] = Leaf(name, "input", shape, "int64", classes)
        return ref(name, shape)

    def _fresh(self, prefix: str) -> str:
        return f"{prefix}{sum(1 for name in self.leaves if name.startswith(prefix)) + 1}"

    def split(self, shape: Shape) -> tuple[Shape, Shape]:
        """Two shapes that broadcast to `shape`: [n, 1] with [1, m], [n, m] with [m], ..."""
        if not self.new_leaves:
            return shape, shape
        left, right = [], []
        for dim in shape:
            side = self.draw(st.sampled_from(("both", "left", "right")))
            left.append(dim if side != "right" else 1)
            right.append(dim if side != "left" else 1)
        # one side may drop leading 1s ([m] against [n, m]); the other keeps the full rank
        if self.draw(st.booleans()):
            return self._drop_leading_ones(tuple(left)), tuple(right)
        return tuple(left), self._drop_leading_ones(tuple(right))

    def _drop_leading_ones(self, shape: Shape) -> Shape:
        ones = next((index for index, dim in enumerate(shape) if dim != 1), len(shape))
        return shape[self.draw(st.integers(0, ones)) :]

    # terms

    def term(self, shape: Shape, depth: int) -> Expr:
        """A term of exactly this shape, at most `depth` ops deep (plus safety wrappers)."""
        if depth <= 0:
            return self.leaf(shape)
        kinds = ["leaf", "unary", "binary", "extremum"]
        if shape:
            kinds += ["softmax"]
        if self.new_leaves:
            kinds += ["reduce"] if len(shape) < MAX_RANK else []
            kinds += ["matmul"] if len(shape) <= 2 else []
            kinds += ["transpose"] if len(shape) >= 2 else []
            kinds += ["loss"] if not shape else []
        kind = self.draw(st.sampled_from(kinds))
        return self.squash(getattr(self, "_" + kind)(shape, depth - 1))

    def squash(self, expr: Expr) -> Expr:
        """Keep values small: `tanh(u / k)` once u's bound passes SQUASH_ABOVE."""
        if expr.bound <= SQUASH_ABOVE:
            return expr
        scale = math.ceil(expr.bound / 3)
        return unary("tanh", binary("/", expr, num(scale)))

    def operand(self, shape: Shape, depth: int) -> Expr:
        """A term that a tensor op (matmul, a reduction, ...) takes: while `constant_operand`
        is open, never one that SymPy folds to a constant, such as `x - x`."""
        expr = self.term(shape, depth)
        if self._folds_to_constant(expr):
            return binary("+", expr, self.leaf(shape))
        return expr

    @staticmethod
    def _folds_to_constant(expr: Expr) -> bool:
        return "constant_operand" in OPEN_BUGS and not _sympy_value(expr).free_symbols

    def _leaf(self, shape: Shape, depth: int) -> Expr:
        return self.leaf(shape)

    def _unary(self, shape: Shape, depth: int) -> Expr:
        op = self.draw(st.sampled_from(UNARY + ("neg",)))
        return self.safe_unary(op, self.term(shape, depth))

    def safe_unary(self, op: str, arg: Expr) -> Expr:
        """`op(arg)` with `arg` moved into the function's domain where it has one."""
        if op == "exp" and arg.bound > EXP_ARG_LIMIT:
            arg = unary("tanh", arg)
        elif op in ("log", "sqrt"):
            arg = self.positive(arg)
        elif op == "log1p":
            arg = self.positive(arg, offset=None)
        elif op == "leaky_relu":
            return unary(op, arg, self.draw(st.sampled_from((None, 0.2, 0.0, 0.5))))
        return unary(op, arg)

    def positive(self, arg: Expr, offset: float | None = 0.5) -> Expr:
        """`arg * arg + 1` or `abs(arg) + 0.5`: at least 0.5 (at least 0 without the offset)."""
        if self.draw(st.booleans()):
            square = binary("*", arg, arg)
            return square if offset is None else binary("+", square, num(1))
        size = unary("abs", arg)
        return size if offset is None else binary("+", size, num(offset))

    def _binary(self, shape: Shape, depth: int) -> Expr:
        op = self.draw(st.sampled_from(("+", "*", "-", "/", "**")))
        left_shape, right_shape = self.split(shape)
        with_number = self.draw(st.sampled_from((None, "left", "right")))
        if op == "**":
            return self._power(shape, left_shape, right_shape, depth, with_number)
        if op == "/":
            return self._divide(shape, left_shape, right_shape, depth, with_number)
        if with_number == "left":
            return binary(op, self.number(), self.term(shape, depth))
        if with_number == "right":
            return binary(op, self.term(shape, depth), self.number())
        return binary(op, self.term(left_shape, depth), self.term(right_shape, depth))

    def number(self) -> Expr:
        return num(self.draw(st.sampled_from(NUMBERS)))

    def _divide(
        self, shape: Shape, left: Shape, right: Shape, depth: int, with_number: str | None
    ) -> Expr:
        if with_number == "right":
            return binary("/", self.term(shape, depth), self.number())
        numerator = self.number() if with_number == "left" else self.term(left, depth)
        denominator = self.positive(self.term(shape if with_number else right, depth))
        return binary("/", numerator, denominator)

    def _power(
        self, shape: Shape, left: Shape, right: Shape, depth: int, with_number: str | None
    ) -> Expr:
        if with_number == "right":  # u ** 2, u ** 3, (abs(u) + 1) ** 1.5
            base = self.small(self.term(shape, depth), 3.0)
            exponent = self.draw(st.sampled_from((2, 3, 1.5, -1, 0.5, -1.5)))
            if isinstance(exponent, float) or exponent < 0:
                base = binary("+", unary("abs", base), num(1))
            return binary("**", base, num(exponent))
        exponent = self.small(self.term(shape if with_number else right, depth), 2.0)
        if with_number == "left":  # 2 ** v, e ** v
            return binary("**", num(self.draw(st.sampled_from((2, "e", 0.5)))), exponent)
        base = binary("+", unary("abs", self.small(self.term(left, depth), 3.0)), num(1))
        return binary("**", base, exponent)

    def small(self, expr: Expr, limit: float) -> Expr:
        """`expr`, or `tanh(expr)` when its bound passes `limit`."""
        return expr if expr.bound <= limit else unary("tanh", expr)

    def _extremum(self, shape: Shape, depth: int) -> Expr:
        op = self.draw(st.sampled_from(("maximum", "minimum")))
        left, right = self.split(shape)
        return binary(op, self.term(left, depth), self.term(right, depth))

    def _softmax(self, shape: Shape, depth: int) -> Expr:
        op = self.draw(st.sampled_from(("softmax", "log_softmax")))
        axis = self.draw(st.sampled_from((DEFAULT, *range(-len(shape), len(shape)))))
        return axis_op(op, self.operand(shape, depth), axis)

    def _transpose(self, shape: Shape, depth: int) -> Expr:
        return transpose(self.operand(tuple(reversed(shape)), depth))

    def _matmul(self, shape: Shape, depth: int) -> Expr:
        inner = self.draw(st.sampled_from(self.dims))
        if len(shape) == 2:
            left_shape, right_shape = (shape[0], inner), (inner, shape[1])
        elif len(shape) == 1:
            vector_left = self.draw(st.booleans())
            left_shape = (inner,) if vector_left else (shape[0], inner)
            right_shape = (inner, shape[0]) if vector_left else (inner,)
        else:
            left_shape, right_shape = (inner,), (inner,)
        left = self.small(self.operand(left_shape, depth), 5.0)
        right = self.small(self.operand(right_shape, depth), 5.0)
        return matmul(left, right)

    def _reduce(self, shape: Shape, depth: int) -> Expr:
        """A reduction whose result has `shape`: axes are put back in, then reduced away."""
        op = self.draw(st.sampled_from(REDUCTIONS))
        room = MAX_RANK - len(shape)
        # now and then no axis at all: `sum(u, axis=())` is u itself, as in NumPy
        extra = self.draw(st.integers(1, room)) if self.draw(st.integers(0, 7)) else 0
        if op == "mean" and "mean_over_no_axes" in OPEN_BUGS:
            extra = max(extra, 1)
        full = list(shape)
        axes = []
        for _ in range(extra):
            position = self.draw(st.integers(0, len(full)))
            full.insert(position, self.draw(st.sampled_from(self.dims)))
            axes = [a + (a >= position) for a in axes] + [position]
        rank = len(full)
        return reduction(
            op, self.operand(tuple(full), depth), self._axis_spelling(op, sorted(axes), rank)
        )

    def _axis_spelling(self, op: str, axes: list[int], rank: int) -> Any:
        """One way to write these axes: None or omitted for all, an int, a tuple, negatives."""
        if len(axes) == rank and rank > 0 and self.draw(st.booleans()):
            return self.draw(st.sampled_from(ALL_AXES))
        if not axes and rank:
            return ()
        if not axes:
            no_axes = () if op != "mean" or "mean_over_no_axes" not in OPEN_BUGS else DEFAULT
            return self.draw(st.sampled_from((*ALL_AXES, no_axes)))
        spelled = [a - rank if self.draw(st.booleans()) else a for a in axes]
        if len(spelled) == 1 and self.draw(st.booleans()):
            return spelled[0]
        return tuple(self.draw(st.permutations(spelled)))

    def _loss(self, shape: Shape, depth: int) -> Expr:
        op = self.draw(st.sampled_from(LOSSES))
        reduction_ = self.draw(st.sampled_from((DEFAULT, "mean", "sum")))
        if op == "softmax_cross_entropy":
            logits_shape = self.shape(min_rank=1)
            labels = self.labels(logits_shape[:-1], logits_shape[-1])
            return loss(op, self.small(self.operand(logits_shape, depth), 10.0), labels, reduction_)
        inner = self.shape()
        first = self.small(self.operand(inner, depth), 5.0)
        second = self.leaf(inner) if self.draw(st.booleans()) else self.term(inner, depth)
        if op == "binary_cross_entropy_with_logits" and self.draw(st.booleans()):
            second = unary("sigmoid", second)  # a target in [0, 1], as users give it
        second = self.small(second, 5.0)
        if op == "mse" and self._folds_to_constant(binary("-", first, second)):
            second = binary("+", second, self.leaf(inner))  # mse(u, u) sums a constant 0
        return loss(op, first, second, reduction_)

    def scalar_root(self, depth: int) -> Expr:
        """The output: a float scalar, from a loss, a reduction over all axes, or a scalar term."""
        kind = self.draw(st.sampled_from(("reduce", "loss", "term")))
        if kind == "loss":
            return self.squash(self._loss((), depth))
        if kind == "term":
            return self.term((), depth)
        op = self.draw(st.sampled_from(REDUCTIONS))
        arg = self.operand(self.shape(), depth)
        rank = len(arg.shape)
        return self.squash(reduction(op, arg, self._axis_spelling(op, list(range(rank)), rank)))


# --- whole specs ------------------------------------------------------------------------


def _dims(draw: Draw) -> tuple[Dim, ...]:
    """A few dims a spec's shapes are made of: few, so that shapes meet and nodes get shared."""
    return _some(draw, (1, 2, 3, 4), 1, 3) + _some(draw, NAMED_DIMS, 0, 2)


def _some(draw: Draw, items: Sequence[Any], least: int, most: int) -> tuple[Any, ...]:
    """Between `least` and `most` distinct items (a prefix of a permutation: unique lists are
    drawn by rejection, which hypothesis counts against the run)."""
    count = draw(st.integers(least, min(most, len(items))))
    return tuple(draw(st.permutations(items))[:count])


def _declare(leaves: Sequence[Leaf]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `inputs` and `params` sections."""
    inputs: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for leaf in leaves:
        if not leaf.declared:
            continue
        if leaf.kind == "param":
            params[leaf.name] = list(leaf.shape)
        elif leaf.dtype == "int64":
            inputs[leaf.name] = {"shape": list(leaf.shape), "dtype": "int64"}
        else:
            inputs[leaf.name] = list(leaf.shape)
    return inputs, params


def _wrt(draw: Draw, leaves: Sequence[Leaf]) -> tuple[list[str] | None, tuple[str, ...]]:
    """The `wrt` field (None: left out, so every param) and the names it means."""
    params = [leaf.name for leaf in leaves if leaf.kind == "param"]
    floats = [leaf.name for leaf in leaves if leaf.dtype == "float"]
    if params and draw(st.booleans()):
        return None, tuple(params)
    listed = list(_some(draw, floats, 1, len(floats)))
    return listed, tuple(listed)


def _finish(
    draw: Draw,
    drawer: _Drawer,
    document: dict[str, Any],
    nodes: list[tuple[str, Expr]],
    spec_nodes: int,
    rename: Mapping[str, str] | None = None,
) -> DrawnSpec:
    """Fill in the document: inputs, params, the last `spec_nodes` nodes (in a drawn order:
    the compiler sorts them), output and wrt."""
    inputs, params = _declare(tuple(drawer.leaves.values()))
    head: dict[str, Any] = {
        "name": "drawn",
        **({"dtype": "float64"} if draw(st.booleans()) else {}),
    }
    head["inputs"] = inputs
    if params:
        head["params"] = params
    document = {**head, **document}
    output = nodes[-1][0]
    if spec_nodes:
        order = draw(st.permutations(nodes[-spec_nodes:]))
        document["nodes"] = {name: formula(expr, rename) for name, expr in order}
        if order[-1][0] != output or draw(st.booleans()):
            document["output"] = output
    listed, wrt = _wrt(draw, tuple(drawer.leaves.values()))
    if listed is not None:
        document["wrt"] = listed
    return DrawnSpec(document, tuple(drawer.leaves.values()), tuple(nodes), output, wrt)


@st.composite
def graph_specs(draw: Draw) -> DrawnSpec:
    """The graph form: 1-4 named nodes, each a term over leaves and earlier nodes."""
    drawer = _Drawer(draw, _dims(draw))
    nodes: list[tuple[str, Expr]] = []
    for index in range(draw(st.integers(0, 3))):
        expr = drawer.term(drawer.shape(), draw(st.integers(1, 3)))
        name = f"n{index + 1}"
        nodes.append((name, expr))
        drawer.pool.append(ref(name, expr.shape, expr.bound))
    nodes.append(("objective", drawer.scalar_root(draw(st.integers(1, 3)))))
    return _finish(draw, drawer, {}, nodes, len(nodes))


@st.composite
def layer_specs(draw: Draw) -> DrawnSpec:
    """The layer form: 1-3 dense layers, then a loss, or a node over `out` and the output."""
    drawer = _Drawer(draw, (draw(st.integers(1, 4)), "batch"))
    current = drawer.leaf(("batch", draw(st.integers(1, 4))))  # the first input: the layers' input
    document: dict[str, Any] = {"layers": []}
    if draw(st.booleans()):
        document["input"] = current.attr
    nodes: list[tuple[str, Expr]] = []
    for index in range(1, draw(st.integers(1, 3)) + 1):
        layer, current = _layer(draw, drawer, index, current, nodes)
        document["layers"].append(layer)
    if draw(st.booleans()):
        document["loss"] = _layer_loss(draw, drawer, current, nodes)
        return _finish(draw, drawer, document, nodes, 0)
    drawer.pool.append(current)
    nodes.append(("objective", drawer.scalar_root(draw(st.integers(1, 3)))))
    return _finish(draw, drawer, document, nodes, 1, {current.attr: "out"})


def _layer(
    draw: Draw, drawer: _Drawer, index: int, current: Expr, nodes: list[tuple[str, Expr]]
) -> tuple[dict[str, Any], Expr]:
    """One dense layer: its document entry, its params and nodes; returns its output."""
    units = draw(st.integers(1, 4))
    layer: dict[str, Any] = {"dense": units}
    pre = matmul(current, _layer_param(drawer, f"W{index}", (current.shape[-1], units)))
    if draw(st.integers(0, 3)) == 0:
        layer["bias"] = False
    else:
        pre = binary("+", pre, _layer_param(drawer, f"b{index}", (units,)))
    nodes.append((f"s{index}", pre))
    current = ref(f"s{index}", pre.shape, pre.bound)
    activation = draw(st.sampled_from((*LAYER_ACTIVATIONS, "formula")))
    if activation != "identity" or draw(st.booleans()):
        layer["activation"] = activation
    if activation == "identity":
        return layer, current
    if activation == "formula":
        local = _Drawer(draw, drawer.dims, pool=[current], new_leaves=False)
        expr = local.term(current.shape, draw(st.integers(1, 3)))
        layer["activation"] = formula(expr, {current.attr: "x"})
    elif activation == "softmax":
        expr = axis_op("softmax", current, DEFAULT)
    else:
        expr = unary(activation, current)
    nodes.append((f"h{index}", expr))
    return layer, ref(f"h{index}", expr.shape, expr.bound)


def _layer_param(drawer: _Drawer, name: str, shape: Shape) -> Expr:
    drawer.leaves[name] = Leaf(name, "param", shape, declared=False)
    return ref(name, shape)


def _layer_loss(
    draw: Draw, drawer: _Drawer, last: Expr, nodes: list[tuple[str, Expr]]
) -> dict[str, Any]:
    """`loss: {kind: y[, reduction: ...]}`, and its node; the target `y` is a new input."""
    kind = draw(st.sampled_from(LOSSES))
    reduction_ = draw(st.sampled_from((DEFAULT, "mean", "sum")))
    if kind == "softmax_cross_entropy":
        target = Leaf("y", "input", last.shape[:-1], "int64", last.shape[-1])
    else:
        target = Leaf("y", "input", last.shape)
    drawer.leaves["y"] = target
    nodes.append(("loss", loss(kind, last, ref("y", target.shape), reduction_)))
    spec: dict[str, Any] = {kind: "y"}
    if reduction_ is not DEFAULT:
        spec["reduction"] = reduction_
    return spec


@st.composite
def specs(draw: Draw) -> DrawnSpec:
    """A valid spec: the graph form mostly, the layer form one time in four."""
    if draw(st.integers(0, 3)) == 0:
        return draw(layer_specs())
    return draw(graph_specs())


def ops_used(drawn: DrawnSpec) -> set[str]:
    """Every op in the drawn spec's nodes (for coverage statistics)."""
    found: set[str] = set()
    stack = [expr for _, expr in drawn.nodes]
    while stack:
        expr = stack.pop()
        found.add(expr.op)
        stack.extend(expr.args)
    return found

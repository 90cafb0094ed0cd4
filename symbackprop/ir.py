"""The tensor graph: values in topological order, each a SymPy expression over its operands.

A node is either a leaf (input or param) or an op node whose `expr` is written over the
symbols of earlier nodes: a fused elementwise SymPy expression, or one `TensorOp`
application (matmul, a reduction, ...). Shapes are tuples of ints and dim names; the
graph never holds per-neuron scalars, so its size depends on depth, not on width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from .errors import Loc

Dim = int | str
Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class TensorType:
    shape: Shape
    dtype: str  # float32, float64, int32, int64; "const" for a number in a formula

    @property
    def is_float(self) -> bool:
        return self.dtype in ("float32", "float64", "const")


class Attr(sp.Atom):
    """A constant attribute of an op (axes, flags) carried inside its SymPy expression.

    An atom, so CSE never pulls it out as a subexpression; compared by value.
    """

    value: Any

    def __new__(cls, value: Any) -> Attr:
        obj = sp.Atom.__new__(cls)
        obj.value = value
        return obj

    def _hashable_content(self) -> tuple[Any, ...]:
        # repr, so that SymPy can order two attrs of different kinds (None and a tuple)
        return (repr(self.value),)

    @property
    def args(self) -> tuple[()]:
        return ()

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self.value,)


def shape_text(shape: Shape) -> str:
    """A shape as the spec writes it: `[batch, 784]`."""
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def broadcast_shapes(*shapes: Shape) -> Shape | None:
    """NumPy broadcasting over static shapes; named dims only match themselves or 1."""
    rank = max((len(shape) for shape in shapes), default=0)
    result: list[Dim] = []
    for axis in range(rank):
        dims = {
            shape[axis - rank + len(shape)] for shape in shapes if axis - rank + len(shape) >= 0
        }
        dims.discard(1)
        if len(dims) > 1:
            return None
        result.append(dims.pop() if dims else 1)
    return tuple(result)


def reduced_axes(small: Shape, big: Shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Axes to sum an adjoint of shape `big` over to get `small`: (leading axes, size-1 axes)."""
    lead = len(big) - len(small)
    kept = tuple(
        axis + lead for axis, dim in enumerate(small) if dim == 1 and big[axis + lead] != 1
    )
    return tuple(range(lead)), kept


@dataclass
class Node:
    symbol: sp.Symbol
    type: TensorType
    kind: str  # "input", "param" or "op"
    owner: str  # the spec node (or input/param) this value belongs to
    expr: sp.Expr | None = None
    operands: tuple[sp.Symbol, ...] = ()
    anonymous: bool = False
    loc: Loc | None = None
    index: int = -1  # position in the graph, set by Graph.add

    @property
    def name(self) -> str:
        return self.symbol.name


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    by_symbol: dict[sp.Symbol, Node] = field(default_factory=dict)

    def add(self, node: Node) -> Node:
        node.index = len(self.nodes)
        self.nodes.append(node)
        self.by_symbol[node.symbol] = node
        return node

    def __getitem__(self, symbol: sp.Symbol) -> Node:
        return self.by_symbol[symbol]

    def type_of(self, symbol: sp.Symbol) -> TensorType:
        return self.by_symbol[symbol].type

    def verify(self) -> None:
        """Invariants: operands are defined before use, names are unique."""
        seen: set[sp.Symbol] = set()
        for node in self.nodes:
            for operand in node.operands:
                assert operand in seen, f"{node.name} uses {operand} before it is defined"
            assert node.symbol not in seen, f"{node.name} is defined twice"
            seen.add(node.symbol)


def symbol(name: str) -> sp.Symbol:
    """Every tensor is a real symbol, so SymPy derives |x|' = sign(x) and the like."""
    return sp.Symbol(name, real=True)


@dataclass
class Statement:
    """One line of generated code: `target = expr`, in the forward or the backward pass."""

    target: sp.Symbol
    expr: sp.Expr
    owner: str  # the spec name this line belongs to: temporaries are numbered per owner
    phase: str  # "forward" or "backward"
    note: str = ""  # the chain-rule step, for the comment above a backward line
    anonymous: bool = False  # a value the spec did not name (may be inlined)


_PARTIAL = "'"  # in no identifier: a running sum's name is no spec value's adjoint's


def partial_sum_symbol(adjoint: sp.Symbol, index: int) -> sp.Symbol:
    return symbol(f"{adjoint.name}{_PARTIAL}{index}")


def partial_sum_of(value: sp.Symbol) -> str | None:
    """The adjoint's name (`d_W`) when `value` is one of its running sums (`d_W'2`)."""
    name: str = value.name
    return name.split(_PARTIAL)[0] if _PARTIAL in name else None

"""Buffer reuse: a line whose operand is a fresh array that no later line reads writes its
result into that array (`np.multiply(d_h1, h1 > 0, out=d_h1)`), as careful hand-written
backprop does with `*=`. It saves one allocation per line, and the memory of every
adjoint the backward pass is done with.

Only arrays this function allocated itself are reused: never an input, a param, a saved
value read back from the cache (backward may run twice on one cache), a view
(`.T`, `np.broadcast_to`), a result, or a scalar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from ..functions import IsZero, Relu
from ..ir import Shape, Statement
from ..ops import BroadcastTo, ExpandDims, TensorOp, Transposed

_VIEWS = (Transposed, BroadcastTo, ExpandDims)


@dataclass(frozen=True)
class InPlace:
    """`target = np.<ufunc>(buffer, other, out=buffer)`; with `ufunc` empty, `other` is an
    op that writes into its own operand `buffer` (`_log_softmax(s2, axis=1, out=s2)`)."""

    ufunc: str
    buffer: sp.Symbol
    other: sp.Expr


def is_fresh(expr: sp.Expr) -> bool:
    """True when evaluating `expr` allocates a new array (not a view or a name)."""
    if isinstance(expr, sp.Symbol) or isinstance(expr, _VIEWS):
        return False
    return (
        isinstance(expr, TensorOp) or expr.is_Add or expr.is_Mul or expr.is_Pow or expr.is_Function
    )


def _update(expr: sp.Expr, buffer: sp.Symbol) -> InPlace | None:
    if expr.is_Mul and buffer in expr.args:
        other = expr / buffer
        if other.is_Pow and other.exp == -1:
            return InPlace("divide", buffer, other.base)
        return InPlace("multiply", buffer, other)
    if expr.is_Add and buffer in expr.args:
        other = expr - buffer
        if other.could_extract_minus_sign():
            return InPlace("subtract", buffer, -other)
        return InPlace("add", buffer, other)
    if isinstance(expr, Relu) and expr.args[0] == buffer:
        return InPlace("maximum", buffer, sp.S.Zero)
    return None


def in_place_updates(
    statements: list[Statement],
    shape_of: Callable[[sp.Symbol], Shape | None],
    keep: set[sp.Symbol],
) -> dict[sp.Symbol, InPlace]:
    """Which lines of one function may write into a dead operand, and how."""
    last_use: dict[sp.Basic, int] = {}
    aliased: set[sp.Basic] = set()  # arrays some other name also refers to (a copy or a view)
    for index, statement in enumerate(statements):
        for value in statement.expr.free_symbols:
            last_use[value] = index
        if isinstance(statement.expr, sp.Symbol):
            aliased.add(statement.expr)
        for view in statement.expr.atoms(*_VIEWS):
            aliased.update(view.args[:1])
    owned: set[sp.Symbol] = set()
    updates: dict[sp.Symbol, InPlace] = {}

    def dead_after(buffer: sp.Basic, index: int) -> bool:
        return buffer not in keep and buffer not in aliased and last_use.get(buffer) == index

    for index, statement in enumerate(statements):
        target, expr = statement.target, statement.expr
        if hasattr(expr, "in_place_text"):  # its result has its operand's shape and dtype
            buffer = expr.args[0]
            if buffer in owned and dead_after(buffer, index) and expr.count(buffer) == 1:
                updates[target] = InPlace("", buffer, expr)  # type: ignore[arg-type]
            continue
        shape = shape_of(target)
        if shape is None or not shape or not is_fresh(expr) or isinstance(expr, IsZero):
            continue  # (a bool array, `k == 0`, cannot take a float result in place)
        for buffer in sorted(expr.free_symbols & owned, key=lambda s: s.name):
            if not dead_after(buffer, index):
                continue
            if shape_of(buffer) != shape:
                continue
            if statement.expr.count(buffer) != 1:
                continue
            update = _update(expr, buffer)  # type: ignore[arg-type]
            if update is not None and buffer not in update.other.free_symbols:
                updates[target] = update
                break
        owned.add(target)
    return updates

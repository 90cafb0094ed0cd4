"""The tensor-op rule table: each op's shape rule, forward NumPy text and adjoint, in one class.

The rule contract (read this before adding an op):

- An op is a `TensorOp` subclass, applied as `Op(*operand_symbols, *Attr(...))`. Its
  first `operands` arguments are tensors; the rest are `Attr` constants (axes, flags).
- `infer(types, *attrs)` returns the result `TensorType` or raises `ShapeError` with a
  message for the user.
- `_numpy_text(printer)` returns the forward expression as NumPy source, printing its
  arguments through `printer` (never with `str()`).
- `adjoint(ctx)` returns one entry per tensor operand: `None` where no gradient flows,
  else `(expression, note)`, the operand's adjoint contribution given the output's
  adjoint `ctx.d`, and a short math note for the comment in generated code. The
  contribution must have exactly the operand's shape. It may refer to the operands,
  to the output symbol `ctx.out` (so the backward pass reads the saved output) and to
  other ops of this table.
- Ops with `language_name` are callable from formulas; the rest only appear in
  backward passes. Elementwise math never comes here: SymPy derives it (functions.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from .functions import Maximum
from .ir import Attr, Dim, Shape, TensorType, reduced_axes, shape_text

if TYPE_CHECKING:
    from .printer import NumpyPrinter

Contribution = tuple[sp.Expr, str] | None


class ShapeError(ValueError):
    """An op applied to tensors of the wrong shape or dtype (a user's mistake)."""


@dataclass(frozen=True)
class AdjointContext:
    op: TensorOp
    out: sp.Symbol
    d: sp.Expr
    type_of: Callable[[sp.Basic], TensorType]
    d_expr: sp.Expr | None = None  # what `d` was computed from (for fusing rules)

    @property
    def operands(self) -> tuple[sp.Expr, ...]:
        return self.op.tensor_args

    @property
    def attrs(self) -> tuple[Any, ...]:
        return self.op.attrs

    def shape(self, value: sp.Basic) -> Shape:
        return self.type_of(value).shape


class TensorOp(sp.Function):
    """Base of every non-elementwise op. Never auto-evaluated; real-valued."""

    is_real = True
    operands: ClassVar[int] = 1
    language_name: ClassVar[str | None] = None
    keywords: ClassVar[dict[str, Any]] = {}
    precedence: ClassVar[int] = PRECEDENCE["Atom"]
    helpers: ClassVar[tuple[str, ...]] = ()
    # the operands the op is linear in: it is 0 where one of them is 0 (`passes.fold_numbers`
    # folds it, `0.sum(axis=0)` would not parse)
    linear_in: ClassVar[tuple[int, ...]] = ()

    @classmethod
    def eval(cls, *args: sp.Basic) -> None:
        return None

    @property
    def tensor_args(self) -> tuple[sp.Expr, ...]:
        return self.args[: self.operands]

    @property
    def attrs(self) -> tuple[Any, ...]:
        return tuple(arg.value for arg in self.args[self.operands :])

    @classmethod
    def make(cls, *tensors: sp.Expr, attrs: tuple[Any, ...] = ()) -> sp.Expr:
        return cls(*tensors, *(Attr(value) for value in attrs))

    @classmethod
    def attrs_from(cls, types: list[TensorType], keywords: dict[str, Any]) -> tuple[Any, ...]:
        return ()

    @classmethod
    def infer(cls, types: list[TensorType], *attrs: Any) -> TensorType:
        raise NotImplementedError

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        raise NotImplementedError(f"{type(self).__name__} has no adjoint")

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        raise NotImplementedError


def lowered(expr: sp.Expr) -> sp.Expr:
    """`expr` with each op that has a `lowered` form written in it, for the forward pass
    (the op itself stays in the graph, where its adjoint rule applies)."""
    return expr.replace(
        lambda item: isinstance(item, TensorOp) and hasattr(item, "lowered"),
        lambda item: item.lowered(),
    )


def lowering_note(expr: sp.Expr) -> str:
    """What the forward line's comment says about the lowered ops in `expr` ("" if none)."""
    notes = {getattr(item, "lowering_note", "") for item in expr.atoms(TensorOp)}
    return "; ".join(sorted(note for note in notes if note))


def float_dtype(types: list[TensorType], what: str) -> str:
    """The one float dtype of some operands ("const" if all are numbers), or a ShapeError."""
    if not all(t.is_float for t in types):
        raise ShapeError(f"{what} needs float tensors; integer inputs can only be labels")
    dtypes = {t.dtype for t in types if t.dtype != "const"}
    if len(dtypes) > 1:
        raise ShapeError(f"{what} mixes dtypes {' and '.join(sorted(dtypes))}")
    return dtypes.pop() if dtypes else "const"


# --- matrix products -------------------------------------------------------------------


# Class names matter to SymPy: it sets `is_<ClassName>` on every class and tests, say,
# `is_MatMul` and `is_Transpose` itself; hence MatrixProduct and Transposed.
class MatrixProduct(TensorOp):
    """a @ b for vectors and matrices (NumPy's rules for ranks 1 and 2).

    Printed as `np.dot(a, b)`, which for these ranks computes what `a @ b` does through the
    same BLAS call, but dispatches in about 0.55 us where the `@` ufunc takes 0.85 us: at
    small sizes a network's products are mostly dispatch (benchmarks/README.md). But a
    product whose result is known to be large, a weight gradient `h.T @ d`, is printed
    `np.matmul(a, b)`: there the inner dim (the batch) is small against the result, and
    np.dot's BLAS call runs 4-8% slower than matmul's (111 against 103 us for 784 x 64 by
    64 x 128). An optional attr carries that size, where the adjoint rule knows it.
    """

    linear_in = (0, 1)

    operands = 2

    @classmethod
    def infer(cls, types: list[TensorType]) -> TensorType:
        a, b = types
        dtype = float_dtype(types, "@")
        if not 1 <= len(a.shape) <= 2 or not 1 <= len(b.shape) <= 2:
            raise ShapeError(
                "@ takes vectors and matrices, not shapes "
                f"{shape_text(a.shape)} and {shape_text(b.shape)}"
            )
        if a.shape[-1] != b.shape[0]:
            raise ShapeError(
                f"@ cannot multiply {shape_text(a.shape)} by {shape_text(b.shape)}: "
                f"{a.shape[-1]} != {b.shape[0]}"
            )
        return TensorType(a.shape[:-1] + b.shape[1:], dtype)

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        a, b = ctx.operands
        d = ctx.d
        rank_a, rank_b = len(ctx.shape(a)), len(ctx.shape(b))
        out = ctx.out
        if rank_a == 2 and rank_b == 2:
            return (
                (_product(d, Transposed(b), ctx.shape(a)), f"dL/d{out} @ {b}^T"),
                (_product(Transposed(a), d, ctx.shape(b)), f"{a}^T @ dL/d{out}"),
            )
        if rank_a == 1 and rank_b == 2:
            return (
                (MatrixProduct(b, d), f"{b} @ dL/d{out}"),
                (Outer(a, d), f"outer({a}, dL/d{out})"),
            )
        if rank_a == 2 and rank_b == 1:
            return (
                (Outer(d, b), f"outer(dL/d{out}, {b})"),
                (MatrixProduct(Transposed(a), d), f"{a}^T @ dL/d{out}"),
            )
        return ((d * b, f"dL/d{out} * {b}"), (d * a, f"dL/d{out} * {a}"))

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        size = self.attrs[0] if self.attrs else 0
        function = "np.matmul" if size >= MATMUL_MIN_SIZE else "np.dot"
        return printer.call(function, self.tensor_args)


# Products whose result has at least this many elements, known when compiled, print
# np.matmul: np.dot is as fast up to 64 x 128 results (8192) and slower from 256 x 128 on.
MATMUL_MIN_SIZE = 16384


def _product(a: sp.Expr, b: sp.Expr, shape: Shape) -> sp.Expr:
    """a @ b, of result `shape`, with its size as the op's attr where every dim is a number."""
    if all(isinstance(dim, int) for dim in shape):
        return MatrixProduct.make(a, b, attrs=(math.prod(shape),))  # type: ignore[arg-type]
    return MatrixProduct(a, b)


class Transposed(TensorOp):
    linear_in = (0,)

    language_name = "transpose"

    @classmethod
    def infer(cls, types: list[TensorType]) -> TensorType:
        (a,) = types
        return TensorType(tuple(reversed(a.shape)), float_dtype(types, "transpose"))

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        return ((Transposed(ctx.d), f"(dL/d{ctx.out})^T"),)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.parenthesize(self.args[0], PRECEDENCE["Atom"]) + ".T"

    def is_attribute_chain(self) -> bool:
        """Printed `name.T`: a simple operand of `**` to ruff, which hugs it (`w.T**2`)."""
        return bool(self.args[0].is_Symbol)


class Outer(TensorOp):
    """The outer product of two vectors (backward passes of vector @ matrix)."""

    linear_in = (0, 1)

    operands = 2

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.call("np.outer", self.args)


# --- reductions ------------------------------------------------------------------------


def _normalize_axes(axis: Any, rank: int, what: str) -> tuple[int, ...] | None:
    if axis is None:
        return None
    axes = axis if isinstance(axis, tuple) else (axis,)
    result = []
    for item in axes:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ShapeError(f"axis of {what} must be an int or a tuple of ints")
        if not -rank <= item < rank:
            raise ShapeError(f"axis {item} of {what} is out of range for a tensor of rank {rank}")
        result.append(item % rank)
    if len(set(result)) != len(result):
        raise ShapeError(f"axis of {what} repeats an axis")
    return tuple(sorted(result))


def _reduced_shape(shape: Shape, axes: tuple[int, ...] | None, keepdims: bool) -> Shape:
    axes_set = set(range(len(shape))) if axes is None else set(axes)
    if keepdims:
        return tuple(1 if axis in axes_set else dim for axis, dim in enumerate(shape))
    return tuple(dim for axis, dim in enumerate(shape) if axis not in axes_set)


class Reduction(TensorOp):
    """op(x, axes, keepdims): axes a sorted tuple of non-negative ints, or None for all."""

    keywords = {"axis": None}
    numpy_name: ClassVar[str] = ""  # a module function, `_logsumexp(x, axis=1)`
    method_name: ClassVar[str] = ""  # or an ndarray method, `x.sum(axis=1)`: half the call cost

    @classmethod
    def attrs_from(cls, types: list[TensorType], keywords: dict[str, Any]) -> tuple[Any, ...]:
        return (
            _normalize_axes(keywords["axis"], len(types[0].shape), cls.language_name or ""),
            False,
        )

    @classmethod
    def infer(cls, types: list[TensorType], axes: Any, keepdims: bool) -> TensorType:
        dtype = float_dtype(types, cls.language_name or cls.__name__)
        if not types[0].shape and axes:
            raise ShapeError(f"{cls.language_name} of a scalar has no axis")
        return TensorType(_reduced_shape(types[0].shape, axes, keepdims), dtype)

    def expanded(self, value: sp.Expr) -> sp.Expr:
        """`value` (shaped like this reduction's result) with the reduced axes put back as 1s."""
        axes, keepdims = self.attrs
        if keepdims or axes is None:
            return value
        return ExpandDims.make(value, attrs=(axes,))

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        axes, keepdims = self.attrs
        keywords = {"axis": axes, "keepdims": True} if keepdims else {"axis": axes}
        if self.method_name:
            receiver = printer.parenthesize(self.args[0], PRECEDENCE["Atom"])
            return printer.call(f"{receiver}.{self.method_name}", (), keywords)
        return printer.call(self.numpy_name, self.args[:1], keywords)


class ReduceSum(Reduction):
    linear_in = (0,)

    language_name = "sum"
    method_name = "sum"

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        (x,) = ctx.operands
        grad = BroadcastTo(self.expanded(ctx.d), ShapeOf(x))
        return ((grad, f"dL/d{ctx.out} broadcast to {x}'s shape"),)


class ReduceMean(Reduction):
    """Printed as sum / count: np.mean is a Python-level wrapper, several times slower."""

    linear_in = (0,)

    language_name = "mean"
    method_name = "sum"
    precedence = PRECEDENCE["Mul"]

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        count = Count.make(self.args[0], attrs=(self.attrs[0],))
        divisor = printer.parenthesize(count, PRECEDENCE["Mul"], strict=True)
        return f"{super()._numpy_text(printer)} / {divisor}"

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        (x,) = ctx.operands
        axes = self.attrs[0]
        grad = BroadcastTo(self.expanded(ctx.d) / Count.make(x, attrs=(axes,)), ShapeOf(x))
        return ((grad, f"dL/d{ctx.out} / n, broadcast to {x}'s shape"),)


class ReduceMax(Reduction):
    """The max gate routes the gradient to the maxima, shared evenly on ties (as PyTorch)."""

    language_name = "max"
    method_name = "max"

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        (x,) = ctx.operands
        axes = self.attrs[0]
        mask = EqualMask(x, self.expanded(ctx.out))
        # at least 1: a NaN max equals no element, and 0 / 0 would warn
        ties = Maximum(ReduceSum.make(mask, attrs=(axes, True)), 1)
        grad = self.expanded(ctx.d) * mask / ties
        return ((grad, f"dL/d{ctx.out} routed to the argmax of {x}"),)


class LogSumExp(Reduction):
    """log(sum(exp(x))), computed around the max so that no exp overflows."""

    language_name = "logsumexp"
    numpy_name = "_logsumexp"
    helpers = ("logsumexp",)

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        (x,) = ctx.operands
        grad = self.expanded(ctx.d) * sp.exp(x - self.expanded(ctx.out))
        return ((grad, f"dL/d{ctx.out} * softmax({x})"),)


class _AxisOp(TensorOp):
    keywords = {"axis": -1}

    @classmethod
    def attrs_from(cls, types: list[TensorType], keywords: dict[str, Any]) -> tuple[Any, ...]:
        axis = keywords["axis"]
        if axis is None or isinstance(axis, tuple):
            raise ShapeError(f"axis of {cls.language_name} must be one int")
        if not types[0].shape:
            raise ShapeError(f"{cls.language_name} needs a tensor with at least one dim")
        axes = _normalize_axes(axis, len(types[0].shape), cls.language_name or "")
        return (axes[0],) if axes else (0,)

    @classmethod
    def infer(cls, types: list[TensorType], axis: int) -> TensorType:
        return TensorType(types[0].shape, float_dtype(types, cls.language_name or ""))

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.call(
            "_" + (self.language_name or ""), self.args[:1], {"axis": self.attrs[0]}
        )


class Softmax(_AxisOp):
    language_name = "softmax"
    precedence = PRECEDENCE["Mul"]  # printed as a quotient where it is not lowered first
    lowering_note = "softmax, shifted by its max"

    def lowered(self) -> sp.Expr:
        """exp(x - max(x)) / sum(exp(x - max(x))): the shift keeps exp from overflowing.
        The forward pass prints this form (CSE names the exp), so no helper is needed."""
        (axis,) = self.attrs
        x = self.args[0]
        shifted = sp.exp(x - ReduceMax.make(x, attrs=((axis,), True)))
        return shifted / ReduceSum.make(shifted, attrs=((axis,), True))

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.doprint(self.lowered())  # where a line was not lowered first

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        (axis,) = self.attrs
        s, d = ctx.out, ctx.d
        grad = s * (d - ReduceSum.make(d * s, attrs=((axis,), True)))
        return ((grad, f"{s} * (dL/d{s} - sum(dL/d{s} * {s}))"),)


class LogSoftmax(_AxisOp):
    """Attrs: the axis; the length of a matrix's rows when the axis is theirs and the
    length a number (else None); the dtype. Such rows are summed by a product with a
    column of ones: one BLAS call, where `.sum(axis=1)` loops over the rows in C."""

    language_name = "log_softmax"
    helpers = ("log_softmax",)

    @classmethod
    def attrs_from(cls, types: list[TensorType], keywords: dict[str, Any]) -> tuple[Any, ...]:
        (axis,) = super().attrs_from(types, keywords)
        shape = types[0].shape
        row = shape[1] if len(shape) == 2 and axis == 1 and isinstance(shape[1], int) else None
        return axis, row, float_dtype(types, "log_softmax")

    @classmethod
    def infer(cls, types: list[TensorType], axis: int, *rows_and_dtype: Any) -> TensorType:
        return super().infer(types, axis)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return self._call(printer)

    def in_place_text(self, printer: NumpyPrinter) -> str:
        """Written into its operand's array (`passes.inplace` knows when none reads it
        after): the logits of a large batch are the forward pass's largest arrays."""
        return self._call(printer, out=self.tensor_args[0])

    def _call(self, printer: NumpyPrinter, out: sp.Expr | None = None) -> str:
        axis, row, dtype = self.attrs
        ones = sp.Symbol(printer.use_ones_column(row, dtype)) if row is not None else None
        keywords = {"axis": axis, "out": out, "row_ones": ones}
        return printer.call("_log_softmax", self.tensor_args, keywords)

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        axis = self.attrs[0]
        out, d = ctx.out, ctx.d
        fused = _cross_entropy_scale(ctx.d_expr, out, axis, len(ctx.shape(out)))
        if fused is not None:
            labels, scale = fused
            log_probs = ctx.type_of(out)
            grad = ProbsMinusOneHot.make(  # scale is -dL/dloss / n
                out, labels, -scale, attrs=(log_probs.shape[-1], log_probs.dtype)
            )
            (logits,) = ctx.operands
            loss = ", ".join(
                sorted(s.name[2:] for s in scale.free_symbols if s.name.startswith("d_"))
            )
            per = " / n" if scale.atoms(Count) else ""
            note = f"(softmax({logits}) - one_hot({labels})) * dL/d{loss}{per} (fused log_softmax)"
            return ((grad, note),)
        grad = d - sp.exp(out) * ReduceSum.make(d, attrs=((axis,), True))
        return ((grad, f"dL/d{out} - exp({out}) * sum(dL/d{out})"),)


def _cross_entropy_scale(
    d_expr: sp.Expr | None, log_probs: sp.Symbol, axis: int, rank: int
) -> tuple[sp.Expr, sp.Expr] | None:
    """When dL/dlog_probs is `one_hot(labels) * s` with s one number (cross-entropy's), the
    log_softmax adjoint `d - exp(lp) * sum(d)` is `(exp(lp) - one_hot) * s`, since each
    one-hot row sums to 1: return (labels, s)."""
    if d_expr is None or axis != rank - 1 or not d_expr.is_Mul:
        return None
    hots = [f for f in d_expr.args if isinstance(f, OneHot)]
    if len(hots) != 1:
        return None
    scale = d_expr / hots[0]
    if any(not isinstance(s, sp.Symbol) or s == log_probs for s in scale.free_symbols):
        return None
    if scale.atoms(TensorOp) - scale.atoms(Count):
        return None
    return hots[0].args[0], scale


class NegLogLikelihood(TensorOp):
    """-mean (or -sum) of log-probabilities picked by integer labels along the last axis."""

    operands = 2
    precedence = PRECEDENCE["Add"]

    @classmethod
    def infer(cls, types: list[TensorType], reduction: str, classes: Dim, dtype: str) -> TensorType:
        """Attrs: the reduction, and the class count and dtype of the log-probabilities
        (the printer picks the labels' one-hot rows from a table for few classes)."""
        logp, labels = types
        if labels.dtype not in ("int32", "int64"):
            raise ShapeError(f"labels must be an int tensor, not {labels.dtype}")
        if not logp.is_float or logp.dtype == "const" or not logp.shape:
            raise ShapeError("logits must be a float tensor with a class axis")
        if labels.shape != logp.shape[:-1]:
            raise ShapeError(
                f"labels of shape {shape_text(labels.shape)} do not fit logits of shape "
                f"{shape_text(logp.shape)} (expected {shape_text(logp.shape[:-1])})"
            )
        return TensorType((), logp.dtype)

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        _, labels = ctx.operands
        reduction = self.attrs[0]
        scale = -ctx.d if reduction == "sum" else -ctx.d / Count.make(labels, attrs=(None,))
        grad = OneHot(labels, ctx.operands[0]) * scale
        return (
            (grad, f"-one_hot({labels}) * dL/d{ctx.out}" + (" / n" if reduction != "sum" else "")),
            None,
        )

    helpers = ("picked",)

    def _table(self) -> bool:
        return has_one_hot_table(self.attrs[1])

    def lowered(self) -> sp.Expr:
        """Few classes: -(the picked log-probabilities' sum) / n, which the forward pass
        prints, so a line too long moves `_picked_sum(...)` to a line of its own. Else
        the op itself, `-_picked(...).sum() / n` (ruff breaks it as one expression)."""
        if not self._table():
            return self
        reduction, classes, dtype = self.attrs
        log_probs, labels = self.tensor_args
        total = PickedSum.make(log_probs, labels, attrs=(classes, dtype))
        return -total if reduction == "sum" else NegatedMean(total, labels)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        if self._table():
            return printer.doprint(self.lowered())
        total = f"-{printer.call('_picked', self.tensor_args)}.sum()"
        if self.attrs[0] == "sum":
            return total
        labels = printer.parenthesize(self.args[1], PRECEDENCE["Atom"])
        return f"{total} / {labels}.size"


class NegatedMean(TensorOp):
    """-total / labels.size: one op, so that CSE does not share the count with the
    backward pass (it would cache `1 / labels.size` for it)."""

    operands = 2
    precedence = PRECEDENCE["Mul"]

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        total, labels = self.tensor_args
        count = printer.parenthesize(labels, PRECEDENCE["Atom"])
        return f"-{printer.parenthesize(total, PRECEDENCE['Mul'])} / {count}.size"


class PickedSum(TensorOp):
    """The sum over rows of log_probs[..., label], for few classes: `_picked_sum` picks
    and sums by one dot product with the labels' one-hot rows from a table. Attrs: the
    class count and the dtype."""

    operands = 2
    helpers = ("picked", "picked_sum")

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        classes, dtype = self.attrs
        args = [printer._print(arg) for arg in self.tensor_args]
        args.append(printer.use_one_hot_rows(classes, dtype))
        return f"_picked_sum({', '.join(args)})"


# --- helpers of backward passes --------------------------------------------------------


class ShapeOf(TensorOp):
    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.parenthesize(self.args[0], PRECEDENCE["Atom"]) + ".shape"


class Count(TensorOp):
    """How many elements a reduction over `axes` of x averages (a Python int at run time)."""

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        x = printer.parenthesize(self.args[0], PRECEDENCE["Atom"])
        (axes,) = self.attrs
        if axes is None:
            return f"{x}.size"
        return " * ".join(f"{x}.shape[{axis}]" for axis in axes) or "1"  # axis=() reduces none

    @property
    def precedence(self) -> int:  # type: ignore[override]
        axes = self.attrs[0]
        return PRECEDENCE["Mul"] if axes is not None and len(axes) > 1 else PRECEDENCE["Atom"]


class DimsOf(TensorOp):
    """A value's shape, or how many elements it has along some axes, written from its
    dims where the value itself is not kept: a number as it is, a named dim read off
    `source`, a value the backward pass has anyway (`(x.shape[0], 4)`, `x.shape[0] * 4`).
    Attrs: per dim, a number or the axis of `source` that has it; and "shape" or
    "count". With no named dim, `source` is 0 and no value is read."""

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        dims, form = self.attrs
        source = printer.parenthesize(self.args[0], PRECEDENCE["Atom"])
        parts = [str(size) if fixed else f"{source}.shape[{size}]" for fixed, size in dims]
        if form == "count" and all(fixed for fixed, _ in dims):
            return str(math.prod(size for _, size in dims))
        if form == "count":
            return " * ".join(parts) or "1"
        return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"

    @property
    def precedence(self) -> int:  # type: ignore[override]
        dims, form = self.attrs
        named = sum(not fixed for fixed, _ in dims)
        product = form == "count" and len(dims) > 1 and named > 0
        return PRECEDENCE["Mul"] if product else PRECEDENCE["Atom"]


class Copy(TensorOp):
    """A fresh, writable array: for a gradient that would be a read-only broadcast view or
    the same array as another gradient (users update gradients in place)."""

    linear_in = (0,)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.call("np.array", self.args)


class Masked(TensorOp):
    """An adjoint where x > 0, `at_zero` times it where x = 0, else 0, even where the
    adjoint is inf or NaN: the mask of a relu (`at_zero` 0) or of maximum (1/2) on an
    adjoint that may be infinite where x <= 0, as in sqrt(relu(x)). A product, as the
    mask is applied elsewhere, would give 0 * inf = NaN there; PyTorch gives 0, and at a
    tie of maximum half the adjoint."""

    linear_in = (0,)

    operands = 2

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        adjoint, x = (printer._print(arg) for arg in self.tensor_args)
        zero = printer.zero()
        (at_zero,) = self.attrs
        if at_zero == 0:
            return f"np.where({x} > {zero}, {adjoint}, {zero})"
        tie = printer._print(at_zero * self.args[0])
        return f"np.where({x} > {zero}, {adjoint}, np.where({x} < {zero}, {zero}, {tie}))"


class BroadcastTo(TensorOp):
    linear_in = (0,)

    operands = 2

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.call("np.broadcast_to", self.args)


class ExpandDims(TensorOp):
    linear_in = (0,)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.call("np.expand_dims", self.args[:1], {"axis": self.attrs[0]})


class SumTo(TensorOp):
    """An adjoint summed over the axes its operand was broadcast along (leading, then kept)."""

    linear_in = (0,)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        lead, kept = self.attrs
        text = printer.parenthesize(self.args[0], PRECEDENCE["Atom"])
        if kept:
            text = printer.call(f"{text}.sum", [], {"axis": kept, "keepdims": True})
        if lead:
            text = printer.call(f"{text}.sum", [], {"axis": lead})
        return text


class Ones(TensorOp):
    """A vector of ones as long as dim `dim`: `Ones(source, dim, axis, dtype)` reads the
    length off a value the backward pass has anyway, `source.shape[axis]`; a dim that is a
    number is written as it is (`source` is then that number, and no value is read)."""

    print_note = "ones @ d sums the rows of d in one BLAS call"
    helpers = ("ones",)

    @property
    def tensor_args(self) -> tuple[sp.Expr, ...]:
        return self.args[:1] if isinstance(self.args[0], sp.Symbol) else ()

    @property
    def dim(self) -> str | int:
        return self.attrs[0]

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        source = self.args[0]
        dim, axis, dtype = self.attrs
        length = (
            str(dim)
            if isinstance(dim, int)
            else f"{printer.parenthesize(source, PRECEDENCE['Atom'])}.shape[{axis}]"
        )
        return f"_ones({length}, {printer.dtype_text(dtype)})"

    def with_source(self, source: sp.Symbol, axis: int) -> sp.Expr:
        dim, _, dtype = self.attrs
        return Ones.make(source, attrs=(dim, axis, dtype))


class BatchSum(TensorOp):
    """A matrix summed over its rows as `ones @ d`: `BatchSum(d, Ones(...))`, the bias
    gradient of a batch. One BLAS call, 2-3x faster than `d.sum(axis=0)` (0.5 against
    1.3 us for 32 x 64, 1.6 against 4.3 us for 128 x 256), once the ones are made (0.8 us);
    so only where several sums share them (`passes.batch_sums` undoes the rest)."""

    linear_in = (0,)

    operands = 2

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        matrix, ones = self.args
        return printer.call("np.dot", [ones, matrix])

    def as_sum(self) -> sp.Expr:
        return SumTo.make(self.args[0], attrs=((0,), ()))


class EqualMask(TensorOp):
    """1 where x equals m, else 0, in x's dtype."""

    operands = 2
    helpers = ("equal_mask",)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.call("_equal_mask", self.args)


# Up to this many classes, a one-hot row is taken from a table (the identity matrix, a
# module constant of classes**2 numbers): one `take` in 0.5 us, where the scatter
# `probs[rows, labels] -= 1` takes 2.3 us. Past it the table grows, and a batch's one-hot
# rows cost as much as its softmax, while the scatter writes one number a row.
ONE_HOT_TABLE_MAX_CLASSES = 64
# ... and only while the rows taken are at most this many bytes (checked at run time), or
# each no larger than the index and value the scatter makes per row (2 classes, 3 in
# float32): `take` makes an array as large as the softmax, more memory than the scatter
# needs for a large batch, and from 16 classes on no faster (benchmarks/README.md).
ONE_HOT_TABLE_MAX_BYTES = 32 * 1024


def has_one_hot_table(classes: Dim) -> bool:
    """Whether the one-hot rows of `classes` come from a module constant table."""
    return isinstance(classes, int) and classes <= ONE_HOT_TABLE_MAX_CLASSES


class ProbsMinusOneHot(TensorOp):
    """(softmax - one_hot(labels)) * scale from log-probabilities, in place: one subtraction
    per row and one scaling, where the unfused chain takes a one-hot array and a reduction.
    Attrs: the class count (an int, or a dim's name) and the dtype."""

    operands = 3
    helpers = ("probs_minus_one_hot",)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        classes, dtype = self.attrs
        args = [printer._print(arg) for arg in self.tensor_args]
        if has_one_hot_table(classes):
            args.append(printer.use_one_hot_rows(classes, dtype))
        return f"_probs_minus_one_hot({', '.join(args)})"


class OneHot(TensorOp):
    """One-hot rows of int labels, as wide and of the same dtype as `like`."""

    operands = 2
    helpers = ("one_hot",)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        return printer.call("_one_hot", self.args)


LANGUAGE_OPS: dict[str, type[TensorOp]] = {
    op.language_name: op
    for op in (Transposed, ReduceSum, ReduceMean, ReduceMax, LogSumExp, Softmax, LogSoftmax)
    if op.language_name
}


class Fill(TensorOp):
    """A value whose tensors SymPy simplified away (`x - x`, `y + 0 * x`), filled out to the
    shape those tensors set: `Fill(value, *sources)`, value a number or a graph symbol."""

    @property
    def tensor_args(self) -> tuple[sp.Expr, ...]:
        return self.args[:1] if isinstance(self.args[0], sp.Symbol) else ()

    @property
    def attrs(self) -> tuple[Any, ...]:
        return ()

    def adjoint(self, ctx: AdjointContext) -> tuple[Contribution, ...]:
        if not self.tensor_args:
            return ()
        (value,) = self.tensor_args
        lead, kept = reduced_axes(ctx.shape(value), ctx.shape(ctx.out))
        grad = SumTo.make(ctx.d, attrs=(lead, kept)) if lead or kept else ctx.d
        return ((grad, f"dL/d{ctx.out} summed to {value}'s shape"),)

    def _numpy_text(self, printer: NumpyPrinter) -> str:
        value, *sources = self.args
        if len(sources) == 1 and isinstance(sources[0], DimsOf):  # a shape written out
            shape = printer.doprint(sources[0])
        elif len(sources) == 1:
            shape = printer.doprint(ShapeOf(sources[0]))
        elif sources:
            shape = printer.call("np.broadcast_shapes", [ShapeOf(source) for source in sources])
        else:
            shape = "()"
        return printer.call(
            "np.full",
            [],
            raw_args=[shape, printer.doprint(value), f"dtype={printer.dtype_text(printer.dtype)}"],
        )

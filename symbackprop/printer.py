"""SymPy expressions -> NumPy source text, formatted as `ruff format` would leave it.

Dispatch is SymPy's: `_print_<ClassName>` here for algebra and elementwise functions, and
each tensor op's own `_numpy_text` (ops.py). Functions come from one lookup table. The
printer records the module helpers (`_sigmoid`, `_logsumexp`, ...) its text calls, so
that the emitted module defines exactly those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sympy as sp
from sympy.printing.precedence import PRECEDENCE, precedence
from sympy.printing.str import StrPrinter

from . import functions as fn

# name of the NumPy function (or module helper) for each elementwise SymPy function
_FUNCTIONS: dict[type, str] = {
    sp.exp: "np.exp",
    sp.log: "np.log",
    sp.sin: "np.sin",
    sp.cos: "np.cos",
    sp.tanh: "np.tanh",
    sp.Abs: "np.abs",
    sp.sign: "np.sign",
    fn.Log1p: "np.log1p",
    fn.Sqrt: "np.sqrt",
    fn.Maximum: "np.maximum",
    fn.Minimum: "np.minimum",
    fn.Expm1: "np.expm1",
}
# Functions NumPy lacks are printed inline in a numerically stable form (no helper to
# define, so swapping an activation changes that layer's lines and nothing else); a line
# that uses such a form says so in a comment (`stability_note`).
_STABILITY_NOTES: dict[type, str] = {
    fn.Sigmoid: "stable sigmoid as exp(-logaddexp(0, -x))",
    fn.Softplus: "stable softplus as logaddexp(0, x)",
    # softplus' through its output: 1 - exp(-h), which cancels for small h
    fn.Expm1: "expm1: exact 1 - exp(-x)",
}


def number_literal(value: float | int) -> str:
    """`repr(value)` as ruff format writes a number: `1e22`, not Python's `1e+22`."""
    return repr(value).replace("e+", "e")


def stability_note(expr: sp.Expr) -> str:
    """The comment naming the stable rewrites `expr` is printed with, and why a tensor op
    is printed as it is (its `print_note`), "" if none."""
    used = {_STABILITY_NOTES[type(item)] for item in expr.atoms(*_STABILITY_NOTES)}
    used |= {getattr(item, "print_note", "") for item in expr.atoms(sp.Function)}
    return "; ".join(sorted(used - {""}))


class NumpyPrinter(StrPrinter):
    printmethod = "_numpy_text"

    def __init__(self, dtype: str = "float64") -> None:
        """`dtype`: the module's dtype, which the text names (`_DTYPE`) rather than spells out."""
        super().__init__({"order": None})
        self.dtype = dtype
        self.helpers_used: set[str] = set()
        # module constants the text reads: name -> (comment, value)
        self.constants: dict[str, tuple[str, str]] = {}

    def use_helper(self, name: str) -> None:
        """Record a module helper the printed text calls (the module defines only those)."""
        self.helpers_used.add(name)

    def use_one_hot_rows(self, classes: int, dtype: str) -> str:
        """The name of the module constant whose row k is one_hot(k) among `classes`."""
        comment = (
            f"Row k is one_hot(k) among {classes} classes: cross-entropy takes a batch's "
            "one-hot rows from it in one call."
        )
        value = f"np.eye({classes}, dtype={self.dtype_text(dtype)})"
        return self._constant(f"_ONE_HOT_ROWS_{classes}", dtype, comment, value)

    def use_ones_column(self, length: int, dtype: str) -> str:
        """The name of the module constant holding a column of `length` ones."""
        comment = f"x @ this column of {length} ones sums each row of x in one BLAS call."
        value = f"np.ones(({length}, 1), dtype={self.dtype_text(dtype)})"
        return self._constant(f"_ONES_COLUMN_{length}", dtype, comment, value)

    def zero(self) -> str:
        """The 0 of relu and of its mask `h > 0`: `_ZERO`, a 0-d array of the module's
        dtype, the dtype of every float array (spec.py refuses an input of another).
        NumPy converts a Python 0, or a NumPy scalar, into a 0-d array on every call:
        0.1-0.2 us of the 0.25-0.9 a relu or comparison takes (benchmarks/README.md)."""
        return "_ZERO"

    def _constant(self, name: str, dtype: str, comment: str, value: str) -> str:
        if dtype != self.dtype:
            name += f"_{dtype.upper()}"
        self.constants[name] = (comment, value)
        return name

    def dtype_text(self, dtype: str) -> str:
        return "_DTYPE" if dtype == self.dtype else f"np.{dtype}"

    # --- building blocks used by ops.py ------------------------------------------------

    def parenthesize(self, item: sp.Basic, level: int, strict: bool = False) -> str:
        prec = _printed_precedence(item)
        text = self._print(item)
        if prec < level or (strict and prec <= level):
            return f"({text})"
        return text

    def literal(self, value: Any) -> str:
        if isinstance(value, sp.Basic):  # an array, passed by keyword (`out=s2`)
            return self._print(value)
        if isinstance(value, tuple) and len(value) == 1:
            return self.literal(value[0])
        if isinstance(value, tuple):
            inner = ", ".join(self.literal(item) for item in value)
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        return number_literal(value) if isinstance(value, float) else repr(value)

    def call(
        self,
        name: str,
        args: Iterable[sp.Basic] = (),
        keywords: Mapping[str, Any] | None = None,
        raw_args: Iterable[str] = (),
    ) -> str:
        parts = list(raw_args) + [self._print(arg) for arg in args]
        parts += [
            f"{key}={self.literal(value)}"
            for key, value in (keywords or {}).items()
            if value is not None
        ]
        return f"{name}({', '.join(parts)})"

    def in_place(self, ufunc: str, buffer: sp.Symbol, other: sp.Expr) -> str:
        """`np.<ufunc>(buffer, other, out=buffer)`; a 0/1 step is passed as a comparison.
        Without a ufunc, `other` is an op that writes into its operand `buffer` itself."""
        if not ufunc:
            self._record_helpers(other)
            return other.in_place_text(self)  # type: ignore[attr-defined]
        if isinstance(other, fn.Step) and other.args[1] == 0:
            other_text = f"{self._print(other.args[0])} > {self.zero()}"
        elif ufunc == "maximum" and other == 0:  # relu
            other_text = self.zero()
        else:
            other_text = self._print(other)
        return f"np.{ufunc}({buffer.name}, {other_text}, out={buffer.name})"

    def _print_TensorOp(self, expr: sp.Basic) -> str:
        return expr._numpy_text(self)  # `_print` has recorded its helpers

    def _print(self, expr: Any, **kwargs: Any) -> str:
        self._record_helpers(expr)
        return super()._print(expr, **kwargs)

    def _record_helpers(self, expr: Any) -> None:
        for helper in getattr(type(expr), "helpers", ()):
            self.use_helper(helper)

    # --- atoms -----------------------------------------------------------------------

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return expr.name

    def _print_Integer(self, expr: sp.Integer) -> str:
        return str(int(expr))

    def _print_Float(self, expr: sp.Float) -> str:
        return number_literal(float(expr))

    def _print_Rational(self, expr: sp.Rational) -> str:
        if _prints_as_literal(expr):
            return number_literal(float(expr))
        return f"{expr.p} / {expr.q}"  # parenthesized where it stands, as a quotient

    def _print_Half(self, expr: sp.Rational) -> str:
        return "0.5"

    def _print_Exp1(self, expr: sp.Basic) -> str:
        return "np.e"

    def _print_Pi(self, expr: sp.Basic) -> str:
        return "np.pi"

    def _print_Attr(self, expr: sp.Basic) -> str:
        return self.literal(expr.value)

    # --- algebra, spaced as ruff format spaces it --------------------------------------

    def _print_Add(self, expr: sp.Add, order: str | None = None) -> str:
        # products of matrices first (`x @ W1 + b1`), then SymPy's canonical order
        terms = sorted(self._as_ordered_terms(expr, order=None), key=lambda t: not _has_matmul(t))
        text = ""
        for index, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            body = self.parenthesize(-term if negative else term, PRECEDENCE["Add"], strict=False)
            if index == 0 and negative and term.is_Mul:
                text = self._print(term)  # `-(x**2) * y`: the product's own sign rule
            elif index == 0:
                if negative and _prints_as_power(-term):
                    body = f"({body})"  # `-(x**2) + y`, as ruff format writes it
                text = f"-{body}" if negative else body
            else:
                text += f" - {body}" if negative else f" + {body}"
        return text

    def _print_Mul(self, expr: sp.Mul) -> str:
        coeff, factors = expr.as_coeff_mul()
        sign = ""
        if coeff < 0:
            sign, coeff = "-", -coeff
        numerator: list[sp.Expr] = []
        denominator: list[sp.Expr] = []
        if coeff != 1:
            if (
                isinstance(coeff, sp.Rational)
                and not coeff.is_Integer
                and sp.Rational(float(coeff)) != coeff
            ):
                if coeff.p != 1:
                    numerator.append(sp.Integer(coeff.p))
                denominator.append(sp.Integer(coeff.q))
            else:
                numerator.append(coeff)
        for factor in sp.Mul.make_args(sp.Mul(*factors)) if factors else ():
            if factor.is_Pow and factor.exp.is_Rational and factor.exp.is_negative:
                denominator.append(
                    sp.Pow(factor.base, -factor.exp) if factor.exp != -1 else factor.base
                )
            else:
                numerator.append(factor)
        numerator = self._ordered_factors(numerator)
        masks = [f for f in numerator if _is_mask(f)]
        if masks and any(not f.is_Number and not _is_mask(f) for f in numerator):
            # `d * (h > 0)`: a boolean mask after a float array keeps the array's dtype and
            # costs less than np.heaviside; without an array before it, it would not be
            # safe (-bool raises, 0.5 * bool is float64)
            numerator = [f for f in numerator if not _is_mask(f)]
            parts = [self.parenthesize(item, PRECEDENCE["Mul"], strict=False) for item in numerator]
            parts += [f"({self._print(mask.args[0])} > {self.zero()})" for mask in masks]
        else:
            parts = [self.parenthesize(item, PRECEDENCE["Mul"], strict=False) for item in numerator]
        if sign and numerator and _prints_as_power(numerator[0]):
            parts[0] = f"({parts[0]})"  # `-(x**2)`, as ruff format writes a negated power
        top = " * ".join(parts) or "1"
        if not denominator:
            return sign + top
        if len(denominator) == 1:
            bottom = self.parenthesize(denominator[0], PRECEDENCE["Mul"], strict=True)
        else:
            bottom = (
                "("
                + " * ".join(
                    self.parenthesize(item, PRECEDENCE["Mul"], strict=False) for item in denominator
                )
                + ")"
            )
        return f"{sign}{top} / {bottom}"

    def _ordered_factors(self, factors: list[sp.Expr]) -> list[sp.Expr]:
        # numbers first, then SymPy's canonical order: deterministic and easy to read
        numbers = [f for f in factors if f.is_Number]
        rest = [f for f in factors if not f.is_Number]
        return numbers + sorted(rest, key=sp.default_sort_key)

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exponent = expr.as_base_exp()
        if exponent.is_Rational and exponent.is_negative:
            return "1 / " + self.parenthesize(
                sp.Pow(base, -exponent), PRECEDENCE["Mul"], strict=True
            )
        if exponent == sp.S.Half:
            return self.call("np.sqrt", [base])
        left = self.parenthesize(base, PRECEDENCE["Pow"], strict=True)
        if _is_simple_power_operand(exponent):
            # Python's exponent may be a unary minus: `x**-0.75`, `y**-x` (ruff leaves them
            # so; it would space out a parenthesized `(-x)`)
            right = self._print(exponent)
        else:  # a power as exponent too: `x ** (y**z)` reads without knowing `**` nests
            right = self.parenthesize(exponent, PRECEDENCE["Pow"], strict=True)
        hug = _is_simple_power_operand(base) and not left.startswith("(")
        if hug and _is_simple_power_operand(exponent):
            return f"{left}**{right}"
        return f"{left} ** {right}"

    # --- functions -------------------------------------------------------------------

    def _print_Function(self, expr: sp.Function) -> str:
        name = _FUNCTIONS.get(type(expr))
        if name is None:
            raise TypeError(f"no NumPy spelling for {type(expr).__name__}")
        return self.call(name, expr.args)

    def _print_Sigmoid(self, expr: sp.Function) -> str:
        return f"np.exp(-np.logaddexp(0, {self._print(-expr.args[0])}))"

    def _print_Softplus(self, expr: sp.Function) -> str:
        return f"np.logaddexp(0, {self._print(expr.args[0])})"

    def _print_Step(self, expr: sp.Function) -> str:
        x, at_zero = expr.args
        if at_zero == 0:
            # np.heaviside is several times slower than a comparison and a cast
            return f"({self._print(x)} > {self.zero()}).astype(_DTYPE)"
        return self.call("np.heaviside", expr.args)

    def _print_Relu(self, expr: sp.Function) -> str:
        return f"np.maximum({self._print(expr.args[0])}, {self.zero()})"

    def _print_IsZero(self, expr: sp.Function) -> str:
        return f"{self.parenthesize(expr.args[0], PRECEDENCE['Relational'], strict=True)} == 0"

    def _print_LogOrZero(self, expr: sp.Function) -> str:
        # log(x + 1) = 0 where x = 0: the bool adds 1 there and nothing elsewhere
        x = self.parenthesize(expr.args[0], PRECEDENCE["Add"])
        return f"np.log({x} + ({x} == 0))"

    def _print_LeakyRelu(self, expr: sp.Function) -> str:
        x, slope = expr.args
        return self.call("np.maximum", [x, slope * x])


def _is_mask(factor: sp.Basic) -> bool:
    """A step that is 0 at 0, which a comparison `x > 0` computes exactly."""
    return isinstance(factor, fn.Step) and factor.args[1] == 0


def _has_matmul(term: sp.Basic) -> bool:
    return type(term).__name__ == "MatrixProduct" or (
        term.is_Mul and any(type(f).__name__ == "MatrixProduct" for f in term.args)
    )


def _printed_precedence(item: sp.Basic) -> int:
    """How tightly `item` binds as this printer prints it, which is not always SymPy's
    precedence: a power with a negative exponent prints as a quotient `1 / x`, a square
    root and an elementwise function as a call."""
    if isinstance(item, sp.Function) and not hasattr(item, "precedence"):
        return PRECEDENCE["Atom"]
    if item.is_Rational and not item.is_Integer:  # `0.25`, or a quotient `1 / 3`
        if item.is_negative:
            return PRECEDENCE["Add"]
        return PRECEDENCE["Atom"] if _prints_as_literal(item) else PRECEDENCE["Mul"]
    if item.is_Pow:
        exponent = item.as_base_exp()[1]
        if exponent.is_Rational and exponent.is_negative:
            return PRECEDENCE["Mul"]
        if exponent == sp.S.Half:
            return PRECEDENCE["Atom"]
    return precedence(item)


def _prints_as_literal(number: sp.Basic) -> bool:
    """A number printed as one literal: not a rational that no float is (`(1 / 3)`)."""
    return not number.is_Rational or number.is_Integer or sp.Rational(float(number)) == number


def _prints_as_power(expr: sp.Basic) -> bool:
    """A power this printer writes with `**` (not as `1 / x` or `np.sqrt(x)`)."""
    return bool(expr.is_Pow) and _printed_precedence(expr) == PRECEDENCE["Pow"]


def _is_simple_power_operand(expr: sp.Basic) -> bool:
    """ruff/black hug `**` when both sides are names, numbers or attribute chains
    (`np.pi`), each maybe under a unary minus."""
    if expr.is_Symbol or isinstance(expr, sp.NumberSymbol):
        return True
    if hasattr(expr, "is_attribute_chain"):  # an op printed `w.T`
        return bool(expr.is_attribute_chain())
    if expr.is_Number:
        return _prints_as_literal(expr)
    if expr.is_Mul:
        coeff, rest = expr.as_coeff_mul()
        return coeff == -1 and len(rest) == 1 and _is_simple_power_operand(rest[0])
    return False


class MathPrinter(NumpyPrinter):
    """Expressions as math for comments, spaced like the code: `h1 * (1 - h1)`, `sigmoid(s1)`."""

    _NAMES = {"Abs": "abs", "LeakyRelu": "leaky_relu", "Log1p": "log1p", "LogOrZero": "log"}

    def _print_IsZero(self, expr: sp.Function) -> str:
        return f"[{self._print(expr.args[0])} = 0]"

    def zero(self) -> str:
        return "0"

    def _print_Mul(self, expr: sp.Mul) -> str:
        # the code computes 1 - exp(y) as -expm1(y); the comment shows the math
        if len(expr.args) == 2 and expr.args[0] == -1 and isinstance(expr.args[1], fn.Expm1):
            return f"1 - exp({self._print(expr.args[1].args[0])})"
        return super()._print_Mul(expr)

    def _print_Function(self, expr: sp.Function) -> str:
        if isinstance(expr, fn.Step):
            return f"[{self._print(expr.args[0])} > 0]"
        name = type(expr).__name__
        name = self._NAMES.get(name, name.lower())
        return f"{name}({', '.join(self._print(arg) for arg in expr.args)})"

    _print_Relu = _print_Softplus = _print_Sigmoid = _print_Function
    _print_LeakyRelu = _print_Step = _print_LogOrZero = _print_Function

    def call(
        self,
        name: str,
        args: Iterable[sp.Basic] = (),
        keywords: Mapping[str, Any] | None = None,
        raw_args: Iterable[str] = (),
    ) -> str:
        return super().call(name.removeprefix("np."), args, keywords, raw_args)

    def _print_Exp1(self, expr: sp.Basic) -> str:
        return "e"

    def _print_Pi(self, expr: sp.Basic) -> str:
        return "pi"


def math_text(expr: sp.Basic) -> str:
    return MathPrinter().doprint(expr)


def math_factor(expr: sp.Basic) -> str:
    """Math text fit to stand as a factor of a product (parenthesized if a sum)."""
    return MathPrinter().parenthesize(expr, PRECEDENCE["Mul"])

"""Elementwise functions as SymPy functions, each with its derivative.

SymPy derives every elementwise derivative. The functions defined here state their
`fdiff` through their own value where the math allows it (`sigmoid' = s (1 - s)`,
`relu' = [relu(x) > 0]`), so that after reverse mode substitutes a node's symbol for
its forward expression the backward pass reads the saved output, not the input.

`ELEMENTWISE` is the formula language's table of elementwise functions: name ->
(SymPy constructor, its number of tensor arguments, the number of constant arguments
that may follow).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
from sympy.printing.precedence import PRECEDENCE


class Elementwise(sp.Function):
    """Base of our elementwise functions: real-valued, numerically evaluable (`numeric`),
    and auto-evaluated only where every argument is a real number and the value is exact
    (`exact`): `relu(-1)` is 0 as the formula is built, so a term it multiplies cancels
    there, as one `sin(0)` multiplies does, and `log(relu(1))` is log(1), 0. The smooth
    ones are exact at 0 only (`sigmoid(0)` is 1/2): folded, `log(1 + exp(710))` would
    overflow where softplus(710) does not, and `log(1 + 1e-20)` lose what log1p keeps;
    `numeric` folds them stably. A constant 0 only the folding makes leaves its ops to
    `passes.fold_numbers`."""

    is_real = True

    @classmethod
    def eval(cls, *args: sp.Expr) -> sp.Expr | None:
        if all(arg.is_number and arg.is_comparable for arg in args):
            return cls.exact(*args)
        return None

    @staticmethod
    def exact(*args: sp.Expr) -> sp.Expr | None:
        """The value at these real numbers as a SymPy expression, or None to keep the call."""
        return None

    @staticmethod
    def numeric(*args: float) -> float:
        raise NotImplementedError

    def _eval_evalf(self, prec: int) -> sp.Float | None:
        try:
            values = [float(arg.evalf(prec)) for arg in self.args]
            return sp.Float(self.numeric(*values), precision=prec)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            return None


class Step(Elementwise):
    """Heaviside step with value `at_zero` at 0; its derivative is 0 almost everywhere."""

    nargs = 2

    @staticmethod
    def exact(x: sp.Expr, at_zero: sp.Expr) -> sp.Expr | None:
        return _by_sign(x, sp.S.One, at_zero, sp.S.Zero)

    @staticmethod
    def numeric(x: float, at_zero: float) -> float:
        return 1.0 if x > 0 else (at_zero if x == 0 else 0.0)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.S.Zero


class Sigmoid(Elementwise):
    nargs = 1

    @staticmethod
    def exact(x: sp.Expr) -> sp.Expr | None:
        return sp.S.Half if x.is_zero else None

    @staticmethod
    def numeric(x: float) -> float:
        return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return self * (1 - self)


class Relu(Elementwise):
    nargs = 1

    @staticmethod
    def exact(x: sp.Expr) -> sp.Expr | None:
        return _by_sign(x, x, sp.S.Zero, sp.S.Zero)

    @staticmethod
    def numeric(x: float) -> float:
        return max(x, 0.0)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return Step(self, 0)


class LeakyRelu(Elementwise):
    """max(x, slope * x) for 0 <= slope < 1; the slope is a constant."""

    nargs = 2

    @staticmethod
    def exact(x: sp.Expr, slope: sp.Expr) -> sp.Expr | None:
        return _by_sign(x, x, sp.S.Zero, slope * x)

    @staticmethod
    def numeric(x: float, slope: float) -> float:
        return x if x > 0 else slope * x

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x, slope = self.args
        if argindex != 1:
            return sp.S.Zero
        return slope + (1 - slope) * Step(self, 0)


class Softplus(Elementwise):
    nargs = 1

    @staticmethod
    def exact(x: sp.Expr) -> sp.Expr | None:
        return sp.log(2) if x.is_zero else None

    @staticmethod
    def numeric(x: float) -> float:
        return max(x, 0.0) + math.log1p(math.exp(-abs(x)))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        # sigmoid(x) = 1 - exp(-softplus(x)): through the saved output, not the input
        return -Expm1(-self)


class Expm1(Elementwise):
    """exp(x) - 1, exact near 0 where `exp(x) - 1` cancels (NumPy's expm1)."""

    nargs = 1

    @staticmethod
    def exact(x: sp.Expr) -> sp.Expr | None:
        return sp.S.Zero if x.is_zero else None

    @staticmethod
    def numeric(x: float) -> float:
        return math.expm1(x)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return self + 1


class Power(Elementwise):
    """base ** exponent where the exponent is not a number, or is a fraction and the base
    is not a name, while reverse mode derives it.
    SymPy's rule writes d/dbase as x**k * k / x, which is 0 / 0 at x = 0, and d/dexponent as
    x**k * log(x), which is 0 * -inf there; this states both as PyTorch's `pow` does:
    k * x**(k - 1) (0 at k = 0 even where x = 0), and 0 where x = 0 (`LogOrZero`).
    `tensor_powers` puts it in, `plain_powers` takes it out again."""

    nargs = 2

    @staticmethod
    def numeric(base: float, exponent: float) -> float:
        return float(base**exponent)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        base, exponent = self.args
        if argindex == 1 and exponent.is_number:
            return exponent * sp.Pow(base, exponent - 1)
        if argindex == 1:
            # k * x**(k - 1) is 0 * inf at k = 0, x = 0; PyTorch's 0 there comes of
            # raising x to 0 instead (k - 1 + 1), and 0 * x**0 = 0
            return exponent * sp.Pow(base, exponent - 1 + IsZero(exponent))
        return sp.Pow(base, exponent) * LogOrZero(base)


class IsZero(Elementwise):
    """1 where x = 0, else 0 (printed `x == 0`, a bool NumPy adds as 1 or 0; it binds as a
    comparison, so in a sum it is parenthesized and on a line of its own it is not)."""

    nargs = 1
    precedence = PRECEDENCE["Relational"]

    @classmethod
    def eval(cls, x: sp.Expr) -> sp.Expr | None:
        if x.is_number:
            return sp.S.One if x == 0 else sp.S.Zero
        return None

    @staticmethod
    def numeric(x: float) -> float:
        return 1.0 if x == 0 else 0.0

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.S.Zero


class LogOrZero(Elementwise):
    """log(x), but 0 at x = 0: the factor of x**k's derivative in k."""

    nargs = 1

    @classmethod
    def eval(cls, x: sp.Expr) -> sp.Expr | None:
        if x.is_number:
            return sp.S.Zero if x == 0 else sp.log(x)
        return None

    @staticmethod
    def numeric(x: float) -> float:
        return math.log(x) if x else 0.0


def as_real(expr: sp.Expr) -> sp.Expr:
    """`expr` with re(e) as e, im(e) as 0 and arg(e) as pi where e < 0, else 0: every
    tensor is real, but SymPy cannot always prove a value real (Abs((x*x)**(abs(x)**r))
    becomes Abs(x)**(2*re(...)), the derivative of abs(log(x) ** 3) reads arg(x)), and
    NumPy has no spelling for them. Where the value is complex, NumPy computes NaN."""
    if not expr.has(sp.re, sp.im, sp.arg):
        return expr
    real = expr.replace(sp.re, lambda arg: arg).replace(sp.im, lambda arg: sp.S.Zero)
    return real.replace(sp.arg, lambda arg: sp.pi * Step(-arg, 0))  # pi where arg < 0


def finite_real(expr: sp.Expr) -> bool:
    """No infinity, NaN or imaginary unit in `expr`, and every number in it, and its value
    if it is one, a finite float64: SymPy's numbers have no such bound (1e200 * 1e200 is a
    Float of 1e400), but the code prints them as floats. One walk over the expression."""
    try:
        for atom in expr.atoms(sp.Number, type(sp.I), type(sp.zoo)):
            if atom in _NOT_REAL or not math.isfinite(float(atom)):
                return False
        # a constant expression (`exp(1000)`), unless it is an op (a node `c: 0.5` is
        # filled out to its shape) whose numbers were checked above
        return not expr.is_number or math.isfinite(float(sp.N(expr)))
    except (OverflowError, ZeroDivisionError):  # mpmath divides by a constant that is 0
        return False
    except TypeError:
        return True


_NOT_REAL = (sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I)


def tensor_powers(expr: sp.Expr) -> sp.Expr:
    """`expr` with each power whose exponent is not a number as a `Power`, and each of a
    fractional exponent whose base is not a name: SymPy derives (x * y) ** 1.5 through
    the power itself, 1.5 * (x*y)**1.5 / (x*y) * y, 0 / 0 where x * y is 0."""
    if not any(_by_power_rule(power) for power in expr.atoms(sp.Pow)):
        return expr  # the common case, at the cost of one walk rather than a rebuild
    return expr.replace(_by_power_rule, lambda e: Power(e.base, e.exp))


def _by_power_rule(expr: sp.Expr) -> bool:
    if not expr.is_Pow:
        return False
    return not expr.exp.is_number or not (expr.exp.is_integer or expr.base.is_Symbol)


def plain_powers(expr: sp.Expr) -> sp.Expr:
    """`expr` back in SymPy's own functions once derived: Power as Pow, RealAbs as Abs."""
    if expr.has(RealAbs):
        expr = expr.replace(lambda e: isinstance(e, RealAbs), lambda e: sp.Abs(e.args[0]))
    if not expr.has(Power):
        return expr
    return expr.replace(lambda e: isinstance(e, Power), lambda e: sp.Pow(*e.args))


class RealAbs(Elementwise):
    """|x| of a real x, while reverse mode derives it: SymPy derives the Abs of a value it
    cannot prove real (log(x)) as re(x) re(x)' / |x| and so on, 0 / 0 where x is 0;
    PyTorch's abs' is sign(x), 0 there."""

    nargs = 1

    @staticmethod
    def numeric(x: float) -> float:
        return abs(x)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.sign(self.args[0])


def real_abs(expr: sp.Expr) -> sp.Expr:
    """`expr` with each Abs of a value SymPy cannot prove real as a `RealAbs`."""
    if all(item.args[0].is_extended_real for item in expr.atoms(sp.Abs)):
        return expr  # the common case, at the cost of one walk rather than a rebuild
    return expr.replace(
        lambda e: isinstance(e, sp.Abs) and not e.args[0].is_extended_real,
        lambda e: RealAbs(e.args[0]),
    )


def unsaved_values(derivative: sp.Expr) -> sp.Expr:
    """Derivatives written through a function's own value where that value is not a saved
    node (a softplus inside a larger formula), back in terms of the input:
    1 - exp(-softplus(x)) is sigmoid(x)."""
    return derivative.replace(
        lambda item: isinstance(item, Expm1) and isinstance(-item.args[0], Softplus),
        lambda item: -Sigmoid((-item.args[0]).args[0]),
    )


class Log1p(Elementwise):
    nargs = 1

    @staticmethod
    def exact(x: sp.Expr) -> sp.Expr | None:
        return sp.S.Zero if x.is_zero else None

    @staticmethod
    def numeric(x: float) -> float:
        return math.log1p(x)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (1 + self.args[0])


class Sqrt(Elementwise):
    nargs = 1

    @staticmethod
    def exact(x: sp.Expr) -> sp.Expr | None:
        return sp.sqrt(x) if x.is_nonnegative else None

    @staticmethod
    def numeric(x: float) -> float:
        return math.sqrt(x)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (2 * self)


class Maximum(Elementwise):
    """The max gate routes the gradient to the larger input (half to each on a tie)."""

    nargs = 2

    @staticmethod
    def exact(a: sp.Expr, b: sp.Expr) -> sp.Expr | None:
        return _by_sign(a - b, a, a, b)

    @staticmethod
    def numeric(a: float, b: float) -> float:
        return max(a, b)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        a, b = self.args
        return Step(a - b, sp.S.Half) if argindex == 1 else Step(b - a, sp.S.Half)


class Minimum(Elementwise):
    nargs = 2

    @staticmethod
    def exact(a: sp.Expr, b: sp.Expr) -> sp.Expr | None:
        return _by_sign(a - b, b, a, a)

    @staticmethod
    def numeric(a: float, b: float) -> float:
        return min(a, b)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        a, b = self.args
        return Step(b - a, sp.S.Half) if argindex == 1 else Step(a - b, sp.S.Half)


def _by_sign(x: sp.Expr, positive: sp.Expr, zero: sp.Expr, negative: sp.Expr) -> sp.Expr | None:
    """One of three values by the sign of the real number x; None where SymPy cannot tell."""
    if x.is_positive:
        return positive
    if x.is_zero:
        return zero
    if x.is_negative:
        return negative
    return None


@dataclass(frozen=True)
class ElementwiseFn:
    build: Callable[..., sp.Expr]
    tensor_args: int
    const_args: tuple[float, ...] = ()  # defaults of trailing constant arguments
    # where a constant argument is allowed (tensors meet the domain at run time, as NaN)
    domain: Callable[[float], bool] | None = None
    domain_text: str = ""


ELEMENTWISE: dict[str, ElementwiseFn] = {
    "exp": ElementwiseFn(sp.exp, 1),
    "log": ElementwiseFn(sp.log, 1, domain=lambda x: x > 0, domain_text="positive"),
    "log1p": ElementwiseFn(Log1p, 1, domain=lambda x: x > -1, domain_text="above -1"),
    "sqrt": ElementwiseFn(Sqrt, 1, domain=lambda x: x >= 0, domain_text="non-negative"),
    "abs": ElementwiseFn(sp.Abs, 1),
    "sin": ElementwiseFn(sp.sin, 1),
    "cos": ElementwiseFn(sp.cos, 1),
    "tanh": ElementwiseFn(sp.tanh, 1),
    "sigmoid": ElementwiseFn(Sigmoid, 1),
    "relu": ElementwiseFn(Relu, 1),
    "softplus": ElementwiseFn(Softplus, 1),
    "leaky_relu": ElementwiseFn(LeakyRelu, 1, (0.01,)),
    "maximum": ElementwiseFn(Maximum, 2),
    "minimum": ElementwiseFn(Minimum, 2),
}

"""The printer's powers, quotients and signs: the text means what the expression means, and
it is the text `ruff format` would leave as it is.

Found by review: `y ** (1 / x)` was printed `y ** 1 / x`, which Python reads as `y / x`
(a power with a negative exponent prints as a quotient, which binds less tightly than
SymPy's precedence of a power said), and several powers were spaced otherwise than
ruff spaces them (`x**(-0.75)`, `y ** np.pi`, `-x**2 * y`). Drawn expressions over
positive values are printed, evaluated with NumPy and held against SymPy's own
evaluation; a seeded sample of them goes through `ruff format` in one call.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from symbackprop.ir import symbol
from symbackprop.printer import NumpyPrinter
from tests.test_lint import _ruff_command

X, Y, Z = (symbol(name) for name in ("x", "y", "z"))
VALUES = {X: 1.3, Y: 0.7, Z: 2.1}
NUMBERS = [
    sp.Integer(2),
    sp.Integer(-1),
    sp.Integer(-2),
    sp.Rational(1, 3),
    sp.Rational(-2, 3),
    sp.Rational(3, 2),
    sp.Float(0.25),
    sp.Float(-0.75),
    sp.pi,
    sp.E,
]
LEAVES = [X, Y, Z, *NUMBERS]


def _combine(kind: str, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    return {
        "add": lambda: a + b,
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "div": lambda: a / b,
        "pow": lambda: a**b,
        "neg": lambda: -a,
        "exp": lambda: sp.exp(a / 4),
        "sqrt": lambda: sp.sqrt(a * a + 1),
    }[kind]()


KINDS = ["add", "sub", "mul", "div", "pow", "pow", "pow", "neg", "exp", "sqrt"]


def _expressions(depth: int) -> st.SearchStrategy[sp.Expr]:
    if depth == 0:
        return st.sampled_from(LEAVES)
    inner = _expressions(depth - 1)
    return st.one_of(
        st.sampled_from(LEAVES),
        st.builds(_combine, st.sampled_from(KINDS), inner, inner),
    )


def _random_expression(rng: random.Random, depth: int) -> sp.Expr:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(LEAVES)
    kind = rng.choice(KINDS)
    return _combine(kind, _random_expression(rng, depth - 1), _random_expression(rng, depth - 1))


def _printed_value(text: str) -> float:
    values = {symbol.name: value for symbol, value in VALUES.items()}
    return complex(eval(text, {"np": np}, values)).real  # noqa: S307 - the printer's own output


def _complex(expr: sp.Expr) -> bool:
    """SymPy's own complex numbers (`(-1)**(1/3)`), which no spec formula makes: a
    constant is folded to a real number, or refused."""
    return expr.has(sp.I) or any(
        power.base.is_number and power.base.is_negative and not power.exp.is_integer
        for power in expr.atoms(sp.Pow)
    )


def _true_value(expr: sp.Expr) -> complex:
    return complex(expr.subs(VALUES).evalf(30))


@settings(max_examples=300, deadline=None, derandomize=True)  # fast and the same every run
@given(_expressions(3))
def test_printed_text_computes_the_expression(expr: sp.Expr) -> None:
    if _complex(expr):
        return
    expected = _true_value(expr)
    if not all(math.isfinite(part) for part in (expected.real, expected.imag)):
        return
    if abs(expected.imag) > 1e-9 * max(1.0, abs(expected)) or abs(expected) > 1e12:
        return  # a negative base to a fractional power: NumPy's real power is NaN
    text = NumpyPrinter("float64").doprint(expr)
    with np.errstate(all="ignore"):
        assert _printed_value(text) == pytest.approx(expected.real, rel=1e-9, abs=1e-12), text


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (Y ** (1 / X), "y ** (1 / x)"),
        (Y ** (X**-2), "y ** (1 / x**2)"),
        (Y ** (1 / sp.sqrt(X)), "y ** (1 / np.sqrt(x))"),
        (Y ** (1 / (X + 1)), "y ** (1 / (x + 1))"),
        (X - X**2 * Y, "-(x**2) * y + x"),
        (X ** sp.Float(0.25), "x**0.25"),
        (X ** sp.Float(-0.75), "x**-0.75"),
        (Y**sp.pi, "y**np.pi"),
        (Y**-X, "y**-x"),
        (X ** (Y**Z), "x ** (y**z)"),
        (X ** sp.Rational(1, 3), "x ** (1 / 3)"),
        ((X + 1) ** -X, "(x + 1) ** -x"),
        (-sp.sqrt(X) * Y, "-np.sqrt(x) * y"),
    ],
)
def test_powers_print_as_ruff_formats_them(expr: sp.Expr, text: str) -> None:
    assert NumpyPrinter("float64").doprint(expr) == text


def test_a_sample_of_printed_expressions_is_left_as_it_is_by_ruff_format(
    tmp_path: pytest.TempPathFactory,
) -> None:
    import subprocess

    ruff = _ruff_command()
    rng = random.Random(7)
    printer = NumpyPrinter("float64")
    drawn = (_random_expression(rng, 4) for _ in range(600))
    lines = sorted({printer.doprint(expr) for expr in drawn if not _complex(expr)})
    lines = [line for line in lines if len(line) < 80]  # what one line holds
    assert len(lines) > 300
    module = tmp_path / "printed.py"  # type: ignore[operator]
    module.write_text("".join(f"v = {line}\n" for line in lines), encoding="utf-8")
    result = subprocess.run(
        [*ruff, "format", "--isolated", "--diff", str(module)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout

"""Spec text never reaches eval, exec, compile, sympify or parse_expr.

Two checks. At run time, a tripwire replaces those functions while every example, every
case of tests/test_ops.py and a few hostile formulas compile; it fires only on a string
holding spec text, since Python and SymPy call some of them on their own strings (namedtuple
and dataclass creation, `ast.parse`, which may compile spec text into a tree and nothing
more). Statically, no source file of the package calls them at all.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sympy
import sympy.parsing.sympy_parser

from symbackprop.compiler import compile_spec
from symbackprop.errors import SpecError
from symbackprop.spec import Spec, parse_spec
from tests.support import EXAMPLES, GENERATED, ROOT
from tests.test_ops import CASES

SENTINEL = "zq_sentinel"  # names in the hostile specs: any string holding it is spec text


class Tripwire:
    """Replaces eval & co. with guards that record (and refuse) calls on spec text."""

    def __init__(self) -> None:
        self.texts: set[str] = {SENTINEL}
        self.hits: list[tuple[str, str]] = []

    def learn(self, spec: Spec) -> Spec:
        """Every formula of `spec` counts as spec text from now on."""
        self.texts |= {node.formula.strip() for node in spec.nodes}
        return spec

    def holds_spec_text(self, value: Any) -> bool:
        """A whole formula (of 3 characters or more: `x` alone is in any code), or a piece
        of one (`a + b` out of `(a + b) * c`)."""
        if not isinstance(value, str) or not value.strip():
            return False
        piece = value.strip()
        return any((len(text) >= 3 and text in value) or piece in text for text in self.texts)

    def guard(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            source = args[0] if args else kwargs.get("source", kwargs.get("a", kwargs.get("s")))
            if self.holds_spec_text(source) and not _exempt(name, args, kwargs):
                self.hits.append((name, source))
                raise AssertionError(f"{name} called on spec text: {source!r}")
            return original(*args, **kwargs)

        return guarded

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for owner, attribute in _TARGETS():
            if hasattr(owner, attribute):
                original = getattr(owner, attribute)
                monkeypatch.setattr(owner, attribute, self.guard(attribute, original))


def _exempt(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Two compiles that run no spec text: `compile(..., flags=ast.PyCF_ONLY_AST)` is
    `ast.parse` (a tree, nothing run), and Jinja compiling one of our .j2 templates (whose
    text may contain a short formula such as `exp(x)` of its own)."""
    if name != "compile":
        return False
    flags = args[3] if len(args) > 3 else kwargs.get("flags", 0)
    filename = args[1] if len(args) > 1 else kwargs.get("filename", "")
    return bool(flags & ast.PyCF_ONLY_AST) or str(filename).endswith(".j2")


def _TARGETS() -> list[tuple[Any, str]]:
    return [
        (builtins, "eval"),
        (builtins, "exec"),
        (builtins, "compile"),
        (sympy, "sympify"),
        (sympy, "parse_expr"),
        (sympy.core, "sympify"),
        (sys.modules["sympy.core.sympify"], "sympify"),
        (sympy.parsing, "parse_expr"),
        (sympy.parsing.sympy_parser, "parse_expr"),
    ]


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tripwire]:
    wire = Tripwire()
    wire.install(monkeypatch)
    yield wire
    assert not wire.hits, wire.hits


def test_the_tripwire_fires(tripwire: Tripwire) -> None:
    """The guards are in place: sympify of spec text fails, sympify of SymPy's own does not."""
    tripwire.learn(parse_spec(EXAMPLES.joinpath("seed_graph.yaml").read_text(), "seed_graph.yaml"))
    with pytest.raises(AssertionError, match="spec text"):
        sympy.sympify("a + b")
    with pytest.raises(AssertionError, match="spec text"):
        eval("c * d")  # noqa: S307 - the point of the test
    with pytest.raises(AssertionError, match="spec text"):
        sympy.parsing.sympy_parser.parse_expr("b +")  # a piece of `c: a + b`
    assert sympy.sympify(2) == 2
    tripwire.hits.clear()


def test_examples_compile_without_eval(tripwire: Tripwire) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        compile_spec(tripwire.learn(parse_spec(path.read_text(encoding="utf-8"), path.name)))


def test_op_cases_compile_without_eval(tripwire: Tripwire) -> None:
    for case in CASES:
        try:
            spec = tripwire.learn(parse_spec(case.text, "case.yaml"))
            compile_spec(spec)
        except SpecError:
            assert case.bug, case.id  # a known compiler bug, reported in test_ops.py


HOSTILE = [
    f"__import__('os').system('{SENTINEL}')",
    f"eval('{SENTINEL}')",
    f"exec('{SENTINEL} = 1')",
    f"{SENTINEL}.__class__",
    f"open('{SENTINEL}')",
    f"(lambda: {SENTINEL})()",
    f"[{SENTINEL} for {SENTINEL} in x]",
    f"x if '{SENTINEL}' else x",
    f"sum(x, axis='{SENTINEL}')",
    f"getattr(x, '{SENTINEL}')",
]


@pytest.mark.parametrize("formula", HOSTILE)
def test_hostile_formulas_are_spec_errors(tripwire: Tripwire, formula: str) -> None:
    text = f'name: hostile\ninputs: {{x: [3]}}\nnodes:\n  f: "{formula}"\nwrt: [x]\n'
    with pytest.raises(SpecError) as error:
        compile_spec(tripwire.learn(parse_spec(text, "hostile.yaml")))
    assert error.value.loc is not None and error.value.loc.line == 4


# --- statically: the package never calls them ---------------------------------------------

BANNED_NAMES = {"eval", "exec", "compile", "sympify", "parse_expr", "__import__"}
BANNED_ATTRIBUTES = {"sympify", "parse_expr"}


def banned_calls(source: str) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in BANNED_NAMES:
                    yield node.lineno, f"import of {alias.name}"
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in BANNED_NAMES:
            yield node.lineno, f"{func.id}("
        elif isinstance(func, ast.Attribute) and (
            func.attr in BANNED_ATTRIBUTES
            or (
                isinstance(func.value, ast.Name)
                and func.value.id == "builtins"
                and func.attr in BANNED_NAMES
            )
        ):
            yield node.lineno, f".{func.attr}("
        elif (
            isinstance(func, ast.Attribute)
            and func.attr == "S"
            or isinstance(func, ast.Name)
            and func.id == "S"
        ):
            yield node.lineno, "S( (sympify)"


PACKAGE_FILES = sorted((ROOT / "symbackprop").rglob("*.py")) + sorted(GENERATED.glob("*.py"))


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_source_never_calls_eval(path: Path) -> None:
    found = list(banned_calls(path.read_text(encoding="utf-8")))
    assert not found, [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in found]


def test_templates_never_call_eval() -> None:
    pattern = re.compile(r"\b(eval|exec|sympify|parse_expr|__import__)\s*\(")
    for path in sorted((ROOT / "templates").rglob("*.j2")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            assert not pattern.search(line), f"{path.relative_to(ROOT)}:{number}: {line.strip()}"


def test_the_static_check_finds_calls() -> None:
    sample = "\n".join(
        [
            "import sympy as sp",
            "from sympy import sympify",
            "sp.sympify(t)",
            "eval(t)",
            "builtins.exec(t)",
            "sp.S(t)",
        ]
    )
    assert [line for line, _ in banned_calls(sample)] == [2, 3, 4, 5, 6]

"""Every op of the formula language, one small spec each, against finite differences and PyTorch.

`CASES` is a table: a formula (or a few nodes, or a layer-form spec) with the inputs it
reads and the domain of each input (positive for `log`, labels for the losses). Each case
is compiled in float64; its output `objective = sum(f * f)` makes the adjoint reaching `f` vary from
element to element, so that a wrong softmax or broadcast rule cannot hide behind a
constant seed. `test_every_registered_name_has_a_case` fails when an op, function or loss
is added without a case here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from symbackprop import formula as fm
from symbackprop.build import _LOSSES
from symbackprop.errors import Loc, SpecError
from symbackprop.functions import ELEMENTWISE
from symbackprop.ops import LANGUAGE_OPS
from symbackprop.spec import LAYER_ACTIVATIONS, LAYER_LOSSES, parse_spec
from tests.support import (
    TorchReference,
    central_differences,
    compile_module,
    float64_params,
    random_inputs,
    relative_error,
)

FD_TOLERANCE = 1e-6
TORCH_TOLERANCE = 1e-10
Compiled = Callable[["Case"], ModuleType]
REDUCTIONS = ("sum", "mean", "max", "logsumexp")


@dataclass(frozen=True)
class Arg:
    """An input of a case: its shape and the interval its values are drawn from."""

    shape: tuple[int | str, ...]
    low: float = -2.0
    high: float = 2.0
    classes: int = 0  # > 0: int64 labels in [0, classes)

    def yaml(self) -> Any:
        return {"shape": list(self.shape), "dtype": "int64"} if self.classes else list(self.shape)

    @property
    def domain(self) -> tuple[float, float]:
        return (0, self.classes) if self.classes else (self.low, self.high)


def arg(*shape: int | str) -> Arg:
    return Arg(shape)


def positive(*shape: int | str) -> Arg:
    return Arg(shape, 0.5, 3.0)


def unit(*shape: int | str) -> Arg:
    """Probabilities, as binary cross-entropy targets."""
    return Arg(shape, 0.0, 1.0)


def labels(*shape: int | str, classes: int) -> Arg:
    return Arg(shape, classes=classes)


@dataclass(frozen=True)
class Case:
    id: str
    text: str  # the spec
    domains: dict[str, tuple[float, float]] = field(default_factory=dict)
    bug: str | None = None  # a known compiler bug: the case is xfail(strict=True) until fixed

    def __str__(self) -> str:
        return self.id

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.bug)] if self.bug else []
        return pytest.param(self, id=self.id, marks=marks)


def graph(
    formula: str | dict[str, str], id: str | None = None, bug: str | None = None, **inputs: Arg
) -> Case:
    """A graph-form case: nodes ending in `f`, output `sum(f * f)`, wrt every float input."""
    nodes = dict(formula) if isinstance(formula, dict) else {"f": formula}
    nodes["objective"] = f"sum({list(nodes)[-1]} * {list(nodes)[-1]})"
    spec = {
        "name": "op_case",
        "inputs": {name: value.yaml() for name, value in inputs.items()},
        "nodes": nodes,
        "output": "objective",
        "wrt": [name for name, value in inputs.items() if not value.classes],
    }
    text = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=1000)
    default_id = (
        formula if isinstance(formula, str) else "; ".join(f"{k}={v}" for k, v in formula.items())
    )
    return Case(id or default_id, text, {name: value.domain for name, value in inputs.items()}, bug)


def layers(
    activation: str,
    loss: str = "{mse: y}",
    target: str = "[batch, 2]",
    bias: bool = True,
    bug: str | None = None,
) -> Case:
    """A layer-form case: 3 -> 4 (the activation) -> 2, then the loss."""
    text = (
        "name: op_case\n"
        f"inputs: {{x: [batch, 3], y: {target}}}\n"
        "layers:\n"
        f"  - {{dense: 4, activation: {json.dumps(activation)}, bias: {json.dumps(bias)}}}\n"
        "  - {dense: 2}\n"
        f"loss: {loss}\n"
    )
    return Case(
        f"layers[{activation}] {loss}" + ("" if bias else " no bias"),
        text,
        {"y": (0.0, 1.0)} if "binary" in loss else {},
        bug,
    )


M = (3, 4)  # the usual matrix shape; batch-named shapes where the batch matters

# Known compiler bugs (reported; the case turns into a failure once the bug is fixed).

CASES: list[Case] = [
    # elementwise functions, each on its domain
    graph("exp(x)", x=arg(*M)),
    graph("log(x)", x=positive(*M)),
    graph("log1p(x)", x=Arg(M, -0.5, 2.0)),
    graph("sqrt(x)", x=positive(*M)),
    graph("abs(x)", x=arg(*M)),
    graph("sin(x)", x=arg(*M)),
    graph("cos(x)", x=arg(*M)),
    graph("tanh(x)", x=arg(*M)),
    graph("sigmoid(x)", x=arg(*M)),
    graph("relu(x)", x=arg(*M)),
    graph("softplus(x)", x=arg(*M)),
    graph("leaky_relu(x)", x=arg(*M)),
    graph("leaky_relu(x, 0.2)", x=arg(*M)),
    graph("leaky_relu(x) + 2 * leaky_relu(x, 0.2)", x=arg(*M)),
    graph("maximum(x, y)", x=arg(*M), y=arg(*M)),
    graph("minimum(x, y)", x=arg(*M), y=arg(*M)),
    graph("maximum(x, 0.5) + minimum(-0.5, x)", x=arg(*M)),
    graph("sigmoid(3 * x) * tanh(x) + exp(-x * x)", x=arg(*M)),
    # arithmetic
    graph("x + y", x=arg(*M), y=arg(*M)),
    graph("x - y", x=arg(*M), y=arg(*M)),
    graph("x * y", x=arg(*M), y=arg(*M)),
    graph("x / y", x=arg(*M), y=positive(*M)),
    graph("-x", x=arg(*M)),
    graph("1 / x + x ** 3", x=positive(*M)),
    graph("x ** 2.5", x=positive(*M)),
    graph("y ** x", x=arg(*M), y=positive(*M)),
    graph("2 ** x", x=arg(*M)),
    # the constants
    graph("pi * x + e", x=arg(*M)),
    graph("exp(e * x) / pi", x=arg(*M)),
    # transpose
    graph("transpose(a) * b", a=arg(*M), b=arg(4, 3)),
    graph("transpose(v) * v", v=arg(5)),
    # reductions over every axis, one axis, a negative axis and a tuple of axes
    *(graph(f"{op}(x)", x=arg(*M)) for op in REDUCTIONS),
    *(graph(f"{op}(x, axis=0)", x=arg(*M)) for op in REDUCTIONS),
    *(graph(f"{op}(x, axis=-1)", x=arg(*M)) for op in REDUCTIONS),
    *(graph(f"{op}(x, axis=(0, 2))", x=arg(2, 3, 4)) for op in REDUCTIONS),
    *(graph(f"{op}(x, axis=None)", x=arg(2, 3, 4)) for op in REDUCTIONS),
    graph(
        "x - mean(x, axis=0) * max(x) / logsumexp(x, axis=(0, 1))", id="reductions-mixed", x=arg(*M)
    ),
    # softmax and log_softmax along either axis
    graph("softmax(x)", x=arg(*M)),
    graph("softmax(x, axis=0)", x=arg(*M)),
    graph("log_softmax(x)", x=arg(*M)),
    graph("log_softmax(x, axis=0)", x=arg(*M)),
    graph("softmax(v) * log_softmax(v)", v=arg(5)),
    # matmul in every rank combination
    graph("v @ w", id="matmul 1x1", v=arg(4), w=arg(4)),
    graph("v @ a", id="matmul 1x2", v=arg(3), a=arg(*M)),
    graph("a @ w", id="matmul 2x1", a=arg(*M), w=arg(4)),
    graph("a @ b", id="matmul 2x2", a=arg(*M), b=arg(4, 5)),
    graph("x @ W @ transpose(W)", id="matmul chain", x=arg("batch", 4), W=arg(4, 2)),
    # broadcasting
    graph(
        "tanh(x @ W + b)",
        id="broadcast bias [8] to [batch, 8]",
        x=arg("batch", 3),
        W=arg(3, 8),
        b=arg(8),
    ),
    graph("p * q + p", id="broadcast [batch, 1] vs [1, 4]", p=arg("batch", 1), q=arg(1, 4)),
    graph("s * x + s", id="broadcast scalar vs tensor", s=arg(), x=arg(*M)),
    graph("r - x", id="broadcast row [4] vs [3, 4]", r=arg(4), x=arg(*M)),
    graph("x * c", id="broadcast column [3, 1] vs [3, 4]", c=arg(3, 1), x=arg(*M)),
    # losses, mean and sum
    graph("mse(p, t)", p=arg(*M), t=arg(*M)),
    graph('mse(p, t, reduction="sum")', p=arg(*M), t=arg(*M)),
    graph("binary_cross_entropy_with_logits(z, t)", z=arg(*M), t=unit(*M)),
    graph('binary_cross_entropy_with_logits(z, t, reduction="sum")', z=arg(*M), t=unit(*M)),
    graph("softmax_cross_entropy(z, y)", z=arg("batch", 4), y=labels("batch", classes=4)),
    graph(
        'softmax_cross_entropy(z, y, reduction="sum")',
        z=arg("batch", 4),
        y=labels("batch", classes=4),
    ),
    graph(
        "softmax_cross_entropy(z, y)",
        id="softmax_cross_entropy 3-d",
        z=arg(2, 3, 4),
        y=labels(2, 3, classes=4),
    ),
    # a node reached by several paths sums its adjoints
    graph(
        {"a": "x * y", "b": "a + sin(x)", "c": "a * b + exp(a)", "f": "c * a - b"},
        id="several paths",
        x=arg(*M),
        y=arg(*M),
    ),
    graph(
        {"h": "tanh(x @ W)", "f": "h @ transpose(W) + x * sum(h * h)"},
        id="weight used twice",
        x=arg("batch", 4),
        W=arg(4, 3),
    ),
    graph(
        {"s": "softmax(x)", "f": "s * x - log_softmax(x) * s"}, id="softmax on two paths", x=arg(*M)
    ),
    # layer form: every built-in activation, custom ones, the layer losses
    *(layers(activation) for activation in LAYER_ACTIVATIONS),
    layers("x * tanh(softplus(x))"),
    layers("x * sigmoid(x)"),
    layers("leaky_relu(x, 0.2) + 0.5 * x ** 2"),
    layers("tanh", bias=False),
    layers("tanh", "{mse: y, reduction: sum}"),
    layers("relu", "{softmax_cross_entropy: y}", "{shape: [batch], dtype: int64}"),
    layers("relu", "{softmax_cross_entropy: y, reduction: sum}", "{shape: [batch], dtype: int64}"),
    layers("sigmoid", "{binary_cross_entropy_with_logits: y}"),
    layers("sigmoid", "{binary_cross_entropy_with_logits: y, reduction: sum}"),
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], ModuleType]:
    """compiled(case): the case's float64 module, compiled once for all the tests."""
    directory = tmp_path_factory.mktemp("ops")

    @functools.cache
    def compile_text(text: str) -> ModuleType:
        return compile_module(text, directory, "float64")

    return lambda case: compile_text(case.text)


def point(module: ModuleType, case: Case) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    inputs = random_inputs(module, np.random.default_rng(0), domains=case.domains)
    return float64_params(module, 0), inputs


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_op_matches_finite_differences(compiled: Compiled, case: Case) -> None:
    module = compiled(case)
    params, inputs = point(module, case)
    _, grads = module.value_and_grad(params, **inputs)
    differences = central_differences(module, params, inputs)
    for wrt in module.WRT:
        assert np.shape(grads[wrt]) == differences[wrt].shape, wrt
        assert relative_error(grads[wrt], differences[wrt]) < FD_TOLERANCE, wrt


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_op_matches_torch(compiled: Compiled, case: Case) -> None:
    pytest.importorskip("torch")
    module = compiled(case)
    params, inputs = point(module, case)
    value, grads = module.value_and_grad(params, **inputs)
    expected_value, expected = TorchReference(case.text).value_and_grad(params, inputs, module.WRT)
    assert relative_error(value, expected_value) < TORCH_TOLERANCE
    for wrt in module.WRT:
        assert relative_error(grads[wrt], expected[wrt]) < TORCH_TOLERANCE, wrt


# --- the max gate and its kin route the gradient ----------------------------------------


def _grads(compiled: Compiled, formula: str, **values: list[float]) -> dict[str, np.ndarray]:
    """Gradients of `sum(formula)` at the given vectors (inputs named by the keywords)."""
    case = Case(
        f"routing {formula}",
        yaml.safe_dump(
            {
                "name": "routing",
                "inputs": {name: [len(value)] for name, value in values.items()},
                "nodes": {"f": f"sum({formula})"},
                "wrt": list(values),
            },
            sort_keys=False,
        ),
    )
    module = compiled(case)
    return module.value_and_grad({}, **{name: np.array(value) for name, value in values.items()})[1]


def test_maximum_routes_to_the_larger_input(compiled: Compiled) -> None:
    grads = _grads(compiled, "maximum(a, b)", a=[3.0, -1.0, 2.0], b=[1.0, 0.0, 2.0])
    np.testing.assert_array_equal(grads["a"], [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(grads["b"], [0.0, 1.0, 0.5])


def test_minimum_routes_to_the_smaller_input(compiled: Compiled) -> None:
    grads = _grads(compiled, "minimum(a, b)", a=[3.0, -1.0, 2.0], b=[1.0, 0.0, 2.0])
    np.testing.assert_array_equal(grads["a"], [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(grads["b"], [1.0, 0.0, 0.5])


def test_max_reduction_shares_ties(compiled: Compiled) -> None:
    grads = _grads(compiled, "max(a)", a=[1.0, 4.0, 4.0, -2.0])
    np.testing.assert_array_equal(grads["a"], [0.0, 0.5, 0.5, 0.0])
    # `max(a) + 0 * a` is max(a) broadcast to a's 4 elements, as in NumPy and PyTorch:
    # its sum is 4 * max(a) (SymPy's `0 * a = 0` once lost that shape, and the sum with it)
    grads = _grads(compiled, "max(a) + 0 * a", a=[1.0, 4.0, 4.0, -2.0])
    np.testing.assert_array_equal(grads["a"], [0.0, 2.0, 2.0, 0.0])


def test_relu_and_leaky_relu_slopes(compiled: Compiled) -> None:
    grads = _grads(compiled, "relu(a) + leaky_relu(b, 0.2)", a=[-1.0, 2.0], b=[-1.0, 2.0])
    np.testing.assert_array_equal(grads["a"], [0.0, 1.0])
    np.testing.assert_allclose(grads["b"], [0.2, 1.0], rtol=1e-15)


# --- the table covers every registered name ---------------------------------------------


def _terms(term: fm.Term) -> Iterator[fm.Term]:
    yield term
    children: tuple[Any, ...] = ()
    if isinstance(term, fm.Neg):
        children = (term.operand,)
    elif isinstance(term, fm.BinOp):
        children = (term.left, term.right)
    elif isinstance(term, fm.Call):
        children = term.args + tuple(value for _, value in term.kwargs)
    elif isinstance(term, fm.Seq):
        children = term.items
    for child in children:
        yield from _terms(child)


def _variants(case: Case) -> set[str]:
    """What a case exercises: function names, `@`, constants, axis kinds and loss reductions."""
    found: set[str] = set()
    for node in parse_spec(case.text, "case.yaml").nodes:
        try:
            tree = fm.parse_formula(node.formula, Loc("case.yaml", 1, 1), node.name)
        except SpecError:
            assert case.bug, f"case {case.id} does not parse"
            continue
        for term in _terms(tree):
            if isinstance(term, fm.BinOp) and term.op == "@":
                found.add("@")
            elif isinstance(term, fm.Ref) and term.name in ("pi", "e"):
                found.add(term.name)
            elif isinstance(term, fm.Call):
                found.add(term.func)
                found |= _call_variants(term)
    raw = yaml.safe_load(case.text)
    for layer in raw.get("layers", []):
        found.add(f"activation {layer.get('activation', 'identity')}")
    if "loss" in raw:
        loss = dict(raw["loss"])
        reduction = loss.pop("reduction", "mean")
        found.add(f"layer loss {next(iter(loss))} reduction={reduction}")
    return found


def _call_variants(term: fm.Call) -> set[str]:
    keywords = dict(term.kwargs)
    if term.func in REDUCTIONS:
        axis = keywords.get("axis")
        kind = (
            "None"
            if axis is None or isinstance(axis, fm.Ref)
            else "tuple"
            if isinstance(axis, fm.Seq)
            else "int"
        )
        return {f"{term.func} axis={kind}"}
    if term.func in _LOSSES:
        reduction = keywords.get("reduction")
        return {
            f"{term.func} reduction={reduction.value if isinstance(reduction, fm.Text) else 'mean'}"
        }
    return set()


def required_variants() -> set[str]:
    names = set(ELEMENTWISE) | set(LANGUAGE_OPS) | set(_LOSSES) | {"@", "pi", "e"}
    names |= {f"{op} axis={kind}" for op in REDUCTIONS for kind in ("None", "int", "tuple")}
    names |= {f"{loss} reduction={r}" for loss in _LOSSES for r in ("mean", "sum")}
    names |= {f"layer loss {loss} reduction={r}" for loss in LAYER_LOSSES for r in ("mean", "sum")}
    names |= {f"activation {activation}" for activation in LAYER_ACTIVATIONS}
    return names


def test_every_registered_name_has_a_case() -> None:
    covered = set().union(*(_variants(case) for case in CASES))
    missing = sorted(required_variants() - covered)
    assert not missing, f"add cases to tests/test_ops.py for: {', '.join(missing)}"


def test_reductions_are_the_registered_ones() -> None:
    """REDUCTIONS above names every reduction of the language (a new one needs axis cases)."""
    from symbackprop.ops import Reduction

    registered = {name for name, op in LANGUAGE_OPS.items() if issubclass(op, Reduction)}
    assert registered == set(REDUCTIONS)

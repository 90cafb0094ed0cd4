"""Numerical edge cases of generated modules, with NumPy warnings raised as errors.

- logits of +-1e4 in the cross-entropy losses, and sigmoid, softplus, softmax,
  log_softmax and logsumexp at +-1000: finite values and gradients (as PyTorch's), no
  overflow, no division by zero, no invalid operation, no warning, in float64 and float32;
- NaN and inf in inputs come out as NaN or inf, never as an exception;
- float32 modules agree with float64 ones to float32 precision, and never upcast: the
  value, every float in the cache and every gradient are float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import HealthCheck, given, note, settings

from tests.strategies import DrawnSpec, leaf_values, specs
from tests.support import EXAMPLES, compile_module, float64_params, random_inputs, relative_error

DTYPES = ("float64", "float32")
# against PyTorch in float64: float64 modules to rounding, float32 ones to float32 precision
# at the inputs' scale (exp(x - logsumexp(x)) at |x| = 1000 carries 1000 * 2**-24 = 6e-5)
TOLERANCE = {"float64": 1e-12, "float32": 1e-4}
FLOAT32_AGREEMENT = 1e-4


@contextmanager
def strict_numpy() -> Iterator[None]:
    """Every NumPy warning an error; overflow, division by zero and invalid operations raise.
    (Underflow to 0, as exp(-1000), is the right answer and stays allowed.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            yield


def run(
    module: ModuleType, params: dict[str, Any], inputs: dict[str, Any]
) -> tuple[np.ndarray, dict, dict]:
    """value, cache and gradients, forward and backward under strict_numpy."""
    with strict_numpy():
        value, cache = module.forward(params, **inputs)
        grads = module.backward(cache)
    return np.asarray(value), cache, grads


def graph_spec(formula: str, inputs: str, wrt: str, dtype: str, **nodes: str) -> str:
    """A spec whose output is `objective: formula`, after `nodes`."""
    lines = [f"  {name}: '{text}'" for name, text in {**nodes, "objective": formula}.items()]
    body = "\n".join(lines)
    return f"name: edge\ndtype: {dtype}\ninputs: {inputs}\nnodes:\n{body}\nwrt: [{wrt}]\n"


def torch_value_and_grad(fn: Any, x: np.ndarray) -> tuple[float, np.ndarray]:
    """PyTorch's float64 value of fn(x) and its gradient: the reference."""
    leaf = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    value = fn(leaf)
    value.backward()
    return float(value.detach()), leaf.grad.numpy()


def assert_matches(
    value: np.ndarray, grad: np.ndarray, expected: tuple[float, np.ndarray], dtype: str
) -> None:
    expected_value, expected_grad = expected
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value.dtype == np.dtype(dtype) and grad.dtype == np.dtype(dtype)
    assert relative_error(value, expected_value) < TOLERANCE[dtype]
    assert relative_error(grad, expected_grad) < TOLERANCE[dtype]


# --- extreme logits -----------------------------------------------------------------------

BIG_LOGITS = np.array(
    [
        [1e4, -1e4, 0.0],  # the label's logit dominates: loss 0
        [-1e4, 1e4, -1e4],  # another one dominates: loss 2e4
        [1e4, 1e4, -1e4],  # a tie at the top
        [-1e4, -1e4, -1e4],  # all very negative
    ]
)
LABELS = np.array([0, 0, 2, 1])


@pytest.mark.parametrize("copies", [1, 10])  # from 32 rows the row max is taken otherwise
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_of_huge_logits(
    tmp_path: Path, dtype: str, reduction: str, copies: int
) -> None:
    formula = f'softmax_cross_entropy(z, y, reduction="{reduction}")'
    inputs = "{z: [batch, 3], y: {shape: [batch], dtype: int64}}"
    module = compile_module(graph_spec(formula, inputs, "z", dtype), tmp_path)
    logits, labels = np.tile(BIG_LOGITS, (copies, 1)), np.tile(LABELS, copies)
    value, _, grads = run(module, {}, {"z": logits, "y": labels})
    reference = torch_value_and_grad(
        lambda z: F.cross_entropy(z, torch.tensor(labels), reduction=reduction), logits
    )
    assert_matches(value, grads["z"], reference, dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_of_huge_logits(tmp_path: Path, dtype: str, reduction: str) -> None:
    formula = f'binary_cross_entropy_with_logits(z, t, reduction="{reduction}")'
    module = compile_module(graph_spec(formula, "{z: [4, 3], t: [4, 3]}", "z, t", dtype), tmp_path)
    targets = np.tile([0.0, 1.0, 0.25], (4, 1))
    value, _, grads = run(module, {}, {"z": BIG_LOGITS, "t": targets})
    reference = torch_value_and_grad(
        lambda z: F.binary_cross_entropy_with_logits(z, torch.tensor(targets), reduction=reduction),
        BIG_LOGITS,
    )
    assert_matches(value, grads["z"], reference, dtype)
    assert np.all(np.isfinite(grads["t"]))


def test_layer_form_loss_of_huge_logits(tmp_path: Path) -> None:
    """The same through the layer form: one identity layer whose output is the logits."""
    text = (
        "name: edge\ninputs: {x: [batch, 3], y: {shape: [batch], dtype: int64}}\n"
        "layers: [{dense: 3, bias: false}]\nloss: {softmax_cross_entropy: y}\n"
    )
    module = compile_module(text, tmp_path)
    value, _, grads = run(module, {"W1": np.eye(3)}, {"x": BIG_LOGITS, "y": LABELS})
    reference = torch_value_and_grad(
        lambda w: F.cross_entropy(torch.tensor(BIG_LOGITS) @ w, torch.tensor(LABELS)), np.eye(3)
    )
    assert_matches(value, grads["W1"], reference, "float64")


# --- saturating functions at +-1000 -------------------------------------------------------

EXTREME = np.array([[-1000.0, -1.0, 0.5, 1000.0], [1000.0, 1000.0, -1000.0, 3.0], [-1000.0] * 4])


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.logaddexp(x, torch.zeros_like(x))


# formula over x [3, 4] -> the same in PyTorch; the objective is sum(f * f), so that the
# gradient is 2 f f' and neither factor may be inf or NaN
SATURATING = {
    "sigmoid(x)": torch.sigmoid,
    "softplus(x)": _softplus,
    "softplus(-x)": lambda x: _softplus(-x),
    "log_softmax(x)": lambda x: torch.log_softmax(x, -1),
    "log_softmax(x, axis=0)": lambda x: torch.log_softmax(x, 0),
    "softmax(x)": lambda x: torch.softmax(x, -1),
    "softmax(x, axis=0)": lambda x: torch.softmax(x, 0),
    "logsumexp(x, axis=-1)": lambda x: torch.logsumexp(x, -1),
    "logsumexp(x)": torch.logsumexp,
    "tanh(x)": torch.tanh,
    "x * sigmoid(x)": lambda x: x * torch.sigmoid(x),
    "leaky_relu(x, 0.2)": lambda x: F.leaky_relu(x, 0.2),
}


def _torch_sum_of_squares(fn: Any) -> Any:
    def objective(x: torch.Tensor) -> torch.Tensor:
        value = fn(x) if fn is not torch.logsumexp else torch.logsumexp(x, dim=(0, 1))
        return torch.sum(value * value)

    return objective


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("formula", list(SATURATING))
def test_saturating_functions_at_1000(tmp_path: Path, formula: str, dtype: str) -> None:
    module = compile_module(
        graph_spec("sum(f * f)", "{x: [3, 4]}", "x", dtype, f=formula), tmp_path
    )
    value, cache, grads = run(module, {}, {"x": EXTREME})
    assert_matches(
        value,
        grads["x"],
        torch_value_and_grad(_torch_sum_of_squares(SATURATING[formula]), EXTREME),
        dtype,
    )
    for key, saved in cache.items():
        assert np.all(np.isfinite(saved)), f"cache[{key!r}] is not finite"


# --- cases: every example, and formulas over the rest of the language ---------------------

EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
FORMULAS = {
    "swish": ("sum(x * sigmoid(x) * w)", "{x: [batch, 4], w: [4]}"),
    "smooth": (
        "mean(log(x * x + 1) + sqrt(abs(x) + 0.5) * tanh(w) + exp(-x * x) / (1 + w * w))",
        "{x: [batch, 4], w: [4]}",
    ),
    "softmax": (
        "sum(softmax(x @ transpose(x), axis=0) * w) + logsumexp(x)",
        "{x: [batch, 4], w: [batch]}",
    ),
    "log_softmax": (
        "sum(log_softmax(x, axis=-1) * sin(w)) + max(x, axis=(0, 1))",
        "{x: [batch, 4], w: [4]}",
    ),
    "losses": (
        'mse(x, w) + binary_cross_entropy_with_logits(x * 3, sigmoid(w), reduction="sum")',
        "{x: [batch, 4], w: [batch, 4]}",
    ),
    "cross_entropy": (
        "softmax_cross_entropy(x * w, y) + mean(softplus(x) ** 2)",
        "{x: [batch, 4], w: [4], y: {shape: [batch], dtype: int64}}",
    ),
}


def _formula_text(name: str) -> str:
    formula, inputs = FORMULAS[name]
    wrt = ", ".join(key for key in yaml.safe_load(inputs) if key != "y")
    return graph_spec(formula, inputs, wrt, "float64")


def _spec_text(kind: str, name: str) -> str:
    if kind == "example":
        return (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
    return _formula_text(name)


CASES = [("example", name) for name in EXAMPLE_NAMES] + [("formula", name) for name in FORMULAS]
CASE_IDS = [f"{kind}-{name}" for kind, name in CASES]


# --- NaN and inf in inputs ----------------------------------------------------------------

POISONS = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
POISONED = [
    pytest.param(kind, name, poison, id=f"{kind}-{name}-{poison}")
    for kind, name in CASES
    for poison in POISONS
]


@pytest.mark.parametrize(("kind", "name", "poison"), POISONED)
def test_nan_and_inf_inputs_propagate(tmp_path: Path, kind: str, name: str, poison: str) -> None:
    """A poisoned input element shows up as NaN or inf in the value or the gradients: the
    module neither raises nor hides it. NumPy's own 'invalid value' warnings are allowed."""
    module = compile_module(_spec_text(kind, name), tmp_path)
    params = float64_params(module, seed=0)
    inputs = random_inputs(module, np.random.default_rng(0))
    first = next(key for key, (_, dtype) in module.INPUTS.items() if dtype.startswith("float"))
    inputs[first] = np.array(inputs[first], dtype=np.float64)
    inputs[first].flat[0] = POISONS[poison]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "invalid value", RuntimeWarning)
        with np.errstate(over="raise", divide="raise", invalid="ignore"):
            value, cache = module.forward(params, **inputs)
            grads = module.backward(cache)
    results = [np.asarray(value), *(np.asarray(grad) for grad in grads.values())]
    assert not all(np.all(np.isfinite(result)) for result in results)
    if poison == "nan":
        assert np.isnan(value), "a NaN input must give a NaN value"


# --- float32 ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), CASES, ids=CASE_IDS)
def test_float32_gradients_agree_with_float64(tmp_path: Path, kind: str, name: str) -> None:
    text = _spec_text(kind, name)
    single = compile_module(text, tmp_path, dtype="float32")
    double = compile_module(text, tmp_path, dtype="float64")
    params = float64_params(double, seed=0)
    inputs = random_inputs(double, np.random.default_rng(0))
    value64, _, grads64 = run(double, params, inputs)
    value32, cache32, grads32 = run(single, params, inputs)  # float64 arrays in, on purpose
    assert_float32_throughout(value32, cache32, grads32)
    assert relative_error(value32, value64) < FLOAT32_AGREEMENT
    for key in double.WRT:
        assert relative_error(grads32[key], grads64[key]) < FLOAT32_AGREEMENT, key


def assert_float32_throughout(
    value: np.ndarray, cache: dict[str, Any], grads: dict[str, Any]
) -> None:
    """No float64 anywhere: not in the value, the cache (NumPy scalars included) or a gradient."""
    assert value.dtype == np.float32
    for key, saved in cache.items():
        if isinstance(saved, np.ndarray | np.generic) and saved.dtype.kind == "f":
            assert saved.dtype == np.float32, f"cache[{key!r}] is {saved.dtype}"
        assert not isinstance(saved, float), f"cache[{key!r}] is a Python float"
    for key, grad in grads.items():
        assert np.asarray(grad).dtype == np.float32, (
            f"the gradient of {key} is {np.asarray(grad).dtype}"
        )


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(drawn=specs())
def test_float32_modules_never_upcast(
    drawn: DrawnSpec, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every kind of formula the random specs draw, compiled as float32 and fed float64."""
    document = {**drawn.document, "dtype": "float32"}
    text = yaml.safe_dump(document, sort_keys=False)
    note(text)
    module = compile_module(text, tmp_path_factory.getbasetemp())
    values = leaf_values(drawn, np.random.default_rng(0))
    params = {name: values[name] for name in module.PARAMS}
    inputs = {name: values[name] for name in module.INPUTS}
    assert_float32_throughout(*run(module, params, inputs))

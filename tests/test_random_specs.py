"""Random valid specs (tests/strategies.py): gradients against PyTorch and finite differences.

Each drawn spec is compiled, imported and evaluated at a random float64 point. Its value
and gradients must match PyTorch autograd run on the same drawn structure (relative
error below 1e-9), and central finite differences (below 1e-6, plus the differences' own
rounding error) wherever the point is away from a kink of relu, abs, max and friends.
A failure prints the shrunk spec as YAML.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from tests.strategies import OPEN_BUGS, OPS, DrawnSpec, evaluate, leaf_values, ops_used, specs
from tests.support import (
    central_differences,
    compile_module,
    float64_params,
    random_inputs,
    relative_error,
)

SPEC_COUNT = 1000  # about 15 s on 2 cores; 3000 took 50 s and found nothing more
COVERAGE_DRAWS = 500  # every op shows up within this many draws
TORCH_TOLERANCE = 1e-9
FD_TOLERANCE = 1e-6
FD_EPS = 1e-6
# gradients below this size are compared absolutely (1e-13): they are cancellation noise
GRADIENT_FLOOR = 1e-4
# finite differences step FD_EPS; nearer than this to a kink they would straddle it
KINK_MARGIN = 1e-4


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drawn_specs")


def torch_reference(
    drawn: DrawnSpec, values: dict[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray], float]:
    """PyTorch's value and gradients at `values`, and how near the point is to a kink."""
    tensors = {name: torch.tensor(value) for name, value in values.items()}
    for name in drawn.wrt:
        tensors[name].requires_grad_(True)
    evaluation = evaluate(drawn, tensors)
    output = evaluation.env[drawn.output]
    if output.requires_grad:  # else the output depends on none of wrt: all gradients are 0
        output.backward()
    grads = {}
    for name in drawn.wrt:
        grad = tensors[name].grad
        grads[name] = np.zeros(values[name].shape) if grad is None else grad.numpy()
    return float(output.detach()), grads, evaluation.kink_margin


def deviation(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected), initial=0.0))


def gradient_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """The largest deviation relative to the gradient's scale, or to GRADIENT_FLOOR when the
    gradient is smaller: a gradient that cancels to 0 (`sum(softmax(x))`) is rounding noise."""
    return deviation(actual, expected) / max(
        float(np.max(np.abs(expected), initial=0.0)), GRADIENT_FLOOR
    )


def check_drawn_spec(drawn: DrawnSpec, seed: int, directory: Path, as_json: bool = False) -> None:
    text = drawn.yaml()
    note(f"spec:\n{text}seed: {seed}")
    event("layer form" if "layers" in drawn.document else "graph form")
    for op in sorted(ops_used(drawn)):
        event(f"uses {op}")
    values = leaf_values(drawn, np.random.default_rng(seed))
    try:
        module = compile_module(json.dumps(drawn.document) if as_json else text, directory)
        params = {name: values[name] for name in module.PARAMS}
        inputs = {name: values[name] for name in module.INPUTS}
        value, cache = module.forward(params, **inputs)
        grads = module.backward(cache)
    except Exception as err:
        # one place for every crash: errors inside generated modules would otherwise carry a
        # new file name per spec, and hypothesis would take each for a bug of its own
        raise AssertionError(f"compiling or running the drawn spec raised {err!r}") from err
    expected_value, expected, margin = torch_reference(drawn, values)

    assert tuple(module.WRT) == drawn.wrt
    assert np.asarray(value).shape == () and np.asarray(value).dtype == np.float64
    assert deviation(value, expected_value) < TORCH_TOLERANCE * max(1.0, abs(expected_value))
    for name in drawn.wrt:
        assert grads[name].shape == values[name].shape, name
        assert grads[name].dtype == np.float64, name
        error = gradient_error(grads[name], expected[name])
        assert error < TORCH_TOLERANCE, f"d/d{name}: relative error {error:.3g} against PyTorch"
    if margin < KINK_MARGIN:
        event("finite differences skipped: the point is near a kink")
        return
    check_finite_differences(module, params, inputs, grads, float(value))


def check_finite_differences(
    module: ModuleType,
    params: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    value: float,
) -> None:
    """Relative error below FD_TOLERANCE, beyond the differences' own rounding error
    (a few ulps of the value divided by the step)."""
    differences = central_differences(module, params, inputs, eps=FD_EPS)
    rounding = 8 * np.finfo(np.float64).eps * max(abs(value), 1.0) / FD_EPS
    for name, approx in differences.items():
        scale = float(np.max(np.abs(approx), initial=0.0))
        error = deviation(grads[name], approx)
        assert error <= FD_TOLERANCE * scale + rounding, (
            f"d/d{name}: off by {error:.3g} from finite differences of scale {scale:.3g}"
        )


@settings(
    max_examples=SPEC_COUNT,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(drawn=specs(), seed=st.integers(0, 2**32 - 1), as_json=st.booleans())
def test_drawn_specs_match_torch_and_finite_differences(
    drawn: DrawnSpec, seed: int, as_json: bool, module_dir: Path
) -> None:
    check_drawn_spec(drawn, seed, module_dir, as_json)


def test_strategy_reaches_the_whole_language() -> None:
    """Within a run's worth of draws, every op of the formula language and both spec forms
    come up (a guard against a strategy that drifts into drawing a corner)."""
    seen: set[str] = set()

    @settings(
        max_examples=COVERAGE_DRAWS,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(specs())
    def collect(drawn: DrawnSpec) -> None:
        seen.update(ops_used(drawn))
        seen.add("layers" if "layers" in drawn.document else "nodes")

    collect()
    assert set(OPS) | {"layers", "nodes"} <= seen, sorted(set(OPS) - seen)


# --- cases the random specs found, kept as plain tests ----------------------------------


def _graph_spec(*nodes: str, inputs: str = "{x: [3], s: []}") -> str:
    """A graph-form spec over inputs x [3] and s [], differentiated with respect to x and s;
    its nodes are n1, n2, ... and the last is the output."""
    lines = [f"  n{index}: '{text}'" for index, text in enumerate(nodes, start=1)]
    return f"name: found\ninputs: {inputs}\nnodes:\n" + "\n".join(lines) + "\nwrt: [x, s]\n"


def _open(bug: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(bug in OPEN_BUGS, strict=True, reason=f"compiler bug {bug!r}, open")


CONSTANT_OPERAND = _open("constant_operand")
FOUND = [
    pytest.param(_graph_spec("sum(x, axis=None) + mean(s, axis=None)"), id="axis-None"),
    pytest.param(_graph_spec("leaky_relu(x)", "sum(n1) + s"), id="node-is-leaky_relu"),
    pytest.param(_graph_spec("maximum(x, x)", "sum(n1) * s"), id="node-is-maximum-of-one-node"),
    pytest.param(
        _graph_spec("maximum(x, 0.5)", "minimum(s, 2)", "sum(n1) + n2"),
        id="node-is-maximum-with-number",
    ),
    pytest.param(
        "name: found\ninputs: {x: [batch, 2], y: [batch, 1]}\n"
        "layers: [{dense: 1, activation: leaky_relu}]\nloss: {mse: y}\n",
        id="layer-activation-leaky_relu",
    ),
    pytest.param(
        _graph_spec("sum(mean(x, axis=())) + mean(s, axis=())"),
        id="mean-over-no-axes",
        marks=_open("mean_over_no_axes"),
    ),
    pytest.param(_graph_spec("sum(x - x) + s"), id="sum-of-x-minus-x", marks=CONSTANT_OPERAND),
    pytest.param(
        _graph_spec("logsumexp(x - x) + max(s * 0)"),
        id="logsumexp-of-x-minus-x",
        marks=CONSTANT_OPERAND,
    ),
    pytest.param(_graph_spec("mse(x, x) + s"), id="mse-of-x-and-x", marks=CONSTANT_OPERAND),
]


@pytest.mark.parametrize("text", FOUND)
def test_found_case_matches_finite_differences(text: str, tmp_path: Path) -> None:
    module = compile_module(text, tmp_path)
    rng = np.random.default_rng(0)
    inputs = random_inputs(module, rng)
    params = float64_params(module, seed=0)
    _, grads = module.value_and_grad(params, **inputs)
    for name, approx in central_differences(module, params, inputs).items():
        assert relative_error(grads[name], approx) < FD_TOLERANCE, name

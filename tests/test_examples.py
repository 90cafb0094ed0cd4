"""Every example of examples/ compiles into a module whose values and gradients are right.

The seed examples are checked against the lectures' hand-computed values; every example
(parametrized over examples/*.yaml, so a new one is covered at once) against central
finite differences in float64 and against PyTorch autograd, and for the module API of
DESIGN.md: dtypes, init_params, the constants, predict and the calling conventions.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from tests.support import (
    EXAMPLES,
    GENERATED,
    TorchReference,
    central_differences,
    compile_module,
    example_spec,
    float64_params,
    random_inputs,
    relative_error,
    sampled_error,
)

EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
FD_TOLERANCE = 1e-6
TORCH_TOLERANCE = 1e-10
# Differencing every element of MNIST's 784x256 W1 would take a minute: gradients of more
# elements than this are checked at this many random elements (see central_differences).
FD_SAMPLE = 40

Compiled = Callable[..., ModuleType]


def raw_spec(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))


def is_layer_form(name: str) -> bool:
    return "layers" in raw_spec(name)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    """compiled(name, dtype=None): the example's module, compiled once per dtype."""
    directory = tmp_path_factory.mktemp("examples")

    @functools.cache
    def get(name: str, dtype: str | None = None) -> ModuleType:
        return compile_module(example_spec(name), directory, dtype)

    return get


def point(module: ModuleType, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """float64 params and inputs at a random point (batch 3: small enough for differences)."""
    return float64_params(module, seed), random_inputs(module, np.random.default_rng(seed))


# --- the lectures' hand-computed values ---------------------------------------------------


def test_seed_graph_matches_the_lecture(compiled: Compiled) -> None:
    module = compiled("seed_graph")
    value, grads = module.value_and_grad({}, a=2.0, b=1.0)
    assert float(value) == 6.0
    assert {name: float(grad) for name, grad in grads.items()} == {"a": 2.0, "b": 5.0}


@pytest.mark.parametrize(
    ("w", "value", "expected"),
    [
        # max(f, w) = f: the gradient reaches x, y and z as for f = (x + y) z alone
        (-20.0, -12.0, {"x": -4.0, "y": -4.0, "z": 3.0, "w": 0.0}),
        # max(f, w) = w: all of it goes to w
        (7.0, 7.0, {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}),
    ],
    ids=["routes-to-f", "routes-to-w"],
)
def test_gates_match_the_lecture(
    compiled: Compiled, w: float, value: float, expected: dict[str, float]
) -> None:
    module = compiled("gates")
    result, grads = module.value_and_grad({}, x=-2.0, y=5.0, z=-4.0, w=w)
    assert float(result) == value
    assert {name: float(grad) for name, grad in grads.items()} == expected


# --- every example: finite differences and PyTorch --------------------------------------


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_gradients_match_finite_differences(compiled: Compiled, name: str) -> None:
    module = compiled(name, "float64")
    params, inputs = point(module)
    _, grads = module.value_and_grad(params, **inputs)
    differences = central_differences(module, params, inputs, sample=FD_SAMPLE)
    assert set(grads) == set(module.WRT)
    for wrt in module.WRT:
        assert np.shape(grads[wrt]) == differences[wrt].shape, wrt
        assert sampled_error(grads[wrt], differences[wrt]) < FD_TOLERANCE, wrt


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_gradients_match_torch(compiled: Compiled, name: str) -> None:
    pytest.importorskip("torch")
    module = compiled(name, "float64")
    params, inputs = point(module, seed=1)
    value, grads = module.value_and_grad(params, **inputs)
    reference = TorchReference((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))
    # the reference reads any spec; one it cannot read (a new op) fails here, not skips
    expected_value, expected = reference.value_and_grad(params, inputs, module.WRT)
    assert relative_error(value, expected_value) < TORCH_TOLERANCE
    for wrt in module.WRT:
        assert relative_error(grads[wrt], expected[wrt]) < TORCH_TOLERANCE, wrt


@pytest.mark.parametrize("name", [name for name in EXAMPLE_NAMES if is_layer_form(name)])
def test_predict_is_the_last_layer(compiled: Compiled, name: str) -> None:
    pytest.importorskip("torch")
    module = compiled(name, "float64")
    params, inputs = point(module, seed=2)
    first = raw_spec(name).get("input") or next(iter(module.INPUTS))
    outputs = module.predict(params, inputs[first])
    expected = TorchReference((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")).predict(
        params, inputs
    )
    assert outputs.shape == expected.shape == (3, raw_spec(name)["layers"][-1]["dense"])
    assert relative_error(outputs, expected) < TORCH_TOLERANCE


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
@pytest.mark.parametrize("g", [2.5, -0.5])
def test_backward_scales_by_grad_output(compiled: Compiled, name: str, g: float) -> None:
    module = compiled(name, "float64")
    params, inputs = point(module)
    _, grads = module.value_and_grad(params, **inputs)
    _, cache = module.forward(params, **inputs)
    scaled = module.backward(cache, grad_output=g)
    assert set(scaled) == set(grads)
    for wrt, grad in grads.items():
        np.testing.assert_allclose(
            scaled[wrt], g * np.asarray(grad), rtol=1e-12, atol=1e-15, err_msg=wrt
        )


# --- the module API -----------------------------------------------------------------------


@pytest.mark.parametrize("override", [None, "float32"], ids=["spec-dtype", "as-float32"])
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_values_keep_the_spec_dtype(compiled: Compiled, name: str, override: str | None) -> None:
    """float32 stays float32 end to end, even when the caller passes float64 arrays and a
    float64 grad_output; every example is also tried as float32, for more kinds of ops."""
    module = compiled(name, override)
    dtype = np.dtype(override or raw_spec(name).get("dtype", "float64"))
    assert module.DTYPE == dtype.name
    params = {key: value.astype(np.float64) for key, value in module.init_params(0).items()}
    inputs = random_inputs(module, np.random.default_rng(0))  # float64 arrays on purpose
    with np.errstate(all="raise"):
        value, grads = module.value_and_grad(params, **inputs)
        _, cache = module.forward(params, **inputs)
        backward = module.backward(cache, grad_output=np.float64(2.0))
    assert np.ndim(value) == 0 and np.asarray(value).dtype == dtype
    for wrt in module.WRT:
        assert grads[wrt].dtype == dtype, wrt
        assert backward[wrt].dtype == dtype, wrt
    for key, saved in cache.items():
        if isinstance(saved, np.ndarray) and saved.dtype.kind == "f":
            assert saved.dtype == dtype, f"cache[{key!r}] is {saved.dtype}"
    if is_layer_form(name):
        first = next(iter(module.INPUTS))
        assert module.predict(params, inputs[first]).dtype == dtype


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_init_params_is_seeded(compiled: Compiled, name: str) -> None:
    module = compiled(name)
    first, again, other = module.init_params(7), module.init_params(7), module.init_params(8)
    assert list(first) == list(module.PARAMS)
    for key, shape in module.PARAMS.items():
        assert first[key].shape == shape, key
        assert first[key].dtype == np.dtype(module.DTYPE), key
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    random = [key for key in module.PARAMS if np.any(first[key] != 0)]
    assert all(np.any(first[key] != other[key]) for key in random), "another seed, other params"


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_constants_follow_the_spec(compiled: Compiled, name: str) -> None:
    """SPEC_NAME, DTYPE, WRT, PARAMS and INPUTS as DESIGN.md describes them."""
    module, raw = compiled(name), raw_spec(name)
    dtype = raw.get("dtype", "float64")
    assert module.SPEC_NAME == raw["name"]
    inputs = {}
    for key, value in raw["inputs"].items():
        shape, input_dtype = (
            (value["shape"], value.get("dtype", dtype))
            if isinstance(value, dict)
            else (value, dtype)
        )
        inputs[key] = (tuple(shape), input_dtype)
    assert module.INPUTS == inputs
    expected_params = _expected_params(raw)
    assert module.PARAMS == expected_params
    assert module.WRT == tuple(raw.get("wrt") or expected_params)


def _expected_params(raw: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Layer params W1, b1, ... first (W [in, out]), then the spec's own params."""
    params: dict[str, tuple[int, ...]] = {}
    if "layers" in raw:
        source = raw.get("input") or next(iter(raw["inputs"]))
        spec = raw["inputs"][source]
        width = (spec["shape"] if isinstance(spec, dict) else spec)[-1]
        for index, layer in enumerate(raw["layers"], start=1):
            params[f"W{index}"] = (width, layer["dense"])
            if layer.get("bias", True):
                params[f"b{index}"] = (layer["dense"],)
            width = layer["dense"]
    for key, value in (raw.get("params") or {}).items():
        params[key] = tuple(value["shape"] if isinstance(value, dict) else value)
    return params


def test_inputs_constant_of_mlp(compiled: Compiled) -> None:
    module = compiled("mlp")
    assert module.INPUTS["x"] == (("batch", 784), "float32")
    assert module.INPUTS["y"] == (("batch",), "int64")


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_inputs_positional_or_by_keyword(compiled: Compiled, name: str) -> None:
    module = compiled(name, "float64")
    params, inputs = point(module)
    ordered = [inputs[key] for key in module.INPUTS]
    by_keyword = module.value_and_grad(params, **inputs)
    positional = module.value_and_grad(params, *ordered)
    assert float(positional[0]) == float(by_keyword[0])
    assert float(module.forward(params, *ordered)[0]) == float(by_keyword[0])
    for wrt in module.WRT:
        np.testing.assert_array_equal(positional[1][wrt], by_keyword[1][wrt], err_msg=wrt)


def is_scalar_graph(name: str) -> bool:
    raw = raw_spec(name)
    return (
        "layers" not in raw
        and not raw.get("params")
        and all(shape == [] for shape in raw["inputs"].values())
    )


@pytest.mark.parametrize("name", [name for name in EXAMPLE_NAMES if is_scalar_graph(name)])
def test_scalars_as_python_floats(compiled: Compiled, name: str) -> None:
    """A scalar graph takes plain floats and gives the same as 0-d arrays."""
    module = compiled(name)
    floats = {key: 0.5 + index for index, key in enumerate(module.INPUTS)}
    value, grads = module.value_and_grad({}, **floats)
    arrays = module.value_and_grad({}, **{key: np.float64(v) for key, v in floats.items()})
    assert float(value) == float(arrays[0])
    assert all(float(grads[key]) == float(arrays[1][key]) for key in module.WRT)


def run_train(module_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "train.py"), str(module_path), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", ["mlp", "swish_regression", "seed_mlp"])
def test_train_example_lowers_the_loss(name: str) -> None:
    """The README's quick start runs examples/train.py on the compiled mlp: its loss,
    printed every tenth of the steps, falls."""
    completed = run_train(GENERATED / f"{name}.py", "--steps", "100")
    assert completed.returncode == 0, completed.stderr
    losses = [float(line.split()[-1]) for line in completed.stdout.splitlines()]
    assert len(losses) == 11 and losses[-1] < 0.8 * losses[0], completed.stdout


def test_train_example_refuses_a_module_it_cannot_feed(tmp_path: Path) -> None:
    """Twelfth review: train.py makes a batch of feature rows for the first input; a
    module whose first input has other axes failed with NumPy's error, and the README
    said it trained any module."""
    spec = "name: l3\ninputs: {x: [batch, 4, 3]}\nparams: {w: [3]}\nnodes: {loss: mean(x * w)}\n"
    path = Path(compile_module(spec, tmp_path).__file__)
    completed = run_train(path, "--steps", "2")
    assert completed.returncode == 1
    assert "its first input, 'x', is not a batch of rows [batch, n]" in completed.stderr

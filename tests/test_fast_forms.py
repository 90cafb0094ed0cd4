"""The forms the generated code takes for speed, where they are not the obvious ones:
`np.dot` for matrix products, one vector of ones shared by every bias gradient of a batch
(`np.dot(t_ones_0, d_s)` rather than `d_s.sum(axis=0)`), and one-hot rows taken from an
identity-matrix constant for cross-entropy over few classes. Each form is checked where
it applies and where it must not, and its gradients against PyTorch and finite
differences."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from symbackprop.compiler import compile_text
from symbackprop.ops import ONE_HOT_TABLE_MAX_CLASSES

from .support import (
    TorchReference,
    central_differences,
    float64_params,
    import_source,
    random_inputs,
    relative_error,
)

FD_TOLERANCE = 1e-6
TORCH_TOLERANCE = 1e-10


def mlp(widths: list[int], batch: str = "batch", activation: str = "tanh") -> str:
    layers = [f"  - {{dense: {width}, activation: {activation}}}" for width in widths[1:-1]]
    return "\n".join(
        [
            "name: fast",
            "inputs:",
            f"  x: [{batch}, {widths[0]}]",
            f"  y: {{shape: [{batch}], dtype: int64}}",
            "layers:",
            *layers,
            f"  - {{dense: {widths[-1]}}}",
            "loss: {softmax_cross_entropy: y}",
            "",
        ]
    )


def check_gradients(
    text: str, directory: Path, inputs: dict[str, np.ndarray] | None = None
) -> ModuleType:
    """The module's float64 gradients against finite differences and PyTorch's."""
    module = import_source(compile_text(text, "fast.yaml"), directory)
    params = float64_params(module, seed=0)
    inputs = inputs or random_inputs(module, np.random.default_rng(0), batch=5)
    value, grads = module.value_and_grad(params, **inputs)
    differences = central_differences(module, params, inputs)
    for name in module.WRT:
        assert grads[name].shape == np.shape(differences[name]), name
        assert relative_error(grads[name], differences[name]) < FD_TOLERANCE, name
    if _has_torch():
        expected_value, expected = TorchReference(text).value_and_grad(params, inputs, module.WRT)
        assert relative_error(value, expected_value) < TORCH_TOLERANCE
        for name in module.WRT:
            assert relative_error(grads[name], expected[name]) < TORCH_TOLERANCE, name
    return module


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --- matrix products ----------------------------------------------------------------------


def test_matrix_products_are_printed_as_np_dot() -> None:
    source = compile_text(mlp([4, 6, 3]), "fast.yaml")
    assert " @ " not in _code(source)
    assert "    s1 = np.dot(x, W1)\n" in source
    assert "    d_W2 = np.dot(h1.T, d_s2)\n" in source
    assert "    d_h1 = np.dot(d_s2, W2.T)\n" in source
    assert "    # dL/dW2 = h1^T @ dL/ds2\n" in source  # the comments keep the math's `@`


def test_products_of_vectors_and_matrices_keep_their_gradients(tmp_path: Path) -> None:
    text = """
name: vectors
inputs: {v: [4], x: [batch, 3]}
params:
  M: {shape: [4, 3], init: normal}
  u: {shape: [3], init: normal}
nodes:
  a: v @ M
  b: x @ u
  loss: sum(a * a) + mean(b * b) + v @ (M @ u)
wrt: [M, u]
"""
    check_gradients(text, tmp_path)


# --- bias gradients: one vector of ones for the batch -------------------------------------


def test_every_bias_gradient_of_the_batch_shares_one_vector_of_ones(tmp_path: Path) -> None:
    text = mlp([4, 6, 5, 3])
    source = compile_text(text, "fast.yaml")
    assert source.count("np.ones(") == 1
    assert "    t_ones_0 = np.ones(x.shape[0], dtype=DTYPE)\n" in source
    for layer, delta in (("3", "d_s3"), ("2", "d_s2"), ("1", "d_s1")):
        assert f"    d_b{layer} = np.dot(t_ones_0, {delta})\n" in source
    assert ".sum(axis=0)" not in _code(source)
    # the ones line says why it is there
    assert re.search(r"# ones @ d sums the rows of d in one BLAS call\n    t_ones_0 =", source)
    check_gradients(text, tmp_path)


def test_a_single_bias_gradient_keeps_its_sum(tmp_path: Path) -> None:
    """Making the ones costs what one sum saves: with one bias there are none."""
    text = mlp([4, 3])
    source = compile_text(text, "fast.yaml")
    assert "np.ones(" not in source and "t_ones" not in source
    assert "    d_b1 = d_s1.sum(axis=0)\n" in source
    check_gradients(text, tmp_path)


def test_a_fixed_batch_size_takes_the_ones_from_the_input(tmp_path: Path) -> None:
    text = mlp([4, 6, 3], batch="5")
    source = compile_text(text, "fast.yaml")
    assert "    t_ones_0 = np.ones(x.shape[0], dtype=DTYPE)\n" in source
    check_gradients(text, tmp_path)


BROADCAST = """
name: broadcast
inputs: {{x: {input}}}
params:
  b: {{shape: {param}, init: normal}}
  c: {{shape: {param}, init: normal}}
nodes:
  s: tanh(x * b + c)
  loss: mean(s * s)
wrt: [b, c]
"""


@pytest.mark.parametrize(
    ("input_shape", "param_shape", "summed"),
    [
        ("[batch, 3, 4]", "[4]", ".sum(axis=(0, 1))"),  # a batch of sequences
        ("[batch, 4]", "[1, 4]", ".sum(axis=0, keepdims=True)"),  # a kept axis
    ],
)
def test_sums_over_other_axes_keep_np_sum(
    tmp_path: Path, input_shape: str, param_shape: str, summed: str
) -> None:
    """`ones @ d` sums the rows of a matrix only: other broadcasts are summed by `.sum`."""
    text = BROADCAST.format(input=input_shape, param=param_shape)
    source = compile_text(text, "fast.yaml")
    assert "np.ones(" not in source
    assert summed in source
    check_gradients(text, tmp_path)


def test_a_bias_tied_across_steps_adds_each_step_through_the_ones(tmp_path: Path) -> None:
    text = """
name: tied_bias
inputs: {x: [batch, 4]}
params:
  W: {shape: [4, 4], init: normal, std: 0.5}
  b: {shape: [4], init: normal}
nodes:
  h1: tanh(x @ W + b)
  h2: tanh(h1 @ W + b)
  h3: tanh(h2 @ W + b)
  loss: mean(h3 * h3)
wrt: [W, b]
"""
    source = compile_text(text, "fast.yaml")
    assert source.count("np.ones(") == 1
    assert re.search(r"^    d_b \+= np\.dot\(t_ones_0, ", source, re.MULTILINE)
    check_gradients(text, tmp_path)


# --- cross-entropy: one-hot rows from a table of few classes ------------------------------


def test_few_classes_take_their_one_hot_rows_from_an_identity_matrix(tmp_path: Path) -> None:
    text = mlp([4, 6, 3])
    source = compile_text(text, "fast.yaml")
    assert "\n_ONE_HOT_ROWS_3 = np.eye(3, dtype=DTYPE)\n" in source
    assert "_probs_minus_one_hot(t_loss_0, y, d_loss / y.size, _ONE_HOT_ROWS_3)" in source
    check_gradients(text, tmp_path)


def test_many_classes_subtract_at_each_label_in_place(tmp_path: Path) -> None:
    classes = ONE_HOT_TABLE_MAX_CLASSES + 1
    text = mlp([4, classes])
    source = compile_text(text, "fast.yaml")
    assert "_ONE_HOT_ROWS" not in source
    assert "_probs_minus_one_hot(t_loss_0, y, d_loss / y.size)" in source
    module = check_gradients(text, tmp_path)
    # the largest table the module would hold is small: 64 x 64 float64s are 32 KiB
    assert ONE_HOT_TABLE_MAX_CLASSES**2 * 8 <= 32 * 1024
    assert not any(name.startswith("_ONE_HOT_ROWS") for name in vars(module))


SEQUENCE_LABELS = """
name: tagger
inputs:
  z: [batch, 3, {classes}]
  y: {{shape: [batch, 3], dtype: int64}}
params:
  w: {{shape: [{classes}], init: normal}}
nodes:
  logits: z * w
  loss: softmax_cross_entropy(logits, y)
wrt: [w]
"""


@pytest.mark.parametrize("classes", [4, ONE_HOT_TABLE_MAX_CLASSES + 2])
def test_labels_of_sequences_take_rows_of_their_own_shape(tmp_path: Path, classes: int) -> None:
    text = SEQUENCE_LABELS.format(classes=classes)
    assert ("_ONE_HOT_ROWS" in compile_text(text, "fast.yaml")) == (
        classes <= ONE_HOT_TABLE_MAX_CLASSES
    )
    rng = np.random.default_rng(1)
    inputs = {
        "z": rng.standard_normal((2, 3, classes)),
        "y": rng.integers(0, classes, size=(2, 3)),
    }
    check_gradients(text, tmp_path, inputs)


@pytest.mark.parametrize("classes", [3, ONE_HOT_TABLE_MAX_CLASSES + 1])
def test_a_label_past_the_last_class_is_an_index_error(tmp_path: Path, classes: int) -> None:
    """Either way of making the one-hot rows refuses a label with no class, rather than
    give a row of zeros (a loss that silently leaves the example out)."""
    module = import_source(compile_text(mlp([4, classes]), "fast.yaml"), tmp_path)
    params = module.init_params(0)
    x = np.ones((2, 4), dtype=np.float64)
    _, cache = module.forward(params, x, np.array([0, 1]))
    cache["y"] = np.array([0, classes])  # as if forward had been given it
    with pytest.raises(IndexError):
        module.backward(cache)
    with pytest.raises(IndexError):
        module.value_and_grad(params, x, np.array([0, classes]))


def _code(source: str) -> str:
    """The module's code lines without its comments and docstrings' prose."""
    return "\n".join(
        line.split("#")[0] for line in source.splitlines() if not line.lstrip().startswith("#")
    )

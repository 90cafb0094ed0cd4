"""The forms the generated code takes for speed, where they are not the obvious ones:
`np.dot` for matrix products (`np.matmul` for a large weight gradient); one vector of
ones shared by every bias gradient of a batch (`np.dot(t_ones_batch, d_s)` rather than
`d_s.sum(axis=0)`), made by `_ones`; relu's zero as a 0-d array of the module's dtype,
`_ZERO`; one-hot rows taken from an identity-matrix constant for
cross-entropy over few classes (in the loss, one dot product picks and sums); and a
dtype object, `_DTYPE`, where NumPy would parse DTYPE's name on every call. Each form
is checked where it applies and where it must not, and its gradients against PyTorch
and finite differences."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import sympy as sp

from symbackprop.build import build_program
from symbackprop.compiler import compile_text
from symbackprop.functions import Relu, Step
from symbackprop.ir import Statement, symbol
from symbackprop.ops import (
    MATMUL_MIN_SIZE,
    ONE_HOT_TABLE_MAX_BYTES,
    ONE_HOT_TABLE_MAX_CLASSES,
    BatchSum,
    Ones,
    SumTo,
)
from symbackprop.passes import batch_sums
from symbackprop.printer import MathPrinter, NumpyPrinter
from symbackprop.spec import parse_spec

from .support import (
    TorchReference,
    central_differences,
    float64_params,
    import_source,
    random_inputs,
    relative_error,
    sampled_error,
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


def test_a_large_weight_gradient_is_printed_as_np_matmul(tmp_path: Path) -> None:
    """A product whose result is known to have MATMUL_MIN_SIZE elements or more (the
    weight gradient `x.T @ d_s1` of a 130 x 130 layer) is `np.matmul`: np.dot's BLAS call
    is slower there. Products of a batch's size, or of small results, stay np.dot."""
    text = mlp([130, 130, 3])
    source = compile_text(text, "fast.yaml")
    assert 130 * 130 >= MATMUL_MIN_SIZE > 130 * 3
    assert "    d_W1 = np.matmul(x.T, d_s1)\n" in source
    assert "    d_W2 = np.dot(h1.T, d_s2)\n" in source
    assert "    s1 = np.dot(x, W1)\n" in source
    assert "    d_h1 = np.dot(d_s2, W2.T)\n" in source
    assert source.count("np.matmul(") == 1
    module = import_source(source, tmp_path)
    params = float64_params(module, seed=0)
    inputs = random_inputs(module, np.random.default_rng(0), batch=4)
    _, grads = module.value_and_grad(params, **inputs)
    differences = central_differences(module, params, inputs, sample=40)
    assert sampled_error(grads["W1"], differences["W1"]) < FD_TOLERANCE
    if _has_torch():
        expected = TorchReference(text).value_and_grad(params, inputs, module.WRT)[1]
        for name in module.WRT:
            assert relative_error(grads[name], expected[name]) < TORCH_TOLERANCE, name


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


# --- relu's zero, a 0-d array of the module's dtype ---------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_and_its_mask_compare_with_a_zero_of_the_module_dtype(
    tmp_path: Path, dtype: str
) -> None:
    """`_ZERO` rather than a Python 0 or a scalar, which NumPy converts into a 0-d array
    on every call; of the module's dtype, so no relu, mask or gradient changes dtype."""
    text = mlp([4, 6, 5, 3], activation="relu") + f"dtype: {dtype}\n"
    source = compile_text(text, "fast.yaml")
    assert "    h1 = np.maximum(s1, _ZERO, out=s1)\n" in source
    assert "    d_s1 = np.multiply(d_h1, h1 > _ZERO, out=d_h1)\n" in source
    assert "# dL/ds1 = dL/dh1 * relu'(s1) = dL/dh1 * [h1 > 0]\n" in source  # math, in comments
    assert re.search(r"[,(] 0[,)]", _code(source)) is None
    module = import_source(source, tmp_path)
    assert isinstance(module._ZERO, np.ndarray) and module._ZERO.shape == ()
    assert module._ZERO == 0 and module._ZERO.dtype == np.dtype(dtype)
    params = module.init_params(0)
    x = np.random.default_rng(0).standard_normal((7, 4))
    value, cache = module.forward(params, x, np.arange(7) % 3)
    assert cache["h1"].dtype == np.dtype(dtype) and (cache["h1"] >= 0).all()
    assert (cache["h1"] == 0).any() and (cache["h1"] > 0).any()
    grads = module.backward(cache)
    assert all(grad.dtype == np.dtype(dtype) for grad in grads.values())
    check_gradients(mlp([4, 6, 5, 3], activation="relu"), tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_relu_of_scalars_meets_the_0_d_zero(tmp_path: Path, dtype: str) -> None:
    """A 0-d `_ZERO` beside scalars: the value stays a scalar of the dtype (NumPy hands a
    ufunc's 0-d result back as a scalar), and the mask of each side of the kink is right."""
    text = f"""name: scalar_relu
dtype: {dtype}
inputs: {{a: [], b: []}}
nodes:
  h: relu(a * b)
  e: h * h + relu(b - a)
output: e
wrt: [a, b]
"""
    source = compile_text(text, "scalar_relu.yaml")
    assert "_ZERO" in _code(source)
    module = import_source(source, tmp_path)
    for a, b in ((1.5, 2.0), (-1.5, 2.0), (2.0, -0.5)):
        value, grads = module.value_and_grad({}, a, b)
        assert np.ndim(value) == 0 and np.asarray(value).dtype == np.dtype(dtype)
        assert all(np.asarray(g).dtype == np.dtype(dtype) for g in grads.values())
        h = max(a * b, 0.0)
        expected_a = 2 * h * b * (a * b > 0) - (b - a > 0)
        expected_b = 2 * h * a * (a * b > 0) + (b - a > 0)
        assert np.allclose([grads["a"], grads["b"]], [expected_a, expected_b], rtol=1e-6)
    check_gradients(text.replace(f"dtype: {dtype}\n", ""), tmp_path, {"a": 0.7, "b": 1.3})


def test_every_printed_zero_of_relu_is_the_typed_zero() -> None:
    """Each place a relu or its derivative prints its 0, the comments' math aside."""
    x, d, buffer = sp.symbols("x d buffer")
    printer = NumpyPrinter("float32")
    assert printer.doprint(Relu(x)) == "np.maximum(x, _ZERO)"
    assert printer.doprint(d * Step(x, 0)) == "d * (x > _ZERO)"
    assert printer.doprint(Step(x, 0)) == "(x > _ZERO).astype(_DTYPE)"
    assert printer.in_place("maximum", buffer, sp.S.Zero) == (
        "np.maximum(buffer, _ZERO, out=buffer)"
    )
    assert printer.in_place("multiply", buffer, Step(x, 0)) == (
        "np.multiply(buffer, x > _ZERO, out=buffer)"
    )
    assert printer.in_place("add", buffer, sp.S.Zero) == "np.add(buffer, 0, out=buffer)"
    assert MathPrinter().doprint(d * Step(x, 0)) == "d * (x > 0)"
    assert MathPrinter().doprint(Relu(x)) == "relu(x)"


# --- bias gradients: one vector of ones for the batch -------------------------------------


def test_every_bias_gradient_of_the_batch_shares_one_vector_of_ones(tmp_path: Path) -> None:
    text = mlp([4, 6, 5, 3])
    source = compile_text(text, "fast.yaml")
    assert source.count("    t_ones") == 1
    assert "    t_ones_batch = _ones(x.shape[0], _DTYPE)\n" in source
    module = import_source(source, tmp_path)
    for dtype in (np.float32, np.float64):
        ones = module._ones(5, np.dtype(dtype))
        assert ones.dtype == dtype and ones.shape == (5,) and (ones == 1).all()
    for layer, delta in (("3", "d_s3"), ("2", "d_s2"), ("1", "d_s1")):
        assert f"    d_b{layer} = np.dot(t_ones_batch, {delta})\n" in source
    assert ".sum(axis=0)" not in _code(source)
    # the ones line says why it is there
    assert re.search(r"# ones @ d sums the rows of d in one BLAS call\n    t_ones_batch =", source)
    check_gradients(text, tmp_path)


def test_a_single_bias_gradient_keeps_its_sum(tmp_path: Path) -> None:
    """Making the ones costs what one sum saves: with one bias there are none."""
    text = mlp([4, 3])
    source = compile_text(text, "fast.yaml")
    assert "t_ones" not in source
    assert "    d_b1 = d_s1.sum(axis=0)\n" in source
    check_gradients(text, tmp_path)


def test_a_fixed_batch_size_writes_the_length_of_the_ones(tmp_path: Path) -> None:
    text = mlp([4, 6, 3], batch="5")
    source = compile_text(text, "fast.yaml")
    assert "    t_ones_5_rows = _ones(5, _DTYPE)" in source
    check_gradients(text, tmp_path)


def test_a_fixed_dim_reads_no_array_for_the_length_of_the_ones(tmp_path: Path) -> None:
    """Inputs of fixed shapes: the length is the number, not `m.shape[1]` of whichever
    input comes first with a dim of that size."""
    text = """
name: fixed
inputs: {m: [3, 2], x: [2, 5], z: [2, 4]}
params: {b: [5], c: [4]}
nodes:
  u: tanh(x + b)
  v: tanh(z + c)
  loss: sum(u) + sum(v) + sum(m)
"""
    source = compile_text(text, "fast.yaml")
    assert "    t_ones_2_rows = _ones(2, _DTYPE)" in source
    assert ".shape[" not in _code(source).split("def backward")[1]
    rng = np.random.default_rng(2)
    inputs = {
        name: rng.standard_normal(shape)
        for name, shape in (("m", (3, 2)), ("x", (2, 5)), ("z", (2, 4)))
    }
    check_gradients(text, tmp_path, inputs)


def test_the_ones_keep_no_array_alive_for_their_length(tmp_path: Path) -> None:
    """Without W1's gradient the backward pass needs neither x nor its shape: the ones
    read their length off a value it keeps anyway, and x stays out of the cache."""
    text = mlp([4, 6, 5, 3]) + "wrt: [b1, W2, b2, W3, b3]\n"
    source = compile_text(text, "fast.yaml")
    assert source.count("    t_ones") == 1
    assert "    t_ones_batch = _ones(y.shape[0], _DTYPE)\n" in source
    module = check_gradients(text, tmp_path)
    params = module.init_params(0)
    _, cache = module.forward(params, np.ones((3, 4)), np.array([0, 1, 2]))
    assert "x" not in cache


@pytest.mark.parametrize(
    ("losses", "summed"),
    [
        ("sum(u) + mean(v)", "d_u.sum(axis=0)"),
        ("sum(transpose(u)) + mean(transpose(v))", "d_u.sum(axis=0)"),  # a view of a view
    ],
)
def test_a_broadcast_adjoint_keeps_its_sum(tmp_path: Path, losses: str, summed: str) -> None:
    """`np.dot` would copy a broadcast view (zero strides) out before summing it, a
    transpose of one too; `.sum` reads it as it is."""
    text = f"""
name: views
inputs: {{x: [batch, 5]}}
params: {{b: [5], c: [5]}}
nodes:
  u: x + b
  v: x + c
  loss: {losses}
"""
    source = compile_text(text, "fast.yaml")
    assert "np.broadcast_to(" in source
    assert "t_ones" not in source
    assert f"    d_b = {summed}\n" in source
    check_gradients(text, tmp_path)


NAMED_ONES = """
name: named_ones
inputs: {{x: [{rows}, 4]}}
params: {{W1: [4, 5], b1: [5], W2: [5, 2], b2: [2]}}
nodes:
  ones: tanh(x @ W1 + b1) * sigmoid(x @ W1 + b1) + exp(-(x @ W1 + b1) ** 2) * {factor}
  p: ones @ W2 + b2
  loss: mean(p ** 2) + mean(sin(p) * cos(p) * exp(p)) + mean(ones * sigmoid(ones))
"""


@pytest.mark.parametrize(("rows", "vector"), [("batch", "t_ones_batch"), ("3", "t_ones_3_rows")])
def test_a_node_named_ones_has_its_own_temporaries(tmp_path: Path, rows: str, vector: str) -> None:
    """The vector is named for its dim, in a form no node's temporary `t_<node>_<k>` has:
    editing node `ones`, or the batch size, renames neither."""
    sources = [
        compile_text(NAMED_ONES.format(rows=rows, factor=factor), "fast.yaml")
        for factor in ("1", "cos(x @ W1)")
    ]
    for source in sources:
        assert f"    {vector} = _ones(" in source
        assert f"    d_b1 = np.dot({vector}, " in source
        temporaries = sorted(set(re.findall(r"\bt_ones_[0-9]+\b", source)))
        assert temporaries == [f"t_ones_{k}" for k in range(len(temporaries))], temporaries
        assert len(temporaries) >= 4  # node `ones`'s own, numbered 0, 1, 2, ...
    if rows == "3":  # another batch size: the node's temporaries keep their numbers
        other = compile_text(NAMED_ONES.format(rows="5", factor="1"), "fast.yaml")
        assert re.findall(r"\bt_ones_[0-9]+\b", other) == re.findall(
            r"\bt_ones_[0-9]+\b", sources[0]
        )
    check_gradients(NAMED_ONES.format(rows="batch", factor="cos(x @ W1)"), tmp_path)


def test_ones_no_kept_value_has_the_length_of_go_back_to_sums() -> None:
    """Where no value the backward pass reads has the dim, the sums are `.sum` again
    rather than keep an array only for its length."""
    program = build_program(parse_spec(mlp([4, 6, 3]), "fast.yaml"))
    x = symbol("x")
    ones, d_s1, d_s2, d_b1, d_b2 = (symbol(n) for n in ("t", "d_s1", "d_s2", "d_b1", "d_b2"))
    statements = [
        Statement(ones, Ones.make(x, attrs=("batch", 0, "float64")), "x", "backward", ""),
        Statement(d_b1, BatchSum(d_s1, ones), "b1", "backward", ""),
        Statement(d_b2, BatchSum(d_s2, ones), "b2", "backward", ""),
    ]
    result = batch_sums(statements, program.graph)
    assert [s.target for s in result] == [d_b1, d_b2]
    assert [s.expr for s in result] == [
        SumTo.make(d_s1, attrs=((0,), ())),
        SumTo.make(d_s2, attrs=((0,), ())),
    ]


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
    assert "t_ones" not in source
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
    assert source.count("    t_ones") == 1
    assert re.search(r"^    d_b \+= np\.dot\(t_ones_batch, ", source, re.MULTILINE)
    check_gradients(text, tmp_path)


# --- cross-entropy: one-hot rows from a table of few classes ------------------------------


def test_few_classes_take_their_one_hot_rows_from_an_identity_matrix(tmp_path: Path) -> None:
    text = mlp([4, 6, 3])
    source = compile_text(text, "fast.yaml")
    assert "\n_ONE_HOT_ROWS_3 = np.eye(3, dtype=_DTYPE)\n" in source
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


@pytest.mark.parametrize("table", [True, False])
def test_one_hot_rows_from_the_table_stay_small(tmp_path: Path, table: bool) -> None:
    """The table's `take` makes an array as large as the softmax, so the helper takes
    rows only up to ONE_HOT_TABLE_MAX_BYTES of them; past that it scatters, and a large
    batch's step peaks at its result, as hand-written NumPy's does."""
    module = import_source(compile_text(mlp([4, 10]), "fast.yaml"), tmp_path)
    rng = np.random.default_rng(3)
    rows = module._ONE_HOT_ROWS_10 if table else None
    for batch in (ONE_HOT_TABLE_MAX_BYTES // 80, 4 * ONE_HOT_TABLE_MAX_BYTES // 80):
        log_probs = np.log(rng.dirichlet(np.ones(10), size=batch))
        labels = rng.integers(0, 10, batch)
        tracemalloc.start()
        result = module._probs_minus_one_hot(log_probs, labels, 0.5, rows)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        np.testing.assert_allclose(result, (np.exp(log_probs) - np.eye(10)[labels]) * 0.5)
        took_rows = table and batch * 80 <= ONE_HOT_TABLE_MAX_BYTES
        assert (peak >= 1.9 * result.nbytes) == took_rows, (batch, peak, result.nbytes)
        assert peak <= (2.1 if took_rows else 1.5) * result.nbytes  # the scatter's indices


def test_the_loss_picks_through_the_table_while_its_rows_are_small(tmp_path: Path) -> None:
    """`_picked_sum` takes the labels' one-hot rows and sums the picks in one dot product
    while the rows fill at most ONE_HOT_TABLE_MAX_BYTES; past that it indexes and sums.
    Both give the sum of log_probs at the labels."""
    text = mlp([4, 10])
    source = compile_text(text, "fast.yaml")
    assert "loss = -_picked_sum(t_loss_0, y, _ONE_HOT_ROWS_10) / y.size" in source
    module = import_source(source, tmp_path)
    rows = module._ONE_HOT_ROWS_10.view(_TakeCounter)
    rng = np.random.default_rng(5)
    for batch in (1, 7, ONE_HOT_TABLE_MAX_BYTES // 80, ONE_HOT_TABLE_MAX_BYTES // 80 + 1):
        log_probs = np.log(rng.dirichlet(np.ones(10), size=batch))
        labels = rng.integers(0, 10, batch)
        _TakeCounter.takes = 0
        total = module._picked_sum(log_probs, labels, rows)
        expected = log_probs[np.arange(batch), labels].sum()
        assert total == pytest.approx(expected, rel=1e-12)
        assert _TakeCounter.takes == int(batch * 80 <= ONE_HOT_TABLE_MAX_BYTES)


def test_many_classes_pick_and_sum_with_no_table() -> None:
    source = compile_text(mlp([4, ONE_HOT_TABLE_MAX_CLASSES + 1]), "fast.yaml")
    assert "    loss = -_picked(t_loss_0, y).sum() / y.size\n" in source
    assert "_picked_sum" not in source


MASKED_LOGITS = """
name: masked
inputs:
  z: [batch, 4]
  y: {shape: [batch], dtype: int64}
params:
  w: {shape: [4], init: normal}
nodes:
  logits: z + w
  loss: softmax_cross_entropy(logits, y)
wrt: [w]
"""


def test_a_logit_of_minus_infinity_away_from_the_label_leaves_the_loss_finite(
    tmp_path: Path,
) -> None:
    """A masked class (logit -inf) has log-probability -inf: the table's dot product would
    make 0 * -inf = NaN of it, so the picks are summed instead, as PyTorch does."""
    module = import_source(compile_text(MASKED_LOGITS, "fast.yaml"), tmp_path)
    params = {"w": np.array([0.1, -0.2, 0.3, 0.05])}
    z = np.array([[1.0, -np.inf, 0.5, 2.0], [0.3, 0.2, -np.inf, -1.0]])
    y = np.array([0, 3])
    loss, grads = module.value_and_grad(params, z=z, y=y)
    logits = z + params["w"]
    finite = np.where(np.isfinite(logits), logits, -np.inf)
    log_probs = finite - np.log(np.exp(finite).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_probs[np.arange(2), y].mean(), rel=1e-12)
    expected_grad = (np.exp(log_probs) - np.eye(4)[y]).mean(axis=0)
    np.testing.assert_allclose(grads["w"], expected_grad, rtol=1e-12, atol=1e-15)
    if _has_torch():
        import torch

        tensor = torch.tensor(logits, requires_grad=True)
        expected = torch.nn.functional.cross_entropy(tensor, torch.tensor(y))
        assert loss == pytest.approx(float(expected.detach()), rel=1e-12)


class _TakeCounter(np.ndarray):
    """An identity table that counts the calls of its `take`."""

    takes = 0

    def take(self, *args: object, **kwargs: object) -> np.ndarray:  # type: ignore[override]
        type(self).takes += 1
        return np.asarray(self).take(*args, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize(("classes", "dtype"), [(2, "float64"), (3, "float32"), (4, "float32")])
def test_rows_no_larger_than_the_scatters_come_from_the_table_at_any_batch(
    tmp_path: Path, classes: int, dtype: str
) -> None:
    """A row of 2 classes (3 in float32) is no larger than the index and value the
    scatter makes per row: the table is used past ONE_HOT_TABLE_MAX_BYTES too, and the
    step's peak is no higher than the scatter's."""
    text = mlp([4, classes]).replace("name: fast", f"name: fast\ndtype: {dtype}")
    module = import_source(compile_text(text, "fast.yaml"), tmp_path)
    rows = getattr(module, f"_ONE_HOT_ROWS_{classes}").view(_TakeCounter)
    _TakeCounter.takes = 0
    rng = np.random.default_rng(4)
    batch = 8 * ONE_HOT_TABLE_MAX_BYTES // (classes * np.dtype(dtype).itemsize)
    log_probs = np.log(rng.dirichlet(np.ones(classes), size=batch)).astype(dtype)
    labels = rng.integers(0, classes, batch)
    peaks = []
    for table in (rows, None):
        tracemalloc.start()
        result = module._probs_minus_one_hot(log_probs, labels, 0.5, table)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        expected = (np.exp(log_probs) - np.eye(classes)[labels]) * 0.5
        np.testing.assert_allclose(result, expected, rtol=1e-6)
    small = classes * np.dtype(dtype).itemsize <= np.dtype(dtype).itemsize + 8
    assert _TakeCounter.takes == int(small)
    if small:
        assert peaks[0] <= peaks[1]


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


def test_the_unfused_one_hot_refuses_a_label_past_the_last_class() -> None:
    """The helper behind a cross-entropy adjoint that is not fused with its log_softmax
    agrees with the fused forms: a label with no class is an IndexError, never a row of
    zeros."""
    from symbackprop.emit import template_environment

    names: dict[str, object] = {"np": np}
    helper = template_environment().get_template("helpers/one_hot.py.j2").render()
    exec(helper, names)  # our own template
    one_hot = names["_one_hot"]
    like = np.zeros((2, 3), dtype=np.float32)
    rows = one_hot(np.array([2, 0]), like)  # type: ignore[operator]
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(IndexError):
        one_hot(np.array([0, 3]), like)  # type: ignore[operator]


def _code(source: str) -> str:
    """The module's code lines without its comments and docstrings' prose."""
    return "\n".join(
        line.split("#")[0] for line in source.splitlines() if not line.lstrip().startswith("#")
    )


# --- log_softmax: the rows of a matrix summed by one product with a column of ones ---------

LOG_SOFTMAX = """
name: rows
inputs:
  z: {shape}
params:
  w: {{shape: {w_shape}, init: normal}}
nodes:
  p: log_softmax(z * w, axis={axis})
  loss: sum(p * p)
wrt: [w]
"""


@pytest.mark.parametrize(
    ("shape", "w_shape", "axis", "by_product"),
    [
        ("[batch, 5]", "[5]", -1, True),
        ("[batch, 5]", "[5]", 1, True),
        ("[5, 5]", "[5]", 0, False),  # the columns: a sum
        ("[batch, 2, 5]", "[5]", -1, False),  # not a matrix
        ("[batch, classes]", "[]", -1, False),  # no number of ones to write
    ],
)
def test_log_softmax_sums_the_rows_of_a_matrix_by_a_product(
    tmp_path: Path, shape: str, w_shape: str, axis: int, by_product: bool
) -> None:
    text = LOG_SOFTMAX.format(shape=shape, w_shape=w_shape, axis=axis)
    source = compile_text(text, "fast.yaml")
    assert ("row_ones=_ONES_COLUMN_5)" in source) == by_product
    assert ("\n_ONES_COLUMN_5 = np.ones((5, 1), dtype=_DTYPE)\n" in source) == by_product
    assert ("_ONES_COLUMN" in source) == by_product
    check_gradients(text, tmp_path)


def test_the_product_with_ones_sums_as_the_sum_does(tmp_path: Path) -> None:
    module = import_source(
        compile_text(LOG_SOFTMAX.format(shape="[batch, 5]", w_shape="[5]", axis=-1), "fast.yaml"),
        tmp_path,
    )
    rng = np.random.default_rng(6)
    for dtype, rtol in (("float64", 1e-13), ("float32", 1e-5)):
        x = (30 * rng.standard_normal((40, 5))).astype(dtype)
        ones = np.ones((5, 1), dtype=dtype)
        by_product = module._log_softmax(x.copy(), axis=1, row_ones=ones)
        by_sum = module._log_softmax(x.copy(), axis=1)
        assert by_product.dtype == by_sum.dtype == np.dtype(dtype)
        np.testing.assert_allclose(by_product, by_sum, rtol=rtol, atol=rtol)

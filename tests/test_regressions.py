"""Bugs found by review, each kept as a test of the behaviour users rely on."""

from __future__ import annotations

import inspect
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symbackprop.build import build_program
from symbackprop.compiler import _refuse_infinite_constants, compile_text
from symbackprop.errors import SpecError
from symbackprop.gradcheck import DEFAULT_TOLERANCE, check_spec
from symbackprop.ir import Statement, symbol
from symbackprop.ops import Count, Masked, SumTo
from symbackprop.passes import fold_numbers
from symbackprop.reverse import reverse_mode
from symbackprop.spec import parse_spec
from tests.support import compile_module, import_source


def test_exact_constants_keep_float32(tmp_path: Path) -> None:
    """`log(2)` (also SymPy's own, in d(2**u)) must not come out as a float64 NumPy scalar."""
    module = compile_module(
        "name: c\ndtype: float32\ninputs: {x: [3]}\nparams: {w: [3]}\n"
        'nodes: {loss: "sum(2**(x * w)) + log(2) * sum(w) + cos(1) + sqrt(2) * e"}\n',
        tmp_path,
    )
    value, grads = module.value_and_grad(module.init_params(), np.ones(3, np.float32))
    assert value.dtype == np.float32
    assert grads["w"].dtype == np.float32
    _, cache = module.forward(module.init_params(), np.ones(3, np.float32))
    assert all(np.asarray(saved).dtype != np.float64 for saved in cache.values())


def test_gradients_are_writable_arrays_of_their_own(tmp_path: Path) -> None:
    """Users update gradients in place: none may be a read-only view, another gradient,
    or the caller's grad_output."""
    module = compile_module(
        "name: g\ninputs: {a: [], b: [], x: [3]}\nparams: {w: [3]}\n"
        'nodes: {loss: "a + b + sum(w) + sum(x * x)"}\nwrt: [a, b, w]\n',
        tmp_path,
    )
    grad_output = np.float64(1.0)
    _, cache = module.forward(module.init_params(), 1.0, 2.0, np.ones(3))
    grads = module.backward(cache, grad_output)
    grads["w"] *= 0.5  # raised "output array is read-only" on a broadcast view
    grads["a"] += 5.0
    assert grads["b"] == 1.0 and grad_output == 1.0
    np.testing.assert_array_equal(grads["w"], np.full(3, 0.5))


def test_a_gradient_the_algebra_makes_zero_has_its_leaf_shape(tmp_path: Path) -> None:
    module = compile_module(
        'name: z\ninputs: {x: [4]}\nnodes: {o: "sum(maximum(x, x) - x)"}\nwrt: [x]\n', tmp_path
    )
    _, grads = module.value_and_grad({}, np.arange(4.0))
    assert grads["x"].shape == (4,) and grads["x"].dtype == np.float64


def test_ops_with_different_kinds_of_attrs_can_be_ordered() -> None:
    """SymPy orders the terms of a sum: Attr(None) against Attr((0,)) must compare."""
    x = symbol("x")
    total = Count.make(x, attrs=(None,)) + Count.make(x, attrs=((0,),))
    assert len(sp.Add.make_args(total)) == 2


def test_a_renamed_temporary_is_not_taken_for_another_value(tmp_path: Path) -> None:
    """`v @ W + c` with no gradient through the product: the sum's temporary got the
    product's old name, and `t += c` broadcast into the smaller product array."""
    module = compile_module(
        "name: r\ninputs: {v: [4], c: [batch, 3]}\nparams: {W: [4, 3]}\n"
        'nodes: {loss: "sum(v @ W + c)"}\nwrt: [c]\n',
        tmp_path,
    )
    params, v, c = module.init_params(), np.ones(4), np.ones((2, 3))
    value, grads = module.value_and_grad(params, v, c)
    assert value == np.sum(v @ params["W"] + c)
    np.testing.assert_array_equal(grads["c"], np.ones((2, 3)))


def test_a_function_of_a_constant_folds_and_keeps_float32(tmp_path: Path) -> None:
    """`relu(x - x)` printed as `np.maximum(0, 0)`, an int64 that made float32 float64."""
    module = compile_module(
        "name: z\ndtype: float32\ninputs: {x: [3]}\nparams: {w: [3]}\n"
        'nodes: {loss: "sum(relu(x - x) * w + w * x)"}\n',
        tmp_path,
    )
    x = np.arange(3, dtype=np.float32)
    value, grads = module.value_and_grad(module.init_params(), x)
    assert value.dtype == np.float32 and grads["w"].dtype == np.float32
    np.testing.assert_array_equal(grads["w"], x)


def test_a_name_clash_with_a_layer_value_says_where_the_layer_is() -> None:
    text = (
        "name: clash\ninputs: {x: [batch, 4], y: [batch, 3]}\n"
        "layers: [{dense: 3, activation: identity}]\n"
        "nodes: {h1: out * 2, loss: mean((h1 - y)**2)}\noutput: loss\n"
    )
    with pytest.raises(SpecError) as raised:
        parse_spec(text, "clash.yaml")
    assert str(raised.value).endswith("node 'h1' has the same name as the node on line 3")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_scalars_gradient_is_a_0d_array_not_a_numpy_scalar(dtype: str, tmp_path: Path) -> None:
    """A full reduction gives a NumPy scalar; `backward` returns arrays, as annotated, so
    that every gradient can be updated in place (`g -= 0.1 * g`, `g[...] = 0`)."""
    module = compile_module(
        f"name: s\ndtype: {dtype}\ninputs: {{x: [3]}}\nparams: {{c: [], w: [3]}}\n"
        "nodes: {loss: sum(c * x * w) + c * c}\n",
        tmp_path,
    )
    params = {"c": np.asarray(0.5, dtype), "w": np.ones(3, dtype)}
    _, grads = module.value_and_grad(params, np.arange(3, dtype=dtype))
    for name, grad in grads.items():
        assert type(grad) is np.ndarray and grad.dtype == np.dtype(dtype), name
    assert grads["c"].shape == () and float(grads["c"]) == 3.0 + 1.0
    grads["c"][...] = 0  # a 0-d array takes an in-place write
    assert float(grads["c"]) == 0.0


def test_nodes_and_params_named_l_i_o_compile_under_other_variable_names(
    tmp_path: Path,
) -> None:
    """PEP 8 rules out `l`, `I`, `O` as variables (ruff's E741), but `l` is a common name
    for a loss: such a node or param is written `l_` in the code and keeps its name in the
    spec, in `params`, in `WRT` and in the gradients."""
    module = compile_module(
        "name: amb\ninputs: {x: [3]}\nparams: {I: [3, 3], l: [3]}\n"
        "nodes:\n  O: I @ x + l\n  h: tanh(O)\n  l_loss: sum(h * h)\n",
        tmp_path,
    )
    source = Path(module.__file__).read_text(encoding="utf-8")
    for name in ("l", "I", "O"):
        assert f"    {name}_ = " in source and f"    {name} = " not in source
    assert module.WRT == ("I", "l") and list(module.PARAMS) == ["I", "l"]
    assert list(module.init_params()) == ["I", "l"]
    rng = np.random.default_rng(0)
    params = {"I": rng.standard_normal((3, 3)), "l": rng.standard_normal(3)}
    x = rng.standard_normal(3)
    value, grads = module.value_and_grad(params, x)
    hidden = np.tanh(params["I"] @ x + params["l"])
    assert np.isclose(value, np.sum(hidden**2))
    local = 2 * hidden * (1 - hidden**2)
    np.testing.assert_allclose(grads["I"], np.outer(local, x), rtol=1e-12)
    np.testing.assert_allclose(grads["l"], local, rtol=1e-12)


SIDE_PREDICTION_SPEC = """name: side_prediction
inputs: {x: [batch, 4], t: [batch, 3]}
params: {W: [4, 3]}
nodes:
  z: x @ W
  p: softmax(z, axis=1)
  loss: mean((z - t) ** 2)
output: loss
predict: p
"""


def test_forward_leaves_a_prediction_off_the_loss_path_to_predict(tmp_path: Path) -> None:
    """A `predict` value the loss does not read is `predict`'s work alone: forward
    computed it and never read it (wasted time, and ruff's F841)."""
    module = compile_module(SIDE_PREDICTION_SPEC, tmp_path)
    source = Path(module.__file__).read_text(encoding="utf-8")
    forward = source.split("\ndef forward(")[1].split("\ndef backward(")[0]
    predict = source.split("\ndef predict(")[1]
    assert "softmax" not in forward and "p = " not in forward
    assert "    p = t_p_0 / t_p_0.sum(axis=1, keepdims=True)" in predict
    rng = np.random.default_rng(0)
    params, x, t = module.init_params(0), rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    z = x @ params["W"]
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(module.predict(params, x), expected, rtol=1e-12)
    np.testing.assert_allclose(module.forward(params, x, t)[0], ((z - t) ** 2).mean(), rtol=1e-12)


@pytest.mark.parametrize(
    "term",
    [
        "log_softmax(w + 0 * x, axis=1)",
        "softmax_cross_entropy(w + 0 * x, y)",
        "sum(w + 0 * x, axis=0)",
        "max(x - x + w, axis=1)",
    ],
)
def test_a_term_that_cancels_keeps_the_shape_it_broadcast_to(term: str, tmp_path: Path) -> None:
    """SymPy makes `w + 0 * x` the symbol w: an op over it must still see x's shape (the
    value is w broadcast along the batch), where the module called log_softmax on w alone
    and failed at run time (axis 1 out of bounds), or summed the wrong axis."""
    text = (
        "name: cancels\ninputs: {x: [batch, 5], y: {shape: [batch], dtype: int64}}\n"
        f"params: {{w: [5]}}\nnodes:\n  p: {term}\n  loss: sum(p * p)\nwrt: [w]\n"
    )
    module = compile_module(text, tmp_path)
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal(5), rng.standard_normal((4, 5))
    y = np.array([0, 4, 2, 1])
    loss, grads = module.value_and_grad({"w": w}, x=x, y=y)
    broadcast = np.broadcast_to(w, x.shape)
    shifted = broadcast - broadcast.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = {
        "log_softmax(w + 0 * x, axis=1)": log_probs,
        "softmax_cross_entropy(w + 0 * x, y)": -log_probs[np.arange(4), y].mean(),
        "sum(w + 0 * x, axis=0)": broadcast.sum(axis=0),
        "max(x - x + w, axis=1)": broadcast.max(axis=1),
    }[term]
    assert loss == pytest.approx(float(np.sum(p * p)), rel=1e-12)
    step = 1e-6
    for index in range(5):
        bump = np.zeros(5)
        bump[index] = step
        up = module.value_and_grad({"w": w + bump}, x=x, y=y)[0]
        down = module.value_and_grad({"w": w - bump}, x=x, y=y)[0]
        assert grads["w"][index] == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-8)


CSE_CANCELS = {
    # CSE names both products alike, and SymPy folds `t - t + w` to w
    "p: x @ W - x @ W + w\n  loss: sum(p)": lambda x, W, w, V: len(x) * w.sum(),
    "loss: sum(logsumexp(x @ W - x @ W + w, axis=0))": lambda x, W, w, V: (
        w + np.log(len(x))
    ).sum(),
    # each column is w_j, n times: its log_softmax is -log(n) everywhere
    "a: x @ W\n  loss: sum(log_softmax(a - x @ W + w, axis=0))": lambda x, W, w, V: (
        -3 * len(x) * np.log(len(x))
    ),
    # what is left is itself a temporary CSE shares (`exp(w)`)
    "p: x @ W - x @ W + exp(w)\n  loss: sum(sum(p, axis=0) * exp(w))": lambda x, W, w, V: (
        len(x) * np.exp(2 * w).sum()
    ),
    "p: x @ W - x @ W + exp(w)\n  loss: sum(p * exp(w))": lambda x, W, w, V: (
        len(x) * np.exp(2 * w).sum()
    ),
    # a copy of a recurrence's product must keep its adjoint's own name (a regression of
    # copy propagation over both passes, reverted)
    "h0: tanh(x @ W)\n  h1: tanh(h0 - x @ W) @ V\n  loss: sum(h1 * h1)": lambda x, W, w, V: (
        ((np.tanh(np.tanh(x @ W) - x @ W) @ V) ** 2).sum()
    ),
}


@pytest.mark.parametrize("nodes", list(CSE_CANCELS))
def test_terms_cse_makes_cancel_keep_their_shape_and_gradient(nodes: str, tmp_path: Path) -> None:
    """Found by review: the value and the gradients of a node whose terms cancel once CSE
    names two equal products alike."""
    from tests.support import central_differences

    text = (
        f"name: cancels\ninputs: {{x: [n, 3]}}\nparams: {{W: [3, 3], w: [3], V: [3, 3]}}\n"
        f"nodes:\n  {nodes}\nwrt: [W, w, V]\n"
    )
    module = compile_module(text, tmp_path)
    rng = np.random.default_rng(1)
    params = {"W": rng.standard_normal((3, 3)), "w": rng.standard_normal(3)}
    params["V"] = rng.standard_normal((3, 3))
    x = rng.standard_normal((4, 3))
    loss, grads = module.value_and_grad(params, x=x)
    assert loss == pytest.approx(CSE_CANCELS[nodes](x, **params), rel=1e-12)
    differences = central_differences(module, params, {"x": x})
    for name, approx in differences.items():
        np.testing.assert_allclose(grads[name], approx, rtol=1e-6, atol=1e-8, err_msg=name)


def test_a_prediction_whose_terms_cancel_reads_its_dims_off_its_own_input(
    tmp_path: Path,
) -> None:
    """Found by review: `p` was filled out over the target y (the only input of its
    shape), so `predict` wanted y; its dims come from x, which it is computed from."""
    text = (
        "name: cancels\ninputs: {x: [n, 4], y: [n, 3]}\nparams: {W: [4, 3], w: [3]}\n"
        "nodes:\n  p: x @ W - x @ W + w\n  loss: mse(p, y)\npredict: p\n"
    )
    module = compile_module(text, tmp_path)
    w = np.array([0.5, -1.0, 2.0])
    x = np.ones((5, 4))
    predicted = module.predict({"W": np.ones((4, 3)), "w": w}, x=x)
    np.testing.assert_array_equal(predicted, np.broadcast_to(w, (5, 3)))


CANCELLED_ADJOINTS = [
    # L reads h and 1 - h: dL/dh = B - B once CSE names the broadcast B
    "h: relu(x * w)\n  g: 1 - h\n  loss: sum(h) + sum(g)",
    "h: tanh(x @ W)\n  g: 2 - h\n  loss: sum(h) + sum(g) + sum(w * w)",
    "h: x * w\n  g: -h\n  loss: sum(h) + sum(g) + sum(w)",
    "h: x * w\n  g: 3 - h\n  loss: mean(h) + mean(g) + sum(w)",
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nodes", CANCELLED_ADJOINTS)
def test_an_adjoint_whose_terms_cancel_is_a_float_array_of_its_shape(
    nodes: str, dtype: str, tmp_path: Path
) -> None:
    """Found by review: CSE made such an adjoint the Python int 0 (`d_h = 0`), so every
    gradient computed from it came back int64 and shapeless, and a line that only the
    cancelled terms read was left unused (ruff F841)."""
    import subprocess
    import sys

    from symbackprop.compiler import compile_text
    from tests.support import central_differences, import_source

    text = (
        f"name: cancelled\ndtype: {dtype}\ninputs: {{x: [n, 3]}}\n"
        f"params: {{W: [3, 3], w: [3]}}\nnodes:\n  {nodes}\nwrt: [x, W, w]\n"
    )
    source = compile_text(text, "cancelled.yaml")
    assert " = 0\n" not in source and "its terms cancel" in source
    path = tmp_path / "cancelled_module.py"
    path.write_text(source)
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", str(path)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode in (0, 1) and "F841" not in lint.stdout, lint.stdout
    module = import_source(source, tmp_path)
    rng = np.random.default_rng(3)
    params = {"W": rng.standard_normal((3, 3)), "w": rng.standard_normal(3)}
    x = rng.standard_normal((4, 3))
    _, grads = module.value_and_grad({k: v.astype(dtype) for k, v in params.items()}, x=x)
    for name in ("x", "W", "w"):
        expected_shape = x.shape if name == "x" else params[name].shape
        assert grads[name].shape == expected_shape and grads[name].dtype == np.dtype(dtype)
    if dtype == "float64":
        differences = central_differences(module, params, {"x": x})
        for name, approx in differences.items():
            np.testing.assert_allclose(grads[name], approx, rtol=1e-6, atol=1e-8, err_msg=name)


def test_a_comment_in_a_formula_of_several_lines_ends_at_its_line(tmp_path: Path) -> None:
    """Found by review: the lines of a YAML block were joined before parsing, so a `#`
    on the first line swallowed the regularizer on the second, silently."""
    commented = (
        "name: reg\ninputs: {x: [batch, 3], y: [batch, 1]}\nparams: {W: [3, 1]}\n"
        "nodes:\n  p: x @ W\n  loss: |\n    mse(p, y)   # data term, then # a second\n"
        "    + 100 * sum(W * W)  # the regularizer\noutput: loss\n"
    )
    module = compile_module(commented, tmp_path)
    x, y, w = np.ones((2, 3)), np.zeros((2, 1)), np.full((3, 1), 0.5)
    value, grads = module.value_and_grad({"W": w}, x=x, y=y)
    assert value == pytest.approx(1.5**2 + 100 * 0.75)
    np.testing.assert_allclose(grads["W"], 2 * 1.5 * np.ones((3, 1)) + 200 * w)


@pytest.mark.parametrize(
    "spec",
    [
        "inputs: {x: [n, 1], z: [1, m]}\nparams: {w: [1]}\n"
        "nodes:\n  h: x * z * w\n  g: 1 - h\n  loss: sum(h) + sum(g) + sum(w * w)\n",
        "inputs: {x: [n, k], z: [k, m]}\nparams: {w: [1]}\n"
        "nodes:\n  h: (x @ z) * w\n  g: 1 - h\n  loss: sum(h) + sum(g) + sum(w * w)\n",
    ],
)
def test_a_cancelled_adjoint_whose_dims_no_one_input_has_reads_its_value_shape(
    spec: str, tmp_path: Path
) -> None:
    """Found by the second review: h's dims come from x and z together, so no input could
    give its shape, and `d_h = 0` was left: gradients of x and z came back (1, 1), or
    the code raised. The adjoint is filled out to h's own shape."""
    module = compile_module(f"name: bcast\n{spec}wrt: [x, z, w]\n", tmp_path)
    rng = np.random.default_rng(4)
    x_shape, z_shape = ((4, 1), (1, 5)) if "x * z" in spec else ((4, 2), (2, 5))
    x, z, w = rng.standard_normal(x_shape), rng.standard_normal(z_shape), np.array([0.3])
    _, grads = module.value_and_grad({"w": w}, x=x, z=z)
    assert grads["x"].shape == x_shape and grads["z"].shape == z_shape
    np.testing.assert_array_equal(grads["x"], 0.0)
    np.testing.assert_allclose(grads["w"], 2 * w)


@pytest.mark.parametrize(
    "formula",
    [
        ">\n    mse(p, y)   # data term\n    + 100 * sum(W * W)",
        '"mse(p, y)   # data term\n    + 100 * sum(W * W)"',
        "'mse(p, y)  # data term'",
    ],
)
def test_a_comment_in_a_formula_yaml_joined_into_one_line_is_refused(formula: str) -> None:
    """Second review: YAML folds a `>` block or a quoted string into one line before the
    formula is read, so a `#` there would silently take the rest along. Only a literal
    block keeps the line breaks that end a comment."""
    text = (
        "name: reg\ninputs: {x: [batch, 3], y: [batch, 1]}\nparams: {W: [3, 1]}\n"
        f"nodes:\n  p: x @ W\n  loss: {formula}\noutput: loss\n"
    )
    with pytest.raises(SpecError, match=r"a # in node loss: only a literal block") as error:
        parse_spec(text, "reg.yaml")
    before = text[: text.index("#")]
    where = (before.count("\n") + 1, len(before) - before.rfind("\n"))
    assert error.value.loc is not None
    assert (error.value.loc.line, error.value.loc.col) == where  # the `#` itself


def test_a_comment_in_a_literal_block_may_say_anything(tmp_path: Path) -> None:
    """Comments are not formula text: a non-ASCII character there is fine."""
    text = "name: c\ninputs: {x: [3]}\nnodes:\n  e: |\n    sum(x * x)  # café\n    + 1\nwrt: [x]\n"
    module = compile_module(text, tmp_path)
    assert module.value_and_grad({}, x=np.ones(3))[0] == 4.0


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        # escapes whose plain character comes later in the string (second review)
        ('name: e\ninputs: {x: [], y: []}\nnodes:\n  h: "x + \\x79 * qqq + y"\nwrt: [x]\n', 4, 18),
        (
            'name: e\ninputs: {x: [], y: []}\nnodes:\n  h: "\\u0078 + qqq * y + x"\nwrt: [x]\n',
            4,
            16,
        ),
        ('name: e\ninputs: {x: [], y: []}\nnodes:\n  h: "x +\\x20qqq"\nwrt: [x]\n', 4, 14),
        ('name: e\ninputs: {x: [], y: []}\nnodes:\n  h: "x + \\\n    qqq"\nwrt: [x]\n', 5, 5),
        # a byte-order mark: PyYAML's columns on line 1 do not count it
        (
            '\ufeff{"name": "e", "inputs": {"x": []}, "nodes": {"h": "x + qqq"}, "wrt": ["x"]}',
            1,
            56,
        ),
        # line ends PyYAML counts: CR alone, CRLF
        ("name: e\rinputs: {x: []}\rnodes:\r  h: x + qqq\rwrt: [x]\r", 4, 10),
        ("name: e\r\ninputs: {x: []}\r\nnodes:\r\n  h: 'x + qqq'\r\nwrt: [x]\r\n", 4, 11),
    ],
)
def test_an_error_in_a_formula_points_at_its_character(text: str, line: int, col: int) -> None:
    with pytest.raises(SpecError, match="unknown name 'qqq'") as error:
        build_program(parse_spec(text, "e.yaml"))
    assert error.value.loc is not None
    assert (error.value.loc.line, error.value.loc.col) == (line, col)


@pytest.mark.parametrize(
    "nodes",
    [
        "k: x * w\n  loss: sum(k - k) + sum(w * w)",
        "k: x * w\n  loss: max(k - k) + sum(w * w)",
        "h: x * x\n  k: h * w\n  loss: max(k - k) + sum(w * w) + sum(h)",
    ],
)
def test_a_leaf_whose_first_consumer_gets_no_gradient_keeps_its_other_ones(
    nodes: str, tmp_path: Path
) -> None:
    """Found by the third review: `k - k` cancels, so k (w's first consumer) gets no
    adjoint, and reverse mode skipped settling w there: the gradient of sum(w * w) was
    lost and w's came back zeros. Predates the reviews."""
    module = compile_module(
        f"name: lost\ninputs: {{x: [n]}}\nparams: {{w: [1]}}\nnodes:\n  {nodes}\n", tmp_path
    )
    w = np.array([0.7])
    _, grads = module.value_and_grad({"w": w}, x=np.arange(1.0, 4.0))
    np.testing.assert_allclose(grads["w"], 2 * w)


@pytest.mark.parametrize("exponent", ["k", "2 * k", "w"])
def test_a_power_of_a_tensor_exponent_has_finite_gradients_where_its_base_is_0(
    exponent: str, tmp_path: Path
) -> None:
    """Third review: SymPy derives x**k as x**k * k / x, which is 0 / 0 at x = 0, and
    x**k * log(x) in k, 0 * -inf there: d_x was NaN. As PyTorch's `pow`: k * x**(k - 1),
    and 0 in the exponent where the base is 0."""
    module = compile_module(
        "name: p\ninputs: {x: [4], k: []}\nparams: {w: [4]}\n"
        f'nodes: {{loss: "sum(x ** ({exponent}) + relu(x) ** (w + 1))"}}\nwrt: [x, k, w]\n',
        tmp_path,
    )
    x, k, w = np.array([0.0, 0.0, 1.5, 2.0]), 2.0, np.array([1.5, 1.0, 2.0, 0.25])
    values = {"k": k, "2 * k": 2 * k, "w": w}[exponent]
    _, grads = module.value_and_grad({"w": w}, x, k)
    expected_x = values * x ** (values - 1) + (w + 1) * np.maximum(x, 0) ** w
    np.testing.assert_allclose(grads["x"], expected_x)
    log_x = np.log(np.where(x == 0, 1.0, x))
    expected_k = {"k": np.sum(x**k * log_x), "2 * k": np.sum(2 * x ** (2 * k) * log_x)}
    np.testing.assert_allclose(grads["k"], expected_k.get(exponent, 0.0), atol=1e-12)
    expected_w = np.maximum(x, 0) ** (w + 1) * log_x + (x**w * log_x if exponent == "w" else 0)
    np.testing.assert_allclose(grads["w"], expected_w, atol=1e-12)
    assert all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("a * 1e200 * 1e200", "* of these constants is not a finite real number"),
        ("exp(a) * 1e300 * 1e10", "* of these constants is not a finite real number"),
        ("1e308 * a ** 2", "its derivative in a, inf * a, is not a finite real number"),
        ("(-2) ** a", "is not a finite real number"),
    ],
)
def test_constants_past_float64_or_not_real_are_spec_errors(formula: str, message: str) -> None:
    """Third review: `a * 1e200 * 1e200` folded to SymPy's Float 1e400, printed `inf`, and
    the module raised NameError; `(-2) ** a` printed `I` into its derivative."""
    spec = parse_spec(f"name: k\ninputs: {{a: []}}\nnodes:\n  c: {formula}\nwrt: [a]\n", "k.yaml")
    with pytest.raises(SpecError, match=re.escape(message)) as raised:
        reverse_mode(build_program(spec))
    assert raised.value.node == "c" and raised.value.loc is not None


def test_zero_to_a_tensor_power_has_the_gradient_0(tmp_path: Path) -> None:
    """`0 ** a` in a: 0 * log(0) was NaN; 0, as PyTorch takes it."""
    module = compile_module("name: z\ninputs: {a: []}\nnodes: {c: 0 ** a}\nwrt: [a]\n", tmp_path)
    for a in (0.0, 2.0):
        _, grads = module.value_and_grad({}, a)
        assert grads["a"] == 0.0


def test_transposed_gradients_are_writable_arrays_of_their_own(tmp_path: Path) -> None:
    """Third review: `d_W = d_t.T` of a broadcast view was read-only, and `d_W = d_n.T`,
    `d_V = d_n.T` were one array, so that updating one changed the other."""
    module = compile_module(
        "name: t\ninputs: {X: [3, 2]}\nparams: {W: [2, 3], V: [2, 3], U: [2, 3]}\nnodes:\n"
        "  n: transpose(W) + transpose(V)\n  loss: sum(n * X) + sum(transpose(U))\n",
        tmp_path,
    )
    _, grads = module.value_and_grad(module.init_params(), np.ones((3, 2)))
    assert not np.shares_memory(grads["W"], grads["V"])
    for gradient in grads.values():
        gradient *= 0.5  # raised "output array is read-only" for U
    np.testing.assert_array_equal(grads["W"], np.full((2, 3), 0.5))
    np.testing.assert_array_equal(grads["U"], np.full((2, 3), 0.5))


def test_the_mean_of_an_unnamed_value_computes_it_once(tmp_path: Path) -> None:
    """Third review: `mean(a @ b)` with no gradient through it was written into its line,
    `np.dot(a, b).sum() / np.dot(a, b).size`: two products."""
    source = compile_text(
        "name: m\ninputs: {a: [batch, 8], b: [8, 8]}\nparams: {w: [3]}\n"
        'nodes: {loss: "mean(a @ b) + sum(w * w)"}\n',
        "m.yaml",
    )
    assert source.count("np.dot(a, b)") == 1


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ("h: relu(x)\n  loss: sum(sqrt(h))", [0.0, 0.0, 1.0, 0.25]),
        ("loss: sum(relu(x) ** w)", [0.0, 0.0, 1.0, 0.25]),
        (
            "h: relu(x)\n  loss: sum(log(h + 1) + 1 / (h + 2))",
            [0, 0, 0.8 - 1 / 2.25**2, 0.2 - 1 / 36],
        ),
        # fifth review: the relu inside the node that takes the root, and a node between
        ("loss: sum(sqrt(relu(x)))", [0.0, 0.0, 1.0, 0.25]),
        ("h: relu(x)\n  a: 2 * h\n  loss: sum(sqrt(a))", [0, 0, 2**0.5, 2**0.5 / 4]),
        # maximum masks the same way, and at a tie takes half the adjoint, as PyTorch does
        ("m: maximum(x, 0)\n  loss: sum(sqrt(m))", [0.0, np.inf, 1.0, 0.25]),
        ("loss: sum(maximum(0, x) ** w)", [0.0, np.inf, 1.0, 0.25]),
    ],
)
def test_a_relu_masks_an_adjoint_infinite_where_it_is_0(
    nodes: str, expected: list[float], tmp_path: Path
) -> None:
    """Third review: d_h * (h > 0) with d_h = 0.5 / sqrt(h) is inf * 0 = NaN where the relu
    is 0; PyTorch's relu gives 0 there. An adjoint that divides by h, or takes a root or a
    log of it, is masked with np.where. The fifth is finite at h = 0, and masked all
    the same (the check reads what is divided, not its values): still exact."""
    module = compile_module(
        f"name: m\ninputs: {{x: [4]}}\nparams: {{w: [4]}}\nnodes:\n  {nodes}\nwrt: [x]\n",
        tmp_path,
    )
    x = np.array([-1.0, 0.0, 0.25, 4.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        _, grads = module.value_and_grad({"w": np.full(4, 0.5)}, x)
    np.testing.assert_allclose(grads["x"], expected)


def test_a_transpose_of_a_fresh_product_is_not_copied(tmp_path: Path) -> None:
    """Third review: `x @ transpose(W)` (PyTorch's layout) gave `d_W = np.array(d_t.T)`, a
    strided copy of a product nothing else reads, and a backward 5x slower."""
    text = (
        "name: lin\ninputs: {x: [n, 5]}\nparams: {W: [4, 5], b: [4]}\n"
        "nodes:\n  s: x @ transpose(W) + b\n  loss: sum(s * s)\n"
    )
    assert "    d_W = d_t_s_0.T\n" in compile_text(text, "lin.yaml")
    module = compile_module(text, tmp_path)
    params = module.init_params()
    _, grads = module.value_and_grad(params, np.ones((2, 5)))
    grads["W"] *= 2.0  # a view of an array of its own: writable
    assert not np.shares_memory(grads["W"], params["W"])


def test_a_power_of_exponent_0_has_the_gradient_0_at_base_0(tmp_path: Path) -> None:
    """Fourth review: k * x**(k - 1) is 0 * inf at k = 0, x = 0 (a scalar param starts at 0);
    PyTorch gives 0. Also x ** x at 0."""
    module = compile_module(
        "name: p\ninputs: {x: [3]}\nparams: {k: []}\n"
        'nodes: {loss: "sum(relu(x) ** k) + sum(abs(x) ** abs(x))"}\nwrt: [k, x]\n',
        tmp_path,
    )
    x = np.array([-1.0, 0.0, 2.0])
    _, grads = module.value_and_grad({"k": np.float64(0.0)}, x)
    # d/dx |x|**|x| = sign(x) |x|**|x| (log|x| + 1), 0 at x = 0 as PyTorch takes it
    np.testing.assert_allclose(grads["x"], [-1.0, 0.0, 4 * (np.log(2) + 1)])
    np.testing.assert_allclose(grads["k"], np.log(2))


def test_a_derivative_no_gradient_needs_is_not_taken(tmp_path: Path) -> None:
    """Fourth review: `w * (-1) ** k` with k an input was refused, its derivative in k
    (complex) checked though no gradient in k is wanted."""
    module = compile_module(
        "name: n\ninputs: {k: [3]}\nparams: {w: [3]}\nnodes:\n  loss: sum(w * (-1) ** k)\n",
        tmp_path,
    )
    _, grads = module.value_and_grad({"w": np.ones(3)}, np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(grads["w"], [1.0, -1.0, 1.0])


def test_a_product_plus_terms_that_cancel_keeps_their_shape(tmp_path: Path) -> None:
    """Fourth review: `z @ w + (w - w)` was the product alone, shaped [1, 3], not [3, 3]: a
    silently wrong loss (9 for 27)."""
    module = compile_module(
        "name: s\nparams: {z: [1, 3], w: [3, 3]}\nnodes:\n  f: z @ w + (w - w)\n  loss: sum(f)\n",
        tmp_path,
    )
    loss, grads = module.value_and_grad({"z": np.ones((1, 3)), "w": np.ones((3, 3))})
    assert loss == 27.0
    np.testing.assert_array_equal(grads["z"], np.full((1, 3), 9.0))
    np.testing.assert_array_equal(grads["w"], np.full((3, 3), 3.0))


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("p * max(sum(x, axis=0) / sum(x, axis=0))", 1.0),  # `1.max()`
        ("p * logsumexp(sum(x, axis=0) / sum(x, axis=0))", 1 + np.log(3)),  # `_logsumexp(1)`
        ("p * mean((sum(x, axis=0) - sum(x, axis=0)) @ w)", 0.0),  # `np.dot(0, w)`, `0.size`
        ("mean(abs(sum(x, axis=0) - sum(x, axis=0)) ** p) + p * 0", 0.0),  # `0.sum(axis=0)`
    ],
)
def test_ops_of_values_that_cancel_keep_their_shape(
    formula: str, expected: float, tmp_path: Path
) -> None:
    """Fourth review: two equal ops that cancel after CSE left a number inside an op, and
    the module did not import or run (`1.max()`, `np.dot(0, w)`, `0.sum(axis=0)`). Equal
    tensor ops are one node now, and they cancel where their shape is known."""
    module = compile_module(
        "name: c\ninputs: {x: [n, 3]}\nparams: {p: [], w: [3, 2]}\n"
        f"nodes:\n  loss: {formula}\nwrt: [p]\n",
        tmp_path,
    )
    _, grads = module.value_and_grad({"p": 0.5, "w": np.ones((3, 2))}, np.ones((2, 3)))
    np.testing.assert_allclose(grads["p"], expected)


def test_a_value_sympy_cannot_prove_real_compiles(tmp_path: Path) -> None:
    """Fourth review: `abs((x * x) ** (abs(x) ** r))` is Abs(x)**(2*re(Abs(x)**r)) to SymPy,
    and the compiler raised `no NumPy spelling for re`. Every tensor is real: re(e) is e."""
    module = compile_module(
        "name: r\ninputs: {x: [3], r: [3]}\nnodes:\n"
        "  loss: sum(abs((x * x) ** (abs(x) ** r)))\nwrt: [x]\n",
        tmp_path,
    )
    x, r = np.array([-1.5, 0.5, 2.0]), np.array([0.5, 1.0, 2.0])
    loss, grads = module.value_and_grad({}, x, r)
    np.testing.assert_allclose(loss, np.sum(np.abs(x) ** (2 * np.abs(x) ** r)))
    np.testing.assert_allclose(grads["x"], [-5.302579, 0.306853, 2443.5654], rtol=1e-5)  # torch


def test_a_constant_folded_past_float64_is_a_spec_error() -> None:
    """Fourth review: (w + w) ** maximum(1, 2000) folded to 2**2000.0 * w**2000.0 after the
    build's checks; it was printed `inf`, a NameError at run time. maximum(1, 2000) is 2000
    as the formula is built now, and the build refuses 2**2000; the check after folding
    stays for a constant only the folding makes."""
    text = "name: b\nparams: {w: [3]}\nnodes:\n  loss: sum((w + w) ** maximum(1, 2000))\n"
    with pytest.raises(SpecError, match="not a finite real number") as raised:
        compile_text(text, "b.yaml")
    assert raised.value.node == "loss" and raised.value.loc is not None
    program = build_program(parse_spec(text.replace("1, 2000", "1, 2"), "b.yaml"))
    folded = Statement(symbol("t"), sp.Float("1e400") * symbol("w"), "loss", "forward")
    with pytest.raises(SpecError, match="past float64's range once SymPy folds it") as raised:
        _refuse_infinite_constants([folded], program)
    assert raised.value.node == "loss" and raised.value.loc is not None


@pytest.mark.parametrize(
    ("nodes", "wrt"),
    [
        ("  scale: 0.5\n  loss: sum(scale * x ** 2)\n", "[x]"),  # refused: a constant node
        ("  a: x @ transpose(x) + 0 * sum(x @ transpose(x))\n  loss: sum(a)\n", "[x]"),
        (
            "  n0: sum(softmax(x))\n  n1: softmax(x)\n  n2: softmax(x) - n0\n"
            "  loss: sum(n1) + sum(n2)\n",
            "[x]",
        ),
        # `d_x -= d_x'1 - np.array(d_x'1)`: the last term of a running sum cancelled
        (
            "  n0: x * (mse(x, x) - mse(x, x))\n  n1: x\n  n3: x\n"
            "  loss: sum(n0) + sum(n1) + sum(n3)\n",
            "[x]",
        ),
    ],
)
def test_specs_the_equal_op_and_constant_checks_broke(nodes: str, wrt: str) -> None:
    """Fifth review: a node `scale: 0.5` was refused as past float64; an op renamed after
    its spec node while another op of the formula read it raised an AssertionError; a
    running sum of a renamed temporary kept its old name (`d_t_n0_0'1`, a SyntaxError).
    Each compiles, and `check` passes."""
    text = f"name: e\ninputs: {{x: [3, 3]}}\nnodes:\n{nodes}wrt: {wrt}\n"
    report = check_spec(parse_spec(text, "e.yaml"), seed=0)
    assert max(result.error for result in report.results) <= DEFAULT_TOLERANCE, report


def test_out_is_a_name_in_the_graph_form(tmp_path: Path) -> None:
    """Sixth review: a node or an input named `out` was refused as reserved, though only the
    layer form gives `out` a meaning (the last layer's output)."""
    x = np.array([1.0, 2.0, 3.0])
    softmax = np.exp(x) / np.exp(x).sum()
    for name, inputs, nodes in (
        ("o1", "{out: [3]}", "h: log_softmax(out * w)\n  loss: 2 * sum(h)"),
        ("o2", "{x: [3]}", "h: log_softmax(x * w)\n  out: 2 * sum(h)"),
    ):
        module = compile_module(
            f"name: {name}\ninputs: {inputs}\nparams: {{w: [3]}}\nnodes:\n  {nodes}\nwrt: [w]\n",
            tmp_path,
        )
        assert module.SPEC_NAME == name
        loss, grads = module.value_and_grad({"w": np.ones(3)}, x)
        assert np.isclose(loss, 2 * np.sum(x - np.log(np.sum(np.exp(x)))))
        np.testing.assert_allclose(grads["w"], 2 * x * (1 - 3 * softmax))


@pytest.mark.parametrize("where", ["node", "param"])
def test_out_is_refused_as_a_name_in_the_layer_form(where: str) -> None:
    named = "nodes:\n  out: sum(h1)\noutput: out\n" if where == "node" else "params: {out: [2]}\n"
    text = (
        "name: o\ninputs: {x: [n, 3], y: [n, 2]}\nlayers:\n  - {dense: 2}\n"
        + ("loss: {mse: y}\n" if where == "param" else "")
        + named
    )
    with pytest.raises(SpecError, match="'out' is the last layer's output in the layer form"):
        compile_text(text, "o.yaml")


def test_a_layer_loss_the_output_does_not_read_is_refused(tmp_path: Path) -> None:
    """Sixth review: `loss: {mse: y}` beside nodes and an output that never read it was
    dropped silently, and y was still an argument. An output that reads it works."""
    layers = "name: {name}\ninputs: {{x: [n, 3], y: [n, 2]}}\nlayers: [{{dense: 2}}]\n"
    layers += "loss: {{mse: y}}\nnodes:\n  l2: sum(W1 ** 2)\n"
    with pytest.raises(SpecError, match=r":4:13: the output 'l2' does not read the layers' loss"):
        compile_text(layers.format(name="unread") + "output: l2\n", "unread.yaml")
    module = compile_module(
        layers.format(name="read") + "  total: loss + 0.5 * l2\noutput: total\n", tmp_path
    )
    params = module.init_params()
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    loss, grads = module.value_and_grad(params, x, y)
    s = x @ params["W1"] + params["b1"]
    assert np.isclose(loss, np.mean(s**2) + 0.5 * np.sum(params["W1"] ** 2))
    np.testing.assert_allclose(grads["W1"], x.T @ (2 * s / s.size) + params["W1"])


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("sum(x, keepdims=True)", "4:6: node 'y': sum has no argument 'keepdims' (known: axis)"),
        ("sum(x, axis=True)", "4:18: node 'y': axis cannot be True"),
        ("mse(x, x, reduction=False)", "4:26: node 'y': reduction cannot be False"),
        ("sum(x) + True", "4:15: node 'y': the constant True is not a number"),
    ],
)
def test_a_boolean_is_named_after_the_keyword_it_is_given_to(formula: str, message: str) -> None:
    """Sixth review: `sum(x, keepdims=True)` said `the constant True is not a number`, where
    `keepdims=1` said that sum has no argument keepdims."""
    text = f"name: a\ninputs: {{x: [3]}}\nnodes:\n  y: {formula}\nwrt: [x]\n"
    with pytest.raises(SpecError) as caught:
        compile_text(text, "a.yaml")
    assert str(caught.value) == f"a.yaml:{message}"


@pytest.mark.parametrize(
    "formula",
    [
        "sum(a + s * maximum(0, -1))",
        "sum(a + s * relu(-1))",
        "sum(a + minimum(2, 0) * mean(a))",
        "sum(a + s * sqrt(0)) + s * (2 * sigmoid(0) - 1)",
        "sum(a + s * exp(-1000))",  # 0 only as a float
        "sum((a + s) * exp(-1000)) + sum(a)",
    ],
)
def test_a_constant_that_is_0_cancels_its_term(formula: str, tmp_path: Path) -> None:
    """Sixth review: relu(-1), maximum(0, -1) or exp(-1000) were 0 only once the code
    folded its numbers, and left `d_s = 0.sum(axis=(0, 1))`: a module that did not parse.
    They are 0 as the formula is built (exactly), or their ops fold to 0 with them."""
    module = compile_module(
        f"name: z\ninputs: {{a: [3, 4], s: []}}\nnodes:\n  c: {formula}\nwrt: [a, s]\n", tmp_path
    )
    loss, grads = module.value_and_grad({}, np.ones((3, 4)), 2.0)
    assert loss == 12.0
    np.testing.assert_array_equal(grads["a"], np.ones((3, 4)))
    assert grads["s"].shape == () and grads["s"] == 0.0


@pytest.mark.parametrize(
    "formula", ["sum(a * 2 / log(relu(1)))", "sum(a / relu(0))", "sum(a / maximum(0, -2))"]
)
def test_a_division_by_a_constant_0_is_a_spec_error(formula: str) -> None:
    """Sixth review: `a * 2 / log(relu(1))` crashed the compiler with SymPy's
    ZeroDivisionError, and `a / relu(0)` said a constant was past float64's range."""
    text = f"name: z\ninputs: {{a: [3, 4]}}\nnodes:\n  c: {formula}\nwrt: [a]\n"
    with pytest.raises(SpecError, match="/ of these constants is not a finite real number"):
        compile_text(text, "z.yaml")


@pytest.mark.parametrize(
    ("wrt", "message"),
    [
        ("wrt:\n  - a\n  - b\n  - zz\n", "8:5: wrt 'zz' is not an input, param or node"),
        ("wrt: [a, c]\n", "5:10: wrt names node 'c': list inputs or params"),
        ("wrt: [a, k]\n", "5:10: wrt names 'k', an integer input: it has no gradient"),
    ],
)
def test_a_wrt_error_points_at_its_name(wrt: str, message: str) -> None:
    """Sixth review: every wrt error pointed at the start of the list (6:3 for a name on
    line 8)."""
    text = "name: w\ninputs: {a: [], b: [], k: {shape: [], dtype: int64}}\nnodes:\n  c: a * b\n"
    with pytest.raises(SpecError) as caught:
        compile_text(text + wrt, "w.yaml")
    assert str(caught.value) == f"w.yaml:{message}"


@pytest.mark.parametrize(
    ("formula", "place"),
    [
        ("a * b + exp(a) +", "4:22"),
        ("'a + b +'", "4:14"),
        ("|\n    a +\n      a *  # more", "6:10"),
        ("a b", "4:8"),  # Python's own place, where it has one
    ],
)
def test_a_formula_that_ends_too_soon_is_placed_past_its_end(formula: str, place: str) -> None:
    """Sixth review: `a * b + exp(a) +` was placed at its first character (4:6)."""
    text = f"name: t\ninputs: {{a: [], b: []}}\nnodes:\n  c: {formula}\nwrt: [a]\n"
    with pytest.raises(SpecError) as caught:
        compile_text(text, "t.yaml")
    assert str(caught.value) == f"t.yaml:{place}: node 'c': syntax error: invalid syntax"


X4 = np.array([-2.0, 0.0, 30.0, 1000.0])


@pytest.mark.parametrize(
    ("formula", "value", "grad"),
    [
        (
            "sum(relu(x - sqrt(softplus(710))))",
            (30 - 710**0.5) + (1000 - 710**0.5),
            [0.0, 0.0, 1.0, 1.0],
        ),
        ("sum(x * sin(softplus(1000)))", 1028 * math.sin(1000), [math.sin(1000)] * 4),
        ("sum(x * softplus(710))", 1028 * 710.0, [710.0] * 4),
        ("sum(maximum(x, softplus(800)))", 3 * 800.0 + 1000, [0.0, 0.0, 0.0, 1.0]),
        ("sum(x * log(sigmoid(-710)))", -1028 * 710.0, [-710.0] * 4),
        ("sum(x * log1p(1e-20))", 1028e-20, [1e-20] * 4),
        (
            "sum(x * softplus(-50))",
            1028 * math.log1p(math.exp(-50)),
            [math.log1p(math.exp(-50))] * 4,
        ),
        ("sum(maximum(x, softplus(-710)))", 1030 + 2 * math.log1p(math.exp(-710)), [0, 0, 1, 1]),
    ],
)
def test_smooth_functions_of_constants_fold_stably(
    formula: str, value: float, grad: list[float], tmp_path: Path
) -> None:
    """Seventh review: softplus(710) written exactly as log(1 + exp(710)) folded to inf
    (relu(x - sqrt(softplus(710))) compiled to zeros, sin(softplus(1000)) to `AccumBounds`),
    and log1p(1e-20) as log(1 + 1e-20) to 0. The smooth functions keep their call and fold
    by their stable numeric form; only the piecewise-linear ones evaluate exactly."""
    module = compile_module(
        f"name: c\ninputs: {{x: [4]}}\nnodes:\n  L: {formula}\nwrt: [x]\n", tmp_path
    )
    loss, grads = module.value_and_grad({}, X4)
    np.testing.assert_allclose(loss, value, rtol=1e-12)
    np.testing.assert_allclose(grads["x"], grad, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("formula", "grad"),
    [
        ("sum(sqrt(relu(maximum(x, y))))", [0, 0, 0.5 / 30**0.5, 0.5 / 1000**0.5]),
        ("sum(0.5 * x + sqrt(relu(x)))", [0.5, 0.5, 0.5 + 0.5 / 30**0.5, 0.5 + 0.5 / 1000**0.5]),
        ("sum(sqrt(maximum(maximum(x, y), 0)))", [0, np.inf, 0.5 / 30**0.5, 0.5 / 1000**0.5]),
    ],
)
def test_every_mask_of_a_term_is_applied_where_the_adjoint_is_infinite(
    formula: str, grad: list[float], tmp_path: Path
) -> None:
    """Seventh review: relu's and maximum's masks in one term made two masks, and none was
    applied with np.where (NaN where PyTorch gives 0); a mask in one term of a sum was
    not applied either (0.5 * x + sqrt(relu(x)) gave NaN for PyTorch's 0.5)."""
    module = compile_module(
        f"name: m\ninputs: {{x: [4], y: [4]}}\nnodes:\n  L: {formula}\nwrt: [x]\n", tmp_path
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        _, grads = module.value_and_grad({}, X4, np.array([-2.0, 0.0, 0.0, 1.0]))
    np.testing.assert_allclose(grads["x"], grad, rtol=1e-12)


def test_a_linear_op_of_a_float_0_folds_to_0() -> None:
    """Float(0.0) == 0 is False in SymPy: the fold asks the number whether it is 0. A
    mask's value is not an operand the op is linear in (a tie gives half the adjoint)."""
    x, d = symbol("x"), symbol("d_x")
    summed = SumTo.make(sp.Float(0.0), attrs=((0,), ()))
    masked = Masked.make(d, sp.S.Zero, attrs=(sp.S.Half,))
    statements = [Statement(d, summed + masked + x, "x", "backward")]
    (folded,) = fold_numbers(statements)
    assert folded.expr == masked + x


X5, Y5 = np.array([-1.0, 0.0, 1.0, 2.0, 0.0]), np.array([0.0, -1.0, 1.0, 3.0, 0.0])
LOG3 = [3 * np.log(v) ** 2 / v for v in (2.0, 3.0, 4.0, 2.0)]


@pytest.mark.parametrize(
    ("formula", "grad"),
    [
        ("sum(sqrt(relu(x) + relu(-x)))", [-0.5, 0, 0.5, 0.5 / 2**0.5, 0]),
        ("sum(maximum(x, y) ** 0.5)", [0, np.inf, 0.25, 0, np.inf]),
        ("sum(minimum(x, y) ** 0.25)", [np.nan, 0, 0.125, 0.25 * 2**-0.75, np.inf]),
        ("sum(abs(log(x + 2)))", [0, 0.5, 1 / 3, 0.25, 0.5]),
        ("sum(abs(log(x + 2) ** 3))", [0, *LOG3]),
        # leaky_relu's (0.2 + 0.8 [h > 0]) stays one factor: spread, 0.8 [h > 0] * inf is NaN
        ("sum((x + y) / leaky_relu(x, 0.2))", [0, np.inf, -1, -0.75, np.nan]),
        # a masked term in a sum beside one without a mask, inside another mask's factor
        ("sum(relu(sqrt(relu(x)) - x))", [-1, 0, 0, 0, 0]),
        ("sum(relu(0.5 * x + sqrt(relu(x))))", [0, 0, 1, 0.5 + 0.5 / 2**0.5, 0]),
        ("sum(maximum(sqrt(relu(x)) - x, y))", [-1, -1, 0, 0, -0.5]),
        ("sum(relu(sqrt(relu(x)) * 2 - x) * y)", [0, 0, 0, 3 * (1 / 2**0.5 - 1), 0]),
    ],
)
def test_masks_and_abs_as_pytorch_has_them(formula: str, grad: list[float], tmp_path: Path) -> None:
    """Eighth review: a mask inside a factor, ([a > 0] - [b > 0]) / sqrt(a + b), or of a
    maximum inside its node (maximum(x, y) ** 0.5), was not applied (NaN where PyTorch
    gives 0); the abs of a value SymPy cannot prove real was derived as log(x) / |log(x)|
    (0 / 0 where PyTorch's sign gives 0), and abs(log(x) ** 3) crashed the compiler (`no
    NumPy spelling for arg`). Ninth: a masked term beside an unmasked one in a factor,
    [t > 0] * ([x > 0] / (2 sqrt(relu(x))) - 1), was NaN at every x < 0 where PyTorch
    has -1. Values from PyTorch 2.13."""
    module = compile_module(
        f"name: m\ninputs: {{x: [5], y: [5]}}\nnodes:\n  L: {formula}\nwrt: [x]\n", tmp_path
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        _, grads = module.value_and_grad({}, X5, Y5)
    np.testing.assert_allclose(grads["x"], grad, rtol=1e-12, atol=1e-12)


def test_a_mask_by_np_where_does_not_warn(tmp_path: Path) -> None:
    """Ninth review: `np.where(relu(h) > 0, 0.5 * d / t, 0)` computes 0.5 * d / 0 where
    the mask drops it, and warned "divide by zero" at every call with an inactive unit
    (an error under `-W error`). The backward pass of a module with such a mask ignores
    divide and invalid warnings; a relu network's, with no np.where, is as it was."""
    source = compile_text(
        "name: f51\ninputs: {x: [n, 3]}\nparams: {W: [3, 2]}\n"
        "nodes:\n  h: x @ W\n  loss: sum(relu(h) ** 0.5)\noutput: loss\n",
        "f51.yaml",
    )
    assert '@np.errstate(divide="ignore", invalid="ignore")\ndef backward(' in source
    module = import_source(source, tmp_path)
    x = np.array([[1.0, -2.0, 0.5], [-1.0, 0.0, 0.0]])
    params = {"W": np.array([[1.0, -1.0], [0.5, 0.5], [0.0, 2.0]])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, grads = module.value_and_grad(params, x)
    h = x @ params["W"]
    d_h = np.where(h > 0, 0.5 / np.sqrt(np.where(h > 0, h, 1)), 0)
    np.testing.assert_allclose(grads["W"], x.T @ d_h, rtol=1e-12)
    examples = Path(__file__).resolve().parent.parent / "examples"
    relu_mlp = compile_text((examples / "mlp.yaml").read_text(encoding="utf-8"), "mlp.yaml")
    assert "@np.errstate" not in relu_mlp  # (_class_indices has an errstate block of its own)


def test_a_mask_beside_a_term_without_one_stays_a_product() -> None:
    """Eighth review: leaky_relu's derivative (0.2 + 0.8 [h > 0]) after a division was
    split into `0.2 * d + np.where(h > 0, 0.8 * d, 0)`, 4-10x slower than the product and
    not bit-exact. An infinite adjoint meets no 0 there: the product is PyTorch's inf."""
    source = compile_text(
        "name: lk\ninputs: {x: [n, 3], y: [n, 2]}\nparams: {W: [3, 2]}\n"
        "nodes:\n  h: leaky_relu(x @ W, 0.2)\n  m: h / (1 + h * h)\n  L: mse(m, y)\n",
        "lk.yaml",
    )
    assert "np.where" not in source
    assert "d_t_h_0 = d_h * (0.8 * (h > _ZERO).astype(_DTYPE) + 0.2)" in source


def test_sigmoid_of_0_is_exact() -> None:
    """Eighth review: with sigmoid(0) left to the folding, x / (sigmoid(0) - 0.5) said a
    constant was past float64's range; it is a division by 0, at the `/`."""
    text = "name: s\ninputs: {x: [3]}\nnodes:\n  L: sum(x / (sigmoid(0) - 0.5))\nwrt: [x]\n"
    with pytest.raises(SpecError, match=r":4:10: node 'L': / of these constants is not a finite"):
        compile_text(text, "s.yaml")


@pytest.mark.parametrize(
    ("formula", "grad"),
    [
        ("sum((x / (y + 2)) ** 1.5)", [np.nan, 0, 1.5 * (1 / 3) ** 0.5 / 3, 1.5 * 0.4**0.5 / 5, 0]),
        ("sum((-x) ** 1.5)", [-1.5, 0, np.nan, np.nan, 0]),
        ("sum((x ** 1.5) ** 1.5)", [np.nan, 0, 2.25, 2.25 * 2**1.25, 0]),
        ("sum((x * y) ** 0.5)", [np.nan, np.inf, 0.5, 0.5 * 3 / 6**0.5, np.nan]),
    ],
)
def test_a_fractional_power_of_a_value_by_the_power_rule(
    formula: str, grad: list[float], tmp_path: Path
) -> None:
    """Eighth review: SymPy derives (x / y) ** 1.5 through the power itself, 1.5 t / (x/y)
    * d(x/y), 0 / 0 where x is 0; PyTorch's pow writes k * b ** (k - 1). A power of a
    fractional exponent whose base is not a name is derived as PyTorch does."""
    module = compile_module(
        f"name: p\ninputs: {{x: [5], y: [5]}}\nnodes:\n  L: {formula}\nwrt: [x]\n", tmp_path
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        _, grads = module.value_and_grad({}, X5, Y5)
    np.testing.assert_allclose(grads["x"], grad, rtol=1e-12)


LABELS_2D_SPEC = """
name: labels2d
inputs: {x: [batch, 4, 3], y: {shape: [batch, 4], dtype: int32}}
params: {w: [3]}
nodes:
  loss: softmax_cross_entropy(x * w, y)
"""
# the labels of a batch (int64), and of a batch of sequences (int32)
LABEL_SPECS = pytest.mark.parametrize(
    ("spec", "shape", "classes"),
    [("examples/mnist.yaml", (4, 784), 10), (LABELS_2D_SPEC, (2, 4, 3), 3)],
    ids=["mnist", "labels_2d"],
)


@LABEL_SPECS
def test_a_negative_label_is_an_index_error(
    spec: str, shape: tuple[int, ...], classes: int, tmp_path: Path
) -> None:
    """Twelfth review: NumPy reads a negative index from the end, so label -1 gave the
    loss and gradients of the last class, with no error (PyTorch: "Target -1 is out of
    bounds"). A label past the last class was an IndexError already."""
    if spec.endswith(".yaml"):
        spec = (Path(__file__).parent.parent / spec).read_text(encoding="utf-8")
    module = compile_module(spec, tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    params = module.init_params(0)
    labels = rng.integers(0, classes, size=shape[:-1])
    labels.flat[0], labels.flat[-1] = 0, classes - 1  # the first and last class are fine
    module.value_and_grad(params, x, labels)
    for wrong in (-1, -classes, -classes - 1, classes):
        labels.flat[1] = wrong
        message = f"y: label {wrong} is negative" if wrong < 0 else "out of bounds"
        with pytest.raises(IndexError, match=message):
            module.value_and_grad(params, x, labels)
        with pytest.raises(IndexError, match=message):
            module.forward(params, x, labels.tolist())


@LABEL_SPECS
def test_a_label_that_a_cast_would_change_is_a_value_error(
    spec: str, shape: tuple[int, ...], classes: int, tmp_path: Path
) -> None:
    """A leftover of the twelfth review: labels were cast as NumPy casts, so a label of 1.7
    was class 1, -0.5 class 0, NaN some class, and 2**40 given to an int32 spec class 0,
    each a wrong loss with no error (PyTorch refuses float class indices). Labels of
    another dtype are still taken where each keeps its value."""
    if spec.endswith(".yaml"):
        spec = (Path(__file__).parent.parent / spec).read_text(encoding="utf-8")
    module = compile_module(spec, tmp_path)
    dtype = np.dtype(module.INPUTS["y"][1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    params = module.init_params(0)
    labels = rng.integers(0, classes, size=shape[:-1]).astype(dtype)
    loss, grads = module.value_and_grad(params, x, labels)
    other = np.int32 if dtype == np.int64 else np.int64
    for same in (labels.astype(float), labels.astype(other), labels.tolist()):
        again = module.value_and_grad(params, x, same)
        assert again[0] == loss and all(np.array_equal(again[1][k], grads[k]) for k in grads)
    past_range = 2**40 if dtype == np.int32 else 2**63
    for wrong in (1.7, -0.5, float("nan"), float("inf"), float(past_range)):
        bad = labels.astype(float)
        bad.flat[1] = wrong
        message = f"y: label {wrong} is not a class index, a whole number in {dtype}"
        with pytest.raises(ValueError, match=re.escape(message)):
            module.value_and_grad(params, x, bad)
    if dtype == np.int32:  # an int64 label past int32, which the cast would wrap
        bad = labels.astype(np.int64)
        bad.flat[1] = past_range
        with pytest.raises(ValueError, match=f"y: label {past_range} is not a class index"):
            module.forward(params, x, bad)
    with pytest.raises(ValueError, match="y: labels are class indices, not <U"):
        module.value_and_grad(params, x, labels.astype(str))


RETURNED_LEAVES = {
    "predict_a_param": (
        'inputs: {x: [2, 3]}\nparams: {w: [3]}\nnodes: {loss: "sum(x * w)"}\npredict: w\n'
    ),
    "predict_a_view": (
        "inputs: {x: [2, 3]}\nparams: {w: [3, 2]}\n"
        'nodes: {h: "transpose(w)", loss: "sum(h * x)"}\npredict: h\n'
    ),
    "output_an_input": 'inputs: {x: []}\nparams: {w: [3]}\nnodes: {t: "sum(w) * x"}\noutput: x\n',
    "output_a_copy": 'inputs: {x: []}\nnodes: {loss: "x"}\nwrt: [x]\n',
}


@pytest.mark.parametrize("name", sorted(RETURNED_LEAVES))
def test_returned_values_are_not_the_callers_arrays(name: str, tmp_path: Path) -> None:
    """Twelfth review: `predict: w` returned params["w"] itself, and a loss that is an
    input (`loss: x`) returned x: writing into the result changed the caller's array.
    Returned values own their memory, as gradients do."""
    module = compile_module(f"name: {name}\n{RETURNED_LEAVES[name]}", tmp_path)
    params = {key: np.ones(shape) for key, shape in module.PARAMS.items()}
    x = np.ones(module.INPUTS["x"][0])
    before = {key: value.copy() for key, value in params.items()}, x.copy()
    returned = [module.forward(params, x)[0], module.value_and_grad(params, x)[0]]
    if "predict" in name:
        takes_x = "x" in inspect.signature(module.predict).parameters
        returned.append(module.predict(params, x) if takes_x else module.predict(params))
    for value in returned:
        assert isinstance(value, np.ndarray | np.generic)
        if isinstance(value, np.ndarray):
            assert not any(np.shares_memory(value, array) for array in [x, *params.values()])
            value[...] = 7.0
    assert all(np.array_equal(params[key], before[0][key]) for key in params)
    assert np.array_equal(x, before[1])


@pytest.mark.parametrize(
    ("example", "call", "message"),
    [
        # a [batch] target against [batch, 1] predictions: (p - y) was [batch, batch]
        ("swish_regression", {"x": (5, 4), "y": (5,)}, "y has shape (5,), where the spec"),
        ("swish_regression", {"x": (4,), "y": (5, 1)}, "x has shape (4,), where the spec"),
        ("mnist", {"x": (3, 784), "y": (3, 1)}, "y has shape (3, 1), where the spec"),
        ("mnist", {"x": (784,), "y": (1,)}, "x has shape (784,), where the spec"),
        ("seed_graph", {"a": (3,), "b": ()}, "a has shape (3,), where the spec gives it ()"),
        # a target of [batch, 5] where the spec says [batch, 1]: (p - y) was [batch, 5]
        ("swish_regression", {"x": (5, 4), "y": (5, 5)}, "y has shape (5, 5), where the spec"),
        # one target for a batch of 5: it was broadcast over the batch
        (
            "swish_regression",
            {"x": (5, 4), "y": (1, 1)},
            "y has shape (1, 1), where the spec gives it ('batch', 1), and batch is 5 in an "
            "input before it",
        ),
        ("mnist", {"x": (3, 784), "y": (4,)}, "and batch is 3 in an input before it"),
        ("mnist", {"x": (3, 783), "y": (3,)}, "x has shape (3, 783), where the spec"),
    ],
)
def test_an_input_of_other_axes_than_the_spec_is_a_value_error(
    example: str, call: dict[str, tuple[int, ...]], message: str, tmp_path: Path
) -> None:
    """Twelfth review: NumPy broadcasts an input of fewer or more axes than its spec's,
    so a target of [batch] against predictions of [batch, 1] gave the mean over
    [batch, batch] differences, a wrong loss, and gradients, with no error. And, a
    leftover of that review, one of the axes but other sizes: a target of [batch, 5] for
    [batch, 1], or a batch of 1 beside a batch of 5, was broadcast too."""
    spec = (Path(__file__).parent.parent / "examples" / f"{example}.yaml").read_text()
    module = compile_module(spec, tmp_path)
    params = module.init_params(0)
    inputs = {
        name: np.zeros(shape, int if module.INPUTS[name][1].startswith("int") else float)
        for name, shape in call.items()
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        module.value_and_grad(params, **inputs)
    right = {
        name: np.zeros(tuple(3 if isinstance(d, str) else d for d in shape), dtype)
        for name, (shape, dtype) in module.INPUTS.items()
    }
    module.value_and_grad(params, **right)
    if example == "mnist" and message.startswith("x has"):  # predict holds x to its shape
        with pytest.raises(ValueError, match=re.escape(message)):
            module.predict(params, x=inputs["x"])


@pytest.mark.parametrize(
    ("name", "shape"),
    [("b1", (1,)), ("b1", ()), ("W1", (256, 784)), ("W2", (256,)), ("b2", (5, 10))],
)
def test_a_param_of_another_shape_than_the_spec_is_a_value_error(
    name: str, shape: tuple[int, ...], tmp_path: Path
) -> None:
    """A leftover of the twelfth review: params were converted, not checked, so a bias of
    shape (1,) or () was added to every unit, a wrong loss and no error (and a bias
    gradient of the spec's shape, which hid it)."""
    spec = (Path(__file__).parent.parent / "examples" / "mlp.yaml").read_text()
    module = compile_module(spec, tmp_path)
    params = module.init_params(0)
    x, y = np.ones((5, 784)), np.arange(5)
    params[name] = np.ones(shape)
    wanted = module.PARAMS[name]
    message = f"params['{name}'] has shape {shape}, where the spec gives it {wanted}"
    for call in (
        lambda: module.value_and_grad(params, x, y),
        lambda: module.forward(params, x, y),
        lambda: module.predict(params, x),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
    params[name] = np.ones(wanted).tolist()  # any array-like of the shape is taken
    module.value_and_grad(params, x, y)


def test_grad_output_of_an_array_is_a_value_error(tmp_path: Path) -> None:
    """Thirteenth review: the seed line `np.float32(grad_output)` kept an array, which
    was broadcast over the adjoints: `backward(cache, grad_output=np.ones(10))` on the
    mlp example gave gradients of the right shapes, wrong, with no error. The output is a
    scalar, so is dL/d(output) (PyTorch: "Mismatch in shape")."""
    spec = (Path(__file__).parent.parent / "examples" / "mlp.yaml").read_text()
    module = compile_module(spec, tmp_path)
    params = module.init_params(0)
    _, cache = module.forward(params, np.ones((5, 784)), np.arange(5))
    grads = module.backward(cache)
    for scale in (2.0, np.float64(2.0), np.array(2.0), 2):
        scaled = module.backward(cache, grad_output=scale)
        for name, grad in grads.items():
            assert scaled[name].dtype == np.float32
            np.testing.assert_allclose(scaled[name], 2 * grad, rtol=1e-6)
    for wrong in (np.ones(10), np.ones(1), [2.0], np.ones((5, 10))):
        shape = np.shape(wrong)
        message = f"grad_output is a scalar, as the output is: not {shape}"
        with pytest.raises(ValueError, match=re.escape(message)):
            module.backward(cache, grad_output=wrong)


@pytest.mark.parametrize(
    "wrong",
    [None, "0.3", 0.3 + 0j, [0.1, None, 0.2]],
    ids=["None", "text", "complex", "a list holding None"],
)
def test_a_float_value_that_is_no_real_number_is_a_value_error(
    wrong: object, tmp_path: Path
) -> None:
    """Fourteenth review: float inputs, params and grad_output were converted as NumPy
    converts, so None became NaN (a NaN loss, no error), the text "0.3" was 0.3 and a
    complex number lost its imaginary part with a ComplexWarning. Labels refused these
    already; now every float value does, naming it."""
    spec = "name: f\ninputs: {x: [3], c: []}\nparams: {w: [3]}\nnodes: {loss: sum(x * w) * c}\n"
    module = compile_module(spec, tmp_path)
    params, x = {"w": np.ones(3)}, np.ones(3)
    shaped = [wrong] * 3 if not isinstance(wrong, list) else wrong
    scalar = wrong if not isinstance(wrong, list) else None
    calls = {
        "x": lambda: module.value_and_grad(params, x=shaped, c=1.0),
        "c": lambda: module.value_and_grad(params, x=x, c=scalar),
        "params['w']": lambda: module.value_and_grad({"w": shaped}, x=x, c=1.0),
        "grad_output": lambda: module.backward(
            module.forward(params, x=x, c=1.0)[1], grad_output=scalar
        ),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=re.escape(f"{name} is an array of ")):
            call()
    for right in (1, True, np.float32(0.5), np.array(2.0)):  # numbers of any real dtype
        loss, _ = module.value_and_grad({"w": [right] * 3}, x=[right] * 3, c=right)
        assert loss == 3 * float(right) ** 3

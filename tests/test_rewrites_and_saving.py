"""How functions NumPy lacks are printed, and what the forward pass saves.

- sigmoid, softplus and softmax are printed inline in a stable form (no module helper),
  and each line that uses one says so in a comment;
- softplus' is written through the softplus's own output, exactly (`-expm1(-h)`);
- an elementwise temporary shared by both passes is recomputed in backward when its
  inputs are saved anyway (Mish saves `s` alone), never a tensor op;
- an explicit `identity` activation keeps the layer's names (`h3 = s3`, `d_s3 = d_h3`).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from symbackprop.compiler import compile_text
from tests.support import central_differences, import_source

STABLE_FORMS = {  # a pattern of the printed form: the comment that must name it
    r"np\.exp\(-np\.logaddexp\(0, ": "sigmoid as exp(-logaddexp(0, -x))",
    r"(?<!-)np\.logaddexp\(0, ": "softplus as logaddexp(0, x)",
    r"np\.exp\(\w+ - \w+\.max\(axis=": "softmax, shifted by its max",
    r"np\.expm1\(": "expm1: exact 1 - exp(-x)",
}

REWRITES_SPEC = """
name: rewrites
inputs: {x: [batch, 4], y: [batch, 3]}
layers:
  - {dense: 5, activation: sigmoid}
  - {dense: 5, activation: softplus}
  - {dense: 5, activation: "x * sigmoid(x) + softplus(-x)"}
  - {dense: 3, activation: softmax}
loss: {mse: y}
"""


def _statement_comments(source: str) -> list[tuple[str, str]]:
    """(code, the comments on it and in the comment block just above it) per statement."""
    result, block = [], []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped)
            continue
        code, _, trailing = line.partition("  # ")
        result.append((code, " ".join([*block, trailing])))
        block = []
    return result


def test_no_helper_is_defined_for_sigmoid_softplus_or_softmax() -> None:
    source = compile_text(REWRITES_SPEC, "rewrites.yaml")
    for helper in ("_sigmoid", "_softplus", "_softmax"):
        assert f"def {helper}(" not in source
        assert f"{helper}(" not in source


def test_every_stable_rewrite_says_so_in_a_comment() -> None:
    source = compile_text(REWRITES_SPEC, "rewrites.yaml")
    body = source[source.index("def forward(") :]
    seen = set()
    statements = _statement_comments(body)
    for index, (code, comments) in enumerate(statements):
        for form, note in STABLE_FORMS.items():
            if not re.search(form, code):
                continue
            seen.add(form)
            # the softmax's note sits on the line that divides by the sum, just after
            softmax = note.startswith("softmax")
            nearby = comments + " " + (statements[index + 1][1] if softmax else "")
            assert note in nearby, f"no comment names the rewrite in:\n{code}"
    assert seen == set(STABLE_FORMS)


@pytest.mark.parametrize("point", [-40.0, -30.0, -5.0, 0.0, 5.0, 30.0, 40.0])
def test_softplus_gradient_is_exact_through_the_output(tmp_path, point: float) -> None:
    """softplus'(s) = sigmoid(s), read as 1 - exp(-h) from h = softplus(s) without the
    cancellation `1 - np.exp(-h)` would suffer when h is tiny (s far below 0)."""
    spec = """
name: soft
inputs: {x: [1]}
params: {w: {shape: [1], init: ones}}
nodes:
  h: softplus(x * w)
  loss: sum(h)
"""
    source = compile_text(spec, "soft.yaml")
    assert "np.expm1(-h)" in source
    module = import_source(source, tmp_path)
    _, grads = module.value_and_grad({"w": np.ones(1)}, np.array([point]))
    expected = point / (1 + np.exp(-point))  # d/dw softplus(x w) = x sigmoid(x w)
    assert grads["w"][0] == pytest.approx(expected, rel=1e-13, abs=0)


MISH_SPEC = """
name: mish
inputs: {x: [batch, 4], y: [batch, 2]}
layers:
  - {dense: 6, activation: "x * tanh(softplus(x))"}
  - {dense: 2}
loss: {mse: y}
"""


def _cache_keys(source: str) -> list[str]:
    block = source[source.index("    cache = {") : source.index("    return loss, cache")]
    return re.findall(r'"(\w+)":', block)


def test_mish_saves_its_input_and_recomputes_the_shared_tanh(tmp_path) -> None:
    source = compile_text(MISH_SPEC, "mish.yaml")
    keys = _cache_keys(source)
    assert "s1" in keys
    assert not [key for key in keys if key.startswith("t_")], keys
    backward = source[source.index("def backward(") : source.index("def value_and_grad(")]
    assert "np.tanh(np.logaddexp(0, s1))" in backward
    module = import_source(source, tmp_path)
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    _, grads = module.value_and_grad(params, x, y)
    step = 1e-6
    for name in ("W1", "b1"):
        flat = params[name].reshape(-1)
        for index in range(flat.size):
            flat[index] += step
            up = module.forward(params, x, y)[0]
            flat[index] -= 2 * step
            down = module.forward(params, x, y)[0]
            flat[index] += step
            numeric = (up - down) / (2 * step)
            assert grads[name].reshape(-1)[index] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_swish_keeps_saving_its_sigmoid_when_backward_reads_the_output() -> None:
    """swish' is written as h (1 - t) + t: backward reads h and t = sigmoid(s), not s, so
    recomputing t would mean saving s instead; t stays saved."""
    spec = MISH_SPEC.replace("x * tanh(softplus(x))", "x * sigmoid(x)")
    keys = _cache_keys(compile_text(spec, "swish.yaml"))
    assert "t_h1_0" in keys and "s1" not in keys


FOUR_BRANCHES = (
    "name: t4\ninputs: {u0: [n, 3], u1: [n, 3], u2: [n, 3], u3: [n, 3]}\n"
    "params: {w: [3]}\nnodes:\n  total: "
    + " + ".join(f"sum(w * tanh(u{i}))" for i in range(4))
    + "\noutput: total\nwrt: [w, u0, u1, u2, u3]\n"
)


def test_a_value_read_only_for_its_shape_does_not_make_its_tanh_recomputed(tmp_path) -> None:
    """Review: of four equal branches `sum(w * tanh(u_i))`, the one whose input the
    backward pass read for its shape (`u0.shape[0]`) had tanh(u0) recomputed in backward;
    the others saved theirs. A value read only for its shape is not saved for its values."""
    source = compile_text(FOUR_BRANCHES, "t4.yaml")
    backward = source[source.index("def backward(") : source.index("def value_and_grad(")]
    assert "np.tanh" not in backward
    block = source[source.index("    cache = {") : source.index("    return total, cache")]
    assert len([key for key in re.findall(r'"(\w+)":', block) if key.startswith("t_")]) == 4
    module = import_source(source, tmp_path)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, 3)) for _ in range(4)]
    params = {"w": rng.standard_normal(3)}
    _, grads = module.value_and_grad(params, *inputs)
    for i, u in enumerate(inputs):
        np.testing.assert_allclose(grads[f"u{i}"], params["w"] / np.cosh(u) ** 2, rtol=1e-12)
    expected_w = sum(np.tanh(u).sum(axis=0) for u in inputs)
    np.testing.assert_allclose(grads["w"], expected_w, rtol=1e-12)


def test_products_of_merged_equal_adjoints_are_computed_once() -> None:
    """Review: the four branches' adjoints are equal, and after they are merged into one
    array each `d_u_i` line still multiplied it by w: `d_t_total_7 * w` four times."""
    source = compile_text(FOUR_BRANCHES, "t4.yaml")
    backward = source[source.index("def backward(") : source.index("def value_and_grad(")]
    lines = [line for line in backward.splitlines() if not line.lstrip().startswith("#")]
    assert sum("d_t_total_7 * w" in line for line in lines) == 1, backward


def test_a_tensor_op_shared_by_both_passes_is_saved_not_recomputed() -> None:
    spec = """
name: shared_norm
inputs: {x: [batch, 3], y: [batch, 3]}
params: {w: [3]}
nodes:
  scale: sum(y * y)
  loss: sum(x * w) / scale
"""
    source = compile_text(spec, "shared_norm.yaml")
    backward = source[source.index("def backward(") : source.index("def value_and_grad(")]
    assert ".sum()" not in backward
    assert [key for key in _cache_keys(source) if key != "x"], "the sum is not saved"


def test_an_explicit_identity_activation_keeps_the_layer_names(tmp_path) -> None:
    spec = MISH_SPEC.replace('"x * tanh(softplus(x))"', "identity")
    source = compile_text(spec, "ident.yaml")
    assert "    h1 = s1\n" in source
    assert "    # dL/ds1 = dL/dh1\n    d_s1 = d_h1\n" in source
    module = import_source(source, tmp_path)
    params = module.init_params(0)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 4)), rng.standard_normal((2, 2))
    _, grads = module.value_and_grad(params, x, y)
    residual = (x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"] - y
    expected_b2 = 2 * residual.sum(axis=0) / residual.size
    np.testing.assert_allclose(grads["b2"], expected_b2, rtol=1e-12)


PRODUCT_SPEC = """
name: product
inputs: {x: [batch, 4], v: [4]}
params: {W: [4, 3], V: [4, 3], b: [3], c: [3], M: [4, 4]}
nodes:
  s: x @ W + b
  r: x @ V - c * b
  q: v @ M + x
  loss: sum(s * r) + sum(q)
output: loss
"""


def test_a_product_plus_terms_adds_the_terms_into_the_product_array(tmp_path) -> None:
    """`s = np.dot(x, W)` then `s += b`: no second array of the product's size. Only where the
    product is as big as the result (`v @ M + x` broadcasts the product up: one line)."""
    source = compile_text(PRODUCT_SPEC, "product.yaml")
    assert "    s = np.dot(x, W)\n    s += b\n" in source
    assert "    r = np.dot(x, V)\n    r -= b * c\n" in source
    assert "    q +=" not in source
    module = import_source(source, tmp_path)
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    params["b"], params["c"] = rng.standard_normal(3), rng.standard_normal(3)
    x, v = rng.standard_normal((2, 4)), rng.standard_normal(4)
    loss, _ = module.forward(params, x, v)
    s = x @ params["W"] + params["b"]
    r = x @ params["V"] - params["c"] * params["b"]
    expected = (s * r).sum() + (v @ params["M"] + x).sum()
    assert loss == pytest.approx(expected, rel=1e-12)


def test_a_recomputed_temporary_the_forward_pass_keeps_is_not_saved_too() -> None:
    """The forward pass reads `tanh(softplus(s1))` twice, so it keeps its line; backward
    recomputes it under a temporary of its own, never under the forward one's name (which
    would put it in the cache as well)."""
    spec = MISH_SPEC.replace(
        "x * tanh(softplus(x))", "x * tanh(softplus(x)) + tanh(softplus(x)) ** 2"
    )
    source = compile_text(spec, "twice.yaml")
    assert "t_h1_0 = np.tanh(np.logaddexp(0, s1))" in source
    assert not [key for key in _cache_keys(source) if key.startswith("t_")]


SHAPE_ONLY = """
name: shape_only
inputs: {{x: [batch, 3], u: [time, 5]}}
params:
  W: {{shape: [3, 4], init: normal}}
  V: {{shape: [4, 5], init: normal}}
nodes:
  s: {value}
  loss: {loss}
wrt: [W]
"""


@pytest.mark.parametrize(
    ("value", "loss", "written", "kept"),
    [
        # the adjoint of a sum reads s only for its shape: x has its one named dim
        ("x @ W", "sum(s)", "np.broadcast_to(d_loss, (x.shape[0], 4))", False),
        ("x @ W", "mean(s)", "np.broadcast_to(d_loss / (x.shape[0] * 4), (x.shape[0], 4))", False),
        # a fixed shape is written as numbers, and reads no value
        ("W @ V", "sum(s)", "np.broadcast_to(d_loss, (3, 5))", False),
        # no one value has both named dims: s is kept for its shape
        ("x @ W @ V @ transpose(u)", "sum(s)", "np.broadcast_to(d_loss, s.shape)", True),
    ],
)
def test_a_value_read_only_for_its_shape_is_not_kept(
    tmp_path, value: str, loss: str, written: str, kept: bool
) -> None:
    """Where the backward pass reads a forward value only for its dims, they are written
    out (numbers, and named dims read off a value it has anyway), and the forward pass
    does not keep the value in its cache for them."""
    text = SHAPE_ONLY.format(value=value, loss=loss)
    source = compile_text(text, "shape_only.yaml")
    assert written in source
    assert ("s" in _cache_keys(source)) == kept
    module = import_source(source, tmp_path)
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 4)), "V": rng.standard_normal((4, 5))}
    inputs = {"x": rng.standard_normal((6, 3)), "u": rng.standard_normal((7, 5))}
    _, grads = module.value_and_grad(params, **inputs)
    differences = central_differences(module, params, inputs)
    np.testing.assert_allclose(grads["W"], differences["W"], rtol=1e-6, atol=1e-8)


def test_dims_are_read_off_the_values_own_inputs_and_numbers_multiplied() -> None:
    """Found by review: the batch of `x @ W` is read off x, not off another input that
    merely shares the dim's name (it would be wrong for a caller who breaks that promise);
    and a count of fixed dims is one number, not `3 * 3`."""
    text = """
name: own_dims
inputs: {z: [batch], x: [batch, 3]}
params: {W: [3, 4], V: [4, 3]}
nodes:
  s: x @ W
  r: W @ V
  loss: sum(s) + mean(r) + 0 * sum(z)
wrt: [W]
"""
    source = compile_text(text, "own_dims.yaml")
    assert "np.broadcast_to(d_loss, (x.shape[0], 4))" in source
    assert "np.broadcast_to(d_loss / 9, (3, 3))" in source

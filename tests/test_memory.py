"""backward returns each adjoint's memory after its last use (`del`), so its peak memory
is that of hand-written code that rebinds one name, not the sum of every layer's adjoint."""

from __future__ import annotations

import ast
import gc
import tracemalloc

import numpy as np

from symbackprop.compiler import compile_text
from tests.support import import_source

LAYERS, WIDTH, BATCH = 10, 64, 256


def deep_relu_spec() -> str:
    layers = "\n".join([f"  - {{dense: {WIDTH}, activation: relu}}"] * LAYERS)
    return f"""name: deep
inputs: {{x: [batch, {WIDTH}], y: {{shape: [batch], dtype: int64}}}}
layers:
{layers}
  - {{dense: 10}}
loss: {{softmax_cross_entropy: y}}
"""


def _backward(source: str) -> ast.FunctionDef:
    tree = ast.parse(source)
    return next(
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "backward"
    )


def test_every_used_up_adjoint_is_deleted_after_its_last_use() -> None:
    function = _backward(compile_text(deep_relu_spec(), "deep.yaml"))
    body = function.body[1:]  # past the docstring
    returned = {
        value.id for value in ast.walk(body[-1]) if isinstance(value, ast.Name)
    }  # the gradients
    assigned = [
        target.id
        for statement in body
        if isinstance(statement, ast.Assign)
        for target in statement.targets
        if isinstance(target, ast.Name) and target.id.startswith("d_")
    ]
    deleted_at: dict[str, int] = {}
    last_read: dict[str, int] = {}
    for index, statement in enumerate(body):
        if isinstance(statement, ast.Delete):
            for target in statement.targets:
                assert isinstance(target, ast.Name)
                deleted_at[target.id] = index
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                last_read[node.id] = index
    adjoints = [name for name in assigned if name not in returned and name != "d_loss"]
    assert adjoints, "no intermediate adjoints: is the spec deep?"
    final = len(body) - 2  # the line before the return: returning frees what it reads
    for name in adjoints:
        if last_read[name] == final:
            assert name not in deleted_at
            continue
        assert name in deleted_at, f"{name} is never deleted"
        assert deleted_at[name] == last_read[name] + 1, f"{name} is deleted late or early"
    assert not set(deleted_at) & returned


def _peak_bytes(function, *args) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        function(*args)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_backward_peak_memory_is_the_gradients_and_a_few_adjoints(tmp_path) -> None:
    module = import_source(compile_text(deep_relu_spec(), "deep.yaml"), tmp_path)
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    x = rng.standard_normal((BATCH, WIDTH))
    y = rng.integers(0, 10, BATCH)
    _, cache = module.forward(params, x, y)
    gradients = sum(value.nbytes for value in params.values())
    adjoint = BATCH * WIDTH * 8
    peak = _peak_bytes(module.backward, cache)
    # one adjoint in flight, the mask of a relu, the softmax's; never one per layer
    assert peak < gradients + 4 * adjoint, (peak, gradients, adjoint)
    assert LAYERS * adjoint > 4 * adjoint  # the bound would catch keeping every layer's


CLASSES_SPEC = """name: many_classes
dtype: float32
inputs: {x: [batch, 8], y: {shape: [batch], dtype: int64}}
layers:
  - {dense: 500}
loss: {softmax_cross_entropy: y}
"""


def test_log_softmax_writes_over_the_logits_it_no_longer_needs(tmp_path) -> None:
    """The logits of a large batch are the forward pass's largest array: log_softmax
    writes its result over them (nothing reads them after), so forward peaks at the
    logits and the exp's array, as hand-written code that works in place does, not three
    arrays of their size."""
    source = compile_text(CLASSES_SPEC, "classes.yaml")
    assert "    t_loss_0 = _log_softmax(s1, axis=1, out=s1, row_ones=_ONES_COLUMN_500)\n" in source
    module = import_source(source, tmp_path)
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    x = rng.standard_normal((2000, 8)).astype(np.float32)
    y = rng.integers(0, 500, 2000)
    logits = 2000 * 500 * 4
    forward_peak = _peak_bytes(module.forward, params, x, y)
    assert forward_peak < 2.2 * logits, forward_peak / logits
    # value_and_grad peaks no higher: backward's softmax is made in place of a new one
    assert _peak_bytes(module.value_and_grad, params, x, y) < 2.2 * logits


def test_logits_read_after_log_softmax_are_not_written_over(tmp_path) -> None:
    """Logits that a later line reads, or that the cache keeps, or that are an input keep
    their values: log_softmax makes a new array."""
    text = """name: reused
inputs: {x: [batch, 3], z: [batch, 3], y: {shape: [batch], dtype: int64}}
params: {W: [3, 3]}
nodes:
  s: x @ W
  loss: softmax_cross_entropy(s, y) + mean(s * s) + softmax_cross_entropy(z, y)
"""
    source = compile_text(text, "reused.yaml")
    assert "out=s)" not in source and "out=z)" not in source
    module = import_source(source, tmp_path)
    rng = np.random.default_rng(1)
    x, z = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    y = rng.integers(0, 3, 4)
    params = module.init_params(0)
    z_before = z.copy()
    value, grads = module.value_and_grad(params, x, z, y)
    np.testing.assert_array_equal(z, z_before)
    s = x @ params["W"]
    log_softmax = lambda v: v - np.log(np.exp(v).sum(axis=1, keepdims=True))  # noqa: E731
    expected = (
        -log_softmax(s)[np.arange(4), y].mean()
        + (s * s).mean()
        - log_softmax(z)[np.arange(4), y].mean()
    )
    np.testing.assert_allclose(value, expected, rtol=1e-12)

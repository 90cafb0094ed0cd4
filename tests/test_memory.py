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

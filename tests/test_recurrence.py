"""A weight tied across the steps of a recurrence: its adjoint is summed as the steps'
contributions arrive (`d_W = a + b`, then `d_W += c`), so the backward pass keeps no
step's adjoint past its use, and the compiled code grows by the same few lines a step."""

from __future__ import annotations

import gc
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from symbackprop.compiler import compile_text
from tests.support import TorchReference, central_differences, import_source, relative_error


def tied_rnn(steps: int, width: int = 3, name: str = "rnn") -> str:
    nodes = ["  h0: tanh(x @ W + a)"]
    nodes += [f"  h{i}: tanh(h{i - 1} @ W + a)" for i in range(1, steps)]
    return "\n".join(
        [
            f"name: {name}",
            f"inputs: {{x: [n, {width}]}}",
            f"params: {{W: [{width}, {width}], a: [{width}]}}",
            "nodes:",
            *nodes,
            f"  loss: mean(h{steps - 1} ** 2)",
            "",
        ]
    )


def backward_lines(source: str) -> list[str]:
    body = source.split("\ndef backward(")[1].split("\ndef value_and_grad(")[0]
    return [line.strip() for line in body.splitlines() if line.strip()]


def test_the_tied_weight_is_summed_step_by_step_each_step_commented() -> None:
    lines = backward_lines(compile_text(tied_rnn(6), "rnn.yaml"))
    for gradient in ("d_W", "d_a"):
        assigned = [i for i, line in enumerate(lines) if line.startswith(f"{gradient} = ")]
        updated = [i for i, line in enumerate(lines) if line.startswith(f"{gradient} += ")]
        assert len(assigned) == 1 and len(updated) == 4, lines
        assert assigned[0] < updated[0]
        for index in updated:  # each step says which chain-rule term it adds
            comment = next(line for line in reversed(lines[:index]) if not line.startswith("#  "))
            assert comment.startswith(f"# dL/d{gradient[2:]} += "), comment
    # one contribution a line: no line sums several steps' products
    assert all(line.count(".T @") <= 2 for line in lines)
    assert not any("'" in line for line in lines if not line.startswith("#"))


@pytest.mark.parametrize("steps", [2, 3, 6])
def test_the_tied_weights_transpose_is_read_in_place(steps: int) -> None:
    """`W.T` in every step's dL/dh is a view that costs nothing: CSE does not make it a
    temporary (`t_h1_1 = W.T`) that each step then reads under another name."""
    lines = backward_lines(compile_text(tied_rnn(steps), "rnn.yaml"))
    assert not any(line.endswith("= W.T") for line in lines), lines
    products = [line for line in lines if "np.dot(d_t_h" in line and line.endswith(", W.T)")]
    assert len(products) == steps - 1, lines


@pytest.mark.parametrize("steps", [2, 3, 6])
def test_the_first_step_keeps_its_adjoint_name_and_note(steps: int) -> None:
    """The first step's adjoint is also what the tied bias's last sum reads, which comes
    first: CSE moves the adjoint's own line up rather than make a nameless temporary of
    the bias (`t_a_0 = ...` with no comment, read as dL/dt_h0_0)."""
    lines = backward_lines(compile_text(tied_rnn(steps), "rnn.yaml"))
    index = lines.index("d_t_h0_0 = d_h0 * (1 - h0**2)")
    assert lines[index - 1] == "# dL/dt_h0_0 = dL/dh0 * dh0/dt_h0_0 = dL/dh0 * (1 - h0**2)"
    assert not any(line.startswith("t_a_") for line in lines), lines
    assert any(line.startswith("d_W ") and line.endswith("np.dot(x.T, d_t_h0_0)") for line in lines)


def test_an_input_product_shared_by_every_step_is_computed_at_the_first() -> None:
    """`x @ W` in every step is one product, computed by the first step's own line: the
    first of the lines that compute just it, not the last moved up."""
    text = """
name: input_each_step
inputs: {x: [n, 3]}
params: {W: [3, 3], a: [3], U: [3, 3]}
nodes:
  h0: tanh(x @ W + a)
  h1: tanh(h0 @ U + x @ W + a)
  h2: tanh(h1 @ U + x @ W + a)
  loss: mean(h2 ** 2)
"""
    source = compile_text(text, "rnn.yaml")
    forward = source.split("\ndef forward(")[1].split("\ndef backward(")[0]
    assert forward.count("np.dot(x, W)") == 1
    assert "    t_h0_0 = np.dot(x, W)\n" in forward
    assert "t_h0_0 = t_h" not in forward


def test_the_compiled_code_grows_by_the_same_lines_a_step() -> None:
    sizes = [len(compile_text(tied_rnn(steps), "rnn.yaml").splitlines()) for steps in (10, 20, 40)]
    assert sizes[2] - sizes[1] == 2 * (sizes[1] - sizes[0]), sizes


@pytest.mark.parametrize("steps", [1, 2, 3, 7])
def test_recurrence_gradients_match_differences_and_torch(steps: int, tmp_path: Path) -> None:
    text = tied_rnn(steps)
    module = import_source(compile_text(text, "rnn.yaml"), tmp_path)
    rng = np.random.default_rng(steps)
    params = {name: 0.6 * rng.standard_normal(shape) for name, shape in module.PARAMS.items()}
    inputs = {"x": rng.standard_normal((4, 3))}
    value, cache = module.forward(params, **inputs)
    grads = module.backward(cache)
    differences = central_differences(module, params, inputs)
    for name in module.WRT:
        assert relative_error(grads[name], differences[name]) < 1e-7, name
    torch = pytest.importorskip("torch")
    assert torch is not None
    expected_value, expected = TorchReference(text).value_and_grad(params, inputs, module.WRT)
    assert abs(float(value) - expected_value) < 1e-12
    for name in module.WRT:
        assert relative_error(grads[name], expected[name]) < 1e-10, name


def test_backward_keeps_no_step_adjoint_past_its_use(tmp_path: Path) -> None:
    steps, width, batch = 30, 64, 256
    module = import_source(compile_text(tied_rnn(steps, width), "rnn.yaml"), tmp_path)
    rng = np.random.default_rng(0)
    params = {name: 0.1 * rng.standard_normal(shape) for name, shape in module.PARAMS.items()}
    _, cache = module.forward(params, x=rng.standard_normal((batch, width)))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        module.backward(cache)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    step = batch * width * 8  # one step's adjoint
    gradients = (width * width + width) * 8
    # a step's adjoint, its derivative and the one before it in flight; never one per step
    assert peak < 2 * gradients + 5 * step, (peak, step)
    assert steps * step > 5 * step


def test_a_running_sum_is_written_in_place_under_the_adjoints_name() -> None:
    source = compile_text(tied_rnn(3), "rnn.yaml")
    assert re.search(r"^    d_W \+= np\.dot\(\w+\.T, ", source, re.MULTILINE)
    assert "np.add(" not in source  # printed as `+=`, not as a ufunc with out=


# Found by review: CSE made one gradient read another's first running sum (whose array
# `+=` updates later), and a first running sum the algebra cancels to 0 became an int array.
SHARED_FIRST_SUM = """
name: shared_first_sum
inputs: {x: [3]}
params: {W: [3], V: [3]}
nodes:
  p: W * x * V
  q: sin(W + V)
  r: cos(W + V)
  loss: sum(p + q + r)
"""
CANCELLED_FIRST_SUM = """
name: cancelled_first_sum
params: {U: [2, 2], W: [2, 2]}
nodes:
  h: tanh(U)
  n: W - U
  loss: sum(h) + mean(n) + mean(U)
"""


@pytest.mark.parametrize("text", [SHARED_FIRST_SUM, CANCELLED_FIRST_SUM])
def test_a_running_sum_never_leaks_and_starts_an_array_of_its_own(
    text: str, tmp_path: Path
) -> None:
    source = compile_text(text, "spec.yaml")
    assert not any("'" in line for line in source.splitlines() if not line.lstrip().startswith("#"))
    assert "np.array(0)" not in source
    module = import_source(source, tmp_path)
    rng = np.random.default_rng(0)
    params = {name: rng.standard_normal(shape) for name, shape in module.PARAMS.items()}
    inputs = {name: rng.standard_normal(shape) for name, (shape, _) in module.INPUTS.items()}
    _, cache = module.forward(params, **inputs)
    grads = module.backward(cache)
    again = module.backward(cache)
    differences = central_differences(module, params, inputs)
    for name in module.WRT:
        assert relative_error(grads[name], differences[name]) < 1e-7, name
        assert np.array_equal(grads[name], again[name]), name
    first, second = module.WRT
    assert not np.shares_memory(grads[first], grads[second])

"""The backward pass's comments: each chain-rule step above the first of its lines, and
each temporary CSE shares between steps naming the steps that read it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from symbackprop.compiler import compile_text
from tests.support import EXAMPLES, import_source, relative_error

# the adjoint of g broadcasts a scalar to [batch, batch]: the shape tuple is computed
# once, and the step is long enough that part of it goes to a line of its own
SHARED_SHAPE = """
name: shared_shape
inputs: {x: [batch, 3]}
nodes:
  g: x @ transpose(x)
  loss: mean(g) + mean(sum(g, axis=1))
wrt: [x]
"""


def _backward(source: str) -> list[str]:
    body = source.split("\ndef backward(")[1].split("\ndef ")[0]
    return body.split('    """\n', 1)[1].splitlines()  # past the docstring


def test_a_temporary_two_steps_share_names_them() -> None:
    source = (EXAMPLES / "gates.yaml").read_text(encoding="utf-8")
    lines = _backward(compile_text(source, "gates.yaml"))
    at = lines.index("    t_w_0 = f - w")
    assert lines[at - 1] == "    # computed once for dL/dw and dL/df"
    assert lines[at + 1].startswith("    # dL/dw = ")
    assert lines[at + 3].startswith("    # dL/df = ")


def test_a_step_split_over_lines_has_its_comment_above_the_first(tmp_path: Path) -> None:
    source = compile_text(SHARED_SHAPE, "shared_shape.yaml")
    lines = _backward(source)
    shape = next(i for i, line in enumerate(lines) if re.match(r"    t_g_\d = \(", line))
    assert lines[shape - 1] == "    # computed once for dL/dg"
    step = next(i for i, line in enumerate(lines) if line.startswith("    # dL/dg = "))
    assert re.match(r"    t_g_\d = np\.broadcast_to\(", lines[step + 1]), lines[step + 1]
    rest = [line for line in lines[step + 2 :] if not line.startswith("    del ")]
    assert rest[0].startswith("    d_g = t_g_"), rest[0]
    # the lines still compute the gradient: loss = (1/n**2 + 1/n) * sum(x x^T)
    module = import_source(source, tmp_path)
    x = np.arange(12.0).reshape(4, 3) / 10
    _, grads = module.value_and_grad({}, x)
    n = x.shape[0]
    expected = (1 / n**2 + 1 / n) * 2 * np.ones((n, n)) @ x
    assert relative_error(grads["x"], expected) < 1e-12


def test_the_steps_of_a_running_sum_are_named_as_its_adjoint() -> None:
    """dL/dx is summed over three paths (`d_x = ...`, then `d_x += ...`): a temporary they
    share names dL/dx once, never a running sum's internal name (`dL/dx'1`)."""
    text = """
name: partial
inputs: {x: [3]}
nodes:
  a: maximum(x, 0)
  b: minimum(x, 0)
  c: sum(a * a + b * b + x * x)
output: c
wrt: [x]
"""
    lines = _backward(compile_text(text, "partial.yaml"))
    shared = [line for line in lines if line.startswith("    # computed once for ")]
    assert shared == ["    # computed once for dL/db, dL/da and dL/dx"], lines
    assert not any(re.search(r"\w'\d", line) for line in lines), lines  # as `d_x'1`


@pytest.mark.parametrize("example", sorted(path.stem for path in EXAMPLES.glob("*.yaml")))
def test_every_backward_temporary_has_a_comment(example: str) -> None:
    """A temporary's line is a cache read, or follows a comment: the step it is part of,
    the steps that share it, or why it is there (the ones of the bias gradients)."""
    source = compile_text((EXAMPLES / f"{example}.yaml").read_text(encoding="utf-8"), "e.yaml")
    lines = _backward(source)
    for index, line in enumerate(lines):
        if re.match(r"    t_\w+ = ", line) and "= cache[" not in line:
            assert lines[index - 1].startswith("    # "), (example, line)


EQUAL_ADJOINTS = """
name: equal
inputs: {u: [3], v: [3], w: [3], x: [3]}
params:
  b: {shape: [3], init: zeros}
nodes:
  p: tanh(u)
  q: sin(v)
  total: sum(w * p) + sum(w * q) + sum(x + b)
output: total
wrt: [u, v, b]
"""
PLAIN_STEP = """
name: plain
inputs: {x: [3, 2]}
params: {b: [3, 2], w: [3, 2]}
nodes:
  total: sum(x + b) + sum(w * x)
"""


def test_a_chain_step_names_the_value_it_goes_through() -> None:
    """Sixth review: CSE makes the equal adjoints of t_total_0, t_total_1 and t_total_2 one
    array, and the comments said `dL/dp = dL/dt_total_2 * dt_total_0/dp`: a step through a
    value p does not feed. The step keeps its value, the array read is written out after
    it, and the array's own line says whose adjoint it is too."""
    comments = []
    for text, file in ((EQUAL_ADJOINTS, "equal.yaml"), (PLAIN_STEP, "plain.yaml")):
        lines = _backward(compile_text(text, file))
        comments += [line.strip() for line in lines if line.strip().startswith("#")]
    steps = [re.findall(r"dL/d(\w+) \* d(\w+)/d", comment) for comment in comments]
    assert all(through == to for found in steps for through, to in found)
    assert [step for step in steps if step]  # the check read some
    text = "\n".join(comments)
    assert "# dL/dp = dL/dt_total_0 * dt_total_0/dp = dL/dt_total_2 * w" in text
    assert "# dL/dq = dL/dt_total_1 * dt_total_1/dq = dL/dt_total_2 * w" in text
    assert "shape (also dL/dt_total_1,\n#     dL/dt_total_0)" in text
    # a step of derivative 1 names its value, then the array
    assert "# dL/db = dL/dt_total_0 = dL/dt_total_1" in text

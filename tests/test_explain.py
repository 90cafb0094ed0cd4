# ruff: noqa: E501  (golden explain text and LaTeX have long lines)
"""`symbackprop explain`: one gradient derived by the chain rule, as the lectures derive it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy as sp

from symbackprop.cli import main
from symbackprop.explain import PATH_CAP, derivation, explain_spec
from symbackprop.spec import parse_spec
from tests.support import EXAMPLES, example_spec

EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
SEED_GRAPH = str(EXAMPLES / "seed_graph.yaml")

SEED_B = """\
de/db in seed_graph, by the chain rule: the sum over the 2 paths from b to e, each path
the product of the local derivatives along it.

forward, with each node's gate role:
  c = a + b    add gate: distributes the gradient
  d = b + 1    add gate: distributes the gradient
  e = c * d    multiply gate: swaps its inputs

local derivatives, one per edge:
  dc/db = 1
  dd/db = 1
  de/dc = d
  de/dd = c

paths from b to e:
  b -> c -> e:  de/dc * dc/db
  b -> d -> e:  de/dd * dd/db

the chain rule, summed over the paths:
  de/db = de/dc * dc/db + de/dd * dd/db
        = d * 1 + c * 1
        = c + d
"""

SEED_B_LATEX_SUM = r"""% the chain rule, summed over the paths
\begin{align*}
\frac{\partial e}{\partial b} &= \frac{\partial e}{\partial c} \cdot \frac{\partial c}{\partial b} + \frac{\partial e}{\partial d} \cdot \frac{\partial d}{\partial b} \\
 &= d \cdot 1 + c \cdot 1 \\
 &= c + d
\end{align*}
"""

# 5 diamonds in a row: 2**5 = 32 paths from a to v5, more than PATH_CAP
DIAMONDS = "\n".join(
    f"  u{i}: sin(v{i - 1})\n  w{i}: cos(v{i - 1})\n  v{i}: u{i} * w{i}" for i in range(1, 6)
)
DIAMOND_SPEC = f"""
name: diamonds
inputs: {{a: []}}
nodes:
  v0: 1.5 * a
{DIAMONDS}
output: v5
wrt: [a]
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["explain", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_seed_graph_wrt_b_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, SEED_GRAPH, "--wrt", "b") == (0, SEED_B, "")


def test_seed_graph_wrt_b_in_latex(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, SEED_GRAPH, "--wrt", "b", "--latex")
    assert code == 0
    assert out.endswith(SEED_B_LATEX_SUM)
    assert out.startswith("% de/db in seed_graph, by the chain rule")
    assert out.count(r"\begin{align*}") == out.count(r"\end{align*}") == 4


def _forward_values(spec_text: str, point: dict[str, int]) -> dict[sp.Symbol, sp.Expr]:
    """Every node's value at `point`, from the graph's own expressions (scalar graphs)."""
    from symbackprop.build import build_program

    graph = build_program(parse_spec(spec_text, "spec.yaml")).graph
    values: dict[sp.Symbol, sp.Expr] = {}
    for node in graph.nodes:
        values[node.symbol] = (
            sp.Integer(point[node.name]) if node.expr is None else node.expr.xreplace(values)
        )
    return values


def test_the_derived_sum_is_the_lectures_five() -> None:
    """At a = 2, b = 1 the lecture finds de/db = 5: so does the explained sum over paths."""
    explained = derivation(example_spec("seed_graph"), "b")
    values = _forward_values((EXAMPLES / "seed_graph.yaml").read_text(), {"a": 2, "b": 1})
    assert explained.count == 2
    assert explained.total().xreplace(values) == 5


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
@pytest.mark.parametrize("latex", [False, True], ids=["text", "latex"])
def test_every_gradient_of_every_example(name: str, latex: bool) -> None:
    """Each wrt is explained; the last line derived is its own (in either form)."""
    spec = example_spec(name)
    for wrt in spec.wrt:
        text = explain_spec(spec, wrt, latex)
        last = text.rstrip().splitlines()[-1 if not latex else -2]
        if latex:
            assert r"\partial" in text and text.count(r"\begin{align*}") >= 3
        elif "summed over the paths" in text:
            assert f"/d{wrt} = " in text.split("summed over the paths")[1]
        else:
            assert last.lstrip().startswith(f"d{spec.output}/d{wrt} ")


def test_tensor_graphs_are_explained_at_the_tensor_level() -> None:
    text = explain_spec(example_spec("sigmoid_4321"), "W2")
    assert "Some local derivatives on these paths are tensor rules" in " ".join(text.split())
    assert "  dloss/dW2       = h1^T @ dloss/dt_s2_0\n" in text
    assert "  dloss/ds2       = dloss/dh2 * h2 * (1 - h2)\n" in text
    assert "  dloss/dh2       = dloss/dt_s3_0 @ W3^T\n" in text
    assert "W2 -> t_s2_0 -> s2 -> h2 -> t_s3_0 -> s3 -> h3 -> t_loss_0 -> loss" in text


def test_broadcast_bias_is_summed() -> None:
    text = explain_spec(example_spec("mlp"), "b2")
    assert "dloss/db2       = sum over axis 0 of (dloss/ds2 * 1)" in text


def test_many_paths_are_capped_and_factored() -> None:
    explained = derivation(parse_spec(DIAMOND_SPEC, "diamonds.yaml"), "a")
    text = explained.text()
    assert explained.count == 32 > PATH_CAP
    intro = " ".join(text.split("\n\n")[0].split())
    assert f"32 paths are more than {PATH_CAP}: the first {PATH_CAP} are listed" in intro
    assert "each dv5/d<node> is named once" in intro
    assert f"paths from a to v5 (the first {PATH_CAP} of 32):" in text
    listed = [line for line in text.splitlines() if line.startswith("  a -> ")]
    assert len(listed) == PATH_CAP == len(set(listed))
    # each shared suffix named once: one row per node, the merge nodes summing two terms
    rows = [
        line.split("=")[0].strip()
        for line in text.split("from the output down, one step per node:\n")[1].splitlines()
    ]
    assert len(rows) == len(set(rows)) == 17  # v5, u1..u5, w1..w5, v0..v4, a
    assert "  dv5/dv2 = dv5/du3 * cos(v2) + dv5/dw3 * (-sin(v2))\n" in text
    assert text.endswith("  dv5/da  = dv5/dv0 * 1.5\n")


def test_no_path_means_zero() -> None:
    spec = parse_spec(
        "name: cut\ninputs: {a: [], b: []}\nnodes: {c: 2 * a}\nwrt: [a]\n", "cut.yaml"
    )
    assert explain_spec(spec, "b") == "dc/db = 0: no path from b to c carries a gradient.\n"


@pytest.mark.parametrize(
    ("example", "wrt", "message"),
    [
        (
            "seed_graph",
            "c",
            "--wrt 'c' is not an input or param of seed_graph.yaml: choose one of a, b",
        ),
        ("mlp", "nope", "--wrt 'nope' is not an input or param of mlp.yaml"),
        ("mlp", "y", "--wrt 'y' is an integer input (labels): it has no gradient"),
    ],
)
def test_bad_wrt_is_a_users_mistake(
    capsys: pytest.CaptureFixture[str], example: str, wrt: str, message: str
) -> None:
    code, out, err = run(capsys, str(EXAMPLES / f"{example}.yaml"), "--wrt", wrt)
    assert (code, out) == (2, "")
    assert err.startswith(f"symbackprop: {message}")


def test_bad_spec_is_reported_like_compile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: broken\ninputs: {a: []}\nnodes: {c: a +}\nwrt: [a]\n", encoding="utf-8")
    code, out, err = run(capsys, str(spec), "--wrt", "a")
    assert (code, out) == (2, "")
    assert err.startswith(f"symbackprop: {spec}:3:")
    assert "Traceback" not in err

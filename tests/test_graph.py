# ruff: noqa: E501  (the golden DOT text has long lines, as Graphviz reads them)
"""`symbackprop graph`: the forward and backward graph in DOT, and pictures through Graphviz."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from symbackprop import graphviz
from symbackprop.build import build_program
from symbackprop.cli import main
from symbackprop.spec import parse_spec
from tests.support import EXAMPLES, ROOT, example_spec

EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
SEED_GRAPH = str(EXAMPLES / "seed_graph.yaml")
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's `dot` is not installed")

SEED_DOT = r"""digraph "seed_graph" {
  graph [rankdir="TB", newrank="true", fontname="Helvetica", fontsize="14", labelloc="t", nodesep="0.25", ranksep="0.3", label="seed_graph: forward (left) and backward (right), from seed_graph.yaml"];
  node [shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10"];
  edge [fontname="Helvetica", fontsize="9", arrowsize="0.7"];
  subgraph "cluster_forward" {
    graph [label="forward: values, shapes and gate roles", style="rounded", color="#9ca3af"];
    "f:a" [label="a\ninput, scalar", fillcolor="#dbeafe"];
    "f:b" [label="b\ninput, scalar", fillcolor="#dbeafe"];
    "f:c" [label="c = a + b\nscalar\nadd gate: distributes the gradient", fillcolor="#f3f4f6"];
    "f:d" [label="d = b + 1\nscalar\nadd gate: distributes the gradient", fillcolor="#f3f4f6"];
    "f:e" [label="e = c * d\nscalar\nmultiply gate: swaps its inputs", fillcolor="#f3f4f6", penwidth="2"];
    "f:a" -> "f:c";
    "f:b" -> "f:c";
    "f:b" -> "f:d";
    "f:c" -> "f:e";
    "f:d" -> "f:e";
  }
  subgraph "cluster_backward" {
    graph [label="backward: de/d<value>, each edge its local derivative", style="rounded", color="#9ca3af"];
    "b:a" [label="de/da\n(a result)", fillcolor="#fee2e2", peripheries="2"];
    "b:b" [label="de/db\n(a result)", fillcolor="#fee2e2", peripheries="2"];
    "b:c" [label="de/dc", fillcolor="#fee2e2"];
    "b:d" [label="de/dd", fillcolor="#fee2e2"];
    "b:e" [label="de/de = 1\n(grad_output)", fillcolor="#fee2e2", penwidth="2"];
    "b:a" -> "b:c" [label="dc/da = 1", dir="back", color="#b91c1c"];
    "b:b" -> "b:c" [label="dc/db = 1", dir="back", color="#b91c1c"];
    "b:b" -> "b:d" [label="dd/db = 1", dir="back", color="#b91c1c"];
    "b:c" -> "b:e" [label="de/dc = d", dir="back", color="#b91c1c"];
    "b:d" -> "b:e" [label="de/dd = c", dir="back", color="#b91c1c"];
  }
  {rank=same; "f:a"; "b:a";}
  {rank=same; "f:b"; "b:b";}
  {rank=same; "f:c"; "b:c";}
  {rank=same; "f:d"; "b:d";}
  {rank=same; "f:e"; "b:e";}
}
"""


def dot_of(name: str) -> str:
    return graphviz.to_dot(build_program(example_spec(name)))


def test_seed_graph_dot_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", SEED_GRAPH]) == 0
    assert capsys.readouterr().out == SEED_DOT


def test_dot_file_is_the_same_text_and_the_only_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "seed.dot"
    assert main(["graph", SEED_GRAPH, "-o", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == SEED_DOT
    assert sorted(path.name for path in target.parent.iterdir()) == ["seed.dot"]


def test_gate_roles_follow_the_lecture() -> None:
    gates = dot_of("gates")
    assert "q = x + y\\nscalar\\nadd gate: distributes the gradient" in gates
    assert "f = q * z\\nscalar\\nmultiply gate: swaps its inputs" in gates
    assert "max gate: routes the gradient to\\nthe larger input" in gates
    mlp = dot_of("mlp")
    for role in ("matmul: swaps its inputs,", "relu activation:", "log_softmax"):
        assert role in mlp


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_backward_graph_has_one_node_per_adjoint(name: str) -> None:
    """A node for the output's seed, a double border for each result, an edge per step."""
    program = build_program(example_spec(name))
    dot = graphviz.to_dot(program)
    backward = dot.split('subgraph "cluster_backward"')[1]
    output = program.graph[program.output].name
    assert f'"b:{output}" [label="d{output}/d{output} = 1\\n(grad_output)"' in backward
    results = re.findall(r'"b:(\w+)" \[label="[^"]*\(a result\)"', backward)
    assert sorted(results) == sorted(symbol.name for symbol in program.wrt)
    assert re.findall(r'"f:(\w+)" \[', dot) == [node.name for node in program.graph.nodes]


@needs_dot
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_graphviz_reads_every_example(name: str) -> None:
    result = subprocess.run(
        ["dot", "-Tsvg"], input=dot_of(name), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert not result.stderr, result.stderr  # no warnings either


@needs_dot
def test_png_is_rendered_beside_its_dot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "seed.png"
    assert main(["graph", SEED_GRAPH, "-o", str(target)]) == 0
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / "seed.dot").read_text(encoding="utf-8") == SEED_DOT
    assert sorted(path.name for path in tmp_path.iterdir()) == ["seed.dot", "seed.png"]
    assert f"wrote {target}" in capsys.readouterr().out


def test_missing_graphviz_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(graphviz.shutil, "which", lambda name: None)
    target = tmp_path / "seed.svg"
    assert main(["graph", SEED_GRAPH, "-o", str(target)]) == graphviz.EXIT_NO_GRAPHVIZ == 3
    err = capsys.readouterr().err
    assert "Graphviz's `dot` program is not on PATH" in err
    assert "apt-get install graphviz" in err
    assert not target.exists()
    assert (tmp_path / "seed.dot").read_text(encoding="utf-8") == SEED_DOT  # DOT always


def test_failed_render_leaves_no_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = shutil.which("false")
    if failing is None:
        pytest.skip("no `false` program to stand in for a failing dot")
    monkeypatch.setattr(graphviz.shutil, "which", lambda name: failing)
    target = tmp_path / "seed.png"
    assert main(["graph", SEED_GRAPH, "-o", str(target)]) == 1
    assert "dot failed to render" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["seed.dot"]


def test_unknown_picture_format_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", SEED_GRAPH, "-o", str(tmp_path / "seed.jpg")]) == 2
    assert "give -o a .dot, .gv, .svg or .png file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_same_dot_under_any_hash_seed() -> None:
    """Fresh processes with different hash seeds print the DOT of the in-process run."""
    expected = dot_of("swish_regression")
    for seed in ("0", "1"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        result = subprocess.run(
            [sys.executable, "-m", "symbackprop", "graph", str(EXAMPLES / "swish_regression.yaml")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected, f"PYTHONHASHSEED={seed} changes the DOT"


def test_an_identity_layer_is_drawn_as_passing_the_gradient_on() -> None:
    spec = parse_spec(
        "name: ident\ninputs: {x: [batch, 4], y: [batch, 3]}\n"
        "layers: [{dense: 3, activation: identity}]\nloss: {mse: y}\n",
        "ident.yaml",
    )
    assert "h1 = s1\\n[batch, 3]\\nidentity: passes the gradient on" in graphviz.to_dot(
        build_program(spec)
    )

"""`symbackprop graph`: the forward and the backward graph side by side, in Graphviz DOT.

Left, the forward graph: every value of the compiled graph with its formula, shape and
gate role (an add distributes the gradient, a max routes it, a multiply swaps its
inputs). Right, the backward graph: one node per adjoint that reverse mode defines, its
edges labelled with the local derivative (or the tensor rule) the gradient is multiplied
by on the way back. Each adjoint sits on the row of its forward value.

DOT is written for every format: it is text, so it diffs in review. SVG and PNG are
rendered from it by Graphviz's `dot` program, when it is installed. The text depends only
on the graph's order (never on set or hash order), so it is the same on every run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from .build import Program, build_program
from .cli import EXIT_FAILED, EXIT_OK, writable_path, write_atomically
from .errors import SpecError
from .explain import Edge, GradientGraph, Notation, gate_role, gradient_graph
from .ir import Node, shape_text
from .spec import load_spec

DOT_SUFFIXES = (".dot", ".gv")
RENDERED_SUFFIXES = (".svg", ".png")
EXIT_NO_GRAPHVIZ = 3  # the picture needs Graphviz, which is not installed
LABEL_WIDTH = 34  # characters per label line before wrapping

_FILL = {"input": "#dbeafe", "param": "#fef3c7", "op": "#f3f4f6", "adjoint": "#fee2e2"}
_GRAPH_STYLE = {
    "graph": {
        "rankdir": "TB",
        "newrank": "true",  # lets a forward value and its adjoint share a row across clusters
        "fontname": "Helvetica",
        "fontsize": "14",
        "labelloc": "t",
        "nodesep": "0.25",
        "ranksep": "0.3",
    },
    "node": {"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "10"},
    "edge": {"fontname": "Helvetica", "fontsize": "9", "arrowsize": "0.7"},
}


def _quote(text: str) -> str:
    """A DOT string; `\\n` in `text` stays a DOT line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{key}={_quote(value)}" for key, value in attrs.items()) + "]"


def _wrap(*parts: str) -> str:
    """Label lines, each part wrapped at spaces (formulas are never cut mid-name)."""
    lines = []
    for part in parts:
        lines += textwrap.wrap(
            part, LABEL_WIDTH, break_long_words=False, break_on_hyphens=False
        ) or [""]
    return "\n".join(lines)


def _dims(node: Node) -> str:
    shape = node.type.shape
    return shape_text(shape) if shape else "scalar"


class _Dot:
    """Writes the DOT text of one program, in graph order."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.gradients: GradientGraph = gradient_graph(program)
        self.output = self.gradients.output
        self.notation = Notation(self.output.name)
        self.results = set(program.wrt)
        self.lines: list[str] = []

    def text(self) -> str:
        spec = self.program.spec
        title = f"{spec.name}: forward (left) and backward (right), from {spec.file_name}"
        self.lines = [f"digraph {_quote(spec.name)} {{"]
        for kind, style in _GRAPH_STYLE.items():
            extra = {"label": title} if kind == "graph" else {}
            self.lines.append(f"  {kind} {_attrs(**style, **extra)};")
        self._forward()
        self._backward()
        for node in self.gradients.nodes:  # each adjoint on the row of its value
            self.lines.append(f"  {{rank=same; {_quote(_fid(node))}; {_quote(_bid(node))};}}")
        self.lines.append("}")
        return "\n".join(self.lines) + "\n"

    def _cluster(self, name: str, label: str) -> None:
        self.lines.append(f"  subgraph {_quote('cluster_' + name)} {{")
        self.lines.append(f"    graph {_attrs(label=label, style='rounded', color='#9ca3af')};")

    def _forward(self) -> None:
        self._cluster("forward", "forward: values, shapes and gate roles")
        for node in self.program.graph.nodes:
            self.lines.append(f"    {_quote(_fid(node))} {_attrs(**self._forward_node(node))};")
        for node in self.program.graph.nodes:
            for operand in node.operands:
                self.lines.append(
                    f"    {_quote(_fid(self.program.graph[operand]))} -> {_quote(_fid(node))};"
                )
        self.lines.append("  }")

    def _forward_node(self, node: Node) -> dict[str, str]:
        if node.expr is None:
            label = _wrap(node.name, f"{node.kind}, {_dims(node)}")
        else:
            formula = f"{node.name} = {self.notation.math(node.expr)}"
            label = _wrap(formula, _dims(node), gate_role(node))
        attrs = {"label": label, "fillcolor": _FILL[node.kind]}
        if node is self.output:
            attrs["penwidth"] = "2"
        return attrs

    def _backward(self) -> None:
        out = self.output.name
        self._cluster("backward", f"backward: d{out}/d<value>, each edge its local derivative")
        for node in self.gradients.nodes:
            self.lines.append(f"    {_quote(_bid(node))} {_attrs(**self._backward_node(node))};")
        for edge in self.gradients.edges:
            # drawn from the operand's row up to the consumer's, so the rows match the
            # forward graph; the arrowhead at the operand shows the gradient flowing back
            attrs = {"label": self._edge_label(edge), "dir": "back", "color": "#b91c1c"}
            tail, head = _quote(_bid(edge.operand)), _quote(_bid(edge.consumer))
            self.lines.append(f"    {tail} -> {head} {_attrs(**attrs)};")
        self.lines.append("  }")

    def _backward_node(self, node: Node) -> dict[str, str]:
        name = self.notation.partial(self.output.name, node.name)
        attrs = {"label": name, "fillcolor": _FILL["adjoint"]}
        if node is self.output:
            attrs["label"] = f"{name} = 1\n(grad_output)"
            attrs["penwidth"] = "2"
        elif node.symbol in self.results:
            attrs["label"] = f"{name}\n(a result)"
            attrs["peripheries"] = "2"
        return attrs

    def _edge_label(self, edge: Edge) -> str:
        if edge.local is None:
            return _wrap(self.notation.rule(edge))
        local = self.notation.partial(edge.consumer.name, edge.operand.name)
        label = f"{local} = {self.notation.math(edge.local)}"
        if edge.summed:
            return _wrap(label, f"summed over axis {', '.join(map(str, edge.summed))}")
        return _wrap(label)


def _fid(node: Node) -> str:
    return f"f:{node.name}"


def _bid(node: Node) -> str:
    return f"b:{node.name}"


def to_dot(program: Program) -> str:
    """The DOT text of a program's forward and backward graph."""
    return _Dot(program).text()


def _render(
    binary: str, dot_text: str, path: Path, target: Path
) -> subprocess.CompletedProcess[str]:
    """Render `path` (written to `target`, the file it names: `writable_path`) with
    Graphviz into a scratch directory beside it, then rename: a failed render leaves no
    half-written picture."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as scratch:
        rendered = Path(scratch) / target.name
        command = [binary, f"-T{path.suffix[1:].lower()}", "-o", str(rendered)]
        result = subprocess.run(
            command, input=dot_text, text=True, capture_output=True, check=False
        )
        if result.returncode == 0:
            os.replace(rendered, target)
    return result


def run(args: argparse.Namespace) -> int:
    dot_text = to_dot(build_program(load_spec(args.spec)))
    if args.output is None:
        sys.stdout.write(dot_text)
        return EXIT_OK
    path = Path(args.output)
    suffix = path.suffix.lower()
    if suffix not in DOT_SUFFIXES + RENDERED_SUFFIXES:
        raise SpecError(f"cannot write {path}: give -o a .dot, .gv, .svg or .png file")
    dot_path = path if suffix in DOT_SUFFIXES else path.with_suffix(".dot")
    target = writable_path(path)  # a folder there is refused before the .dot is written
    write_atomically(dot_path, dot_text)
    print(f"wrote {dot_path}")
    if dot_path == path:
        return EXIT_OK
    binary = shutil.which("dot")
    if binary is None:
        print(
            f"symbackprop: cannot render {path}: Graphviz's `dot` program is not on PATH.\n"
            "  Install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
            f"graphviz),\n  or render it elsewhere: dot -T{suffix[1:]} {dot_path} -o {path}",
            file=sys.stderr,
        )
        return EXIT_NO_GRAPHVIZ
    result = _render(binary, dot_text, path, target)
    if result.returncode != 0:
        print(
            f"symbackprop: dot failed to render {path}:\n{result.stderr.strip()}", file=sys.stderr
        )
        return EXIT_FAILED
    print(f"wrote {path}")
    return EXIT_OK

"""`symbackprop explain`: the derivation of one gradient, as the lectures teach it.

The chain rule is a sum over the paths from a leaf to the output, each path the product
of the local derivatives along it (seed 002: de/db = de/dc * dc/db + de/dd * dd/db).
Everything here comes from the compiler's own structures: the graph of
`build.build_program`, the adjoints that `reverse.reverse_mode` defines, SymPy's `diff`
for elementwise local derivatives and each tensor op's own `adjoint` rule (ops.py).

Paths multiply in number with depth, and on tensors a local derivative is a rule (a
vector-Jacobian product such as `h1^T @ dL/ds2`) rather than a factor. Then the
derivation is factored as reverse mode factors it: each d<output>/d<node> is named once
and reused by every path through that node. The output says which form it uses.

This module also holds what `symbackprop graph` draws (graphviz.py): the gradient graph
(`gradient_graph`), the gate role of each node (`gate_role`) and the math printer.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from . import functions as fn
from . import ops
from .build import Program, build_program
from .errors import SpecError
from .ir import Graph, Node, reduced_axes
from .printer import MathPrinter
from .reverse import adjoint_symbol, reverse_mode
from .spec import FLOAT_DTYPES, Spec, load_spec

_MUL = PRECEDENCE["Mul"]
# More paths than this are not listed one by one: the derivation is factored instead.
PATH_CAP = 16


# --- the gradient graph: nodes that get an adjoint, and the local derivative of each edge


class Adjoint(sp.Symbol):
    """d<output>/d<node> inside printed math: a class of its own, so that it never equals
    a spec name such as `d_x`."""


@dataclass(frozen=True, eq=False)  # compared and hashed by identity, as graph nodes are
class Edge:
    """How the gradient goes back from `consumer` to one of its inputs, `operand`."""

    consumer: Node
    operand: Node
    local: sp.Expr | None  # d consumer / d operand for elementwise math; None for a tensor rule
    summed: tuple[int, ...]  # axes of the consumer the operand was broadcast along
    rule: sp.Expr  # the operand's share of its adjoint, written over Adjoint(consumer)
    note: str  # a tensor op's own note (`dL/dt_s2_0 @ W2^T`); "" for elementwise math

    @property
    def is_factor(self) -> bool:
        """A plain factor of a path product: elementwise and not summed over broadcasting."""
        return self.local is not None and not self.summed


@dataclass(frozen=True)
class GradientGraph:
    program: Program
    nodes: tuple[Node, ...]  # the nodes that get an adjoint, in graph order, the output included
    edges: tuple[Edge, ...]  # between those nodes, by consumer in graph order

    @property
    def output(self) -> Node:
        return self.program.graph[self.program.output]

    def edges_from(self, node: Node) -> list[Edge]:
        return [edge for edge in self.edges if edge.operand is node]


def local_edges(graph: Graph, node: Node) -> list[Edge]:
    """The edges back from op `node` to its operands; none where the derivative is 0."""
    d = Adjoint(node.name, real=True)
    if isinstance(node.expr, ops.TensorOp):
        op = node.expr
        rules = op.adjoint(ops.AdjointContext(op, node.symbol, d, graph.type_of))
        return [
            Edge(node, graph[operand], None, (), rule[0], rule[1])
            for operand, rule in zip(op.tensor_args, rules, strict=True)
            if rule is not None
        ]
    edges = []
    for operand in node.operands:
        # as reverse mode does: the node's own symbol stands for its saved forward value
        local = sp.diff(node.expr, operand).xreplace({node.expr: node.symbol})
        if local == 0:
            continue
        lead, kept = reduced_axes(graph.type_of(operand).shape, node.type.shape)
        edges.append(Edge(node, graph[operand], local, lead + kept, d * local, ""))
    return edges


def gradient_graph(program: Program) -> GradientGraph:
    """The backward graph of `program`: exactly the adjoints its reverse mode defines."""
    graph = program.graph
    defined = {statement.target for statement in reverse_mode(program).statements}
    nodes = tuple(
        node
        for node in graph.nodes
        if node.symbol == program.output or adjoint_symbol(node.symbol) in defined
    )
    kept = {node.symbol for node in nodes}
    edges = tuple(
        edge
        for node in nodes
        if node.kind == "op"
        for edge in local_edges(graph, node)
        if edge.operand.symbol in kept
    )
    return GradientGraph(program, nodes, edges)


# --- gate roles: what a node does to the gradient that passes through it ----------------

_ACTIVATIONS = (fn.Sigmoid, sp.tanh, fn.Softplus)
_TENSOR_ROLES: dict[type, str] = {
    ops.MatrixProduct: "matmul: swaps its inputs, transposed",
    ops.Transposed: "transpose: transposes the gradient",
    ops.ReduceSum: "sum: copies the gradient back to every element",
    ops.ReduceMean: "mean: copies the gradient back, divided by n",
    ops.ReduceMax: "max gate: routes the gradient to the maxima",
    ops.LogSumExp: "logsumexp: spreads the gradient by softmax",
    ops.Softmax: "softmax activation",
    ops.LogSoftmax: "log_softmax",
    ops.NegLogLikelihood: "negative log-likelihood: -1/n at each label",
    ops.Fill: "fill: sums the gradient back to the value's shape",
}


def function_name(func: type) -> str:
    """The formula language's name of an elementwise SymPy function (`sigmoid`, `log1p`)."""
    for name, entry in fn.ELEMENTWISE.items():
        if entry.build is func:
            return name
    return func.__name__.lower()


def gate_role(node: Node) -> str:
    """The node's role in the backward pass, in the lecture's words where they apply."""
    expr = node.expr
    if expr is None:
        return node.kind
    if isinstance(expr, ops.TensorOp):
        return _TENSOR_ROLES.get(type(expr), function_name(type(expr)))
    if isinstance(expr, sp.Symbol):
        return "identity: passes the gradient on"
    if isinstance(expr, sp.Add):
        return "add gate: distributes the gradient"
    if isinstance(expr, sp.Mul):
        return _multiply_role(expr)
    if isinstance(expr, fn.Maximum):
        return "max gate: routes the gradient to the larger input"
    if isinstance(expr, fn.Minimum):
        return "min gate: routes the gradient to the smaller input"
    if isinstance(expr, fn.Relu):
        return "relu activation: routes the gradient where the input is positive"
    if isinstance(expr, fn.LeakyRelu):
        return "leaky_relu activation: scales the gradient where the input is negative"
    if isinstance(expr, _ACTIVATIONS):
        return f"{function_name(expr.func)} activation"
    if isinstance(expr, sp.Function) and len(expr.free_symbols) == 1:
        return function_name(expr.func)
    if isinstance(expr, sp.Pow):
        return "power"
    return "elementwise: derivative by SymPy"


def _multiply_role(expr: sp.Mul) -> str:
    factors = expr.args
    if len(factors) >= 2 and all(isinstance(f, sp.Symbol) for f in factors):
        if len(set(factors)) == len(factors):
            return "multiply gate: swaps its inputs"
    numbers = [f for f in factors if f.is_Number]
    if len(factors) == 2 and len(numbers) == 1:
        return "scale: multiplies the gradient by a constant"
    return "elementwise: derivative by SymPy"


# --- printing: plain text for terminals and graphs, LaTeX through SymPy's printer -------


def _op_name(op: ops.TensorOp) -> str:
    if op.language_name:
        return op.language_name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(op).__name__).lower()  # BroadcastTo: broadcast_to


def _op_keywords(op: ops.TensorOp) -> list[tuple[str, Any]]:
    """The attributes of a tensor op as keyword arguments, as a spec would write them."""
    attrs = op.attrs
    if isinstance(op, ops.Reduction):
        axes, keepdims = attrs
        keywords = [] if axes is None else [("axis", axes)]
        return keywords + ([("keepdims", True)] if keepdims else [])
    if isinstance(op, ops.SumTo):
        lead, kept = attrs
        return [("axis", lead + kept)]
    if isinstance(op, (ops.Softmax, ops.LogSoftmax, ops.ExpandDims)):
        return [("axis", attrs[0])]
    if isinstance(op, ops.Count) and attrs[0] is not None:
        return [("axis", attrs[0])]
    if isinstance(op, ops.NegLogLikelihood):
        return [("reduction", attrs[0])]
    return []


def _keyword_value(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 1:
        return repr(value[0])
    return repr(value)


class _Printing:
    """What both printers share: tensor ops printed by hand (never through the NumPy text
    the printers would otherwise reach), and parentheses by precedence."""

    parens = ("(", ")")

    def _print(self, expr: Any, **kwargs: Any) -> str:
        if isinstance(expr, ops.TensorOp):
            return self._tensor_op(expr)
        return super()._print(expr, **kwargs)  # type: ignore[misc]

    def group(self, expr: sp.Basic, level: int, strict: bool = False) -> str:
        """`expr`, in parentheses when it binds looser than `level` (or as loose, if strict)."""
        text = self._print(expr)
        looser = precedence(expr) < level or (strict and precedence(expr) == level)
        return f"{self.parens[0]}{text}{self.parens[1]}" if looser else text

    def _tensor_op(self, op: ops.TensorOp) -> str:
        raise NotImplementedError


class TextPrinter(_Printing, MathPrinter):
    """Math as plain text: the compiler's comment printer, with adjoints written
    d<output>/d<node> and tensor ops written as a spec writes them (`x @ W1`, `mean(t)`)."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self.output = output

    def _print_Adjoint(self, expr: Adjoint) -> str:
        return f"d{self.output}/d{expr.name}"

    def _tensor_op(self, op: ops.TensorOp) -> str:
        args = op.tensor_args
        if isinstance(op, ops.MatrixProduct):
            left, right = args
            return f"{self.group(left, _MUL)} @ {self.group(right, _MUL, strict=True)}"
        if isinstance(op, ops.Transposed):
            return self.group(args[0], PRECEDENCE["Atom"]) + "^T"
        parts = [self._print(arg) for arg in args]
        parts += [f"{key}={_keyword_value(value)}" for key, value in _op_keywords(op)]
        return f"{_op_name(op)}({', '.join(parts)})"


_LATEX_FUNCTIONS: dict[type, str] = {
    fn.Sigmoid: r"\sigma",
    fn.Maximum: r"\max",
    fn.Minimum: r"\min",
}


class LatexText(_Printing, LatexPrinter):
    """SymPy's LaTeX printer, taught our names, functions, tensor ops and adjoints."""

    parens = (r"\left(", r"\right)")

    def __init__(self, output: str) -> None:
        super().__init__({"mul_symbol": "dot"})
        self.output = output

    def _print(self, expr: Any, **kwargs: Any) -> str:
        if isinstance(expr, fn.Elementwise):
            return self._elementwise(expr)
        return super()._print(expr, **kwargs)

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        return latex_name(expr.name)

    def _print_Adjoint(self, expr: Adjoint) -> str:
        return latex_partial(self.output, expr.name)

    def _elementwise(self, expr: fn.Elementwise) -> str:
        args = expr.args
        if isinstance(expr, fn.Step):
            return rf"\left[{self._print(args[0])} > 0\right]"
        if isinstance(expr, fn.Sqrt):
            return rf"\sqrt{{{self._print(args[0])}}}"
        name = _LATEX_FUNCTIONS.get(
            type(expr), rf"\operatorname{{{_latex_escape(function_name(expr.func))}}}"
        )
        return rf"{name}\left({', '.join(self._print(arg) for arg in args)}\right)"

    def _tensor_op(self, op: ops.TensorOp) -> str:
        args = op.tensor_args
        if isinstance(op, (ops.MatrixProduct, ops.Outer)):
            joint = " " if isinstance(op, ops.MatrixProduct) else r" \otimes "
            return joint.join(self.group(arg, _MUL, strict=True) for arg in args)
        if isinstance(op, ops.Transposed):
            return self.group(args[0], PRECEDENCE["Atom"]) + "^{T}"
        parts = [self._print(arg) for arg in args]
        parts += [
            rf"\mathrm{{{key}}}="
            + (rf"\text{{{value}}}" if isinstance(value, str) else _keyword_value(value))
            for key, value in _op_keywords(op)
        ]
        name = _latex_escape(_op_name(op))
        return rf"\operatorname{{{name}}}\left({', '.join(parts)}\right)"


def _latex_escape(text: str) -> str:
    return text.replace("_", r"\_")


def latex_name(name: str) -> str:
    """`x`, `s_{1}`, `W_{2}` for a letter and digits; `\\mathrm{t\\_s1\\_0}` for the rest."""
    match = re.fullmatch(r"([A-Za-z])(\d*)", name)
    if match:
        letter, digits = match.groups()
        return f"{letter}_{{{digits}}}" if digits else letter
    return rf"\mathrm{{{_latex_escape(name)}}}"


def latex_partial(top: str, bottom: str) -> str:
    return rf"\frac{{\partial {latex_name(top)}}}{{\partial {latex_name(bottom)}}}"


# --- notations: one derivation, written as text or as LaTeX ------------------------------


@dataclass(frozen=True)
class Row:
    left: str
    right: str
    note: str = ""


@dataclass(frozen=True)
class Block:
    title: str
    rows: tuple[Row, ...]
    relation: str = "="  # between left and right: "=" for equations, ":" for paths


class Notation:
    """Plain text: `de/db = de/dc * dc/db`, blocks of aligned rows."""

    times = " * "
    plus = " + "
    arrow = " -> "

    def __init__(self, output: str) -> None:
        self.printer: TextPrinter | LatexText = TextPrinter(output)
        self.output = output

    def partial(self, top: str, bottom: str) -> str:
        return f"d{top}/d{bottom}"

    def math(self, expr: sp.Basic) -> str:
        return self.printer.doprint(expr)

    def factor(self, expr: sp.Basic) -> str:
        return self.printer.group(expr, _MUL)

    def summed(self, text: str, axes: tuple[int, ...]) -> str:
        return f"sum over axis {_axes_text(axes)} of ({text})"

    def rule(self, edge: Edge) -> str:
        """A tensor op's rule, in the op's own words (the note of the generated comment)."""
        return edge.note.replace("dL/d", f"d{self.output}/d")

    def name(self, name: str) -> str:
        return name

    def render(self, intro: list[str], blocks: list[Block]) -> str:
        lines = list(intro)
        for block in blocks:
            lines += ["", f"{block.title}:"] if block.title else [""]
            width = max(len(row.left) for row in block.rows)
            right_width = max(len(row.right) for row in block.rows)
            for row in block.rows:
                text = f"  {row.left.ljust(width)} {block.relation} {row.right}"
                if not row.right:
                    text = f"  {row.left}"
                elif block.relation == ":":
                    text = f"  {(row.left + ':').ljust(width + 1)}  {row.right}"
                if row.note:
                    text = f"{text.ljust(width + right_width + 5)}    {row.note}"
                lines.append(text.rstrip())
        return "\n".join(lines) + "\n"


class LatexNotation(Notation):
    r"""LaTeX for an `amsmath` document: `\frac{\partial e}{\partial b} = ...` in align*."""

    times = r" \cdot "
    arrow = r" \to "

    def __init__(self, output: str) -> None:
        super().__init__(output)
        self.printer = LatexText(output)

    def partial(self, top: str, bottom: str) -> str:
        return latex_partial(top, bottom)

    def summed(self, text: str, axes: tuple[int, ...]) -> str:
        return rf"\sum_{{\mathrm{{axis}}\ {_axes_text(axes)}}} \left({text}\right)"

    def rule(self, edge: Edge) -> str:
        return self.math(edge.rule)

    def name(self, name: str) -> str:
        return latex_name(name)

    def render(self, intro: list[str], blocks: list[Block]) -> str:
        lines = [f"% {line}" if line else "%" for line in intro]
        for block in blocks:
            lines += ["", f"% {block.title}", r"\begin{align*}"]
            for index, row in enumerate(block.rows):
                relation = "&=" if block.relation == "=" else r"&:\quad"
                text = f"{row.left} {relation} {row.right}" if row.right else row.left
                if row.note:
                    text += rf" && \text{{{_latex_escape(row.note)}}}"
                lines.append(text + (r" \\" if index < len(block.rows) - 1 else ""))
            lines.append(r"\end{align*}")
        return "\n".join(lines) + "\n"


def _axes_text(axes: tuple[int, ...]) -> str:
    return ", ".join(str(axis) for axis in axes)


# --- the derivation ------------------------------------------------------------------------


def count_paths(gradients: GradientGraph, start: Node) -> int:
    """Paths from `start` to the output, by dynamic programming (never enumerated)."""
    paths = {gradients.output.symbol: 1}
    for node in reversed(gradients.nodes):
        if node.symbol != gradients.output.symbol:
            paths[node.symbol] = sum(
                paths[edge.consumer.symbol] for edge in gradients.edges_from(node)
            )
    return paths.get(start.symbol, 0)


def first_paths(gradients: GradientGraph, start: Node, cap: int) -> list[tuple[Edge, ...]]:
    """Up to `cap` paths from `start` to the output, each a tuple of edges, depth first."""
    found: list[tuple[Edge, ...]] = []
    stack: list[tuple[Node, tuple[Edge, ...]]] = [(start, ())]
    while stack and len(found) < cap:
        node, path = stack.pop()
        if node.symbol == gradients.output.symbol:
            found.append(path)
            continue
        for edge in reversed(gradients.edges_from(node)):
            stack.append((edge.consumer, path + (edge,)))
    return found


class Derivation:
    """The blocks of the explanation of d<output>/d<target>, in one notation."""

    def __init__(
        self, gradients: GradientGraph, target: Node, notation: Notation, cap: int = PATH_CAP
    ):
        self.gradients = gradients
        self.target = target
        self.notation = notation
        self.output = gradients.output
        self.count = count_paths(gradients, target)
        self.paths = first_paths(gradients, target, cap)
        self.cap = cap
        self.expanded = self.count <= cap and all(edge.is_factor for edge in gradients.edges)

    def text(self) -> str:
        n = self.notation
        goal = n.partial(self.output.name, self.target.name)
        if not self.count:
            where = f"from {self.target.name} to {self.output.name}"
            intro = [f"{self._plain_goal()} = 0: no path {where} carries a gradient."]
            return n.render(intro, [])
        blocks = [self._forward_block(), self._paths_block()]
        if self.expanded:
            blocks.insert(1, self._locals_block())
            blocks.append(self._sum_block(goal))
        else:
            blocks.append(self._factored_block())
        return n.render(self._intro(), blocks)

    def _plain_goal(self) -> str:
        return f"d{self.output.name}/d{self.target.name}"

    def _intro(self) -> list[str]:
        spec = self.gradients.program.spec.name
        plural = "path" if self.count == 1 else "paths"
        text = (
            f"{self._plain_goal()} in {spec}, by the chain rule: the sum over the {self.count} "
            f"{plural} from {self.target.name} to {self.output.name}, each path the product of the "
            "local derivatives along it."
        )
        if self.count > self.cap:
            text += (
                f" {self.count} paths are more than {self.cap}: the first {self.cap} are listed,"
            )
            text += " and"
        elif not self.expanded:
            text += " Some local derivatives on these paths are tensor rules (matmul, reductions,"
            text += " broadcasting), not plain factors, so"
        if not self.expanded:
            text += (
                " the shared suffixes are factored as reverse mode factors them: each "
                f"d{self.output.name}/d<node> is named once, from the output down, and reused by "
                "every path through that node."
            )
        return textwrap.wrap(text, width=88)

    def _forward_block(self) -> Block:
        n = self.notation
        rows = tuple(
            Row(n.name(node.name), n.math(node.expr), gate_role(node))
            for node in self.gradients.nodes
            if node.kind == "op"
        )
        return Block("forward, with each node's gate role", rows)

    def _locals_block(self) -> Block:
        n = self.notation
        edges = list(dict.fromkeys(edge for path in self.paths for edge in path))
        edges.sort(key=lambda edge: (edge.consumer.index, edge.operand.index))
        rows = tuple(Row(self._local_name(edge), n.math(edge.local)) for edge in edges)
        return Block("local derivatives, one per edge", rows)

    def _local_name(self, edge: Edge) -> str:
        return self.notation.partial(edge.consumer.name, edge.operand.name)

    def _paths_block(self) -> Block:
        n = self.notation
        rows = []
        for path in self.paths:
            chain = n.arrow.join(
                n.name(node.name) for node in [self.target, *(e.consumer for e in path)]
            )
            product = (
                n.times.join(self._local_name(edge) for edge in reversed(path))
                if self.expanded
                else ""
            )
            rows.append(Row(chain, product))
        title = f"paths from {self.target.name} to {self.output.name}"
        if self.count > len(self.paths):
            title += f" (the first {len(self.paths)} of {self.count})"
        return Block(title, tuple(rows), relation=":" if self.expanded else "")

    def total(self) -> sp.Expr:
        """The derivative summed over the listed paths, over saved values (expanded form)."""
        return sp.Add(*(sp.Mul(*(edge.local for edge in path)) for path in self.paths))

    def _sum_block(self, goal: str) -> Block:
        n = self.notation
        by_name = n.plus.join(
            n.times.join(self._local_name(e) for e in reversed(path)) for path in self.paths
        )
        by_value = n.plus.join(
            n.times.join(n.factor(e.local) for e in reversed(path)) for path in self.paths
        )
        total = self.total()
        rows = [Row(goal, by_name)] if by_name != goal else []
        rows.append(Row("" if rows else goal, by_value))
        if n.math(total) != by_value:
            rows.append(Row("", n.math(total)))
        return Block("the chain rule, summed over the paths", tuple(rows))

    def _factored_block(self) -> Block:
        n = self.notation
        rows = [Row(n.partial(self.output.name, self.output.name), "1")]
        for node in reversed(self.gradients.nodes):
            if node is self.output:
                continue
            terms = [self._term(edge) for edge in self.gradients.edges_from(node)]
            rows.append(Row(n.partial(self.output.name, node.name), n.plus.join(terms)))
        return Block("from the output down, one step per node", tuple(rows))

    def _term(self, edge: Edge) -> str:
        n = self.notation
        if edge.local is None:
            return n.rule(edge)
        incoming = n.math(Adjoint(edge.consumer.name, real=True))
        text = f"{incoming}{n.times}{n.factor(edge.local)}"
        return n.summed(text, edge.summed) if edge.summed else text


def _check_target(spec: Spec, name: str) -> None:
    floats = [item.name for item in spec.inputs if item.dtype in FLOAT_DTYPES]
    leaves = floats + [param.name for param in spec.params]
    if name in leaves:
        return
    if any(item.name == name for item in spec.inputs):
        raise SpecError(f"--wrt {name!r} is an integer input (labels): it has no gradient")
    raise SpecError(
        f"--wrt {name!r} is not an input or param of {spec.file_name}: "
        f"choose one of {', '.join(leaves)}"
    )


def derivation(spec: Spec, name: str, latex: bool = False) -> Derivation:
    """The derivation of d<output>/d<name>, `name` an input or param of `spec`."""
    _check_target(spec, name)
    program = build_program(dataclasses.replace(spec, wrt=(name,)))
    output = program.graph[program.output].name
    notation = LatexNotation(output) if latex else Notation(output)
    return Derivation(gradient_graph(program), program.graph[program.wrt[0]], notation)


def explain_spec(spec: Spec, name: str, latex: bool = False) -> str:
    """What `symbackprop explain SPEC --wrt NAME [--latex]` prints."""
    return derivation(spec, name, latex).text()


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(explain_spec(load_spec(args.spec), args.wrt, args.latex))
    return 0

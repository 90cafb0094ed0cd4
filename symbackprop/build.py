"""Spec -> tensor graph: parse every formula, order the nodes, lower each formula.

Elementwise sub-formulas are fused into one SymPy expression; each tensor op (matmul,
a reduction, softmax, ...) becomes a node of its own, named `t_<node>_<k>` when the
spec did not name it. Shapes and dtypes are checked here, at compile time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy as sp

from . import formula as fm
from .errors import Loc, SpecError
from .functions import ELEMENTWISE, as_real, finite_real
from .ir import Graph, Node, TensorType, broadcast_shapes, shape_text, symbol
from .naming import Namer
from .ops import (
    LANGUAGE_OPS,
    Fill,
    LogSoftmax,
    MatrixProduct,
    NegLogLikelihood,
    ReduceMean,
    ReduceSum,
    ShapeError,
    TensorOp,
    float_dtype,
)
from .spec import NodeSpec, Spec, code_name


@dataclass(frozen=True)
class Val:
    """A lowered term: its SymPy expression over graph symbols, and its type."""

    expr: sp.Expr
    type: TensorType
    sources: tuple[sp.Symbol, ...] = ()  # tensors whose shapes make up this value's shape


@dataclass
class Program:
    """What the builder hands on: the graph plus the spec-level facts emission needs."""

    spec: Spec
    graph: Graph
    output: sp.Symbol
    wrt: tuple[sp.Symbol, ...]
    predict: sp.Symbol | None


_ELEMENTWISE_BINOPS: dict[str, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a**b,
}

_CONSTANTS = {"pi": sp.pi, "e": sp.E}


class _NodeLowering:
    """Lowers the formula of one spec node into graph nodes."""

    def __init__(self, builder: Builder, spec_node: NodeSpec):
        self.builder = builder
        self.graph = builder.graph
        self.owner = spec_node.name
        self.aliases = dict(spec_node.aliases)

    def fail(self, message: str, loc: Loc) -> SpecError:
        return SpecError(message, loc, self.owner)

    def lower(self, term: fm.Term) -> Val:
        method: Callable[[Any], Val] = getattr(self, "_lower_" + type(term).__name__)
        return method(term)

    def _lower_Num(self, term: fm.Num) -> Val:
        value = sp.Integer(term.value) if isinstance(term.value, int) else sp.Float(term.value)
        return Val(value, TensorType((), "const"))

    def _lower_Text(self, term: fm.Text) -> Val:
        raise self.fail('a string is only allowed as `reduction="mean"` or `"sum"`', term.loc)

    def _lower_Seq(self, term: fm.Seq) -> Val:
        raise self.fail("a tuple is only allowed as `axis=`", term.loc)

    def _lower_Ref(self, term: fm.Ref) -> Val:
        name = self.aliases.get(term.name, term.name)
        if name in self.builder.symbols:
            sym = self.builder.symbols[name]
            return Val(sym, self.graph.type_of(sym), (sym,))
        if name in _CONSTANTS:
            return Val(_CONSTANTS[name], TensorType((), "const"))
        if name in self.builder.pending:
            raise self.fail(f"{name!r} is used before it is computed", term.loc)
        if name in ("True", "False"):
            raise self.fail(f"the constant {name} is not a number", term.loc)
        raise self.fail(f"unknown name {name!r}", term.loc)

    def _lower_Neg(self, term: fm.Neg) -> Val:
        operand = self.lower(term.operand)
        self._check_float([operand], "unary -", term.loc)
        return Val(-operand.expr, operand.type, operand.sources)

    def _lower_BinOp(self, term: fm.BinOp) -> Val:
        spine = fm.left_spine(term)
        value = self.lower(spine[-1].left)
        for binop in reversed(spine):
            right = self.lower(binop.right)
            if binop.op == "@":
                value = self._tensor_op(MatrixProduct, [value, right], (), binop.loc)
            else:
                op = _ELEMENTWISE_BINOPS[binop.op]
                value = self._elementwise(op, [value, right], binop.op, binop.loc)
        return value

    def _lower_Call(self, term: fm.Call) -> Val:
        if term.func in ELEMENTWISE:
            return self._call_elementwise(term)
        if term.func in LANGUAGE_OPS:
            op = LANGUAGE_OPS[term.func]
            args = self._positional(term, 1, by_name=tuple(op.keywords))
            keywords = self._keywords(term, op.keywords)
            return self._tensor_op(op, args, keywords, term.loc)
        if term.func in _LOSSES:
            return _LOSSES[term.func](self, term)
        raise self.fail(f"unknown function {term.func!r}", term.loc)

    # --- helpers -----------------------------------------------------------------------

    def _positional(self, term: fm.Call, count: int, by_name: tuple[str, ...] = ()) -> list[Val]:
        """The `count` tensor arguments; `by_name`, the op's keywords, which go by name only
        (`sum(x, 1)` is refused: say `sum(x, axis=1)`)."""
        if len(term.args) != count:
            message = f"{term.func} takes {count} argument(s), not {len(term.args)}"
            if by_name and len(term.args) > count:  # as NumPy's np.sum(x, 1)
                example = ", ".join(f"{key}=..." for key in by_name)
                message += f"; the rest go by name: {term.func}(x, {example})"
            raise self.fail(message, term.loc)
        return [self.lower(arg) for arg in term.args]

    def _keywords(self, term: fm.Call, allowed: dict[str, Any]) -> dict[str, Any]:
        values = dict(allowed)
        for key, value in term.kwargs:
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                raise self.fail(f"{term.func} has no argument {key!r} (known: {known})", term.loc)
            values[key] = self._constant(value, key)
        return values

    def _constant(self, term: fm.Term, what: str) -> Any:
        if isinstance(term, fm.Num):
            return term.value
        if isinstance(term, fm.Text):
            return term.value
        if isinstance(term, fm.Seq) and all(isinstance(item, fm.Num) for item in term.items):
            return tuple(item.value for item in term.items)  # type: ignore[union-attr]
        if isinstance(term, fm.Ref) and term.name == "None":
            return None
        if isinstance(term, fm.Ref) and term.name in ("True", "False"):
            raise self.fail(f"{what} cannot be {term.name}", term.loc)
        raise self.fail(f"{what} must be a constant", term.loc)

    def _check_float(self, vals: list[Val], what: str, loc: Loc) -> str:
        try:
            return float_dtype([val.type for val in vals], what)
        except ShapeError as err:
            raise self.fail(str(err), loc) from None

    def _elementwise(
        self, build: Callable[..., sp.Expr], vals: list[Val], what: str, loc: Loc
    ) -> Val:
        dtype = self._check_float(vals, what, loc)
        shape = broadcast_shapes(*(val.type.shape for val in vals))
        if shape is None:
            shapes = " and ".join(shape_text(val.type.shape) for val in vals)
            raise self.fail(f"cannot broadcast shapes {shapes} in {what}", loc)
        try:
            expr = as_real(build(*(val.expr for val in vals)))
        except (ZeroDivisionError, OverflowError, ValueError, TypeError) as err:
            raise self.fail(f"cannot build {what}: {err}", loc) from None
        if not finite_real(expr):
            raise self.fail(f"{what} of these constants is not a finite real number", loc)
        sources = tuple(dict.fromkeys(s for val in vals for s in val.sources))
        return Val(expr, TensorType(shape, dtype), sources)

    def _call_elementwise(self, term: fm.Call) -> Val:
        spec = ELEMENTWISE[term.func]
        most = spec.tensor_args + len(spec.const_args)
        if term.kwargs:
            message = f"{term.func} has no argument {term.kwargs[0][0]!r}"
            if spec.const_args:  # leaky_relu(x, slope=0.2): the slope goes by position
                usage = ", ".join(["x"] * spec.tensor_args + [str(c) for c in spec.const_args])
                message += f"; its arguments go by position: {term.func}({usage})"
            raise self.fail(message, term.loc)
        if not spec.tensor_args <= len(term.args) <= most:
            counts = " or ".join(map(str, range(spec.tensor_args, most + 1)))
            raise self.fail(
                f"{term.func} takes {counts} argument(s), not {len(term.args)}", term.loc
            )
        tensors = [self.lower(arg) for arg in term.args[: spec.tensor_args]]
        if spec.domain is not None and tensors[0].expr.is_number:
            value = complex(sp.N(tensors[0].expr))
            if value.imag or not spec.domain(value.real):
                raise self.fail(f"{term.func} of a constant needs it {spec.domain_text}", term.loc)
        constants = list(spec.const_args)
        for index, arg in enumerate(term.args[spec.tensor_args :]):
            if not isinstance(arg, fm.Num):
                raise self.fail(
                    f"argument {spec.tensor_args + index + 1} of {term.func} must be a number",
                    arg.loc,
                )
            constants[index] = arg.value
        if term.func == "leaky_relu" and not 0 <= constants[0] < 1:
            raise self.fail("the slope of leaky_relu must be in [0, 1)", term.loc)

        def build(*exprs: sp.Expr) -> sp.Expr:
            return spec.build(
                *exprs, *(sp.Float(c) if isinstance(c, float) else sp.Integer(c) for c in constants)
            )

        return self._elementwise(build, tensors, term.func, term.loc)

    def materialize(self, val: Val, loc: Loc) -> sp.Symbol:
        """A graph symbol holding `val` (a new anonymous node unless it is one already)."""
        lost = _shape_lost(self.graph, val)  # `w + 0 * x` is the symbol w, but x's shape
        if isinstance(val.expr, sp.Symbol) and val.expr in self.graph.by_symbol and not lost:
            return val.expr
        if val.type.dtype == "const":
            raise self.fail("this argument must be a tensor, not a constant", loc)
        expr = _filled(self, val, loc) if lost else val.expr
        return self.builder.add_op(self.owner, expr, val.type, loc, anonymous=True).symbol

    def _tensor_op(self, op: type[TensorOp], vals: list[Val], keywords: Any, loc: Loc) -> Val:
        types = [val.type for val in vals]
        try:
            attrs = op.attrs_from(types, keywords) if isinstance(keywords, dict) else keywords
            result = op.infer(types, *attrs)
        except ShapeError as err:
            raise self.fail(str(err), loc) from None
        operands = [self.materialize(val, loc) for val in vals]
        expr = op.make(*operands, attrs=attrs)
        node = self.builder.tensor_ops.get(expr)
        if node is None:
            node = self.builder.add_op(self.owner, expr, result, loc, anonymous=True)
            self.builder.tensor_ops[expr] = node
        return Val(node.symbol, result, (node.symbol,))


def _loss_reduction(lowering: _NodeLowering, term: fm.Call, count: int) -> tuple[list[Val], str]:
    keywords = lowering._keywords(term, {"reduction": "mean"})
    reduction = keywords["reduction"]
    if reduction not in ("mean", "sum"):
        raise lowering.fail('reduction must be "mean" or "sum"', term.loc)
    return lowering._positional(term, count), reduction


def _same_shape(lowering: _NodeLowering, term: fm.Call, a: Val, b: Val) -> None:
    if a.type.shape != b.type.shape:
        raise lowering.fail(
            f"{term.func} needs prediction and target of the same shape, not "
            f"{list(a.type.shape)} and {list(b.type.shape)}",
            term.loc,
        )


def _elementwise_loss(
    pointwise: Callable[[sp.Expr, sp.Expr], sp.Expr],
) -> Callable[[_NodeLowering, fm.Call], Val]:
    def lower(lowering: _NodeLowering, term: fm.Call) -> Val:
        (pred, target), reduction = _loss_reduction(lowering, term, 2)
        _same_shape(lowering, term, pred, target)
        losses = lowering._elementwise(pointwise, [pred, target], term.func, term.loc)
        op = ReduceSum if reduction == "sum" else ReduceMean
        return lowering._tensor_op(op, [losses], (None, False), term.loc)

    return lower


def _softmax_cross_entropy(lowering: _NodeLowering, term: fm.Call) -> Val:
    (logits, labels), reduction = _loss_reduction(lowering, term, 2)
    if not logits.type.shape:
        raise lowering.fail("softmax_cross_entropy needs logits with a class axis", term.loc)
    last_axis = {"axis": len(logits.type.shape) - 1}
    log_probs = lowering._tensor_op(LogSoftmax, [logits], last_axis, term.loc)
    attrs = (reduction, log_probs.type.shape[-1], log_probs.type.dtype)
    return lowering._tensor_op(NegLogLikelihood, [log_probs, labels], attrs, term.loc)


# Losses are formulas over the ops above: mean((p - y)**2), mean(softplus(z) - z * t), and
# log_softmax then the picked negative log-likelihood, so their adjoints come for free.
_LOSSES: dict[str, Callable[[_NodeLowering, fm.Call], Val]] = {
    "mse": _elementwise_loss(lambda p, y: (p - y) ** 2),
    "binary_cross_entropy_with_logits": _elementwise_loss(
        lambda z, t: ELEMENTWISE["softplus"].build(z) - z * t
    ),
    "softmax_cross_entropy": _softmax_cross_entropy,
}


class Builder:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.graph = Graph()
        self.symbols: dict[str, sp.Symbol] = {}
        self.pending: set[str] = set()
        self.namer = Namer()
        # each tensor op once: `sum(x, axis=0) - sum(x, axis=0)` is then `t - t`, 0 to SymPy
        # here, where its shape is known, not after CSE, inside the op that reads it
        self.tensor_ops: dict[sp.Expr, Node] = {}

    def add_op(
        self, owner: str, expr: sp.Expr, type_: TensorType, loc: Loc, anonymous: bool
    ) -> Node:
        """A new op node, named `t_<owner>_<k>` when anonymous, else after its spec node."""
        sym = self.namer.fresh(owner) if anonymous else symbol(code_name(owner))
        free = [s for s in expr.free_symbols if s in self.graph.by_symbol]
        operands = tuple(sorted(free, key=lambda s: self.graph[s].index))  # type: ignore[index]
        return self.graph.add(Node(sym, type_, "op", owner, expr, operands, anonymous, loc))

    def build(self) -> Program:
        for spec_input in self.spec.inputs:
            self._leaf(
                spec_input.name,
                TensorType(spec_input.shape, spec_input.dtype),
                "input",
                spec_input.loc,
            )
        for param in self.spec.params:
            self._leaf(param.name, TensorType(param.shape, self.spec.dtype), "param", param.loc)
        parsed = {
            node.name: fm.parse_formula(node.formula, node.loc, node.name)
            for node in self.spec.nodes
        }
        ordered = _topological(self.spec.nodes, parsed)
        self._refuse_an_unread_layer_loss(parsed)
        self.pending = {node.name for node in self.spec.nodes}
        for spec_node in ordered:
            self._lower_node(spec_node, parsed[spec_node.name])
            self.pending.discard(spec_node.name)
        self.graph.verify()
        return Program(
            self.spec,
            self.graph,
            self._output(),
            self._wrt(),
            self._predict(),
        )

    def _refuse_an_unread_layer_loss(self, parsed: dict[str, fm.Term]) -> None:
        """A layer-form loss beside nodes and an output that never read it was dropped
        silently, while its target was still an argument of the module."""
        loss, output = self.spec.layer_loss, self.spec.output
        reached: set[str] = set()
        pending = [output]
        while pending:
            name = pending.pop()
            if name not in reached and name in parsed:
                reached.add(name)
                pending += _references(parsed[name])
        if loss is not None and loss not in reached:
            node = next(node for node in self.spec.nodes if node.name == loss)
            raise SpecError(
                f"the output {output!r} does not read the layers' loss: read it in a node "
                f"(`total: {loss} + ...`), or drop `loss`",
                node.loc,
            )

    def _check_activation(self, spec_node: NodeSpec, term: fm.Term, val: Val) -> None:
        """A layer's activation is a formula in x that keeps x's shape: `activation: 0`
        made the layer's output a scalar and its params' gradients silently 0."""
        layer_output = dict(spec_node.aliases)["x"]
        shape = self.graph.type_of(self.symbols[layer_output]).shape
        if "x" not in _references(term):
            raise SpecError(
                f"an activation is a formula in x (the layer's {layer_output})",
                spec_node.loc,
                spec_node.name,
            )
        if val.type.shape != shape:
            raise SpecError(
                f"the activation turns x, shaped {shape_text(shape)}, into "
                f"{shape_text(val.type.shape)}: an activation keeps x's shape",
                spec_node.loc,
                spec_node.name,
            )

    def _leaf(self, name: str, type_: TensorType, kind: str, loc: Loc) -> None:
        node = self.graph.add(Node(symbol(code_name(name)), type_, kind, name, loc=loc))
        self.symbols[name] = node.symbol

    def _lower_node(self, spec_node: NodeSpec, term: fm.Term) -> None:
        lowering = _NodeLowering(self, spec_node)
        val = lowering.lower(term)
        if "x" in dict(spec_node.aliases):
            self._check_activation(spec_node, term, val)
        if val.type.dtype.startswith("int"):
            raise SpecError(
                "a node must compute floats (integer inputs are labels)",
                spec_node.loc,
                spec_node.name,
            )
        expr = val.expr
        node = self.graph.by_symbol.get(expr) if isinstance(expr, sp.Symbol) else None
        lost = _shape_lost(self.graph, val)  # `z @ w + (w - w)`: the product, but w's shape
        # (an op another op of the formula reads, `a @ b + 0 * sum(a @ b)`, keeps its name)
        read = node is not None and any(node.symbol in other.operands for other in self.graph.nodes)
        renamable = node is not None and node.anonymous and node.owner == spec_node.name
        if renamable and not (lost or read):
            # the formula's last op is the node itself: give it the spec's name
            self._rename(node, spec_node.name)
        else:
            if val.type.dtype == "const" or lost:
                expr = _filled(lowering, val, spec_node.loc)
            type_ = TensorType(
                val.type.shape, self.spec.dtype if val.type.dtype == "const" else val.type.dtype
            )
            node = self.add_op(spec_node.name, expr, type_, spec_node.loc, anonymous=False)
        self.symbols[spec_node.name] = node.symbol

    def _rename(self, node: Node, name: str) -> None:
        old = node.symbol
        new = symbol(code_name(name))
        del self.graph.by_symbol[old]
        node.symbol = new
        node.anonymous = False
        self.graph.by_symbol[new] = node

    def _named(self, name: str, loc: Loc, what: str) -> sp.Symbol:
        if name not in self.symbols:
            raise SpecError(f"{what} {name!r} is not an input, param or node", loc)
        return self.symbols[name]

    def _output(self) -> sp.Symbol:
        output = self._named(self.spec.output, self.spec.output_loc, "output")
        type_ = self.graph.type_of(output)
        if type_.shape != () or not type_.is_float:
            raise SpecError(
                f"output {self.spec.output!r} must be a float scalar to take gradients, "
                f"not shape [{', '.join(map(str, type_.shape))}] of {type_.dtype}",
                self.spec.output_loc,
            )
        return output

    def _wrt(self) -> tuple[sp.Symbol, ...]:
        result = []
        places = dict(self.spec.wrt_places)
        for name in self.spec.wrt:
            loc = places.get(name, self.spec.wrt_loc)
            sym = self._named(name, loc, "wrt")
            node = self.graph[sym]
            if node.kind == "op":
                raise SpecError(f"wrt names node {name!r}: list inputs or params", loc)
            if not node.type.is_float:
                raise SpecError(f"wrt names {name!r}, an integer input: it has no gradient", loc)
            result.append(sym)
        return tuple(result)

    def _predict(self) -> sp.Symbol | None:
        if self.spec.predict is None:
            return None
        return self._named(
            self.spec.predict, self.spec.predict_loc or self.spec.output_loc, "predict"
        )


def _shape_lost(graph: Graph, val: Val) -> bool:
    """True when SymPy's own simplification (x - x = 0) dropped the tensors that set the shape."""
    shapes = [graph.type_of(s).shape for s in val.expr.free_symbols if s in graph.by_symbol]
    return broadcast_shapes(*shapes) != val.type.shape if shapes else True


def _filled(lowering: _NodeLowering, val: Val, loc: Loc) -> sp.Expr:
    tensors = [s for s in val.expr.free_symbols if s in lowering.graph.by_symbol]
    if not tensors:
        return Fill.make(val.expr, *val.sources)
    shape = broadcast_shapes(*(lowering.graph.type_of(s).shape for s in tensors))
    value = lowering.materialize(Val(val.expr, TensorType(shape or (), val.type.dtype)), loc)
    return Fill.make(value, *val.sources)


def _topological(nodes: tuple[NodeSpec, ...], parsed: dict[str, fm.Term]) -> list[NodeSpec]:
    """Nodes in dependency order, spec order where free; a cycle is the user's error."""
    by_name = {node.name: node for node in nodes}
    deps = {
        node.name: [dict(node.aliases).get(ref, ref) for ref in _references(parsed[node.name])]
        for node in nodes
    }
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    ordered: list[NodeSpec] = []
    for root in by_name:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            name, index = stack.pop()
            children = [dep for dep in deps[name] if dep in by_name]
            if index < len(children):
                stack.append((name, index + 1))
                child = children[index]
                if state.get(child) == 1:
                    path = [entry for entry, _ in stack] + [child]
                    cycle = path[path.index(child) :]
                    raise SpecError(f"cycle: {' -> '.join(cycle)}", by_name[child].loc, child)
                if not state.get(child):
                    state[child] = 1
                    stack.append((child, 0))
            else:
                state[name] = 2
                ordered.append(by_name[name])
    return ordered


def _references(term: fm.Term) -> list[str]:
    names: list[str] = []
    stack: list[Any] = [term]
    while stack:
        item = stack.pop()
        if isinstance(item, fm.Ref):
            names.append(item.name)
        elif isinstance(item, fm.Neg):
            stack.append(item.operand)
        elif isinstance(item, fm.BinOp):
            stack += [item.right, item.left]
        elif isinstance(item, fm.Call):
            stack += list(reversed(item.args))
        elif isinstance(item, fm.Seq):
            stack += list(item.items)
    return list(reversed(names))


def build_program(spec: Spec) -> Program:
    return Builder(spec).build()

"""Reverse mode: one sweep over the graph in reverse topological order.

Each node's adjoint is the sum of the contributions of its consumers (the sum over all
paths); a tensor op's contributions come from its rule (ops.py), an elementwise node's
from SymPy's derivative of its expression, with the node's own symbol put back for its
forward expression so the backward pass reads saved values. Only nodes that lie on a
path from a `wrt` leaf to the output get adjoints; nothing else is differentiated.

A value used many times (a weight tied across the steps of a recurrence) has its adjoint
summed as its contributions arrive: `d_W = a + b`, then `d_W += c` for each later one,
so each contribution is computed while what it reads is alive, and freed at once. Summed
at the end instead, every step's adjoint would stay alive until then, and one line
would add them all. The running sums are values of their own in the IR, named
`d_W'1`, `d_W'2`, ... (`partial_sum_of` reads the `d_W` back); the last is `d_W`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from .build import Program
from .errors import SpecError
from .functions import (
    Step,
    as_real,
    finite_real,
    plain_powers,
    real_abs,
    tensor_powers,
    unsaved_values,
)
from .ir import (
    Graph,
    Node,
    Statement,
    TensorType,
    partial_sum_symbol,
    reduced_axes,
    symbol,
)
from .ops import (
    AdjointContext,
    BatchSum,
    BroadcastTo,
    ExpandDims,
    Masked,
    Ones,
    SumTo,
    TensorOp,
    Transposed,
)
from .printer import math_factor, math_text


def adjoint_symbol(value: sp.Symbol) -> sp.Symbol:
    return symbol(f"d_{value.name}")


@dataclass(frozen=True)
class Contribution:
    """One consumer's share of an adjoint, with the chain-rule step in two forms for the
    comment: by name (`dL/dh1 * sigmoid'(s1)`) and written out (`dL/dh1 * h1 * (1 - h1)`)."""

    expr: sp.Expr
    chain: str
    expanded: str


MAX_EXPANDED_NOTE = 60  # longer derivatives are named, not written out


def _note(value: sp.Symbol, parts: list[Contribution], operator: str = "=") -> str:
    chain = " + ".join(part.chain for part in parts)
    expanded = " + ".join(part.expanded for part in parts)
    note = f"dL/d{value.name} {operator} {chain}"
    if expanded != chain and len(expanded) <= MAX_EXPANDED_NOTE:
        note += f" = {expanded}"
    return note


@dataclass
class Backward:
    statements: list[Statement]
    seed: sp.Symbol  # d_<output>, set from grad_output by the emitted code
    grads: dict[sp.Symbol, sp.Symbol | None]  # wrt leaf -> its adjoint (None: no path)


def _active(program: Program) -> set[sp.Symbol]:
    graph = program.graph
    needs = set(program.wrt)
    for node in graph.nodes:
        if node.kind == "op" and any(operand in needs for operand in node.operands):
            needs.add(node.symbol)
    reach = {program.output}
    for node in reversed(graph.nodes):
        if node.symbol in reach:
            reach.update(node.operands)
    return needs & reach


Defining = Callable[[sp.Symbol], "sp.Expr | None"]  # what an adjoint is computed from


def _elementwise_adjoints(
    node: Node, d: sp.Symbol, graph: Graph, defining: Defining, active: set[sp.Symbol]
) -> list[tuple[sp.Symbol, Contribution]]:
    result = []
    for operand in node.operands:
        if operand not in active:
            continue  # no gradient wanted: `(-1) ** k` need not be derived in k
        local = unsaved_values(_partial(node.expr, operand).xreplace({node.expr: node.symbol}))
        if local == 0:
            continue
        if not finite_real(local):
            raise SpecError(
                f"its derivative in {operand.name}, {math_text(local)}, is not a finite real "
                "number: a constant is past float64's range, or a negative base has a tensor "
                "exponent",
                node.loc,
                node.owner,
            )
        contribution = _masked(node, d, local, graph, defining) or d * local
        incoming = f"dL/d{node.name}"
        if local == 1:
            chain = expanded = incoming
        else:
            chain = f"{incoming} * {_local_name(node, operand)}"
            expanded = f"{incoming} * {math_factor(local)}"
        lead, kept = reduced_axes(graph.type_of(operand).shape, node.type.shape)
        if lead or kept:
            view = local == 1 and _broadcast_view(d, defining)
            contribution = _summed(contribution, lead, kept, node.type, graph, view)
            chain, expanded = (f"sum over broadcast axes of {text}" for text in (chain, expanded))
        result.append((operand, Contribution(contribution, chain, expanded)))
    return result


def _masked(
    node: Node, d: sp.Symbol, local: sp.Expr, graph: Graph, defining: Defining
) -> sp.Expr | None:
    """`d * local` with `Masked` for each mask [a > 0] of a relu or a maximum in a term of
    `local`, where the term's other factors or the adjoint `d` may be inf or NaN where a is
    0: they divide by a, or take a root or a log of it, or of a value computed from it
    (sqrt(relu(x)), relu(x) ** w). A product would give 0 * inf = NaN there, where PyTorch
    gives 0. Each term apart (`0.5 * x + sqrt(relu(x))`), each of a term's masks in turn
    (sqrt(relu(maximum(x, y)))), and the masked terms of a sum within a factor
    (`_masked_within`). None where the plain product is exact. The adjoint's terms are
    read off its own expression and those of the adjoints it reads."""
    if not local.has(Step):
        return None  # most derivatives: no mask, and no adjoint's expression to read
    expr = defining(d)
    read = [expr, *map(defining, expr.free_symbols)] if expr is not None else []
    parts = _mask_terms(local)
    # an infinite adjoint only meets 0 * inf where every term is masked: beside a term
    # with no mask (leaky_relu's slope) d * local is inf, as PyTorch has it
    if not all(part.has(Step) for part in parts):
        read = []
    terms = [_masked_term(node, term, graph, d, read) for term in parts]
    changed = any(is_changed for _, is_changed in terms)
    return sp.Add(*(term for term, _ in terms)) if changed else None


def _masked_term(
    node: Node, term: sp.Expr, graph: Graph, scale: sp.Expr, read: list[sp.Expr]
) -> tuple[sp.Expr, bool]:
    """`scale * term`, under `Masked` for each of its masks where its other factors, or
    `read`, may be inf where the mask's value is 0; and whether that, or a sum within a
    factor masked by `_masked_within`, makes it other than the plain product."""
    masks, rest = _masks_and_rest(node, term, graph)
    if masks and _maybe_infinite(node, masks, [rest, *read], graph):
        return _under_masks(scale * rest, masks), True
    kept = sp.Mul(rest, *masks)
    return scale * kept, kept != term


def _masks_and_rest(node: Node, term: sp.Expr, graph: Graph) -> tuple[list[sp.Expr], sp.Expr]:
    """The masks [a > 0] among `term`'s factors, and the product of the others, each
    with `_masked_within`'s masks inside."""
    factors = sp.Mul.make_args(term)
    masks = [factor for factor in factors if isinstance(factor, Step)]
    others = (_masked_within(node, factor, graph) for factor in factors if factor not in masks)
    return masks, sp.Mul(*others)


def _masked_within(node: Node, factor: sp.Expr, graph: Graph) -> sp.Expr:
    """`factor` with `Masked` for each masked term [a > 0] * q of a sum in it that also
    has a term without a mask, where q may be inf where a is 0: in relu(sqrt(relu(x)) - x)'s
    [t > 0] * ([x > 0] / (2 sqrt(relu(x))) - 1), the product is NaN at x < 0 where PyTorch
    has -1. The sum's other terms keep it finite, so the factors outside it stay products.
    Sums whose every term holds a mask are spread by `_mask_terms` instead."""
    if not factor.has(Step):
        return factor
    if factor.is_Mul:
        return sp.Mul(*(_masked_within(node, f, graph) for f in factor.args))
    if not factor.is_Add:
        return factor
    return sp.Add(*(_masked_term(node, term, graph, sp.S.One, [])[0] for term in factor.args))


def _under_masks(value: sp.Expr, masks: list[sp.Expr]) -> sp.Expr:
    """`value` where every mask [a > 0] holds (at a tie, the mask's value at 0 times it)."""
    for mask in masks:
        value = Masked.make(value, mask.args[0], attrs=(mask.args[1],))
    return value


def _mask_terms(expr: sp.Expr) -> list[sp.Expr]:
    """The terms of `expr`, a product spread over each sum in it whose every term holds a
    mask: ([a > 0] - [b > 0]) / sqrt(a + b) is two masked terms. Only over those: spread
    over (x + y) / h**2, a term x / h**2 would be 0 * inf where PyTorch has y / 0, and
    over leaky_relu's (0.2 + 0.8 [h > 0]) * inf, 0.8 [h > 0] * inf would be NaN where
    PyTorch has 0.2 * inf."""
    terms = []
    for term in sp.Add.make_args(expr):
        factors = sp.Mul.make_args(term)
        masked_sum = next(
            (f for f in factors if f.is_Add and all(part.has(Step) for part in f.args)), None
        )
        if masked_sum is None:
            terms.append(term)
            continue
        others = list(factors)
        others.remove(masked_sum)
        rest = sp.Mul(*others)
        terms += _mask_terms(sp.Add(*(part * rest for part in masked_sum.args)))
    return terms


def _maybe_infinite(
    node: Node, masks: list[sp.Expr], exprs: list[sp.Expr | None], graph: Graph
) -> bool:
    """Whether `exprs` divide by, or take a root or a log of, a masked value or one
    computed from it: from the relu's node, or from this node where the relu is part of
    its formula (sqrt(relu(x)) in one node)."""
    bases = [
        base
        for expr in exprs
        if expr is not None
        for base in [
            *(power.base for power in expr.atoms(sp.Pow) if _unbounded(power.exp)),
            *(log.args[0] for log in expr.atoms(sp.log)),
        ]
    ]
    if not bases:
        return False
    values = [mask.args[0] for mask in masks]
    sources = {value if value in graph.by_symbol else node.symbol for value in values}
    near = set().union(*(_downstream(source, graph) for source in sources))
    # a mask inside this node's formula (maximum(x, y) ** 0.5: [x - y > 0]) has no node:
    # a base read off the same values may be 0 where it is
    inline = set().union(*(value.free_symbols for value in values if value not in graph.by_symbol))
    return any(base.has(*values) or base.free_symbols & (near | inline) for base in bases)


def _downstream(value: sp.Symbol, graph: Graph) -> set[sp.Symbol]:
    """`value` and every node computed from it."""
    reached = {value}
    for later in graph.nodes[graph[value].index + 1 :]:
        if reached.intersection(later.operands):
            reached.add(later.symbol)
    return reached


def _unbounded(exponent: sp.Expr) -> bool:
    """A power with this exponent may be inf at a base of 0."""
    return not (exponent.is_number and exponent.is_integer and exponent.is_nonnegative)


def _summed(
    contribution: sp.Expr,
    lead: tuple[int, ...],
    kept: tuple[int, ...],
    big: TensorType,
    graph: Graph,
    zero_strides: bool,
) -> sp.Expr:
    """`contribution` (shaped `big`) summed over broadcast axes. A batch of rows summed to
    one row is `ones @ d`, ones as long as the batch, which CSE shares between the layers
    (`passes.batch_sums` picks the value their length is read off, or undoes it) unless
    d is a broadcast view (`zero_strides`): BLAS would copy it out first."""
    if lead == (0,) and not kept and len(big.shape) == 2 and not zero_strides:
        dim = big.shape[0]
        if isinstance(dim, int):
            return BatchSum(contribution, Ones.make(sp.Integer(dim), attrs=(dim, None, big.dtype)))
        # the same source for every sum of this dim, so that CSE sees equal ones
        source = next(node for node in graph.nodes if dim in node.type.shape)
        ones = Ones.make(source.symbol, attrs=(dim, source.type.shape.index(dim), big.dtype))
        return BatchSum(contribution, ones)
    return SumTo.make(contribution, attrs=(lead, kept))


def _broadcast_view(d: sp.Symbol, defining: Defining) -> bool:
    """True when the array of adjoint `d` is a broadcast view (zero strides), or a
    transpose of one: BLAS would copy it out before summing it."""
    expr: sp.Expr | None = d
    while isinstance(expr, (sp.Symbol, Transposed, ExpandDims)):
        expr = defining(expr) if isinstance(expr, sp.Symbol) else expr.args[0]
    return isinstance(expr, BroadcastTo)


def _partial(expr: sp.Expr, operand: sp.Symbol) -> sp.Expr:
    """d expr / d operand. Of a sum, only the terms that hold the operand: SymPy would
    walk every term for every operand, which for a sum of hundreds is quadratic. A power
    of a tensor exponent is derived by `Power`'s rule, finite where its base is 0, and an
    abs by `RealAbs`'s, sign(x)."""
    expr = real_abs(tensor_powers(expr))
    if expr.is_Add:
        terms = (sp.diff(term, operand) for term in expr.args if term.has(operand))
        return as_real(plain_powers(sp.Add(*terms)))
    return as_real(plain_powers(sp.diff(expr, operand)))


def _local_name(node: Node, operand: sp.Symbol) -> str:
    """`sigmoid'(s1)` for a node that applies one function to one operand, else `dh1/ds1`."""
    expr = node.expr
    if (
        isinstance(expr, sp.Function)
        and expr.args
        and expr.args[0] == operand
        and len(expr.free_symbols) == 1
    ):
        return f"{math_text(expr.func(*expr.args)).split('(')[0]}'({operand.name})"
    return f"d{node.name}/d{operand.name}"


def _tensor_adjoints(
    node: Node, d: sp.Symbol, graph: Graph, defining: Defining, active: set[sp.Symbol]
) -> list[tuple[sp.Symbol, Contribution]]:
    op: TensorOp = node.expr  # type: ignore[assignment]
    ctx = AdjointContext(op, node.symbol, d, graph.type_of, defining(d))
    return [
        (operand, Contribution(rule[0], rule[1], rule[1]))
        for operand, rule in zip(op.tensor_args, op.adjoint(ctx), strict=True)
        if rule is not None and operand in active
    ]


def reverse_mode(program: Program) -> Backward:
    graph = program.graph
    active = _active(program)
    seed = adjoint_symbol(program.output)
    contributions: dict[sp.Symbol, list[Contribution]] = {}
    statements: list[Statement] = []
    defined: dict[sp.Symbol, sp.Symbol] = {program.output: seed}
    sums: dict[sp.Symbol, sp.Expr] = {}  # each adjoint's defining expression, for fusing rules

    def defining(d: sp.Symbol) -> sp.Expr | None:
        """What the adjoint `d` is computed from, through adjoints that copy another."""
        expr = sums.get(d)
        while isinstance(expr, sp.Symbol) and expr in sums:
            expr = sums[expr]
        return expr

    # a leaf's gradient line goes right after its first consumer's (in forward order)
    # adjoint has been taken, so that d_W2 sits next to d_s2 rather than at the end
    last_consumer: dict[sp.Symbol, sp.Symbol] = {}
    for node in graph.nodes:
        for operand in node.operands:
            if graph[operand].kind != "op" and operand in active and node.symbol in active:
                last_consumer.setdefault(operand, node.symbol)
    leaves_after: dict[sp.Symbol, list[sp.Symbol]] = {}
    for leaf, consumer in last_consumer.items():
        leaves_after.setdefault(consumer, []).append(leaf)

    running: dict[sp.Symbol, int] = {}  # value -> index of its running sum's statement
    sums_made: dict[sp.Symbol, int] = {}

    def add_up(value: sp.Symbol) -> None:
        """Two or more waiting contributions to `value` become its next running sum."""
        parts = contributions.get(value, [])
        if len(parts) < 2:
            return
        expr = sp.Add(*(part.expr for part in parts))
        sums_made[value] = sums_made.get(value, 0) + 1
        target = partial_sum_symbol(adjoint_symbol(value), sums_made[value])
        note = _note(value, parts) if value not in running else _note(value, parts[1:], "+=")
        running[value] = len(statements)
        statements.append(Statement(target, expr, graph[value].owner, "backward", note, False))
        contributions[value] = [Contribution(target, "", "")]

    def settle(value: sp.Symbol) -> None:
        add_up(value)
        parts = contributions.pop(value, [])
        if not parts:
            return
        d = adjoint_symbol(value)
        node = graph[value]
        index = running.pop(value, None)
        if index is None:
            expr = sp.Add(*(part.expr for part in parts))
            statements.append(
                Statement(d, expr, node.owner, "backward", _note(value, parts), node.anonymous)
            )
        else:  # the last running sum is the adjoint
            last = statements[index]
            expr = last.expr
            statements[index] = Statement(
                d, expr, last.owner, "backward", last.note, node.anonymous
            )
        defined[value] = d
        sums[d] = expr

    for node in reversed(graph.nodes):
        if node.symbol not in active or node.kind != "op":
            continue
        if node.symbol != program.output:
            settle(node.symbol)
        # after the settle, which may define (and so name) what a contribution reads
        for value in list(contributions):
            add_up(value)
        d = defined.get(node.symbol)
        if d is not None:  # None: no gradient reaches it (`k - k` cancelled what read it)
            local = _tensor_adjoints if isinstance(node.expr, TensorOp) else _elementwise_adjoints
            for operand, contribution in local(node, d, graph, defining, active):
                contributions.setdefault(operand, []).append(contribution)
        # even so: a leaf's other consumers may have given it a gradient
        for leaf in sorted(leaves_after.get(node.symbol, []), key=lambda s: s.name):
            settle(leaf)
    grads = {leaf: defined.get(leaf) for leaf in program.wrt}
    return Backward(statements, seed, grads)

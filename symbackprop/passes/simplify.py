"""Small rewrites before CSE: drop copies, read shapes off cheap values, inline, prune."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable

import sympy as sp

from ..ir import Dim, Graph, Node, Statement, broadcast_shapes, partial_sum_of, symbol
from ..ops import (
    BatchSum,
    BroadcastTo,
    Copy,
    Count,
    DimsOf,
    ExpandDims,
    Fill,
    OneHot,
    Ones,
    ReduceMean,
    ShapeOf,
    TensorOp,
    Transposed,
)
from ..reverse import adjoint_symbol
from .inplace import is_fresh


def symbol_uses(exprs: Iterable[sp.Expr]) -> Counter[sp.Symbol]:
    """How many times the code of `exprs` reads each symbol: a mean reads its operand twice,
    `x.sum() / x.size` (an operand written out there would be computed twice)."""
    uses: Counter[sp.Symbol] = Counter()
    for expr in exprs:
        for item in sp.preorder_traversal(expr):
            if isinstance(item, sp.Symbol):
                uses[item] += 1
            elif isinstance(item, ReduceMean) and isinstance(item.args[0], sp.Symbol):
                uses[item.args[0]] += 1
    return uses


def copy_propagation(
    statements: list[Statement], keep: set[sp.Symbol], equal_adjoints: bool = False
) -> list[Statement]:
    """`d_t = d_s` lines vanish when `t` is a value the spec did not name: later lines read
    `d_s` directly. The adjoint of a named value keeps its line (a rebinding, no copy), so
    the reader finds `d_<name>` for every name of the spec, and swapping a layer's
    activation for `identity` changes that layer's lines and no others.

    Comments then speak of dL/ds for dL/dt, but for a chain rule's step through t itself
    (`dL/dt * dt/dx`). After CSE (`equal_adjoints`), a copy is of the equal adjoints of two
    values, and every chain step keeps naming t, the value the path goes through; the
    written-out form names s, the array read. Where a comment keeps dL/dt, the line of
    `d_s` says that it is dL/dt too."""
    renames: dict[sp.Symbol, sp.Expr] = {}
    note_renames: dict[str, str] = {}
    result = []
    for statement in statements:
        expr = statement.expr.xreplace(renames) if renames else statement.expr
        if isinstance(expr, sp.Symbol) and statement.anonymous and statement.target not in keep:
            renames[statement.target] = expr
            if expr.name.startswith("d_"):
                note_renames[statement.target.name[2:]] = expr.name[2:]
            continue
        note = _rename_in_note(statement.note, note_renames, equal_adjoints)
        result.append(
            Statement(
                statement.target, expr, statement.owner, statement.phase, note, statement.anonymous
            )
        )
    if not note_renames:
        return result
    named = {name for statement in result for name in re.findall(r"dL/d(\w+)", statement.note)}
    also: dict[str, list[str]] = {}  # the copies a kept comment still names
    for copy, source in note_renames.items():
        if copy in named:
            also.setdefault(source, []).append(copy)
    return [
        dataclasses.replace(statement, note=_also_in_note(statement.note, also[name]))
        if statement.note and (name := statement.target.name[2:]) in also
        else statement
        for statement in result
    ]


def _rename_in_note(note: str, renames: dict[str, str], keep_chain: bool) -> str:
    """`note`, `dL/dx = <chain> = <written out>` (or `+=`), with dL/d<copy> renamed
    dL/d<source>: but for a step through the copy (`dL/dt * dt/dx`), and with `keep_chain`
    only in the written-out form (after the chain alone, `dL/db = dL/dt = dL/ds`)."""
    if not renames or "dL/d" not in note:
        return note

    def renamed(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in renames or text.startswith(f" * d{name}/d", match.end()):
                return match.group(0)
            return "dL/d" + renames[name]

        return re.sub(r"dL/d(\w+)", one, text)

    head, operator, rest = note.partition(" += " if " += " in note else " = ")
    if not keep_chain or not operator:
        return renamed(note)
    chain, equals, written = rest.partition(" = ")
    if equals:
        return f"{head}{operator}{chain} = {renamed(written)}"
    source = renamed(chain)
    return note if source == chain else f"{note} = {source}"


def _also_in_note(note: str, copies: list[str]) -> str:
    """The note of an adjoint whose copies were dropped: it is their adjoint too."""
    names = ", ".join(f"dL/d{copy}" for copy in copies)
    return f"{note} (also {names})"


def _with_expr(statement: Statement, expr: sp.Expr) -> Statement:
    return dataclasses.replace(statement, expr=expr)


SHAPE_READS = (ShapeOf, Count, OneHot, Ones)  # ops that read only a value's shape


def _read_beside(statements: list[Statement], ops: tuple[type, ...]) -> set[sp.Basic]:
    """The values `statements` read other than through `ops` (which read only a shape)."""
    read: set[sp.Basic] = set()
    for statement in statements:
        blanked = statement.expr.replace(lambda e: isinstance(e, ops), lambda e: sp.S.Zero)
        read |= blanked.free_symbols
    return read


def values_read(statements: list[Statement]) -> set[sp.Basic]:
    """The values `statements` read for more than their shape."""
    return _read_beside(statements, SHAPE_READS)


def shape_donors(statements: list[Statement], graph: Graph) -> list[Statement]:
    """Backward lines that only need a value's shape read it from an input or a param of
    the same shape where one exists, so the value itself need not be kept for backward."""
    shape_only = (ShapeOf, Count, OneHot)
    read = _read_beside(statements, shape_only)
    # values the backward pass reads anyway come first, then leaves, then named values
    candidates = [node for node in graph.nodes if node.symbol in read]
    candidates += [node for node in graph.nodes if node.kind != "op"]
    candidates += [node for node in graph.nodes if node.kind == "op" and not node.anonymous]
    donors: dict[tuple[tuple[object, ...], bool], sp.Symbol] = {}
    for node in candidates:
        donors.setdefault((node.type.shape, False), node.symbol)
        if node.type.is_float:
            donors.setdefault((node.type.shape, True), node.symbol)

    def donor(value: sp.Symbol, need_float: bool) -> sp.Symbol:
        return (
            donors.get((graph.type_of(value).shape, need_float), value)
            if value in graph.by_symbol
            else value
        )

    result = []
    for statement in statements:
        mapping: dict[sp.Basic, sp.Basic] = {}
        for item in statement.expr.atoms(ShapeOf, Count, OneHot):
            if isinstance(item, OneHot):
                labels, like = item.args
                mapping[item] = OneHot(labels, donor(like, True))
            else:
                mapping[item] = item.func(donor(item.args[0], False), *item.args[1:])
        result.append(
            _with_expr(statement, statement.expr.xreplace(mapping)) if mapping else statement
        )
    return result


def inline_single_use(forward: list[Statement], backward: list[Statement]) -> list[Statement]:
    """An unnamed forward value read once, by a forward line, is written into that line
    (`s1 = x @ W1 + b1` rather than a temporary), unless the backward pass names its adjoint."""
    uses = symbol_uses(statement.expr for statement in forward + backward)
    adjoints = {statement.target for statement in backward}
    users: dict[sp.Symbol, int] = {}
    for index, statement in enumerate(forward):
        for item in statement.expr.free_symbols:
            users[item] = index  # type: ignore[index]
    statements = list(forward)
    dropped: set[int] = set()
    for index, statement in enumerate(statements):
        target = statement.target
        if not statement.anonymous or uses[target] != 1 or adjoint_symbol(target) in adjoints:
            continue
        user = users.get(target)
        if user is None or user <= index:
            continue
        consumer = statements[user]
        statements[user] = _with_expr(consumer, consumer.expr.xreplace({target: statement.expr}))
        for item in statement.expr.free_symbols:
            users[item] = max(users.get(item, user), user)  # type: ignore[index]
        dropped.add(index)
    return [statement for index, statement in enumerate(statements) if index not in dropped]


def dead_code(statements: list[Statement], roots: Iterable[sp.Symbol]) -> list[Statement]:
    """Keep only the lines whose values reach `roots` (the output, gradients, saved values)."""
    needed = set(roots)
    kept = []
    for statement in reversed(statements):
        if statement.target in needed:
            needed.update(statement.expr.free_symbols)  # type: ignore[arg-type]
            kept.append(statement)
    return kept[::-1]


def own_results(
    statements: list[Statement], results: dict[sp.Symbol, sp.Symbol]
) -> list[Statement]:
    """Each gradient (`results`: adjoint -> its leaf) becomes an array of its own, of its
    leaf's shape: another name's array, a read-only broadcast view, or a view of either
    (`d_W = d_n.T` and `d_V = d_n.T` were one array), is copied, since callers update
    gradients in place (`grads["W"] *= 0.9`); a view of an array that this gradient alone
    reads is not (`d_W = d_t.T` of a fresh product: copying it made a backward 5x
    slower). A constant that the algebra left (`maximum(x, x) - x` has derivative 0) is
    filled out."""
    fresh = {s.target for s in statements if is_fresh(s.expr)} - set(results)
    uses = symbol_uses(s.expr for s in statements)
    owned = []
    for statement in statements:
        leaf = results.get(statement.target)
        expr = statement.expr
        if isinstance(expr, sp.Symbol) and partial_sum_of(expr) == statement.target.name:
            continue  # `d_x = d_x'1`: the last term cancelled; the running sum is d_x's array
        if leaf is not None and statement.expr.is_number:
            statement = _with_expr(statement, Fill(statement.expr, leaf))
        elif leaf is not None and _shares_its_array(statement.expr, fresh, uses):
            statement = _with_expr(statement, Copy(statement.expr))
        owned.append(statement)
    return owned


def shares_an_array(statements: list[Statement], value: sp.Symbol) -> bool:
    """Whether `value`, handed back to the caller, may be another name's array or a view
    of one (`loss = x`, `h = w.T`), or a param or input itself (no line makes it): writing
    into it would change the caller's array, or another value's."""
    making = next((s.expr for s in statements if s.target == value), None)
    if making is None:
        return True
    fresh = {s.target for s in statements if is_fresh(s.expr)}
    return _shares_its_array(making, fresh, Counter())


def _shares_its_array(expr: sp.Expr, fresh: set[sp.Symbol], uses: Counter[sp.Symbol]) -> bool:
    """True when `expr` is a name, a broadcast view, or a view (a transpose, an added
    axis) of one, unless that name is a fresh array of the backward pass read only here."""
    view = expr
    while isinstance(view, (Transposed, ExpandDims)):
        view = view.args[0]
    if isinstance(view, BroadcastTo):
        return True
    if not isinstance(view, sp.Symbol):
        return False
    return view is expr or view not in fresh or uses[view] > 1


def fold_numbers(statements: list[Statement]) -> list[Statement]:
    """Exact constants (`log(2)`, `sqrt(2)`, `2*pi`) become Python floats: NumPy would make
    `np.log(2)` a float64 that upcasts float32 arrays, and CSE would cache it. A constant
    that is 0 only as a float (`exp(-1000)`) can leave an op of 0, which is 0 itself where
    the op is linear (`0.sum(axis=0)` would not even parse); an adjoint that is then 0 is
    filled out to its shape (`cancelled_adjoints`)."""
    return [
        _with_expr(s, s.expr.replace(_foldable, _as_float).replace(_op_of_zero, _zero))
        for s in statements
    ]


def _op_of_zero(expr: sp.Basic) -> bool:
    # a number's is_zero: 0.0 too (Float(0.0) == 0 is False), without asking an expression
    return isinstance(expr, TensorOp) and any(
        expr.args[i].is_Number and expr.args[i].is_zero for i in expr.linear_in
    )


def _zero(expr: sp.Basic) -> sp.Integer:
    return sp.S.Zero


def _foldable(expr: sp.Basic) -> bool:
    if not expr.is_number or expr.is_Atom:
        return False
    if any(isinstance(node, TensorOp) for node in sp.preorder_traversal(expr)):
        return False
    value = sp.N(expr, 17)  # `relu(0)` evaluates to the Integer 0, which is folded too
    return bool(value.is_Number and value.is_finite)  # False where it cannot be evaluated


def _as_float(expr: sp.Basic) -> sp.Float:
    return sp.Float(float(sp.N(expr, 17)))


def batch_sums(statements: list[Statement], graph: Graph) -> list[Statement]:
    """After CSE: each vector of ones reads its length off a value the backward pass reads
    anyway, so the cache never keeps an array only for its length. A `ones @ d` goes back
    to `d.sum(axis=0)` where no other sum shares its ones (CSE made no temporary of them:
    making the ones costs what one sum saves), or where no such value has the dim."""

    read = _read_beside(statements, (Ones,))
    donors = [node for node in graph.nodes if node.symbol in read]
    sourced: dict[sp.Basic, sp.Basic] = {}
    orphans: set[sp.Symbol] = set()
    for statement in statements:
        ones = statement.expr
        if not isinstance(ones, Ones) or not ones.tensor_args or ones.args[0] in read:
            continue
        donor = next((node for node in donors if ones.dim in node.type.shape), None)
        if donor is None:
            orphans.add(statement.target)
        else:
            sourced[ones] = ones.with_source(donor.symbol, donor.type.shape.index(ones.dim))

    def undone(item: sp.Basic) -> bool:
        return isinstance(item, BatchSum) and (
            not isinstance(item.args[1], sp.Symbol) or item.args[1] in orphans
        )

    result = []
    for statement in statements:
        if statement.target in orphans:
            continue
        expr = statement.expr.xreplace(sourced) if sourced else statement.expr
        if expr.has(BatchSum):
            expr = expr.replace(undone, lambda item: item.as_sum())
        result.append(_with_expr(statement, expr) if expr != statement.expr else statement)
    return result


def dims_read_beside(statements: list[Statement], graph: Graph) -> list[Statement]:
    """After CSE: a forward value that the backward pass reads only for its shape or its
    size (the adjoint of a sum or a mean) is not kept for that alone. Its dims are
    written out, numbers as they are and named dims off one value the backward pass
    reads anyway, or an input or a param (`(x.shape[0], 4)`), where one has them all.
    (`shape_donors`, before CSE, swaps in a value of the whole shape where it can.)"""
    read = _read_beside(statements, (ShapeOf, Count, OneHot))
    read_nodes = [node for node in graph.nodes if node.symbol in read]
    leaves = [node for node in graph.nodes if node.kind != "op" and node not in read_nodes]

    def written_out(item: ShapeOf | Count) -> DimsOf | None:
        value = item.args[0]
        node = graph.by_symbol.get(value)  # type: ignore[call-overload]
        if node is None or node.kind != "op" or value in read or not node.type.shape:
            return None
        # the value's own inputs first: a dim read off another input is only as good as
        # the caller's promise that the two agree
        own = _ancestors(graph, value)
        sources = read_nodes + sorted(leaves, key=lambda leaf: leaf.symbol not in own)
        shape = node.type.shape
        axes = item.attrs[0] if isinstance(item, Count) else None
        dims = [shape[axis] for axis in (range(len(shape)) if axes is None else axes)]
        return _dims_off(sources, dims, "count" if isinstance(item, Count) else "shape")

    result = []
    for statement in statements:
        mapping = {
            item: dims
            for item in statement.expr.atoms(ShapeOf, Count)
            if (dims := written_out(item)) is not None
        }
        result.append(
            _with_expr(statement, statement.expr.xreplace(mapping)) if mapping else statement
        )
    return result


def _ancestors(graph: Graph, value: sp.Symbol) -> set[sp.Basic]:
    """The graph values `value` is computed from."""
    seen: set[sp.Basic] = set()
    stack = [value]
    while stack:
        node = graph.by_symbol.get(stack.pop())  # type: ignore[call-overload]
        if node is None or node.kind != "op":
            continue
        for item in node.expr.free_symbols - seen:
            seen.add(item)
            stack.append(item)
    return seen


def shapes_kept(forward: list[Statement], graph: Graph) -> list[Statement]:
    """After CSE: two equal products CSE names alike can cancel (`t - t + w` is `w` to
    SymPy), and the value then has w's shape, not the one it broadcast to. Such a value
    is filled out to its own shape again, `np.full((x.shape[0], 3), w, ...)`, its named
    dims read off one input it is computed from."""
    shapes = {node.symbol: node.type.shape for node in graph.nodes}
    result = []
    for statement in forward:
        expr, target = statement.expr, statement.target
        free = expr.free_symbols
        # the shape of an elementwise line is its operands' (a TensorOp's is its own)
        left = (
            broadcast_shapes((), *(shapes[item] for item in free))
            if not expr.atoms(TensorOp) and all(item in shapes for item in free)
            else None
        )
        node = graph.by_symbol.get(target)  # type: ignore[call-overload]
        if node is None:
            if left is not None:  # a CSE temporary: later lines may read its shape
                shapes[target] = left
        elif left is not None and left != node.type.shape:
            dims = _dims_from_inputs(graph, node)
            if dims is not None:
                statement = _with_expr(statement, Fill.make(expr, dims))
        result.append(statement)
    return result


def cancelled_adjoints(backward: list[Statement], graph: Graph) -> list[Statement]:
    """After CSE: an adjoint whose terms cancel (`B - d_g` once CSE names B `d_g`, where
    `g = 1 - h` and L reads both) is the number 0 to SymPy, which NumPy would read as an
    int, so every gradient computed from it would be int64 and shapeless. It is filled out
    to its value's shape and dtype instead: `d_h = np.full((x.shape[0], 3), 0, ...)`.
    (An adjoint is linear in dL/dloss, so the only number it can be is 0.)"""
    result = []
    for statement in backward:
        target = statement.target
        if statement.expr.is_number and partial_sum_of(target) is None:
            node = graph.by_symbol.get(symbol(target.name.removeprefix("d_")))  # type: ignore[call-overload]
            if node is not None and target == adjoint_symbol(node.symbol):
                dims = (
                    _dims_from_inputs(graph, node)
                    if node.kind == "op"
                    else _dims_off([node], list(node.type.shape), "shape")
                )
                # no one input has every named dim (`x * z` of x [n, 1] and z [1, m]):
                # the value's own shape, read off the value (saved for it)
                shape = dims if dims is not None else node.symbol
                note = f"{statement.note} = 0, its terms cancel" if statement.note else ""
                filled = Fill.make(statement.expr, shape)
                statement = dataclasses.replace(statement, expr=filled, note=note)
        result.append(statement)
    return result


def _dims_from_inputs(graph: Graph, node: Node) -> DimsOf | None:
    """`node`'s shape as a DimsOf: numbers, and named dims off one input it reads."""
    own = _ancestors(graph, node.symbol)
    inputs = [item for item in graph.nodes if item.kind != "op" and item.symbol in own]
    return _dims_off(inputs, list(node.type.shape), "shape")


def _dims_off(sources: list[Node], dims: list[Dim], form: str) -> DimsOf | None:
    """`dims` written out (DimsOf, `form` "shape" or "count"): numbers as they are, named
    dims off the first of `sources` that has them all; None if none has."""
    named = {dim for dim in dims if isinstance(dim, str)}
    source = next((item for item in sources if named <= set(item.type.shape)), None)
    if source is None:
        return None
    entries = tuple(
        (True, dim) if isinstance(dim, int) else (False, source.type.shape.index(dim))
        for dim in dims
    )
    return DimsOf.make(source.symbol if named else sp.S.Zero, attrs=(entries, form))

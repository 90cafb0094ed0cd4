"""Common-subexpression elimination over the forward and backward passes together.

SymPy's `cse` finds the repeated subexpressions (canonical order, so the result does not
depend on hashing). Each one becomes a temporary computed just before its first use:
in the forward pass when the forward pass uses it (then the backward pass reads the
saved value), in the backward pass otherwise. Temporaries get placeholder names here;
`naming.py` gives them their final, per-node names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import sympy as sp

from ..ir import Statement, partial_sum_of
from ..ops import Transposed

_PREFIX = "_cse_"


def common_subexpressions(
    forward: list[Statement], backward: list[Statement], taken: Iterable[sp.Symbol] = ()
) -> tuple[list[Statement], list[Statement]]:
    """`taken`: names already in use beside these lines (the forward pass's, when CSE runs
    again over the backward pass alone), which new temporaries must not reuse."""
    statements = forward + backward
    if not statements:
        return forward, backward
    # past any temporary an earlier CSE run made, when this one runs again
    named = {s.target for s in statements}.union(taken, *(s.expr.free_symbols for s in statements))
    start = 1 + max((_index(s) for s in named if s.name.startswith(_PREFIX)), default=-1)
    temps = sp.numbered_symbols(_PREFIX, start=start, real=True)
    replacements, reduced = sp.cse([s.expr for s in statements], symbols=temps, order="canonical")
    replacements, reduced = _inline_views(replacements, reduced)
    definitions = dict(replacements)
    placed: set[sp.Symbol] = set()
    renames: dict[sp.Symbol, sp.Symbol] = {}
    out: dict[str, list[Statement]] = {"forward": [], "backward": []}
    # lines that are one repeated subexpression as a whole (a running sum's array is
    # updated in place later, `d_W += c`: it may not be what another line reads for one)
    whole_lines: dict[sp.Basic, int] = {}  # the first such line of each
    for index, (statement, expr) in enumerate(zip(statements, reduced, strict=True)):
        if expr in definitions and partial_sum_of(statement.target) is None:
            whole_lines.setdefault(expr, index)
    moved_up: set[int] = set()

    def place(temp: sp.Symbol, user: Statement) -> None:
        """Emit `temp` (after the temporaries it reads) just before `user`."""
        stack = [(temp, False)]
        while stack:
            item, ready = stack.pop()
            if item in placed:
                continue
            if not ready:
                stack.append((item, True))
                for dep in sorted(
                    definitions[item].free_symbols - placed, key=_order_key, reverse=True
                ):
                    if dep in definitions:
                        stack.append((dep, False))  # type: ignore[arg-type]
                continue
            placed.add(item)
            expr = definitions[item].xreplace(renames)
            line = whole_lines.get(item)  # type: ignore[call-overload]
            if line is not None and statements[line].phase == user.phase:
                # a later line computes just this: it moves up, keeping its name and its
                # note (`d_t_h0_0 = ...` with its chain-rule step, not a nameless `t_a_0`)
                moved_up.add(line)
                renames[item] = statements[line].target
                out[user.phase].append(dataclasses.replace(statements[line], expr=expr))
                continue
            out[user.phase].append(
                Statement(item, expr, user.owner, user.phase, "", anonymous=True)
            )

    for index, (statement, expr) in enumerate(zip(statements, reduced, strict=True)):
        if index in moved_up:
            continue
        if whole_lines.get(expr) == index and expr not in placed:  # type: ignore[call-overload]
            # the whole line is a repeated subexpression: the line itself defines it
            for dep in sorted(definitions[expr].free_symbols - placed, key=_order_key):
                if dep in definitions:
                    place(dep, statement)  # type: ignore[arg-type]
            placed.add(expr)
            renames[expr] = statement.target
            expr = definitions[expr]
        else:
            for temp in sorted(expr.free_symbols - placed, key=_order_key):
                if temp in definitions:
                    place(temp, statement)  # type: ignore[arg-type]
        out[statement.phase].append(
            Statement(
                statement.target,
                expr.xreplace(renames),
                statement.owner,
                statement.phase,
                statement.note,
                statement.anonymous,
            )
        )
    return out["forward"], out["backward"]


def _inline_views(
    replacements: list[tuple[sp.Symbol, sp.Expr]], reduced: list[sp.Expr]
) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
    """Put back the temporaries that are only a name's transpose: `W.T` costs nothing to
    repeat, and reads better in place (`np.dot(d_s2, W.T)`) than as `t_h1_1 = W.T`."""
    views: dict[sp.Symbol, sp.Expr] = {}
    for temp, value in replacements:  # in order: a view of a view reads the name itself
        if isinstance(value, Transposed) and isinstance(value.args[0], sp.Symbol):
            views[temp] = value.xreplace(views)
    if not views:
        return replacements, reduced
    kept = [(temp, value.xreplace(views)) for temp, value in replacements if temp not in views]
    return kept, [expr.xreplace(views) for expr in reduced]


def _index(temp: sp.Symbol) -> int:
    return int(temp.name[len(_PREFIX) :])


def _order_key(value: sp.Basic) -> tuple[int, str]:
    name = getattr(value, "name", "")
    if name.startswith(_PREFIX):
        return (0, f"{_index(value):09d}")  # type: ignore[arg-type]
    return (1, name)

"""The one place generated names are made.

Spec names stay as they are; adjoints are `d_<name>`; every value the spec did not name
(an op inside a formula, a shared subexpression) is `t_<owner>_<k>`, numbered per owning
spec node in order of definition, so an edit in one node never renumbers another. The
ones that sum a batch (`ones @ d`) belong to no node: they are `t_ones_<dim>`, named for
the dim they are as long as (`t_ones_32_rows` for a number), a name no node's temporary has.
"""

from __future__ import annotations

import re

import sympy as sp

from .ir import Statement, partial_sum_of, symbol
from .ops import Ones

# a temporary's name in a note, also right after the `dL/d` of an adjoint
# (also as the `d<name>` of a local derivative such as `dt_loss_0/dp`)
_TEMP_NAME = re.compile(
    r"(?:(?<=dL/d)|(?<=/d)|(?<= d)|(?<![A-Za-z0-9_]))(?:d_)?(?:t|_cse)_[A-Za-z0-9_]+"
)


class Namer:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def fresh(self, owner: str) -> sp.Symbol:
        index = self.counters.get(owner, 0)
        self.counters[owner] = index + 1
        return symbol(f"t_{owner}_{index}")


def name_temporaries(
    forward: list[Statement], backward: list[Statement], namer: Namer
) -> tuple[list[Statement], list[Statement], dict[sp.Symbol, sp.Symbol]]:
    renames: dict[sp.Symbol, sp.Symbol] = {}
    ones_names: set[str] = set()
    for statement in backward:
        if isinstance(statement.expr, Ones):
            name = _ones_name(statement.expr.dim, ones_names)
            ones_names.add(name)
            renames[statement.target] = symbol(name)
    for statement in forward + backward:
        if (
            statement.anonymous
            and not statement.target.name.startswith("d_")
            and statement.target not in renames
        ):
            new = namer.fresh(statement.owner)
            renames[statement.target] = new
            renames[symbol("d_" + statement.target.name)] = symbol("d_" + new.name)
    # a temporary read by several ops has running sums of its adjoint, `d_t_a_0'1`
    for statement in backward:
        adjoint = partial_sum_of(statement.target)
        if adjoint is not None and symbol(adjoint) in renames:
            suffix = statement.target.name[len(adjoint) :]
            renames[statement.target] = symbol(renames[symbol(adjoint)].name + suffix)

    def rename(statements: list[Statement]) -> list[Statement]:
        return [
            Statement(
                renames.get(s.target, s.target),
                s.expr.xreplace(renames),
                s.owner,
                s.phase,
                _rename_note(s.note, renames),
                s.anonymous,
            )
            for s in statements
        ]

    return rename(forward), rename(backward), renames


def _ones_name(dim: str | int, taken: set[str]) -> str:
    """`t_ones_batch`; `t_ones_32_rows` for a dim that is a number, since a node `ones`
    has temporaries `t_ones_<k>` (a name ending in `_<digits>` could be theirs)."""
    name = f"t_ones_{dim}"
    if re.search(r"_[0-9]+$", name):
        name += "_rows"
    while name in taken:  # a dim named `32_rows`'s and a dim 32's: never in practice
        name += "_"
    return name


def _rename_note(note: str, renames: dict[sp.Symbol, sp.Symbol]) -> str:
    if not note or ("t_" not in note and "_cse_" not in note):
        return note
    lookup = {old.name: new.name for old, new in renames.items()}
    return _TEMP_NAME.sub(lambda m: lookup.get(m.group(0), m.group(0)), note)

"""The one place generated names are made.

Spec names stay as they are; adjoints are `d_<name>`; every value the spec did not name
(an op inside a formula, a shared subexpression) is `t_<owner>_<k>`, numbered per owning
spec node in order of definition, so an edit in one node never renumbers another. The
ones that sum a batch (`ones @ d`) belong to no node: they are `t_ones_<dim>`, named for
the dim they are as long as, and a node's temporaries skip that name should it be theirs.
"""

from __future__ import annotations

import re

import sympy as sp

from .ir import Statement, symbol
from .ops import Ones

# a temporary's name in a note, also right after the `dL/d` of an adjoint
# (also as the `d<name>` of a local derivative such as `dt_loss_0/dp`)
_TEMP_NAME = re.compile(
    r"(?:(?<=dL/d)|(?<=/d)|(?<= d)|(?<![A-Za-z0-9_]))(?:d_)?(?:t|_cse)_[A-Za-z0-9_]+"
)


class Namer:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.taken: set[str] = set()

    def fresh(self, owner: str) -> sp.Symbol:
        while True:
            index = self.counters.get(owner, 0)
            self.counters[owner] = index + 1
            name = f"t_{owner}_{index}"
            if name not in self.taken:
                return symbol(name)

    def take(self, name: str) -> sp.Symbol:
        self.taken.add(name)
        return symbol(name)


def name_temporaries(
    forward: list[Statement], backward: list[Statement], namer: Namer
) -> tuple[list[Statement], list[Statement], dict[sp.Symbol, sp.Symbol]]:
    renames: dict[sp.Symbol, sp.Symbol] = {}
    for statement in backward:
        if isinstance(statement.expr, Ones):
            name = f"t_ones_{statement.expr.dim}"
            if name in namer.taken:  # ones of the same length in another dtype
                name += f"_{statement.expr.attrs[2]}"
            renames[statement.target] = namer.take(name)
    for statement in forward + backward:
        if (
            statement.anonymous
            and not statement.target.name.startswith("d_")
            and statement.target not in renames
        ):
            new = namer.fresh(statement.owner)
            renames[statement.target] = new
            renames[symbol("d_" + statement.target.name)] = symbol("d_" + new.name)

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


def _rename_note(note: str, renames: dict[sp.Symbol, sp.Symbol]) -> str:
    if not note or ("t_" not in note and "_cse_" not in note):
        return note
    lookup = {old.name: new.name for old, new in renames.items()}
    return _TEMP_NAME.sub(lambda m: lookup.get(m.group(0), m.group(0)), note)

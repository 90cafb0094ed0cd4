"""What the forward pass saves for the backward pass.

Joint CSE puts a subexpression that both passes use in the forward pass, so the backward
pass reads it from the cache. That costs one more saved array for the whole time between
the passes. When the subexpression is elementwise math of values the backward pass saves
anyway (the `tanh(softplus(s3))` of a Mish activation, the `sigmoid(s1)` of a swish), the
backward pass computes it again from those instead, as PyTorch's SiLU and Mish backward
kernels do: one array less in the cache and at the peak, for one more elementwise pass.
Tensor ops (matrix products, reductions, softmax) are never recomputed.
"""

from __future__ import annotations

import dataclasses

import sympy as sp

from ..ir import Statement
from ..ops import TensorOp
from ..reverse import adjoint_symbol
from .simplify import values_read


def recompute_elementwise(
    forward: list[Statement], backward: list[Statement]
) -> tuple[list[Statement], list[Statement], bool]:
    """Forward temporaries to recompute in backward, substituted into the backward lines;
    True when anything changed, so that the caller runs CSE over the backward lines again
    and inlines each temporary the forward pass now reads once."""
    definitions = {s.target: s.expr for s in forward}
    adjoints = {s.target for s in backward}
    # a value whose adjoint the backward pass names is a step of the derivation: it keeps
    # its forward line and name (an op's operand, say), so it is saved, not recomputed
    temporaries = {
        s.target for s in forward if s.anonymous and adjoint_symbol(s.target) not in adjoints
    }
    read_by_backward: set[sp.Basic] = set().union(*(s.expr.free_symbols for s in backward))
    shared = sorted(temporaries & read_by_backward, key=lambda symbol: symbol.name)
    if not shared:
        return forward, backward, False
    # a value read only for its shape (`u.shape[0]`) is not saved for its values: later
    # passes read the shape off another one, and tanh(u) is saved, as for the other inputs
    saved_anyway = values_read(backward) - set(shared)

    def expanded(temporary: sp.Symbol) -> sp.Expr:
        """The definition in terms of named values, through other temporaries."""
        expr = definitions[temporary]
        while inner := expr.free_symbols & temporaries:
            expr = expr.xreplace({item: definitions[item] for item in inner})
        return expr

    recomputed: dict[sp.Symbol, sp.Expr] = {}
    for temporary in shared:
        expr = expanded(temporary)
        if not expr.atoms(TensorOp) and expr.free_symbols <= saved_anyway:
            recomputed[temporary] = expr
    if not recomputed:
        return forward, backward, False
    backward = [dataclasses.replace(s, expr=s.expr.xreplace(recomputed)) for s in backward]
    return forward, backward, True

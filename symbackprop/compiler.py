"""The compiler driver: a straight line of pure stages.

spec -> graph -> reverse mode -> copy propagation -> shape donors -> inlining
-> dead code -> CSE -> what to save (recompute cheap values) -> shapes kept -> batch
sums -> dims read beside -> cancelled adjoints -> names -> emission.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from . import passes
from .build import Program, build_program
from .errors import SpecError
from .functions import finite_real
from .ir import Statement
from .naming import Namer, name_temporaries
from .ops import lowered, lowering_note
from .reverse import Backward, reverse_mode
from .spec import Spec, load_spec, parse_spec


@dataclass
class Optimized:
    """The program after every pass: what emission renders."""

    program: Program
    forward: list[Statement]
    backward: list[Statement]
    backward_info: Backward
    grads: dict[sp.Symbol, sp.Symbol | None]
    namer: Namer


def optimize(program: Program) -> Optimized:
    graph = program.graph
    info = reverse_mode(program)
    results = {value for value in info.grads.values() if value is not None}
    forward = [
        Statement(
            node.symbol,
            lowered(node.expr),
            node.owner,
            "forward",
            lowering_note(node.expr),
            anonymous=node.anonymous,
        )
        for node in graph.nodes
        if node.kind == "op"
    ]
    backward = passes.copy_propagation(info.statements, keep=results)
    backward = passes.shape_donors(backward, graph)
    forward = passes.inline_single_use(forward, backward)
    backward = passes.dead_code(backward, results)
    roots = {program.output} | set().union(*(s.expr.free_symbols for s in backward))
    if program.predict is not None:
        roots.add(program.predict)
    forward = passes.dead_code(forward, roots)
    forward, backward = passes.fold_numbers(forward), passes.fold_numbers(backward)
    _refuse_infinite_constants(forward + backward, program)
    forward, backward = passes.common_subexpressions(forward, backward)
    forward, backward, recomputed = passes.recompute_elementwise(forward, backward)
    if recomputed:  # the recomputed subexpressions may repeat within the backward pass
        backward = _backward_cse(forward, backward)
        forward = passes.inline_single_use(forward, backward)
    forward = passes.shapes_kept(forward, graph)
    backward = passes.batch_sums(backward, graph)
    backward = passes.dims_read_beside(backward, graph)
    # CSE can cancel an adjoint's terms (`B - d_g`, d_g = B): 0 filled out to its shape, and
    # the lines only the cancelled terms read are dead
    backward = passes.dead_code(passes.cancelled_adjoints(backward, graph), results)
    # CSE can turn two equal adjoints into `d_a = ...; d_b = d_a`: drop such copies too
    merged = passes.copy_propagation(backward, keep=results, equal_adjoints=True)
    if len(merged) < len(backward):  # the lines now read one adjoint: `d_a * w` may repeat
        merged = _backward_cse(forward, merged)
    backward = merged
    backward = passes.own_results(
        backward, {d: leaf for leaf, d in info.grads.items() if d is not None}
    )
    namer = Namer()
    forward, backward, renames = name_temporaries(forward, backward, namer)
    grads = {leaf: (renames.get(d, d) if d is not None else None) for leaf, d in info.grads.items()}
    return Optimized(program, forward, backward, info, grads, namer)


def _backward_cse(forward: list[Statement], backward: list[Statement]) -> list[Statement]:
    """CSE once more over the backward pass alone, after a pass made new repeats there;
    its temporaries are named clear of the forward pass's."""
    return passes.common_subexpressions([], backward, [s.target for s in forward])[1]


def _refuse_infinite_constants(statements: list[Statement], program: Program) -> None:
    """A constant past float64's range once SymPy folds it ((2 * w) ** maximum(1, 2000)
    is 2**2000.0 * w**2000.0) would be printed `inf`, a NameError at run time: it is the
    node's error instead."""
    for statement in statements:
        if not finite_real(statement.expr):
            locs = (node.loc for node in program.graph.nodes if node.owner == statement.owner)
            raise SpecError(
                "a constant is past float64's range once SymPy folds it",
                next((loc for loc in locs if loc is not None), program.spec.output_loc),
                statement.owner,
            )


def compile_spec(spec: Spec) -> str:
    """The generated module's source text for a validated spec."""
    from .emit import render

    return render(optimize(build_program(spec)))


def compile_text(text: str, file: str) -> str:
    return compile_spec(parse_spec(text, file))


def compile_file(path: str) -> str:
    return compile_spec(load_spec(path))

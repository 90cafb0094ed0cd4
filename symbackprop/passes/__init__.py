"""Optimization passes over the program of statements, each a pure function.

In pipeline order: `copy_propagation`, `shape_donors`, `inline_single_use`,
`dead_code`, `common_subexpressions`, `recompute_elementwise` (what to save), `shapes_kept`,
`batch_sums`, `dims_read_beside`, `cancelled_adjoints`, then naming and scheduling (`naming.py`).
"""

from .cse import common_subexpressions
from .saving import recompute_elementwise
from .simplify import (
    batch_sums,
    cancelled_adjoints,
    copy_propagation,
    dead_code,
    dims_read_beside,
    fold_numbers,
    inline_single_use,
    own_results,
    shape_donors,
    shapes_kept,
    shares_an_array,
)

__all__ = [
    "batch_sums",
    "cancelled_adjoints",
    "common_subexpressions",
    "copy_propagation",
    "dead_code",
    "dims_read_beside",
    "fold_numbers",
    "inline_single_use",
    "own_results",
    "recompute_elementwise",
    "shape_donors",
    "shapes_kept",
    "shares_an_array",
]

"""Optimization passes over the program of statements, each a pure function.

In pipeline order: `copy_propagation`, `shape_donors`, `inline_single_use`,
`dead_code`, `common_subexpressions`, `recompute_elementwise` (what to save),
`unshared_batch_sums`, then naming and scheduling (`naming.py`).
"""

from .cse import common_subexpressions
from .saving import recompute_elementwise
from .simplify import (
    copy_propagation,
    dead_code,
    fold_numbers,
    inline_single_use,
    own_results,
    shape_donors,
    unshared_batch_sums,
)

__all__ = [
    "common_subexpressions",
    "copy_propagation",
    "dead_code",
    "fold_numbers",
    "inline_single_use",
    "own_results",
    "recompute_elementwise",
    "shape_donors",
    "unshared_batch_sums",
]

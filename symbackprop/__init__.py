"""symbackprop: a symbolic-to-code gradient compiler.

A network spec becomes SymPy expressions, reverse mode derives its gradients with
common-subexpression elimination, and Jinja templates emit a standalone NumPy module
with the forward and the backward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .spec import Spec


def load_spec(path: str) -> Spec:
    from .spec import load_spec as _load

    return _load(path)


def compile_spec(spec: Spec) -> str:
    from .compiler import compile_spec as _compile

    return _compile(spec)

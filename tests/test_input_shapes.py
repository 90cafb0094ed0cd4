"""The generated module takes an input only of the shape its spec gives it.

NumPy broadcasts an array of other axes or sizes into a value of another shape with no
error: a target of [batch, 5] where the spec says [batch, 1] is spread over 5 columns, a
batch of 1 over the batch of another input, a bias of shape (1,) over every unit. Each is
a wrong loss, and gradients, that nothing reports. Drawn shapes of three inputs that share
named dims are held against the rule: a fixed dim is its number, a named dim has one size
in every input that has it.
"""

from __future__ import annotations

import re
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import compile_module

# s [k, k], a [n, 3], b [n, m], c [m]: k is given by s, twice; n first by a, m by b
SPEC = """
name: shared_dims
inputs: {s: [k, k], a: [n, 3], b: [n, m], c: [m]}
params: {w: [3]}
nodes:
  loss: sum(s) + sum(a * w) + sum(b * c)
"""
DIMS = {"s": ("k", "k"), "a": ("n", 3), "b": ("n", "m"), "c": ("m",)}


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return compile_module(SPEC, tmp_path_factory.mktemp("shared_dims"))


def _refused(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The first input, in the order of the spec, whose shape breaks the rule."""
    sizes: dict[str, int] = {}
    for name, dims in DIMS.items():
        shape = shapes[name]
        if len(shape) != len(dims):
            return name
        for dim, size in zip(dims, shape, strict=True):
            if size != (dim if isinstance(dim, int) else sizes.setdefault(dim, size)):
                return name
    return None


SHAPES = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=150, deadline=None)
@given(s=SHAPES, a=SHAPES, b=SHAPES, c=SHAPES, near=st.booleans())
def test_an_input_is_taken_exactly_when_its_shape_is_the_spec_s(
    module: ModuleType,
    s: tuple[int, ...],
    a: tuple[int, ...],
    b: tuple[int, ...],
    c: tuple[int, ...],
    near: bool,
) -> None:
    if near:  # most drawn shapes are far off: also try ones of the right axes
        s, a, b, c = (s + (2, 2))[:2], (a + (2, 3))[:2], (b + (2, 2))[:2], (c + (2,))[:1]
    shapes = {"s": s, "a": a, "b": b, "c": c}
    inputs = {name: np.ones(shape) for name, shape in shapes.items()}
    params = {"w": np.ones(3)}
    refused = _refused(shapes)
    if refused is None:
        loss, grads = module.value_and_grad(params, **inputs)
        assert loss == np.prod(s) + 3 * np.prod(a[:1]) + np.prod(b)
        assert grads["w"].shape == (3,)
        return
    message = f"{refused} has shape {shapes[refused]}, where the spec gives it"
    with pytest.raises(ValueError, match=re.escape(message)):
        module.value_and_grad(params, **inputs)


def test_the_message_names_the_dim_and_its_size(module: ModuleType) -> None:
    with pytest.raises(ValueError) as raised:
        module.forward(
            {"w": np.ones(3)}, s=np.ones((2, 2)), a=np.ones((4, 3)), b=np.ones((1, 2)), c=np.ones(2)
        )
    assert str(raised.value) == (
        "b has shape (1, 2), where the spec gives it ('n', 'm'), and n is 4 in an input before it"
    )


def test_two_axes_of_one_dim_are_compared_in_the_first_input(module: ModuleType) -> None:
    """Thirteenth review: in the first input that names a dim twice, `[k, k]`, each axis
    was any size, so a non-square s was broadcast as before."""
    right = {"a": np.ones((4, 3)), "b": np.ones((4, 2)), "c": np.ones(2)}
    with pytest.raises(ValueError, match=re.escape("s has shape (2, 1), where the spec")):
        module.value_and_grad({"w": np.ones(3)}, s=np.ones((2, 1)), **right)
    with pytest.raises(ValueError, match=re.escape("s has shape (1, 2), where the spec")):
        module.forward({"w": np.ones(3)}, s=np.ones((1, 2)), **right)

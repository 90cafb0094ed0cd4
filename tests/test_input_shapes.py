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
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import compile_module

# a [n, 3], b [n, m], c [m]: n is given first by a, m by b; every value is read
SPEC = """
name: shared_dims
inputs: {a: [n, 3], b: [n, m], c: [m]}
params: {w: [3]}
nodes:
  loss: sum(a * w) + sum(b * c)
"""
DIMS = {"a": ("n", 3), "b": ("n", "m"), "c": ("m",)}


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
            if isinstance(dim, int) and size != dim:
                return name
        if any(sizes.get(dim, size) != size for dim, size in zip(dims, shape, strict=True)):
            return name
        sizes.update((dim, size) for dim, size in zip(dims, shape, strict=True))
    return None


SHAPES = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=150, deadline=None)
@given(a=SHAPES, b=SHAPES, c=SHAPES, near=st.booleans())
def test_an_input_is_taken_exactly_when_its_shape_is_the_spec_s(
    module: ModuleType, a: tuple[int, ...], b: tuple[int, ...], c: tuple[int, ...], near: bool
) -> None:
    if near:  # most drawn shapes are far off: also try ones of the right axes
        a, b, c = (a + (2, 3))[-2:], (b + (2, 2))[-2:], (c + (2,))[-1:]
    shapes = {"a": a, "b": b, "c": c}
    inputs = {name: np.ones(shape) for name, shape in shapes.items()}
    params = {"w": np.ones(3)}
    refused = _refused(shapes)
    if refused is None:
        loss, grads = module.value_and_grad(params, **inputs)
        assert loss == 3 * np.prod(a[:1]) + np.prod(b)
        assert grads["w"].shape == (3,)
        return
    message = f"{refused} has shape {shapes[refused]}, where the spec gives it"
    with pytest.raises(ValueError, match=re.escape(message)):
        module.value_and_grad(params, **inputs)


def test_the_message_names_the_dim_and_its_size(module: ModuleType) -> None:
    with pytest.raises(ValueError) as raised:
        module.forward({"w": np.ones(3)}, a=np.ones((4, 3)), b=np.ones((1, 2)), c=np.ones(2))
    assert str(raised.value) == (
        "b has shape (1, 2), where the spec gives it ('n', 'm'), and n is 4 in an input before it"
    )


def test_a_dim_size_comes_from_the_first_input_that_has_it() -> None:
    source = (Path(__file__).parent.parent / "generated" / "mlp.py").read_text()
    assert 'x = _input_array(x, _DTYPE, "x", (_ANY_SIZE, 784))' in source
    assert 'y = _labels(y, np.int64, "y", (x.shape[0],))' in source

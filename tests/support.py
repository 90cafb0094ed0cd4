"""Shared test helpers: compile spec text into an imported module, and check gradients."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from symbackprop.compiler import compile_spec
from symbackprop.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GENERATED = ROOT / "generated"
_counter = itertools.count()


def import_source(source: str, directory: Path, name: str | None = None) -> ModuleType:
    """Write generated source to `directory` and import it under a unique module name."""
    name = name or f"sbp_generated_{next(_counter)}"
    path = directory / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compile_module(spec: Spec | str, directory: Path, dtype: str | None = None) -> ModuleType:
    """Compile a Spec (or spec YAML text) and import the result; `dtype` overrides the spec's."""
    if isinstance(spec, str):
        spec = parse_spec(spec, "test_spec.yaml")
    if dtype is not None:
        spec = dataclasses.replace(spec, dtype=dtype)
    return import_source(compile_spec(spec), directory)


def example_spec(name: str) -> Spec:
    return load_spec(EXAMPLES / f"{name}.yaml")


def random_inputs(module: ModuleType, rng: np.random.Generator, batch: int = 3) -> dict[str, np.ndarray]:
    """Random values for every input; named dims become `batch`, int inputs become labels."""
    inputs = {}
    for name, (shape, dtype) in module.INPUTS.items():
        concrete = tuple(batch if isinstance(dim, str) else dim for dim in shape)
        if dtype.startswith("int"):
            inputs[name] = rng.integers(0, _class_count(module), size=concrete)
        else:
            inputs[name] = rng.standard_normal(concrete)
    return inputs


def _class_count(module: ModuleType) -> int:
    """Labels index the last layer's width: the smallest last dim among the params."""
    widths = [shape[-1] for shape in module.PARAMS.values() if shape]
    return min(widths) if widths else 2


def float64_params(module: ModuleType, seed: int, jitter: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1000)
    return {
        name: value.astype(np.float64) + jitter * rng.standard_normal(value.shape)
        for name, value in module.init_params(seed).items()
    }


def central_differences(
    module: ModuleType,
    params: Mapping[str, np.ndarray],
    inputs: Mapping[str, Any],
    eps: float = 1e-6,
) -> dict[str, np.ndarray]:
    """d(output)/d(each of WRT) by central finite differences, element by element."""
    params = {name: np.array(value, dtype=np.float64) for name, value in params.items()}
    inputs = dict(inputs)
    result = {}
    for name in module.WRT:
        holder = params if name in params else inputs
        base = np.array(holder[name], dtype=np.float64)
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            for sign in (1.0, -1.0):
                shifted = base.copy()
                shifted[index] += sign * eps
                holder[name] = shifted
                grad[index] += sign * float(module.forward(params, **inputs)[0]) / (2 * eps)
        holder[name] = base
        result[name] = grad
    return result


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-8)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale

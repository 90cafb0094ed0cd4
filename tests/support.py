"""Shared test helpers: compile spec text into an imported module, and check gradients."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import math
import operator
import sys
from collections.abc import Callable, Mapping
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
        # float inputs carry the spec's dtype already: override theirs too (labels stay int)
        inputs = tuple(
            dataclasses.replace(item, dtype=dtype) if item.dtype.startswith("float") else item
            for item in spec.inputs
        )
        spec = dataclasses.replace(spec, dtype=dtype, inputs=inputs)
    return import_source(compile_spec(spec), directory)


def example_spec(name: str) -> Spec:
    return load_spec(EXAMPLES / f"{name}.yaml")


def random_inputs(
    module: ModuleType,
    rng: np.random.Generator,
    batch: int = 3,
    domains: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Random values for every input; named dims become `batch`, int inputs become labels.

    `domains` maps an input to the interval its values are drawn from (uniformly), so that
    `log` sees positive numbers; for an int input, to the [low, high) range of its labels.
    """
    domains = domains or {}
    inputs = {}
    for name, (shape, dtype) in module.INPUTS.items():
        concrete = tuple(batch if isinstance(dim, str) else dim for dim in shape)
        if dtype.startswith("int"):
            low, high = domains.get(name, (0, _class_count(module)))
            inputs[name] = rng.integers(int(low), int(high), size=concrete)
        elif name in domains:
            inputs[name] = rng.uniform(*domains[name], size=concrete)
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
    sample: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """d(output)/d(each of WRT) by central finite differences, element by element.

    With `sample`, a gradient of more elements than that is differenced at `sample` random
    elements only and the rest are NaN (compare with `sampled_error`): every element of
    MNIST's 784x256 weight would take a minute.
    """
    params = {name: np.array(value, dtype=np.float64) for name, value in params.items()}
    inputs = dict(inputs)
    rng = np.random.default_rng(seed)
    result = {}
    for name in module.WRT:
        holder = params if name in params else inputs
        base = np.array(holder[name], dtype=np.float64)
        indices: Any = np.ndindex(base.shape)
        grad = np.zeros_like(base)
        if sample is not None and base.size > sample:
            picked = rng.choice(base.size, size=sample, replace=False)
            indices = zip(*np.unravel_index(np.sort(picked), base.shape), strict=True)
            grad = np.full_like(base, np.nan)
        for index in indices:
            grad[index] = 0.0
            for sign in (1.0, -1.0):
                shifted = base.copy()
                shifted[index] += sign * eps
                holder[name] = shifted
                grad[index] += sign * float(module.forward(params, **inputs)[0]) / (2 * eps)
        holder[name] = base
        result[name] = grad
    return result


def sampled_error(actual: np.ndarray, differences: np.ndarray) -> float:
    """relative_error at the elements `central_differences(..., sample=n)` computed."""
    known = ~np.isnan(differences)
    assert known.any(), "no element was differenced"
    return relative_error(np.asarray(actual)[known], differences[known])


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-8)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


# --- PyTorch as a second reference ------------------------------------------------------


class TorchReference:
    """A spec read independently of the compiler and differentiated by PyTorch autograd.

    Formulas go through symbackprop's parser (it only builds a syntax tree) and are
    interpreted here with torch functions; the layer form is desugared here, not by
    spec.py, so a wrong desugaring cannot agree with itself. Runs in float64.
    """

    def __init__(self, text: str):
        import yaml

        self.spec = yaml.safe_load(text)
        self.nodes: dict[str, Callable[[Callable[[str], Any]], Any]] = {}
        self.last: str | None = None
        if "layers" in self.spec:
            self._desugar_layers()
        for name, formula in (self.spec.get("nodes") or {}).items():
            self.nodes[name] = self._formula(str(formula), {"out": self.last} if self.last else {})
        self.output = self._output()

    def _output(self) -> str:
        output = self.spec.get("output")
        if output is not None:
            return self.last if output == "out" and self.last else output
        return "loss" if "loss" in self.nodes else list(self.nodes)[-1]

    def _formula(self, text: str, aliases: dict[str, str]) -> Callable[[Callable[[str], Any]], Any]:
        from symbackprop.errors import Loc
        from symbackprop.formula import parse_formula

        term = parse_formula(text, Loc("reference", 1, 1), "reference")
        return lambda get: _torch_term(term, lambda name: get(aliases.get(name, name)))

    def _desugar_layers(self) -> None:
        import torch

        functional = torch.nn.functional
        builtin = {
            "identity": lambda s: s,
            "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
            "relu": torch.relu,
            "leaky_relu": lambda s: functional.leaky_relu(s, 0.01),
            "softplus": functional.softplus,
            "softmax": lambda s: torch.softmax(s, dim=-1),
        }
        current = self.spec.get("input") or next(iter(self.spec["inputs"]))
        for index, layer in enumerate(self.spec["layers"], start=1):
            activation = str(layer.get("activation", "identity"))
            act = builtin.get(activation)
            if act is None:
                custom = self._formula(activation, {"x": f"layer {index} pre"})
                self.nodes[f"layer {index} pre"] = _dense(current, index, layer.get("bias", True))
                self.nodes[f"layer {index}"] = custom
            else:
                dense = _dense(current, index, layer.get("bias", True))
                self.nodes[f"layer {index}"] = lambda get, dense=dense, act=act: act(dense(get))
            current = f"layer {index}"
        self.last = current
        if "loss" in self.spec:
            self.nodes["loss"] = _layer_loss(dict(self.spec["loss"]), current)

    def _run(
        self, params: Mapping[str, Any], inputs: Mapping[str, Any], wrt: tuple[str, ...]
    ) -> tuple[Callable[[str], Any], dict[str, Any]]:
        """A lookup of every value by name (nodes computed on first use), and the leaves."""
        import torch

        leaves: dict[str, Any] = {}
        for name, value in {**params, **inputs}.items():
            array = np.asarray(value)
            dtype = torch.int64 if array.dtype.kind in "iu" else torch.float64
            leaves[name] = torch.tensor(array, dtype=dtype, requires_grad=name in wrt)
        values: dict[str, Any] = dict(leaves)

        def get(name: str) -> Any:
            if name not in values:
                values[name] = self.nodes[name](get)
            return values[name]

        return get, leaves

    def value_and_grad(
        self, params: Mapping[str, Any], inputs: Mapping[str, Any], wrt: tuple[str, ...]
    ) -> tuple[float, dict[str, np.ndarray]]:
        import torch

        get, leaves = self._run(params, inputs, wrt)
        value = get(self.output)
        targets = [leaves[name] for name in wrt]
        grads = torch.autograd.grad(value, targets, allow_unused=True)
        return float(value.detach()), {
            name: np.zeros(leaves[name].shape) if grad is None else grad.numpy()
            for name, grad in zip(wrt, grads, strict=True)
        }

    def predict(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> np.ndarray:
        assert self.last is not None, "predict belongs to the layer form"
        get, _ = self._run(params, inputs, ())
        return get(self.last).detach().numpy()


def _dense(source: str, index: int, bias: bool) -> Callable[[Callable[[str], Any]], Any]:
    if bias:
        return lambda get: get(source) @ get(f"W{index}") + get(f"b{index}")
    return lambda get: get(source) @ get(f"W{index}")


def _layer_loss(fields: dict[str, Any], last: str) -> Callable[[Callable[[str], Any]], Any]:
    reduction = fields.pop("reduction", "mean")
    ((kind, target),) = fields.items()
    return lambda get: _torch_loss(kind, get(last), get(target), reduction)


def _torch_loss(kind: str, prediction: Any, target: Any, reduction: str) -> Any:
    import torch

    functional = torch.nn.functional
    if kind == "mse":
        return functional.mse_loss(prediction, target, reduction=reduction)
    if kind == "binary_cross_entropy_with_logits":
        return functional.binary_cross_entropy_with_logits(prediction, target, reduction=reduction)
    if kind == "softmax_cross_entropy":
        classes = prediction.shape[-1]
        return functional.cross_entropy(
            prediction.reshape(-1, classes), target.reshape(-1), reduction=reduction
        )
    raise KeyError(f"the torch reference has no loss {kind!r}")


@functools.cache
def _torch_functions() -> dict[str, Callable[..., Any]]:
    import torch

    functional = torch.nn.functional

    def every_axis(x: Any, axis: Any) -> Any:
        return tuple(range(x.ndim)) if axis is None else axis

    return {
        "exp": torch.exp,
        "log": torch.log,
        "log1p": torch.log1p,
        "sqrt": torch.sqrt,
        "abs": torch.abs,
        "sin": torch.sin,
        "cos": torch.cos,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "relu": torch.relu,
        "softplus": functional.softplus,
        "leaky_relu": lambda x, slope=0.01: functional.leaky_relu(x, float(slope)),
        "maximum": torch.maximum,
        "minimum": torch.minimum,
        "transpose": lambda a: a.permute(*reversed(range(a.ndim))),
        "sum": lambda x, axis=None: torch.sum(x, dim=every_axis(x, axis)),
        "mean": lambda x, axis=None: torch.mean(x, dim=every_axis(x, axis)),
        "max": lambda x, axis=None: torch.amax(x, dim=every_axis(x, axis)),
        "logsumexp": lambda x, axis=None: torch.logsumexp(x, dim=every_axis(x, axis)),
        "softmax": lambda x, axis=-1: torch.softmax(x, dim=axis),
        "log_softmax": lambda x, axis=-1: torch.log_softmax(x, dim=axis),
        **{
            kind: lambda p, t, reduction="mean", kind=kind: _torch_loss(kind, p, t, reduction)
            for kind in ("mse", "binary_cross_entropy_with_logits", "softmax_cross_entropy")
        },
    }


_TORCH_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
    "@": operator.matmul,
}


def _torch_term(term: Any, get: Callable[[str], Any]) -> Any:
    """The value of a parsed formula, with tensors from `get` and torch functions."""
    import torch

    from symbackprop import formula as fm

    if isinstance(term, fm.Num):
        return torch.tensor(float(term.value), dtype=torch.float64)
    if isinstance(term, fm.Ref):
        constants = {"pi": math.pi, "e": math.e}
        if term.name in constants:
            return torch.tensor(constants[term.name], dtype=torch.float64)
        return get(term.name)
    if isinstance(term, fm.Neg):
        return -_torch_term(term.operand, get)
    if isinstance(term, fm.BinOp):
        return _TORCH_BINOPS[term.op](_torch_term(term.left, get), _torch_term(term.right, get))
    if isinstance(term, fm.Call):
        args = [_torch_term(arg, get) for arg in term.args]
        kwargs = {key: _torch_constant(value) for key, value in term.kwargs}
        return _torch_functions()[term.func](*args, **kwargs)
    raise TypeError(f"the torch reference cannot read {term!r}")


def _torch_constant(term: Any) -> Any:
    from symbackprop import formula as fm

    if isinstance(term, fm.Seq):
        return tuple(_torch_constant(item) for item in term.items)
    if isinstance(term, fm.Ref) and term.name == "None":
        return None
    return term.value

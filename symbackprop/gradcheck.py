"""`symbackprop check`: compiled gradients against central finite differences.

The spec is compiled in memory twice: as written, and as a float64 variant on which the
finite differences run (float32 differences are too noisy to check to 1e-6). Generated
source -- our own output, never spec text -- is imported from a temporary file as a
fresh module. For a float32 spec, the float32 module's gradients are also compared with
the float64 ones, to float32 precision.

Finite differences: the five-point central stencil (error O(h**4)) at shrinking steps,
until two neighbouring steps agree. Where none do, a kink lies within the wider stencils
(a relu's, 1e-5 from the point): the compiled gradient is held to the nearest of the
estimates, what rounding can put in each added to its distance, as the steps short of
the kink are right.
What rounding alone can put in each difference, measured there (`rounding_noise`), is not
counted as an error: a gradient truly 0 would otherwise fail on noise. Where the loss
cancels to about 0 (sum(h - mean(h))) its values round in steps of its terms' size, often
alike at every nearby point; where every estimate is within such a step (of at most
FLAT_ROUNDING eps), that step is the noise.
Gradients larger than SAMPLE_SIZE elements are checked at that many random elements.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import linecache
import math
import sys
import tempfile
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from .errors import Loc, SpecError
from .spec import FLOAT_DTYPES, Spec

DEFAULT_TOLERANCE = 1e-6
FLOAT32_TOLERANCE = 1e-3
SAMPLE_SIZE = 64  # elements checked per gradient; larger gradients are sampled
MAX_ELEMENTS = 2**25  # a tensor larger than this is not allocated for a check
FIRST_DIM_SIZE = 3  # named dims get 3, 4, 5, ... in order: distinct, to catch transposes
STEPS = (1e-3, 1e-4, 1e-5, 1e-6)
AGREEMENT = 1e-9  # relative gap between the estimates of two steps that ends the search
_TEMPORARY_PREFIX = "symbackprop-check-"  # the folders generated modules are imported from
_FLOAT64 = "_float64"  # the module name's suffix for the float64 compile
# Rounding noise: the fourth difference of the loss at steps of NOISE_STEP is its rounding
# alone (the steps are too fine for the curvature to show). The differences of step h
# can be off by 1.5 noise / h; NOISE_SAFETY times that is not counted as an error, so that
# a gradient truly 0 (a loss constant in a param) does not fail on noise, while a wrong
# one of any size past the noise still does.
NOISE_SAFETY = 10.0
# times max(1, |x|): finer steps too often round alike, and under-measure the noise
NOISE_STEP = 1e-6
JITTER = 0.1  # params are init_params(seed) plus this much noise: zero biases put ReLUs on kinks
EPS = float(np.finfo(np.float64).eps)
# A loss that cancels to about 0 rounds in steps of its terms' size: flat in a param where
# every estimate is within such a step. Only a step this many eps of max(1, |L|) counts:
# a larger one (sum((w + 1e12) * x) - 1e12 * sum(x)) resolves nothing, wrong or right.
FLAT_ROUNDING = 1024
# Noise past this many eps of max(1, |L|) is suspect: a kink within its stencils shows as
# noise, so it is measured twice more, 20 noise steps to either side (`_median_noise`).
KINK_SUSPECT = 64
GRADIENT_FLOOR = 1e-8  # errors are relative to the gradient's size, or to this if smaller


@dataclass(frozen=True)
class InputPlan:
    """A concrete input of a check: its shape with every named dim sized, and for
    integer (label) inputs the number of classes the labels index."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    classes: int | None = None


@dataclass(frozen=True)
class Plan:
    dims: dict[str, int]
    inputs: tuple[InputPlan, ...]


def plan_inputs(spec: Spec, max_elements: int | None = MAX_ELEMENTS) -> Plan:
    """Sizes for named dims and label ranges. Labels index the last axis of the logits
    they feed, so the class count is read off each NegLogLikelihood op of the graph.
    An input, param or value with more than `max_elements` elements at these sizes is a
    SpecError."""
    from .build import build_program
    from .ops import NegLogLikelihood

    dims: dict[str, int] = {}
    for item in spec.inputs:
        for dim in item.shape:
            if isinstance(dim, str) and dim not in dims:
                dims[dim] = FIRST_DIM_SIZE + len(dims)
    graph = build_program(spec).graph
    classes: dict[str, int] = {}
    for node in graph.nodes:
        if node.kind == "op" and isinstance(node.expr, NegLogLikelihood):
            logits, labels = node.expr.args[:2]
            last = graph.type_of(logits).shape[-1]
            count = dims[last] if isinstance(last, str) else last
            classes[labels.name] = min(count, classes.get(labels.name, count))
    inputs = []
    for item in spec.inputs:
        shape = tuple(dims[dim] if isinstance(dim, str) else dim for dim in item.shape)
        _check_size(math.prod(shape), max_elements, f"input {item.name}", item.loc)
        label_count = None if item.dtype in FLOAT_DTYPES else classes.get(item.name, 2)
        inputs.append(InputPlan(item.name, shape, item.dtype, label_count))
    for param in spec.params:
        _check_size(math.prod(param.shape), max_elements, f"param {param.name}", param.loc)
    for node in graph.nodes:  # small inputs can make a large value: x @ y of [n, 1], [1, n]
        if node.kind == "op":
            shape = [dims[dim] if isinstance(dim, str) else dim for dim in node.type.shape]
            where = node.loc or spec.output_loc
            _check_size(math.prod(shape), max_elements, f"a value of node {node.owner}", where)
    return Plan(dims, tuple(inputs))


def _check_size(size: int, limit: int | None, what: str, loc: Loc) -> None:
    if limit is not None and size > limit:
        raise SpecError(
            f"{what} has {size} elements at the check's sizes: too large to check "
            f"(the limit is {limit})",
            loc,
        )


def float64_variant(spec: Spec) -> Spec:
    """The same spec in float64: the spec dtype and every float input's dtype."""
    inputs = tuple(
        dataclasses.replace(item, dtype="float64") if item.dtype in FLOAT_DTYPES else item
        for item in spec.inputs
    )
    return dataclasses.replace(spec, dtype="float64", inputs=inputs)


def load_generated(source: str, name: str) -> types.ModuleType:
    """Import generated source (ours, not the spec's text) from a temporary file, as a
    fresh module that is not registered in sys.modules."""
    with tempfile.TemporaryDirectory(prefix=_TEMPORARY_PREFIX) as directory:
        path = Path(directory) / f"{name}.py"
        path.write_text(source, encoding="utf-8")
        # the file goes with the folder: its lines stay known for an error's report
        linecache.cache[str(path)] = (len(source), None, source.splitlines(True), str(path))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def generated_frames(error: BaseException, spec: Spec) -> list[str]:
    """Where in the generated code `error` was raised, as `symbackprop compile` would
    write the module (the same lines): `mlp.py:212 in backward: <line>`, and which of
    the check's two compiles it was, when the spec is not float64 itself."""
    frames = [
        (frame.filename, frame.lineno, f" in {frame.name}: {frame.line}")
        for frame in traceback.extract_tb(error.__traceback__)
    ]
    if isinstance(error, SyntaxError) and error.filename:  # the module did not even parse
        frames.append((error.filename, error.lineno, f": {(error.text or '').strip()}"))
    shown = []
    for filename, line, what in frames:
        path = Path(filename)
        if not _is_checked_source(path):
            continue
        variant = path.stem.endswith(_FLOAT64) and spec.dtype != "float64"
        where = f"{spec.name}.py:{line}" + (" (compiled in float64)" if variant else "")
        shown.append(f"{where}{what}")
    return shown


def _is_checked_source(path: Path) -> bool:
    return path.parent.name.startswith(_TEMPORARY_PREFIX)


def _forget_sources() -> None:
    """Drop the generated sources `load_generated` left in linecache for error reports."""
    for filename in [name for name in linecache.cache if _is_checked_source(Path(name))]:
        del linecache.cache[filename]


# --- random points ------------------------------------------------------------------


@dataclass
class Point:
    params: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]

    def holder(self, name: str) -> dict[str, np.ndarray]:
        return self.params if name in self.params else self.inputs


def random_point(module: types.ModuleType, plan: Plan, seed: int, positive: bool = False) -> Point:
    """float64 params near `init_params(seed)` and random inputs; `positive` moves every
    float away from zero and below it (for specs that take logs or square roots)."""
    rng = np.random.default_rng(seed)
    params = {
        name: value.astype(np.float64) + JITTER * rng.standard_normal(value.shape)
        for name, value in module.init_params(seed).items()
    }
    inputs: dict[str, np.ndarray] = {}
    for item in plan.inputs:
        if item.classes is not None:
            inputs[item.name] = rng.integers(0, item.classes, size=item.shape).astype(item.dtype)
        else:
            inputs[item.name] = rng.standard_normal(item.shape)
    if positive:
        params = {name: np.abs(value) + 0.5 for name, value in params.items()}
        inputs = {
            name: value if value.dtype.kind == "i" else np.abs(value) + 0.5
            for name, value in inputs.items()
        }
    return Point(params, inputs)


def finite_point(module: types.ModuleType, plan: Plan, seed: int, loc: Loc) -> Point:
    """A random point where the output is finite: normal values first, positive ones next."""
    for positive in (False, True):
        point = random_point(module, plan, seed, positive)
        with np.errstate(all="ignore"):
            value = module.forward(point.params, **point.inputs)[0]
        if np.all(np.isfinite(value)):
            return point
    raise SpecError(
        f"the output of {module.SPEC_NAME} is not finite at random points (seed {seed}), "
        "not even with positive values: nothing to check",
        loc,
    )


# --- finite differences -------------------------------------------------------------


def sample_indices(
    shape: tuple[int, ...], rng: np.random.Generator, limit: int = SAMPLE_SIZE
) -> list[tuple[int, ...]]:
    """Every index of a small tensor; `limit` distinct ones, in order, of a large one."""
    size = math.prod(shape)
    flat = np.arange(size) if size <= limit else np.sort(rng.choice(size, limit, replace=False))
    return [tuple(int(i) for i in np.unravel_index(int(index), shape)) for index in flat]


def stencil_estimates(
    f: Callable[[float], float], x: float, steps: tuple[float, ...] = STEPS, noise: float = 0.0
) -> tuple[list[float], int | None]:
    """The five-point estimates of df/dx at shrinking steps, up to the first two
    neighbours that agree to AGREEMENT, or to what rounding (`noise`, f's) can put in the
    finer one, and the index of the wider of those (None: no two agree, and every step is
    estimated). Where rounding is large (a loss of 1e8 + w * x), the wide steps agree to
    it; the fine ones, noise alone, could agree by chance, as two equal roundings."""
    estimates: list[float] = []
    for h in steps:
        estimates.append((8 * (f(x + h) - f(x - h)) - (f(x + 2 * h) - f(x - 2 * h))) / (12 * h))
        if len(estimates) >= 2:
            a, b = estimates[-2:]
            if abs(a - b) <= AGREEMENT * max(abs(a), abs(b)) + rounding_allowance(noise, h):
                return estimates, len(estimates) - 2
    return estimates, None


def rounding_allowance(noise: float, step: float) -> float:
    """What rounding of f by `noise` can put in a five-point estimate of step `step`
    (1.5 noise / step), NOISE_SAFETY times over."""
    return NOISE_SAFETY * 1.5 * noise / step


def rounding_noise(f: Callable[[float], float], x: float) -> float:
    """How far rounding moves f near x: a quarter of its fourth difference (five values,
    each off by up to the noise) at steps of 1 and 3 NOISE_STEP, where a smooth f's own
    fourth difference is far below rounding; never less than one rounding of f itself.
    A kink within 6 NOISE_STEP of x shows as noise too: that element is then held only
    to what its differences resolve (rare: params are jittered off their init)."""
    center = f(x)
    noise = EPS * abs(center)
    unit = NOISE_STEP * max(1.0, abs(x))
    for step in (unit, 3 * unit):
        outer = f(x - 2 * step) + f(x + 2 * step)
        inner = f(x - step) + f(x + step)
        noise = max(noise, abs(outer - 4 * inner + 6 * center) / 4)
    return noise


def relative_error(
    actual: np.ndarray,
    expected: np.ndarray,
    floor: float = GRADIENT_FLOOR,
    noise: np.ndarray | None = None,
) -> float:
    """max |actual - expected| over the larger of the two magnitudes (or `floor`); with
    `noise`, what rounding alone could put in each element of `expected` is not counted."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = _scale(actual, expected, floor)
    gaps = np.abs(actual - expected)
    if noise is not None:
        gaps = np.maximum(gaps - noise, 0.0)
    return float(np.max(gaps, initial=0.0)) / scale


def _scale(actual: np.ndarray, expected: np.ndarray, floor: float = GRADIENT_FLOOR) -> float:
    """What `relative_error` divides by: the larger magnitude of the two, or `floor`."""
    return max(
        float(np.max(np.abs(expected), initial=0.0)),
        float(np.max(np.abs(actual), initial=0.0)),
        floor,
    )


def _unresolved(actual: np.ndarray, expected: np.ndarray, noise: np.ndarray) -> float:
    """The largest rounding allowance relative to the gradient's size; 0 for a gradient of
    0 (all within the floor), which is held to the floor as it is (the max gate's inputs
    in examples/gates.yaml)."""
    scale = _scale(actual, expected, floor=0.0)
    return float(np.max(noise, initial=0.0)) / scale if scale > GRADIENT_FLOOR else 0.0


# --- the check ----------------------------------------------------------------------


class GradientShapeError(Exception):
    """The generated code returned a gradient not shaped like its value (a bug of ours)."""

    def __init__(self, name: str, got: tuple[int, ...], wanted: tuple[int, ...]):
        super().__init__(f"the gradient of {name} has shape {got}, but {name} has shape {wanted}")


@dataclass(frozen=True)
class GradientResult:
    name: str
    size: int
    checked: int
    error: float  # worst relative error against finite differences (float64)
    float32_error: float | None = None  # the float32 module's gradient against float64's
    # the most that rounding of the loss leaves unresolved, relative as `error` is: past
    # the tolerance (a loss of 1e10 + ...), an error within it says less than it seems to
    unresolved: float = 0.0


@dataclass(frozen=True)
class Report:
    spec: Spec
    seed: int
    dims: dict[str, int]
    results: tuple[GradientResult, ...]


def check_spec(spec: Spec, seed: int = 0) -> Report:
    from .compiler import compile_spec

    reference = float64_variant(spec)
    plan = plan_inputs(reference)
    module64 = load_generated(compile_spec(reference), f"{spec.name}{_FLOAT64}")
    module32 = load_generated(compile_spec(spec), spec.name) if spec.dtype != "float64" else None
    point = finite_point(module64, plan, seed, spec.output_loc)
    _, grads = module64.value_and_grad(point.params, **point.inputs)
    grads32 = module32.value_and_grad(point.params, **point.inputs)[1] if module32 else None
    rng = np.random.default_rng(seed + 1)
    results = []
    for name in module64.WRT:
        shape = np.shape(point.holder(name)[name])
        for gradients in (grads, grads32 or {}):
            if name in gradients and np.shape(gradients[name]) != shape:
                raise GradientShapeError(name, np.shape(gradients[name]), shape)
        indices = sample_indices(shape, rng)
        actual = np.array([grads[name][index] for index in indices])
        expected, noise = _differences(module64, point, name, indices, actual)
        float32_error = None
        if grads32 is not None:
            float32_error = relative_error(np.asarray(grads32[name], np.float64), grads[name])
        size = int(np.size(grads[name]))
        results.append(
            GradientResult(
                name,
                size,
                len(indices),
                relative_error(actual, expected, noise=noise),
                float32_error,
                _unresolved(actual, expected, noise),
            )
        )
    return Report(spec, seed, plan.dims, tuple(results))


def _differences(
    module: types.ModuleType,
    point: Point,
    name: str,
    indices: list[tuple[int, ...]],
    compiled: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """dL/d(name) at `indices` by finite differences, and how far rounding alone could move
    each (NOISE_SAFETY times 1.5 noise / h).

    Where no two steps agree (a kink within the wider stencils), the estimate nearest the
    `compiled` gradient is returned, its rounding allowance added to each distance: a
    fine step's is up to 1000 times a wide one's, and would let a gradient 1% off, or of
    the wrong sign, pass where rounding is large (a loss of 1e8 + w * x). The noise there,
    and wherever it is suspect, is `_median_noise`'s."""
    holder = point.holder(name)
    original = holder[name]
    shifted = np.array(original, dtype=np.float64)
    holder[name] = shifted

    try:
        estimates, noises = [], []
        for index, wanted in zip(indices, compiled, strict=True):
            f = _LossAlong(module, point, shifted, index)
            x = float(original[index])
            ulp = EPS * max(1.0, abs(f(x)))  # the unit KINK_SUSPECT and FLAT_ROUNDING count
            noise = rounding_noise(f, x)
            robust = noise > KINK_SUSPECT * ulp
            if robust:  # a kink within the noise's stencils, or a loss that cancels
                noise = _median_noise(f, x, noise)
            found, agreed = stencil_estimates(f, x, noise=noise)
            rounded = max(noise, _rounding_step(f.values, f(x)))
            if rounded <= FLAT_ROUNDING * ulp and all(
                abs(estimate) <= rounding_allowance(rounded, step)
                for estimate, step in zip(found, STEPS, strict=False)
            ):
                # flat: every estimate is rounding alone, least of it at the widest step
                noise, agreed = rounded, 0
            if agreed is None:
                if not robust:  # values that happened to round alike show no noise
                    noise = _median_noise(f, x, noise)
                # nearest, counting each estimate's own rounding on top of its distance: a
                # fine step's, 1000 times a wide one's, would let a wrong gradient that its
                # noisy estimate happens to land near pass where rounding is large
                agreed = min(
                    range(len(found)),
                    key=lambda i: abs(found[i] - wanted) + rounding_allowance(noise, STEPS[i]),
                )
            estimates.append(found[agreed])
            noises.append(rounding_allowance(noise, STEPS[agreed]))
            shifted[index] = original[index]
        return np.array(estimates, dtype=np.float64), np.array(noises, dtype=np.float64)
    finally:
        holder[name] = original


class _LossAlong:
    """The loss as a function of one element of `shifted` (the array the point holds in
    place of a param or input); each point evaluated once, as the estimates share them."""

    def __init__(
        self, module: types.ModuleType, point: Point, shifted: np.ndarray, index: tuple[int, ...]
    ):
        self.module, self.point, self.shifted, self.index = module, point, shifted, index
        self.values: dict[float, float] = {}

    def __call__(self, x: float) -> float:
        if x not in self.values:
            self.shifted[self.index] = x
            loss = self.module.forward(self.point.params, **self.point.inputs)[0]
            self.values[x] = float(loss)
        return self.values[x]


def _median_noise(f: _LossAlong, x: float, noise: float) -> float:
    """The median of `noise`, measured at x, and the noise 20 noise steps to either side:
    a kink within the stencil at x shows as noise (4e-6, where rounding is 1e-15), and
    values that happen to round alike as none; either is one of the three."""
    away = 20 * NOISE_STEP * max(1.0, abs(x))
    return sorted([rounding_noise(f, x - away), noise, rounding_noise(f, x + away)])[1]


def _rounding_step(values: dict[float, float], center: float) -> float:
    """The smallest nonzero change of the loss among the points evaluated: the step its
    values round in, where it is flat."""
    return min((abs(v - center) for v in values.values() if v != center), default=0.0)


# --- the command --------------------------------------------------------------------


def format_report(report: Report, tolerance: float, out: TextIO) -> bool:
    """Print one aligned line per gradient; True when every error is within tolerance."""
    spec = report.spec
    dims = ", ".join(f"{dim}={size}" for dim, size in report.dims.items())
    sizes = f", {dims}" if dims else ""
    print(f"{spec.file_name}: {spec.name} ({spec.dtype}) at seed {report.seed}{sizes}", file=out)
    print(f"worst relative error against central differences, tolerance {tolerance:g}:", file=out)
    width = max(len(result.name) for result in report.results)
    passed = True
    for result in report.results:
        within = result.error <= tolerance
        line = f"  {result.name:<{width}}  {result.error:9.2e}"
        if result.float32_error is not None:
            line += f"  float32 vs float64 {result.float32_error:9.2e}"
            within = within and result.float32_error <= FLOAT32_TOLERANCE
        line += "  ok" if within else "  FAIL"
        if within and result.unresolved > tolerance:
            line += f", but only to {result.unresolved:.0e}: the loss rounds too coarsely here"
        if result.checked < result.size:
            line += f"  ({result.checked} of {result.size} elements, at random)"
        print(line, file=out)
        passed = passed and within
    if report.results and any(r.float32_error is not None for r in report.results):
        print(
            f"float32 tolerance {FLOAT32_TOLERANCE:g}: the float32 module against the float64 one",
            file=out,
        )
    print("ok" if passed else "FAILED: gradients past tolerance", file=out)
    return passed


def run(args: argparse.Namespace) -> int:
    """`symbackprop check SPEC [--seed N] [--tolerance T]`."""
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    if args.seed < 0 or not tolerance > 0:
        print("symbackprop check: --seed must be >= 0 and --tolerance > 0", file=sys.stderr)
        return 2
    return check_file(args.spec, args.seed, tolerance)


def check_file(
    spec_path: str | Path,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    out: TextIO | None = None,
) -> int:
    """0 when every gradient is within tolerance, 1 otherwise (and when the generated
    code raises); a bad spec raises SpecError."""
    from .spec import load_spec

    spec = load_spec(spec_path)
    try:
        report = check_spec(spec, seed)
    except SpecError:
        raise
    except GradientShapeError as error:
        print(f"symbackprop check: {spec.file_name}: {error}", file=sys.stderr)
        print(f"A gradient must be shaped like its value: {_BUG}", file=sys.stderr)
        return 1
    except Exception as error:
        if _too_large(error):  # a value past the memory, not a fault of the code
            message = f"a value is too large to compute at the check's sizes: {error}"
            raise SpecError(message, spec.output_loc) from None
        frames = generated_frames(error, spec)
        if not frames:
            raise  # the compiler's own error: its traceback is the bug report
        print(f"symbackprop check: {spec.file_name}: the generated code raised", file=sys.stderr)
        print(f"  {type(error).__name__}: {error}", file=sys.stderr)
        for frame in frames:
            print(f"  at {frame}", file=sys.stderr)
        print(f"A spec that compiles must give code that runs: {_BUG}", file=sys.stderr)
        return 1
    finally:
        _forget_sources()
    return 0 if format_report(report, tolerance, out or sys.stdout) else 1


_BUG = "this is a bug in symbackprop. Please report it with the spec."


def _too_large(error: Exception) -> bool:
    return isinstance(error, MemoryError) or (
        isinstance(error, ValueError) and str(error).startswith("array is too big")
    )

"""Time one value_and_grad (loss and every parameter gradient) of a relu MLP with softmax
cross-entropy, side by side in one process:

- generated: the module symbackprop emits for the layer-form spec (compiled in memory);
- numpy: a clean hand-written NumPy backprop of the same network (below), written with
  care: in-place updates and out= where a value is dead. The ratios are to this one;
- textbook: the same backprop as course notes write it, new arrays for each layer's steps;
- torch: PyTorch eager CPU autograd, threads set to NumPy's BLAS threads;
- jax: jax.jit(jax.value_and_grad(loss)), when JAX is installed (trace and compile apart);
- gemm: the GEMM lower bound, only the matrix products forward and backward need, on
  preallocated arrays with out=.

All implementations must agree on the loss and gradients before anything is timed.

    python benchmarks/bench_runtime.py [--quick] [--dtype float32|float64|both] [--sizes a,b]
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import tempfile
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from common import (
    blas_threads,
    compile_mlp,
    describe_machine,
    format_seconds,
    import_jax,
    jax_trace_and_compile,
    jax_value_and_grad,
    load_average,
    print_table,
    round_robin,
    set_blas_threads,
    verdict,
)

from tests.support import relative_error

Params = dict[str, np.ndarray]
Runner = Callable[[], Any]


@dataclass(frozen=True)
class Size:
    key: str
    widths: tuple[int, ...]
    batch: int

    @property
    def n_layers(self) -> int:
        return len(self.widths) - 1

    @property
    def label(self) -> str:
        if len(set(self.widths)) == 1:
            return f"{self.n_layers}x{self.widths[0]} b={self.batch}"
        return "-".join(map(str, self.widths)) + f" b={self.batch}"


SIZES = {
    size.key: size
    for size in (
        Size("tiny-b1", (4, 8, 3), 1),
        Size("tiny-b32", (4, 8, 3), 32),
        Size("small", (784, 128, 10), 64),
        Size("medium", (784, 256, 256, 10), 128),
        Size("large", (1024, 2048, 2048, 1000), 256),
        # 20 layers of width 64 on a 64-wide input: the last layer's 64 outputs are the logits.
        Size("deep", (64,) * 21, 32),
    )
}
QUICK_SIZES = ("tiny-b1", "medium", "deep")
MEDIUM = "medium"
# Worst relative error (max abs difference / max abs reference) allowed against numpy.
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
ORDER = ("generated", "numpy", "textbook", "torch", "jax", "gemm")


@dataclass(frozen=True)
class Settings:
    budget: float  # seconds of timed passes per size and dtype
    min_passes: int
    max_passes: int
    sample_seconds: float  # a sample repeats a fast call until it lasts about this long


FULL = Settings(budget=12.0, min_passes=7, max_passes=300, sample_seconds=0.005)
QUICK = Settings(budget=1.0, min_passes=3, max_passes=50, sample_seconds=0.002)


@dataclass
class Problem:
    size: Size
    dtype: str
    module: ModuleType
    params: Params
    x: np.ndarray
    y: np.ndarray


@dataclass
class Result:
    size: Size
    dtype: str
    medians: dict[str, float]
    passes: int
    errors: dict[str, float]
    jax_compile: tuple[float, float] | None
    memory: dict[str, int]
    split: dict[str, tuple[float, float]] = field(
        default_factory=dict
    )  # name -> (forward, backward)


def make_problem(size: Size, dtype: str, directory: Path, seed: int = 0) -> Problem:
    """The generated module, its params (biases made nonzero) and a batch of data."""
    module = compile_mlp(size.widths, dtype, directory)
    rng = np.random.default_rng(seed)
    params = module.init_params(seed)
    for name, value in params.items():
        if name.startswith("b"):
            params[name] = (0.1 * rng.standard_normal(value.shape)).astype(dtype)
    x = rng.standard_normal((size.batch, size.widths[0])).astype(dtype)
    y = rng.integers(0, size.widths[-1], size=size.batch)
    return Problem(size, dtype, module, params, x, y)


# --- The hand-written NumPy backprop: what a careful engineer writes for this network. ---


def numpy_forward(
    params: Params, x: np.ndarray, y: np.ndarray
) -> tuple[np.generic, tuple[Any, ...]]:
    n_layers = len(params) // 2
    inputs = [x]  # the input of each layer; relu' is read off the relu's output
    h = x
    for i in range(1, n_layers + 1):
        s = h @ params[f"W{i}"]
        s += params[f"b{i}"]
        if i < n_layers:
            np.maximum(s, 0, out=s)
            inputs.append(s)
        h = s
    log_probs = h  # the logits, made log-probabilities in place: stable log-softmax
    log_probs -= log_probs.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(y)), y].mean()
    return loss, (params, inputs, log_probs, y)


def numpy_backward(cache: tuple[Any, ...]) -> Params:
    params, inputs, log_probs, y = cache
    d = np.exp(log_probs)  # dL/dlogits = (softmax - one_hot(y)) / batch
    d[np.arange(len(y)), y] -= 1
    d /= len(y)
    grads = {}
    for i in range(len(inputs), 0, -1):
        h = inputs[i - 1]
        grads[f"W{i}"] = h.T @ d
        grads[f"b{i}"] = d.sum(axis=0)
        if i > 1:
            d = d @ params[f"W{i}"].T
            d *= h > 0
    return grads


def numpy_value_and_grad(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[np.generic, Params]:
    loss, cache = numpy_forward(params, x, y)
    return loss, numpy_backward(cache)


# --- The same backprop as course notes write it: new arrays for each layer's steps, no out=,
# no in-place updates. The ratios are not to this one but to the careful one above; it shows
# how much the in-place work a compiler does for free is worth. ---


def textbook_forward(
    params: Params, x: np.ndarray, y: np.ndarray
) -> tuple[np.generic, tuple[Any, ...]]:
    n_layers = len(params) // 2
    inputs = [x]
    h = x
    for i in range(1, n_layers + 1):
        s = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n_layers:
            h = np.maximum(s, 0)
            inputs.append(h)
    shifted = s - s.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(y)), y].mean()
    return loss, (params, inputs, log_probs, y)


def textbook_backward(cache: tuple[Any, ...]) -> Params:
    params, inputs, log_probs, y = cache
    d = np.exp(log_probs)  # as CS231n's notes: probabilities, less 1 at each label
    d[np.arange(len(y)), y] -= 1
    d /= len(y)
    grads = {}
    for i in range(len(inputs), 0, -1):
        h = inputs[i - 1]
        grads[f"W{i}"] = h.T @ d
        grads[f"b{i}"] = d.sum(axis=0)
        if i > 1:
            d = (d @ params[f"W{i}"].T) * (h > 0)
    return grads


def textbook_value_and_grad(
    params: Params, x: np.ndarray, y: np.ndarray
) -> tuple[np.generic, Params]:
    loss, cache = textbook_forward(params, x, y)
    return loss, textbook_backward(cache)


# --- The other contenders. ---


def torch_runner(torch: ModuleType, problem: Problem) -> Runner:
    tensors = {
        name: torch.from_numpy(value.copy()).requires_grad_()
        for name, value in problem.params.items()
    }
    leaves = list(tensors.values())
    x, y = torch.from_numpy(problem.x), torch.from_numpy(problem.y)
    n_layers = problem.size.n_layers

    def run() -> tuple[Any, dict[str, Any]]:
        h = x
        for i in range(1, n_layers + 1):
            h = torch.addmm(
                tensors[f"b{i}"], h, tensors[f"W{i}"]
            )  # as nn.Linear: GEMM and bias fused
            if i < n_layers:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, y)
        grads = torch.autograd.grad(loss, leaves)
        return loss.detach(), dict(zip(tensors, grads, strict=True))

    return run


def jax_runner(jax: ModuleType, problem: Problem) -> tuple[Runner, tuple[float, float]]:
    """The jitted value_and_grad on device arrays, and (trace + lower, XLA compile) seconds."""
    function = jax_value_and_grad(jax, problem.size.n_layers)
    params = {name: jax.device_put(value) for name, value in problem.params.items()}
    x, y = jax.device_put(problem.x), jax.device_put(problem.y)
    trace, compile_ = jax_trace_and_compile(function, params, x, y)[:2]

    def run() -> Any:
        return jax.block_until_ready(function(params, x, y))

    return run, (trace, compile_)


def gemm_bound(problem: Problem) -> Runner:
    """Only the matrix products: s_i = h_{i-1} @ W_i, dW_i = h_{i-1}^T @ ds_i and, but for
    the first layer, dh_{i-1} = ds_i @ W_i^T, into preallocated arrays. With np.dot, the
    fastest call for them: it dispatches in 0.4-0.5 us where np.matmul takes 0.8."""
    rng = np.random.default_rng(1)
    widths, batch, dtype = problem.size.widths, problem.size.batch, problem.dtype

    def array(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    inputs = [array(batch, width) for width in widths[:-1]]
    weights = [array(fan_in, fan_out) for fan_in, fan_out in zip(widths, widths[1:], strict=False)]
    deltas = [array(batch, width) for width in widths[1:]]
    sums = [np.empty_like(delta) for delta in deltas]
    d_weights = [np.empty_like(weight) for weight in weights]
    d_inputs = [np.empty_like(h) for h in inputs[1:]]

    def run() -> None:
        for h, weight, s in zip(inputs, weights, sums, strict=True):
            np.dot(h, weight, out=s)
        for h, delta, d_weight in zip(inputs, deltas, d_weights, strict=True):
            np.dot(h.T, delta, out=d_weight)
        for delta, weight, d_h in zip(deltas[1:], weights[1:], d_inputs, strict=True):
            np.dot(delta, weight.T, out=d_h)

    return run


def contenders(
    problem: Problem, torch: ModuleType | None, jax: ModuleType | None
) -> tuple[dict[str, Runner], tuple[float, float] | None]:
    module, params, x, y = problem.module, problem.params, problem.x, problem.y
    runners: dict[str, Runner] = {
        # Positional for every contender: keywords would cost one of them a dict per call,
        # which is most of the peak-memory difference at the tiny sizes.
        "generated": functools.partial(module.value_and_grad, params, x, y),
        "numpy": functools.partial(numpy_value_and_grad, params, x, y),
        "textbook": functools.partial(textbook_value_and_grad, params, x, y),
    }
    jax_compile = None
    if torch is not None:
        runners["torch"] = torch_runner(torch, problem)
    if jax is not None:
        runners["jax"], jax_compile = jax_runner(jax, problem)
    runners["gemm"] = gemm_bound(problem)
    return runners, jax_compile


# --- Checking, timing, memory. ---


def worst_errors(runners: dict[str, Runner], dtype: str) -> dict[str, float]:
    """Worst relative error of each contender's loss and gradients against numpy's.

    Exits when one disagrees, or when the generated module returns another dtype: timing
    code that computes something else would mean nothing.
    """
    reference_loss, reference = runners["numpy"]()
    errors = {}
    for name, runner in runners.items():
        if name in ("numpy", "gemm"):  # the reference, and no gradients
            continue
        loss, grads = runner()
        if set(grads) != set(reference):
            sys.exit(f"{name}: gradients for {sorted(grads)}, expected {sorted(reference)}")
        arrays = {"loss": np.asarray(loss)} | {
            key: np.asarray(value) for key, value in grads.items()
        }
        expected = {"loss": np.asarray(reference_loss)} | reference
        if name == "generated":
            upcast = [key for key, value in arrays.items() if value.dtype != np.dtype(dtype)]
            if upcast:
                sys.exit(f"generated: {', '.join(upcast)} not {dtype}")
        errors[name] = max(relative_error(arrays[key], expected[key]) for key in expected)
        if errors[name] > TOLERANCE[dtype]:
            sys.exit(
                f"{name} disagrees with hand-written NumPy: "
                f"relative error {errors[name]:.2e} ({dtype})"
            )
    return errors


def peak_bytes(runner: Runner) -> int:
    """Peak bytes allocated during one call (tracemalloc sees NumPy's array buffers)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        runner()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


class BackwardOnly:
    """Times backward alone: each call gets a fresh cache, made untimed in `prepare`, so a
    backward that overwrites its cache in place is timed on the values it expects."""

    def __init__(
        self, forward: Callable[[], tuple[Any, Any]], backward: Callable[[Any], Any]
    ) -> None:
        self.forward, self.backward = forward, backward
        self.caches: list[Any] = []

    def prepare(self, repeats: int) -> None:
        self.caches = [self.forward()[1] for _ in range(repeats)]

    def __call__(self) -> Any:
        return self.backward(self.caches.pop())


def forward_backward_split(problem: Problem, settings: Settings) -> dict[str, tuple[float, float]]:
    module, params, x, y = problem.module, problem.params, problem.x, problem.y
    generated_forward = functools.partial(module.forward, params, x, y)
    numpy_forward_ = functools.partial(numpy_forward, params, x, y)
    runners = {
        "generated forward": generated_forward,
        "generated backward": BackwardOnly(generated_forward, module.backward),
        "numpy forward": numpy_forward_,
        "numpy backward": BackwardOnly(numpy_forward_, numpy_backward),
    }
    medians = round_robin(
        runners,
        settings.budget / 2,
        settings.min_passes,
        settings.max_passes,
        settings.sample_seconds,
    )[0]
    return {
        name: (medians[f"{name} forward"], medians[f"{name} backward"])
        for name in ("generated", "numpy")
    }


def measure(
    problem: Problem, torch: ModuleType | None, jax: ModuleType | None, settings: Settings
) -> Result:
    runners, jax_compile = contenders(problem, torch, jax)
    errors = worst_errors(runners, problem.dtype)
    medians, passes = round_robin(
        runners, settings.budget, settings.min_passes, settings.max_passes, settings.sample_seconds
    )
    memory = {name: peak_bytes(runners[name]) for name in ("generated", "numpy")}
    result = Result(problem.size, problem.dtype, medians, passes, errors, jax_compile, memory)
    if problem.size.key == MEDIUM:
        result.split = forward_backward_split(problem, settings)
    return result


# --- Report. ---


def print_times(results: Sequence[Result], dtype: str) -> None:
    print(
        f"value_and_grad, {dtype}: median seconds per call; "
        "ratios to hand-written NumPy and to the GEMM bound"
    )
    rows = []
    for result in (r for r in results if r.dtype == dtype):
        numpy_time, gemm_time = result.medians["numpy"], result.medians["gemm"]
        for name in (name for name in ORDER if name in result.medians):
            time_ = result.medians[name]
            error = f"{result.errors[name]:.1e}" if name in result.errors else ""
            label = result.size.label if name == ORDER[0] else ""
            rows.append(
                [
                    label,
                    name,
                    format_seconds(time_),
                    f"{time_ / numpy_time:.2f}",
                    f"{time_ / gemm_time:.2f}",
                    error,
                    str(result.passes),
                ]
            )
    print_table(["size", "impl", "time", "x numpy", "x GEMM", "max rel err", "passes"], rows)


def print_jax_compile(results: Sequence[Result]) -> None:
    rows = [
        [r.size.label, r.dtype, format_seconds(r.jax_compile[0]), format_seconds(r.jax_compile[1])]
        for r in results
        if r.jax_compile is not None
    ]
    if rows:
        print(
            "JAX jit, apart from the times above: trace + lower, and XLA compile, of value_and_grad"
        )
        print_table(["size", "dtype", "trace+lower", "XLA compile"], rows)


def print_split(results: Sequence[Result]) -> None:
    rows = [
        [
            r.size.label,
            r.dtype,
            name,
            format_seconds(forward),
            format_seconds(backward),
            f"{backward / forward:.2f}",
        ]
        for r in results
        for name, (forward, backward) in r.split.items()
    ]
    if rows:
        print("Forward and backward apart (backward on a fresh cache each call)")
        print_table(["size", "dtype", "impl", "forward", "backward", "bwd/fwd"], rows)


def print_memory(results: Sequence[Result]) -> None:
    print("Peak memory of one value_and_grad (tracemalloc: NumPy's allocations during the call)")
    rows = [
        [
            r.size.label,
            r.dtype,
            f"{r.memory['generated'] / 2**20:.3f} MiB",
            f"{r.memory['numpy'] / 2**20:.3f} MiB",
            f"{r.memory['generated'] / max(r.memory['numpy'], 1):.2f}",
        ]
        for r in results
    ]
    print_table(["size", "dtype", "generated", "numpy", "ratio"], rows)


def print_losses(results: Sequence[Result]) -> None:
    """Where the generated module is slower than hand-written NumPy."""
    rows = [
        [r.size.label, r.dtype, f"{r.medians['generated'] / r.medians['numpy']:.2f}"]
        for r in results
        if round(r.medians["generated"] / r.medians["numpy"], 2) > 1.0
    ]
    if not rows:
        print("The generated module is at least as fast as hand-written NumPy everywhere.\n")
        return
    print("Where the generated module loses to hand-written NumPy")
    print_table(["size", "dtype", "generated / numpy"], rows)


# Issue 5's runtime targets on float32: (size keys, what, the bound on the ratio).
AT_MOST, AT_LEAST = "<=", ">="
TARGETS = (
    (("tiny-b1", "tiny-b32"), "generated / numpy", AT_MOST, 0.75),
    (("tiny-b1", "tiny-b32"), "torch / generated", AT_LEAST, 4.0),
    (("small", "medium", "large"), "generated / numpy", AT_MOST, 1.0),
    (("medium",), "generated / GEMM", AT_MOST, 1.1),
    (("deep",), "generated / numpy", AT_MOST, 0.8),
    (("deep",), "generated / GEMM", AT_MOST, 1.6),
    (("medium",), "generated backward / forward", AT_MOST, 2.2),
    (tuple(SIZES), "peak memory generated / numpy", AT_MOST, 1.0),
)


def target_rows(results: Sequence[Result]) -> list[list[str]]:
    """Issue 5's targets, judged on the float32 figures of this run as printed (two decimals)."""
    rows = []
    for r in (r for r in results if r.dtype == "float32"):
        for keys, what, sense, bound in TARGETS:
            value = _ratio(r, what)
            if r.size.key not in keys or value is None:
                continue
            shown = round(value, 2)
            ok = shown <= bound if sense == AT_MOST else shown >= bound
            rows.append(
                [f"{r.size.label}: {what}", f"{shown:.2f}", f"{sense} {bound:g}", verdict(ok)]
            )
    return rows


def _ratio(r: Result, what: str) -> float | None:
    """The ratio a target names, or None when this run did not measure it."""
    if what == "generated backward / forward":
        if "generated" not in r.split:
            return None
        forward, backward = r.split["generated"]
        return backward / forward
    if what == "peak memory generated / numpy":
        return r.memory["generated"] / max(r.memory["numpy"], 1)
    numerator, denominator = (part.lower() for part in what.split(" / "))
    if numerator not in r.medians or denominator not in r.medians:
        return None
    return r.medians[numerator] / r.medians[denominator]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time value_and_grad: generated vs NumPy, PyTorch, JAX, GEMM bound."
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"sizes {','.join(QUICK_SIZES)}, fewer passes (~1 min)"
    )
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    parser.add_argument("--sizes", help=f"comma-separated, of: {','.join(SIZES)}")
    parser.add_argument(
        "--skip", default="", help="comma-separated contenders to leave out: torch,jax"
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads of NumPy's OpenBLAS and PyTorch, and with 1 of XLA (default: OpenBLAS's)",
    )
    args = parser.parse_args(argv)
    keys = args.sizes.split(",") if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    unknown = [key for key in keys if key not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {','.join(SIZES)}")
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    settings = QUICK if args.quick else FULL

    if args.threads is not None:
        _limit_threads(args.threads)
    skip = set(args.skip.split(","))
    torch = None if "torch" in skip else _import_torch(blas_threads())
    jax = None if "jax" in skip else import_jax()
    print(describe_machine())
    print(_torch_line(torch, skip))
    print(_jax_line(jax, skip))
    if os.getloadavg()[0] > (os.cpu_count() or 1) / 2 and blas_threads() > 1:
        print("The machine is busy: multi-threaded figures will be noisy; --threads 1 is steadier.")
    print()

    results = []
    with tempfile.TemporaryDirectory(prefix="sbp_bench_") as directory:
        for dtype in dtypes:
            for key in keys:
                print(f"measuring {SIZES[key].label} {dtype} ...", file=sys.stderr, flush=True)
                problem = make_problem(SIZES[key], dtype, Path(directory))
                results.append(measure(problem, torch, jax, settings))
    for dtype in dtypes:
        print_times(results, dtype)
    print_jax_compile(results)
    print_split(results)
    print_memory(results)
    print_losses(results)
    targets = target_rows(results)
    if targets:
        print("Issue 5 targets (float32)")
        print_table(["target", "measured", "wanted", ""], targets)
    print(f"at the end: {load_average()}")
    return 0


def _limit_threads(threads: int) -> None:
    """NumPy's OpenBLAS to `threads` threads (PyTorch follows it); one thread for XLA too,
    which reads its flags when JAX is first imported."""
    if not set_blas_threads(threads):
        sys.exit("--threads: cannot find NumPy's OpenBLAS to set its threads")
    if threads == 1:
        os.environ["XLA_FLAGS"] = " ".join(
            [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false"]
        ).strip()


def _import_torch(threads: int) -> ModuleType | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _torch_line(torch: ModuleType | None, skip: set[str]) -> str:
    if torch is None:
        return "PyTorch left out" if "torch" in skip else "PyTorch not installed"
    return (
        f"PyTorch {torch.__version__} eager CPU autograd, "
        f"torch.set_num_threads({torch.get_num_threads()}) as NumPy's BLAS threads"
    )


def _jax_line(jax: ModuleType | None, skip: set[str]) -> str:
    if jax is None:
        return "JAX left out" if "jax" in skip else "JAX not installed"
    flags = os.environ.get("XLA_FLAGS", "")
    threads = f"XLA_FLAGS={flags}" if flags else "XLA's own thread pool"
    return f"JAX {jax.__version__} jit on {jax.devices()[0].platform} ({threads})"


if __name__ == "__main__":
    sys.exit(main())

"""Shared by the benchmark scripts: the relu MLP specs, compiling them in memory, JAX, timing
and tables.

The benchmarks import symbackprop from this checkout (not from an installed copy), so a run
measures the working tree.
"""

from __future__ import annotations

import ctypes
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Before site-packages: a `pip install .` copy would otherwise shadow the code under test.
sys.path.insert(0, str(ROOT))

from symbackprop.compiler import compile_text  # noqa: E402
from tests.support import import_source  # noqa: E402

SPEC_FILE = "bench_mlp.yaml"


def mlp_spec(widths: Sequence[int], dtype: str, name: str = "bench_mlp") -> str:
    """Layer-form YAML of a relu MLP widths[0] -> ... -> widths[-1] with softmax cross-entropy.

    Every layer but the last has a relu; the last layer's output is the logits.
    """
    lines = [
        f"name: {name}",
        f"dtype: {dtype}",
        "inputs:",
        f"  x: [batch, {widths[0]}]",
        "  y: {shape: [batch], dtype: int64}",
        "layers:",
    ]
    lines += [f"  - {{dense: {width}, activation: relu}}" for width in widths[1:-1]]
    lines.append(f"  - {{dense: {widths[-1]}}}")
    lines.append("loss: {softmax_cross_entropy: y}")
    return "\n".join(lines) + "\n"


def compile_mlp(widths: Sequence[int], dtype: str, directory: Path) -> ModuleType:
    """Compile the MLP spec in memory and import the generated source from `directory`."""
    return import_source(compile_text(mlp_spec(widths, dtype), SPEC_FILE), directory)


def import_jax() -> ModuleType | None:
    """JAX with float64 enabled (float32 arrays stay float32), or None when not installed."""
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_value_and_grad(jax: ModuleType, n_layers: int) -> Callable[..., Any]:
    """jax.jit(jax.value_and_grad(loss)) of the same relu MLP; params named W1, b1, ..."""
    jnp = jax.numpy

    def loss(params: dict[str, Any], x: Any, y: Any) -> Any:
        h = x
        for i in range(1, n_layers + 1):
            h = h @ params[f"W{i}"] + params[f"b{i}"]
            if i < n_layers:
                h = jax.nn.relu(h)
        log_probs = jax.nn.log_softmax(h, axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=-1))

    return jax.jit(jax.value_and_grad(loss))


def jax_trace_and_compile(function: Any, *args: Any) -> tuple[float, float, Any]:
    """Seconds to trace and lower `function` at `args`, seconds to XLA-compile, the executable."""
    start = time.perf_counter()
    lowered = function.lower(*args)
    traced = time.perf_counter()
    compiled = lowered.compile()
    return traced - start, time.perf_counter() - traced, compiled


def describe_machine() -> str:
    """One line naming what the figures depend on: Python, NumPy, its BLAS threads, cores, and
    the load average (other processes on the machine make every figure noisier)."""
    return (
        f"Python {sys.version.split()[0]}, NumPy {np.__version__} "
        f"(BLAS threads: {blas_threads()}), {os.cpu_count()} cores, {load_average()}"
    )


def load_average() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def blas_threads() -> int:
    """Threads NumPy's OpenBLAS uses: asked of the loaded library, else the usual env/cpu rule."""
    function = _openblas_function("get_num_threads")
    if function is not None:
        return int(function())
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return os.cpu_count() or 1


def set_blas_threads(threads: int) -> bool:
    """Make NumPy's OpenBLAS use `threads` threads; False when its library cannot be found."""
    function = _openblas_function("set_num_threads")
    if function is None:
        return False
    function(ctypes.c_int(threads))
    return True


def _openblas_function(name: str) -> Any:
    """openblas_<name> of the OpenBLAS NumPy loaded, under any of its builds' symbol names."""
    symbols = (f"scipy_openblas_{name}64_", f"openblas_{name}64_", f"openblas_{name}")
    for library in _loaded_openblas():
        for symbol in symbols:
            function = getattr(library, symbol, None)
            if function is not None:
                return function
    return None


def _loaded_openblas() -> list[ctypes.CDLL]:
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted(
                {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
            )
    except OSError:
        return []
    return [ctypes.CDLL(path) for path in paths]


ORDER_SEED = 5  # the passes' orders: seeded, so that a rerun times the same sequence


def round_robin(
    functions: dict[str, Callable[[], Any]],
    budget: float,
    min_passes: int,
    max_passes: int,
    sample_seconds: float,
    hold_gc: bool = True,
) -> tuple[dict[str, float], int]:
    """Median seconds of one call of each function, and the number of passes.

    A pass takes one sample of every function, in an order shuffled from pass to pass (by
    a seeded generator: the same orders on every run). A rotated order would not do: each
    function would always follow the same neighbour, and one that shares arrays with it
    would always find them in the cache. A sample calls a fast function again
    and again for about `sample_seconds`, timing each call. The median is over every call
    of every pass: on a busy machine a BLAS thread that waits for a core stalls a few calls
    by milliseconds, and the median does not follow them. Passes stop once `budget` seconds
    have passed (but run at least `min_passes`, at most `max_passes`). A function with a
    `prepare(repeats)` attribute gets it called, untimed, before each of its samples.
    `hold_gc` keeps the garbage collector off while timing, as timeit does; turn it off where
    collection is part of the cost a user sees.
    """
    names = list(functions)
    # Older objects (SymPy's, torch's) out of the collector's sight: a collection costs
    # little then, and none needs to run between samples.
    gc.collect()
    gc.freeze()
    for name in names:  # warm up: first-call costs (caches, JIT dispatch) are not timed
        _sample(functions[name], 1, hold_gc)
    repeats = {name: _repeats_for(functions[name], sample_seconds, hold_gc) for name in names}
    calls: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(ORDER_SEED)
    start, passes = time.perf_counter(), 0
    while passes < max_passes and (passes < min_passes or time.perf_counter() - start < budget):
        for name in order.sample(names, len(names)):
            calls[name] += _sample(functions[name], repeats[name], hold_gc)
        passes += 1
    return {name: statistics.median(seconds) for name, seconds in calls.items()}, passes


def _repeats_for(function: Callable[[], Any], sample_seconds: float, hold_gc: bool) -> int:
    """How many calls last about `sample_seconds`, judged on the median call."""
    seconds = statistics.median(_sample(function, 3, hold_gc))
    return max(1, int(sample_seconds / max(seconds, 1e-9)))


def _sample(function: Callable[[], Any], repeats: int, hold_gc: bool) -> list[float]:
    """Seconds of each of `repeats` calls."""
    prepare = getattr(function, "prepare", None)
    if prepare is not None:
        prepare(repeats)
    if hold_gc:
        gc.disable()
    seconds = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        gc.enable()


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(cell) for cell in cells)
        parts = [first.ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
    print()


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"

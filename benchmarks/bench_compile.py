"""Compile time of symbackprop, in process after imports: a 10-layer relu MLP at width 16 and
at width 4096, 10 and 100 layers of width 64; the wall time of `symbackprop --version`; and,
when JAX is installed, JAX's trace + XLA compile of the same value_and_grad.

    python benchmarks/bench_compile.py [--quick] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import sympy
from common import (
    ROOT,
    SPEC_FILE,
    describe_machine,
    format_seconds,
    import_jax,
    jax_trace_and_compile,
    jax_value_and_grad,
    load_average,
    mlp_spec,
    print_table,
    round_robin,
    verdict,
)

from symbackprop.compiler import compile_text

NARROW, WIDE = "10 layers, width 16", "10 layers, width 4096"
SHALLOW, DEEP = "10 layers, width 64", "100 layers, width 64"
CASES = {
    NARROW: (16,) * 11,
    WIDE: (4096,) * 11,
    SHALLOW: (64,) * 11,
    DEEP: (64,) * 101,
}
JAX_BATCH = 32
DTYPE = "float32"


def compile_case(widths: Sequence[int]) -> str:
    return compile_text(mlp_spec(widths, DTYPE), SPEC_FILE)


class FreshCompile:
    """One compile of a case with SymPy's cache emptied first (untimed): the cases share their
    symbols, and a user's `symbackprop compile` starts with an empty cache too."""

    def __init__(self, widths: Sequence[int]) -> None:
        self.widths = widths

    def prepare(self, repeats: int) -> None:
        sympy.core.cache.clear_cache()

    def __call__(self) -> str:
        return compile_case(self.widths)


def compile_times(repeats: int) -> tuple[float, dict[str, float]]:
    """The first compile in this process (cold), then the median of `repeats` interleaved
    compiles of each case. The garbage collector runs as it would for a user."""
    start = time.perf_counter()
    compile_case(CASES[NARROW])
    cold = time.perf_counter() - start
    functions = {name: FreshCompile(widths) for name, widths in CASES.items()}
    medians = round_robin(functions, 0.0, repeats, repeats, 0.0, hold_gc=False)[0]
    return cold, medians


def version_times(runs: int) -> list[list[str]]:
    """Median wall time of `--version` in a fresh process, this checkout first on the path."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    commands = {"python -c pass (interpreter start, for scale)": [sys.executable, "-c", "pass"]}
    script = shutil.which("symbackprop")
    if script is not None:
        commands["symbackprop --version"] = [script, "--version"]
    commands["python -m symbackprop --version"] = [sys.executable, "-m", "symbackprop", "--version"]
    rows = []
    for label, command in commands.items():
        seconds = statistics.median(_wall_time(command, env) for _ in range(runs))
        target = "" if "pass" in label else "< 0.3 s"
        rows.append(
            [label, format_seconds(seconds), target, verdict(seconds < 0.3) if target else ""]
        )
    return rows


def _wall_time(command: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def jax_times(jax: ModuleType, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (trace + lower, XLA compile) seconds of jit(value_and_grad) for the 10- and
    100-layer cases, each repeat on a fresh function so no cache answers."""
    _jax_compile(jax, (4, 8, 3))  # JAX's own one-time start-up is not the network's compile
    result = {}
    for name in (SHALLOW, DEEP):
        runs = [_jax_compile(jax, CASES[name]) for _ in range(repeats)]
        result[name] = (
            statistics.median(r[0] for r in runs),
            statistics.median(r[1] for r in runs),
        )
    return result


def _jax_compile(jax: ModuleType, widths: Sequence[int]) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:], strict=False), start=1):
        params[f"W{i}"] = rng.standard_normal((fan_in, fan_out)).astype(DTYPE)
        params[f"b{i}"] = np.zeros(fan_out, DTYPE)
    x = rng.standard_normal((JAX_BATCH, widths[0])).astype(DTYPE)
    y = rng.integers(0, widths[-1], size=JAX_BATCH)
    return jax_trace_and_compile(jax_value_and_grad(jax, len(widths) - 1), params, x, y)[:2]


def print_profile(limit: int) -> None:
    """cProfile of one compile of the 100-layer spec (SymPy's cache emptied first): the top
    functions by own and by total time."""
    sympy.core.cache.clear_cache()
    profile = cProfile.Profile()
    profile.runcall(compile_case, CASES[DEEP])
    for key in ("tottime", "cumulative"):
        print(f"cProfile of compile_text, {DEEP}: top {limit} by {key}")
        pstats.Stats(profile, stream=sys.stdout).strip_dirs().sort_stats(key).print_stats(limit)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time symbackprop's compile (and JAX's).")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="also print cProfile's top N of the 100-layer compile",
    )
    args = parser.parse_args(argv)
    repeats, runs, jax_repeats = (3, 3, 1) if args.quick else (9, 9, 3)

    print(describe_machine())
    jax = import_jax()
    print(f"JAX {jax.__version__}" if jax is not None else "JAX not installed")
    print()

    cold, medians = compile_times(repeats)
    print(
        f"compile_text in process after imports, SymPy cache emptied before each, {DTYPE}; "
        f"median of {repeats}"
    )
    rows = [["first compile in the process (10 layers, width 16)", format_seconds(cold), "", ""]]
    rows += [[name, format_seconds(seconds), "", ""] for name, seconds in medians.items()]
    width_ratio, depth_ratio = medians[WIDE] / medians[NARROW], medians[DEEP] / medians[SHALLOW]
    rows.append(
        ["width 4096 / width 16", f"{width_ratio:.2f}x", "<= 1.2x", verdict(width_ratio <= 1.2)]
    )
    rows.append(
        ["100 layers / 10 layers", f"{depth_ratio:.2f}x", "<= 12x", verdict(depth_ratio <= 12)]
    )
    print_table(["compile", "time", "target", ""], rows)

    print(f"Wall time of a fresh process, median of {runs}")
    print_table(["command", "time", "target", ""], version_times(runs))

    if jax is not None:
        jax_compile = jax_times(jax, jax_repeats)
        print(
            f"symbackprop compile vs JAX jit(value_and_grad) trace + XLA compile, "
            f"batch {JAX_BATCH}, median of {jax_repeats}"
        )
        rows = []
        for name, (trace, xla) in jax_compile.items():
            ratio = medians[name] / (trace + xla)
            rows.append(
                [
                    name,
                    format_seconds(medians[name]),
                    format_seconds(trace),
                    format_seconds(xla),
                    f"{ratio:.2f}",
                    "< 1",
                    verdict(ratio < 1),
                ]
            )
        print_table(
            ["network", "symbackprop", "JAX trace+lower", "XLA compile", "sbp / JAX", "target", ""],
            rows,
        )

    if args.profile:
        print_profile(args.profile)
    print(f"at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark scripts stay runnable, and what they time computes the same thing: every
NumPy contender agrees with the generated module before a single call is timed. Nothing
here is timed (speed is measured by the scripts themselves, never by tests)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.support import ROOT


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the scripts import `common`
    return importlib.import_module("bench_runtime")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("key", ["tiny-b1", "small", "deep"])
def test_numpy_contenders_agree_with_the_generated_module(
    bench: ModuleType, key: str, dtype: str, tmp_path: Path
) -> None:
    problem = bench.make_problem(bench.SIZES[key], dtype, tmp_path)
    runners, jax_compile = bench.contenders(problem, torch=None, jax=None)
    assert set(runners) == {"generated", "numpy", "textbook", "gemm"}
    assert jax_compile is None
    errors = bench.worst_errors(runners, dtype)  # exits on any disagreement
    assert set(errors) == {"generated", "textbook"}
    assert max(errors.values()) <= bench.TOLERANCE[dtype]


def test_a_smoke_run_prints_every_table(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        bench.main(["--quick", "--sizes", "tiny-b1", "--dtype", "float32", "--skip", "torch,jax"])
        == 0
    )
    out = capsys.readouterr().out
    for heading in (
        "value_and_grad, float32",
        "Peak memory of one value_and_grad",
        "Issue 5 targets (float32)",
    ):
        assert heading in out
    for contender in ("generated", "numpy", "textbook", "gemm"):
        assert f" {contender} " in out


def test_the_calls_benchmark_compares_forms_that_agree(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    calls = importlib.import_module("bench_calls")
    for case in calls.cases():
        hand, generated = case.result(case.hand), case.result(case.generated)
        assert generated.shape == hand.shape, case.step
        assert generated.dtype == hand.dtype, case.step
        hand, generated = hand.astype(np.float64), generated.astype(np.float64)  # masks too
        assert abs(generated - hand).max() <= 1e-5 * max(1.0, abs(hand).max()), case.step
    calls.main(calls=1)  # a smoke run: each form once, the table printed
    out = capsys.readouterr().out
    assert "np.dot(ones, d)" in out and "table.take(y, axis=0)" in out and "_ZERO" in out
    assert "np.dot(d, np.ascontiguousarray(W.T))" in out

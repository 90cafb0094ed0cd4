"""Time the NumPy calls behind the generated code's less obvious forms, each beside the one
hand-written code uses for the same step (float32, one thread, timeit's best of 7):

- a matrix product: `h @ W` against `np.dot(h, W)`; and a weight gradient `h.T @ d`, whose
  inner dim is the batch, where np.dot's BLAS call is the slower one and the generated
  code prints `np.matmul` for a result of MATMUL_MIN_SIZE elements or more;
- a bias gradient: `d.sum(axis=0)` against `np.dot(ones, d)`, with the ones made already
  (the generated backward pass makes them once for every layer; their cost is shown apart);
- cross-entropy's backward step: softmax less the one-hot rows of the labels, by a scatter
  `p[rows, y] -= 1` against a `take` from the identity matrix of the classes; and the two
  past `ONE_HOT_TABLE_MAX_BYTES` of rows, where the generated code scatters too;
- cross-entropy's loss: the log-probabilities at the labels picked by indexing and summed,
  against one dot product with their one-hot rows from that table (while they are small);
- log_softmax's row sums: `.sum(axis=1, keepdims=True)` against a product with a column
  of ones (a module constant); and its row max, `.max(axis=1, keepdims=True)` against the
  max over axis 0 of the rows copied to columns;
- a dtype conversion that has nothing to do: a dtype's name against a dtype object;
- relu and its mask against a zero of the dtype, a 0-d array (`_ZERO`), rather than a Python
  0 or a scalar of the dtype;
- the ones themselves: `np.ones` against the module's helper `_ones`, which fills;
- an input gradient `d @ W.T` with W.T a view, as printed, against W.T copied first.

    python benchmarks/bench_calls.py
"""

from __future__ import annotations

import timeit
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import describe_machine, print_table, set_blas_threads

from symbackprop.emit import template_environment
from symbackprop.ops import MATMUL_MIN_SIZE, ONE_HOT_TABLE_MAX_BYTES

DTYPE = np.float32
CALLS = 20000


@dataclass(frozen=True)
class Case:
    step: str
    hand: str  # each statement leaves its result in `out`
    generated: str
    names: dict[str, Any]

    def result(self, statement: str) -> np.ndarray:
        names = {"np": np, **self.names}
        exec(statement, names)  # the benchmark's own statements, above
        return np.asarray(names["out"])


def cases() -> list[Case]:
    rng = np.random.default_rng(0)
    result = []
    for batch, fan_in, fan_out in ((1, 4, 8), (32, 64, 64), (128, 256, 256)):
        names = {
            "h": rng.standard_normal((batch, fan_in)).astype(DTYPE),
            "W": rng.standard_normal((fan_in, fan_out)).astype(DTYPE),
        }
        step = f"product {batch}x{fan_in} by {fan_in}x{fan_out}"
        result.append(Case(step, "out = h @ W", "out = np.dot(h, W)", names))
    for batch, fan_in, fan_out in ((32, 64, 64), (64, 784, 128), (128, 256, 256)):
        names = {
            "h": rng.standard_normal((batch, fan_in)).astype(DTYPE),
            "d": rng.standard_normal((batch, fan_out)).astype(DTYPE),
        }
        generated = (
            "out = np.matmul(h.T, d)"
            if fan_in * fan_out >= MATMUL_MIN_SIZE
            else "out = np.dot(h.T, d)"
        )
        step = f"weight gradient {fan_in}x{batch} by {batch}x{fan_out}"
        result.append(Case(step, "out = h.T @ d", generated, names))
    for batch, width in ((1, 8), (32, 64), (128, 256)):
        names = {
            "d": rng.standard_normal((batch, width)).astype(DTYPE),
            "ones": np.ones(batch, dtype=DTYPE),
        }
        step = f"bias gradient of {batch}x{width}"
        result.append(Case(step, "out = d.sum(axis=0)", "out = np.dot(ones, d)", names))
    result += [
        _one_hot_case(batch, classes, rng) for batch, classes in ((1, 10), (32, 10), (128, 10))
    ]
    for batch, classes in ((1, 3), (32, 10), (128, 10)):
        names = {
            "log_probs": np.log(rng.dirichlet(np.ones(classes), batch)).astype(DTYPE),
            "y": rng.integers(0, classes, batch),
            "table": np.eye(classes, dtype=DTYPE),
        }
        step = f"loss: picked log-probabilities summed, {batch}x{classes}"
        hand = "out = log_probs[np.arange(y.shape[0]), y].sum()"
        result.append(Case(step, hand, "out = np.vdot(table.take(y, axis=0), log_probs)", names))
    for batch, classes in ((1, 3), (32, 10), (128, 10)):
        names = {
            "exps": rng.random((batch, classes)).astype(DTYPE),
            "column": np.ones((classes, 1), dtype=DTYPE),
        }
        step = f"log_softmax's row sums, {batch}x{classes}"
        hand = "out = exps.sum(axis=1, keepdims=True)"
        result.append(Case(step, hand, "out = np.dot(exps, column)", names))
    for batch, classes in ((32, 3), (128, 10), (1024, 10)):
        names = {"logits": rng.standard_normal((batch, classes)).astype(DTYPE)}
        step = f"log_softmax's row max, {batch}x{classes}"
        hand = "out = logits.max(axis=1, keepdims=True)"
        result.append(Case(step, hand, "out = logits.T.copy().max(axis=0)[:, None]", names))
    names = {"x": rng.standard_normal((32, 8)).astype(DTYPE), "_DTYPE": np.dtype(DTYPE)}
    step = "an array of the dtype already, 32x8"
    result.append(
        Case(
            step, 'out = np.asarray(x, dtype="float32")', "out = np.asarray(x, dtype=_DTYPE)", names
        )
    )
    for batch, width in ((1, 8), (32, 64)):
        names = {
            "s": rng.standard_normal((batch, width)).astype(DTYPE),
            "_ZERO": np.zeros((), dtype=DTYPE),  # as the module defines it
            "scalar_zero": DTYPE(0),
        }
        for zero in ("0", "scalar_zero"):
            kind = "" if zero == "0" else ", against a dtype scalar"
            step = f"relu in place, {batch}x{width}{kind}"
            hand, generated = (f"out = np.maximum(s, {z}, out=s)" for z in (zero, "_ZERO"))
            result.append(Case(step, hand, generated, names))
            step = f"relu's mask, {batch}x{width}{kind}"
            result.append(Case(step, f"out = s > {zero}", "out = s > _ZERO", names))
    helper: dict[str, Any] = {"np": np}
    exec(_helper_source("ones"), helper)  # the generated module's own helper
    names = {"n": 32, "_DTYPE": np.dtype(DTYPE), "_ones": helper["_ones"]}
    step = "the ones of a batch of 32"
    result.append(Case(step, "out = np.ones(n, dtype=_DTYPE)", "out = _ones(n, _DTYPE)", names))
    return result


def _helper_source(name: str) -> str:
    """A helper's code as the compiler's own template environment writes it into a module."""
    return template_environment().get_template(f"helpers/{name}.py.j2").render()


def _one_hot_case(batch: int, classes: int, rng: np.random.Generator) -> Case:
    names = {
        "log_probs": np.log(rng.random((batch, classes)).astype(DTYPE)),
        "y": rng.integers(0, classes, batch),
        "table": np.eye(classes, dtype=DTYPE),
    }
    return Case(
        f"softmax - one_hot, {batch}x{classes}",
        "out = np.exp(log_probs); out[np.arange(y.shape[0]), y] -= 1",
        "out = np.exp(log_probs); out -= table.take(y, axis=0)",
        names,
    )


def dot_against_matmul() -> list[Case]:
    """Why a large weight gradient is not np.dot: `hand-written` is np.matmul here, and
    `generated` the np.dot it does not print from MATMUL_MIN_SIZE elements on."""
    rng = np.random.default_rng(2)
    cases = []
    for batch, fan_in, fan_out in ((32, 64, 64), (64, 64, 128), (64, 784, 128), (128, 256, 256)):
        names = {
            "h": rng.standard_normal((batch, fan_in)).astype(DTYPE),
            "d": rng.standard_normal((batch, fan_out)).astype(DTYPE),
        }
        step = f"weight gradient {fan_in}x{batch} by {batch}x{fan_out}"
        cases.append(Case(step, "out = np.matmul(h.T, d)", "out = np.dot(h.T, d)", names))
    return cases


def past_the_table() -> list[Case]:
    """The table's `take` against the scatter past ONE_HOT_TABLE_MAX_BYTES of rows, where
    the generated code scatters (`generated` is then the take it does not use), but for
    2 classes: a row of them is no larger than the scatter's own index and value."""
    rng = np.random.default_rng(1)
    itemsize = np.dtype(DTYPE).itemsize
    return [
        _one_hot_case(ONE_HOT_TABLE_MAX_BYTES * times // (classes * itemsize), classes, rng)
        for classes, times in ((64, 2), (64, 8), (10, 8), (10, 64), (2, 64))
    ]


def input_gradient() -> list[Case]:
    """Why the input gradient `d @ W.T` reads W.T as a view: `hand-written` here copies it
    to C order first, which OpenBLAS multiplies by a faster kernel at small sizes (32x64 by
    64x64 on AVX-512) but which costs a strided copy of W that grows as W does."""
    rng = np.random.default_rng(3)
    cases = []
    for batch, fan_in, fan_out in ((32, 64, 64), (32, 128, 128), (32, 256, 256), (128, 256, 256)):
        names = {
            "d": rng.standard_normal((batch, fan_out)).astype(DTYPE),
            "W": rng.standard_normal((fan_in, fan_out)).astype(DTYPE),
        }
        step = f"input gradient {batch}x{fan_out} by {fan_out}x{fan_in}"
        hand = "out = np.dot(d, np.ascontiguousarray(W.T))"
        cases.append(Case(step, hand, "out = np.dot(d, W.T)", names))
    return cases


def seconds(statement: str, names: dict[str, Any], calls: int) -> float:
    """Best of 7 of the mean time of one call of `statement`."""
    runs = timeit.repeat(statement, globals={"np": np, **names}, number=calls, repeat=7)
    return min(runs) / calls


def timed(cases: list[Case], calls: int) -> list[tuple[str, ...]]:
    table = []
    for case in cases:
        # the two forms must agree before either is timed
        hand, generated = case.result(case.hand), case.result(case.generated)
        np.testing.assert_allclose(generated, hand, rtol=1e-5, atol=1e-5, err_msg=case.step)
        a, b = seconds(case.hand, case.names, calls), seconds(case.generated, case.names, calls)
        shown = (
            text.removeprefix("out = ").split("; ")[-1] for text in (case.hand, case.generated)
        )
        table.append((case.step, *shown, f"{a * 1e6:.2f}", f"{b * 1e6:.2f}", f"{b / a:.2f}"))
    return table


def main(calls: int = CALLS) -> None:
    set_blas_threads(1)
    print(describe_machine())
    print()
    headers = ("step", "hand-written", "generated", "hand us", "generated us", "ratio")
    print_table(headers, timed(cases(), calls))
    print()
    print("np.dot against np.matmul (`hand-written` here) for a weight gradient, whose inner dim")
    print(f"is the batch: the generated code prints matmul from {MATMUL_MIN_SIZE} elements on")
    print_table(headers, timed(dot_against_matmul(), max(calls // 10, 1)))
    print()
    print(f"past {ONE_HOT_TABLE_MAX_BYTES} bytes of rows the generated code scatters as")
    print("hand-written code does, but for 2 classes (3 in float32), whose rows are no larger")
    print("than the scatter's own index and value: the take (the `generated` column, unused")
    print("there otherwise) makes an array as large as the softmax, more memory than the")
    print("scatter's")
    print_table(headers, timed(past_the_table(), max(calls // 10, 1)))
    print()
    print("the input gradient d @ W.T, W.T a view (generated) or copied first (`hand-written`")
    print("here): the copy wins only where the product is small")
    print_table(headers, timed(input_gradient(), max(calls // 10, 1)))


if __name__ == "__main__":
    main()

"""Time the NumPy calls behind the generated code's less obvious forms, each beside the one
hand-written code uses for the same step (float32, one thread, timeit's best of 7):

- a matrix product: `h @ W` against `np.dot(h, W)`;
- a bias gradient: `d.sum(axis=0)` against `np.dot(ones, d)`, with the ones made already
  (the generated backward pass makes them once for every layer; their cost is shown apart);
- cross-entropy's backward step: softmax less the one-hot rows of the labels, by a scatter
  `p[rows, y] -= 1` against a `take` from the identity matrix of the classes.

    python benchmarks/bench_calls.py
"""

from __future__ import annotations

import timeit
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import describe_machine, print_table, set_blas_threads

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
    for batch, width in ((1, 8), (32, 64), (128, 256)):
        names = {
            "d": rng.standard_normal((batch, width)).astype(DTYPE),
            "ones": np.ones(batch, dtype=DTYPE),
        }
        step = f"bias gradient of {batch}x{width}"
        result.append(Case(step, "out = d.sum(axis=0)", "out = np.dot(ones, d)", names))
    for batch in (1, 32, 128):
        names = {
            "log_probs": np.log(rng.random((batch, 10)).astype(DTYPE)),
            "y": rng.integers(0, 10, batch),
            "table": np.eye(10, dtype=DTYPE),
        }
        result.append(
            Case(
                f"softmax - one_hot, {batch}x10",
                "out = np.exp(log_probs); out[np.arange(y.shape[0]), y] -= 1",
                "out = np.exp(log_probs); out -= table.take(y, axis=0)",
                names,
            )
        )
    return result


def seconds(statement: str, names: dict[str, Any], calls: int) -> float:
    """Best of 7 of the mean time of one call of `statement`."""
    runs = timeit.repeat(statement, globals={"np": np, **names}, number=calls, repeat=7)
    return min(runs) / calls


def main(calls: int = CALLS) -> None:
    set_blas_threads(1)
    print(describe_machine())
    print()
    table = []
    for case in cases():
        # the two forms must agree before either is timed
        hand, generated = case.result(case.hand), case.result(case.generated)
        np.testing.assert_allclose(generated, hand, rtol=1e-5, atol=1e-5, err_msg=case.step)
        a, b = seconds(case.hand, case.names, calls), seconds(case.generated, case.names, calls)
        shown = (
            text.removeprefix("out = ").split("; ")[-1] for text in (case.hand, case.generated)
        )
        table.append((case.step, *shown, f"{a * 1e6:.2f}", f"{b * 1e6:.2f}", f"{b / a:.2f}"))
    headers = ("step", "hand-written", "generated", "hand us", "generated us", "ratio")
    print_table(headers, table)
    ones = seconds("np.ones(n, dtype=DTYPE)", {"n": 32, "DTYPE": "float32"}, calls)
    print(f"making the ones, np.ones(32, dtype=DTYPE): {ones * 1e6:.2f} us, once a backward pass")


if __name__ == "__main__":
    main()

"""`symbackprop check SPEC [--seed N] [--tolerance T]`: gradients against finite differences.

In-process through `symbackprop.cli.main` with capsys; a wrong gradient is made by wrapping
the modules `check` loads, so the exit-1 path is tested without a broken compiler.
"""

from __future__ import annotations

import linecache
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from symbackprop import gradcheck
from symbackprop.cli import main
from symbackprop.compiler import compile_text
from symbackprop.spec import parse_spec
from tests.support import EXAMPLES, ROOT

# mlp and mnist pass too, but their 784-wide first layer makes thousands of forward passes
# slow on a busy machine; RELU32 below covers float32, relu, labels and sampling
FAST_EXAMPLES = ["gates", "seed_graph", "seed_mlp", "sigmoid_4321", "swish_regression"]
LINE = re.compile(r"^  (\w+) +(\d\.\d\de[+-]\d\d)  ")


# float32, relu, labels, and gradients of more than SAMPLE_SIZE elements; small enough to be fast
RELU32 = """
name: relu32
dtype: float32
inputs:
  x: [batch, 10]
  y: {shape: [batch], dtype: int64}
layers:
  - {dense: 20, activation: relu}
  - {dense: 20, activation: relu}
  - {dense: 5}
loss: {softmax_cross_entropy: y}
"""


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out + captured.err


def gradient_lines(output: str) -> dict[str, str]:
    return {m.group(1): line for line in output.splitlines() if (m := LINE.match(line))}


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("example", FAST_EXAMPLES)
def test_examples_pass(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_check(capsys, str(EXAMPLES / f"{example}.yaml"))
    assert code == 0, output
    lines = gradient_lines(output)
    wrt = parse_spec((EXAMPLES / f"{example}.yaml").read_text(encoding="utf-8"), "x").wrt
    assert list(lines) == list(wrt)
    assert all(line.rstrip().endswith("ok") or "ok  (" in line for line in lines.values())
    # one aligned column: every error starts at the same offset
    assert len({LINE.match(line).start(2) for line in lines.values()}) == 1  # type: ignore[union-attr]
    assert output.rstrip().endswith("ok")


def test_output_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_check(capsys, str(EXAMPLES / "swish_regression.yaml"))
    assert code == 0
    assert output.splitlines()[:2] == [
        "swish_regression.yaml: swish_regression (float64) at seed 0, batch=3",
        "worst relative error against central differences, tolerance 1e-06:",
    ]
    for line in gradient_lines(output).values():
        assert float(LINE.match(line).group(2)) < 1e-9  # type: ignore[union-attr]


def test_large_gradients_are_sampled_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_check(capsys, write_spec(tmp_path, RELU32))
    assert code == 0, output
    lines = gradient_lines(output)
    assert lines["W1"].endswith(f"({gradcheck.SAMPLE_SIZE} of 200 elements, at random)")
    assert lines["b1"].endswith("ok")  # 20 elements: all checked
    # a float32 spec: its gradients are compared with the float64 variant's too
    assert all("float32 vs float64" in line for line in lines.values())
    assert "float32 tolerance 0.001" in output


def test_same_seed_same_output_other_seed_other_point(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(EXAMPLES / "sigmoid_4321.yaml")
    first = run_check(capsys, spec, "--seed", "5")
    assert run_check(capsys, spec, "--seed", "5") == first
    other = run_check(capsys, spec, "--seed", "6")
    assert other[0] == 0
    assert other[1] != first[1]
    assert "at seed 6" in other[1]


def corrupt(
    monkeypatch: pytest.MonkeyPatch, name: str, factor: float, which: Callable[[str], bool]
) -> None:
    """Make the modules `check` loads (those whose name `which` accepts) return
    gradient `name` times `factor`."""
    change_gradient(monkeypatch, name, lambda gradient: gradient * factor, which)


def change_gradient(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    change: Callable[[np.ndarray], np.ndarray],
    which: Callable[[str], bool] = lambda module_name: True,
) -> None:
    """Make the modules `check` loads (those whose name `which` accepts) return
    `change(gradient)` in place of gradient `name`."""
    load = gradcheck.load_generated

    def load_changed(source: str, module_name: str) -> types.ModuleType:
        module = load(source, module_name)
        if which(module_name):
            original = module.value_and_grad

            def value_and_grad(params: dict[str, np.ndarray], **inputs: np.ndarray) -> object:
                value, grads = original(params, **inputs)
                return value, {**grads, name: change(grads[name])}

            module.value_and_grad = value_and_grad
        return module

    monkeypatch.setattr(gradcheck, "load_generated", load_changed)


def test_a_wrong_gradient_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt(monkeypatch, "b1", 1.001, lambda name: True)
    code, output = run_check(capsys, str(EXAMPLES / "swish_regression.yaml"))
    assert code == 1
    lines = gradient_lines(output)
    assert lines["b1"].endswith("FAIL")
    assert float(LINE.match(lines["b1"]).group(2)) == pytest.approx(1e-3, rel=0.01)  # type: ignore[union-attr]
    assert all(lines[name].endswith("ok") for name in ("W1", "W2", "b2"))
    assert output.rstrip().endswith("FAILED: gradients past tolerance")


def test_tolerance_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt(monkeypatch, "W2", 1 + 1e-4, lambda name: True)
    spec = str(EXAMPLES / "swish_regression.yaml")
    assert run_check(capsys, spec)[0] == 1
    code, output = run_check(capsys, spec, "--tolerance", "1e-3")
    assert code == 0
    assert "tolerance 0.001" in output


def test_a_wrong_float32_gradient_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the float32 module is wrong: the float64 differences pass, the comparison
    of the float32 gradients with the float64 ones does not."""
    corrupt(monkeypatch, "W2", 1.01, lambda name: not name.endswith("_float64"))
    code, output = run_check(capsys, write_spec(tmp_path, RELU32))
    assert code == 1
    line = gradient_lines(output)["W2"]
    assert re.search(r"^  W2 +\d\.\d\de[-+]\d\d  float32 vs float64 +9\.\d\de-03  FAIL", line), line


RAISING_SEED = "    d_loss = _grad_output(grad_output, _DTYPE) + np.ones(2) @ np.ones(3)\n"


def break_float64_seed(monkeypatch: pytest.MonkeyPatch, line: str) -> None:
    """Replace the seed line `d_loss = _grad_output(grad_output, _DTYPE)` of the float64 module."""
    load = gradcheck.load_generated
    seed = "    d_loss = _grad_output(grad_output, _DTYPE)\n"

    def load_broken(source: str, name: str) -> types.ModuleType:
        if name.endswith("_float64"):
            assert seed in source
            source = source.replace(seed, line)
        return load(source, name)

    monkeypatch.setattr(gradcheck, "load_generated", load_broken)


def test_a_gradient_shaped_unlike_its_value_is_reported_not_dumped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the second review: a compiler bug that returned a (1, 1) gradient for a
    (4, 1) value made `check` raise IndexError with a traceback. It is reported as a bug
    of ours: which gradient, both shapes, exit 1."""
    change_gradient(monkeypatch, "b1", lambda gradient: gradient[:1])
    code, output = run_check(capsys, str(EXAMPLES / "swish_regression.yaml"))
    assert code == 1
    assert "the gradient of b1 has shape (1,), but b1 has shape (" in output
    assert "bug in symbackprop" in output


def test_generated_code_that_raises_is_reported_not_dumped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A compiler bug that makes code which raises: the error, the generated lines it
    passed through (numbered as `compile` writes the module) and where to report it;
    exit 1, no traceback."""
    break_float64_seed(monkeypatch, RAISING_SEED)
    code, output = run_check(capsys, str(EXAMPLES / "swish_regression.yaml"))
    assert code == 1
    assert "swish_regression.yaml: the generated code raised\n  ValueError: matmul" in output
    compiled = compile_text(
        (EXAMPLES / "swish_regression.yaml").read_text(encoding="utf-8"), "s.yaml"
    ).splitlines()
    number = compiled.index("    d_loss = _grad_output(grad_output, _DTYPE)") + 1
    assert f"  at swish_regression.py:{number} in backward: {RAISING_SEED.strip()}\n" in output
    assert re.search(r"  at swish_regression\.py:\d+ in value_and_grad: return loss, ", output)
    assert "float64)" not in output  # the spec is float64: one compile, the user's own
    assert "bug in symbackprop" in output
    assert not any(
        Path(name).parent.name.startswith("symbackprop-check-") for name in linecache.cache
    )


def test_generated_code_that_does_not_parse_is_reported_not_dumped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sixth review: a module that did not parse (`d_s = 0.sum(axis=(0, 1))`) made `check`
    end in the SyntaxError's traceback. It is reported as a bug of ours, at its line."""
    break_float64_seed(monkeypatch, "    d_loss = 0.sum(axis=(0, 1))\n")
    code, output = run_check(capsys, str(EXAMPLES / "swish_regression.yaml"))
    assert code == 1
    assert "swish_regression.yaml: the generated code raised\n  SyntaxError: " in output
    assert re.search(r"  at swish_regression\.py:\d+: d_loss = 0\.sum\(axis=\(0, 1\)\)\n", output)
    assert "bug in symbackprop" in output and "Traceback" not in output


def test_a_float32_specs_error_says_it_was_the_float64_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    break_float64_seed(
        monkeypatch, "    d_loss = _grad_output(grad_output, _DTYPE) + np.ones(2) @ np.ones(3)\n"
    )
    code, output = run_check(capsys, write_spec(tmp_path, RELU32, "relu32.yaml"))
    assert code == 1
    assert re.search(r"  at relu32\.py:\d+ \(compiled in float64\) in backward: ", output)


@pytest.mark.parametrize(
    "line",
    [
        "    d_loss = np.empty((2**40, 2**40))\n",  # NumPy: array is too big
        "    raise MemoryError('Unable to allocate 74.5 GiB')\n",
    ],
)
def test_a_value_past_the_memory_is_too_large_to_check_not_a_bug(
    line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inputs and params are sized before the check; a value computed from them can still
    be too large (`x @ transpose(x)` of a long x): a spec error, exit 2, not a bug report."""
    break_float64_seed(monkeypatch, line)
    code, output = run_check(capsys, str(EXAMPLES / "swish_regression.yaml"))
    assert code == 2
    assert "a value is too large to compute at the check's sizes: " in output
    assert output.startswith("symbackprop: ") and "swish_regression.yaml:" in output
    assert "bug in symbackprop" not in output


def test_an_error_of_the_compiler_itself_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not raised by generated code: the traceback is what a bug report needs."""

    def failing(source: str, name: str) -> types.ModuleType:
        raise RuntimeError("inside the compiler")

    monkeypatch.setattr(gradcheck, "load_generated", failing)
    with pytest.raises(RuntimeError, match="inside the compiler"):
        main(["check", str(EXAMPLES / "gates.yaml")])


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--tolerance", "0"], ["--tolerance", "-1"]])
def test_bad_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_check(capsys, str(EXAMPLES / "gates.yaml"), *args)
    assert code == 2
    assert "--seed must be >= 0 and --tolerance > 0" in output


def test_a_bad_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, "name: a\ninputs: {x: [3]}\nnodes:\n  y: sum(x) + zz\nwrt: [x]\n")
    code, output = run_check(capsys, spec)
    assert code == 2
    assert re.match(
        r"^symbackprop: .*spec\.yaml:4:\d+: node 'y': unknown name 'zz'$", output.strip()
    )


LABELS_SPEC = """
name: labels
inputs:
  x: [batch, 4]
  y: {shape: [batch], dtype: int64}
  z: [batch, classes]
  t: {shape: [batch], dtype: int32}
  unused: {shape: [batch], dtype: int64}
params: {W: [4, 7]}
nodes:
  l1: softmax_cross_entropy(x @ W, y)
  l2: softmax_cross_entropy(2 * z, t)
  loss: l1 + l2
wrt: [W, z]
"""


def test_labels_index_the_logits_they_feed() -> None:
    plan = gradcheck.plan_inputs(parse_spec(LABELS_SPEC, "labels.yaml"))
    assert plan.dims == {"batch": 3, "classes": 4}
    assert {item.name: item.classes for item in plan.inputs} == {
        "x": None,
        "y": 7,  # the width of x @ W
        "z": None,
        "t": 4,  # the named dim `classes`, at its check size
        "unused": 2,
    }
    assert {item.name: item.shape for item in plan.inputs}["z"] == (3, 4)


def test_labels_spec_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_check(capsys, write_spec(tmp_path, LABELS_SPEC), "--seed", "3")
    assert code == 0, output
    assert list(gradient_lines(output)) == ["W", "z"]


def test_logs_get_positive_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A spec that takes logs of its inputs is checked where they are positive."""
    spec = "name: logs\ninputs: {x: [3]}\nparams: {w: [3]}\nnodes:\n  loss: sum(log(x) * sqrt(w))\n"
    code, output = run_check(capsys, write_spec(tmp_path, spec))
    assert code == 0, output


def test_an_output_never_finite_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = "name: nans\ninputs: {x: [3]}\nnodes:\n  loss: sum(log(-exp(x)))\nwrt: [x]\n"
    code, output = run_check(capsys, write_spec(tmp_path, spec))
    assert code == 2
    assert "not finite at random points" in output


def test_too_large_to_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = "name: big\ninputs: {x: [b, 100000]}\nparams: {W: [100000, 1000]}\n"
    spec += "nodes:\n  loss: sum(x @ W)\n"
    code, output = run_check(capsys, write_spec(tmp_path, spec))
    assert code == 2
    assert re.search(
        r"spec\.yaml:3:\d+: param W has 100000000 elements .* too large to check", output
    )


def test_a_value_too_large_to_check_is_refused_before_it_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sixth review: inputs of 30000 elements whose product has 9e8 took 14 GB and were
    killed with no message; only inputs and params were held to the limit."""
    spec = "name: big\ninputs: {x: [30000, 1], y: [1, 30000]}\n"
    spec += "nodes:\n  c: sum(exp(x @ y))\nwrt: [x]\n"
    code, output = run_check(capsys, write_spec(tmp_path, spec))
    assert code == 2
    assert re.search(
        r"spec\.yaml:4:\d+: a value of node c has 900000000 elements .* too large to check",
        output,
    )


def test_kinks_do_not_fail_relu_networks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Zero biases would put every ReLU of the first layer on its kink: the jittered
    point and the step selection keep relu networks checkable at every seed."""
    spec = write_spec(tmp_path, RELU32)
    for seed in range(6):
        code, output = run_check(capsys, spec, "--seed", str(seed))
        assert code == 0, output


def test_check_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_check(capsys, str(EXAMPLES / "seed_graph.yaml"))[0] == 0
    assert list(tmp_path.iterdir()) == []
    assert "seed_graph" not in sys.modules  # the checked module is not registered either


def test_check_through_python_dash_m(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "symbackprop", "check", str(EXAMPLES / "swish_regression.yaml")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert completed.stdout.rstrip().endswith("ok")


# --- the finite differences themselves ------------------------------------------------------


def _agreed_estimate(f: Callable[[float], float], x: float) -> float:
    estimates, agreed = gradcheck.stencil_estimates(f, x)
    assert agreed is not None, estimates
    return estimates[agreed]


def test_derivative_of_a_polynomial_is_exact_to_rounding() -> None:
    assert _agreed_estimate(lambda x: x**3 - 2 * x, 1.5) == pytest.approx(3 * 1.5**2 - 2, rel=1e-12)


def test_derivative_skips_a_kink_inside_the_wide_stencils() -> None:
    """|x - 0.0015| at 0: the stencils of the widest step (1e-3, reaching 2e-3) straddle the
    kink and are off by a lot; the narrower steps agree on the true slope, -1."""
    assert _agreed_estimate(lambda x: abs(x - 0.0015), 0.0) == pytest.approx(-1.0, rel=1e-12)


def test_sampling_is_deterministic_and_distinct() -> None:
    first = gradcheck.sample_indices((300, 7), np.random.default_rng(1))
    assert first == gradcheck.sample_indices((300, 7), np.random.default_rng(1))
    assert len(set(first)) == len(first) == gradcheck.SAMPLE_SIZE
    assert gradcheck.sample_indices((2, 3), np.random.default_rng(1)) == list(np.ndindex(2, 3))


def test_relative_error() -> None:
    assert gradcheck.relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.002])) == pytest.approx(
        1e-3, rel=1e-3
    )
    assert gradcheck.relative_error(np.zeros(3), np.zeros(3)) == 0.0


CONSTANT_LOSSES = {
    "softmax_sum": (
        "inputs: {x: [3], y: [3]}\nnodes:\n  e: sum(softmax(1 / x)) + sum(y)\nwrt: [x, y]\n"
    ),
    "centred": (
        "inputs: {x: [batch, 3]}\nparams: {W: [3, 2]}\n"
        "nodes:\n  s: x @ W\n  c: s - mean(s, axis=0)\n  loss: sum(c)\n"
    ),
    "softmax_of_product": (
        "inputs: {x: [batch, 3]}\nparams: {W: [3, 4]}\nnodes:\n  e: sum(softmax(x @ W))\n"
    ),
}


@pytest.mark.parametrize("seed", ["0", "1", "9"])
@pytest.mark.parametrize("name", list(CONSTANT_LOSSES))
def test_a_loss_constant_in_a_param_passes(
    name: str, seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by review: the gradient is 0 (a softmax sums to 1; centred values sum to 0),
    the differences are rounding noise, and `check` failed them against a floor of 1e-8.
    What rounding alone can put in a difference (measured at each element) is not counted."""
    spec = write_spec(tmp_path, f"name: {name}\n" + CONSTANT_LOSSES[name])
    code, output = run_check(capsys, spec, "--seed", seed)
    assert code == 0, output


def test_a_wrong_gradient_of_a_constant_loss_still_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The noise allowance is rounding's own (about 1e-13 here): 1e-6 still fails."""
    spec = write_spec(tmp_path, "name: centred\n" + CONSTANT_LOSSES["centred"])

    def shifted(gradient: np.ndarray) -> np.ndarray:
        gradient = gradient.copy()
        gradient[0, 0] += 1e-6
        return gradient

    change_gradient(monkeypatch, "W", shifted)
    code, output = run_check(capsys, spec)
    assert code == 1 and gradient_lines(output)["W"].endswith("FAIL"), output


def test_a_gradient_of_a_tiny_loss_off_by_a_percent_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A loss of 1e-6 rounds at 1e-22: its gradients are held to that, not to a noise
    floor of a loss of 1 (third review: an allowance of 1e-9 |L| passed them flipped)."""
    spec = write_spec(
        tmp_path,
        "name: tiny\ninputs: {x: [batch, 3]}\nparams: {W: [3, 2]}\n"
        "nodes:\n  loss: 1e-6 * sum(tanh(x @ W))\n",
    )
    assert run_check(capsys, spec)[0] == 0
    corrupt(monkeypatch, "W", 1.01, lambda name: True)
    code, output = run_check(capsys, spec)
    assert code == 1 and gradient_lines(output)["W"].endswith("FAIL"), output


def test_a_flipped_gradient_of_a_loss_of_1e_minus_10_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Third review: with a noise floor of 1e-3 max(1, |L|), a loss this small passed
    with every gradient flipped or zeroed."""
    spec = write_spec(
        tmp_path,
        "name: tiny10\ninputs: {x: [batch, 3], y: [batch, 2]}\nparams: {W: [3, 2]}\n"
        "nodes:\n  p: x @ W\n  loss: 1e-10 * mean((p - y) ** 2)\n",
    )
    assert run_check(capsys, spec)[0] == 0
    corrupt(monkeypatch, "W", -1.0, lambda name: True)
    code, output = run_check(capsys, spec)
    assert code == 1 and gradient_lines(output)["W"].endswith("FAIL"), output


CENTERED = (
    "name: centered\ninputs: {x: [batch, 4]}\nparams:\n  W: [4, 3]\n"
    "nodes:\n  h: x @ W\n  loss: sum(h - mean(h, axis=0))\noutput: loss\n"
)


@pytest.mark.parametrize("seed", ["6", "15", "22", "23"])
def test_a_gradient_that_is_0_where_the_loss_cancels_to_0_passes(
    seed: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ninth review: the loss is about 1e-16 and rounds in steps of 2.2e-16, often alike at
    every point the noise was measured at: a noise of eps * |L| (1e-32) made the right
    gradient, 0, fail. A gradient of 1e-9 there still fails."""
    spec = write_spec(tmp_path, CENTERED)
    code, output = run_check(capsys, spec, "--seed", seed)
    assert code == 0, output
    change_gradient(monkeypatch, "W", lambda gradient: gradient + 1e-9)
    code, output = run_check(capsys, spec, "--seed", seed)
    assert code == 1 and gradient_lines(output)["W"].endswith("FAIL"), output


LEAKY_NEAR_A_KINK = (
    "name: l_leaky_sse\ninputs: {x: [batch, 4], y: [batch, 3]}\nlayers:\n"
    "  - {dense: 6, activation: leaky_relu}\n  - {dense: 3}\nloss: {mse: y, reduction: sum}\n"
)


def test_a_kink_within_the_wider_stencils_does_not_fail_a_right_gradient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ninth review: at seed 18 a pre-activation is 7.6e-6 from leaky_relu's kink. The
    steps' estimates of dL/dW1[0, 5] were -1.559, -1.669, -2.798 and -4.684 (the gradient):
    no two agreed, and the two widest, both across the kink, were taken. The step nearest
    the gradient is taken now; a gradient 1% off still fails."""
    spec = write_spec(tmp_path, LEAKY_NEAR_A_KINK)
    code, output = run_check(capsys, spec, "--seed", "18")
    assert code == 0, output
    corrupt(monkeypatch, "W1", 1.01, lambda name: True)
    code, output = run_check(capsys, spec, "--seed", "18")
    assert code == 1 and gradient_lines(output)["W1"].endswith("FAIL"), output


OFFSET = "name: offset\ninputs: {x: [3]}\nparams:\n  w: [1]\nnodes:\n  loss: sum(w * x) + 1e8\n"


@pytest.mark.parametrize("seed", ["0", "1"])
@pytest.mark.parametrize("change", ["1.01", "-1", "0"])
def test_where_rounding_is_large_no_fine_step_lets_a_wrong_gradient_pass(
    seed: str,
    change: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tenth review: a loss of 1e8 rounds at 1.5e-8, so no two steps agree to 1e-9; the
    estimate nearest the gradient was held to its own step's allowance, 0.33 at 1e-6, and
    a gradient 1% off (seed 0), flipped or zeroed (seed 1) passed. Each estimate's distance
    now counts its allowance, and the widest step's, 3.3e-4, decides."""
    spec = write_spec(tmp_path, OFFSET)
    assert run_check(capsys, spec, "--seed", seed)[0] == 0
    corrupt(monkeypatch, "w", float(change), lambda name: True)
    code, output = run_check(capsys, spec, "--seed", seed)
    assert code == 1 and gradient_lines(output)["w"].endswith("FAIL"), output


OFFSET_RELU = (
    "name: offrelu\ninputs: {x: [batch, 4]}\nparams: {W: [4, 4], V: [4, 4], b: [4]}\n"
    "nodes:\n  s: relu(x @ W + b)\n  loss: 1e8 + mean(s @ V)\n"
)
OFFSET_FOUR = "name: offlin\ninputs: {x: [4]}\nparams: {w: [4]}\nnodes:\n  loss: 1e8 + sum(w * x)\n"


def _largest_times(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(gradient: np.ndarray) -> np.ndarray:
        gradient = np.array(gradient)
        gradient.flat[np.argmax(np.abs(gradient))] *= factor
        return gradient

    return change


@pytest.mark.parametrize(
    ("spec_text", "seed", "name", "factor"),
    [(OFFSET_FOUR, "16", "w", 1.01), (OFFSET_RELU, "14", "V", -1.0)],
)
def test_noisy_fine_steps_neither_agree_nor_match_by_chance(
    spec_text: str,
    seed: str,
    name: str,
    factor: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Eleventh review: with a loss of 1e8 the finest steps are rounding alone. Two of them
    agreed to 1e-9 by chance (seed 16: w 1% off passed), and a negated element lay within
    the finest step's allowance of its noisy estimate (seed 14, the largest element of V).
    Steps now agree to what
    rounding can put in them, and each estimate's allowance is added to its distance."""
    spec = write_spec(tmp_path, spec_text)
    assert run_check(capsys, spec, "--seed", seed)[0] == 0
    change_gradient(monkeypatch, name, _largest_times(factor))
    code, output = run_check(capsys, spec, "--seed", seed)
    assert code == 1 and gradient_lines(output)[name].endswith("FAIL"), output


def test_a_gradient_the_loss_cannot_resolve_to_the_tolerance_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Eleventh review: with a loss of 1e10 + ..., rounding allows 3e-2 of the gradient,
    and `ok` against a tolerance of 1e-6 said more than the check knew. A gradient of 0
    (the max gate's inputs in examples/gates.yaml) is held to the floor, and says nothing."""
    spec = write_spec(tmp_path, OFFSET_RELU.replace("1e8", "1e10"))
    code, output = run_check(capsys, spec)
    assert code == 0
    assert re.search(r"  V +0.00e\+00  ok, but only to \de-0\d: the loss rounds too", output)
    code, output = run_check(capsys, str(EXAMPLES / "gates.yaml"))
    assert code == 0 and "only to" not in output


@pytest.mark.parametrize("factor", [1.01, 2.0])
def test_one_element_wrong_by_its_kink_fails(
    factor: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tenth review: at the element 7.6e-6 from leaky_relu's kink (seed 18, W1[0, 5]) the
    kink showed as rounding noise, 4e-6, and at the finest step any value from -3.7 to -65
    passed. The noise there is now the median of three measured 20 noise steps apart."""
    spec = write_spec(tmp_path, LEAKY_NEAR_A_KINK)

    def one_element(gradient: np.ndarray) -> np.ndarray:
        gradient = np.array(gradient)
        gradient[0, 5] *= factor
        return gradient

    change_gradient(monkeypatch, "W1", one_element)
    code, output = run_check(capsys, spec, "--seed", "18")
    assert code == 1 and gradient_lines(output)["W1"].endswith("FAIL"), output


def test_rounding_noise_is_rounding_not_curvature() -> None:
    """A smooth function rounds at eps |f|; a sum that cancels (1e8 + x - 1e8 - x) at the
    size of its terms, however small the result."""
    assert gradcheck.rounding_noise(lambda x: x**3, 1.5) < 1e-14
    assert 1e-10 < gradcheck.rounding_noise(lambda x: (x + 1e8) - 1e8 - x, 0.3) < 1e-6


def test_float64_variant_keeps_labels_int() -> None:
    spec = parse_spec((EXAMPLES / "mlp.yaml").read_text(encoding="utf-8"), "mlp.yaml")
    variant = gradcheck.float64_variant(spec)
    assert variant.dtype == "float64"
    assert {item.name: item.dtype for item in variant.inputs} == {"x": "float64", "y": "int64"}


BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def test_check_asks_for_one_blas_thread(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Set before NumPy's first import (in the CLI's own process): small products gain
    nothing from threads, which only contend for the cores of a busy machine."""
    for variable in BLAS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert main(["check", str(EXAMPLES / "seed_graph.yaml")]) == 0
    assert [os.environ[variable] for variable in BLAS_VARIABLES] == ["1", "1", "1"]


def test_check_keeps_the_users_blas_threads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert main(["check", str(EXAMPLES / "seed_graph.yaml")]) == 0
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"

"""`symbackprop compile --emit-tests`: a NumPy-only pytest file beside each module.

The emitted files are written, covered by --check and --stdout, lint-clean at ruff's
defaults, pass against the modules they sit beside (in a fresh pytest process, in either
import mode) and fail against a module whose gradient is wrong.
"""

from __future__ import annotations

import ast
import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from symbackprop.cli import main
from symbackprop.emit_tests import render_gradcheck_test
from symbackprop.spec import load_spec
from tests.support import EXAMPLES
from tests.test_check_command import LABELS_SPEC, RELU32

SMALL_EXAMPLES = ["gates", "seed_graph", "sigmoid_4321", "swish_regression"]
LOGS_SPEC = """
name: logs
inputs: {x: [3], v: [batch, 3]}
params: {w: [3]}
nodes:
  loss: sum(log(x) * sqrt(w)) + mean(v * w)
wrt: [w, x, v]
"""
# a 0-d param: NumPy makes arithmetic on a 0-d array a scalar, which the test must still
# be able to move one element of
SCALAR_SPEC = """
name: scalar32
dtype: float32
inputs: {x: [batch, 3]}
params: {w: [], v: [3]}
nodes:
  loss: sum(tanh(x * w + v))
"""
# the header names the spec file: a long name must not make the test file fail lint
LONG_FILE_NAME = "a_spec_file_with_a_rather_long_and_descriptive_name_for_its_logs"
# tenth review: the output's name was in the assert's message, 71 columns and its length
LONG_OUTPUT_SPEC = f"""
name: long_output
inputs: {{x: [3]}}
nodes:
  {"r" * 56}: sum(x * x)
wrt: [x]
"""
# a loss of 1e8 + ...: its rounding puts ~1e-5 in the differences of a gradient of ~1,
# which failed the right gradients at the tolerance of 1e-6
OFFSET_SPEC = """
name: offset
inputs: {x: [batch, 3]}
params: {w: [3], v: [3]}
nodes:
  loss: sum(w * x) + 1e8 + sum(tanh(v) * x)
"""
# a loss of 1e-9 * ...: an allowance with a floor of 1 (rather than |L|) passed gradients
# 0.1% off, or 0, there, and warned on right ones at 1e-6 * ...
TINY_SPEC = """
name: tiny
inputs: {x: [4]}
params: {w: [4]}
nodes:
  loss: 1e-9 * sum(w * x * x)
"""
# a loss of 1e17 + ...: rounding there is larger than the gradient
COARSE_SPEC = OFFSET_SPEC.replace("offset", "coarse").replace("1e8", "1e17")
# (fourteenth review) float32 through five sigmoid layers: the first layers' gradients
# are 1e-4 to 1e-3 of a loss of about 1, below what float32 differences resolve; with no
# rounding allowance in float32 right gradients failed
SIGMOID32_SPEC = """
name: sigmoid32
dtype: float32
inputs: {x: [batch, 4], y: [batch, 1]}
layers:
  - {dense: 4, activation: sigmoid}
  - {dense: 4, activation: sigmoid}
  - {dense: 4, activation: sigmoid}
  - {dense: 4, activation: sigmoid}
  - {dense: 4, activation: sigmoid}
  - {dense: 1}
loss: {mse: y}
"""
EXTRA_SPECS = {
    "relu32": RELU32,
    "sigmoid32": SIGMOID32_SPEC,
    "offset": OFFSET_SPEC,
    "tiny": TINY_SPEC,
    "coarse": COARSE_SPEC,
    "labels": LABELS_SPEC,
    "scalar32": SCALAR_SPEC,
    LONG_FILE_NAME: LOGS_SPEC.replace("name: logs", "name: long_logs"),
    "long_output": LONG_OUTPUT_SPEC,
}
ALLOWED_IMPORTS = {"__future__", "importlib.util", "collections.abc", "pathlib", "types"}
ALLOWED_IMPORTS |= {"warnings"}
ALLOWED_IMPORTS |= {"numpy", "pytest"}


def spec_paths(directory: Path) -> list[str]:
    """The small examples and the extra specs, as files."""
    paths = [str(EXAMPLES / f"{name}.yaml") for name in SMALL_EXAMPLES]
    for name, text in EXTRA_SPECS.items():
        path = directory / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with every module and its emitted test, compiled once for the file."""
    root = tmp_path_factory.mktemp("emitted")
    assert main(["compile", "--emit-tests", "-o", str(root / "out"), *spec_paths(root)]) == 0
    return root / "out"


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a fresh process, in `folder`'s parent, with only NumPy and pytest needed."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, folder.name],
        cwd=folder.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_writes_a_test_beside_each_module(emitted: Path) -> None:
    names = [load_spec(path).name for path in spec_paths(emitted.parent)]
    expected = {f"{name}.py" for name in names} | {f"test_{name}_gradcheck.py" for name in names}
    assert {path.name for path in emitted.iterdir()} == expected
    for path in spec_paths(emitted.parent):
        spec = load_spec(path)
        text = (emitted / f"test_{spec.name}_gradcheck.py").read_text(encoding="utf-8")
        assert text == render_gradcheck_test(spec)
        assert text.startswith(
            f"# Code generated by symbackprop 0.1.0 from {spec.file_name}. DO NOT EDIT.\n"
        )


def test_emitted_tests_pass(emitted: Path) -> None:
    completed = run_pytest(emitted)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert re.search(r"\b\d+ passed\b", completed.stdout)
    assert "failed" not in completed.stdout
    # where the output rounds too coarsely to resolve the tolerance, the test says so
    coarse = re.findall(
        r"test_(\w+)_gradcheck.py:\d+: UserWarning: the output rounds too coarsely here: "
        r"(\w+) resolved to (\S+) only",
        completed.stdout,
    )
    assert {(spec, name) for spec, name, _ in coarse if spec != "sigmoid32"} == {
        ("offset", "w"),
        ("offset", "v"),
    }
    assert all(1e-6 < float(resolved) < 1e-3 for spec, _, resolved in coarse if spec == "offset")
    # float32 resolves to 0.1 (its tolerance) at best: the sigmoid net's first layers less
    assert all(0.1 < float(resolved) <= 0.5 for spec, _, resolved in coarse if spec != "offset")
    # and where it cannot tell right from wrong, it is skipped (the coarse spec's 6, the
    # sigmoid net's 4)
    assert re.search(r"\b10 skipped\b", completed.stdout), completed.stdout


def test_emitted_tests_pass_in_importlib_mode(emitted: Path) -> None:
    """The module is loaded from the test's own folder, not from sys.path."""
    completed = run_pytest(emitted, "--import-mode=importlib", "-k", "swish or relu32")
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_emitted_tests_are_lint_clean(emitted: Path) -> None:
    ruff = [sys.executable, "-m", "ruff"] if shutil.which("ruff") is None else ["ruff"]
    tests = sorted(str(path) for path in emitted.glob("test_*.py"))
    default = [*ruff, "check", "--isolated", *tests]  # ruff's own rules: nothing at all
    check = subprocess.run(default, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    strict = [*ruff, "check", "--isolated", "--select", "E,F,W,B,UP,I"]
    check = subprocess.run(
        [*strict, "--output-format", "concise", *tests], capture_output=True, text=True, timeout=300
    )
    assert check.returncode in (0, 1), check.stderr
    findings = [line for line in check.stdout.splitlines() if re.match(r"\S+:\d+:\d+: ", line)]
    # but the two header lines that name a long spec file: their wording is fixed
    header = [line for line in findings if re.match(r"\S+:[12]:\d+: E501 ", line)]
    assert findings == header, "\n".join(findings)
    fmt = [*ruff, "format", "--isolated", "--check", *tests]
    formatted = subprocess.run(fmt, capture_output=True, text=True, timeout=300)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_emitted_tests_import_only_numpy_pytest_and_the_stdlib(emitted: Path) -> None:
    for path in emitted.glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
        assert imported <= ALLOWED_IMPORTS, (path.name, imported - ALLOWED_IMPORTS)


def test_float32_tests_say_why_their_tolerance_is_wider(emitted: Path) -> None:
    float32 = (emitted / "test_relu32_gradcheck.py").read_text(encoding="utf-8")
    assert "TOLERANCE = 0.1" in float32
    assert "casts whatever it is given to float32" in float32
    float64 = (emitted / "test_swish_regression_gradcheck.py").read_text(encoding="utf-8")
    assert "TOLERANCE = 1e-06" in float64
    assert "float32" not in float64


@pytest.mark.parametrize(
    ("name", "gradient", "factor"),
    [
        ("swish_regression", "b1", 1.001),
        ("relu32", "W2", 1.5),
        ("offset", "w", 1.001),
        ("tiny", "w", 1.001),
    ],
)
def test_emitted_tests_catch_a_wrong_gradient(
    emitted: Path, tmp_path: Path, name: str, gradient: str, factor: float
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copy(emitted / f"test_{name}_gradcheck.py", folder)
    module = (emitted / f"{name}.py").read_text(encoding="utf-8")
    broken, count = re.subn(rf'"{gradient}": (d_\w+),', rf'"{gradient}": \1 * {factor},', module)
    assert count == 1
    (folder / f"{name}.py").write_text(broken, encoding="utf-8")
    completed = run_pytest(folder)
    assert completed.returncode == 1
    failed = re.findall(r"^FAILED \S+::(\S+)", completed.stdout, re.MULTILINE)
    assert failed == [
        f"test_gradient_matches_finite_differences[{gradient}-{seed}]" for seed in range(3)
    ]


def gradient_test_outcomes(
    emitted: Path, name: str, factor: float, seeds: range = range(20)
) -> collections.Counter[str]:
    """How the emitted finite-difference test of spec `name` ends at each seed, for each
    gradient, with the module's gradients times `factor`: "pass", "warn" (a pass that
    warns), "skip" or "fail". The test file is imported in this process."""
    test = importlib.util.spec_from_file_location(
        f"emitted_{name}", emitted / f"test_{name}_gradcheck.py"
    )
    assert test is not None and test.loader is not None
    tests = importlib.util.module_from_spec(test)
    test.loader.exec_module(tests)
    right = tests.module.value_and_grad

    def scaled(*args: object, **kwargs: object) -> tuple[object, dict[str, np.ndarray]]:
        value, grads = right(*args, **kwargs)
        return value, {key: factor * grad for key, grad in grads.items()}

    tests.module.value_and_grad = scaled
    outcomes: collections.Counter[str] = collections.Counter()
    for seed in seeds:
        for gradient in tests.module.WRT:
            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                try:
                    tests.test_gradient_matches_finite_differences(gradient, seed)
                    outcomes["warn" if warned else "pass"] += 1
                except AssertionError:
                    outcomes["fail"] += 1
                except pytest.skip.Exception:
                    outcomes["skip"] += 1
    return outcomes


@pytest.mark.parametrize(
    ("name", "factor", "outcomes"),
    [
        ("offset", 1.0, {"warn": 40}),  # 1e8 + ...: right, resolved to ~1e-4
        ("offset", 1.001, {"fail": 40}),
        ("tiny", 1.0, {"pass": 20}),  # 1e-9 * ...: no warning, its rounding is 1e-25
        ("tiny", 1.001, {"fail": 20}),
        ("tiny", 0.0, {"fail": 20}),
        ("coarse", 1.0, {"skip": 40}),  # 1e17 + ...: rounding past the gradient itself
        ("coarse", 0.0, {"skip": 40}),
    ],
)
def test_emitted_tests_count_rounding_by_the_outputs_size(
    emitted: Path, name: str, factor: float, outcomes: dict[str, int]
) -> None:
    """Twelfth review: the rounding allowance had a floor of 1, which let gradients 0.1%
    off, or 0, pass on a loss of 1e-9 * ...; and on a loss of 1e17 + ... every gradient
    passed, a zeroed one without a warning. The allowance is eps |L| / h; where it is
    past a tenth of the gradient, the test is skipped, saying why."""
    assert gradient_test_outcomes(emitted, name, factor) == outcomes


def test_emitted_differences_take_the_step_nearest_the_gradient_past_a_kink(
    emitted: Path,
) -> None:
    """Ninth review, as for `check`: where a kink lies within the wider steps, so that no
    two agree, the most consistent pair (the two widest, both across the kink) was taken.
    |x - 1.5e-5| at 0: the steps 1e-3 to 1e-5 straddle it; only 1e-6 gives the slope."""
    tree = ast.parse((emitted / "test_gates_gradcheck.py").read_text(encoding="utf-8"))
    wanted = {"STEPS", "AGREEMENT", "ROUNDING", "derivative"}
    kept = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and node.name in wanted
        or isinstance(node, ast.Assign | ast.AnnAssign)
        and ast.unparse(node).split()[0].rstrip(":") in wanted
    ]
    namespace: dict[str, object] = {"np": np, "Callable": object}
    exec(compile(ast.Module(kept, []), "emitted", "exec"), namespace)  # our own template
    derivative = namespace["derivative"]
    slope, rounding = derivative(lambda x: abs(x - 1.5e-5), 0.0, -1.0)
    assert slope == pytest.approx(-1.0, rel=1e-9)
    assert rounding == pytest.approx(22.5 * np.finfo(np.float64).eps * 1.5e-5 / 1e-6)
    assert derivative(lambda x: abs(x - 1.5e-5), 0.0, 0.5)[0] != pytest.approx(0.5, rel=1e-3)


def test_stdout_prints_the_tests_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(EXAMPLES / "seed_graph.yaml")
    assert main(["compile", "--stdout", spec]) == 0
    module = capsys.readouterr().out
    assert main(["compile", "--stdout", "--emit-tests", spec]) == 0
    assert capsys.readouterr().out == module + render_gradcheck_test(load_spec(spec))
    assert list(tmp_path.iterdir()) == []


def test_check_covers_the_tests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, out = str(EXAMPLES / "seed_graph.yaml"), str(tmp_path / "out")
    test_file = tmp_path / "out" / "test_seed_graph_gradcheck.py"
    assert main(["compile", "--emit-tests", "-o", out, spec]) == 0
    assert main(["compile", "--check", "--emit-tests", "-o", out, spec]) == 0
    test_file.write_text("# edited\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["compile", "--check", "--emit-tests", "-o", out, spec]) == 1
    stale = capsys.readouterr().err.splitlines()
    assert stale == [f"stale: {test_file}"]
    # without --emit-tests the test files are not part of the output
    assert main(["compile", "--check", "-o", out, spec]) == 0
    test_file.unlink()
    assert main(["compile", "--check", "--emit-tests", "-o", out, spec]) == 1
    assert main(["compile", "--emit-tests", "-o", out, spec]) == 0
    assert test_file.read_text(encoding="utf-8") == render_gradcheck_test(load_spec(spec))


def test_without_the_flag_no_test_is_written(tmp_path: Path) -> None:
    assert main(["compile", "-o", str(tmp_path), str(EXAMPLES / "seed_graph.yaml")]) == 0
    assert [path.name for path in tmp_path.iterdir()] == ["seed_graph.py"]


def test_a_module_and_a_test_of_one_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spec named test_a_gradcheck would overwrite the test of spec a: refused."""
    for name in ("a", "test_a_gradcheck"):
        text = f"name: {name}\ninputs: {{x: []}}\nnodes:\n  y: x * x\nwrt: [x]\n"
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    args = [str(tmp_path / "a.yaml"), str(tmp_path / "test_a_gradcheck.yaml")]
    assert main(["compile", "--emit-tests", "-o", str(out), *args]) == 2
    assert "test_a_gradcheck.py would be both a module and a test" in capsys.readouterr().err
    assert main(["compile", "--emit-tests", "-o", str(out), *reversed(args)]) == 2
    assert "test_a_gradcheck.py would be both a module and a test" in capsys.readouterr().err
    assert not out.exists()


def test_help_says_what_the_flag_covers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--emit-tests also write DIR/test_<name>_gradcheck.py" in text
    assert "(--check and --stdout cover it too)" in text


def test_float32_tests_allow_for_rounding_and_say_what_they_cannot_resolve(
    emitted: Path,
) -> None:
    """Fourteenth review: float32 tests had no rounding allowance, so right gradients of a
    five-layer sigmoid net, 1e-4 of its loss, failed (relative error 0.25, 0.13: 6 of
    120 at seeds 0-9). Now they pass, warn or are skipped, saying to what they resolve;
    a gradient off by its sign, a factor of 2 or zeroed fails as often as before, but
    where the gradient is below what float32 resolves."""
    right = gradient_test_outcomes(emitted, "sigmoid32", 1.0, range(10))
    # measured: 90 pass, 18 warn, 12 skip (no allowance: 114 pass, 6 fail)
    assert right["fail"] == 0 and right["pass"] >= 80, right
    for factor in (-1.0, 2.0, 0.0):
        # measured: 116-118 fail, 1-3 pass, 1 skip (no allowance: 117-120 fail, 0-3 pass)
        wrong = gradient_test_outcomes(emitted, "sigmoid32", factor, range(10))
        assert wrong["fail"] >= 112 and wrong["pass"] + wrong["warn"] <= 4, (factor, wrong)

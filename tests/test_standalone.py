"""Generated modules run where only NumPy is installed.

Each module is imported in a fresh `python -I` whose import system refuses sympy,
symbackprop, jinja2, yaml (and torch): if a generated file needed any of them, the
import or the call fails there. Its value and gradients must match this process's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.support import GENERATED, compile_module, import_source, random_inputs, relative_error

BLOCKED = ("sympy", "symbackprop", "jinja2", "yaml", "torch", "tests")

# Runs in the child: block the compiler's dependencies, import the module, save its results.
CHILD = """
import sys

BLOCKED = {blocked!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: generated code must need NumPy only")
        return None


sys.meta_path.insert(0, Blocker())
sys.path.insert(0, {directory!r})

import numpy as np

module = __import__({module!r})
data = np.load({point!r}, allow_pickle=False)
params = {{key[2:]: data[key] for key in data.files if key.startswith("p:")}}
inputs = {{key[2:]: data[key] for key in data.files if key.startswith("i:")}}
value, grads = module.value_and_grad(params, **inputs)
leaked = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
assert not leaked, leaked
np.savez({result!r}, value=value, **{{"g:" + key: grad for key, grad in grads.items()}})
"""

# Every helper template in one module: logsumexp, softmax, log_softmax, max ties, one-hot,
# sigmoid, the inits. Compiled here, so that it runs standalone as the examples do.
KITCHEN_SINK = """
name: kitchen_sink
inputs: {x: [batch, 4], y: {shape: [batch], dtype: int64}, t: [batch, 3]}
params:
  W: {shape: [4, 3], init: he_normal}
  V: {shape: [4, 3], init: normal, std: 0.5}
  U: {shape: [4, 3], init: uniform, low: -1, high: 1}
  b: {shape: [3], init: ones}
nodes:
  s: x @ (W + V * U) + b
  p: softmax(s) * log_softmax(s, axis=0) + sigmoid(s) * softplus(s)
  q: logsumexp(s, axis=1) + max(s, axis=1) - mean(s)
  loss: >-
    softmax_cross_entropy(s, y) + sum(q) + mean(p)
    + binary_cross_entropy_with_logits(s, t) + mse(tanh(s), t)
output: loss
"""


def run_standalone(
    module_path: Path, params: dict, inputs: dict, tmp_path: Path
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The module's value_and_grad, computed in a child process that can import only NumPy."""
    point, result = tmp_path / "point.npz", tmp_path / "result.npz"
    np.savez(
        point,
        **{f"p:{k}": v for k, v in params.items()},
        **{f"i:{k}": v for k, v in inputs.items()},
    )
    code = CHILD.format(
        blocked=BLOCKED,
        directory=str(module_path.parent),
        module=module_path.stem,
        point=str(point),
        result=str(result),
    )
    completed = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    data = np.load(result)
    return data["value"], {key[2:]: data[key] for key in data.files if key.startswith("g:")}


def check_same_results(module: ModuleType, module_path: Path, tmp_path: Path) -> None:
    params = module.init_params(0)
    inputs = random_inputs(module, np.random.default_rng(0))
    value, grads = module.value_and_grad(params, **inputs)
    child_value, child_grads = run_standalone(module_path, params, inputs, tmp_path)
    assert child_value.dtype == np.asarray(value).dtype
    assert relative_error(child_value, value) < 1e-6
    assert set(child_grads) == set(module.WRT)
    for name in module.WRT:
        assert child_grads[name].dtype == grads[name].dtype, name
        assert relative_error(child_grads[name], grads[name]) < 1e-6, name


@pytest.mark.parametrize("path", sorted(GENERATED.glob("*.py")), ids=lambda path: path.stem)
def test_generated_module_runs_with_numpy_only(path: Path, tmp_path: Path) -> None:
    module = import_source(path.read_text(encoding="utf-8"), tmp_path)
    check_same_results(module, path, tmp_path)


def test_every_helper_runs_with_numpy_only(tmp_path: Path) -> None:
    module = compile_module(KITCHEN_SINK, tmp_path)
    check_same_results(module, Path(module.__file__), tmp_path)


def test_the_blocker_blocks(tmp_path: Path) -> None:
    """The child really cannot import sympy: a module that needs it fails there."""
    needy = tmp_path / "needy.py"
    needy.write_text(
        "import sympy\n\ndef value_and_grad(params):\n    return 0.0, {}\n", encoding="utf-8"
    )
    with pytest.raises(AssertionError, match="sympy is blocked"):
        run_standalone(needy, {}, {}, tmp_path)

"""`compile --emit-tests`: a pytest file beside each module that checks its gradients
against central finite differences, with NumPy only, so users keep the check in their
own repository. Rendered from templates/gradcheck_test.py.j2."""

from __future__ import annotations

from pathlib import Path

from .emit import header_lines, template_environment
from .gradcheck import AGREEMENT, DEFAULT_TOLERANCE, JITTER, STEPS, plan_inputs
from .spec import Spec

SEEDS = (0, 1, 2)
SAMPLE_SIZE = 16  # fewer elements than `check`: the emitted test runs once per seed
FLOAT64 = {
    "steps": [repr(step) for step in STEPS],
    "agreement": repr(AGREEMENT),
    "tolerance": repr(DEFAULT_TOLERANCE),
    "backward_rtol": "1e-12",
    "floor": "1e-8",
    "grid": None,
}
# A float32 forward pass rounds its output to ~1e-7, and a step wide enough to rise above
# that noise crosses ReLU kinks: measured on the mnist example (20 seeds), the best steps
# (consecutive powers of two, exact on the 2**-16 grid) leave a worst error of ~2.5e-2.
FLOAT32 = {
    "steps": ["2**-8", "2**-9", "2**-10", "2**-11", "2**-12"],
    "agreement": "1e-4",
    "tolerance": "0.1",
    "backward_rtol": "1e-5",
    "floor": "1e-4",
    "grid": "2**-16",
}


def gradcheck_test_path(directory: Path, spec: Spec) -> Path:
    return directory / f"test_{spec.name}_gradcheck.py"


def render_gradcheck_test(spec: Spec) -> str:
    """The pytest file for the module compiled from `spec` (which imports it by file name)."""
    plan = plan_inputs(spec, max_elements=None)
    precision = FLOAT32 if spec.dtype == "float32" else FLOAT64
    model = {
        "header": header_lines(spec, "symbackprop compile --emit-tests"),
        "name": spec.name,
        "seeds": [str(seed) for seed in SEEDS],
        "dims": plan.dims,
        "classes": {item.name: item.classes for item in plan.inputs if item.classes is not None},
        "sample_size": SAMPLE_SIZE,
        "jitter": repr(JITTER),
        **precision,
    }
    return template_environment().get_template("gradcheck_test.py.j2").render(**model)


def gradcheck_test_file(directory: Path, spec: Spec) -> tuple[Path, str]:
    return gradcheck_test_path(directory, spec), render_gradcheck_test(spec)

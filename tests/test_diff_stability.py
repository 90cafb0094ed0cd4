"""A small spec change gives a small diff, and the same spec the same bytes.

Measured on a 6-layer MLP, as issue 3 asks: swapping one layer's activation changes at
most 12 lines of the module (lines of the unified diff, `-` and `+` both counted, the spec's
sha256 line left out); changing one layer's width changes only shape constants, never a
line of code, since the code is shape-generic. And every example compiles to the same
bytes in fresh processes under several PYTHONHASHSEED values.
"""

from __future__ import annotations

import ast
import difflib
import os
import subprocess
import sys

import pytest

from symbackprop.compiler import compile_spec, compile_text
from symbackprop.spec import LAYER_ACTIVATIONS
from tests.support import EXAMPLES, ROOT, example_spec

MAX_CHANGED_LINES = 12
ACTIVATIONS = ("tanh", "relu", "tanh", "sigmoid", "softplus", "identity")  # layers 1 to 6
WIDTHS = (16, 16, 16, 16, 16, 3)
SWAPPED_LAYER = 3  # 1-based: a layer in the middle, with layers on both sides
HASH_SEEDS = ("0", "1", "4242")


def six_layers(activations: tuple[str, ...] = ACTIVATIONS, widths: tuple[int, ...] = WIDTHS) -> str:
    layers = "\n".join(
        f'  - {{dense: {width}, activation: "{activation}"}}'
        for activation, width in zip(activations, widths, strict=True)
    )
    return f"""name: deep6
inputs: {{x: [batch, 8], y: [batch, 3]}}
layers:
{layers}
loss: {{mse: y}}
"""


def compile_six(
    activations: tuple[str, ...] = ACTIVATIONS, widths: tuple[int, ...] = WIDTHS
) -> str:
    return compile_text(six_layers(activations, widths), "deep6.yaml")


def is_hash_line(line: str) -> bool:
    return line.startswith("# spec sha256:")


def changed_lines(before: str, after: str) -> list[str]:
    """The `-` and `+` lines of the unified diff, without the spec's sha256 line."""
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [
        line
        for line in diff
        if line[:1] in "-+" and not line.startswith(("---", "+++")) and not is_hash_line(line[1:])
    ]


# --- swapping one layer's activation ----------------------------------------------------

CUSTOM = ("x * tanh(softplus(x))", "x * sigmoid(x)", "leaky_relu(x, 0.2)")  # DESIGN's mish
SWAPS = [*LAYER_ACTIVATIONS, *CUSTOM]


@pytest.fixture(scope="module")
def baseline() -> str:
    return compile_six()


SWAP_CASES = [
    pytest.param(layer, new, id=f"layer{layer}-{new.replace(' ', '')}")
    for layer in (2, SWAPPED_LAYER, 5)
    for new in SWAPS
    if new != ACTIVATIONS[layer - 1]
]


@pytest.mark.parametrize(("layer", "new"), SWAP_CASES)
def test_swapping_one_activation_changes_at_most_12_lines(
    baseline: str, layer: int, new: str
) -> None:
    activations = list(ACTIVATIONS)
    old = activations[layer - 1]
    activations[layer - 1] = new
    changed = changed_lines(baseline, compile_six(tuple(activations)))
    assert 0 < len(changed) <= MAX_CHANGED_LINES, (
        f"layer {layer}: {old} -> {new} changes {len(changed)} lines:\n" + "\n".join(changed)
    )


@pytest.mark.parametrize("new", [a for a in SWAPS if a != "relu"], ids=lambda a: a.replace(" ", ""))
def test_swapping_one_activation_of_an_all_relu_network_changes_at_most_12_lines(new: str) -> None:
    """The first function of its kind in the module: no helper appears with it."""
    before = compile_six(("relu",) * 6)
    after = compile_six(("relu", "relu", new, "relu", "relu", "relu"))
    changed = changed_lines(before, after)
    assert 0 < len(changed) <= MAX_CHANGED_LINES, "\n".join(changed)


def test_the_same_spec_changes_no_line(baseline: str) -> None:
    assert changed_lines(baseline, compile_six()) == []


# --- changing one layer's width ----------------------------------------------------------


def _line_spans(source: str, with_init_params: bool) -> set[int]:
    """1-based numbers of the lines where shapes may be written: docstrings, the PARAMS and
    INPUTS constants (and, if asked, the body of init_params), plus the sha256 line."""
    tree = ast.parse(source)
    lines: set[int] = set()

    def span(node: ast.AST) -> None:
        lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))  # type: ignore[attr-defined]

    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef)) and ast.get_docstring(node) is not None:
            span(node.body[0])
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
            isinstance(target, ast.Name) and target.id in ("PARAMS", "INPUTS") for target in targets
        ):
            span(node)
        if with_init_params and isinstance(node, ast.FunctionDef) and node.name == "init_params":
            span(node)
    lines.update(number for number, line in enumerate(source.splitlines(), 1) if is_hash_line(line))
    return lines


def _code_changes(before: str, after: str, with_init_params: bool) -> list[str]:
    """Changed lines outside the places that hold shapes, as `-`/`+` lines."""
    old, new = before.splitlines(), after.splitlines()
    old_ok, new_ok = _line_spans(before, with_init_params), _line_spans(after, with_init_params)
    bad = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        bad += [f"-{old[i]}" for i in range(i1, i2) if i + 1 not in old_ok]
        bad += [f"+{new[j]}" for j in range(j1, j2) if j + 1 not in new_ok]
    return bad


def _wider() -> str:
    widths = list(WIDTHS)
    widths[SWAPPED_LAYER - 1] *= 2
    return compile_six(widths=tuple(widths))


def test_changing_one_width_changes_no_forward_or_backward_code(baseline: str) -> None:
    after = _wider()
    assert changed_lines(baseline, after), "the width change changed nothing: is the spec used?"
    bad = _code_changes(baseline, after, with_init_params=True)
    assert not bad, "code changed with a width:\n" + "\n".join(bad)


def test_changing_one_width_changes_only_shape_constants(baseline: str) -> None:
    bad = _code_changes(baseline, _wider(), with_init_params=False)
    assert not bad, "code changed with a width:\n" + "\n".join(bad)


# --- the same bytes under any PYTHONHASHSEED ----------------------------------------------

EXAMPLE_PATHS = sorted(EXAMPLES.glob("*.yaml"))
HEADER = "# Code generated by symbackprop"


def _split_modules(stdout: str) -> list[str]:
    """`compile --stdout A B ...` prints the modules one after another: cut at each header."""
    parts = stdout.split(HEADER)
    return [HEADER + part for part in parts[1:]]


@pytest.fixture(scope="module")
def compiled_under_seeds() -> dict[str, list[str]]:
    """hash seed -> each example's module, compiled in a fresh process."""
    result = {}
    for seed in HASH_SEEDS:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "symbackprop", "compile", "--stdout"]
        completed = subprocess.run(
            [*command, *map(str, EXAMPLE_PATHS)],
            cwd=ROOT if seed == HASH_SEEDS[0] else EXAMPLES,  # and from another folder
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        result[seed] = _split_modules(completed.stdout)
        assert len(result[seed]) == len(EXAMPLE_PATHS)
    return result


@pytest.mark.parametrize("index", range(len(EXAMPLE_PATHS)), ids=[p.stem for p in EXAMPLE_PATHS])
def test_example_is_byte_identical_under_every_hash_seed(
    compiled_under_seeds: dict[str, list[str]], index: int
) -> None:
    expected = compile_spec(example_spec(EXAMPLE_PATHS[index].stem))
    for seed, modules in compiled_under_seeds.items():
        assert modules[index] == expected, f"PYTHONHASHSEED={seed} changes the output"

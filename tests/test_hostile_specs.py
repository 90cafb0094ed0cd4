"""Hostile and broken specs: each exits 2 with `file:line:col` and the node or field it is
about, prints no traceback, executes nothing and leaves existing output files as they were.

Every case runs in-process through `symbackprop.cli.main` (fast), for `compile` (beside a
good spec, so a bad one must stop the whole run) and for `check`. The cases that could hang
or run code (exponent towers, deep nesting, enormous formulas, alias bombs, `__import__`)
also run in a subprocess with a timeout: that proves "no hang" and "no traceback" end to end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from symbackprop.cli import main
from symbackprop.compiler import compile_text
from symbackprop.errors import SpecError
from symbackprop.spec import MAX_VARIABLE_NAME, load_spec, parse_spec
from tests.support import EXAMPLES, ROOT, import_source
from tests.test_cli import files_in

SPEC_FILE = "hostile.yaml"
MARKER = "MARKER"  # what `touch MARKER` in a hostile spec would create in the cwd
GOOD = EXAMPLES / "seed_graph.yaml"
HANG_TIMEOUT = 20  # seconds: a generous bound for a loaded CI machine; a hang is minutes
MESSAGE = re.compile(rf"^symbackprop: {re.escape(SPEC_FILE)}:(\d+):(\d+): .+\n\Z")


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    line: int  # where the error must point
    about: str  # a fragment naming the node or field
    slow: bool = False  # also run in a subprocess, with a timeout
    xfail: str | None = None
    marks: tuple[object, ...] = field(default=())


def formula(text: str, inputs: str = "{x: [3], k: {shape: [3], dtype: int64}}") -> str:
    """A spec whose node `y` (line 4) is `text`."""
    return f"name: a\ninputs: {inputs}\nnodes:\n  y: {text}\noutput: y\nwrt: [x]\n"


def tail(lines: str) -> str:
    """A spec with a good node `y` on line 4 and `lines` from line 5 on."""
    head = "name: a\ninputs: {x: [3], k: {shape: [3], dtype: int64}}\n"
    return f"{head}nodes:\n  y: sum(x)\n{lines}"


def named(key: str, name: str) -> str:
    """A spec where `name` is used as a spec, node, param, input or dim name."""
    if key == "spec":
        return f"name: {name}\ninputs: {{x: [3]}}\nnodes:\n  y: sum(x)\nwrt: [x]\n"
    if key == "node":
        return f"name: a\ninputs: {{x: [3]}}\nnodes:\n  {name}: sum(x)\nwrt: [x]\n"
    if key == "param":
        return f"name: a\ninputs: {{x: [3]}}\nparams:\n  {name}: [3]\nnodes:\n  y: sum(x)\n"
    if key == "input":
        return f"name: a\ninputs:\n  {name}: [3]\n  x: [3]\nnodes:\n  y: sum(x)\nwrt: [x]\n"
    return f"name: a\ninputs:\n  x: [{name}, 3]\nnodes:\n  y: sum(x)\nwrt: [x]\n"


NAME_LINE = {"spec": 1, "node": 4, "param": 4, "input": 3, "dim": 3}
BAD_NAMES = {
    "path": "../evil",
    "dotted": "a.b",
    "os_system": "os.system",
    "dunder": "__class__",
    "keyword": "lambda",
    "keyword_class": "class",
    "cyrillic_a": "\u0430bc",
    "fullwidth_x": "\uff58",
    "zero_width": "a\u200bb",
    "leading_digit": "1abc",
    "slash": "a/b",
    "dash": "a-b",
    "reserved_np": "np",
    "reserved_d": "d_x",
    "empty": "''",
}


def laughs(levels: int = 9) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "name: a\n" + "\n".join(lines) + "\n"


CASES = [
    # --- code in formulas ------------------------------------------------------------
    Case("import", formula("__import__('os').system('touch MARKER')"), 4, "node 'y'", slow=True),
    Case("os_system", formula("os.system('touch MARKER')"), 4, "node 'y'"),
    Case("exec", formula('exec(\'open("MARKER", "w")\')'), 4, "node 'y'"),
    Case("eval", formula("eval('1')"), 4, "node 'y'"),
    Case("getattr", formula("getattr(x, 'real')"), 4, "node 'y'"),
    Case("attribute", formula("sum(x.__class__)"), 4, "node 'y'"),
    Case("builtins", formula("sum(x) + __builtins__"), 4, "node 'y'"),
    Case("lambda", formula('"(lambda: x)()"'), 4, "node 'y'"),
    Case("list_comprehension", formula("sum([x for x in k])"), 4, "node 'y'"),
    Case("generator", formula("sum(x for x in k)"), 4, "node 'y'"),
    Case("dict_comprehension", formula('"sum({x: x for x in k})"'), 4, "node 'y'"),
    Case("fstring", formula("f'{x}'"), 4, "node 'y'"),
    Case("walrus", formula("sum((z := x))"), 4, "node 'y'"),
    Case("subscript", formula("sum(x[0])"), 4, "node 'y'"),
    Case("comparison", formula("sum(x > 0)"), 4, "node 'y'"),
    Case("conditional", formula("sum(x if x else x)"), 4, "node 'y'"),
    Case("starred", formula("sum(*x)"), 4, "node 'y'"),
    Case("double_starred", formula("sum(**x)"), 4, "node 'y'"),
    Case("bitwise", formula("sum(x ^ x)"), 4, "node 'y'"),
    Case("repeated_keyword", formula('"sum(x, axis=0, axis=0)"'), 4, "node 'y'"),
    Case(
        "repeated_reduction",
        formula('\'mse(x, x, reduction="sum", reduction="mean")\''),
        4,
        "node 'y'",
    ),
    Case("floor_division", formula("sum(x // 2)"), 4, "node 'y'"),
    Case("string_argument", formula("sum(exp('x'))"), 4, "node 'y'"),
    Case("statement", formula('"sum(x); import os"'), 4, "node 'y'"),
    Case("second_line", formula('"sum(x)\\nimport os"'), 4, "node 'y'"),
    Case("null_byte", formula('"sum(x)\\0"'), 4, "node 'y'"),
    Case(
        "activation_code",
        "name: a\ninputs: {x: [b, 3], t: [b, 2]}\n"
        "layers: [{dense: 2, activation: \"__import__('os')\"}]\nloss: {mse: t}\n",
        3,
        "node 'h1'",
    ),
    # --- code in names ---------------------------------------------------------------
    *[
        Case(
            f"{key}_name_{label}",
            named(key, name),
            NAME_LINE[key],
            f"{key if key != 'dim' else 'dim'}",
        )
        for key in NAME_LINE
        for label, name in BAD_NAMES.items()
        # a dim is a string in the code: `d_model`, `np`, `max` name dims well
        if key != "dim" or not label.startswith("reserved")
    ],
    # a generated typing.py (or math.py) shadows the standard module beside it; refused
    # under every supported Python, also the names only some of them have
    *[
        Case(f"spec_name_stdlib_{name}", named("spec", name), 1, "spec name")
        for name in ("typing", "math", "enum", "warnings", "random")
        + ("tomllib", "annotationlib", "distutils", "imp", "telnetlib")
    ],
    # `l`, `I`, `O` read as 1 and 0: ruff's E741 flags them as variables; an input is an
    # argument callers pass by name, so it cannot be written otherwise (a node can: `l_`)
    *[
        Case(f"input_name_ambiguous_{name}", named("input", name), NAME_LINE["input"], "input")
        for name in ("l", "I", "O")
    ],
    Case(
        "param_written_as_another",
        "name: a\ninputs: {x: [3]}\nparams:\n  I_: [3]\n  I: [3]\nnodes:\n  y: sum(x * I * I_)\n",
        5,
        "param 'I' is written I_",
    ),
    Case(
        "node_written_as_another",
        "name: a\ninputs: {x: [3]}\nnodes:\n  l_: sum(x)\n  l: l_ * 2\nwrt: [x]\n",
        5,
        "node 'l' is written l_",
    ),
    Case("spec_name_null", named("spec", "null"), 1, "spec name"),
    Case("spec_name_true", named("spec", "true"), 1, "spec name"),
    Case("spec_name_date", named("spec", "2001-12-14"), 1, "spec name"),
    Case("spec_name_binary", named("spec", "!!binary aGVsbG8="), 1, "spec name"),
    Case(
        "loss_target_code",
        "name: a\ninputs: {x: [b, 3], t: [b, 2]}\nlayers: [{dense: 2}]\nloss: {mse: os.system}\n",
        4,
        "target 'os.system'",
    ),
    Case(
        "param_init_code",
        "name: a\ninputs: {x: [3]}\nparams: {W: {shape: [3], init: os.system}}\n"
        "nodes:\n  y: sum(x * W)\n",
        3,
        "param W",
    ),
    # NumPy's generators would refuse these only when init_params runs
    *[
        Case(
            f"param_init_{label}",
            f"name: a\ninputs: {{x: [3]}}\nparams:\n  W: {{shape: [3], {init}}}\n"
            "nodes:\n  y: sum(x * W)\n",
            4,
            "param W",
        )
        for label, init in {
            "negative_std": "init: normal, std: -1",
            "inverted_uniform": "init: uniform, low: 1, high: -1",
            "low_above_default_high": "init: uniform, low: 2",
            "init_list": "init: [1, 2]",
            "init_map": "init: {a: 1}",
            # found by review: these drew inf, or raised OverflowError in init_params
            "uniform_wider_than_float64": "init: uniform, low: -1.0e+308, high: 1.0e+308",
            "uniform_past_float64": "init: uniform, low: 0, high: 1.0e+309",
            "normal_past_float64": "init: normal, mean: 1.0e+308, std: 1.0e+307",
            # second review: an OverflowError traceback converting the int
            "int_of_400_digits": "init: uniform, low: 0, high: 1" + "0" * 400,
        }.items()
    ],
    # past the largest float32 in a float32 spec (fine in float64)
    *[
        Case(
            f"param_init_float32_{label}",
            f"name: a\ndtype: float32\ninputs: {{x: [3]}}\nparams:\n  W: {{shape: [3], {init}}}\n"
            "nodes:\n  y: sum(x * W)\n",
            5,
            "param W",
        )
        for label, init in {
            "uniform": "init: uniform, low: 1.0e+39, high: 2.0e+39",
            "normal": "init: normal, std: 1.0e+37",
        }.items()
    ],
    Case(
        "loss_target_list",
        "name: a\ninputs: {x: [b, 3], t: [b, 2]}\nlayers: [{dense: 2}]\nloss: {mse: [t]}\n",
        4,
        "target ['t']",
    ),
    Case(
        "layers_input_list",
        "name: a\ninputs: {x: [b, 3], t: [b, 2]}\ninput: [x]\nlayers: [{dense: 2}]\n"
        "loss: {mse: t}\n",
        3,
        "input ['x']",
    ),
    # an output the spec does not name is its last node: errors point there, not at 1:1
    Case(
        "implied_output_not_scalar",
        "name: a\ninputs: {x: [3]}\nnodes:\n  y: sum(x)\n  m: x * x\nwrt: [x]\n",
        5,
        "output 'm'",
    ),
    # reported at the output's place (1:1 here) before: fixed
    Case("predict_code", tail("predict: os.system\nwrt: [x]\n"), 5, "predict"),
    Case("output_code", tail("output: os.system\nwrt: [x]\n"), 5, "output"),
    Case("wrt_code", tail("wrt: [os.system]\n"), 5, "wrt"),
    Case(
        "unknown_top_key",
        "name: a\nimport: os\ninputs: {x: [3]}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "'import'",
    ),
    # --- YAML that constructs objects, malformed YAML ----------------------------------
    Case(
        "python_object_apply",
        "name: !!python/object/apply:os.system ['touch MARKER']\n",
        1,
        "YAML tag",
        slow=True,
    ),
    Case(
        "python_object_new", "name: !!python/object/new:os.system ['touch MARKER']\n", 1, "YAML tag"
    ),
    Case("python_name", "name: !!python/name:os.system\n", 1, "YAML tag"),
    Case("python_module", "name: !!python/module:os\n", 1, "YAML tag"),
    Case(
        "python_in_formula",
        "name: a\ninputs: {x: [3]}\nnodes:\n  y: !!python/object/apply:os.system [touch MARKER]\n",
        4,
        "YAML tag",
    ),
    Case("set_tag", "name: !!set {a, b}\n", 1, "YAML tag"),
    Case("custom_tag", "name: !evil bar\n", 1, "YAML tag"),
    Case("merge_key", "base: &b {name: a}\n<<: *b\n", 2, "YAML merge keys (<<) are not supported"),
    Case("unclosed_bracket", "name: a\ninputs: {x: [\n", 3, "malformed YAML"),
    Case("tab_indent", "name: a\n\tinputs: {x: [3]}\n", 2, "malformed YAML"),
    Case("bad_indent", "name: a\ninputs:\n  x: [3]\n y: 2\n", 4, "malformed YAML"),
    Case("duplicate_key", "name: a\nname: b\n", 2, "duplicate key 'name'"),
    Case("empty_file", "", 1, "empty"),
    Case("only_comment", "# nothing here\n", 1, "empty"),
    Case("top_level_list", "- a\n- b\n", 1, "mapping"),
    Case("top_level_scalar", "hello\n", 1, "mapping"),
    Case("self_alias", "a: &a [*a]\n", 1, "a"),
    Case("billion_laughs", laughs(), 2, "YAML values", slow=True),
    Case("deep_yaml", "name: a\nx: " + "[" * 1000 + "]" * 1000 + "\n", 1, "nests", slow=True),
    # --- unknown names and functions, cycles -----------------------------------------
    Case("unknown_name", formula("sum(x) + zz"), 4, "unknown name 'zz'"),
    Case("unknown_function", formula("foo(x)"), 4, "unknown function 'foo'"),
    Case("unknown_keyword", formula("sum(x, foo=1)"), 4, "'foo'"),
    # ninth review: "leaky_relu takes 1 argument(s)" for both, and "unknown name 'gelu'"
    Case("three_arguments", formula("sum(leaky_relu(x, 0.2, 0.3))"), 4, "takes 1 or 2 arg"),
    Case(
        "slope_by_keyword",
        formula("sum(leaky_relu(x, slope=0.2))"),
        4,
        "leaky_relu has no argument 'slope'; its arguments go by position: leaky_relu(x, 0.01)",
    ),
    Case(
        "unknown_activation",
        "name: a\ninputs: {x: [b, 3], t: [b, 2]}\nlayers:\n  - {dense: 2, activation: gelu}\n"
        "loss: {mse: t}\n",
        4,
        "unknown activation 'gelu' of layer 1 (known: identity sigmoid",
    ),
    Case(
        "cycle",
        "name: a\ninputs: {x: [3]}\nnodes:\n  p: q + x\n  q: p * 2\n  y: sum(q)\nwrt: [x]\n",
        4,
        "cycle: p -> q -> p",
    ),
    Case(
        "self_reference",
        "name: a\ninputs: {x: [3]}\nnodes:\n  p: p + x\n  y: sum(p)\nwrt: [x]\n",
        4,
        "cycle: p -> p",
    ),
    Case(
        "three_cycle",
        "name: a\ninputs: {x: [3]}\nnodes:\n  p: r + x\n  q: p\n  r: q\n  y: sum(r)\nwrt: [x]\n",
        4,
        "cycle",
    ),
    # --- shapes and dtypes -----------------------------------------------------------
    Case(
        "matmul_shapes",
        formula("sum(x @ w)", "{x: [3, 4], w: [5, 2]}"),
        4,
        "@ cannot multiply [3, 4] by [5, 2]",
    ),
    Case("matmul_scalars", formula("sum(x) @ sum(x)"), 4, "@"),
    Case(
        "broadcast",
        formula("sum(x + w)", "{x: [3, 4], w: [5]}"),
        4,
        "cannot broadcast shapes [3, 4] and [5]",
    ),
    Case(
        "named_dims_differ",
        formula("sum(x + w)", "{x: [batch], w: [other]}"),
        4,
        "cannot broadcast",
    ),
    Case("axis_out_of_range", formula("sum(x, axis=5)"), 4, "axis"),
    Case("axis_not_int", formula("sum(x, axis=0.5)"), 4, "axis"),
    Case("mse_shapes", formula("mse(x, w)", "{x: [2, 3], w: [3, 2]}"), 4, "same shape"),
    Case(
        "labels_float",
        formula("softmax_cross_entropy(z, x)", "{z: [3, 4], x: [3]}"),
        4,
        "labels must be an int tensor",
    ),
    Case(
        "labels_shape",
        formula("softmax_cross_entropy(x, k)", "{x: [2, 3], k: {shape: [3], dtype: int64}}"),
        4,
        "labels of shape [3]",
    ),
    Case(
        "logits_scalar",
        formula("softmax_cross_entropy(x, k)", "{x: [], k: {shape: [], dtype: int64}}"),
        4,
        "class axis",
    ),
    Case("int_arithmetic", formula("sum(x * k)"), 4, "integer inputs can only be labels"),
    Case("int_node", formula("k"), 4, "node 'y'"),
    Case(
        "dtype_object",
        "name: a\ndtype: object\ninputs: {x: [3]}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "dtype",
    ),
    Case(
        "input_dtype_float16",
        "name: a\ninputs: {x: {shape: [3], dtype: float16}}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "dtype of input x",
    ),
    Case("non_scalar_output", formula("x * 2"), 5, "output 'y' must be a float scalar"),
    Case("int_output", tail("output: k\nwrt: [x]\n"), 5, "output 'k'"),
    Case("unknown_output", tail("output: zz\nwrt: [x]\n"), 5, "output 'zz'"),
    Case("grad_of_int_input", tail("wrt: [k]\n"), 5, "'k', an integer input"),
    Case("grad_of_node", tail("wrt: [y]\n"), 5, "wrt names node 'y'"),
    Case("grad_of_unknown", tail("wrt: [zz]\n"), 5, "wrt 'zz'"),
    Case("wrt_empty", tail("wrt: []\n"), 5, "wrt is empty"),
    Case("wrt_twice", tail("wrt: [x, x]\n"), 5, "listed twice"),
    Case("no_params_no_wrt", "name: a\ninputs: {x: [3]}\nnodes:\n  y: sum(x)\n", 1, "wrt"),
    # --- sizes: nesting, enormous formulas, towers, huge dims ---------------------------
    Case(
        "nested_parens",
        formula("sum(" + "(" * 1000 + "x" + ")" * 1000 + ")"),
        4,
        "node 'y'",
        slow=True,
    ),
    Case(
        "nested_calls", formula("sum(" + "exp(" * 1000 + "x" + ")" * 1001), 4, "node 'y'", slow=True
    ),
    Case("nested_minus", formula("sum(" + "-" * 5000 + "x)"), 4, "node 'y'", slow=True),
    Case(
        "enormous_formula",
        formula("sum(" + "+".join(["x"] * 50_000) + ")"),
        4,
        "node 'y'",
        slow=True,
    ),
    Case("many_terms", formula("sum(" + "+".join(["x"] * 6000) + ")"), 4, "node 'y'", slow=True),
    Case("huge_yaml", formula("sum(x)" + " " * 5_000_000), 1, "larger than", slow=True),
    Case("tower", formula("sum(x) + 9**9**9"), 4, "node 'y'", slow=True),
    Case("x_tower", formula("sum(x**9**9**9)"), 4, "node 'y'", slow=True),
    Case("tower_of_tens", formula("sum(x) * 10**10**10**10"), 4, "node 'y'", slow=True),
    Case("huge_int_literal", formula("sum(x) + " + "9" * 5000), 4, "node 'y'", slow=True),
    Case("big_int_literal", formula("sum(x) + " + "9" * 100), 4, "node 'y'"),
    Case("inf_literal", formula("sum(x * 1e309)"), 4, "node 'y'"),
    Case("inf_minus_inf", formula("sum(x) + 1e309 - 1e309"), 4, "node 'y'"),
    Case("complex_constant", formula("sum(x) + (-8)**(1/3)"), 4, "node 'y'"),
    Case("zero_division", formula("sum(x) / 0"), 4, "node 'y'"),
    Case("log_zero", formula("sum(x) + log(0)"), 4, "node 'y'"),
    Case(
        "huge_dim",
        "name: a\ninputs: {x: [10000000000000000000000000]}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "dim of input x",
        slow=True,
    ),
    Case(
        "dim_just_too_big",
        "name: a\ninputs: {x: [1099511627777]}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "dim of input x",
    ),
    Case(
        "zero_dim",
        "name: a\ninputs: {x: [0]}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "dim of input x",
    ),
    Case(
        "negative_dim",
        "name: a\ninputs: {x: [-3]}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "dim of input x",
    ),
    Case(
        "float_dim",
        "name: a\ninputs: {x: [3.5]}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "dim of input x",
    ),
    Case(
        "rank_nine",
        "name: a\ninputs: {x: [1, 1, 1, 1, 1, 1, 1, 1, 1]}\nnodes:\n  y: sum(x)\nwrt: [x]\n",
        2,
        "input x",
    ),
    Case(
        "symbolic_param",
        "name: a\ninputs: {x: [b]}\nparams: {W: [b]}\nnodes:\n  y: sum(x * W)\n",
        3,
        "param W",
    ),
    Case(
        "dense_zero",
        "name: a\ninputs: {x: [b, 3], t: [b, 2]}\nlayers: [{dense: 0}]\nloss: {mse: t}\n",
        3,
        "dense of layer 1",
    ),
    Case(
        "dense_huge",
        "name: a\ninputs: {x: [b, 3], t: [b, 2]}\n"
        "layers: [{dense: 100000000000}]\nloss: {mse: t}\n",
        3,
        "dense of layer 1",
    ),
    Case(
        "nan_init_arg",
        "name: a\ninputs: {x: [3]}\nparams: {W: {shape: [3], init: normal, std: .nan}}\n"
        "nodes:\n  y: sum(x * W)\n",
        3,
        "std of param W",
    ),
    # --- found by these tests, fixed since ------------------------------------------
    # Python's parser NFKC-normalizes names: `\uff58` would silently have meant `x`
    Case("fullwidth_name_in_formula", formula("sum(\uff58)"), 4, "node 'y'"),
    # these compiled to NaN at run time, while log(-1) and log(0) were spec errors
    Case("sqrt_of_negative_constant", formula("sum(x) + sqrt(-1)"), 4, "node 'y'"),
    Case("log1p_of_constant_below_minus_one", formula("sum(x) + log1p(-2)"), 4, "node 'y'"),
]


def case_params(cases: list[Case]) -> list[object]:
    params = []
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cwd with an output dir that already holds files a compile would overwrite."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.py", "seed_graph.py", "test_a_gradcheck.py", "test_seed_graph_gradcheck.py"):
        (out / name).write_bytes(b"# existing output: must stay byte-identical\n")
    return tmp_path


def assert_refused(
    case: Case, code: int, stderr: str, workspace: Path, before: dict[str, bytes]
) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    match = MESSAGE.match(stderr)
    assert match, f"not one `file:line:col: message` line: {stderr!r}"
    assert int(match.group(1)) == case.line, stderr
    assert case.about in stderr, stderr
    assert files_in(workspace / "out") == before
    assert not (workspace / MARKER).exists()
    assert sorted(p.name for p in workspace.iterdir()) == [SPEC_FILE, "out"]


@pytest.mark.parametrize("case", case_params(CASES))
def test_compile_refuses(case: Case, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / SPEC_FILE).write_text(case.text, encoding="utf-8")
    before = files_in(workspace / "out")
    code = main(["compile", "--emit-tests", "-o", "out", str(GOOD), SPEC_FILE])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_refused(case, code, captured.err, workspace, before)


@pytest.mark.parametrize("case", case_params(CASES))
def test_check_refuses(case: Case, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / SPEC_FILE).write_text(case.text, encoding="utf-8")
    before = files_in(workspace / "out")
    code = main(["check", SPEC_FILE])
    assert_refused(case, code, capsys.readouterr().err, workspace, before)


@pytest.mark.parametrize("case", case_params([case for case in CASES if case.slow]))
def test_no_hang_and_no_traceback_end_to_end(case: Case, workspace: Path) -> None:
    (workspace / SPEC_FILE).write_text(case.text, encoding="utf-8")
    before = files_in(workspace / "out")
    completed = subprocess.run(
        [sys.executable, "-m", "symbackprop", "compile", "-o", "out", str(GOOD), SPEC_FILE],
        cwd=workspace,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
    )
    assert completed.stdout == ""
    assert_refused(case, completed.returncode, completed.stderr, workspace, before)


def test_a_spec_that_is_not_utf8(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / SPEC_FILE).write_bytes(b"name: a\xff\xfe\n")
    before = files_in(workspace / "out")
    code = main(["compile", "-o", "out", SPEC_FILE])
    case = Case("not_utf8", "", 1, "not UTF-8")
    stderr = capsys.readouterr().err
    assert_refused(case, code, stderr, workspace, before)
    assert f"{SPEC_FILE}:1:8: the spec is not UTF-8 text" in stderr  # at the bad byte


def test_a_bad_byte_is_placed_where_it_is(tmp_path: Path) -> None:
    """Sixth review: a Latin-1 byte on line 5 was reported at 1:1. Lines counted as YAML
    counts them, a CR alone too, columns in characters."""
    path = tmp_path / "bytes.yaml"
    path.write_bytes(b"name: a\rinputs: {x: []}\r\nnodes:\n  c: x # \xc3\xa9 \xe9\n")
    with pytest.raises(SpecError, match=r"bytes\.yaml:4:12: the spec is not UTF-8 text"):
        load_spec(path)


def test_a_missing_spec(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compile", "-o", "out", "missing.yaml"])
    stderr = capsys.readouterr().err
    assert code == 2
    assert re.match(r"^symbackprop: missing\.yaml:1:1: cannot read spec", stderr), stderr


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_an_unreadable_spec_is_named_by_its_path_as_given(
    make: str, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "specs").mkdir()
    if make == "directory":
        (workspace / "specs" / "dir.yaml").mkdir()
    given = "specs/dir.yaml" if make == "directory" else "specs/missing.yaml"
    assert main(["compile", "-o", "out", given]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"symbackprop: {given}:1:1: cannot read spec: "), stderr


def test_two_specs_with_one_name(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / SPEC_FILE).write_text(GOOD.read_text(encoding="utf-8"), encoding="utf-8")
    before = files_in(workspace / "out")
    code = main(["compile", "-o", "out", str(GOOD), SPEC_FILE])
    case = Case("same_name", "", 3, "name 'seed_graph' is also the name of")
    assert_refused(case, code, capsys.readouterr().err, workspace, before)


def test_one_spec_given_twice_is_compiled_once(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sixth review: `compile a.yaml ./a.yaml` (overlapping globs) was refused, the file
    said to clash with itself."""
    (workspace / SPEC_FILE).write_text(GOOD.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["compile", "-o", "out", SPEC_FILE, f"./{SPEC_FILE}", SPEC_FILE]) == 0
    assert capsys.readouterr().out == f"wrote {Path('out') / 'seed_graph.py'}\n"


@pytest.mark.parametrize("key", ["spec", "node", "param", "input"])
def test_long_and_odd_but_valid_names_compile(key: str, tmp_path: Path) -> None:
    """The other side of the name rules: a long ASCII identifier is fine, up to
    MAX_VARIABLE_NAME for a variable (a spec's name is a file's and a string's)."""
    length = 203 if key == "spec" else MAX_VARIABLE_NAME
    text = named(key, "a" + "b" * (length - 3) + "_9")
    (tmp_path / SPEC_FILE).write_text(text, encoding="utf-8")
    assert main(["compile", "-o", str(tmp_path / "out"), str(tmp_path / SPEC_FILE)]) == 0


@pytest.mark.parametrize("key", ["node", "param", "input"])
def test_a_variable_name_past_the_limit_is_refused_at_its_place(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ninth review: with a node named in 75 characters, `t_<name>_1 = b + t_<name>_0`
    was one line of 170 columns that ruff format would break; the module failed
    `ruff format --check`, which DESIGN.md promises. Past 57 characters such lines
    appear; variable names are held to MAX_VARIABLE_NAME (56)."""
    name = "a" * (MAX_VARIABLE_NAME + 1)
    (tmp_path / SPEC_FILE).write_text(named(key, name), encoding="utf-8")
    assert main(["compile", "-o", str(tmp_path / "out"), str(tmp_path / SPEC_FILE)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"symbackprop: {tmp_path / SPEC_FILE}:{NAME_LINE[key]}:3: {key} name ")
    assert f"is {MAX_VARIABLE_NAME + 1} characters long, past {MAX_VARIABLE_NAME}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dim", ["d_model", "t_len", "np", "max", "out", "seed", "ones"])
def test_a_dim_may_have_a_name_the_code_uses(dim: str, tmp_path: Path) -> None:
    """Sixth review: `d_model` was refused as reserved; a dim is a string in the code (in
    INPUTS and the docstrings) and a suffix of the batch's ones, `t_ones_d_model`."""
    text = (
        f"name: dims\ninputs: {{x: [{dim}, 3], y: [{dim}, 2]}}\n"
        "layers:\n  - {dense: 4, activation: relu}\n  - {dense: 2}\nloss: {mse: y}\n"
    )
    source = compile_text(text, "dims.yaml")
    assert f"t_ones_{dim} = _ones(x.shape[0], _DTYPE)" in source
    module = import_source(source, tmp_path)
    assert module.INPUTS["x"] == ((dim, 3), "float64")
    _, grads = module.value_and_grad(module.init_params(), np.ones((5, 3)), np.ones((5, 2)))
    assert grads["b1"].shape == (4,)


def test_a_long_flat_sum_compiles_and_differentiates(tmp_path: Path) -> None:
    """`x0 * w + x1 * w + ...` nests one level a term in Python's syntax tree; a flat sum
    of hundreds of terms is no deep formula."""
    terms = 300
    inputs = ", ".join(f"x{i}: [3]" for i in range(terms))
    total = " + ".join(f"x{i} * w" for i in range(terms))
    text = f"name: flat\ninputs: {{{inputs}}}\nparams: {{w: [3]}}\nnodes:\n  loss: sum({total})\n"
    module = import_source(compile_text(text, "flat.yaml"), tmp_path)
    rng = np.random.default_rng(0)
    values = {f"x{i}": rng.standard_normal(3) for i in range(terms)}
    _, cache = module.forward({"w": np.ones(3)}, **values)
    expected = sum(values.values())
    np.testing.assert_allclose(module.backward(cache)["w"], expected, rtol=1e-12)


def test_huge_legal_dims_compile_without_allocating(tmp_path: Path) -> None:
    """Dims up to 2**40 are legal: compiling does not allocate them, so it is instant."""
    text = (
        "name: a\ninputs: {x: [b, 1099511627776]}\nparams: {W: [1099511627776, 2]}\n"
        "nodes:\n  y: sum(x @ W)\n"
    )
    (tmp_path / SPEC_FILE).write_text(text, encoding="utf-8")
    assert main(["compile", "-o", str(tmp_path / "out"), str(tmp_path / SPEC_FILE)]) == 0


def test_float32s_largest_as_numpy_prints_it_is_a_bound_it_takes(tmp_path: Path) -> None:
    """Second review: `3.4028235e+38` is float32's largest as NumPy prints it; a float64
    draw below it rounds to that finite float32. Written `1e-3`, `.5e-2`, `1.5e3` or
    `1.e-3` (strings to YAML 1.1), an argument is the number YAML 1.2 and JSON read."""
    text = (
        "name: edge\ndtype: float32\ninputs: {x: [3]}\nparams:\n"
        "  U: {shape: [3], init: uniform, low: -3.4028235e+38, high: 3.4028235e+38}\n"
        "  N: {shape: [3], init: normal, mean: .5e-2, std: 1e-3}\n"
        "  M: {shape: [3], init: normal, mean: 1.5e3, std: 1.e-3}\n"
        "nodes:\n  y: sum(x * U) + sum(x * N) + sum(x * M)\n"
    )
    params = _finite_init_params(text, tmp_path)
    assert np.abs(params["N"] - 0.005).max() < 0.01
    assert np.abs(params["M"] - 1500).max() < 0.01


def test_large_but_finite_inits_compile_and_draw_finite_params(tmp_path: Path) -> None:
    """The other side of the init bounds: float64 takes what float32 refuses."""
    text = (
        "name: big\ninputs: {x: [3]}\nparams:\n"
        "  U: {shape: [3], init: uniform, low: 1.0e+39, high: 2.0e+39}\n"
        "  N: {shape: [3], init: normal, std: 1.0e+37}\n"
        "nodes:\n  y: sum(x * U) + sum(x * N)\n"
    )
    params = _finite_init_params(text, tmp_path)
    assert (params["U"] >= 1e39).all()


def _finite_init_params(text: str, directory: Path) -> dict[str, np.ndarray]:
    """The params `init_params(0)` draws for the spec `text`, every one of them finite."""
    module = import_source(compile_text(text, "inits.yaml"), directory)
    params = module.init_params(0)
    assert all(np.isfinite(value).all() for value in params.values())
    return params


@pytest.mark.parametrize(
    "text",
    [
        "name: off\ninputs: {x: [3]}\nnodes: {e: sum(x)}\nwrt: [x]\n",
        "name: a\ninputs: {x: [3]}\nnodes: {yes: sum(x)}\nwrt: [x]\n",
    ],
)
def test_a_name_yaml_reads_as_a_boolean_says_so(text: str) -> None:
    """Fourth review: `name: off` said "spec name False is not a valid name"."""
    with pytest.raises(SpecError, match="YAML 1.1 reads yes, no, on, off, true and false"):
        parse_spec(text, "b.yaml")
    assert parse_spec(text.replace("off", "'off'").replace("yes:", "'yes':"), "b.yaml")


@pytest.mark.parametrize(
    ("formula", "key"), [("sum(x * w, axis=0)", "axis=0)"), ("maximum(x, w)", "w)")]
)
def test_a_formula_split_at_its_comma_says_to_quote_it(formula: str, key: str) -> None:
    """Twelfth review: in `nodes: {loss: sum(x * w, axis=0)}` YAML ends the formula at the
    comma and reads `axis=0)` as a node's name, which was all the error said."""
    text = f"name: q\ninputs: {{x: [3]}}\nparams: {{w: [3]}}\nnodes: {{loss: {formula}}}\n"
    with pytest.raises(SpecError, match=re.escape(f"node {key!r} is not a valid name")) as error:
        parse_spec(text, "q.yaml")
    assert str(error.value).endswith("YAML splits a formula at each comma: quote the formula")
    assert parse_spec(text.replace(formula, f'"{formula}"'), "q.yaml")
    for name in ("loss-1", "f(x)", "my(net)"):  # no formula was split: no such hint
        with pytest.raises(SpecError) as plain:
            parse_spec(text.replace("{loss:", f"{{{name}:").replace(formula, "sum(x)"), "q.yaml")
        assert "quote" not in str(plain.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("class", "node 'class' is a Python keyword: not a name code can use"),
        ("lambda", "node 'lambda' is a Python keyword"),
        ("d_f", "node 'd_f' is reserved: names starting with d_ or t_ are the generated code"),
        ("np", "node 'np' is reserved: the generated code uses that name"),
    ],
)
def test_a_refused_name_says_why(name: str, message: str) -> None:
    """Twelfth review: a keyword was "not a valid name (letters, digits and _, ...)",
    which it is, and `d_f` was reserved as "names starting with d_ or t_, and 'd_f'"."""
    text = f"name: q\ninputs: {{x: [3]}}\nnodes:\n  {name}: sum(x)\nwrt: [x]\n"
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(text, "q.yaml")


def test_a_number_past_pythons_digit_limit_says_so_in_spec_terms() -> None:
    """Twelfth review: 5000 digits gave Python's advice to call
    sys.set_int_max_str_digits(), which a spec cannot."""
    text = f"name: q\ninputs: {{x: [3]}}\nnodes:\n  f: sum(x) * {'9' * 5000}\nwrt: [x]\n"
    limit = sys.get_int_max_str_digits()
    with pytest.raises(SpecError, match=f"a number of more than {limit} digits$"):
        compile_text(text, "q.yaml")


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("sum(x, 1)", "sum takes 1 argument(s), not 2; the rest go by name: sum(x, axis=...)"),
        ("sum(log_softmax(x, 0))", "log_softmax takes 1 argument(s), not 2; the rest go by"),
        ("sum(transpose(x, 1))", "transpose takes 1 argument(s), not 2$"),
    ],
)
def test_an_axis_by_position_says_to_name_it(formula: str, message: str) -> None:
    """Twelfth review: `sum(z, 1)`, as NumPy takes it, said only that sum takes 1 argument."""
    text = f"name: q\ninputs: {{x: [2, 3]}}\nnodes:\n  f: {formula}\nwrt: [x]\n"
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_text(text, "q.yaml")

"""Every emitted module is lint-clean: `ruff check` (E, F, W, B, UP) and `ruff format --check`.

Checked with the ruff pinned in pyproject's test extra, `--isolated` at ruff's default line
length: a user's repository lints generated code with its own settings, not ours. Covered:
every example, and specs that reach the corners of the emitter: every layer activation,
every loss in both reductions, reductions along axes, names long enough to force long
lines, a call of long names, long names of inputs, labels and params, a single
gradient, params that all start at zero, a long spec file name, and file names with
quotes, backslashes and line breaks. `ruff check` with ruff's default rules finds
nothing either; the stricter rules find nothing but, with a long spec file name, the
header lines that name it (their wording is fixed).

Everything is compiled into one folder and ruff runs twice over it, not once per module.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from symbackprop import __version__
from symbackprop.compiler import compile_spec, compile_text
from symbackprop.errors import SpecError
from symbackprop.linebreak import leading_parts, wrap_for
from symbackprop.spec import MAX_VARIABLE_NAME
from tests.support import EXAMPLES, ROOT, example_spec, import_source
from tests.test_regressions import SIDE_PREDICTION_SPEC

EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
RULES = "E,F,W,B,UP"
LINE_LENGTH = "88"  # ruff's default: what a repository without settings checks

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "softmax")
LOSSES = {"mse": "mse", "sce": "softmax_cross_entropy", "bce": "binary_cross_entropy_with_logits"}


def _activation_spec(name: str, activation: str) -> str:
    return f"""
name: {name}
inputs: {{x: [batch, 4], y: [batch, 5]}}
layers:
  - {{dense: 5, activation: "{activation}"}}
  - {{dense: 5, activation: "{activation}"}}
loss: {{mse: y}}
"""


def _loss_spec(name: str, loss: str, reduction: str) -> str:
    labels = "{shape: [batch], dtype: int64}" if loss == "softmax_cross_entropy" else "[batch, 3]"
    return f"""
name: {name}
inputs: {{x: [batch, 4], y: {labels}}}
layers:
  - {{dense: 3}}
loss: {{{loss}: y, reduction: {reduction}}}
"""


AXES_SPEC = """
name: reductions_with_axes
inputs: {x: [batch, 5, 3], v: [3]}
params: {w: [5, 3]}
nodes:
  t: x * w + v
  a: sum(t, axis=0)
  b: mean(t, axis=(0, 2))
  c: max(t, axis=-1)
  d: logsumexp(t, axis=1)
  p: softmax(t, axis=1)
  q: log_softmax(t, axis=0)
  loss: sum(a * w) + sum(b) + mean(c) + sum(d) + sum(p * q) + max(t) + logsumexp(t)
output: loss
wrt: [w, v]
"""

LONG_SPEC = """
name: long_formulas
inputs: {x: [batch, 6], y: [batch, 6]}
params: {alpha_weight: [6, 6], beta_weight: [6, 6], gamma_weight: [6]}
nodes:
  first_long_intermediate_value: >-
    sigmoid(x) @ alpha_weight + tanh(x * gamma_weight) @ beta_weight + exp(-x * x) @ alpha_weight
    + log1p(x * x) * gamma_weight - softplus(gamma_weight * x - 1) / (1 + x * x)
  second_long_intermediate_value: >-
    maximum(first_long_intermediate_value, y) * minimum(first_long_intermediate_value, x)
    + sqrt(1 + first_long_intermediate_value ** 2) * leaky_relu(y - x, 0.2) * abs(x - y)
  loss: >-
    mean((second_long_intermediate_value - y) ** 2)
    + binary_cross_entropy_with_logits(first_long_intermediate_value, sigmoid(y))
output: loss
"""

SINGLE_WRT_SPEC = """
name: single_wrt
inputs: {x: [3]}
params: {w: [3, 3]}
nodes:
  loss: sum(tanh(w @ x))
"""

ZERO_INIT_SPEC = """
name: zero_init
inputs: {x: [3]}
params: {w: [3], b: [3]}
nodes:
  loss: sum(w * x + b)
"""

# `s += ...` is one character longer than `s = ...`; a negated power is `-(x**2)`
AUGMENTED_SPEC = """
name: augmented
inputs: {x: [batch, 4]}
params: {W: [4, 3], cazzz: [3], cb: [3], cc: [3], cd: [3], ce: [3], cf: [3], cg: [3],
  ch: [3], ci: [3], cj: [3], ck: [3], cl: [3], cm: [3], cn: [3], co: [3], cp: [3]}
nodes:
  s: x @ W + cazzz * cb + cc * cd + ce * cf + cg * ch + ci * cj + ck * cl + cm * cn + co * cp
  a: sigmoid(x * x) - x ** 2 + exp(-x ** 2)
  loss: sum(s * s) + sum(a)
output: loss
"""

# a call of long names, with no subexpression left to hoist, breaks one argument a line
LONG_ARGUMENTS_SPEC = """
name: long_arguments
inputs:
  images: [batch, 4]
  class_label_per_image: {shape: [batch], dtype: int64}
params: {W: [4, 10]}
nodes:
  unnormalized_scores_per_class: images @ W
  loss: softmax_cross_entropy(unnormalized_scores_per_class, class_label_per_image)
output: loss
"""

# long names (36 characters: past that, a dict entry `"name": name,` of the cache is longer
# than a line, and ruff cannot break it), past what one line holds in the templated lines
# too: the dtype conversions, the cache reads, forward's call, init_params's entries
LONG_NAMES_SPEC = """
name: long_names
inputs:
  pixels_of_the_normalised_images_here: [batch, 4]
  class_label_of_each_example_in_batch: {shape: [batch], dtype: int64}
  another_rather_long_input_name_for_w: [batch]
params:
  W_for_the_first_layer_of_the_network: {shape: [4, 6], init: normal, std: 0.5}
  bias_of_the_first_layer_of_the_netwo: [6]
  W_for_the_output_layer_of_the_networ: [6, 3]
  embedding_matrix_ab: {shape: [3], init: uniform}
nodes:
  hidden_units_after_the_first_activat: >-
    tanh(pixels_of_the_normalised_images_here @ W_for_the_first_layer_of_the_network
    + bias_of_the_first_layer_of_the_netwo)
  unnormalised_scores_for_each_of_the_: >-
    hidden_units_after_the_first_activat @ W_for_the_output_layer_of_the_networ
    + embedding_matrix_ab
  loss: >-
    softmax_cross_entropy(unnormalised_scores_for_each_of_the_,
    class_label_of_each_example_in_batch)
    + mean(another_rather_long_input_name_for_w ** 2)
"""
# each breaks one more form of line as ruff does: an INPUTS entry of long dim names, a
# relu mask `(h > 0).astype(DTYPE)`, an attribute `h.T` and `h.shape`; and a prediction
# the loss does not read, which forward must not compute (ruff's F841)
LONG_FORMS_SPECS = {
    "long_input_entry": """
name: long_input_entry
inputs:
  input_features_of_the_sample_x: [number_of_samples_in_the_batch_n, 4]
params: {W: [4, 3]}
nodes:
  loss: mean((input_features_of_the_sample_x @ W) ** 2)
""",
    "long_relu_mask": """
name: long_relu_mask
inputs: {x: [batch, 4]}
params: {W: [4, 3]}
nodes:
  preactivation_of_hidden_layer_one: x @ W
  hidden_activation_of_layer_number_1: relu(preactivation_of_hidden_layer_one)
  loss: mean(hidden_activation_of_layer_number_1 ** 2)
""",
    "long_attributes": """
name: long_attributes
inputs: {x: [batch, 4]}
params: {W: [4, 3]}
nodes:
  hidden_layer_number_one_activation_x: x @ W
  preactivation_of_the_hidden_layer_n1: x @ W * 2
  loss: >-
    mean(transpose(hidden_layer_number_one_activation_x) ** 2)
    + mean(preactivation_of_the_hidden_layer_n1)
""",
    "side_prediction": SIDE_PREDICTION_SPEC,
    # (fourteenth review) an init_params entry that fits but for its `.astype(DTYPE)`: ruff
    # splits that last call
    "init_entry_last_call": """
name: init_entry_last_call
inputs: {x: [batch, 3]}
params:
  wwwwwwwwwwwww: {shape: [3], init: normal}
nodes:
  o: sum(x * wwwwwwwwwwwww)
""",
    # (thirteenth review) an input check whose wanted shape, three dims of another input,
    # is past a line: ruff breaks the tuple one item a line; and two [n, n] inputs
    "long_input_shapes": """
name: long_input_shapes
inputs:
  encoder_states_x: [batch, time, heads, 8]
  attention_mask: [batch, time, heads, 1]
  pairwise_scores_of_the_heads_matrix: [heads, heads]
  other_scores_of_the_heads: [heads, heads]
params: {w: [8]}
nodes:
  loss: >-
    sum(encoder_states_x * attention_mask * w) + sum(pairwise_scores_of_the_heads_matrix)
    + sum(other_scores_of_the_heads)
""",
    # cross-entropy of long names: the picked sum goes to a line of its own (the mean), or
    # breaks inside its call (the sum)
    "long_cross_entropy": """
name: long_cross_entropy
inputs:
  input_features_of_the_sample_x: [batch, 4]
  the_class_label_of_each_example_in_b: {shape: [batch], dtype: int64}
params: {W: [4, 3]}
nodes:
  the_unnormalised_scores_of_classes: input_features_of_the_sample_x @ W
  loss: >-
    softmax_cross_entropy(the_unnormalised_scores_of_classes,
    the_class_label_of_each_example_in_b)
""",
    "long_summed_cross_entropy": """
name: long_summed_cross_entropy
inputs:
  x: [batch, 4]
  the_class_label_of_each_example_in_b: {shape: [batch], dtype: int64}
params: {W: [4, 10]}
nodes:
  loss: >-
    softmax_cross_entropy(x @ W, the_class_label_of_each_example_in_b, reduction="sum")
""",
    # third review: where ruff omits an expression's parentheses and breaks inside its last
    # bracket group (`(a + q) / (` / `a + 3.25` / `)`), its first (the line up to the last
    # is too long), or after a negation; a constant `1e+22` that ruff writes `1e22`
    "long_bracket_groups": """
name: long_bracket_groups
inputs: {a_long_input_name: [n], second_input_vector: [n]}
params: {p: [1], q_val: [1]}
nodes:
  quotient_node_with_a_long_name: (a_long_input_name + q_val) / (a_long_input_name + 3.25)
  product_node_with_a_long_name_x: >-
    (a_long_input_name + 0.386871006114) * (q_val + 1.25) - 1.25
  first_group_node_with_a_long_name: >-
    (a_long_input_name + q_val + second_input_vector * 1.75) / (a_long_input_name + 3.25)
  negated_node_with_a_long_name_xx: -exp(a_long_input_name) + exp(second_input_vector * p)
  calls_node_with_a_long_name_xxxx: >-
    tanh(quotient_node_with_a_long_name) * softplus(product_node_with_a_long_name_x)
  large_constant_node: 1e22 * p
  loss: >-
    sum(quotient_node_with_a_long_name * product_node_with_a_long_name_x)
    + sum(first_group_node_with_a_long_name * negated_node_with_a_long_name_xx)
    + sum(calls_node_with_a_long_name_xxxx) + sum(large_constant_node)
wrt: [p, q_val]
""",
}
# third review, short names: a mean that breaks inside its divisor's parentheses, a
# chain of sums on a parenthesized value (ruff's fluent style, one call a line), and a
# power of a transpose, which ruff hugs (`w2.T**2`)
SHORT_FORMS_SPECS = {
    "mean_over_two_axes": """
name: mean_over_two_axes
inputs: {x: [seq, batch, batch]}
nodes:
  objective: 'mean(tanh(x), axis=(0, 1))'
  total: sum(objective)
output: total
wrt: [x]
""",
    "chained_sums": """
name: chained_sums
params: {w1: [4, 4], w3: [1]}
nodes:
  objective: max(maximum(w1, w3))
output: objective
""",
    "power_of_a_transpose": """
name: power_of_a_transpose
params: {w1: [3], w2: [3, 1]}
nodes:
  n1: 'transpose(log(transpose(w2) * transpose(w2) + 1))'
  objective: 'sum(w1 * w1)'
output: objective
predict: n1
""",
}
# third review, format only: their cache entries (`"name": name,`) are longer than a line,
# which ruff cannot break (E501)
LONG_FORMAT_ONLY_SPECS = {
    # third review: `backward`'s entries `"k": np.asarray(d_k),` of a scalar and
    # `"k": np.zeros_like(k),` of an unreached value, too long for a line; a rebinding
    # `d_a = d_b` too long (ruff parenthesizes a name too)
    "long_returned_entries": """
name: long_returned_entries
inputs:
  x: [n, 3]
  y: [n]
  l2_regularization_strength_coef: []
  an_input_that_no_path_reaches_xxx: [3]
params: {w: [3]}
nodes:
  hidden_preactivation_of_the_first_block: x @ w
  hidden_activation_of_the_first_block_out: hidden_preactivation_of_the_first_block
  loss: >-
    mse(hidden_activation_of_the_first_block_out, y)
    + l2_regularization_strength_coef * sum(w * w)
wrt: [w, l2_regularization_strength_coef, an_input_that_no_path_reaches_xxx]
""",
    # a value whose terms cancel, filled to a shape none of its inputs has: the call's
    # arguments one a line, the shape's own call broken inside them; and `t = x.sum(`
    # too long on its own, the call in parentheses with its arguments broken inside
    "long_nested_call": """
name: long_nested_call
inputs:
  input_a_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: [n, 3]
  input_b_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: [n, 1]
params: {param_p_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: [1, 3]}
nodes:
  node_one_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: >-
    tanh(input_a_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
    * param_p_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx)
  node_two_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: >-
    (param_p_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
    - param_p_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx)
    * input_b_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
  loss: >-
    sum(node_one_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
    * node_two_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx)
    + sum(node_one_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
    * input_b_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx)
wrt: [param_p_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx]
""",
}
_B, _E = "base_param_with_a_long_name_xxxxxxxxxx", "exponent_param_with_a_long_name_xxxxxx"
_W, _S = "weight_matrix_with_a_rather_long_name_xxxxxxxxxxxxxxxx", "scale_param_with_a_long_name"
_P, _Q, _U = "p" * MAX_VARIABLE_NAME, "q" * MAX_VARIABLE_NAME, "u" * MAX_VARIABLE_NAME
# fourth review: the lines the power rule writes (`t = b**t_1`, `np.log(b + (b == 0))`,
# `b ** (k - 1)`), a mean over two axes whose divisor breaks one factor a line, a chain of
# sums on a name (`t.sum(` / `axis=1, keepdims=True` / `).sum(axis=0)`), and entries of
# names of 70 characters (`"p...": _glorot_uniform(` / `rng,` / `PARAMS[` / ...)
LONG_FORMAT_ONLY_SPECS |= {
    # (fourteenth review) a shape tuple past a line: ruff writes it one item a line
    "long_shape_tuple": """
name: long_shape_tuple
inputs: {xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: [batch, 4]}
params:
  W: [4, 8]
  s: []
nodes:
  a: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx @ W
  hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh: leaky_relu(a, 0.2) * s
  oooooooooooooooooooooooooooooooooooooooooooooo: >-
    sum(maximum(hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh, s))
wrt: [xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx]
""",
    "long_power": f"""
name: long_power
params: {{{_B}: [3], {_E}: [3]}}
nodes:
  power_node_with_a_long_name: {_B} ** {_E}
  loss: sum(power_node_with_a_long_name)
""",
    "long_log_or_zero": """
name: long_log_or_zero
inputs: {base_input_with_a_rather_long_name_xxxxxx: [3]}
params: {k: [3]}
nodes:
  loss: sum(base_input_with_a_rather_long_name_xxxxxx ** k)
""",
    "long_mean_over_two_axes": """
name: long_mean_over_two_axes
inputs: {input_tensor_with_a_long_name_xxxxxxxxxxx: [a, b, 3]}
params: {w: [3]}
nodes:
  loss: sum(w * mean(input_tensor_with_a_long_name_xxxxxxxxxxx, axis=(0, 1)))
""",
    # fifth review: the same with a long target, `t = (` / `x.sum(...)` / `/ (` / `a` /
    # `* b` / `)` / `)`: an operand in parentheses broken inside them
    "long_mean_with_a_long_target": """
name: long_mean_with_a_long_target
inputs: {input_tensor_with_a_long_name_xxxxxxxxx: [a, b, 3]}
nodes:
  mean_node_with_a_long_name_xxxxxxxxxxxx: >-
    mean(input_tensor_with_a_long_name_xxxxxxxxx, axis=(0, 1))
  loss: sum(mean_node_with_a_long_name_xxxxxxxxxxxx ** 2)
wrt: [input_tensor_with_a_long_name_xxxxxxxxx]
""",
    "long_chain_of_sums": f"""
name: long_chain_of_sums
params: {{{_W}: [3, 3], {_S}: [1]}}
nodes:
  loss: sum(tanh({_W} * {_S}))
""",
    "very_long_names": f"""
name: very_long_names
inputs: {{{_Q}: [n, 3], y: [n, 2], {_U}: [3]}}
params: {{{_P}: [3, 2], s: []}}
nodes:
  loss: mse({_Q} @ {_P}, y) + sum(s * {_U})
wrt: [{_P}, s, {_U}]
""",
}
LABEL_NAME_SPEC = """
name: label_name
inputs:
  x: [batch, 4]
  class_label_of_each_example: {shape: [batch], dtype: int64}
layers:
  - {dense: 3}
loss: {softmax_cross_entropy: class_label_of_each_example}
"""

# nodes and params named as PEP 8 forbids (`l` reads as 1): their variables are `l_`, ...
AMBIGUOUS_SPEC = """
name: ambiguous_names
inputs: {x: [3]}
params: {W: [3, 3], O: [3]}
nodes:
  I: tanh(W @ x + O)
  l: sum(I * I)
"""

LONG_FILE_NAME = "a_spec_file_with_a_rather_long_and_descriptive_name"
# names a file system allows that would end a comment or the docstring if copied as they are
ODD_FILE_NAMES = {
    "file_name_line_break": 'a\nimport os; os.system("id")\n#',
    "file_name_quotes": 'x"""; print(1); """',
    "file_name_backslash": "win\\N{x}\\",
    "file_name_control": "tab\tcr\rff\x0cls\u2028end",
}
LONG_FILE_SPEC = """
name: long_file_name
inputs: {x: [3]}
params: {w: [3, 3], b: [3]}
nodes:
  loss: sum(w @ x + b)
"""


@dataclass(frozen=True)
class Case:
    """One spec to lint."""

    name: str
    source: Callable[[], str]

    def param(self) -> object:
        return pytest.param(self, id=self.name)


def _text(name: str, text: str, file: str | None = None) -> Case:
    return Case(name, lambda: compile_text(text, f"{file or name}.yaml"))


CASES = [
    *(Case(name, lambda name=name: compile_spec(example_spec(name))) for name in EXAMPLE_NAMES),
    *(
        _text(f"activation_{name}", _activation_spec(f"activation_{name}", name))
        for name in ACTIVATIONS
    ),
    _text("activation_mish", _activation_spec("activation_mish", "x * tanh(softplus(x))")),
    *(
        _text(
            f"loss_{short}_{reduction}",
            _loss_spec(f"loss_{short}_{reduction}", loss, reduction),
        )
        for short, loss in LOSSES.items()
        for reduction in ("mean", "sum")
    ),
    _text("reductions_with_axes", AXES_SPEC),
    _text("long_formulas", LONG_SPEC),
    _text("single_wrt", SINGLE_WRT_SPEC),
    _text("zero_init", ZERO_INIT_SPEC),
    _text("augmented", AUGMENTED_SPEC),
    _text("long_arguments", LONG_ARGUMENTS_SPEC),
    _text("long_names", LONG_NAMES_SPEC),
    _text("label_name", LABEL_NAME_SPEC),
    *(_text(name, text) for name, text in LONG_FORMS_SPECS.items()),
    *(_text(name, text) for name, text in SHORT_FORMS_SPECS.items()),
    _text("ambiguous_names", AMBIGUOUS_SPEC),
    _text("long_file_name", LONG_FILE_SPEC, LONG_FILE_NAME),
    *(
        _text(name, LONG_FILE_SPEC.replace("long_file_name", name), file)
        for name, file in ODD_FILE_NAMES.items()
    ),
]
# names so long that docstring lines pass 88 columns (only E501 flags those; ruff format
# leaves docstrings alone): checked by ruff format alone. The mean cross-entropy of a long
# output's name moves the picked sum to a line of its own.
FORMAT_ONLY_CASES = [
    *(_text(name, text) for name, text in LONG_FORMAT_ONLY_SPECS.items()),
    _text(
        "long_cross_entropy_of_many_classes",  # no table: `-_picked(...).sum() / n` as one
        """
name: long_cross_entropy_of_many_classes
inputs:
  x: [batch, 4]
  class_labels_of_each_example_in_this_batch: {shape: [batch], dtype: int64}
params: {W: [4, 65]}
nodes:
  the_class_scores_of_each_example: x @ W
  mean_loss: >-
    softmax_cross_entropy(the_class_scores_of_each_example,
    class_labels_of_each_example_in_this_batch)
""",
    ),
    _text(
        "long_output_cross_entropy",
        """
name: long_output_cross_entropy
inputs:
  x: [batch, 4]
  the_class_label_of_each_example_in_b: {shape: [batch], dtype: int64}
params: {W: [4, 10]}
nodes:
  the_mean_cross_entropy_of_the_batch: >-
    softmax_cross_entropy(x @ W, the_class_label_of_each_example_in_b)
""",
    ),
]
# (case, line): findings the stricter rules may make, for a long spec file name's header
HEADER_LINES = {(name, line) for name in ("long_file_name", *ODD_FILE_NAMES) for line in (1, 3)}


def _pinned_ruff() -> str | None:
    match = re.search(r'"ruff==([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return match.group(1) if match else None


def _ruff_command() -> list[str]:
    """`python -m ruff` (the pinned wheel), else a `ruff` on PATH; skip when none or off-pin."""
    candidates = [[sys.executable, "-m", "ruff"]]
    if shutil.which("ruff"):
        candidates.append(["ruff"])
    pinned = _pinned_ruff()
    found = []
    for command in candidates:
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            version = result.stdout.split()[-1]
            if pinned is None or version == pinned:
                return command
            found.append(version)
    if found:
        versions = ", ".join(found)
        pytest.skip(
            f"ruff {versions} found, but the tests pin ruff=={pinned}: pip install '.[test]'"
        )
    pytest.skip("ruff is not installed: pip install '.[test]' (it pins the ruff version)")


Findings = dict[str, list[str]]


def _check_findings(output: str) -> Findings:
    """`ruff check --output-format concise` lines, by module name."""
    found: Findings = {}
    for line in output.splitlines():
        match = re.match(r"(\S+)\.py:\d+:\d+: ", line)
        if match:
            found.setdefault(Path(match.group(1)).name, []).append(line)
    return found


def _format_findings(diff: str) -> Findings:
    """`ruff format --diff` output cut into one diff per module."""
    found: Findings = {}
    current: list[str] = []
    for line in diff.splitlines():
        match = re.match(r"--- (\S+)\.py$", line)
        if match:
            current = found.setdefault(Path(match.group(1)).name, [])
        current.append(line)
    return found


def _ruff(ruff: list[str], *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [*ruff, *args, "--isolated", "--line-length", LINE_LENGTH, "."],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr  # 2: ruff itself failed
    return result.stdout


Lint = Callable[[str], tuple[list[str], list[str]]]


@pytest.fixture(scope="module")
def lint(tmp_path_factory: pytest.TempPathFactory) -> Lint:
    """lint(name): (ruff check findings, ruff format diff) of one emitted module."""
    ruff = _ruff_command()
    folder = tmp_path_factory.mktemp("emitted")
    crashes: Findings = {}
    for case in CASES + FORMAT_ONLY_CASES:
        try:
            (folder / f"{case.name}.py").write_text(case.source(), encoding="utf-8")
        except Exception as err:  # one crash must not hide the lint of every other module
            crashes[case.name] = [f"the compiler crashed: {type(err).__name__}: {err}"]
    strict = _check_findings(
        _ruff(ruff, "check", "--select", RULES, "--output-format", "concise", cwd=folder)
    )
    default = _check_findings(_ruff(ruff, "check", "--output-format", "concise", cwd=folder))
    formatted = _format_findings(_ruff(ruff, "format", "--check", "--diff", cwd=folder))

    def findings(name: str) -> list[str]:
        header = [
            line
            for line in strict.get(name, [])
            if (name, int(line.split(":")[1])) in HEADER_LINES and ": E501 " in line
        ]
        return [line for line in strict.get(name, []) if line not in header] + default.get(name, [])

    return lambda name: (
        crashes.get(name) or findings(name),
        crashes.get(name) or formatted.get(name, []),
    )


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_emitted_module_passes_ruff_check(lint: Lint, case: Case) -> None:
    findings, _ = lint(case.name)
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize("case", [case.param() for case in CASES + FORMAT_ONLY_CASES])
def test_emitted_module_is_ruff_formatted(lint: Lint, case: Case) -> None:
    _, diff = lint(case.name)
    assert not diff, "\n".join(diff)


def test_every_example_is_linted() -> None:
    assert {case.name for case in CASES} >= set(EXAMPLE_NAMES)


def test_a_long_spec_file_name_keeps_the_header_wording_and_no_noqa() -> None:
    """The header's first line keeps DESIGN's exact wording even when the name makes it
    long; no `noqa` is added (ruff's latest versions flag one for an unchecked rule)."""
    long_source = compile_text(LONG_FILE_SPEC, f"{LONG_FILE_NAME}.yaml")
    first = long_source.splitlines()[0]
    assert first == (
        f"# Code generated by symbackprop {__version__} from {LONG_FILE_NAME}.yaml. DO NOT EDIT."
    )
    assert len(first) > 88
    assert "noqa" not in long_source


@pytest.mark.parametrize("name", sorted(ODD_FILE_NAMES))
def test_an_odd_spec_file_name_is_shown_by_code_points(name: str, tmp_path: Path) -> None:
    file = ODD_FILE_NAMES[name]
    source = compile_text(LONG_FILE_SPEC.replace("long_file_name", name), f"{file}.yaml")
    shown = "".join(
        char if char.isprintable() and char not in '"\\' else f"<U+{ord(char):04X}>"
        for char in file
    )
    lines = source.splitlines()
    assert (
        lines[0] == f"# Code generated by symbackprop {__version__} from {shown}.yaml. DO NOT EDIT."
    )
    assert f"Compiled from {shown}.yaml." in source
    module = import_source(source, tmp_path, name)  # and nothing in it runs but the module
    assert module.SPEC_NAME == name
    assert module.__doc__ is not None and shown in module.__doc__


@pytest.mark.parametrize("length", [32, 80, 230])
def test_long_spec_names_leave_module_and_emitted_test_as_ruff_formats_them(
    length: int, tmp_path: Path
) -> None:
    """Second review: `SPEC_NAME = "..."` of a 75-82-character name, and the emitted
    test's `spec_from_file_location("...", path)` from 30 characters, were lines ruff
    format breaks; the emitted test still imports the module and passes."""
    from symbackprop.cli import main

    ruff = _ruff_command()
    spec = tmp_path / "long.yaml"
    spec.write_text(
        f"name: {'n' * length}\ninputs: {{x: [3]}}\nnodes: {{e: sum(x * x)}}\nwrt: [x]\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert main(["compile", "--emit-tests", "-o", str(out), str(spec)]) == 0
    result = subprocess.run(
        [*ruff, "format", "--isolated", "--check", "."], cwd=out, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=out,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


@pytest.mark.parametrize(
    "formula",
    [
        "(first_input * second_input * 1.25 - 0.38687100611489994) / second_input",
        "(first_input * second_input * 1.25 - exp(first_input) - 0.386871) / second_input",
    ],
)
def test_a_long_line_whose_left_operand_is_parenthesized_breaks_inside_them(
    formula: str, tmp_path: Path
) -> None:
    """Second review: `q = (a - b) / c` too long was wrapped whole in parentheses; ruff
    breaks inside the left operand's, `q = (` / `a - b` / `) / c`."""
    ruff = _ruff_command()
    text = (
        "name: brk\ninputs: {first_input: [n], second_input: [n]}\nnodes:\n"
        f"  quotient_node: {formula}\n  loss: sum(quotient_node)\nwrt: [first_input]\n"
    )
    source = compile_text(text, "brk.yaml")
    assert "    quotient_node = (\n" in source and "    ) " in source
    (tmp_path / "brk.py").write_text(source, encoding="utf-8")
    assert "already formatted" in _ruff(ruff, "format", "--check", cwd=tmp_path)


def _drawn_long_name_spec(seed: int) -> str:
    """A spec of names 8-52 characters long and a nested formula drawn from `seed`: sums,
    quotients, products, negations, calls of one and two arguments, powers, constants."""
    rng = random.Random(seed)

    def name(base: str) -> str:
        return f"{base}_{'x' * rng.randint(0, 45)}"

    a, b, p, q = name("input_a"), name("input_b"), name("param_p"), name("param_q")

    def draw(depth: int) -> str:
        if depth == 0:
            return rng.choice([a, b, p, q, "1.25", "0.386871006114", "3"])
        left, right, atom = draw(depth - 1), draw(depth - 1), draw(0)
        return rng.choice(
            [
                f"({left} + {right})",
                f"({left} - {right}) / {atom}",
                f"{left} * {right}",
                f"-({left} * {right})",
                f"exp({left})",
                f"tanh({left}) * {right}",
                f"sigmoid({left} - {right})",
                f"maximum({left}, {right})",
                f"({left}) ** 2",
                f"sqrt(1 + {left} * {left})",
                f"{left} / ({right} + 2)",
            ]
        )

    first, second = name("node_one"), name("node_two")
    return f"""
name: drawn_{seed}
inputs: {{{a}: [n, 3], {b}: [n, 1]}}
params: {{{p}: [3], {q}: [1, 3]}}
nodes:
  {first}: {draw(3)}
  {second}: {first} * {draw(2)}
  loss: {rng.choice(["sum", "mean", "max"])}({second} * {first}) + sum({first} * {p})
wrt: [{p}, {q}]
"""


def test_drawn_specs_of_long_names_are_as_ruff_formats_and_lints_them(tmp_path: Path) -> None:
    """Third review: before, ruff format changed 7 of these 40 modules (and 160 of 700 drawn
    alike): bracket groups, nested calls, returned entries, long rebindings, `1e+22`."""
    ruff = _ruff_command()
    for seed in range(40):
        try:
            source = compile_text(_drawn_long_name_spec(seed), f"drawn_{seed}.yaml")
        except SpecError:
            continue  # a constant the formula folds past the dtype: refused, as it should be
        (tmp_path / f"drawn_{seed}.py").write_text(source, encoding="utf-8")
    assert len(list(tmp_path.glob("*.py"))) >= 35
    assert "already formatted" in _ruff(ruff, "format", "--check", cwd=tmp_path)
    assert "All checks passed" in _ruff(ruff, "check", cwd=tmp_path)


def test_parentheses_then_an_empty_call_break_inside_the_parentheses() -> None:
    """Third review: `t = (a * b).max()` too long was broken around the call's nothing,
    `.max(` / an indented empty line / `)`; ruff breaks inside the parentheses."""
    text = f"(node_one_x * node_two_{'x' * 44}).max()"
    assert wrap_for("t_loss_1", text) == "leading"
    assert leading_parts(text) == (f"node_one_x * node_two_{'x' * 44}", ".max()")


def test_a_line_that_is_one_comparison_has_no_parentheses(tmp_path: Path) -> None:
    """Fifth review: `t = (k == 0)` (the power rule's mask of a zero exponent, on a line of
    its own) was written in parentheses, which ruff format drops."""
    text = (
        "name: iz\ninputs: {base_input_with_long_name: [n, 3]}\n"
        "params: {exponent_with_a_long_name: []}\nnodes:\n"
        "  power_node_with_long_name: >-\n"
        "    base_input_with_long_name ** (exponent_with_a_long_name + 1)\n"
        "  loss: max(power_node_with_long_name)\nwrt: [base_input_with_long_name]\n"
    )
    source = compile_text(text, "iz.yaml")
    assert re.search(r"\n    t_\w+ = t_\w+ == 0\n", source)
    (tmp_path / "iz.py").write_text(source, encoding="utf-8")
    assert "already formatted" in _ruff(_ruff_command(), "format", "--check", cwd=tmp_path)


def test_a_long_del_and_a_long_chain_of_sums_are_as_ruff_writes_them(tmp_path: Path) -> None:
    """Fifth review: `del a, b` too long, and `t = x.sum(axis=1, keepdims=True).sum(axis=0)`
    with a target so long that ruff puts the chain in parentheses and breaks it there."""
    from symbackprop.linebreak import chain_in_parentheses, del_lines

    target, chain = f"d_param_{'q' * 40}", f"t_param_{'q' * 40}_0.sum(axis=1, keepdims=True)"
    chain += ".sum(axis=0)"
    assert wrap_for(target, chain) == "parenthesized groups"
    layout = chain_in_parentheses(chain)
    assert layout is not None
    body = [f"{target} = (", *(f"    {line}" for line in layout.lines), ")"]
    body += del_lines([f"d_t_node_three_{'x' * 30}_4", f"d_t_node_three_{'x' * 30}_7"])
    assert body[-1] == ")"  # the del broke, one name a line
    source = "def f():\n" + "".join(f"    {line}\n" for line in body)
    (tmp_path / "lines.py").write_text(source, encoding="utf-8")
    assert "already formatted" in _ruff(_ruff_command(), "format", "--check", cwd=tmp_path)


def test_every_helper_fits_the_line_length() -> None:
    """Sixth review: `_one_hot`'s docstring was 89 columns; it is emitted only where one
    set of logits feeds two cross-entropies, which no linted spec had."""
    from symbackprop.emit import template_environment
    from symbackprop.ops import ONE_HOT_TABLE_MAX_BYTES

    environment = template_environment()
    folder = Path(environment.get_template("module.py.j2").filename).parent / "helpers"
    names = sorted(path.name for path in folder.glob("*.py.j2"))
    assert "one_hot.py.j2" in names
    for name in names:
        text = environment.get_template(f"helpers/{name}").render(
            one_hot_table_max_bytes=ONE_HOT_TABLE_MAX_BYTES
        )
        long = [line for line in text.splitlines() if len(line) > int(LINE_LENGTH)]
        assert not long, f"{name}: {long}"

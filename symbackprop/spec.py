"""Spec text -> a validated, frozen `Spec` in graph form (the layer form is desugared here).

Every name that later becomes a Python identifier in generated code is validated here,
and every error names the file, line and column, and the field or node it is about.
"""

from __future__ import annotations

import hashlib
import keyword
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import Loc, SpecError
from .yamlsrc import YNode, key_loc, load_yaml, shown, text_place

FLOAT_DTYPES = ("float64", "float32")
INT_DTYPES = ("int64", "int32")
INITS = ("zeros", "ones", "normal", "uniform", "glorot_uniform", "he_normal")
LAYER_ACTIVATIONS = (
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softplus",
    "softmax",
)
LAYER_LOSSES = ("mse", "softmax_cross_entropy", "binary_cross_entropy_with_logits")
REDUCTIONS = ("mean", "sum")

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# Names the generated module itself uses, and the formula language's own words.
RESERVED = frozenset(
    {
        "np",
        "numpy",
        "params",
        "cache",
        "grads",
        "grad_output",
        "seed",
        "rng",
        "value_and_grad",
        "forward",
        "backward",
        "predict",
        "init_params",
        "self",
        "float",
        "int",
        "dict",
        "tuple",
        "str",
        "object",
        "range",
        "len",
        "print",
        "type",
        "sum",
        "max",
        "min",
        "abs",
        "annotations",
        "Any",
        "DTYPE",
        "WRT",
        "PARAMS",
        "INPUTS",
        "SPEC_NAME",
    }
)

TOP_LEVEL_KEYS = (
    "name",
    "dtype",
    "inputs",
    "params",
    "layers",
    "input",
    "loss",
    "nodes",
    "output",
    "wrt",
    "predict",
)


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str
    loc: Loc


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    init: str
    init_args: tuple[tuple[str, float], ...]
    loc: Loc


@dataclass(frozen=True)
class NodeSpec:
    """A named formula. `aliases` map names in the text to graph names (`x` of an activation)."""

    name: str
    formula: str
    loc: Loc
    aliases: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Spec:
    name: str
    dtype: str
    inputs: tuple[InputSpec, ...]
    params: tuple[ParamSpec, ...]
    nodes: tuple[NodeSpec, ...]
    output: str
    output_loc: Loc
    wrt: tuple[str, ...]
    wrt_loc: Loc
    predict: str | None
    file_name: str
    sha256: str
    name_loc: Loc | None = None
    predict_loc: Loc | None = None
    # the layer form's loss where nodes and an output follow: the output must read it
    layer_loss: str | None = None
    wrt_places: tuple[tuple[str, Loc], ...] = ()  # where each name of `wrt` is


def _fail(message: str, node: YNode | Loc, about: str | None = None) -> SpecError:
    loc = node if isinstance(node, Loc) else node.loc
    return SpecError(message, loc, about)


def check_identifier(name: object, where: YNode | Loc, what: str) -> str:
    """A name that becomes a variable of the generated code: valid, and none it uses."""
    name = check_name(name, where, what)
    if name.startswith(("d_", "t_")):
        raise _fail(
            f"{what} {name!r} is reserved: names starting with d_ or t_ are the generated "
            "code's own (gradients and temporaries)",
            where,
        )
    if name in RESERVED:
        raise _fail(f"{what} {name!r} is reserved: the generated code uses that name", where)
    return name


def check_name(name: object, where: YNode | Loc, what: str) -> str:
    """A name of letters, digits and _, starting with a letter, not a Python keyword: a
    dim's name (dims are strings in the code, `d_model` among them)."""
    if isinstance(name, bool):
        raise _fail(
            f"{what} is read as the boolean {name}: YAML 1.1 reads yes, no, on, off, true "
            "and false unquoted as booleans; put the name in quotes",
            where,
        )
    if isinstance(name, str) and keyword.iskeyword(name):
        raise _fail(f"{what} {name!r} is a Python keyword: not a name code can use", where)
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        # `{loss: sum(x, axis=0)}`: YAML ends the formula at the comma, and reads the rest
        # as a key, `axis=0)`, which closes a parenthesis it does not open
        split = isinstance(name, str) and name.count(")") > name.count("(")
        raise _fail(
            f"{what} {shown(name)} is not a valid name "
            "(letters, digits and _, starting with a letter)"
            + (
                "; in a { } mapping, YAML splits a formula at each comma: quote the formula"
                if split
                else ""
            ),
            where,
        )
    return name


# A variable's name, and those made from it (`d_t_<name>_12`), must leave room on a line
# of 88 columns. The examples and review specs, 57 modules with their names made this
# long, are as ruff format writes them at 56 and 57 characters; at 58, 4 of them are not.
MAX_VARIABLE_NAME = 56


def check_variable_name(name: object, where: YNode | Loc, what: str) -> str:
    """A node's, param's or input's name: an identifier the code uses as a variable."""
    name = check_identifier(name, where, what)
    if len(name) > MAX_VARIABLE_NAME:
        raise _fail(
            f"{what} name is {len(name)} characters long, past {MAX_VARIABLE_NAME}: with the "
            "names made from it (d_t_<name>_0) its lines would not fit 88 columns as ruff "
            "format writes them",
            where,
        )
    return name


# Names PEP 8 rules out as variables because they read as 1 or 0 (ruff's E741 flags them).
AMBIGUOUS = frozenset({"l", "I", "O"})


def code_name(name: str) -> str:
    """A node's or param's variable in the generated code: its name, but `l_` for `l`
    (also `I`, `O`). A loss named `l` is common; its variable is internal, so it can take
    another name (a param keeps its name as its key in `params` and in the gradients)."""
    return f"{name}_" if name in AMBIGUOUS else name


def _check_input_name(name: object, where: YNode | Loc) -> str:
    """An input's name: an argument of the generated functions, which callers pass by
    name, so it cannot be written otherwise as a node's or a param's can (`code_name`)."""
    name = check_variable_name(name, where, "input")
    if name in AMBIGUOUS:
        raise _fail(
            f"input {name!r} reads as 1 or 0 in code: PEP 8 rules it out as a name "
            "(ruff's E741 flags it in the generated module); choose another",
            where,
        )
    return name


# The standard library's modules in any Python this package supports (3.10 to 3.14), not
# only the running one's, so that a spec compiles or is refused alike under each: those
# added since 3.10 and those PEP 594 and 632 removed by 3.13.
STDLIB_MODULES = frozenset(sys.stdlib_module_names) | {
    *("annotationlib", "compression", "tomllib"),
    *("aifc", "asynchat", "asyncore", "audioop", "binhex", "cgi", "cgitb", "chunk"),
    *("crypt", "distutils", "imghdr", "imp", "lib2to3", "mailcap", "msilib", "nis"),
    *("nntplib", "ossaudiodev", "pipes", "smtpd", "sndhdr", "spwd", "sunau", "telnetlib"),
    *("uu", "xdrlib"),
}


# pytest, the modules it imports (some only on older Pythons or on Windows), and the file it
# reads as its own configuration: `pytest.py` beside the emitted tests would run in pytest's
# place (`python -m pytest` imports from the folder first).
TEST_RUNNER_MODULES = frozenset(
    {"pytest", "_pytest", "pluggy", "iniconfig", "packaging", "py", "pygments"}
    | {"exceptiongroup", "tomli", "colorama", "conftest"}
)
# `<name>.py` and the emitted `test_<name>_gradcheck.py` (18 more characters) are file
# names: most file systems take 255 bytes, and a longer one fails only when written.
MAX_MODULE_NAME = 230


def check_module_name(name: object, where: YNode | Loc) -> str:
    """The spec's name: the generated module's file name, `<name>.py`."""
    name = check_identifier(name, where, "spec name")
    if name in STDLIB_MODULES:
        raise _fail(
            f"spec name {name!r} is a module of Python's standard library: {name}.py would "
            f"be imported in its place from the folder it is written to; choose another",
            where,
        )
    if name in TEST_RUNNER_MODULES:
        raise _fail(
            f"spec name {name!r} is pytest's, or a module it imports: {name}.py would run in "
            f"its place in the folder it is written to; choose another",
            where,
        )
    if len(name) > MAX_MODULE_NAME:
        raise _fail(
            f"spec name is {len(name)} characters long, past {MAX_MODULE_NAME}: it names the "
            f"module's file, {MAX_MODULE_NAME + 3} characters at most with .py",
            where,
        )
    return name


def _expect_map(node: YNode, what: str) -> dict[str, YNode]:
    if not node.is_map:
        raise _fail(f"{what} must be a mapping", node)
    return node.value


def _shape(node: YNode, what: str, symbolic: bool) -> tuple[int | str, ...]:
    if not node.is_list:
        raise _fail(f"the shape of {what} must be a list such as [batch, 784]", node)
    dims: list[int | str] = []
    for item in node.value:
        dim = item.value
        if isinstance(dim, bool) or not isinstance(dim, (int, str)):
            raise _fail(f"a dim of {what} must be a positive int or a name", item)
        if isinstance(dim, int):
            if dim < 1 or dim > 2**40:
                raise _fail(f"a dim of {what} must be between 1 and 2**40, not {dim}", item)
        elif not symbolic:
            raise _fail(f"the shape of {what} must be all ints (params are allocated)", item)
        else:
            check_name(dim, item, "dim name")
        dims.append(dim)
    if len(dims) > 8:
        raise _fail(f"{what} has more than 8 dims", node)
    return tuple(dims)


def _dtype(node: YNode, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(node.value, str) or node.value not in allowed:
        raise _fail(f"{what} must be one of {', '.join(allowed)}, not {node.shown()}", node)
    return node.value


def _inputs(node: YNode | None, dtype: str) -> list[InputSpec]:
    if node is None:
        return []
    result = []
    for name, value in _expect_map(node, "inputs").items():
        _check_input_name(name, key_loc(value))
        input_dtype = dtype
        shape_node = value
        if value.is_map:
            fields = value.value
            _reject_unknown(fields, ("shape", "dtype"), f"input {name}")
            if "shape" not in fields:
                raise _fail(f"input {name} needs a shape", value)
            shape_node = fields["shape"]
            if "dtype" in fields:
                input_dtype = _dtype(
                    fields["dtype"], (dtype, *INT_DTYPES), f"the dtype of input {name}"
                )
        result.append(
            InputSpec(name, _shape(shape_node, f"input {name}", True), input_dtype, value.loc)
        )
    return result


def _reject_unknown(fields: dict[str, YNode], known: tuple[str, ...], what: str) -> None:
    for key, value in fields.items():
        if key not in known:
            raise _fail(
                f"unknown key {key!r} in {what} (known: {', '.join(known)})", key_loc(value)
            )


# YAML 1.1 (PyYAML's) reads `1e-3`, `1.5e3` and `.5` as strings: a float needs a dot and a
# signed exponent, `1.0e-3`. An unquoted string of these forms is the number YAML 1.2 and
# JSON users mean.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _number(node: YNode, what: str) -> float:
    raw = node.value
    if isinstance(raw, str) and not node.quoted and _EXPONENT_FLOAT.fullmatch(raw):
        raw = float(raw)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _fail(f"{what} must be a number", node)
    try:
        value = float(raw)
    except OverflowError:  # an int of hundreds of digits
        raise _fail(f"{what} must be finite", node) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _fail(f"{what} must be finite", node)
    return value


# The arguments an init takes, with their defaults, in the order NumPy's generator takes them.
INIT_ARGS: dict[str, dict[str, float]] = {
    "normal": {"mean": 0.0, "std": 1.0},
    "uniform": {"low": -1.0, "high": 1.0},
}


def init_arguments(param: ParamSpec) -> dict[str, float]:
    """Every argument of the param's init: the spec's, else the default."""
    return INIT_ARGS.get(param.init, {}) | dict(param.init_args)


# The largest float64 draw that is finite in each dtype: for float32, the last float64
# below its largest value plus half a step (so `3.4028235e+38`, float32's largest as NumPy
# prints it, rounds to it). A spec is read without NumPy.
FLOAT_MAX = {
    "float32": math.nextafter(float.fromhex("0x1.ffffffp+127"), 0.0),
    "float64": sys.float_info.max,
}
# How far from its mean, in stds, a normal init is taken to reach: a draw past 40 std
# has a probability below 1e-300.
NORMAL_REACH = 40.0


def _check_init_args(param: ParamSpec, fields: dict[str, YNode], dtype: str) -> None:
    """What NumPy's generators would refuse in `init_params`, or draw past the largest
    number of the dtype (inf params), refused here instead."""
    given = init_arguments(param)
    largest = FLOAT_MAX[dtype]

    def where(*keys: str) -> YNode:
        return next((fields[key] for key in keys if key in fields), fields["init"])

    if given.get("std", 0.0) < 0:
        raise _fail(f"std of param {param.name} must not be negative", fields["std"])
    if given.get("low", 0.0) > given.get("high", 0.0):
        low, high = given["low"], given["high"]
        message = f"low ({low:g}) of param {param.name} is above its high ({high:g})"
        raise _fail(message, where("high", "low"))
    if "low" in given:
        low, high = given["low"], given["high"]
        if max(abs(low), abs(high)) > largest:
            raise _fail(
                f"the range of param {param.name}, [{low!r}, {high!r}], passes the largest "
                f"{dtype} ({largest!r}): its values would not be finite",
                where("high", "low"),
            )
        if high - low > sys.float_info.max:
            raise _fail(
                f"the range of param {param.name}, [{low!r}, {high!r}], is wider than the "
                f"largest float64: NumPy cannot draw from it",
                where("high", "low"),
            )
    if "mean" in given:
        mean, std = given["mean"], given["std"]
        if abs(mean) + NORMAL_REACH * std > largest:
            raise _fail(
                f"param {param.name}'s normal init (mean {mean!r}, std {std!r}) reaches past "
                f"the largest {dtype} ({largest!r}): its values would not be finite",
                where("std", "mean"),
            )


def _params(node: YNode | None, dtype: str) -> list[ParamSpec]:
    if node is None:
        return []
    result = []
    for name, value in _expect_map(node, "params").items():
        check_variable_name(name, key_loc(value), "param")
        shape_node, init, init_args = value, None, []
        if value.is_map:
            fields = value.value
            if "init" in fields:
                init = _dtype(fields["init"], INITS, f"the init of param {name}")
            extra = tuple(INIT_ARGS.get(init, ())) if init is not None else ()
            _reject_unknown(fields, ("shape", "init", *extra), f"param {name}")
            if "shape" not in fields:
                raise _fail(f"param {name} needs a shape", value)
            shape_node = fields["shape"]
            init_args = [
                (key, _number(fields[key], f"{key} of param {name}"))
                for key in extra
                if key in fields
            ]
        shape = _shape(shape_node, f"param {name}", False)
        if init is None:
            init = "zeros" if len(shape) <= 1 else "glorot_uniform"
        param = ParamSpec(name, shape, init, tuple(init_args), value.loc)  # type: ignore[arg-type]
        if value.is_map:
            _check_init_args(param, value.value, dtype)
        result.append(param)
    return result


def _formula_text(node: YNode, what: str) -> str:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(f"{what} must be a formula (a string)", node)
    text = str(value)
    if "#" in text and not node.literal:
        # YAML joined the lines of a folded (`>`) or quoted string into one: a comment
        # would silently take every line after it along
        raise SpecError(
            f"a # in {what}: only a literal block (`|`) keeps the line breaks that end a "
            "comment; write the formula as one, or drop the comment",
            _formula_loc(node).shifted(text.index("#")),
        )
    return text


def _formula_loc(node: YNode) -> Loc:
    """Where the formula's first character is: past a quote, past a block's indicator
    and indent (a string whose source differs from its value maps its characters, see
    ScalarLoc; a plain one starts where it is written)."""
    return node.loc.shifted(0)


def _nodes(node: YNode | None, aliases: tuple[tuple[str, str], ...]) -> list[NodeSpec]:
    if node is None:
        return []
    result = []
    for name, value in _expect_map(node, "nodes").items():
        check_variable_name(name, key_loc(value), "node")
        result.append(
            NodeSpec(name, _formula_text(value, f"node {name}"), _formula_loc(value), aliases)
        )
    return result


@dataclass(frozen=True)
class _Desugared:
    params: list[ParamSpec]
    nodes: list[NodeSpec]
    last: str
    loss: str | None


def _layers(fields: dict[str, YNode], inputs: list[InputSpec], root: YNode) -> _Desugared:
    """The layer form as the graph form: `s{i} = h{i-1} @ W{i} + b{i}`, `h{i} = act(s{i})`."""
    layers_node = fields["layers"]
    if not layers_node.is_list or not layers_node.value:
        raise _fail("layers must be a non-empty list", layers_node)
    if "input" in fields:
        source = fields["input"].value
        matches = [spec for spec in inputs if spec.name == source]
        if not matches:
            raise _fail(
                f"input {fields['input'].shown()} of the layers is not an input's name",
                fields["input"],
            )
        source_input = matches[0]
    elif inputs:
        source_input = inputs[0]
    else:
        raise _fail("the layers need an input", layers_node)
    if source_input.dtype not in FLOAT_DTYPES or not source_input.shape:
        raise _fail(
            f"the layers' input {source_input.name} must be a float tensor", source_input.loc
        )
    width = source_input.shape[-1]
    if not isinstance(width, int):
        raise _fail(
            f"the last dim of the layers' input {source_input.name} must be an int, not {width!r}",
            source_input.loc,
        )
    params: list[ParamSpec] = []
    nodes: list[NodeSpec] = []
    current = source_input.name
    for index, layer in enumerate(layers_node.value, start=1):
        layer_fields = _expect_map(layer, f"layer {index}")
        _reject_unknown(layer_fields, ("dense", "activation", "bias"), f"layer {index}")
        if "dense" not in layer_fields:
            raise _fail(f"layer {index} needs `dense: <units>`", layer)
        units = layer_fields["dense"].value
        if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= 2**31:
            raise _fail(f"dense of layer {index} must be a positive int", layer_fields["dense"])
        bias = layer_fields["bias"].value if "bias" in layer_fields else True
        if not isinstance(bias, bool):
            raise _fail(f"bias of layer {index} must be true or false", layer_fields["bias"])
        weight, offset = f"W{index}", f"b{index}"
        params.append(ParamSpec(weight, (width, units), "glorot_uniform", (), layer.loc))
        formula = f"{current} @ {weight}"
        if bias:
            params.append(ParamSpec(offset, (units,), "zeros", (), layer.loc))
            formula += f" + {offset}"
        nodes.append(NodeSpec(f"s{index}", formula, layer.loc))
        current = f"s{index}"
        if "activation" in layer_fields:
            activation = layer_fields["activation"]
            text = _formula_text(activation, f"activation of layer {index}")
            # an explicit `identity` still names the layer's output h<i>: a rebinding
            if text == "identity":
                text, loc = "x", activation.loc
            elif text in LAYER_ACTIVATIONS:
                text, loc = f"{text}(x)", activation.loc
            elif _IDENTIFIER.match(text) and text != "x":
                known = " ".join(LAYER_ACTIVATIONS)
                raise _fail(
                    f"unknown activation {text!r} of layer {index} (known: {known}; or a "
                    'formula in x, such as "x * sigmoid(x)")',
                    activation,
                )
            else:
                loc = _formula_loc(activation)
            nodes.append(NodeSpec(f"h{index}", text, loc, (("x", current),)))
            current = f"h{index}"
        width = units
    loss_name = None
    if "loss" in fields:
        loss_name = "loss"
        nodes.append(_layer_loss(fields["loss"], current, inputs))
    return _Desugared(params, nodes, current, loss_name)


def _layer_loss(node: YNode, last: str, inputs: list[InputSpec]) -> NodeSpec:
    fields = _expect_map(node, "loss")
    kinds = [key for key in fields if key in LAYER_LOSSES]
    _reject_unknown(fields, (*LAYER_LOSSES, "reduction"), "loss")
    if len(kinds) != 1:
        raise _fail(f"loss must name one of {', '.join(LAYER_LOSSES)}", node)
    kind = kinds[0]
    target = fields[kind]
    if not isinstance(target.value, str) or target.value not in {s.name for s in inputs}:
        raise _fail(f"the target {target.shown()} of the loss is not an input's name", target)
    reduction = "mean"
    if "reduction" in fields:
        reduction = _dtype(fields["reduction"], REDUCTIONS, "reduction")
    return NodeSpec("loss", f'{kind}({last}, {target.value}, reduction="{reduction}")', target.loc)


def parse_spec(text: str, file: str) -> Spec:
    """Validate spec text; `file` is the name used in messages and in the generated header."""
    root = load_yaml(text, file)
    fields = _expect_map(root, "the spec")
    _reject_unknown(fields, TOP_LEVEL_KEYS, "the spec")
    if "name" not in fields:
        raise _fail("the spec needs a `name` (the module name)", root)
    name = check_module_name(fields["name"].value, fields["name"])
    dtype = _dtype(fields["dtype"], FLOAT_DTYPES, "dtype") if "dtype" in fields else "float64"
    inputs = _inputs(fields.get("inputs"), dtype)
    params = _params(fields.get("params"), dtype)
    nodes: list[NodeSpec] = []
    output = None
    output_loc = root.loc
    predict = None
    predict_loc = root.loc
    layer_loss = None
    if "layers" in fields:
        layered = _layers(fields, inputs, root)
        params = layered.params + params
        nodes = layered.nodes
        output, predict = layered.loss, layered.last
        layer_loss = layered.loss
        aliases: tuple[tuple[str, str], ...] = (("out", layered.last),)
    else:
        for key in ("input", "loss"):
            if key in fields:
                raise _fail(
                    f"`{key}` belongs to the layer form: add `layers`", key_loc(fields[key])
                )
        aliases = ()
    nodes += _nodes(fields.get("nodes"), aliases)
    if "output" in fields:
        output = fields["output"].value
        output_loc = fields["output"].loc
        if not isinstance(output, str):
            raise _fail("output must name a node", fields["output"])
        if output == "out" and "layers" in fields:
            output = predict
    if output is None:
        if not nodes:
            raise _fail("the spec has no nodes, layers or loss to compute", root)
        output = nodes[-1].name
    if "output" not in fields:  # an error about the output points at the node it is
        output_loc = next((node.loc for node in nodes if node.name == output), output_loc)
    if "predict" in fields:
        predict = fields["predict"].value
        predict_loc = fields["predict"].loc
        if not isinstance(predict, str):
            raise _fail("predict must name a node", fields["predict"])
    _check_unique(inputs, params, nodes)
    if "layers" in fields:
        for item in (*inputs, *params, *nodes):
            if item.name == "out":
                raise SpecError(
                    "'out' is the last layer's output in the layer form: choose another name",
                    item.loc,
                )
    wrt, wrt_loc, wrt_places = _wrt(fields.get("wrt"), params, root)
    return Spec(
        name=name,
        dtype=dtype,
        inputs=tuple(inputs),
        params=tuple(params),
        nodes=tuple(nodes),
        output=output,
        output_loc=output_loc,
        wrt=wrt,
        wrt_loc=wrt_loc,
        wrt_places=wrt_places,
        predict=predict,
        file_name=Path(file).name,
        name_loc=fields["name"].loc,
        predict_loc=predict_loc,
        layer_loss=layer_loss if "output" in fields else None,
        sha256=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
    )


def _check_unique(inputs: list[InputSpec], params: list[ParamSpec], nodes: list[NodeSpec]) -> None:
    seen: dict[str, tuple[str, Loc]] = {}
    for kind, items in (("input", inputs), ("param", params), ("node", nodes)):
        for item in items:
            if item.name in seen:
                # line too: layers name their values (W1, s1, h1) on the layer's line
                earlier, loc = seen[item.name]
                raise SpecError(
                    f"{kind} {item.name!r} has the same name as the {earlier} on line {loc.line}",
                    item.loc,
                )
            seen[item.name] = kind, item.loc
    for kind, items in (("param", params), ("node", nodes)):
        for item in items:
            written = code_name(item.name)
            if written != item.name and written in seen:
                other, loc = seen[written]
                raise SpecError(
                    f"{kind} {item.name!r} is written {written} in the generated code (PEP 8 "
                    f"rules out {item.name!r} as a name), and {written!r} is the {other} on "
                    f"line {loc.line}",
                    item.loc,
                )


def _wrt(
    node: YNode | None, params: list[ParamSpec], root: YNode
) -> tuple[tuple[str, ...], Loc, tuple[tuple[str, Loc], ...]]:
    """The names in `wrt`, where the list is, and where each name is (each param's own
    place when `wrt` is left out)."""
    if node is None:
        if not params:
            raise _fail("the spec has no params: list what to differentiate in `wrt`", root)
        names = tuple(spec.name for spec in params)
        return names, root.loc, tuple((spec.name, spec.loc) for spec in params)
    items = node.value if node.is_list else [node]
    names = []
    for item in items:
        if not isinstance(item.value, str):
            raise _fail("wrt must list names of inputs or params", item)
        if item.value in names:
            raise _fail(f"{item.value!r} is listed twice in wrt", item)
        names.append(item.value)
    if not names:
        raise _fail("wrt is empty: list what to differentiate", node)
    return tuple(names), node.loc, tuple((item.value, item.loc) for item in items)


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SpecError(f"cannot read spec: {err.strerror}", Loc(str(path), 1, 1)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        valid = raw[: err.start].decode("utf-8")  # all that comes before the bad byte
        where = Loc(str(path), *text_place(valid, len(valid)))
        raise SpecError(f"the spec is not UTF-8 text ({err.reason})", where) from None
    return parse_spec(text, str(path))

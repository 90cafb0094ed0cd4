"""Render model -> Jinja templates. Every name is resolved and every expression printed
here; the templates only loop and format."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2
import sympy as sp

from . import __version__
from .compiler import Optimized
from .ir import Attr, Graph, Shape, Statement, partial_sum_of, shape_text, symbol
from .linebreak import (
    INDENT,
    LINE_LIMIT,
    Entry,
    call_lines,
    call_parts,
    chain_in_parentheses,
    del_lines,
    fits_one_line,
    fluent_chain,
    group_layout,
    last_resort_wrap,
    leading_parts,
    operand_block,
    preferred_wrap,
    string_assignment,
    tuple_entry,
    tuple_items,
    wrap_for,
)
from .ops import ONE_HOT_TABLE_MAX_BYTES, Copy, Masked, MatrixProduct
from .passes import dead_code, shares_an_array
from .passes.inplace import InPlace, in_place_updates, is_fresh
from .printer import NumpyPrinter, number_literal, stability_note
from .spec import FLOAT_DTYPES, InputSpec, ParamSpec, Spec, code_name, init_arguments


@dataclass
class Line:
    target: str
    text: str
    comments: list[str] = field(default_factory=list)
    wrap: str = ""  # how a long line breaks, as ruff format breaks it (`linebreak.py`)
    origin: str = ""  # the statement this line computes (or a part of, when split)
    trailing: str = ""  # a comment after the code, on the same line
    reads: frozenset[str] = frozenset()  # the names the code reads
    operator: str = "="  # or `+=`, `-=`: the line updates its target in place
    frees: list[str] = field(default_factory=list)  # names deleted after the line

    def add_note(self, note: str) -> None:
        """`note` after the code when the line has room for it, else above the line."""
        if not note:
            return
        if self.trailing:
            self.trailing, note = "", f"{self.trailing}; {note}"
        with_note = f"{self.text}  # {note}"
        if not self.wrap and fits_one_line(self.target, with_note, self.operator):
            self.trailing = note
        else:
            self.comments += _wrap_note(note)

    @property
    def call_head(self) -> str:
        return call_parts(self.text)[0]

    @property
    def call_body(self) -> str:
        return call_parts(self.text)[1]

    @property
    def call_closing(self) -> str:
        return call_parts(self.text)[2]

    @property
    def call_lines(self) -> list[str]:
        return self._laid_out(call_lines(self.text, depth=int(self.wrap == "parenthesized call")))

    @property
    def tuple_items(self) -> list[str]:
        return self._laid_out(tuple_items(self.text))

    @property
    def operands(self) -> list[str]:
        return self._laid_out(operand_block(self.text))

    @property
    def leading(self) -> tuple[str, str]:
        return leading_parts(self.text)

    @property
    def fluent_lines(self) -> list[str]:
        return self._laid_out(fluent_chain(self.text))

    @property
    def group_lines(self) -> list[str]:
        layout = (
            chain_in_parentheses(self.text)
            if self.wrap == "parenthesized groups"
            else group_layout(self.target, self.text, self.operator)
        )
        return self._laid_out(layout.lines if layout is not None else None)

    def _laid_out(self, lines: list[str] | None) -> list[str]:
        """The lines of the wrap chosen for this line: it was chosen because they exist."""
        assert lines is not None, self.text
        return lines


@dataclass
class Block:
    setup: list[Line]
    lines: list[Line]


@cache
def template_environment() -> jinja2.Environment:
    """The one Jinja environment of the templates: modules, emitted tests, helpers."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.globals["string_assignment"] = string_assignment
    environment.globals["del_lines"] = del_lines
    return environment


def template_dir() -> Path:
    """Templates ship in the wheel as `symbackprop/templates`; in a checkout, at the top."""
    try:
        packaged = resources.files("symbackprop") / "templates"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "templates"


def _shape_literal(shape: tuple[object, ...]) -> tuple[str, ...]:
    """A shape's dims as Python literals: `784`, `"batch"`."""
    return tuple(f'"{dim}"' if isinstance(dim, str) else str(dim) for dim in shape)


def _init_entry(param: ParamSpec) -> Entry:
    """`init_params`'s entry for `param`: a call that draws (or fills) its array."""
    shape = f'PARAMS["{param.name}"]'
    if param.init in ("zeros", "ones"):
        return Entry(param.name, f"np.{param.init}(", f"{shape}, dtype=DTYPE", ")")
    if param.init in ("normal", "uniform"):
        numbers = ", ".join(number_literal(value) for value in init_arguments(param).values())
        return Entry(
            param.name, f"rng.{param.init}(", f"{numbers}, size={shape}", ").astype(DTYPE)"
        )
    return Entry(param.name, f"_{param.init}(", f"rng, {shape}", ")")


class _LinePrinter:
    """Prints statements, hoisting the largest subexpression of a line that would pass
    the line limit into a temporary of its own (a long line is also a hard one to read)."""

    def __init__(self, optimized: Optimized, printer: NumpyPrinter):
        self.namer = optimized.namer
        self.printer = printer
        self.graph = optimized.program.graph
        # running sums whose first step the algebra made a number (`c - c`): its value and
        # comments, added where the next step starts the array
        self.constant_sums: dict[str, tuple[sp.Expr, list[str]]] = {}

    def lines(self, statements: list[Statement], updates: dict[sp.Symbol, InPlace]) -> list[Line]:
        """A backward line's note (the chain-rule step) goes above it; a forward line's note
        (how an op is computed stably) and any stable rewrite go after it if they fit."""
        result: list[Line] = []
        readers = _backward_readers(statements)
        for statement in statements:
            chain_rule = statement.phase == "backward" and statement.note
            comments = _wrap_note(statement.note) if chain_rule else []
            if statement.target in readers:
                comments = _wrap_note(f"computed once for {_listed(readers[statement.target])}")
            update = updates.get(statement.target)
            running_sum = self._running_sum(statement, comments)
            if running_sum == []:
                continue  # a running sum's constant first step: the next step adds it
            fitted = running_sum or []
            if running_sum:
                update = None  # the running sum updates its own array
            elif update is None and (split := self._product_then_rest(statement)):
                fitted = split
                fitted[0].comments = comments
            if update is not None:
                text = self.printer.in_place(update.ufunc, update.buffer, update.other)
                if fits_one_line(statement.target.name, text):
                    reads = _names(update.other) | {update.buffer.name}
                    fitted = [Line(statement.target.name, text, comments, reads=reads)]
                    fitted[0].add_note(stability_note(update.other))
            fitted = fitted or self._fit(
                statement.target, statement.expr, statement.owner, comments
            )
            for line in fitted:
                line.origin = statement.target.name
            if not chain_rule:
                fitted[-1].add_note(statement.note)
            result += fitted
        return result

    def _running_sum(self, statement: Statement, comments: list[str]) -> list[Line] | None:
        """A step of an adjoint summed as its contributions arrive (reverse.py), under the
        adjoint's own name: `d_W = a + b` for the first, `d_W += c` for each later one.
        None for any other line; no lines for a first step the algebra made a number (the
        next step starts the array with it)."""
        target, expr = statement.target, statement.expr
        name = partial_sum_of(target) or target.name
        previous = [item for item in expr.free_symbols if partial_sum_of(item) == name]
        if not previous:
            if partial_sum_of(target) is None:
                return None
            if expr.is_number:
                self.constant_sums[name] = (expr, comments)
                return []
            return self._fit(symbol(name), _own_array(expr), statement.owner, comments)
        rest = expr - previous[0]
        if name in self.constant_sums:
            constant, first = self.constant_sums.pop(name)
            expr = _own_array(rest + constant)
            return self._fit(symbol(name), expr, statement.owner, first + comments)
        operator, rest = ("-=", -rest) if rest.could_extract_minus_sign() else ("+=", rest)
        lines = self._fit(symbol(name), rest, statement.owner, comments, operator)
        lines[-1].reads |= {name}
        return lines

    def _product_then_rest(self, statement: Statement) -> list[Line]:
        """`s1 = x @ W1 + b1` as `s1 = x @ W1` then `s1 += b1`, as hand-written code does:
        the product's array becomes the result, so no second array of its size is made
        (and, past malloc's mmap threshold, unmapped again: costly with threads about).
        Empty when the line is not a product plus terms, or either part is long."""
        expr, target = statement.expr, statement.target
        if not expr.is_Add or not self._is_named(target):
            return []  # a temporary's name may be another value's in the graph, once renamed
        products = [arg for arg in expr.args if isinstance(arg, MatrixProduct)]
        if len(products) != 1 or not all(self._is_named(a) for a in products[0].args):
            return []
        graph = self.graph
        product = products[0]
        shape = MatrixProduct.infer([graph.type_of(a) for a in product.args]).shape
        rest = expr - product
        if not shape or shape != graph.type_of(target).shape or target in rest.free_symbols:
            return []
        operator, rest = ("-=", -rest) if rest.could_extract_minus_sign() else ("+=", rest)
        first, second = self.printer.doprint(product), self.printer.doprint(rest)
        if not (fits_one_line(target.name, first) and fits_one_line(target.name, second, operator)):
            return []
        lines = [
            Line(target.name, first, reads=_names(product)),
            Line(target.name, second, reads=_names(rest) | {target.name}, operator=operator),
        ]
        lines[1].add_note(stability_note(rest))
        return lines

    def _is_named(self, value: sp.Basic) -> bool:
        """A value the spec named: its name is the graph's, before and after naming."""
        node = self.graph.by_symbol.get(value)  # type: ignore[call-overload]
        return node is not None and not node.anonymous

    def _fit(
        self,
        target: sp.Symbol,
        expr: sp.Expr,
        owner: str,
        comments: list[str],
        operator: str = "=",
    ) -> list[Line]:
        text = self.printer.doprint(expr)
        hoisted: list[Line] = []
        while not _fits(target, text, operator):
            temp = self.namer.fresh(owner)
            split = next(
                (
                    (part, rest)
                    for part, rest in _splits(expr, temp, self.printer, len(text))
                    if len(rest_text := self.printer.doprint(rest)) < len(text)
                    or _fits(target, rest_text, operator)  # longer: a long temp name
                ),
                None,
            )
            if split is None:
                break  # nothing left to gain: names alone are this long
            part, rest = split
            hoisted += self._fit(temp, part, owner, [])
            expr, text = rest, self.printer.doprint(rest)
        wrap = ""
        if not fits_one_line(target.name, text, operator):
            wrap = preferred_wrap(target.name, text, operator) or last_resort_wrap(
                target.name, text, operator
            )
        line = Line(target.name, text, [], wrap, reads=_names(expr), operator=operator)
        line.add_note(stability_note(expr))
        # the step's comment goes above the first of its lines, hoisted parts included
        first = hoisted[0] if hoisted else line
        first.comments[:0] = comments
        return [*hoisted, line]


def _templated_line(target: str, text: str) -> Line:
    """A line the templates would write as it is, broken as ruff would break it."""
    return Line(target, text, wrap=wrap_for(target, text))


def _own_array(expr: sp.Expr) -> sp.Expr:
    """`expr`, copied when it would not be a new array: `+=` will write into it."""
    return expr if is_fresh(expr) else Copy(expr)


def _fits(target: sp.Symbol, text: str, operator: str = "=") -> bool:
    return fits_one_line(target.name, text, operator) or bool(
        preferred_wrap(target.name, text, operator)
    )


def _splits(
    expr: sp.Expr, temp: sp.Symbol, printer: NumpyPrinter, length: int
) -> Iterator[tuple[sp.Expr, sp.Expr]]:
    """Ways to move part of `expr` (printed `length` long) to a line of its own, as (part,
    `expr` with `temp` in its place): the longest argument first, then the first half of a
    long sum or product. A sum of many lines' length is halved first: moving one term at
    a time out of a sum of hundreds would print it hundreds of times."""
    halves = []
    if (expr.is_Add or expr.is_Mul) and len(expr.args) > 2:
        ordered = sorted(expr.args, key=sp.default_sort_key)
        half = max(2, len(ordered) // 2)
        halves = [(expr.func(*ordered[:half]), expr.func(temp, *ordered[half:]))]
    if halves and length > 4 * LINE_LIMIT:
        yield from halves
    candidates = [arg for arg in expr.args if not arg.is_Atom and not isinstance(arg, Attr)]
    if candidates:
        part = max(
            candidates, key=lambda arg: (len(printer.doprint(arg)), sp.default_sort_key(arg))
        )
        yield part, expr.xreplace({part: temp})
    yield from halves


def _backward_readers(statements: list[Statement]) -> dict[sp.Symbol, list[str]]:
    """The backward temporaries CSE made (no chain-rule step of their own, nor a note on
    how they are computed), each with the lines that read it, named as the comments name
    them: `dL/dw` (for each running sum of d_w too), `t_w_1`."""
    readers: dict[sp.Symbol, list[str]] = {}
    for statement in statements:
        target = statement.target
        if statement.phase == "backward" and statement.anonymous and not statement.note:
            if not stability_note(statement.expr):  # the ones say why they are there
                readers[target] = []
        name = partial_sum_of(target) or target.name
        shown = f"dL/d{name.removeprefix('d_')}" if name.startswith("d_") else name
        read = statement.expr.free_symbols
        for temp, names in readers.items():
            if temp in read and shown not in names:
                names.append(shown)
    return {temp: names for temp, names in readers.items() if names}


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _wrap_note(note: str) -> list[str]:
    width = LINE_LIMIT - INDENT - 2
    lines = textwrap.wrap(note, width=width, subsequent_indent="    ", break_on_hyphens=False)
    # where textwrap breaks a word longer than a line, the line before keeps its last space
    return [line.rstrip() for line in lines] or [note]


def _shape_lookup(graph: Graph) -> Callable[[sp.Symbol], Shape | None]:
    """Static shapes of the spec's named values and of their adjoints (`d_<name>`);
    temporaries are not looked up, so they are never reused in place."""
    shapes = {node.name: node.type.shape for node in graph.nodes if not node.anonymous}
    shapes.update({f"d_{name}": shape for name, shape in list(shapes.items())})
    floats = {node.name for node in graph.nodes if node.type.is_float}
    floats |= {f"d_{name}" for name in floats}
    return lambda value: shapes.get(value.name) if value.name in floats else None


def _names(expr: sp.Expr) -> frozenset[str]:
    return frozenset(item.name for item in expr.free_symbols)  # type: ignore[attr-defined]


def free_used_up(lines: list[Line], freeable: Callable[[str], bool]) -> None:
    """After the line that reads a name for the last time, `del` it (if `freeable`), so
    that its array's memory returns at once, as in hand-written code that rebinds one
    name, and not when the function returns. A name whose array a line took over (with
    `out=`) is deleted there too: the array lives on under the new name alone."""
    last: dict[str, int] = {}
    for index, line in enumerate(lines):
        for name in line.reads:
            last[name] = index
    defined = {line.target for line in lines}
    for index, line in enumerate(lines[:-1]):  # the return frees what the last line reads
        line.frees = sorted(
            name
            for name in line.reads
            if last[name] == index and name in defined and freeable(name)
        )


def _used_names(statements: list[Statement]) -> set[str]:
    return {s.name for statement in statements for s in statement.expr.free_symbols}  # type: ignore[attr-defined]


def shown_file_name(name: str) -> str:
    """The spec file's name as generated code shows it, in comments and in the docstring.
    A file name may hold any character but `/`: one that would end the comment or the
    docstring, or start an escape in it (a line break, a quote, a backslash, any other
    unprintable one) is shown as its code point, `<U+000A>`."""
    return "".join(
        char if char.isprintable() and char not in '"\\' else f"<U+{ord(char):04X}>"
        for char in name
    )


def header_lines(spec: Spec, command: str, *details: str) -> list[str]:
    """The comment lines a generated file starts with: what made it, `details`, and how to
    regenerate it. The first line's wording is fixed (tools look for `Code generated ...
    DO NOT EDIT.`), so a long spec file name makes it long. No `noqa` lets it pass:
    ruff's default rules leave line length alone, and the ruff of late flags a `noqa`
    for a rule it does not check as unused (RUF100)."""
    file_name = shown_file_name(spec.file_name)
    return [
        f"# Code generated by symbackprop {__version__} from {file_name}. DO NOT EDIT.",
        *details,
        f"# regenerate: {command} <spec folder>/{file_name}",
    ]


def _returned(key: str, leaf: sp.Symbol, adjoint: sp.Symbol | None, graph: Graph) -> Entry:
    """`backward`'s entry for `leaf`: its adjoint; zeros when nothing reaches it; a
    scalar's adjoint (a full reduction gives a NumPy scalar) as a 0-d array, like the rest."""
    if adjoint is None:
        return Entry(key, "np.zeros_like(", leaf.name, ")")
    if graph.type_of(leaf).shape == ():
        return Entry(key, "np.asarray(", adjoint.name, ")")
    return Entry(key, adjoint.name, "", "")


def _wanted_shape(item: InputSpec, sizes: dict[str, str]) -> list[str]:
    """The shape input `item` must have, as the arguments of its check: a tuple of a fixed
    dim's number, a named dim's size in the first input that has it (`x.shape[0]`), and
    `_ANY_SIZE` in that first input; then, where that first input names a dim twice
    (`[n, n]`), the pairs of its axes that must be equal. Adds the named dims `item` gives
    a size first to `sizes`."""
    parts, first, same = [], {}, []
    for axis, dim in enumerate(item.shape):
        if isinstance(dim, int):
            parts.append(str(dim))
        elif dim in sizes:
            parts.append(sizes[dim])
        else:
            parts.append("_ANY_SIZE")
            if dim in first:
                same.append(f"({first[dim]}, {axis})")
            first.setdefault(dim, axis)
    sizes.update({dim: f"{item.name}.shape[{axis}]" for dim, axis in first.items()})
    arguments = [_tuple_text(parts)]
    if same:
        arguments.append(_tuple_text(same))
    return arguments


def _tuple_text(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _handed_back(forward: list[Statement], value: sp.Symbol) -> str:
    """What `return` hands the caller for `value`: a copy where it may be the caller's
    own param or input, or a view of one (`loss = x`, `predict: w`), which the caller
    could write into."""
    return f"np.array({value.name})" if shares_an_array(forward, value) else value.name


def render(optimized: Optimized) -> str:
    program = optimized.program
    spec = program.spec
    graph = program.graph
    printer = NumpyPrinter(spec.dtype)
    line_printer = _LinePrinter(optimized, printer)

    forward_names = {s.target.name for s in optimized.forward}
    leaf_names = [node.name for node in graph.nodes if node.kind != "op"]
    # a gradient with no path to the output is zeros shaped like its value
    grads = [
        {
            "key": graph[leaf].owner,  # the spec's name (the variable may be `l_` for `l`)
            "leaf": leaf.name,
            "adjoint": d.name if d is not None else None,
            "entry": _returned(graph[leaf].owner, leaf, d, graph),
        }
        for leaf, d in optimized.grads.items()
    ]
    zero_leaves = [item["leaf"] for item in grads if item["adjoint"] is None]
    backward_used = _used_names(optimized.backward) | {
        item["adjoint"] for item in grads if item["adjoint"] is not None
    }
    saved = [
        name
        for name in leaf_names + [s.target.name for s in optimized.forward]
        if name in backward_used
    ]
    saved += [name for name in zero_leaves if name not in saved]
    seed = optimized.backward_info.seed.name
    seed_used = seed in backward_used
    if seed_used:
        printer.use_helper("grad_output")
        printer.use_helper("float_array")

    shape_of = _shape_lookup(graph)
    # not the prediction: `predict` runs the lines up to it alone, none that write over it
    forward_keep = {symbol(name) for name in saved} | {program.output}
    forward_updates = in_place_updates(optimized.forward, shape_of, forward_keep)
    backward_keep = {d for d in optimized.grads.values() if d is not None}
    backward_updates = in_place_updates(optimized.backward, shape_of, backward_keep)
    forward_lines = line_printer.lines(optimized.forward, forward_updates)
    backward_lines = line_printer.lines(optimized.backward, backward_updates)
    results = {d.name for d in backward_keep}
    # every adjoint but a named scalar's, a temporary's too (one per step of a recurrence)
    freeable = {line.target for line in backward_lines if line.target.startswith("d_")}
    freeable -= results | {name for name in freeable if shape_of(symbol(name)) == ()}
    free_used_up(backward_lines, freeable.__contains__)

    def setup(names: set[str]) -> list[Line]:
        """The params and inputs a block reads, each converted once to its dtype and held to
        the shape the spec gives it, which NumPy would broadcast into a wrong value."""
        lines = [
            _templated_line(code_name(param.name), f'_param_array(params, "{param.name}")')
            for param in spec.params
            if code_name(param.name) in names
        ]
        if lines:
            printer.use_helper("param_array")
            printer.use_helper("float_array")
        # a named dim has one size across the inputs; labels are also held to be at least 0,
        # where NumPy reads -1 as the last class
        sizes: dict[str, str] = {}  # each named dim's size, as the first input gives it
        for item in spec.inputs:
            if item.name not in names:
                continue
            helper = "input_array" if item.dtype in FLOAT_DTYPES else "labels"
            dtype = printer.dtype_text(item.dtype)
            arguments = [item.name, dtype, f'"{item.name}"', *_wanted_shape(item, sizes)]
            call = f"_{helper}({', '.join(arguments)})"
            lines.append(_templated_line(item.name, call))
            printer.use_helper(helper)
            printer.use_helper("shape_message")
            if helper == "input_array":  # labels cast by _class_indices, not _float_array
                printer.use_helper("float_array")
        return lines

    # forward computes what the output and backward need: a value only `predict` returns
    # is left to `predict` (forward would compute it and never read it)
    needed = dead_code(optimized.forward, [program.output, *map(symbol, saved)])
    needed_names = {s.target.name for s in needed}
    forward_reads = _used_names(needed) | set(saved) | {program.output.name}
    forward_block = Block(
        setup(forward_reads - forward_names),
        [line for line in forward_lines if line.origin in needed_names],
    )

    input_docs = [
        {
            "name": item.name,
            "shape_text": shape_text(item.shape),
            "entry": tuple_entry(item.name, (_shape_literal(item.shape), f'"{item.dtype}"')),
            "dtype": item.dtype,
        }
        for item in spec.inputs
    ]
    predict = None
    if program.predict is not None:
        wanted = {s.target.name for s in dead_code(optimized.forward, [program.predict])}
        predict_lines = [line for line in forward_lines if line.origin in wanted]
        reads = _used_names([s for s in optimized.forward if s.target.name in wanted]) | {
            program.predict.name
        }
        inputs = [item.name for item in spec.inputs if item.name in reads]
        predict = _PredictBlock(
            setup=setup(reads - forward_names),
            lines=predict_lines,
            inputs=inputs,
            input_docs=[item for item in input_docs if item["name"] in inputs],
            target=program.predict.name,
            shape_text=shape_text(graph.type_of(program.predict).shape),
            returned=_handed_back(optimized.forward, program.predict),
        )

    helpers = set(printer.helpers_used)
    inits = {param.init for param in spec.params}
    for init in ("glorot_uniform", "he_normal"):
        if init in inits:
            helpers.update((init, "fans"))
    model = {
        "header": header_lines(spec, "symbackprop compile", f"# spec sha256: {spec.sha256}"),
        "spec_file": shown_file_name(spec.file_name),
        "name": spec.name,
        "dtype": spec.dtype,
        "wrt": [graph[leaf].owner for leaf in program.wrt],
        "gradients_doc": textwrap.wrap(
            f"Gradients: {', '.join(graph[leaf].owner for leaf in program.wrt)}.",
            width=LINE_LIMIT,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        ),
        "params": [
            {
                "name": param.name,
                "shape_text": shape_text(param.shape),
                "shape_entry": tuple_entry(param.name, _shape_literal(param.shape)),
                "init": param.init,
                "entry": _init_entry(param),
            }
            for param in spec.params
        ],
        "inputs": input_docs,
        "uses_rng": any(param.init not in ("zeros", "ones") for param in spec.params),
        "grad_docs": [
            f"{graph[leaf].owner}: {shape_text(graph.type_of(leaf).shape)}" for leaf in program.wrt
        ],
        "helpers": sorted(helpers),
        "one_hot_table_max_bytes": ONE_HOT_TABLE_MAX_BYTES,
        "constants": [
            {"name": name, "comment": textwrap.wrap(comment, LINE_LIMIT - 2), "value": value}
            for name, (comment, value) in sorted(printer.constants.items(), key=_natural)
        ],
        "forward": forward_block,
        "saved": saved,
        "restored": [_templated_line(name, f'cache["{name}"]') for name in saved]
        + (
            [_templated_line(seed, f"_grad_output(grad_output, {printer.dtype_text(spec.dtype)})")]
            if seed_used
            else []
        ),
        "backward": backward_lines,
        "backward_frees": any(line.frees for line in backward_lines),
        "masks_by_where": any(s.expr.has(Masked) for s in optimized.backward),
        "grads": grads,
        "output": program.output.name,
        "output_returned": _handed_back(optimized.forward, program.output),
        "forward_call": _templated_line(
            f"{program.output.name}, cache",
            f"forward({', '.join(['params'] + [item.name for item in spec.inputs])})",
        ),
        "predict": predict,
    }
    return template_environment().get_template("module.py.j2").render(**model)


def _natural(item: tuple[str, object]) -> tuple[object, ...]:
    """`_ONES_COLUMN_5` before `_ONES_COLUMN_100`: names sorted with their numbers as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", item[0]))


@dataclass
class _PredictBlock:
    setup: list[Line]
    lines: list[Line]
    inputs: list[str]
    input_docs: list[dict[str, str]]
    target: str
    shape_text: str
    returned: str  # the target, copied where it may be a param or input, or a view of one

"""Fuzzing: mutants of valid specs either compile (exit 0) or are refused with one
`file:line:col: message` line (exit 2): never another exception, never a hang.

Mutants come from examples/*.yaml and a few graph-form specs, by a seeded random.Random
(deterministic: the same mutants on every run). Each applies one to three edits: delete,
duplicate or swap characters, splice in a token (`@`, `**`, `(`, `:`, `-`, YAML
punctuation, names, numbers) anywhere or inside a formula, replace a name, or delete,
duplicate or swap lines. A
mutant that takes longer than MUTANT_SECONDS is stopped by SIGALRM and fails the test.
"""

from __future__ import annotations

import random
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from symbackprop.cli import main
from tests.support import EXAMPLES

MUTANTS_PER_SPEC = 40
MUTANT_SECONDS = 15  # a hang is what this catches: a compile takes well under a second
SEED = 20240607
FILE = "mutant.yaml"
REFUSAL = re.compile(rf"^symbackprop: {re.escape(FILE)}:\d+:\d+: [^\n]+\n\Z")

GRAPH_SPECS = {
    "reductions": """
name: reductions
inputs: {x: [batch, 5, 3], v: [3], t: [batch, 3]}
params: {w: [5, 3], b: [3]}
nodes:
  s: sum(x * w, axis=1) + b
  m: max(s, axis=-1)
  lse: logsumexp(s, axis=(0, 1))
  p: softmax(s, axis=-1)
  q: log_softmax(transpose(s), axis=0)
  loss: mean(m) + lse + mse(p, t) + binary_cross_entropy_with_logits(s, t) - mean(q)
wrt: [w, b, v]
""",
    "elementwise": """
name: elementwise
dtype: float32
inputs: {x: [4], y: {shape: [2], dtype: int32}, z: [2, 4]}
params: {a: {shape: [4], init: normal, mean: 0.0, std: 0.5}, c: {shape: [4], init: ones}}
nodes:
  u: exp(x) / (1 + abs(a)) - log1p(x**2) + sqrt(c * c) * sin(x) * cos(a)
  v: tanh(u) + sigmoid(u) + relu(u) + softplus(u) + leaky_relu(u, 0.2)
  w: maximum(v, minimum(u, pi)) ** 2 + e
  loss: softmax_cross_entropy(z * w, y, reduction="sum")
output: loss
wrt: [a, c, x]
""",
}

TOKENS = [
    "@", "**", "*", "(", ")", ":", "-", "+", "/", ",", "[", "]", "{", "}", "=", ".",
    "'", '"', "#", "&a ", "*a", "!!", "!!python/object/apply:os.system ", "? ", "- ", "|",
    ">", "%", "\t", "\n", "\n  ", "  ", " ", "\\", "~", "`",
    "0", "-1", "1e309", "9**9**9", "2**40", "3.5", "1099511627777", ".nan", "null", "true",
    "axis=", "reduction=", "sum(", "exp(", "transpose(", "softmax_cross_entropy(", "__import__",
    "x", "y", "W1", "b1", "batch", "loss", "out", "nodes", "wrt", "layers", "dense", "d_x",
]  # fmt: skip


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        text = rng.choice(MUTATIONS)(text, rng)
    return text


def _position(text: str, rng: random.Random) -> int:
    return rng.randrange(len(text) + 1)


def delete_chars(text: str, rng: random.Random) -> str:
    at = _position(text, rng)
    return text[:at] + text[at + rng.randint(1, 3) :]


def duplicate_chars(text: str, rng: random.Random) -> str:
    at = _position(text, rng)
    return text[:at] + text[at : at + rng.randint(1, 8)] + text[at:]


def swap_chars(text: str, rng: random.Random) -> str:
    at = rng.randrange(max(len(text) - 1, 1))
    return text[:at] + text[at + 1 : at + 2] + text[at : at + 1] + text[at + 2 :]


def splice_token(text: str, rng: random.Random) -> str:
    at = _position(text, rng)
    return text[:at] + rng.choice(TOKENS) + text[at:]


def replace_name(text: str, rng: random.Random) -> str:
    names = list(re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", text))
    if not names:
        return text
    match = rng.choice(names)
    other = rng.choice([m.group() for m in names] + TOKENS[-14:])
    return text[: match.start()] + other + text[match.end() :]


def splice_into_formula(text: str, rng: random.Random) -> str:
    """A token inside a formula (a `  name: value` line): reaches the formula parser and
    the compiler more often than an edit anywhere, which mostly breaks the YAML."""
    values = list(re.finditer(r"^  \w+: (.+)$", text, re.MULTILINE))
    if not values:
        return splice_token(text, rng)
    value = rng.choice(values)
    at = rng.randint(value.start(1), value.end(1))
    return text[:at] + rng.choice(TOKENS) + text[at:]


def shuffle_lines(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        return text
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    edit = rng.randrange(3)
    if edit == 0:
        del lines[i]
    elif edit == 1:
        lines.insert(j, lines[i])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


MUTATIONS: list[Callable[[str, random.Random], str]] = [
    delete_chars,
    duplicate_chars,
    swap_chars,
    splice_token,
    splice_token,
    replace_name,
    splice_into_formula,
    splice_into_formula,
    shuffle_lines,
]


def base_specs() -> dict[str, str]:
    specs = {
        path.stem: path.read_text(encoding="utf-8") for path in sorted(EXAMPLES.glob("*.yaml"))
    }
    return {**specs, **{name: text.lstrip() for name, text in GRAPH_SPECS.items()}}


@dataclass(frozen=True)
class Mutant:
    base: str
    text: str


def mutants() -> Iterator[object]:
    rng = random.Random(SEED)
    for base, text in base_specs().items():
        for number in range(MUTANTS_PER_SPEC):
            yield pytest.param(Mutant(base, mutate(text, rng)), id=f"{base}-{number:02d}")


class Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"a mutant took more than {MUTANT_SECONDS} s")


def test_the_base_specs_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in base_specs().items():
        (tmp_path / FILE).write_text(text, encoding="utf-8")
        assert main(["compile", "--stdout", str(tmp_path / FILE)]) == 0, name
    capsys.readouterr()


def test_mutants_differ() -> None:
    texts = [param.values[0].text for param in mutants()]  # type: ignore[attr-defined]
    assert len(texts) == MUTANTS_PER_SPEC * len(base_specs())
    assert len(set(texts)) > 0.9 * len(texts)


@pytest.mark.parametrize("mutant", mutants())
def test_mutant_compiles_or_is_refused(
    mutant: Mutant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    Path(FILE).write_text(mutant.text, encoding="utf-8")
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, MUTANT_SECONDS)
    try:
        code = main(["compile", "--stdout", FILE])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    if code == 2:
        assert REFUSAL.match(captured.err), f"{captured.err!r} for:\n{mutant.text}"
        assert captured.out == ""
    else:
        assert captured.err == ""
        assert captured.out.startswith("# Code generated by symbackprop")
    assert sorted(path.name for path in tmp_path.iterdir()) == [FILE]


# --- Retyped values: each value of a valid spec replaced by one of another type. ---------

WRONG_TYPES: tuple[object, ...] = ([1, 2], {"a": 1}, None, True, 1.5, -3, "zz")


def _paths(value: object, path: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    """Every place in a parsed spec that holds a value: mapping values and list items."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from _paths(item, (*path, index))


def _replaced(document: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, *rest = path
    if isinstance(document, dict):
        return {k: _replaced(v, tuple(rest), new) if k == head else v for k, v in document.items()}
    assert isinstance(document, list)
    return [_replaced(v, tuple(rest), new) if i == head else v for i, v in enumerate(document)]


@pytest.mark.parametrize("base", sorted(base_specs()))
def test_a_value_of_another_type_is_refused_or_compiles(
    base: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Never a traceback: a list, a mapping, null, a bool or a number where the spec wants
    something else gets `file:line:col: message` and exit 2 (or compiles, where legal)."""
    import yaml

    monkeypatch.chdir(tmp_path)
    document = yaml.safe_load(base_specs()[base])
    refused = 0
    for path in _paths(document):
        for new in WRONG_TYPES:
            text = yaml.safe_dump(_replaced(document, path, new), sort_keys=False)
            Path(FILE).write_text(text, encoding="utf-8")
            code = main(["compile", "--stdout", FILE])
            captured = capsys.readouterr()
            assert code in (0, 2), f"{path} = {new!r}: {captured.err}"
            if code == 2:
                refused += 1
                assert REFUSAL.match(captured.err), f"{path} = {new!r}: {captured.err!r}"
                assert "YNode" not in captured.err and "Loc(" not in captured.err, captured.err
    assert refused > 0

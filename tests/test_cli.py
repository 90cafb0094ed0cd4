"""`symbackprop compile`: where it writes, --stdout, --check, bad specs, --version and --help.

Most cases call `symbackprop.cli.main(argv)` in-process (fast); the ones about what a user
sees from the shell (exit codes, no traceback, `python -m symbackprop`) run a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from symbackprop import __version__
from symbackprop.cli import main
from symbackprop.compiler import compile_spec
from symbackprop.spec import load_spec
from tests.support import EXAMPLES, ROOT

GOOD = EXAMPLES / "seed_graph.yaml"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "symbackprop", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def expected_module(spec: Path) -> str:
    return compile_spec(load_spec(spec))


def files_in(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# --- compile, -o, --stdout ------------------------------------------------------------------


def test_compile_writes_dir_name_py(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["compile", str(GOOD), str(EXAMPLES / "mlp.yaml"), "-o", str(out)]) == 0
    assert files_in(out) == {
        "seed_graph.py": expected_module(GOOD).encode(),
        "mlp.py": expected_module(EXAMPLES / "mlp.yaml").encode(),
    }
    assert "seed_graph.py" in capsys.readouterr().out


def test_compile_defaults_to_generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(GOOD)]) == 0
    assert (tmp_path / "generated" / "seed_graph.py").read_text(
        encoding="utf-8"
    ) == expected_module(GOOD)


def test_compile_names_the_module_after_the_spec_not_the_file(tmp_path: Path) -> None:
    renamed = tmp_path / "whatever.yaml"
    renamed.write_bytes(GOOD.read_bytes())
    assert main(["compile", str(renamed), "-o", str(tmp_path / "out")]) == 0
    assert files_in(tmp_path / "out").keys() == {"seed_graph.py"}


def test_stdout_prints_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compile", "--stdout", str(GOOD), "-o", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == expected_module(GOOD)
    assert files_in(tmp_path) == {}


def test_compile_through_python_dash_m(tmp_path: Path) -> None:
    completed = run_cli("compile", str(GOOD), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "out" / "seed_graph.py").read_text(encoding="utf-8") == expected_module(GOOD)


# --- --check ----------------------------------------------------------------------------


def test_check_passes_when_fresh(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["compile", str(GOOD), "-o", str(out)]) == 0
    before = files_in(out)
    assert main(["compile", "--check", str(GOOD), "-o", str(out)]) == 0
    assert files_in(out) == before


@pytest.mark.parametrize("stale", ["edited", "missing"])
def test_check_fails_when_stale_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stale: str
) -> None:
    out = tmp_path / "out"
    assert main(["compile", str(GOOD), str(EXAMPLES / "gates.yaml"), "-o", str(out)]) == 0
    if stale == "edited":
        (out / "seed_graph.py").write_text("# edited by hand\n", encoding="utf-8")
    else:
        (out / "seed_graph.py").unlink()
    before = files_in(out)
    capsys.readouterr()
    assert (
        main(["compile", "--check", str(GOOD), str(EXAMPLES / "gates.yaml"), "-o", str(out)]) == 1
    )
    printed = capsys.readouterr()
    assert "seed_graph.py" in printed.err + printed.out
    assert "gates.py" not in printed.err + printed.out, "only the stale file is named"
    assert files_in(out) == before


@pytest.mark.parametrize("check", [[], ["--check"]])
@pytest.mark.parametrize("below", ["", "sub"])
def test_an_output_folder_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], check: list[str], below: str
) -> None:
    """Ninth review: `-o afile` printed `stale: afile/seed_graph.py` under --check, and
    "cannot write" otherwise, both with exit 1 (a stale file's code in CI)."""
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n", encoding="utf-8")
    out = blocker / below if below else blocker
    assert main(["compile", *check, str(GOOD), "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"symbackprop: -o {out}: {blocker} is not a folder\n"
    assert blocker.read_text(encoding="utf-8") == "mine\n"


def test_check_exit_code_through_python_dash_m(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "seed_graph.py").write_text("stale\n", encoding="utf-8")
    completed = run_cli("compile", "--check", str(GOOD), "-o", "out", cwd=tmp_path)
    assert completed.returncode == 1
    assert "seed_graph.py" in completed.stderr + completed.stdout
    assert (tmp_path / "out" / "seed_graph.py").read_text(encoding="utf-8") == "stale\n"


# --- bad specs --------------------------------------------------------------------------


@dataclass(frozen=True)
class BadSpec:
    kind: str
    text: str
    at: str  # the text the error points at: its line (and, with `exact`, its column)
    node: str | None  # the node the message names, where there is one
    exact: bool = False


BAD_SPECS = [
    BadSpec(
        "unknown name",
        "name: bad\ninputs: {a: []}\nnodes:\n  c: a + q\noutput: c\nwrt: [a]\n",
        "q\n",
        "c",
        exact=True,
    ),
    BadSpec(
        "syntax error",
        "name: bad\ninputs: {a: []}\nnodes:\n  c: a + * 2\noutput: c\nwrt: [a]\n",
        "a + * 2",
        "c",
    ),
    BadSpec(
        "shape mismatch",
        "name: bad\ninputs: {a: [3, 4], b: [5, 6]}\nnodes:\n  c: sum(a @ b)\noutput: c\nwrt: [a]\n",
        "sum(a @ b)",
        "c",
    ),
    BadSpec(
        "non-scalar output",
        "name: bad\ninputs: {a: [3]}\nnodes:\n  c: a * 2\noutput: c\nwrt: [a]\n",
        "c\nwrt",
        None,
    ),
    BadSpec(
        "unknown function",
        "name: bad\ninputs: {a: []}\nnodes:\n  c: foo(a)\noutput: c\nwrt: [a]\n",
        "foo(a)",
        "c",
        exact=True,
    ),
    BadSpec("bad YAML", "name: bad\ninputs: {a: [}\nnodes:\n  c: a\n", "inputs", None),
    # found by review: inside a YAML block, a folded quoted string or past an escape, the
    # error pointed at the string's start line, at a column counted through the joined text
    BadSpec(
        "unknown name in a block",
        "name: bad\ninputs: {a: []}\nnodes:\n  c: |\n    a * 2\n      + 3 * q\n"
        "output: c\nwrt: [a]\n",
        "q\n",
        "c",
        exact=True,
    ),
    BadSpec(
        "unknown name in a folded quoted string",
        'name: bad\ninputs: {a: []}\nnodes:\n  c: "a * 2\n    + 3 * q"\noutput: c\nwrt: [a]\n',
        'q"',
        "c",
        exact=True,
    ),
    BadSpec(
        "unknown name past an escape",
        'name: bad\ninputs: {a: []}\nnodes:\n  c: "\\u0061 * q"\noutput: c\nwrt: [a]\n',
        'q"',
        "c",
        exact=True,
    ),
    BadSpec(
        "unknown name written as an escape",
        'name: bad\ninputs: {a: []}\nnodes:\n  c: "a * \\u0051"\noutput: c\nwrt: [a]\n',
        "\\u0051",
        "c",
        exact=True,
    ),
    BadSpec(
        "bad layer activation",
        "name: bad\ninputs: {x: [batch, 3], y: [batch, 2]}\nlayers:\n"
        "  - {dense: 2, activation: 'x * nope'}\nloss: {mse: y}\n",
        "nope'",
        "h1",
        exact=True,
    ),
    # third review: a character YAML forbids was told on two lines, at 1:1
    BadSpec(
        "control character",
        "name: bad\ninputs: {a: []}\nnodes:\n  c: a\x07 * 2\n",
        "\x07",
        None,
        exact=True,
    ),
    # third review: an activation without x (`0`, another input) or one that reduces x
    # compiled, and the layer's params got gradients of 0 or another shape downstream
    BadSpec(
        "activation without x",
        "name: bad\ninputs: {x: [batch, 3], t: []}\nlayers:\n"
        "  - {dense: 2, activation: 't * 2'}\nnodes:\n  z: sum(out * t)\n",
        "t * 2'",
        "h1",
        exact=True,
    ),
    BadSpec(
        "activation that reduces x",
        "name: bad\ninputs: {x: [batch, 3], y: [batch]}\nlayers:\n"
        "  - {dense: 2, activation: 'mean(x, axis=1)'}\nloss: {mse: y}\n",
        "mean(x",
        "h1",
        exact=True,
    ),
]


def line_col(text: str, at: str) -> tuple[int, int]:
    offset = text.index(at)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def check_error_message(stderr: str, bad: BadSpec, file: str) -> None:
    line, col = line_col(bad.text, bad.at)
    match = re.search(rf"{re.escape(file)}:(\d+):(\d+): ", stderr)
    assert match, f"no `{file}:line:col:` in {stderr!r}"
    assert int(match[1]) == line, stderr
    if bad.exact:
        assert int(match[2]) == col, stderr
    if bad.node is not None:
        assert f"'{bad.node}'" in stderr, stderr
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr  # one line, as `file:line:col: message`


@pytest.mark.parametrize("bad", BAD_SPECS, ids=lambda bad: bad.kind)
def test_bad_spec_exits_2_with_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: BadSpec
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(bad.text, encoding="utf-8")
    assert main(["compile", str(spec), "-o", str(tmp_path / "out")]) == 2
    check_error_message(capsys.readouterr().err, bad, "bad.yaml")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [BAD_SPECS[0], BAD_SPECS[5]], ids=lambda bad: bad.kind)
def test_bad_spec_through_python_dash_m(tmp_path: Path, bad: BadSpec) -> None:
    (tmp_path / "bad.yaml").write_text(bad.text, encoding="utf-8")
    completed = run_cli("compile", "bad.yaml", "-o", "out", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.startswith("symbackprop: bad.yaml:"), completed.stderr
    check_error_message(completed.stderr, bad, "bad.yaml")
    assert completed.stdout == ""


def test_one_bad_spec_writes_nothing(tmp_path: Path) -> None:
    """Several specs, one bad: no new file, and an existing output stays byte-identical."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "seed_graph.py").write_bytes(b"# an older version\n")
    (tmp_path / "bad.yaml").write_text(BAD_SPECS[0].text, encoding="utf-8")
    specs = [str(GOOD), str(tmp_path / "bad.yaml"), str(EXAMPLES / "gates.yaml")]
    assert main(["compile", *specs, "-o", str(out)]) == 2
    assert files_in(out) == {"seed_graph.py": b"# an older version\n"}


def test_missing_spec_file_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", str(tmp_path / "nowhere.yaml"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nowhere.yaml" in err and "Traceback" not in err


# --- --version and --help ---------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    completed = run_cli("--version", cwd=tmp_path)
    assert completed.returncode == 0
    assert completed.stdout.strip() == f"symbackprop {__version__}"


def test_compile_help(tmp_path: Path) -> None:
    completed = run_cli("compile", "--help", cwd=tmp_path)
    assert completed.returncode == 0
    for option in ("--check", "--stdout", "-o"):
        assert option in completed.stdout


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"symbackprop {__version__}"


# --- the files compile writes --------------------------------------------------------------


def test_written_files_get_the_umask_mode_or_keep_their_own(tmp_path: Path) -> None:
    """Found by review: modules came out 0600 (mkstemp's mode), and regenerating a 0644
    module made it 0600, so another user, or a server's account, could not import it."""
    import os
    import stat

    spec = str(EXAMPLES / "gates.yaml")
    out = tmp_path / "out"
    old_umask = os.umask(0o022)
    try:
        assert main(["compile", "--emit-tests", "-o", str(out), spec]) == 0
        for path in out.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        (out / "gates.py").chmod(0o664)
        assert main(["compile", "-o", str(out), spec]) == 0
        assert stat.S_IMODE((out / "gates.py").stat().st_mode) == 0o664
    finally:
        os.umask(old_umask)


def test_a_long_spec_name_writes_or_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by review: a 245-character name failed on the temporary file's longer name,
    and past 251 the write failed (exit 1, "cannot write"); longer names than
    MAX_MODULE_NAME are refused as spec errors, and the longest is written with its
    emitted test."""
    from symbackprop.spec import MAX_MODULE_NAME

    body = "inputs: {x: [3]}\nnodes: {e: sum(x * x)}\nwrt: [x]\n"
    longest = "m" * MAX_MODULE_NAME
    spec = tmp_path / "long.yaml"
    spec.write_text(f"name: {longest}\n{body}", encoding="utf-8")
    assert main(["compile", "--emit-tests", "-o", str(tmp_path / "out"), str(spec)]) == 0
    assert (tmp_path / "out" / f"{longest}.py").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    spec.write_text(f"name: {longest}m\n{body}", encoding="utf-8")
    capsys.readouterr()
    assert main(["compile", "-o", str(tmp_path / "out2"), str(spec)]) == 2
    assert f"{MAX_MODULE_NAME + 1} characters long" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("name", ["pytest", "conftest", "iniconfig", "py", "pygments"])
def test_a_spec_named_after_pytest_is_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by review: `pytest.py` beside the emitted tests ran in pytest's place; so did
    a module pytest imports (`iniconfig.py`: ImportError on starting pytest)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: {name}\ninputs: {{x: [3]}}\nnodes: {{e: sum(x)}}\nwrt: [x]\n")
    assert main(["compile", "--emit-tests", "-o", str(tmp_path / "out"), str(spec)]) == 2
    assert "pytest's, or a module it imports" in capsys.readouterr().err


def test_a_forbidden_character_is_placed_on_lines_of_carriage_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fourth review: with CR line breaks the line was counted by `\\n`, as 1:46."""
    spec = tmp_path / "cr.yaml"
    spec.write_bytes(b"name: a\rinputs: {x: [3]}\rnodes:\r  y: sum(x)\x07\r")
    assert main(["compile", str(spec), "--stdout"]) == 2
    assert f"{spec}:4:12: malformed YAML: the character U+0007" in capsys.readouterr().err

"""Writes are atomic: a compile that fails, or is interrupted anywhere, leaves every output
file either as it was or completely new (never half-written), and no temporary files.

Interruptions are simulated by making `os.replace` (the rename), the write of the
temporary file, or the compiler itself raise KeyboardInterrupt or OSError.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import symbackprop.compiler
from symbackprop import cli
from symbackprop.cli import main
from tests.support import EXAMPLES
from tests.test_cli import files_in  # every file, hidden (temporary) ones included

SPECS = [str(EXAMPLES / f"{name}.yaml") for name in ("gates", "seed_graph", "swish_regression")]
BAD = "name: bad\ninputs: {x: [3]}\nnodes:\n  y: sum(x) + zz\nwrt: [x]\n"
OLD = b"# an earlier version: must stay byte-identical unless replaced whole\n"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output dir where every file a compile writes exists in an older version."""
    directory = tmp_path / "out"
    assert main(["compile", "--emit-tests", "-o", str(directory), *SPECS]) == 0
    for path in directory.iterdir():
        path.write_bytes(OLD)
    (directory / "notes.txt").write_bytes(b"not ours\n")
    return directory


@pytest.fixture
def fresh(tmp_path: Path) -> dict[str, bytes]:
    """What the compile writes when nothing goes wrong."""
    directory = tmp_path / "fresh"
    assert main(["compile", "--emit-tests", "-o", str(directory), *SPECS]) == 0
    return files_in(directory)


def compile_into(out: Path, *extra: str) -> list[str]:
    return ["compile", "--emit-tests", "-o", str(out), *extra]


def expected_code(error: BaseException) -> int:
    """What main returns when interrupted (130) or when a write fails (1, with a message)."""
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def assert_whole_files(out: Path, fresh: dict[str, bytes]) -> dict[str, bytes]:
    """Every file is its old version or its complete new one; no temporary files remain."""
    files = files_in(out)
    assert set(files) == set(fresh) | {"notes.txt"}, "a temporary file was left behind"
    assert files.pop("notes.txt") == b"not ours\n"
    for name, content in files.items():
        assert content in (OLD, fresh[name]), f"{name} is half-written"
    return files


@pytest.mark.parametrize("position", [0, 1, 3])
def test_a_bad_spec_among_good_ones_writes_nothing(
    tmp_path: Path, out: Path, position: int, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD, encoding="utf-8")
    specs = list(SPECS)
    specs.insert(position, str(bad))
    before = files_in(out)
    assert main(compile_into(out, *specs)) == 2
    assert "bad.yaml:4:" in capsys.readouterr().err
    assert files_in(out) == before


def test_an_unreadable_spec_among_good_ones_writes_nothing(tmp_path: Path, out: Path) -> None:
    before = files_in(out)
    assert main(compile_into(out, *SPECS, str(tmp_path / "missing.yaml"))) == 2
    assert files_in(out) == before


def raising_on_call(
    original: Callable[..., Any], number: int, error: BaseException
) -> Callable[..., Any]:
    """`original`, except that call `number` (1-based) raises `error` instead."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == number:
            raise error
        return original(*args, **kwargs)

    return wrapper


def interruptions() -> Iterator[Any]:
    for number in (1, 2, 6):
        for error in (KeyboardInterrupt(), OSError(28, "No space left on device")):
            yield pytest.param(number, error, id=f"{type(error).__name__}-at-file-{number}")


@pytest.mark.parametrize(("number", "error"), interruptions())
def test_interrupted_rename(
    out: Path,
    fresh: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    number: int,
    error: BaseException,
) -> None:
    monkeypatch.setattr(cli.os, "replace", raising_on_call(os.replace, number, error))
    assert main(compile_into(out, *SPECS)) == expected_code(error)
    files = assert_whole_files(out, fresh)
    replaced = [name for name, content in files.items() if content != OLD]
    assert len(replaced) == number - 1  # the files before the interruption, whole


class _HalfWriter(io.TextIOBase):
    """A text stream that writes half of what it is given, then fails."""

    def __init__(self, stream: io.TextIOBase, error: BaseException):
        self.stream = stream
        self.error = error

    def write(self, text: str) -> int:
        self.stream.write(text[: len(text) // 2])
        self.stream.flush()
        raise self.error

    def close(self) -> None:
        self.stream.close()
        super().close()


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_interrupted_write(
    out: Path, fresh: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    original = os.fdopen

    def half_writer(*args: Any, **kwargs: Any) -> _HalfWriter:
        return _HalfWriter(original(*args, **kwargs), error)

    monkeypatch.setattr(cli.os, "fdopen", half_writer)
    before = files_in(out)
    assert main(compile_into(out, *SPECS)) == expected_code(error)
    assert files_in(out) == before


def test_interrupted_compile_writes_nothing(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = symbackprop.compiler.compile_spec
    monkeypatch.setattr(
        symbackprop.compiler, "compile_spec", raising_on_call(original, 2, KeyboardInterrupt())
    )
    before = files_in(out)
    assert main(compile_into(out, *SPECS)) == 130
    assert files_in(out) == before


def test_temporary_files_sit_beside_their_target(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename within one folder (one file system) is atomic; across file systems it is not."""
    renames: list[tuple[Path, Path]] = []
    original = os.replace

    def spy(source: Any, target: Any) -> None:
        renames.append((Path(source), Path(target)))
        original(source, target)

    monkeypatch.setattr(cli.os, "replace", spy)
    assert main(compile_into(out, *SPECS)) == 0
    assert len(renames) == 6
    for source, target in renames:
        assert source.parent == target.parent
        assert source.name.startswith(f".{target.name}.") and source.name.endswith(".tmp")


def test_unchanged_files_are_not_rewritten(
    out: Path, fresh: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(compile_into(out, *SPECS)) == 0
    assert_whole_files(out, fresh)
    monkeypatch.setattr(cli.os, "replace", raising_on_call(os.replace, 1, AssertionError()))
    assert main(compile_into(out, *SPECS)) == 0


def test_unwritable_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An OSError escaped main as a traceback before: now a message. A file in the way of
    the output folder is found before anything is compiled: a usage error, exit 2 (ninth
    review: it was exit 1, the code of a stale file under --check)."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    assert main(["compile", "-o", str(blocker / "out"), SPECS[0]]) == 2
    assert capsys.readouterr().err == (
        f"symbackprop: -o {blocker / 'out'}: {blocker} is not a folder\n"
    )
    assert [path.name for path in tmp_path.iterdir()] == ["file"]


def test_an_output_path_that_is_a_folder_writes_nothing(
    out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Third review: with the second module's path a folder, the first was written, and the
    message named a temporary file that no longer existed."""
    (out / "seed_graph.py").unlink()
    (out / "seed_graph.py").mkdir()
    before = files_in(out)
    assert main(compile_into(out, *SPECS)) == 1
    assert files_in(out) == before
    assert capsys.readouterr().err == (
        f"symbackprop: cannot write: {out / 'seed_graph.py'}: Is a directory\n"
    )


def test_a_failure_to_make_a_later_file_writes_none(
    out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every temporary file is written before any is renamed into place."""
    error = OSError(28, "No space left on device")
    monkeypatch.setattr(cli.tempfile, "mkstemp", raising_on_call(cli.tempfile.mkstemp, 3, error))
    before = files_in(out)
    assert main(compile_into(out, *SPECS)) == 1
    assert files_in(out) == before
    assert "No space left on device" in capsys.readouterr().err


def test_an_output_that_is_a_symlink_is_written_through(tmp_path: Path) -> None:
    """Third review: the link was replaced by a regular file; `open(path, "w")` writes the
    file it points to."""
    target = tmp_path / "elsewhere" / "gates.py"
    target.parent.mkdir()
    target.write_bytes(OLD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "gates.py").symlink_to(target)
    assert main(["compile", "-o", str(out), SPECS[0]]) == 0
    assert (out / "gates.py").is_symlink()
    assert target.read_bytes() != OLD and target.read_text(encoding="utf-8").startswith("# Code")


def test_a_link_into_a_missing_folder_or_a_file_for_a_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fourth review: a link into a missing folder made the folder (`open` would fail);
    `-o afile` said `afile/gates.py: File exists`."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "gates.py").symlink_to(tmp_path / "missing" / "gates.py")
    assert main(["compile", "-o", str(out), SPECS[0]]) == 1
    assert not (tmp_path / "missing").exists()
    assert capsys.readouterr().err.endswith(f"{out / 'gates.py'}: No such file or directory\n")
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    assert main(["compile", "-o", str(afile), SPECS[0]]) == 2
    assert capsys.readouterr().err == f"symbackprop: -o {afile}: {afile} is not a folder\n"


def test_graph_to_a_folder_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fourth review: `graph -o d.svg`, d.svg a folder, wrote d.dot and then named a scratch
    file that no longer existed."""
    (tmp_path / "d.svg").mkdir()
    assert main(["graph", SPECS[0], "-o", str(tmp_path / "d.svg")]) == 1
    assert capsys.readouterr().err == (
        f"symbackprop: cannot write: {tmp_path / 'd.svg'}: Is a directory\n"
    )
    assert [path.name for path in tmp_path.iterdir()] == ["d.svg"]


def test_a_link_loop_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fifth review: a link to itself was replaced by the module, with exit 0."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "gates.py").symlink_to("gates.py")
    assert main(["compile", "-o", str(out), SPECS[0]]) == 1
    assert (out / "gates.py").is_symlink()
    assert "Too many levels of symbolic links" in capsys.readouterr().err


@pytest.mark.parametrize("relative", [False, True])
def test_two_links_to_one_file_are_refused(
    relative: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The module and its test linked to one file: the test was written over the module.
    Seventh review: with a relative `-o` (the default `generated/` is one), a link to the
    module itself still let the test replace it."""
    monkeypatch.chdir(tmp_path)
    out = Path("out") if relative else tmp_path / "out"
    out.mkdir()
    (out / "shared.py").write_bytes(OLD)
    (out / "gates.py").symlink_to("shared.py")
    (out / "test_gates_gradcheck.py").symlink_to("shared.py")
    assert main(["compile", "--emit-tests", "-o", str(out), SPECS[0]]) == 1
    assert (out / "shared.py").read_bytes() == OLD
    assert capsys.readouterr().err == (
        f"symbackprop: cannot write: {out / 'test_gates_gradcheck.py'}: "
        f"the same file as {out / 'gates.py'}\n"
    )
    assert sorted(path.name for path in out.iterdir()) == [
        "gates.py",
        "shared.py",
        "test_gates_gradcheck.py",
    ]
    (out / "gates.py").unlink()  # a link to the module, which is not there yet
    (out / "test_gates_gradcheck.py").unlink()
    (out / "test_gates_gradcheck.py").symlink_to("gates.py")
    assert main(["compile", "--emit-tests", "-o", str(out), SPECS[0]]) == 1
    assert not (out / "gates.py").exists()

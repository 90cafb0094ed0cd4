"""The `symbackprop` command line. Heavy imports (SymPy) happen only inside commands,
so `symbackprop --version` and `--help` answer at once."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import SpecError

if TYPE_CHECKING:
    from .spec import Spec

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symbackprop",
        description="Compile network specs into standalone NumPy forward/backward modules.",
    )
    parser.add_argument("--version", action="version", version=f"symbackprop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    compile_cmd = commands.add_parser(
        "compile",
        help="compile specs into generated/<name>.py",
        description="Compile each SPEC into DIR/<name>.py.",
    )
    compile_cmd.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (YAML or JSON)")
    compile_cmd.add_argument(
        "-o", "--output-dir", default="generated", metavar="DIR", help="default: generated/"
    )
    mode = compile_cmd.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name the files that would change",
    )
    mode.add_argument(
        "--stdout", action="store_true", help="print the modules instead of writing them"
    )
    compile_cmd.add_argument(
        "--emit-tests",
        action="store_true",
        help="also write DIR/test_<name>_gradcheck.py, a NumPy-only pytest file checking the "
        "module's gradients against finite differences (--check and --stdout cover it too)",
    )
    compile_cmd.set_defaults(run=_compile)

    check_cmd = commands.add_parser(
        "check",
        help="compare a spec's gradients with finite differences",
        description="Compile SPEC in memory, evaluate its gradients at a random point and compare "
        "them with central finite differences (in float64; a float32 spec's gradients are also "
        "compared with float64's). Prints the worst relative error per gradient, less what "
        "the rounding measured at that point can explain (so a right gradient mostly shows "
        "0.00e+00); exit 1 past tolerance.",
    )
    check_cmd.add_argument("spec", metavar="SPEC", help="a spec file (YAML or JSON)")
    check_cmd.add_argument("--seed", type=int, default=0, help="the random point (default: 0)")
    check_cmd.add_argument("--tolerance", type=float, help="default: 1e-6 (relative error)")
    check_cmd.set_defaults(run=_lazy("gradcheck", environment=_ONE_BLAS_THREAD))

    graph_cmd = commands.add_parser(
        "graph",
        help="draw the forward and the backward graph (Graphviz)",
        description="Draw SPEC's forward graph and backward graph side by side. DOT is always "
        "written (FILE.dot beside a picture); .svg and .png need Graphviz's `dot` "
        "(exit 3 without it).",
    )
    graph_cmd.add_argument("spec", metavar="SPEC", help="a spec file (YAML or JSON)")
    graph_cmd.add_argument(
        "-o", "--output", metavar="FILE", help="FILE.dot, .svg or .png (default: DOT on stdout)"
    )
    graph_cmd.set_defaults(run=_lazy("graphviz"))

    explain_cmd = commands.add_parser(
        "explain",
        help="derive one gradient by the chain rule, path by path",
        description="Print the derivation of d(output)/d(NAME): the chain rule as a sum over the "
        "paths from NAME to the output, each a product of local derivatives.",
    )
    explain_cmd.add_argument("spec", metavar="SPEC", help="a spec file (YAML or JSON)")
    explain_cmd.add_argument("--wrt", required=True, metavar="NAME", help="an input or param")
    explain_cmd.add_argument("--latex", action="store_true", help="LaTeX (align*), not text")
    explain_cmd.set_defaults(run=_lazy("explain"))
    return parser


# `check` runs many small forward passes, where BLAS threads only contend for the cores
# (mlp.yaml: 28 s against 2.7 s on a busy 2-core machine). NumPy reads these variables
# when it is first imported; a value the user set is kept.
_ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _lazy(
    module: str, environment: dict[str, str] | None = None
) -> Callable[[argparse.Namespace], int]:
    """A command whose code (and SymPy) is imported only when it runs: `<module>.run`,
    with `environment`'s variables set first where the user has not set them."""

    def run(args: argparse.Namespace) -> int:
        for variable, value in (environment or {}).items():
            os.environ.setdefault(variable, value)
        return int(importlib.import_module(f"{__package__}.{module}").run(args))

    return run


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: never a half-written module."""
    _write_all([(path, text)])


def _write_all(files: list[tuple[Path, str]]) -> None:
    """Write every file or none: each text goes to a temporary file beside its path, and
    only when all are written are they renamed into place (`writable_path` refuses a
    folder there first, the one failure a rename could still meet). An error names the path,
    not the temporary file. Each file gets the mode a plain write would give it: the old
    file's, else the umask's (mkstemp makes it 0600, which other users could not import)."""
    targets = [writable_path(path) for path, _ in files]
    places = [os.path.realpath(target) for target in targets]  # relative paths too
    for index, place in enumerate(places):
        first = places.index(place)
        if first != index:  # two links to one file: the second text would replace the first
            raise OSError(errno.EEXIST, f"the same file as {files[first][0]}", str(files[index][0]))
    files = [(target, text) for target, (_, text) in zip(targets, files, strict=True)]
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            staged.append((_staged(path, text), path))
        while staged:
            temporary, path = staged[0]
            _named(path, os.replace, temporary, path)
            staged.pop(0)
    finally:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)


def writable_path(path: Path) -> Path:
    """The file a write to `path` goes to: through a symlink, as `open(path, "w")` writes,
    not replacing the link by a file. A folder there, a link loop, a link to a missing
    folder, or a file where a folder should be is refused first, named as the user wrote
    it."""
    target = path
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:  # a link to itself: `open` would fail too
                raise OSError(err.errno, os.strerror(err.errno), str(path)) from None
        target = Path(os.path.realpath(path))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if target is not path and not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    for folder in target.parents:
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
            break
    return target


def _staged(path: Path, text: str) -> str:
    """`text` written to a new temporary file beside `path`; its name."""
    _named(path, path.parent.mkdir, parents=True, exist_ok=True)
    # the name's start is enough to tell whose it is; all of it could pass 255 bytes
    handle, temporary = _named(
        path, tempfile.mkstemp, prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent
    )
    try:
        os.chmod(temporary, _mode_for(path))
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            _named(path, stream.write, text)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


def _named(path: Path, action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`action(*args, **kwargs)`, its OSError told as one about `path`."""
    try:
        return action(*args, **kwargs)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None


def _mode_for(path: Path) -> int:
    """The permission bits of `path` if it exists, else those a new file gets (0666 less
    the umask), as `open(path, "w")` would leave them."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _compile(args: argparse.Namespace) -> int:
    from .compiler import compile_spec
    from .spec import load_spec

    if not args.stdout and (blocker := _file_in_the_way(Path(args.output_dir))) is not None:
        # a usage error, not "stale" (--check) or a failed write: exit 2, as argparse's
        print(f"symbackprop: -o {args.output_dir}: {blocker} is not a folder", file=sys.stderr)
        return EXIT_BAD_SPEC
    # compile everything first: one bad spec leaves every existing file as it was
    outputs: list[tuple[Path, str]] = []
    specs = []
    origins: list[Spec] = []  # the spec each output is compiled from
    spec_paths = _distinct(args.specs)
    for spec_path in spec_paths:
        spec = load_spec(spec_path)
        specs.append(spec)
        outputs.append((Path(args.output_dir) / f"{spec.name}.py", compile_spec(spec)))
        origins.append(spec)
        if args.emit_tests:
            from .emit_tests import gradcheck_test_file

            outputs.append(gradcheck_test_file(Path(args.output_dir), spec))
            origins.append(spec)
    seen: dict[Path, str] = {}
    for spec_path, spec in zip(spec_paths, specs, strict=True):
        path = Path(args.output_dir) / f"{spec.name}.py"
        if path in seen:
            raise SpecError(f"name {spec.name!r} is also the name of {seen[path]}", spec.name_loc)
        seen[path] = spec_path
    if args.emit_tests:
        _refuse_clashing_tests([path for path, _ in outputs], origins)
    if args.stdout:
        for _, text in outputs:
            sys.stdout.write(text)
        return EXIT_OK
    if args.check:
        stale = [path for path, text in outputs if not _same_text(path, text)]
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return EXIT_FAILED if stale else EXIT_OK
    changed = [(path, text) for path, text in outputs if not _same_text(path, text)]
    _write_all(changed)
    for path, _ in changed:
        print(f"wrote {path}")
    return EXIT_OK


def _file_in_the_way(folder: Path) -> Path | None:
    """The first of `folder` and its parents that exists, where it is not a folder."""
    for path in (folder, *folder.parents):
        if path.exists():
            return None if path.is_dir() else path
    return None


def _distinct(paths: list[str]) -> list[str]:
    """`paths` less those naming a file named before (overlapping globs, `a.yaml ./a.yaml`):
    a spec given twice is compiled once."""
    seen: set[str] = set()
    result = []
    for path in paths:
        if (real := os.path.realpath(path)) not in seen:
            seen.add(real)
            result.append(path)
    return result


def _refuse_clashing_tests(paths: list[Path], origins: list[Spec]) -> None:
    """A spec named test_a_gradcheck would write over the emitted test of spec a: the
    error is at the name of the spec whose output comes second (`origins[i]` made
    `paths[i]`)."""
    seen: set[Path] = set()
    for path, spec in zip(paths, origins, strict=True):
        if path in seen:
            raise SpecError(f"{path.name} would be both a module and a test", spec.name_loc)
        seen.add(path)


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_SPEC
    try:
        return int(args.run(args))
    except SpecError as err:
        print(f"symbackprop: {err}", file=sys.stderr)
        return EXIT_BAD_SPEC
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        # an unwritable output folder or the like: the specs were fine, nothing was written
        # (`_write_all` writes every file or none)
        where = f": {err.filename}" if err.filename else ""
        print(f"symbackprop: cannot write{where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_FAILED

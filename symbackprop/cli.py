"""The `symbackprop` command line. Heavy imports (SymPy) happen only inside commands,
so `symbackprop --version` and `--help` answer at once."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import SpecError

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
    compile_cmd.add_argument("-o", "--output-dir", default="generated", metavar="DIR", help="default: generated/")
    mode = compile_cmd.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name the files that would change",
    )
    mode.add_argument("--stdout", action="store_true", help="print the modules instead of writing them")
    compile_cmd.set_defaults(run=_compile)
    return parser


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: never a half-written module."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _compile(args: argparse.Namespace) -> int:
    from .compiler import compile_spec
    from .spec import load_spec

    # compile everything first: one bad spec leaves every existing file as it was
    outputs: list[tuple[Path, str]] = []
    for spec_path in args.specs:
        spec = load_spec(spec_path)
        outputs.append((Path(args.output_dir) / f"{spec.name}.py", compile_spec(spec)))
    names = [path for path, _ in outputs]
    for path in names:
        if names.count(path) > 1:
            raise SpecError(f"two specs compile to {path}", None)
    if args.stdout:
        for _, text in outputs:
            sys.stdout.write(text)
        return EXIT_OK
    if args.check:
        stale = [path for path, text in outputs if not _same_text(path, text)]
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return EXIT_FAILED if stale else EXIT_OK
    for path, text in outputs:
        if not _same_text(path, text):
            _write_atomically(path, text)
            print(f"wrote {path}")
    return EXIT_OK


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

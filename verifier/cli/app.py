"""The command line: ``python -m verifier COMMAND ...``.

One dispatcher; each sub-command lives in verifier/cli/<name>.py and
provides ``HELP`` (one line), ``DESCRIPTION`` (the --help text: output format,
exit codes), ``add_arguments(parser)`` and ``run(args, stdout, stderr) -> int``.

Exit codes shared by every command: 0 success (VERIFIED for check), 1 a
negative verdict (REFUTED), 2 bad input or usage, 3 UNKNOWN (solver limit).
A bad input never shows a traceback: one line on stderr naming the file, the
place (JSON path, or rank and step) and the offending value.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import IO, Callable, Sequence

from verifier import __version__
from verifier.errors import InputError, OutputFailed, ParserExit, UsageError
from verifier.extras import MissingExtra
from verifier.format.guard import SafeText, one_line

COMMANDS = ("check", "generate", "convert", "analyze", "compare", "show", "synthesize", "record")

EXIT_OK, EXIT_REFUTED, EXIT_BAD_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3


class RaisingParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` owns stdout/stderr.

    Shared by the three command lines (verifier, reference, fastpath).
    """

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        if message:
            raise UsageError(message.strip())
        raise ParserExit(status)


def help_to(stdout: IO[str], *parsers: argparse.ArgumentParser) -> None:
    """Send argparse's help text to ``stdout`` (it writes to sys.stdout itself)."""
    for p in parsers:
        p._print_message = lambda message, file=None: stdout.write(message or "")  # type: ignore


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str], stderr: IO[str],
                       stdout: IO[str] | None = None):
    """(args, None) on success, else (None, exit code) with any error on stderr
    (and, when ``argv`` asks for ``--format json``, as a JSON object on ``stdout``)."""
    try:
        return parser.parse_args(list(argv)), None
    except ParserExit as e:
        return None, e.status
    except UsageError as e:
        report_error(str(e), EXIT_BAD_INPUT, stderr, stdout if wants_json(argv) else None,
                     kind="usage")
        return None, EXIT_BAD_INPUT


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: prints ``ppverify X.Y.Z`` on stdout, exit 0 (every command line)."""
    parser.add_argument("--version", action="version", version=f"ppverify {__version__}",
                        help="print the ppverify version and exit")


ERROR_FORMAT = "pp-error"
ERROR_VERSION = "1.0"


def wants_json(argv: Sequence[str]) -> bool:
    """Whether a command line asks for ``--format json`` (read before parsing, so
    that a usage error can be answered in JSON too)."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == "--format=json" or (a == "--format" and argv[i + 1:i + 2] == ["json"]):
            return True
    return False


def report_error(message: str, code: int, stderr: IO[str], json_out: IO[str] | None = None,
                 kind: str = "bad-input", where: str | None = None) -> None:
    """One line "error: ..." on stderr (escaped, bounded); with ``json_out`` also one
    JSON object on it (specs/check-output.md, "Errors")."""

    line = one_line(message)
    stderr.write(f"error: {line}\n")
    if json_out is not None:
        import json

        json_out.write(json.dumps({
            "format": ERROR_FORMAT, "version": ERROR_VERSION, "exit_code": code,
            "error": {"kind": kind, "where": None if where is None else one_line(str(where), 500),
                      "message": line},
        }) + "\n")


def build_parser(stdout: IO[str], prog: str = "python -m verifier",
                 commands: Sequence[str] = COMMANDS) -> RaisingParser:
    """The command line; with ``commands`` only those sub-commands (``main``
    builds just the one named on the command line: importing the others' modules
    costs a whole ``check`` process about 0.03 s)."""
    parser = RaisingParser(
        prog=prog,
        description=(
            "Generate, check, convert, analyse and draw pipeline-parallel schedules "
            "(1F1B, interleaved, zero-bubble, DualPipe, DualPipeV).\n\n"
            "exit codes: 0 ok / VERIFIED, 1 REFUTED, 2 bad input or usage, "
            "3 UNKNOWN (solver limit; never a pass)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=RaisingParser)
    for name in commands:
        mod = importlib.import_module(f"verifier.cli.{name}")
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    help_to(stdout, parser, *sub.choices.values())
    return parser


def _output_failed(e: OSError, stderr: IO[str]) -> int:
    """Writing the output failed (verifier.format.guard.OutputFailed): one line, exit 2."""
    try:
        stderr.write(f"error: {e.strerror}\n")
    except OSError:
        pass
    return EXIT_BAD_INPUT


def run_cli(
    build: Callable[[IO[str]], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace, IO[str], IO[str]], int],
    argv: Sequence[str] | None,
    stdout: IO[str] | None,
    stderr: IO[str] | None,
    *,
    errors: Sequence[tuple[type[BaseException] | tuple, int]] = (
        (InputError, EXIT_BAD_INPUT), (MissingExtra, EXIT_BAD_INPUT)),
    on_broken_pipe: int = EXIT_OK,
) -> int:
    """The body the three command lines share (verifier, reference, fastpath).

    Parses ``argv`` with ``build(stdout)`` (usage errors: one line, exit 2; a
    missing sub-command prints the help, exit 2), then returns ``run(args,
    stdout, stderr)``. An exception listed in ``errors`` becomes one line
    "error: ..." on stderr (its first line) and that exit code; a closed pipe
    (``| head``) exits ``on_broken_pipe``; Ctrl-C prints "interrupted", 130.
    Under ``--format json`` an error is also one JSON object on stdout
    (``report_error``). Error text is escaped and bounded (verifier.format.guard); a
    character stdout cannot encode is written escaped (guard.SafeText).
    Anything else is a bug and keeps its traceback.
    """
    stdout = SafeText(stdout or sys.stdout)
    stderr = SafeText(stderr or sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build(stdout)
    try:
        args, code = parse_command_line(parser, argv, stderr, stdout)
    except OutputFailed as e:  # --help or --version into a full disk
        return _output_failed(e, stderr)
    if args is None:
        return code
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(run(args, stdout, stderr))
    except BrokenPipeError:
        return on_broken_pipe
    except OutputFailed as e:
        return _output_failed(e, stderr)
    except KeyboardInterrupt:
        stderr.write("interrupted\n")
        return 130
    except MemoryError:
        report_error("out of memory; the input is larger than this machine can hold (lower the "
                     "limits: --max-bytes, --max-actions, --max-cells)", EXIT_BAD_INPUT, stderr,
                     stdout if getattr(args, "format", None) == "json" else None,
                     kind="out-of-memory")
        return EXIT_BAD_INPUT
    except Exception as e:
        for types, exit_code in errors:
            if isinstance(e, types):
                text = str(e).strip() or type(e).__name__
                report_error(text, exit_code, stderr,
                             stdout if getattr(args, "format", None) == "json" else None,
                             where=getattr(e, "where", None))
                return exit_code
        raise


def main(
    argv: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    *,
    prog: str = "python -m verifier",
) -> int:
    """``python -m verifier``; ``prog`` is the name the usage line shows."""
    first = list(sys.argv[1:] if argv is None else argv)[:1]
    commands = first if first and first[0] in COMMANDS else COMMANDS
    return run_cli(lambda out: build_parser(out, prog, commands),
                   lambda args, out, err: args._run(args, out, err), argv, stdout, stderr)


def console_main() -> int:
    """The ``ppverify`` console script: the same command line, named ``ppverify``."""
    return main(prog="ppverify")

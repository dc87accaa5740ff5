"""The command line: ``python -m verifier COMMAND ...``.

One dispatcher; each sub-command lives in verifier/commands/<name>.py and
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
from typing import IO, Sequence

from verifier.ir import ScheduleError

COMMANDS = ("check", "generate", "convert", "analyze", "compare", "show")

EXIT_OK, EXIT_REFUTED, EXIT_BAD_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns stdout/stderr."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        if message:
            raise UsageError(message.strip())
        raise _Exit(status)


class _Exit(Exception):
    def __init__(self, status: int):
        self.status = status


def build_parser(stdout: IO[str]) -> _Parser:
    parser = _Parser(
        prog="python -m verifier",
        description=(
            "Generate, check, convert, analyse and draw pipeline-parallel schedules "
            "(1F1B, interleaved, zero-bubble, DualPipe, DualPipeV).\n\n"
            "exit codes: 0 ok / VERIFIED, 1 REFUTED, 2 bad input or usage, "
            "3 UNKNOWN (solver limit; never a pass)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"verifier.commands.{name}")
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    # argparse prints help to sys.stdout; route it to ours.
    parser._print_message = lambda message, file=None: stdout.write(message or "")  # type: ignore
    for action in sub.choices.values():
        action._print_message = lambda message, file=None: stdout.write(message or "")  # type: ignore
    return parser


def main(
    argv: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(stdout)
        args = parser.parse_args(argv)
    except _Exit as e:
        return e.status
    except UsageError as e:
        stderr.write(f"error: {e}\n")
        return EXIT_BAD_INPUT
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args._run(args, stdout, stderr))
    except ScheduleError as e:
        stderr.write(f"error: {e}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # e.g. piped into head
        return EXIT_OK
    except KeyboardInterrupt:
        stderr.write("interrupted\n")
        return 130

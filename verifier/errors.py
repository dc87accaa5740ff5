"""The project's exceptions: one root, ``PpError``, and its families.

What it is: a leaf module (it imports nothing from the project) that every
part of ppverify (verifier/, reference/, fastpath/) takes its exception bases
from, so that ``except PpError`` catches every error the project raises on
purpose and nothing else. The families, and the exit code the command lines
give each:

- ``InputError`` (a ``ValueError``; ``where`` names the file, JSON path,
  "rank R step S" or flag): bad input, exit 2. Below it ``ScheduleError``
  (a schedule, a file's contents, a parameter of the Python API),
  ``FlagError`` (a command-line flag's value) and ``OutputError`` (an output
  file that cannot be written). ``SchemaViolation`` and ``IllFormed`` are the
  validators' internal signals, turned into ``ScheduleError`` or violations
  before they leave the library.
- ``UsageError`` (argparse refused the command line, exit 2) and
  ``ParserExit`` (argparse finished on its own: ``--help``, ``--version``).
- ``OutputFailed`` (an ``OSError``): writing to standard output or error
  failed, exit 2.
- ``verifier.extras.MissingExtra`` (an ``ImportError``): an optional
  dependency is not installed, exit 2 (defined there: its traceback names it).
- ``ExecutorFailure``: an executor could not run a schedule to its end
  (fastpath's ``FastpathError`` family, exit 4/5; the reference executor's
  ``ExecutionError``, exit 1, which is also a ``ScheduleError`` because what
  it finds is a fault of the schedule).
- ``SolverLimit`` (a ``TimeoutError``): a solver's time limit passed inside
  the library (verifier/synth/z3synth.py's encoding); caught there and reported as
  data, never raised to a user.

What it does not cover: how a solver that gives up is reported. The engines
return that as data (``status == "unknown"``, verdict UNKNOWN, exit 3), not
as an exception. Each family's specific subclasses live with the code that
raises them (fastpath/watchdog.py, reference/executor.py, ...).
"""

from __future__ import annotations


class PpError(Exception):
    """Root of every exception ppverify raises on purpose."""


class InputError(PpError, ValueError):
    """Bad input (exit 2). ``where`` names the place: a file, a JSON path,
    "rank R step S" or a flag; ``detail`` is the message without it."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.detail = message
        super().__init__(f"{where}: {message}" if where else message)


class ScheduleError(InputError):
    """A schedule or input file that cannot be used (bad file, bad parameters)."""


class FlagError(InputError):
    """A command-line flag's value that cannot be used; ``where`` names the flag."""


class OutputError(InputError):
    """An output file that cannot be written (checked before any work, or
    failed while writing); ``where`` names the flag and the path."""


class UsageError(PpError):
    """A command line argparse rejected (exit 2)."""


class ParserExit(PpError):
    """argparse finished on its own (``--help``): exit with ``status``."""

    def __init__(self, status: int):
        self.status = status


class OutputFailed(PpError, OSError):
    """Writing to standard output or error failed (a full disk, /dev/full):
    the command line reports it in one line, exit 2."""


class SchemaViolation(PpError):
    """Raised by a compiled validator: ``path`` is a JSON path, ``message`` the fault."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


class IllFormed(PpError):
    """Raised by ``verifier.semantics.tables.Tables`` at the first action that is not well-formed."""


class SolverLimit(PpError, TimeoutError):
    """A solver's limit passed while the library worked for it; caught inside
    the library and turned into an "unknown" answer (data, not an exception)."""


class ExecutorFailure(PpError):
    """An executor could not run a schedule to its end (fastpath's FastpathError)."""


__all__ = [
    "ExecutorFailure",
    "FlagError",
    "IllFormed",
    "InputError",
    "OutputError",
    "OutputFailed",
    "ParserExit",
    "PpError",
    "ScheduleError",
    "SchemaViolation",
    "SolverLimit",
    "UsageError",
]

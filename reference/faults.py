"""The reference executor's faults: what it detects while running a schedule.

What it is: ``ExecutionError`` (an executor failure that is also a
``ScheduleError``: the schedule is at fault) and one subclass per kind of
fault, each with a stable short ``kind`` and the rank and step it happened at.
Raised by reference.machine and reference.executor; re-exported by
reference.executor. Not covered: bad input found before running (plain
``ScheduleError``), failures of fastpath/.
"""

from __future__ import annotations

from verifier.errors import ExecutorFailure
from verifier.ir import ScheduleError, loc


class ExecutionError(ExecutorFailure, ScheduleError):
    """A fault the executor detected while running a schedule (exit code 1 in the
    CLI, unlike plain ``ScheduleError`` = bad input). ``rank`` / ``step`` locate it
    (None when it is about the whole run); ``kind`` is a stable short id. An
    executor failure (verifier.errors) that is also a ``ScheduleError``: the
    schedule is at fault, and callers that refuse bad schedules catch it so."""

    kind = "fault"

    def __init__(self, message: str, rank: int | None = None, step: int | None = None):
        self.rank = rank
        self.step = step
        super().__init__(message, loc(rank, step) if rank is not None and step is not None else None)


class MessageMismatchError(ExecutionError):
    """A send matched (FIFO) with a receive that expects another payload, or an
    unmatched send / receive at the end of the run."""

    kind = "message-mismatch"


class ExactlyOnceError(ExecutionError):
    """A compute run twice, a W without its I, or a missing F / backward."""

    kind = "exactly-once"


class DependencyError(ExecutionError):
    """A compute or send whose data was never produced before it on its rank."""

    kind = "dependency"


class WellFormedError(ExecutionError):
    """An action on the wrong rank, an unknown stage, a micro-batch off its route."""

    kind = "well-formed"


class OverlapError(ExecutionError):
    """An OVERLAP whose halves are not a forward and a backward (B or I)."""

    kind = "overlap-legal"


class BlockedError(ExecutionError):
    """force mode: every unfinished rank waits for something that never comes."""

    kind = "blocked"


class RefutedScheduleError(ExecutionError):
    """The checker refuted the schedule, so there is no witness order to run.
    ``check_result`` is the checker's CheckResult."""

    kind = "refuted"

    def __init__(self, message: str, check_result=None):
        self.check_result = check_result
        super().__init__(message)

"""verifier: the schedule model, generators, lowering, the checker, analysis and the CLI.

Importable without torch. Only verifier.z3engine imports z3.
"""

from verifier.ir import FORMAT_VERSION, Schedule, ScheduleError

__all__ = ["FORMAT_VERSION", "Schedule", "ScheduleError"]

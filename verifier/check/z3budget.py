"""The Z3 engine's size estimate: will ``z3engine.decide`` finish within a
budget? Pure Python, so that ``check --engine auto`` can decide not to use Z3
without importing it (importing z3 costs about 0.1 s of a whole process).
``verifier.check.z3engine`` re-exports everything here.

Not covered: the encoding and the solver (verifier.check.z3engine).
"""

from __future__ import annotations

from verifier.ir import Batch, Compute, Overlap, Schedule
from verifier.semantics import comm

# the communication models the Z3 encoding states (it reads their fields:
# verifier.check.encoding), for the checker to read without importing z3
Z3_MODELS: tuple[str, ...] = comm.NAMES

DEFAULT_RLIMIT = 100_000_000  # DualPipe 16x64 uses ~1.6e6, 16x512 ~1.2e7
DEFAULT_TIMEOUT_MS = 60_000
# fits_budget: measured on the generators (sat, 2 shared cores) at ~40 rlimit
# units and 40-80 us of wall time per constraint, all included (1f1b 32x512:
# 479k constraints, 19.7 s, rlimit 1.9e7); the size estimate runs up to 1.5x high.
SECONDS_PER_CONSTRAINT = 60e-6
RLIMIT_PER_CONSTRAINT = 40
BUDGET_SHARE = 0.75  # of the timeout a schedule may be expected to use


def fits_budget(
    schedule: Schedule,
    *,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    rlimit: int = DEFAULT_RLIMIT,
) -> bool:
    """True when decide() is expected to finish within the budget (the defaults
    unless given): a size estimate, linear in the schedule, no encoding.

    About 6 constraints per action and 5 per communication op (2 per compute
    when the schedule is compute-only and will be lowered), at
    ``SECONDS_PER_CONSTRAINT`` against ``BUDGET_SHARE`` of the timeout and at
    ``RLIMIT_PER_CONSTRAINT`` against the rlimit (0: unlimited). With the
    defaults, about 750k estimated constraints (DualPipe 16 ranks x 1024).
    """
    limit_s = BUDGET_SHARE * timeout_ms / 1000
    if 6 * schedule.num_actions * SECONDS_PER_CONSTRAINT > limit_s:
        return False  # at least 6 per action: too big without counting further
    n = estimated_constraints(schedule)
    fits_time = n * SECONDS_PER_CONSTRAINT <= BUDGET_SHARE * timeout_ms / 1000
    return fits_time and (rlimit == 0 or n * RLIMIT_PER_CONSTRAINT <= rlimit)


def estimated_constraints(schedule: Schedule) -> int:
    """The size estimate behind ``fits_budget`` (see there)."""
    n_comp = n_comm = 0
    for acts in schedule.actions:  # counted per action: no object per op
        for a in acts:
            if isinstance(a, Compute):
                n_comp += 1
            elif isinstance(a, Overlap):
                n_comp += 2
            elif isinstance(a, Batch):
                n_comm += len(a.ops)
            else:
                n_comm += 1
    if n_comm == 0:  # compute-only: the lowering adds about one op per compute
        return 6 * (schedule.num_actions + n_comp) + 5 * 2 * n_comp
    return 6 * schedule.num_actions + 5 * n_comm

"""What really ran: the trace file, measured idle time, and the predicted bubble beside it.

What it is:

- ``trace_schedule(schedule, job_result)``: a pp-schedule whose actions are,
  per rank, the actions that rank executed, in the order it executed them, and
  whose ``params["trace"]`` holds the timing: per rank and step
  ``[start, end, blocked]`` in seconds from the first step of any rank
  (``blocked``: time inside the step spent waiting for communication), the
  clock used and the backend. ``python -m verifier check`` and ``analyze``
  read it like any schedule.
- ``measured_idle(job_result)``: per rank, the makespan minus the time spent
  computing (each compute step's duration minus its blocked time).
- ``predicted_bubble(schedule, job_result)``: ``verifier.analysis.timeline`` on the same
  schedule with costs calibrated from this run (mean measured F, B, I, W
  seconds), so predicted and measured idle are in the same unit.

Clock: ``time.perf_counter`` (CLOCK_MONOTONIC on Linux), the same clock for
every process on one machine; across machines the timestamps would not be
comparable (not covered). On CUDA the times are when the host issued the work,
not when the device ran it (not covered: device-side event timing).
"""

from __future__ import annotations

from statistics import mean

from verifier.analysis.timeline import analyze
from verifier.analysis.costs import CostModel, complete
from verifier.ir import Compute, ComputeKind, Overlap, Schedule, computes_of


def _origin(job_result) -> float:
    return min((r.timeline[0].start for r in job_result.ranks if r.timeline), default=0.0)


def trace_schedule(schedule: Schedule, job_result, backend: str = "gloo") -> Schedule:
    t0 = _origin(job_result)
    times = []
    actions = []
    for r, res in enumerate(job_result.ranks):
        actions.append(list(res.executed))
        times.append([
            [round(x.start - t0, 9), round(x.end - t0, 9), round(x.blocked, 9)]
            for x in res.timeline
        ])
    params = dict(schedule.params)
    params["trace"] = {
        "clock": "seconds since the first step of any rank (time.perf_counter, host)",
        "backend": backend,
        "step_times": "per rank, per executed step: [start, end, blocked]",
        "times": times,
    }
    return schedule.with_actions(actions, params=params,
                                 name=(schedule.name + " (trace)").strip())


def measured_idle(job_result, schedule: Schedule) -> list[tuple[float, float]]:
    """Per rank (busy seconds, idle seconds) over the run's makespan."""
    t0 = _origin(job_result)
    t_end = max((r.timeline[-1].end for r in job_result.ranks if r.timeline), default=t0)
    span = t_end - t0
    out = []
    for r, res in enumerate(job_result.ranks):
        busy = 0.0
        for a, x in zip(schedule.actions[r], res.timeline):
            if computes_of(a):
                busy += max(0.0, x.end - x.start - x.blocked)
        out.append((busy, span - busy))
    return out


def measured_costs(job_result, schedule: Schedule) -> dict[str, float]:
    """Mean seconds per compute kind (single computes only; OVERLAP as FB / FI)."""
    acc: dict[str, list[float]] = {}
    for r, res in enumerate(job_result.ranks):
        for a, x in zip(schedule.actions[r], res.timeline):
            d = max(0.0, x.end - x.start - x.blocked)
            if isinstance(a, Compute):
                acc.setdefault(a.kind.value, []).append(d)
            elif isinstance(a, Overlap):
                key = "FB" if a.b.kind is ComputeKind.B else "FI"
                acc.setdefault(key, []).append(d)
    return {k: mean(v) for k, v in acc.items() if v}


def predicted_bubble(schedule: Schedule, job_result, comm_model: str = "nccl"):
    """(makespan, [bubble per rank]) predicted by verifier.analysis.timeline in seconds, or
    None when the analysis rejects the costs or finds the
    schedule deadlocks under ``comm_model``."""
    m = measured_costs(job_result, schedule)
    given: dict[str, float] = {"F": m.get("F", 1e-6)}
    if "I" in m and "W" in m:
        given["I"], given["W"] = m["I"], m["W"]
    elif "B" in m:
        given["B"] = m["B"]
    for k in ("FB", "FI"):
        if k in m:
            given[k] = m[k]
    try:
        costs = CostModel(default=complete(given), given=given)
    except ValueError:
        given.pop("FB", None)
        given.pop("FI", None)
        costs = CostModel(default=complete(given), given=given)
    a = analyze(schedule, costs, comm_model)
    if a.deadlocked:  # not runnable under that model: no prediction, not a partial one
        return None
    return a.makespan, [x.bubble for x in a.ranks]

"""Synthesis: the search for a least-makespan order, and the emitted schedule.

What it is: ``search(problem, time_limit)`` runs the incumbents of
verifier.synth.synthesis and then a bisection of solver calls
(verifier.synth.z3synth.feasible, "dataflow makespan <= T?"): SAT lowers the best
found to the decoded order's makespan, UNSAT raises the proved lower bound to
T + 1 (scaled units), unknown (timeout or rlimit) stops with the gap. The
first lower bound is verifier.synth.synthesis.trivial_lower_bound (no solver).
``emit(problem, outcome, costs)`` turns the best order into a schedule with
communication, checks it under ``nccl`` (verifier.check.checker) and times it with
``analyze`` under ``nccl``; OPTIMAL is claimed only when the proved bound
equals that measured makespan.

Two ways to add the communication, the better measured one is written:
``lowering`` (verifier.semantics.lowering.lower, the shared rule) and ``timed`` (same
global message order idea, but the order is the dataflow timing of the found
schedule and every receive is posted as soon as its message is produced, in
the gap after the receiving rank's last compute that ends by then). Under
``nccl`` a rank's messages complete in post order, so a receive posted late
holds up the sender's later messages; ``timed`` posts every op of message m
by m's production time, so with comm = 0 each message completes when
produced and the replay equals the dataflow timing (induction over messages
in that global order).

Not covered: the encoding (verifier.synth.z3synth), the command's text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from verifier.analysis.timeline import analyze
from verifier.check.checker import check
from verifier.analysis.costs import CostModel
from verifier.ir import Batch, Comm, CommKind, Compute, Schedule
from verifier.semantics.lowering import lower
from verifier.synth.synthesis import Problem, evaluate, incumbents, to_schedule, trivial_lower_bound


@dataclass(frozen=True)
class Call:
    T: int
    status: str
    seconds: float
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    problem: Problem
    lower: int  # proved lower bound (scaled)
    lower_source: str
    best: int  # dataflow makespan of ``orders`` (scaled)
    best_source: str
    orders: tuple[tuple[int, ...], ...]
    calls: tuple[Call, ...]
    incumbents: tuple[tuple[str, int], ...]
    seconds: float
    timed_out: bool
    emitted: "Emitted | None" = None  # the incumbent's emission, when ``orders`` is it

    @property
    def proved(self) -> bool:
        return self.lower >= self.best


def search(pb: Problem, time_limit: float, rlimit: int = 0, progress=None,
           costs: CostModel | None = None) -> Outcome:
    """With ``costs``, the best incumbent is emitted first and the solver's
    deadline leaves twice that emission's time, so that emitting an improved
    order still ends within ``time_limit`` (the command's promise)."""
    t0 = time.monotonic()
    deadline = t0 + max(0.0, time_limit)
    incs = incumbents(pb)  # the sequential order always meets a feasible cap
    best = incs[0]
    ub, orders, ub_src = best.makespan, best.orders, f"incumbent {best.source}"
    first = None
    if costs is not None:
        t_emit = time.monotonic()
        first = emit(pb, orders, costs)
        deadline -= 2 * (time.monotonic() - t_emit)
    lb, lb_src = trivial_lower_bound(pb), "trivial bound (longest chain / per-rank work)"
    calls: list[Call] = []
    timed_out = False
    while lb < ub:
        left = deadline - time.monotonic()
        if left <= 0.05:
            timed_out = True
            break
        T = (lb + ub - 1) // 2
        # deferred: the only import of z3 here (~0.2 s); searches that never call the solver skip it
        from verifier.synth.z3synth import feasible

        a = feasible(pb, T, int(left * 1000), rlimit, deadline)
        calls.append(Call(T, a.status, a.seconds, a.reason))
        if progress:
            progress(f"T={T / pb.scale:g}: {a.status} ({a.seconds:.2f} s)")
        if a.status == "sat":
            ub, orders, ub_src = a.makespan, a.orders, "z3"
        elif a.status == "unsat":
            lb, lb_src = T + 1, f"z3 UNSAT at makespan <= {T / pb.scale:g}"
        else:
            timed_out = True
            break
    return Outcome(pb, lb, lb_src, ub, ub_src, orders, tuple(calls),
                   tuple((i.source, i.makespan) for i in incs),
                   time.monotonic() - t0, timed_out,
                   first if orders is best.orders else None)


# ------------------------------------------------------------ emission ---
def timed_lowering(pb: Problem, orders) -> Schedule:
    """Communication by the dataflow timing of ``orders`` (module docstring)."""
    mk, start = evaluate(pb, orders)  # type: ignore[misc]
    s = to_schedule(pb, orders)
    end = {j: start[j] + pb.jobs[j].dur for j in range(len(pb.jobs))}
    msgs = []  # (produced at, producer rank, position, send op, recv op, src, dst)
    for r, order in enumerate(orders):
        for pos, j in enumerate(order):
            job = pb.jobs[j]
            if job.kind == "F":
                nxt = s.next_stage(job.stage)
                if nxt is not None and s.rank_of(nxt) != r:
                    msgs.append((end[j], r, pos, Comm(CommKind.SEND_F, job.stage, job.mb),
                                 Comm(CommKind.RECV_F, nxt, job.mb), r, s.rank_of(nxt)))
            elif job.kind in ("B", "I"):
                prv = s.prev_stage(job.stage)
                if prv is not None and s.rank_of(prv) != r:
                    msgs.append((end[j], r, pos, Comm(CommKind.SEND_B, job.stage, job.mb),
                                 Comm(CommKind.RECV_B, prv, job.mb), r, s.rank_of(prv)))
    msgs.sort(key=lambda x: x[:3])
    bk = "I" if pb.split else "B"

    def consumer(op: Comm) -> tuple[str, int, int]:
        return ("F" if op.kind is CommKind.RECV_F else bk, op.stage, op.mb)

    gaps: list[dict[int, list[Comm]]] = [{} for _ in orders]
    for t, r, pos, snd, rcv, src, dst in msgs:
        gaps[src].setdefault(pos + 1, []).append(snd)
        # the receiving rank: after its last compute that ends by t (a
        # zero-length one only if it ends before t), never after the consumer
        k = 0
        for q, j in enumerate(orders[dst]):
            job = pb.jobs[j]
            if (job.kind, job.stage, job.mb) == consumer(rcv):
                break
            if end[j] < t or (end[j] == t and job.dur > 0):
                k = q + 1
            else:
                break
        gaps[dst].setdefault(k, []).append(rcv)
    acts = []
    for r, order in enumerate(orders):
        row: list = []
        for q in range(len(order) + 1):
            if q in gaps[r]:
                row.append(Batch(tuple(gaps[r][q]), wait=False))
            if q < len(order):
                j = order[q]
                row.append(s.actions[r][q])
                assert isinstance(row[-1], Compute) and row[-1].stage == pb.jobs[j].stage
        acts.append(tuple(row))
    return s.with_actions(tuple(acts))


@dataclass(frozen=True)
class Emitted:
    schedule: Schedule  # with communication
    communication: str  # lowering | timed
    makespan: float  # analyze, nccl
    verdict: str  # check, nccl
    peak: float
    candidates: tuple[tuple[str, float, str], ...] = field(default=())


def emit(pb: Problem, orders, costs: CostModel) -> Emitted:
    """Both communication placements, each checked and timed; the best VERIFIED one."""

    compute_only = to_schedule(pb, orders)
    cands = []
    for name, make in (("lowering", lambda: lower(compute_only)),
                       ("timed", lambda: timed_lowering(pb, orders))):
        sched = make()
        res = check(sched, "nccl", "graph", pb.memory_limit)
        a = analyze(sched, costs, "nccl")
        ok = res.verdict.value == "VERIFIED" and not a.deadlocked
        cands.append((name, sched, a.makespan if ok else float("inf"), res.verdict.value,
                      max(res.peaks, default=0.0)))
    cands.sort(key=lambda c: (c[2], c[0] != "lowering"))
    name, sched, mk, verdict, peak = cands[0]
    return Emitted(sched, name, mk, verdict, peak,
                   tuple((c[0], c[2], c[3]) for c in cands))

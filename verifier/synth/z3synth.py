"""The synthesis solver: "is there a schedule with dataflow makespan <= T?" in Z3.

This is the second and only other module of verifier/ that imports z3 (the
first is verifier.check.z3engine, the checker's encoding). Synthesis is a different
question (find an order, not judge one), so it has its own encoding; keeping
every z3 call of synthesis here leaves the problem statement, incumbents,
decoding and the command z3-free (verifier.synth.synthesis,
verifier.cli.synthesize).

The encoding of ``feasible(pb, T)`` for a verifier.synth.synthesis.Problem, all
times scaled integers, is time-indexed and purely Boolean (z3's QF_FD
solver: SAT with cardinality constraints), written as SMT-LIB text
(``smtlib``) and parsed by z3 (the Python API is ten times slower to build):

- ``S{j}_{t}``: job j has started by time t, for t in its window
  ``[head_j, T - dur_j - tail_j)`` (head/tail: the dependency chains before
  and after it; outside the window the literal is a constant, so every job
  ends by T); monotone in t;
- dependencies: j started by t implies its input i started by
  ``t - dur_i - lag`` (lag = comm across ranks);
- one job at a time per rank: ``R{j}_{t}`` is implied when j runs at t
  (started by t, not by t - dur_j); at most one per rank and t;
- memory (with a cap K): at every t, the forwards started by t minus the
  backwards (B or I) started before t is at most K (verifier.semantics.memory's
  program-order rule; see ``_memory`` for why they agree; needs I > 0);
- symmetry breaking: micro-batches of one route are interchangeable (a
  relabelling maps any schedule onto one of equal makespan and memory), so
  the first stage of each route runs its forwards in micro-batch order. No
  other symmetry is broken (mirrored directions are not).

SAT gives a start per job; sorting each rank's jobs by start (zero-length
jobs first at a tie, then dependency order) gives the orders, re-timed by
verifier.synth.synthesis.evaluate (at most T, or this module raises). UNSAT proves
no order has dataflow makespan <= T. Each call has a wall-clock timeout (the
check runs in a daemon thread abandoned at the limit, since z3 notices its
own timeout late) and an optional deterministic rlimit; hitting either is
``unknown``, never a proof.

Not covered: overlapped F&B pairs (see verifier.synth.synthesis for when they are
dominated), the communication placement (verifier.semantics.lowering).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import z3

from verifier.errors import SolverLimit
from verifier.synth.synthesis import Problem, evaluate, heads_tails, peak_memory, topo_order


@dataclass(frozen=True)
class Answer:
    status: str  # sat | unsat | unknown
    orders: tuple[tuple[int, ...], ...] | None = None
    makespan: int | None = None  # dataflow makespan of orders (<= T)
    reason: str = ""
    seconds: float = 0.0


def _reach(pb: Problem) -> list[int]:
    """reach[j]: bitset of the jobs that (transitively) depend on j."""
    n = len(pb.jobs)
    succ: list[list[int]] = [[] for _ in range(n)]
    for j in range(n):
        for i, _ in pb.preds[j]:
            succ[i].append(j)
    reach = [0] * n
    for j in reversed(topo_order(pb)):
        b = 0
        for k in succ[j]:
            b |= (1 << k) | reach[k]
        reach[j] = b
    return reach


def _static(pb: Problem):
    """head, tail and reach of ``pb``, computed once per problem."""
    got = pb.__dict__.get("_synth_static")
    if got is None:
        head, tail = heads_tails(pb)
        got = (head, tail, _reach(pb))
        object.__setattr__(pb, "_synth_static", got)
    return got


PARSE_SECONDS_PER_CHAR = 3e-7  # z3 parsing the text, measured ~2.3e-7 on 2 loaded cores


def _windows(pb: Problem, T: int) -> tuple[list[int], list[int]]:
    head, tail, _ = _static(pb)
    return head, [T - pb.jobs[j].dur - tail[j] for j in range(len(pb.jobs))]


def feasible(pb: Problem, T: int, timeout_ms: int, rlimit: int = 0,
             deadline: float | None = None) -> Answer:
    """Is there an order per rank within the cap with dataflow makespan <= T?

    ``deadline`` (time.monotonic) stops the encoding itself when it passes.
    The system is written as SMT-LIB text (``smtlib``) and parsed by z3."""
    t0 = time.monotonic()
    est, lst = _windows(pb, T)
    if any(lst[j] < est[j] for j in range(len(pb.jobs))):
        return Answer("unsat", reason="a dependency chain is longer than T",
                      seconds=time.monotonic() - t0)
    try:
        text = smtlib(pb, T, est, lst, deadline)
    except SolverLimit:
        return Answer("unknown", reason="time limit (while encoding)",
                      seconds=time.monotonic() - t0)
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= PARSE_SECONDS_PER_CHAR * len(text):  # z3's parser cannot be interrupted
            return Answer("unknown", reason="time limit (while encoding)",
                          seconds=time.monotonic() - t0)
        timeout_ms = min(timeout_ms, int(1000 * left))
    ctx = z3.Context()
    sol = z3.SolverFor("QF_FD", ctx=ctx)
    sol.set("timeout", max(1, int(timeout_ms)))
    if rlimit:
        sol.set("rlimit", int(rlimit))
    # z3 checks its timeout only now and then (a second or more late under
    # load, e.g. while it preprocesses the cardinality constraints): the check
    # runs in a daemon thread, abandoned (and its context interrupted) at the
    # wall-clock limit, so the caller always gets its answer in time
    box: list = []

    def work() -> None:
        try:
            sol.from_string(text)
            box.append(sol.check())
        except z3.Z3Exception as e:  # interrupted
            box.append(e)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    th.join(max(0.001, timeout_ms / 1000))
    if th.is_alive():
        ctx.interrupt()
        return Answer("unknown", reason="timeout (abandoned)", seconds=time.monotonic() - t0)
    res = box[0]
    if isinstance(res, z3.Z3Exception):
        return Answer("unknown", reason=f"interrupted: {res}", seconds=time.monotonic() - t0)
    secs = time.monotonic() - t0
    if res == z3.unknown:
        return Answer("unknown", reason=sol.reason_unknown(), seconds=secs)
    if res == z3.unsat:
        return Answer("unsat", seconds=secs)
    m = sol.model()
    start = []
    for j in range(len(pb.jobs)):  # S{j}_t is monotone in t: binary search its first true
        lo, hi = est[j], lst[j]  # the answer lies in [lo, hi]; at lst it is true
        while lo < hi:
            mid = (lo + hi) // 2
            if z3.is_true(m.eval(z3.Bool(f"S{j}_{mid}", ctx), model_completion=True)):
                hi = mid
            else:
                lo = mid + 1
        start.append(lo)
    jobs = pb.jobs
    topo = {j: k for k, j in enumerate(topo_order(pb))}
    orders = tuple(tuple(sorted(js, key=lambda j: (start[j], jobs[j].dur > 0, topo[j])))
                   for js in pb.rank_jobs)
    ev = evaluate(pb, orders)
    if ev is None or ev[0] > T or (pb.memory_limit is not None
                                   and peak_memory(pb, orders) > pb.memory_limit):
        raise AssertionError(f"synth_z3: the decoded orders break the model (T={T}, "
                             f"makespan {ev and ev[0]})")
    return Answer("sat", orders, ev[0], seconds=secs)


def smtlib(pb: Problem, T: int, est: list[int], lst: list[int],
           deadline: float | None = None) -> str:
    """The system for bound T as SMT-LIB text (Booleans, at-most, pble).

    S{j}_{t}: job j has started by time t, for t in [est_j, lst_j); before
    est_j it is false, from lst_j on true (so every job ends by T)."""
    jobs = pb.jobs
    n = len(jobs)
    out: list[str] = []
    w = out.append

    def started(j: int, t: int) -> str:
        if t < est[j]:
            return "false"
        if t >= lst[j]:
            return "true"
        return f"S{j}_{t}"

    for j in range(n):
        for t in range(est[j], lst[j]):
            w(f"(declare-const S{j}_{t} Bool)")
    sym = [(c[k], c[k + 1]) for c in pb.first_stage_chains for k in range(len(c) - 1)]
    for j in range(n):
        for t in range(est[j], lst[j] - 1):
            w(f"(assert (=> S{j}_{t} S{j}_{t + 1}))")
        before = [(i, jobs[i].dur + lag) for i, lag in pb.preds[j]]
        before += [(a, jobs[a].dur) for a, b in sym if b == j]
        for t in range(est[j], lst[j]):
            for i, gap in before:
                b = started(i, t - gap)
                if b == "false":
                    w(f"(assert (not S{j}_{t}))")
                elif b != "true":
                    w(f"(assert (=> S{j}_{t} {b}))")
    def in_time() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise SolverLimit("time limit (while encoding)")

    in_time()
    for js in pb.rank_jobs:  # one job at a time per rank
        in_time()
        running: dict[int, list[str]] = {}
        for j in js:
            d = jobs[j].dur
            if d == 0:
                continue
            for t in range(est[j], lst[j] + d):
                a, b = started(j, t), started(j, t - d)
                if a == "false" or b == "true":
                    continue
                lit = f"R{j}_{t}"
                w(f"(declare-const {lit} Bool)")
                cond = a if b == "false" else (f"(not {b})" if a == "true"
                                               else f"(and {a} (not {b}))")
                w(f"(assert (=> {cond} {lit}))")
                running.setdefault(t, []).append(lit)
        for t, lits in running.items():
            if len(lits) > 1:
                w(f"(assert ((_ at-most 1) {' '.join(lits)}))")
    in_time()
    _energy(pb, w, started, T, est, lst)
    in_time()
    if pb.memory_limit is not None:
        _memory(pb, w, started, T)
    in_time()
    return "\n".join(out)


def _energy(pb: Problem, w, started, T: int, est: list[int], lst: list[int]) -> None:
    """Redundant (implied) work cuts, per rank and time t: the work of the jobs
    not started by t fits between t and T (less the least tail among them);
    the work of the jobs started by t - dur (so done by t) fits before t.
    They follow from one-job-at-a-time and the windows; they only help z3
    prove UNSAT sooner."""
    _, tail, _ = _static(pb)
    for js in pb.rank_jobs:
        first = min(est[j] for j in js)
        for t in range(first + 1, T):
            lits, total = [], 0
            for j in js:
                d = pb.jobs[j].dur
                v = started(j, t - 1)  # not started by t-1: starts at t or later
                if d == 0 or v == "true":
                    continue
                if v == "false":
                    total += d
                else:
                    lits.append((f"(not {v})", d))
            if lits:
                least_tail = min(tail[j] for j in js)
                cap = T - t - least_tail - total
                if cap < sum(d for _, d in lits):
                    w(_pble(lits, cap))
            lits, total = [], 0
            for j in js:
                d = pb.jobs[j].dur
                v = started(j, t - d)  # done by t
                if d == 0 or v == "false":
                    continue
                if v == "true":
                    total += d
                else:
                    lits.append((v, d))
            if lits:
                cap = t - first - total
                if cap < sum(d for _, d in lits):
                    w(_pble(lits, cap))


def _pble(lits: list[tuple[str, int]], bound: int) -> str:
    if bound < 0:
        return "(assert false)"
    ws = " ".join(str(d) for _, d in lits)  # z3's indices: the bound, then the weights
    return f"(assert ((_ pble {bound} {ws}) {' '.join(x for x, _ in lits)}))"


def _memory(pb: Problem, w, started, T: int) -> None:
    """At every time t: forwards started by t minus backwards (B or I) started
    before t is at most K. Equal to the program-order rule: on one rank the
    jobs run one at a time, F and B/I have positive durations, so "started
    before t" is "earlier in the rank's order" for a forward starting at t, and
    between two forward starts the count only falls."""
    K = pb.memory_limit
    for js in pb.rank_jobs:
        fs = [j for j in js if pb.jobs[j].kind == "F"]
        if len(fs) <= K:
            continue
        frees = [j for j in js if pb.jobs[j].kind in ("B", "I")]
        for t in range(T + 1):
            lits, bound = [], K
            for x in fs:
                v = started(x, t)
                if v == "true":
                    bound -= 1
                elif v != "false":
                    lits.append(v)
            for z in frees:  # - started(z, t-1) = not(started) - 1
                v = started(z, t - 1)
                if v == "true":
                    bound += 1
                elif v != "false":
                    lits.append(f"(not {v})")
                    bound += 1
            if bound < 0:
                w("(assert false)")
            elif len(lits) > bound:
                w(f"(assert ((_ at-most {bound}) {' '.join(lits)}))")

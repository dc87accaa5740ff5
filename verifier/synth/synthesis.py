"""Schedule synthesis, the solver-free part: the problem, its timing, incumbents.

What it is: the statement of ``python -m verifier synthesize`` as data. For a
placement (``linear``: 1F1B/ZB-H1's one stage per rank; ``v``: ZB-V/DualPipeV;
``bidirectional``: DualPipe's two mirrored routes, half the micro-batches
each; ``looped``: interleaved, two stages per rank round-robin) and M
micro-batches, the *jobs* are one F per (stage, micro-batch) and one B
(``split=False``) or one I and one W (``split=True``). A candidate schedule is
one order of its jobs per rank. Its *dataflow time* is the as-soon-as-possible
execution of those orders: a job starts when the previous job of its rank ends
and its inputs exist; an input produced on another rank exists ``comm`` (the
sending stage's cost) after its producer ends. Memory is the rule of
verifier.semantics.memory (program order, F adds one, B or I frees one).

Why dataflow time is a lower bound on ``analyze``: under either communication
model a message completes no earlier than its send is posted plus ``comm``, and
the send is posted after its producer ends; so for every placement of the
communication around these compute orders, every compute of the replay starts
no earlier than in the dataflow time (induction over the jobs in time order).
The least dataflow makespan over all orders within the memory cap is therefore
a lower bound for every schedule of this placement built from these jobs. It
also covers, by dominance (each replaced by something at least as fast with
the same memory in program order):
- a B where ``split=True`` (I immediately followed by W ends no later, and
  its I frees the activation at the same program point);
- an OVERLAP(F, B) or OVERLAP(F, I) when FB >= F + B and FI >= F + I (F then
  B in sequence ends no later, needs B's inputs later, same memory).
It does not cover overlapped pairs when FB < F + B (not encoded: synthesize
refuses that combination), other placements, or unequal micro-batches.

The emitted schedule is the lowered compute order (verifier.semantics.lowering); its
``analyze`` makespan under ``nccl`` can exceed the dataflow makespan (in-order
comm streams; comm > 0; lowering's unit-cost message order). The command
measures it and reports OPTIMAL only when the two agree.

Costs are made integers (``scale``: the least common denominator of their
decimal forms), so makespans are integers and "below T" means "<= T - 1".

Not covered here: the solver (verifier.synth.z3synth), the command line
(verifier.cli.synthesize).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from verifier.analysis.costs import CostModel
from verifier.generators import _common, generate
from verifier.ir import Compute, ComputeKind, Schedule, ScheduleError, computes_of

PLACEMENTS = ("linear", "v", "bidirectional", "looped")
# the families whose compute orders serve as incumbents, per placement
FAMILIES_OF = {
    "linear": ("1f1b", "zb-h1", "gpipe"),
    "v": ("zbv", "dualpipev"),
    "bidirectional": ("dualpipe",),
    "looped": ("interleaved-1f1b",),
}
MAX_SCALE = 10**6


@dataclass(frozen=True, slots=True)
class Job:
    kind: str  # F, B, I, W
    stage: int
    mb: int
    rank: int
    dur: int  # scaled integer duration


@dataclass(frozen=True)
class Problem:
    num_ranks: int
    num_microbatches: int
    placement: str
    split: bool
    memory_limit: int | None
    scale: int
    skeleton: Schedule  # the placement, no actions
    jobs: tuple[Job, ...]
    preds: tuple[tuple[tuple[int, int], ...], ...]  # per job: (pred job, lag)
    rank_jobs: tuple[tuple[int, ...], ...]
    first_stage_chains: tuple[tuple[int, ...], ...]  # F jobs of a route's first stage, by mb

    @property
    def least_memory(self) -> int:
        return least_feasible_memory(self.skeleton)

    def index(self, kind: str, stage: int, mb: int) -> int:
        return self._index[(kind, stage, mb)]

    @property
    def _index(self) -> dict:
        d = self.__dict__.get("_idx")
        if d is None:
            d = {(j.kind, j.stage, j.mb): i for i, j in enumerate(self.jobs)}
            object.__setattr__(self, "_idx", d)
        return d


def skeleton(placement: str, P: int, M: int) -> Schedule:
    if placement not in PLACEMENTS:
        raise ScheduleError(f"unknown placement {placement!r}; choose {', '.join(PLACEMENTS)}")
    if placement == "bidirectional" and M < 2:
        raise ScheduleError(f"placement bidirectional needs --microbatches >= 2, got {M}")
    lay = {"linear": lambda: _common.linear_placement(P, M),
           "v": lambda: _common.v_placement(P, M),
           "bidirectional": lambda: _common.dualpipe_placement(P, M),
           "looped": lambda: _common.interleaved_placement(P, M, 2)}[placement]()
    stages, routes = lay
    return Schedule(num_ranks=P, num_microbatches=M, stages=stages, routes=routes,
                    actions=tuple(() for _ in range(P)), name=f"synthesized {placement}",
                    family="synthesized",
                    params={"num_ranks": P, "num_microbatches": M, "placement": placement})


def least_feasible_memory(s: Schedule) -> int:
    """The least cap any schedule of this placement meets: on each rank, the
    stages of one route it holds (a micro-batch's earlier activation there is
    still live when its later forward there starts). One micro-batch at a
    time through the whole pipeline meets it."""
    best = 1
    for route in s.routes:
        per: dict[int, int] = {}
        for st in route.stages:
            r = s.rank_of(st)
            per[r] = per.get(r, 0) + 1
        best = max(best, max(per.values()))
    return best


def cost_scale(costs: CostModel, stages: Sequence[int], split: bool) -> int:
    keys = ("F", "I", "W", "comm") if split else ("F", "B", "comm")
    den = 1
    for st in stages:
        c = costs.of(st)
        for k in keys:
            q = Fraction(repr(float(getattr(c, k))))
            den = den * q.denominator // math.gcd(den, q.denominator)
    if den > MAX_SCALE:
        raise ScheduleError(f"costs need a common denominator of {den} (> {MAX_SCALE}); "
                            "give them with at most 6 decimals", "--costs")
    return den


def make_problem(P: int, M: int, placement: str, costs: CostModel, split: bool,
                 memory_limit: int | None) -> Problem:
    s = skeleton(placement, P, M)
    scale = cost_scale(costs, [st.id for st in s.stages], split)

    def q(x: float) -> int:
        return int(Fraction(repr(float(x))) * scale)

    kinds = ("F", "I", "W") if split else ("F", "B")
    jobs: list[Job] = []
    idx: dict = {}
    for route in s.routes:
        for m in route.microbatches:
            for st in route.stages:
                c = costs.of(st)
                for k in kinds:
                    idx[(k, st, m)] = len(jobs)
                    jobs.append(Job(k, st, m, s.rank_of(st), q(getattr(c, k))))
    bk = "I" if split else "B"
    preds: list[tuple] = []
    for j in jobs:
        p: list[tuple[int, int]] = []

        def dep(kind: str, st: int) -> None:
            i = idx[(kind, st, j.mb)]
            cross = jobs[i].rank != j.rank
            p.append((i, q(costs.of(st).comm) if cross else 0))

        if j.kind == "F":
            prev = s.prev_stage(j.stage)
            if prev is not None:
                dep("F", prev)
        elif j.kind == "W":
            dep("I", j.stage)
        else:
            dep("F", j.stage)
            nxt = s.next_stage(j.stage)
            if nxt is not None:
                dep(bk, nxt)
        preds.append(tuple(p))
    rank_jobs = tuple(tuple(i for i, j in enumerate(jobs) if j.rank == r) for r in range(P))
    chains = tuple(tuple(idx[("F", route.stages[0], m)] for m in route.microbatches)
                   for route in s.routes)
    return Problem(P, M, placement, split, memory_limit, scale, s, tuple(jobs),
                   tuple(preds), rank_jobs, chains)


# ----------------------------------------------------------------- timing ---
def evaluate(pb: Problem, orders: Sequence[Sequence[int]]) -> tuple[int, list[int]] | None:
    """(makespan, start per job) of the dataflow execution of ``orders``, or
    None when the orders deadlock (a cycle of waits). Scaled integer times."""
    n = len(pb.jobs)
    end: list[int | None] = [None] * n
    start = [0] * n
    pos = [0] * pb.num_ranks
    free = [0] * pb.num_ranks
    done, progressed = 0, True
    while progressed:
        progressed = False
        for r, order in enumerate(orders):
            while pos[r] < len(order):
                j = order[pos[r]]
                t = free[r]
                ok = True
                for i, lag in pb.preds[j]:
                    e = end[i]
                    if e is None:
                        ok = False
                        break
                    t = max(t, e + lag)
                if not ok:
                    break
                start[j] = t
                end[j] = free[r] = t + pb.jobs[j].dur
                pos[r] += 1
                done += 1
                progressed = True
    if done != n:
        return None
    return max(free), start


def peak_memory(pb: Problem, orders: Sequence[Sequence[int]]) -> int:
    peak = 0
    for order in orders:
        live = 0
        for j in order:
            k = pb.jobs[j].kind
            if k == "F":
                live += 1
                peak = max(peak, live)
            elif k in ("B", "I"):
                live -= 1
    return peak


def valid_orders(pb: Problem, orders: Sequence[Sequence[int]]) -> bool:
    return all(sorted(o) == list(pb.rank_jobs[r]) for r, o in enumerate(orders))


def topo_order(pb: Problem) -> list[int]:
    """The jobs in an order where every job follows its inputs."""
    n = len(pb.jobs)
    indeg = [len(p) for p in pb.preds]
    succ: list[list[int]] = [[] for _ in range(n)]
    for j in range(n):
        for i, _ in pb.preds[j]:
            succ[i].append(j)
    out = [j for j in range(n) if indeg[j] == 0]
    for j in out:  # grows while iterating
        for k in succ[j]:
            indeg[k] -= 1
            if indeg[k] == 0:
                out.append(k)
    return out


def heads_tails(pb: Problem) -> tuple[list[int], list[int]]:
    """head[j]: the earliest start of j by its dependency chains alone;
    tail[j]: the least time from j's end to the end of everything after it."""
    n = len(pb.jobs)
    topo = topo_order(pb)
    head = [0] * n
    succ: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for j in topo:
        for i, lag in pb.preds[j]:
            head[j] = max(head[j], head[i] + pb.jobs[i].dur + lag)
            succ[i].append((j, lag))
    tail = [0] * n
    for j in reversed(topo):
        tail[j] = max((lag + pb.jobs[k].dur + tail[k] for k, lag in succ[j]), default=0)
    return head, tail


def trivial_lower_bound(pb: Problem) -> int:
    """max(longest dependency chain; per rank: its earliest possible start +
    its work + the least time after its last job): a bound for every order."""
    head, tail = heads_tails(pb)
    lb = max(head[j] + pb.jobs[j].dur + tail[j] for j in range(len(pb.jobs)))
    for js in pb.rank_jobs:
        work = sum(pb.jobs[j].dur for j in js)
        lb = max(lb, min(head[j] for j in js) + work + min(tail[j] for j in js))
    return lb


# ------------------------------------------------------------- incumbents ---
def orders_of_schedule(pb: Problem, s: Schedule) -> list[list[int]] | None:
    """A generated compute order as job orders of ``pb`` (OVERLAP as F then its
    backward; B as I, W when split; I as B and W dropped when not), or None
    when it does not map onto the same jobs."""
    out: list[list[int]] = []
    try:
        for acts in s.actions:
            o: list[int] = []
            for a in acts:
                for c in computes_of(a):
                    k = c.kind.value
                    if k == "B" and pb.split:
                        o += [pb.index("I", c.stage, c.mb), pb.index("W", c.stage, c.mb)]
                    elif k == "I" and not pb.split:
                        o.append(pb.index("B", c.stage, c.mb))
                    elif k == "W" and not pb.split:
                        continue
                    else:
                        o.append(pb.index(k, c.stage, c.mb))
            out.append(o)
    except KeyError:
        return None
    return out if valid_orders(pb, out) else None


def sequential_orders(pb: Problem) -> list[list[int]]:
    """One micro-batch at a time through the pipeline: meets the least cap."""
    res: list[list[int]] = [[] for _ in range(pb.num_ranks)]
    for route in pb.skeleton.routes:
        for m in route.microbatches:
            seq = [pb.index("F", st, m) for st in route.stages]
            for st in reversed(route.stages):
                if pb.split:
                    seq += [pb.index("I", st, m), pb.index("W", st, m)]
                else:
                    seq.append(pb.index("B", st, m))
            for j in seq:
                res[pb.jobs[j].rank].append(j)
    return res


def greedy_orders(pb: Problem, prefer_backward: bool = True) -> list[list[int]] | None:
    """List scheduling: repeatedly run, over all ranks, the ready job that can
    start earliest (ties: backward first or forward first, then lower
    micro-batch). Under a memory cap a forward also reserves the slots of the
    later stages of its micro-batch on the same rank (a V's way back), so a
    rank never fills up with activations whose way back has no room. None if
    it still paints itself into a corner."""
    n = len(pb.jobs)
    s = pb.skeleton
    later: dict[int, int] = {}  # stage -> later stages of its route on the same rank
    for route in s.routes:
        for k, st in enumerate(route.stages):
            later[st] = sum(1 for x in route.stages[k + 1:] if s.rank_of(x) == s.rank_of(st))
    first = {}  # stage -> True if no earlier stage of its route is on the same rank
    for route in s.routes:
        for k, st in enumerate(route.stages):
            first[st] = all(s.rank_of(x) != s.rank_of(st) for x in route.stages[:k])
    end: list[int | None] = [None] * n
    free = [0] * pb.num_ranks
    committed = [0] * pb.num_ranks  # live activations + reserved slots
    # Only jobs whose inputs have all finished are scanned (a scan over every
    # job left made this quadratic: 16 s for v 8x64, bench_synthesize.py).
    waiting = [len(pb.preds[j]) for j in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for j in range(n):
        for i, _ in pb.preds[j]:
            succs[i].append(j)
    ready: list[set[int]] = [set() for _ in range(pb.num_ranks)]
    for j in range(n):
        if not waiting[j]:
            ready[pb.jobs[j].rank].add(j)
    orders: list[list[int]] = [[] for _ in range(pb.num_ranks)]
    cap = pb.memory_limit
    pref = {"B": 0, "I": 0, "W": 2, "F": 1} if prefer_backward else \
        {"F": 0, "B": 1, "I": 1, "W": 2}
    for _ in range(n):
        best = None
        for r in range(pb.num_ranks):
            for j in ready[r]:
                job = pb.jobs[j]
                if (job.kind == "F" and cap is not None and first[job.stage]
                        and committed[r] + 1 + later[job.stage] > cap):
                    continue
                t = max([free[r]] + [end[i] + lag for i, lag in pb.preds[j]])
                key = (t, pref[job.kind], job.mb, r, j)
                if best is None or key < best:
                    best = key
        if best is None:
            return None
        t, _, _, r, j = best
        end[j] = free[r] = t + pb.jobs[j].dur
        ready[r].discard(j)
        for k in succs[j]:
            waiting[k] -= 1
            if not waiting[k]:
                ready[pb.jobs[k].rank].add(k)
        orders[r].append(j)
        job = pb.jobs[j]
        if job.kind == "F" and first[job.stage]:
            committed[r] += 1 + later[job.stage]
        elif job.kind in ("B", "I"):
            committed[r] -= 1
    return orders


@dataclass(frozen=True)
class Incumbent:
    source: str
    orders: tuple[tuple[int, ...], ...]
    makespan: int


def incumbents(pb: Problem) -> list[Incumbent]:
    """Every starting schedule that meets the cap, best first."""
    cands: list[tuple[str, list[list[int]] | None]] = []
    for fam in FAMILIES_OF[pb.placement]:
        try:
            s = generate(fam, pb.num_ranks, pb.num_microbatches, compute_only=True)
        except ScheduleError:
            continue
        if s.stages != pb.skeleton.stages or s.routes != pb.skeleton.routes:
            continue
        cands.append((fam, orders_of_schedule(pb, s)))
    cands.append(("greedy (backward first)", greedy_orders(pb, True)))
    cands.append(("greedy (forward first)", greedy_orders(pb, False)))
    cands.append(("sequential", sequential_orders(pb)))
    out = []
    for name, o in cands:
        if o is None:
            continue
        if pb.memory_limit is not None and peak_memory(pb, o) > pb.memory_limit:
            continue
        ev = evaluate(pb, o)
        if ev is not None:
            out.append(Incumbent(name, tuple(tuple(x) for x in o), ev[0]))
    out.sort(key=lambda x: x.makespan)
    return out


def to_schedule(pb: Problem, orders: Sequence[Sequence[int]]) -> Schedule:
    """The compute-only schedule of ``orders`` (lower it to add communication)."""
    acts = tuple(tuple(Compute(ComputeKind(pb.jobs[j].kind), pb.jobs[j].stage, pb.jobs[j].mb)
                       for j in o) for o in orders)
    return pb.skeleton.with_actions(acts)

"""Timeline analysis: the as-soon-as-possible (ASAP) execution of a schedule.

What it is: a discrete-event replay of specs/SEMANTICS.md under a cost model
(verifier.costs) and a communication model (``eager`` or ``nccl``). Every
action starts at the earliest time the semantics allow:

- a rank's step starts when the previous step has returned; a compute also
  waits for its inputs (the local producer's end, or the completion of its own
  receive), then runs for its cost; an ``OVERLAP`` runs both halves at once
  for the FB (or FI) cost;
- communication ops are posted at the time the program reaches them (posting
  takes no time); a ``Batch(wait=True)`` returns when all its ops complete;
- ``nccl``: a rank's communication units (a plain op, or a whole batch) become
  active in post order, each once posted and once the previous unit completed;
  a send and its matched receive complete together at
  ``max(active(send unit), active(recv unit)) + comm`` (comm = the cost of the
  sending stage); a unit completes when all its ops have;
- ``eager``: a send completes when posted; a receive at
  ``max(its post, the send's post + comm)``.

Messages are matched FIFO per ordered rank pair (SEMANTICS.md). A
compute-only schedule is lowered first (verifier.lowering.lower).

Results (frozen dataclasses): the timeline (every compute span, every message
with post/active/complete times), the makespan, per-rank busy time (the sum of
its compute spans; an OVERLAP counts once, for its FB cost) and bubble
(makespan - busy), the bubble ratio (total bubble / (ranks * makespan)), the
critical path (the chain of computes and messages that determines the
makespan, found by following each event's latest input), the order in which
steps begin (a witness order of SEMANTICS.md, for verifier.certificate), peak live
activations per rank (verifier.memory, program order) and parameter copies per
rank. If the replay gets stuck, the result says ``deadlocked`` and lists, per
stuck rank, the step and what it waits for.

Not covered: correctness (the checker decides it; a schedule that fails
``dependencies`` or ``message-matching`` is timed as written, FIFO matching and
all, which is what hardware would do), bandwidth contention, kernel launch
overheads, compute/comm interference.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Mapping

from verifier.costs import DEFAULT, CostModel
from verifier.ir import (
    Action,
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    Schedule,
    ScheduleError,
    loc,
)
from verifier.memory import peak_activations

COMM_MODELS = ("nccl", "eager")

_F, _B, _I, _W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W
_RECV_F, _RECV_B = CommKind.RECV_F, CommKind.RECV_B


# ---------------------------------------------------------------- results ---
@dataclass(frozen=True, slots=True)
class ComputeSpan:
    """One compute action (Compute or Overlap) on the timeline."""

    rank: int
    step: int
    action: Action
    start: float
    end: float

    @property
    def kind(self) -> str:
        """'F', 'B', 'I', 'W', or 'FB' / 'FI' for an OVERLAP."""
        a = self.action
        if isinstance(a, Overlap):
            return "F" + a.b.kind.value
        return a.kind.value


@dataclass(frozen=True, slots=True)
class Message:
    """A matched send/receive pair (``recv_*`` None when it never matched)."""

    id: int
    src: int
    dst: int
    send_step: int
    send: Comm
    recv_step: int
    recv: Comm
    send_post: float
    recv_post: float
    start: float  # nccl: both units active; eager: send posted
    end: float  # completion (the receive's data is there)
    latency: float  # the comm cost charged to this message


@dataclass(frozen=True, slots=True)
class PathItem:
    """One link of the critical path: a compute or a message."""

    what: str  # "compute" | "message"
    rank: int  # compute: its rank; message: the receiving rank
    step: int
    label: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Stuck:
    """Where a deadlocked replay stopped: the rank, step, action and the wait."""

    rank: int
    step: int
    action: str
    waits_for: str

    def __str__(self) -> str:
        return f"{loc(self.rank, self.step)}: {self.action} waits for {self.waits_for}"


@dataclass(frozen=True, slots=True)
class RankMetrics:
    rank: int
    busy: float
    bubble: float
    end: float
    peak_activations: float
    stages: int
    param_copies: float


@dataclass(frozen=True)
class Analysis:
    name: str
    family: str
    num_ranks: int
    num_microbatches: int
    comm_model: str
    costs: Mapping[str, object]
    deadlocked: bool
    stuck: tuple[Stuck, ...]
    makespan: float
    ranks: tuple[RankMetrics, ...]
    bubble_ratio: float
    critical_path: tuple[PathItem, ...]
    computes: tuple[ComputeSpan, ...] = field(repr=False)
    messages: tuple[Message, ...] = field(repr=False)
    # every (rank, step) in the order the steps begin in the timeline (ties in
    # causal order): a witness order of SEMANTICS.md; empty when deadlocked
    order: tuple[tuple[int, int], ...] = field(repr=False, default=())

    @property
    def max_bubble(self) -> float:
        return max((r.bubble for r in self.ranks), default=0.0)

    def to_json(self, timeline: bool = False) -> dict:
        """The stable JSON form (documented in `analyze --help`)."""
        out: dict = {
            "schema": "pp-analysis/1",
            "name": self.name,
            "family": self.family,
            "num_ranks": self.num_ranks,
            "num_microbatches": self.num_microbatches,
            "comm_model": self.comm_model,
            "costs": dict(self.costs),
            "deadlocked": self.deadlocked,
            "stuck": [
                {"rank": s.rank, "step": s.step, "action": s.action, "waits_for": s.waits_for}
                for s in self.stuck
            ],
            "makespan": self.makespan,
            "bubble_ratio": self.bubble_ratio,
            "max_bubble": self.max_bubble,
            "ranks": [
                {
                    "rank": r.rank,
                    "busy": r.busy,
                    "bubble": r.bubble,
                    "end": r.end,
                    "peak_activations": r.peak_activations,
                    "stages": r.stages,
                    "param_copies": r.param_copies,
                }
                for r in self.ranks
            ],
            "critical_path": [
                {
                    "what": p.what,
                    "rank": p.rank,
                    "step": p.step,
                    "label": p.label,
                    "start": p.start,
                    "end": p.end,
                }
                for p in self.critical_path
            ],
        }
        if timeline:
            out["timeline"] = [
                {"rank": c.rank, "step": c.step, "kind": c.kind, "label": label_of(c.action),
                 "start": c.start, "end": c.end}
                for c in self.computes
            ]
        return out


def label_of(a: Action) -> str:
    """Short text for an action: ``F s0 m3``, ``F s0 m3 & B s7 m1``."""
    if isinstance(a, Compute):
        return f"{a.kind.value} s{a.stage} m{a.mb}"
    if isinstance(a, Overlap):
        return f"{label_of(a.f)} & {label_of(a.b)}"
    if isinstance(a, Comm):
        return f"{a.kind.value} s{a.stage} m{a.mb}"
    return "BATCH[" + ", ".join(label_of(o) for o in a.ops) + "]"


# ------------------------------------------------------------ the replay ---
def _validate(s: Schedule) -> None:
    """The minimum the replay needs; the checker reports everything else."""
    known = s.stage_by_id
    for r, acts in enumerate(s.actions):
        for k, a in enumerate(acts):
            ops = (a,) if isinstance(a, (Compute, Comm)) else (
                a.computes if isinstance(a, Overlap) else a.ops)
            for c in ops:
                if c.stage not in known or c.stage not in s._route_pos:
                    raise ScheduleError(
                        f"{c} names a stage that is not on any route; analyze needs a "
                        "well-formed schedule (run `check`)", loc(r, k))
                if isinstance(c, Comm) and s.peer_of(c) is None:
                    raise ScheduleError(
                        f"{c} has no peer (its route ends there); analyze needs a "
                        "well-formed schedule (run `check`)", loc(r, k))


def analyze(
    s: Schedule, costs: CostModel = DEFAULT, comm_model: str = "nccl"
) -> Analysis:
    """The ASAP timeline and its metrics (see the module docstring)."""
    if comm_model not in COMM_MODELS:
        raise ScheduleError(
            f"unknown communication model {comm_model!r}; choose nccl or eager")
    if s.is_compute_only and any(s.actions):
        from verifier.lowering import lower

        s = lower(s)
    _validate(s)
    return _Replay(s, costs, comm_model).run()


class _Replay:
    def __init__(self, s: Schedule, costs: CostModel, comm_model: str):
        self.s = s
        self.costs = costs
        self.nccl = comm_model == "nccl"
        self.comm_model = comm_model
        R = s.num_ranks
        self.R = R
        self.pc = [0] * R
        self.t = [0.0] * R  # return time of the previous step
        self.posted = [-1] * R  # last step whose comm ops are posted
        self.ret: list[list[float]] = [[0.0] * len(a) for a in s.actions]
        # cause of each step's return: ('s', r, k) | ('o', op) | ('u', unit) | None
        self.cause: list[list[object]] = [[None] * len(a) for a in s.actions]
        self.spans: list[ComputeSpan] = []
        # (begin time, rank, step) in processing order, which is causal
        self.begins: list[tuple[float, int, int]] = []
        # data events: key -> (time, (rank, step))
        self.done: dict[tuple, tuple[float, int, int]] = {}
        self.recv_of: dict[tuple, int] = {}
        self.waiters: dict[object, list[int]] = {}
        # ops
        self.op_rank: list[int] = []
        self.op_step: list[int] = []
        self.op_comm: list[Comm] = []
        self.op_unit: list[int] = []
        self.op_post: list[float] = []
        self.op_peer: list[int] = []
        self.op_done: list[float | None] = []
        self.op_cause: list[object] = []
        self.op_lat: list[float] = []
        # units
        self.u_rank: list[int] = []
        self.u_step: list[int] = []
        self.u_ops: list[list[int]] = []
        self.u_post: list[float] = []
        self.u_active: list[float | None] = []
        self.u_acause: list[object] = []
        self.u_left: list[int] = []
        self.u_done: list[float | None] = []
        self.u_dcause: list[object] = []
        self.units: list[list[int]] = [[] for _ in range(R)]
        self.sptr = [0] * R
        self.chan_send: dict[tuple[int, int], list[int]] = {}
        self.chan_recv: dict[tuple[int, int], list[int]] = {}
        self._unit_at: dict[tuple[int, int], int] = {}
        self.work: deque[int] = deque(range(R))
        self.queued = [True] * R + [False] * R
        # per-stage cost lookups
        self.dur: dict[tuple[str, int], float] = {}
        for st in s.stages:
            c = costs.of(st.id)
            for k in ("F", "B", "I", "W", "FB", "FI", "comm"):
                self.dur[(k, st.id)] = getattr(c, k)

    # -- scheduling helpers -------------------------------------------------
    def _wake(self, key) -> None:
        ws = self.waiters.pop(key, None)
        if ws:
            for r in ws:
                if not self.queued[r]:
                    self.queued[r] = True
                    self.work.append(r)

    def _block(self, r: int, key) -> None:
        self.waiters.setdefault(key, []).append(r)

    def _kick_stream(self, r: int) -> None:
        i = self.R + r
        if not self.queued[i]:
            self.queued[i] = True
            self.work.append(i)

    # -- the program of one rank -------------------------------------------
    def _dep(self, r: int, c: Compute):
        """(key, kind) pairs the compute waits on: ('d', key) or ('o', recv key)."""
        s = self.s
        st, m = c.stage, c.mb
        out = []
        if c.kind is _F:
            p = s.prev_stage(st)
            if p is not None:
                if s.rank_of(p) == r:
                    out.append(("d", ("F", p, m)))
                else:
                    out.append(("o", (r, _RECV_F, st, m)))
        elif c.kind is _W:
            out.append(("d", ("I", st, m)))
        else:
            out.append(("d", ("F", st, m)))
            n = s.next_stage(st)
            if n is not None:
                if s.rank_of(n) == r:
                    out.append(("d", ("b", n, m)))
                else:
                    out.append(("o", (r, _RECV_B, st, m)))
        return out

    def _run_program(self, r: int) -> None:
        acts = self.s.actions[r]
        n = len(acts)
        k = self.pc[r]
        t = self.t[r]
        done = self.done
        while k < n:
            a = acts[k]
            if isinstance(a, (Compute, Overlap)):
                cs = (a,) if isinstance(a, Compute) else (a.f, a.b)
                start = t
                cause = ("s", r, k - 1) if k else None
                for c in cs:
                    for typ, key in self._dep(r, c):
                        if typ == "d":
                            v = done.get(key)
                            if v is None:
                                self._block(r, key)
                                self.pc[r], self.t[r] = k, t
                                return
                            if v[0] > start:
                                start, cause = v[0], ("s", v[1], v[2])
                        else:
                            op = self.recv_of.get(key)
                            if op is None:
                                self._block(r, ("post",) + key)
                                self.pc[r], self.t[r] = k, t
                                return
                            v = self.op_done[op]
                            if v is None:
                                self._block(r, ("o", op))
                                self.pc[r], self.t[r] = k, t
                                return
                            if v > start:
                                start, cause = v, ("o", op)
                if isinstance(a, Compute):
                    end = start + self.dur[(a.kind.value, a.stage)]
                else:
                    kk = "FB" if a.b.kind is _B else "FI"
                    end = start + 0.5 * (self.dur[(kk, a.f.stage)] + self.dur[(kk, a.b.stage)])
                self.spans.append(ComputeSpan(r, k, a, start, end))
                self.begins.append((start, r, k))
                self.ret[r][k] = end
                self.cause[r][k] = cause
                for c in cs:
                    if c.kind is _F:
                        key = ("F", c.stage, c.mb)
                        done[key] = (end, r, k)
                        self._wake(key)
                    elif c.kind is not _W:
                        key = ("b", c.stage, c.mb)
                        done[key] = (end, r, k)
                        self._wake(key)
                        if c.kind is _I:
                            key = ("I", c.stage, c.mb)
                            done[key] = (end, r, k)
                            self._wake(key)
                t = end
            else:
                if self.posted[r] < k:
                    self.posted[r] = k
                    self.begins.append((t, r, k))
                    u = self._post(r, k, a, t)
                else:
                    u = self._unit_at[(r, k)]
                if isinstance(a, Batch) and a.wait and u is not None:
                    d = self.u_done[u]
                    if d is None:
                        self._block(r, ("u", u))
                        self.pc[r], self.t[r] = k, t
                        return
                    if d > t:
                        t = d
                        self.cause[r][k] = ("u", u)
                    else:
                        self.cause[r][k] = ("s", r, k - 1) if k else None
                else:
                    self.cause[r][k] = ("s", r, k - 1) if k else None
                self.ret[r][k] = t
            k += 1
        self.pc[r], self.t[r] = k, t

    # -- communication --------------------------------------------------------
    def _post(self, r: int, k: int, a: Action, t: float) -> int | None:
        s = self.s
        ops = (a,) if isinstance(a, Comm) else a.ops
        u = len(self.u_rank)
        self.u_rank.append(r)
        self.u_step.append(k)
        self.u_post.append(t)
        self.u_active.append(None)
        self.u_acause.append(None)
        self.u_left.append(len(ops))
        self.u_done.append(None)
        self.u_dcause.append(None)
        ids = []
        for c in ops:
            i = len(self.op_rank)
            ids.append(i)
            self.op_rank.append(r)
            self.op_step.append(k)
            self.op_comm.append(c)
            self.op_unit.append(u)
            self.op_post.append(t)
            self.op_peer.append(-1)
            self.op_done.append(None)
            self.op_cause.append(None)
            peer = s.peer_of(c)
            if c.kind.is_send:
                self.op_lat.append(self.dur[("comm", c.stage)])
                chan = self.chan_send.setdefault((r, peer), [])
                other = self.chan_recv.get((r, peer))
            else:
                self.op_lat.append(0.0)
                chan = self.chan_recv.setdefault((peer, r), [])
                other = self.chan_send.get((peer, r))
                key = (r, c.kind, c.stage, c.mb)
                if key not in self.recv_of:
                    self.recv_of[key] = i
                    self._wake(("post",) + key)
            idx = len(chan)
            chan.append(i)
            if other is not None and len(other) > idx:
                j = other[idx]
                self.op_peer[i] = j
                self.op_peer[j] = i
        self.u_ops.append(ids)
        self._unit_at[(r, k)] = u
        if self.nccl:
            self.units[r].append(u)
            self._kick_stream(r)
        else:
            for i in ids:
                c = self.op_comm[i]
                if c.kind.is_send:
                    self._complete(i, t, ("s", r, k - 1) if k else None)
                j = self.op_peer[i]
                if j >= 0:
                    snd, rcv = (i, j) if c.kind.is_send else (j, i)
                    if self.op_done[rcv] is None:
                        arrive = self.op_post[snd] + self.op_lat[snd]
                        if self.op_post[rcv] >= arrive:
                            kr = self.op_step[rcv]
                            cause = ("s", self.op_rank[rcv], kr - 1) if kr else None
                            self._complete(rcv, self.op_post[rcv], cause)
                        else:
                            self._complete(rcv, arrive, ("o", snd))
            if not ids:
                self.u_done[u] = t
        return u

    def _complete(self, i: int, t: float, cause) -> None:
        self.op_done[i] = t
        self.op_cause[i] = cause
        self._wake(("o", i))
        u = self.op_unit[i]
        self.u_left[u] -= 1
        if self.u_left[u] == 0:
            best, bc = -1.0, None
            for j in self.u_ops[u]:
                if self.op_done[j] > best:
                    best, bc = self.op_done[j], ("o", j)
            self.u_done[u] = best
            self.u_dcause[u] = bc
            self._wake(("u", u))
            if self.nccl:
                self._kick_stream(self.u_rank[u])

    def _run_stream(self, r: int) -> None:
        units = self.units[r]
        while self.sptr[r] < len(units):
            i = self.sptr[r]
            u = units[i]
            if self.u_active[u] is None:
                t = self.u_post[u]
                k = self.u_step[u]
                cause = ("s", r, k - 1) if k else None
                if i:
                    pu = units[i - 1]
                    if self.u_done[pu] > t:
                        t, cause = self.u_done[pu], ("ud", pu)
                self.u_active[u] = t
                self.u_acause[u] = cause
                if not self.u_ops[u]:
                    self.u_done[u] = t
                    self._wake(("u", u))
                for op in self.u_ops[u]:
                    j = self.op_peer[op]
                    if j < 0 or self.op_done[op] is not None:
                        continue
                    pu = self.op_unit[j]
                    pa = self.u_active[pu]
                    if pa is None:
                        continue
                    snd = op if self.op_comm[op].kind.is_send else j
                    if pa > t:
                        when, cause = pa, ("ua", pu)
                    else:
                        when, cause = t, ("ua", u)
                    when += self.op_lat[snd]
                    self._complete(op, when, cause)
                    self._complete(j, when, cause)
            if self.u_done[u] is None:
                return
            self.sptr[r] += 1

    # -- driver ---------------------------------------------------------------
    def run(self) -> Analysis:
        R = self.R
        work = self.work
        while work:
            i = work.popleft()
            self.queued[i] = False
            if i < R:
                self._run_program(i)
            else:
                self._run_stream(i - R)
        return self._result()

    # -- results --------------------------------------------------------------
    def _event_time(self, ev) -> float:
        if ev is None:
            return 0.0
        tag = ev[0]
        if tag == "s":
            return self.ret[ev[1]][ev[2]]
        if tag == "o":
            return self.op_done[ev[1]]
        if tag == "ua":
            return self.u_active[ev[1]]
        if tag == "ud" or tag == "u":
            return self.u_done[ev[1]]
        raise AssertionError(ev)

    def _event_cause(self, ev):
        tag = ev[0]
        if tag == "s":
            return self.cause[ev[1]][ev[2]]
        if tag == "o":
            return self.op_cause[ev[1]]
        if tag == "ua":
            return self.u_acause[ev[1]]
        return self.u_dcause[ev[1]]

    def _critical_path(self, last) -> tuple[PathItem, ...]:
        items: list[PathItem] = []
        ev = last
        seen = 0
        limit = 4 * (sum(len(a) for a in self.s.actions) + len(self.op_rank)) + 10
        span_at = self._span_at
        while ev is not None and seen < limit:
            seen += 1
            tag = ev[0]
            if tag == "s" and ev[2] >= 0:
                sp = span_at.get((ev[1], ev[2]))
                if sp is not None:
                    items.append(PathItem("compute", sp.rank, sp.step, label_of(sp.action),
                                          sp.start, sp.end))
            elif tag == "o":
                i = ev[1]
                j = self.op_peer[i]
                c = self.op_comm[i]
                snd, rcv = (i, j) if c.kind.is_send else (j, i)
                if snd >= 0 and rcv >= 0:
                    sc = self.op_comm[snd]
                    items.append(PathItem(
                        "message", self.op_rank[rcv], self.op_step[rcv],
                        f"message {sc.kind.value[5:]} s{sc.stage} m{sc.mb}: "
                        f"{loc(self.op_rank[snd], self.op_step[snd])} -> "
                        f"{loc(self.op_rank[rcv], self.op_step[rcv])}",
                        self._event_time(self.op_cause[i]) if self.op_cause[i] else 0.0,
                        self.op_done[i]))
            if tag == "s" and ev[2] < 0:
                break
            ev = self._event_cause(ev)
        items.reverse()
        # drop consecutive duplicates (both ops of a pair can be on the path)
        out: list[PathItem] = []
        for it in items:
            if not out or (out[-1].label, out[-1].rank, out[-1].step) != (it.label, it.rank, it.step):
                out.append(it)
        return tuple(out)

    def _stuck(self) -> tuple[Stuck, ...]:
        s = self.s
        out: list[Stuck] = []
        for r in range(self.R):
            k = self.pc[r]
            if k >= len(s.actions[r]):
                continue
            a = s.actions[r][k]
            out.append(Stuck(r, k, str(a), self._why(r, k, a)))
        if self.nccl:
            for r in range(self.R):
                if self.sptr[r] < len(self.units[r]):
                    u = self.units[r][self.sptr[r]]
                    for op in self.u_ops[u]:
                        if self.op_done[op] is None:
                            out.append(Stuck(r, self.u_step[u], f"comm stream: {self.op_comm[op]}",
                                             self._why_op(op)))
                            break
        else:
            for op, d in enumerate(self.op_done):
                if d is None and self.op_peer[op] < 0:
                    out.append(Stuck(self.op_rank[op], self.op_step[op], str(self.op_comm[op]),
                                     self._why_op(op)))
        # messages posted by finished programs that never matched
        for op, d in enumerate(self.op_done):
            if d is None and self.op_peer[op] < 0 and self.pc[self.op_rank[op]] >= len(
                    s.actions[self.op_rank[op]]) and self.nccl:
                if not any(x.rank == self.op_rank[op] and x.step == self.op_step[op] for x in out):
                    out.append(Stuck(self.op_rank[op], self.op_step[op], str(self.op_comm[op]),
                                     self._why_op(op)))
        return tuple(out)

    def _why_op(self, op: int) -> str:
        c = self.op_comm[op]
        peer = self.s.peer_of(c)
        j = self.op_peer[op]
        if j < 0:
            want = self.s.matching_op(c)
            return (f"rank {peer} to post its matching op (expected {want}); "
                    f"rank {peer} never posts it before it blocks or ends")
        pu = self.op_unit[j]
        pr = self.u_rank[pu]
        if self.u_active[pu] is None:
            return (f"its peer {self.op_comm[j]} ({loc(pr, self.op_step[j])}), queued on "
                    f"rank {pr}'s comm stream behind an earlier unit that cannot complete")
        return f"its peer {self.op_comm[j]} ({loc(pr, self.op_step[j])})"

    def _why(self, r: int, k: int, a: Action) -> str:
        if isinstance(a, (Compute, Overlap)):
            cs = (a,) if isinstance(a, Compute) else (a.f, a.b)
            for c in cs:
                for typ, key in self._dep(r, c):
                    if typ == "d":
                        if key not in self.done:
                            kind = {"F": "F", "b": "B/I", "I": "I"}[key[0]]
                            return f"{kind}(stage {key[1]}, mb {key[2]}) which never finishes"
                    else:
                        op = self.recv_of.get(key)
                        if op is None:
                            return (f"{key[1].value}(stage {key[2]}, mb {key[3]}) which rank "
                                    f"{r} has not posted before step {k}")
                        if self.op_done[op] is None:
                            return (f"{key[1].value}(stage {key[2]}, mb {key[3]}) "
                                    f"({loc(r, self.op_step[op])}) to complete: waits for "
                                    + self._why_op(op))
            return "its inputs"
        u = self._unit_at.get((r, k))
        if u is not None:
            for op in self.u_ops[u]:
                if self.op_done[op] is None:
                    return f"{self.op_comm[op]} to complete: waits for " + self._why_op(op)
        return "its batch to complete"

    def _result(self) -> Analysis:
        s = self.s
        R = self.R
        spans = tuple(sorted(self.spans, key=lambda x: (x.rank, x.step)))
        self._span_at = {(x.rank, x.step): x for x in spans}
        finished = all(self.pc[r] >= len(s.actions[r]) for r in range(R))
        incomplete = any(d is None for d in self.op_done)
        deadlocked = not finished or incomplete
        stuck = self._stuck() if deadlocked else ()
        busy = [0.0] * R
        for x in spans:
            busy[x.rank] += x.end - x.start
        rank_end = [0.0] * R
        for r in range(R):
            if self.ret[r]:
                rank_end[r] = max(self.ret[r])
        last_ev = None
        makespan = 0.0
        for r in range(R):
            for k, v in enumerate(self.ret[r]):
                if k < self.pc[r] and v > makespan:
                    makespan, last_ev = v, ("s", r, k)
        for i, d in enumerate(self.op_done):
            if d is not None:
                rr = self.op_rank[i]
                if d > rank_end[rr]:
                    rank_end[rr] = d
                if d > makespan:
                    makespan, last_ev = d, ("o", i)
        peaks = peak_activations(s)
        share = len(s.layers) / R if s.layers else 1.0
        ranks = tuple(
            RankMetrics(
                rank=r,
                busy=busy[r],
                bubble=makespan - busy[r],
                end=rank_end[r],
                peak_activations=peaks[r],
                stages=len(s.stages_on_rank[r]),
                param_copies=len({s.layer_of(x) for x in s.stages_on_rank[r]}) / share,
            )
            for r in range(R)
        )
        total_bubble = sum(x.bubble for x in ranks)
        ratio = total_bubble / (R * makespan) if makespan > 0 else 0.0
        path = self._critical_path(last_ev) if not deadlocked and last_ev else ()
        messages = []
        for i in range(len(self.op_rank)):
            c = self.op_comm[i]
            j = self.op_peer[i]
            if not c.kind.is_send or j < 0 or self.op_done[i] is None:
                continue
            if self.nccl:
                st = max(self.u_active[self.op_unit[i]], self.u_active[self.op_unit[j]])
            else:
                st = self.op_post[i]
            messages.append(Message(
                id=len(messages), src=self.op_rank[i], dst=self.op_rank[j],
                send_step=self.op_step[i], send=c, recv_step=self.op_step[j],
                recv=self.op_comm[j], send_post=self.op_post[i], recv_post=self.op_post[j],
                start=st, end=self.op_done[j], latency=self.op_lat[i]))
        return Analysis(
            name=s.name,
            family=s.family,
            num_ranks=R,
            num_microbatches=s.num_microbatches,
            comm_model=self.comm_model,
            costs=self.costs.as_dict(),
            deadlocked=deadlocked,
            stuck=stuck,
            makespan=makespan,
            ranks=ranks,
            bubble_ratio=ratio,
            critical_path=path,
            computes=spans,
            messages=tuple(messages),
            order=() if deadlocked else tuple(
                (r, k) for _, r, k in sorted(self.begins, key=lambda x: x[0])),
        )


# ------------------------------------------------------ published numbers ---
def published_bubble(family: str, num_ranks: int, costs: CostModel = DEFAULT) -> float | None:
    """The bubble formula of the DualPipe README table for ``family``.

    PP is the number of pipeline stages of one micro-batch's route: ranks for
    1F1B and ZB1P (our zb-h1), ranks for DualPipe, 2 x ranks for DualPipeV.
    None for families the table does not list.
    """
    c = costs.default
    if family == "1f1b":
        return (num_ranks - 1) * (c.F + c.B)
    if family == "zb-h1":
        return (num_ranks - 1) * (c.F + c.B - 2 * c.W)
    if family == "dualpipe":
        return (num_ranks / 2 - 1) * (c.FB + c.B - 3 * c.W)
    if family == "dualpipev":
        return (num_ranks - 1) * (c.FB + c.B - 3 * c.W)
    return None

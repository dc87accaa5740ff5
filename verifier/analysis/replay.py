"""The discrete-event engine behind verifier.analysis.timeline (its module docstring
states the timing rules; SEMANTICS.md the semantics).

What it is: one pass over the schedule builds static tables (the FIFO pairing
of every send with its receive, each compute's input events and duration, the
communication units of each rank), then a worklist replay assigns every event
its earliest time: a rank's program advances until it needs an event that has
not happened yet and parks on it; the event wakes it. Events are small
integers: the end of F / of B-or-I / of I for each (stage, micro-batch), each
op's completion, each unit's completion, and NEVER (an input no action of the
schedule provides). ``run()`` returns an ``Analysis``.

Not covered: metrics definitions and the published formulas (verifier.analysis.timeline).
"""

from __future__ import annotations

from collections import deque

from verifier.results.analysis import (
    Analysis,
    ComputeSpan,
    Message,
    PathItem,
    RankMetrics,
    Stuck,
    label_of,
)
from verifier.analysis.costs import CostModel
from verifier.ir import (
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    Schedule,
    ScheduleError,
    loc,
    op_text,
)
from verifier.semantics.memory import peak_activations

_F, _B, _I, _W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W
_SENDS = (CommKind.SEND_F, CommKind.SEND_B)
_PREV = -1  # cause: the previous step of the same rank
_NONE = -2  # cause: time zero


class Replay:
    def __init__(self, s: Schedule, costs: CostModel, comm_model: str):
        self.s = s
        self.costs = costs
        self.comm_model = comm_model
        self.nccl = comm_model == "nccl"
        R = s.num_ranks
        self.R = R
        M = s.num_microbatches
        sidx = {st.id: i for i, st in enumerate(s.stages)}
        self.sidx = sidx
        S = len(s.stages)
        SM = S * M
        self.SM = SM
        # ---- static tables: ops and units
        op_comm: list[Comm] = []
        op_rank: list[int] = []
        op_step: list[int] = []
        op_unit: list[int] = []
        op_lat: list[float] = []
        u_rank: list[int] = []
        u_step: list[int] = []
        u_ops: list[list[int]] = []
        units: list[list[int]] = [[] for _ in range(R)]
        unit_at: list[dict[int, int]] = [{} for _ in range(R)]
        sends: dict[tuple[int, int], list[int]] = {}
        recvs: dict[tuple[int, int], list[int]] = {}
        recv_at: dict[tuple, int] = {}
        peer_cache: dict[tuple, int] = {}
        lat = {st.id: costs.of(st.id).comm for st in s.stages}
        route_pos = s._route_pos
        for r, acts in enumerate(s.actions):
            for k, a in enumerate(acts):
                ta = type(a)
                if ta is Comm:
                    ops = (a,)
                elif ta is Batch:
                    ops = a.ops
                else:
                    continue
                u = len(u_rank)
                u_rank.append(r)
                u_step.append(k)
                units[r].append(u)
                unit_at[r][k] = u
                ids = []
                for c in ops:
                    i = len(op_comm)
                    ids.append(i)
                    op_comm.append(c)
                    op_rank.append(r)
                    op_step.append(k)
                    op_unit.append(u)
                    pk = (c.kind, c.stage)
                    peer = peer_cache.get(pk)
                    if peer is None:
                        if c.stage not in route_pos or c.stage not in sidx:
                            raise _bad(c, r, k, "names a stage that is not on any route")
                        peer = peer_cache[pk] = s.peer_of(c)
                        if peer is None:
                            raise _bad(c, r, k, "has no peer (its route ends there)")
                    if not 0 <= c.mb < M:
                        raise _bad(c, r, k, f"has micro-batch {c.mb} outside 0..{M - 1}")
                    if c.kind in _SENDS:
                        op_lat.append(lat[c.stage])
                        sends.setdefault((r, peer), []).append(i)
                    else:
                        op_lat.append(0.0)
                        recvs.setdefault((peer, r), []).append(i)
                        recv_at.setdefault((r, c.kind, c.stage, c.mb), i)
                u_ops.append(ids)
        nops = len(op_comm)
        op_peer = [-1] * nops
        for ch, lst in sends.items():
            for a_, b_ in zip(lst, recvs.get(ch, ())):
                op_peer[a_] = b_
                op_peer[b_] = a_
        self.op_comm, self.op_rank, self.op_step = op_comm, op_rank, op_step
        self.op_unit, self.op_lat, self.op_peer = op_unit, op_lat, op_peer
        self.u_rank, self.u_step, self.u_ops = u_rank, u_step, u_ops
        self.units, self.unit_at = units, unit_at
        nunits = len(u_rank)
        # event ids
        self.OD = 3 * SM  # op done
        self.UD = self.OD + nops  # unit done
        self.NEVER = self.UD + nunits
        nev = self.NEVER + 1
        self.ev_time: list[float | None] = [None] * nev
        self.ev_src: list[tuple[int, int] | None] = [None] * (3 * SM)
        # ---- static tables: computes
        dur: dict[tuple, float] = {}
        for st in s.stages:
            c = costs.of(st.id)
            for kind in ComputeKind:
                dur[(kind, st.id)] = getattr(c, kind.value)
            dur[("FB", st.id)], dur[("FI", st.id)] = c.FB, c.FI
        self.step_deps: list[list[tuple[int, ...] | None]] = []
        self.step_dur: list[list[float]] = []
        self.step_makes: list[list[tuple[int, ...]]] = []
        rank_of = {st.id: st.rank for st in s.stages}
        dep_cache: dict[tuple, tuple] = {}
        make = _template(s)
        for r, acts in enumerate(s.actions):
            deps_r: list[tuple[int, ...] | None] = []
            dur_r: list[float] = []
            makes_r: list[tuple[int, ...]] = []
            for k, a in enumerate(acts):
                ta = type(a)
                if ta is Compute:
                    cs = (a,)
                    d = dur[(a.kind, a.stage)]
                elif ta is Overlap:
                    cs = (a.f, a.b)
                    kk = "FB" if a.b.kind is _B else "FI"
                    d = 0.5 * (dur[(kk, a.f.stage)] + dur[(kk, a.b.stage)])
                else:
                    deps_r.append(None)
                    dur_r.append(0.0)
                    makes_r.append(())
                    continue
                deps: list[int] = []
                makes: list[int] = []
                for c in cs:
                    st, m, kind = c.stage, c.mb, c.kind
                    tmpl = dep_cache.get((kind, st, r))
                    if tmpl is None:
                        if st not in route_pos or st not in sidx:
                            raise _bad(c, r, k, "names a stage that is not on any route")
                        tmpl = dep_cache[(kind, st, r)] = make(kind, st, r, rank_of)
                    if not 0 <= m < M:
                        raise _bad(c, r, k, f"has micro-batch {m} outside 0..{M - 1}")
                    base = sidx[st] * M + m
                    for typ, other in tmpl:
                        if typ == 0:  # F end of (other, m)
                            deps.append(sidx[other] * M + m)
                        elif typ == 1:  # B/I end of (other, m)
                            deps.append(SM + sidx[other] * M + m)
                        elif typ == 2:  # I end of (st, m)
                            deps.append(2 * SM + base)
                        else:  # own receive `other` (a CommKind)
                            i = recv_at.get((r, other, st, m))
                            deps.append(self.NEVER if i is None else self.OD + i)
                    if kind is _F:
                        makes.append(base)
                    elif kind is not _W:
                        makes.append(SM + base)
                        if kind is _I:
                            makes.append(2 * SM + base)
                deps_r.append(tuple(deps))
                dur_r.append(d)
                makes_r.append(tuple(makes))
            self.step_deps.append(deps_r)
            self.step_dur.append(dur_r)
            self.step_makes.append(makes_r)
        self.recv_at = recv_at
        # ---- dynamic state
        self.pc = [0] * R
        self.t = [0.0] * R
        self.posted = [-1] * R
        self.ret: list[list[float]] = [[0.0] * len(a) for a in s.actions]
        self.start: list[list[float]] = [[0.0] * len(a) for a in s.actions]
        self.cause: list[list[int]] = [[_NONE] * len(a) for a in s.actions]
        self.begins: list[tuple[float, int, int]] = []
        self.u_post: list[float | None] = [None] * nunits
        self.u_active: list[float | None] = [None] * nunits
        # why a unit became active: UD + previous unit (it completed), or -1 (posted)
        self.u_acause: list[int] = [_NONE] * nunits
        self.u_left = [len(x) for x in u_ops]
        self.op_cause: list[object] = [None] * nops
        self.sptr = [0] * R
        self.waiters: dict[int, list[int]] = {}
        self.work: deque[int] = deque(range(R))
        self.queued = [True] * R + [False] * R

    # -------------------------------------------------------------- helpers
    def _wake(self, e: int) -> None:
        ws = self.waiters.pop(e, None)
        if ws:
            q = self.queued
            for r in ws:
                if not q[r]:
                    q[r] = True
                    self.work.append(r)

    def _kick_stream(self, r: int) -> None:
        i = self.R + r
        if not self.queued[i]:
            self.queued[i] = True
            self.work.append(i)

    # -------------------------------------------------------------- program
    def _run_program(self, r: int) -> None:
        acts = self.s.actions[r]
        n = len(acts)
        k = self.pc[r]
        t = self.t[r]
        ev = self.ev_time
        deps_r = self.step_deps[r]
        ret_r, start_r, cause_r = self.ret[r], self.start[r], self.cause[r]
        while k < n:
            deps = deps_r[k]
            if deps is not None:
                start = t
                cause = _PREV if k else _NONE
                for e in deps:
                    v = ev[e]
                    if v is None:
                        self.waiters.setdefault(e, []).append(r)
                        self.pc[r], self.t[r] = k, t
                        return
                    if v > start:
                        start, cause = v, e
                end = start + self.step_dur[r][k]
                start_r[k] = start
                ret_r[k] = end
                cause_r[k] = cause
                self.begins.append((start, r, k))
                src = (r, k)
                for e in self.step_makes[r][k]:
                    ev[e] = end
                    self.ev_src[e] = src
                    if e in self.waiters:
                        self._wake(e)
                t = end
            else:
                u = self.unit_at[r][k]
                if self.posted[r] < k:
                    self.posted[r] = k
                    self.begins.append((t, r, k))
                    start_r[k] = t
                    self._post(u, t)
                a = acts[k]
                cause_r[k] = _PREV if k else _NONE
                if type(a) is Batch and a.wait:
                    d = ev[self.UD + u]
                    if d is None:
                        self.waiters.setdefault(self.UD + u, []).append(r)
                        self.pc[r], self.t[r] = k, t
                        return
                    if d > t:
                        t = d
                        cause_r[k] = self.UD + u
                ret_r[k] = t
            k += 1
        self.pc[r], self.t[r] = k, t

    # -------------------------------------------------------- communication
    def _post(self, u: int, t: float) -> None:
        self.u_post[u] = t
        ops = self.u_ops[u]
        if not ops:
            self.ev_time[self.UD + u] = t
            self._wake(self.UD + u)
        if self.nccl:
            self._kick_stream(self.u_rank[u])
            return
        peer, unit, post, lat = self.op_peer, self.op_unit, self.u_post, self.op_lat
        ev, OD = self.ev_time, self.OD
        for i in ops:
            j = peer[i]
            if self.op_comm[i].kind in _SENDS:
                self._complete(i, t, ("begin", u))
                if j >= 0 and post[unit[j]] is not None and ev[OD + j] is None:
                    rp = post[unit[j]]
                    if rp >= t + lat[i]:
                        self._complete(j, rp, ("begin", unit[j]))
                    else:
                        self._complete(j, t + lat[i], ("op", i))
            elif j >= 0 and post[unit[j]] is not None and ev[OD + i] is None:
                arrive = post[unit[j]] + lat[j]
                if t >= arrive:
                    self._complete(i, t, ("begin", u))
                else:
                    self._complete(i, arrive, ("op", j))

    def _complete(self, i: int, t: float, cause) -> None:
        ev = self.ev_time
        ev[self.OD + i] = t
        self.op_cause[i] = cause
        if self.OD + i in self.waiters:
            self._wake(self.OD + i)
        u = self.op_unit[i]
        self.u_left[u] -= 1
        if self.u_left[u] == 0:
            best = max(ev[self.OD + j] for j in self.u_ops[u])
            ev[self.UD + u] = best
            self._wake(self.UD + u)
            if self.nccl:
                self._kick_stream(self.u_rank[u])

    def _run_stream(self, r: int) -> None:
        units = self.units[r]
        ev, OD, UD = self.ev_time, self.OD, self.UD
        act, peer, unit = self.u_active, self.op_peer, self.op_unit
        while self.sptr[r] < len(units):
            i = self.sptr[r]
            u = units[i]
            if act[u] is None:
                t = self.u_post[u]
                if t is None:
                    return
                cause = -1
                if i:
                    pd = ev[UD + units[i - 1]]
                    if pd > t:
                        t, cause = pd, UD + units[i - 1]
                act[u] = t
                self.u_acause[u] = cause
                for op in self.u_ops[u]:
                    j = peer[op]
                    if j < 0 or ev[OD + op] is not None:
                        continue
                    pu = unit[j]
                    pa = act[pu]
                    if pa is None:
                        continue
                    snd = op if self.op_comm[op].kind in _SENDS else j
                    if pa > t:
                        when, c = pa, ("active", pu)
                    else:
                        when, c = t, ("active", u)
                    when += self.op_lat[snd]
                    self._complete(op, when, c)
                    self._complete(j, when, c)
            if ev[UD + u] is None:
                return
            self.sptr[r] += 1

    # ---------------------------------------------------------------- driver
    def run(self) -> Analysis:
        R = self.R
        work = self.work
        queued = self.queued
        while work:
            i = work.popleft()
            queued[i] = False
            if i < R:
                self._run_program(i)
            else:
                self._run_stream(i - R)
        return self._result()

    # --------------------------------------------------------------- results
    def _result(self) -> Analysis:
        s = self.s
        R = self.R
        ev, OD = self.ev_time, self.OD
        nops = len(self.op_comm)
        spans = []
        for r, acts in enumerate(s.actions):
            deps_r, start_r, ret_r = self.step_deps[r], self.start[r], self.ret[r]
            for k in range(min(self.pc[r], len(acts))):
                if deps_r[k] is not None:
                    spans.append(ComputeSpan(r, k, acts[k], start_r[k], ret_r[k]))
        finished = all(self.pc[r] >= len(s.actions[r]) for r in range(R))
        incomplete = any(ev[OD + i] is None for i in range(nops))
        deadlocked = not finished or incomplete
        stuck = self._stuck() if deadlocked else ()
        busy = [0.0] * R
        for x in spans:
            busy[x.rank] += x.end - x.start
        rank_end = [0.0] * R
        makespan, last = 0.0, None
        for r in range(R):
            ret_r = self.ret[r]
            for k in range(self.pc[r]):
                v = ret_r[k]
                if v > rank_end[r]:
                    rank_end[r] = v
                if v > makespan:
                    makespan, last = v, ("step", r, k)
        for i in range(nops):
            d = ev[OD + i]
            if d is not None:
                rr = self.op_rank[i]
                if d > rank_end[rr]:
                    rank_end[rr] = d
                if d > makespan:
                    makespan, last = d, ("op", i)
        peaks = peak_activations(s)
        share = len(s.layers) / R if s.layers else 1.0
        ranks = tuple(
            RankMetrics(
                rank=r, busy=busy[r], bubble=makespan - busy[r], end=rank_end[r],
                peak_activations=peaks[r], stages=len(s.stages_on_rank[r]),
                param_copies=len({s.layer_of(x) for x in s.stages_on_rank[r]}) / share,
            )
            for r in range(R)
        )
        total_bubble = sum(x.bubble for x in ranks)
        ratio = total_bubble / (R * makespan) if makespan > 0 else 0.0
        path = self._critical_path(last) if not deadlocked and last else ()
        messages = []
        for i in range(nops):
            c = self.op_comm[i]
            j = self.op_peer[i]
            if c.kind not in _SENDS or j < 0 or ev[OD + j] is None:
                continue
            ui, uj = self.op_unit[i], self.op_unit[j]
            if self.nccl:
                st = max(self.u_active[ui], self.u_active[uj])
            else:
                st = self.u_post[ui]
            messages.append(Message(
                id=len(messages), src=self.op_rank[i], dst=self.op_rank[j],
                send_step=self.op_step[i], send=c, recv_step=self.op_step[j],
                recv=self.op_comm[j], send_post=self.u_post[ui], recv_post=self.u_post[uj],
                start=st, end=ev[OD + j], latency=self.op_lat[i]))
        order = () if deadlocked else tuple(
            (r, k) for _, r, k in sorted(self.begins, key=lambda x: x[0]))
        return Analysis(
            name=s.name, family=s.family, num_ranks=R, num_microbatches=s.num_microbatches,
            comm_model=self.comm_model, costs=self.costs.as_dict(), deadlocked=deadlocked,
            stuck=stuck, makespan=makespan, ranks=ranks, bubble_ratio=ratio,
            critical_path=path, computes=tuple(spans), messages=tuple(messages), order=order,
        )

    # --------------------------------------------------------- critical path
    def _critical_path(self, last) -> tuple[PathItem, ...]:
        """Follow each event's latest input back from the last event."""
        s = self.s
        ev, OD, UD, SM = self.ev_time, self.OD, self.UD, self.SM
        items: list[PathItem] = []
        node = last
        guard = 4 * (s.num_actions + len(self.op_comm)) + 10
        while node is not None and guard > 0:
            guard -= 1
            tag = node[0]
            if tag == "step":
                _, r, k = node
                if self.step_deps[r][k] is not None:
                    items.append(PathItem("compute", r, k, label_of(s.actions[r][k]),
                                          self.start[r][k], self.ret[r][k]))
                c = self.cause[r][k]
                if c == _NONE:
                    node = None
                elif c == _PREV:
                    node = ("step", r, k - 1)
                else:
                    node = self._node_of_event(c)
            elif tag == "op":
                i = node[1]
                j = self.op_peer[i]
                snd, rcv = (i, j) if self.op_comm[i].kind in _SENDS else (j, i)
                cause = self.op_cause[i]
                sc = self.op_comm[snd]
                items.append(PathItem(
                    "message", self.op_rank[rcv], self.op_step[rcv],
                    f"message {sc} -> {self.op_comm[rcv]}: "
                    f"{loc(self.op_rank[snd], self.op_step[snd])} -> "
                    f"{loc(self.op_rank[rcv], self.op_step[rcv])}",
                    self._cause_time(cause), ev[OD + i]))
                node = self._node_of_cause(cause)
            elif tag == "unitdone":
                u = node[1]
                best = max(self.u_ops[u], key=lambda j: ev[OD + j])
                node = ("op", best)
            elif tag == "active":
                u = node[1]
                c = self.u_acause[u]
                if c == -1:
                    k = self.u_step[u]
                    node = ("step", self.u_rank[u], k - 1) if k else None
                else:
                    node = ("unitdone", c - UD)
            else:  # begin of a unit: the step before it
                u = node[1]
                k = self.u_step[u]
                node = ("step", self.u_rank[u], k - 1) if k else None
        items.reverse()
        out: list[PathItem] = []
        for it in items:
            last = out[-1] if out else None
            if last is None or (last.label, last.rank, last.step) != (it.label, it.rank, it.step):
                out.append(it)
        return tuple(out)

    def _node_of_event(self, e: int):
        if e < self.OD:
            r, k = self.ev_src[e]
            return ("step", r, k)
        if e < self.UD:
            return ("op", e - self.OD)
        return ("unitdone", e - self.UD)

    def _node_of_cause(self, cause):
        tag, x = cause
        if tag == "op":
            return ("op", x)
        if tag == "active":
            return ("active", x)
        return ("begin", x)

    def _cause_time(self, cause) -> float:
        tag, x = cause
        if tag == "op":
            return self.ev_time[self.OD + x]
        if tag == "active":
            return self.u_active[x]
        return self.u_post[x]

    # ------------------------------------------------------------------ stuck
    def _stuck(self) -> tuple[Stuck, ...]:
        s = self.s
        out: list[Stuck] = []
        for r in range(self.R):
            k = self.pc[r]
            if k < len(s.actions[r]):
                out.append(Stuck(r, k, str(s.actions[r][k]), self._why_step(r, k)))
        ev, OD = self.ev_time, self.OD
        if self.nccl:
            for r in range(self.R):
                if self.sptr[r] < len(self.units[r]):
                    u = self.units[r][self.sptr[r]]
                    if self.u_post[u] is None or self.pc[r] == self.u_step[u]:
                        continue  # not posted, or the program's own entry says it
                    for op in self.u_ops[u]:
                        if ev[OD + op] is None:
                            out.append(Stuck(r, self.u_step[u],
                                             f"comm stream: {self.op_comm[op]}", self._why_op(op)))
                            break
        seen = {(x.rank, x.step) for x in out}
        for op in range(len(self.op_comm)):
            if (ev[OD + op] is None and self.op_peer[op] < 0
                    and self.u_post[self.op_unit[op]] is not None
                    and (self.op_rank[op], self.op_step[op]) not in seen):
                out.append(Stuck(self.op_rank[op], self.op_step[op], str(self.op_comm[op]),
                                 self._why_op(op)))
        return tuple(out)

    def _why_op(self, op: int) -> str:
        c = self.op_comm[op]
        j = self.op_peer[op]
        if j < 0:
            peer = self.s.peer_of(c)
            want = self.s.matching_op(c)
            return (f"rank {peer} to post its matching op (expected {want}); FIFO order "
                    f"leaves it unmatched")
        pu = self.op_unit[j]
        pr = self.u_rank[pu]
        where = f"its peer {self.op_comm[j]} ({loc(pr, self.op_step[j])})"
        if self.u_post[pu] is None:
            return where + f", which rank {pr} has not posted (its program is blocked)"
        if self.nccl and self.u_active[pu] is None:
            return where + f", queued on rank {pr}'s comm stream behind a unit that cannot complete"
        return where

    def _why_step(self, r: int, k: int) -> str:
        a = self.s.actions[r][k]
        deps = self.step_deps[r][k]
        ev = self.ev_time
        if deps is not None:
            for e in deps:
                if ev[e] is not None:
                    continue
                if e == self.NEVER:
                    return "a receive that rank {} never posts".format(r)
                if e >= self.OD:
                    op = e - self.OD
                    c = self.op_comm[op]
                    if self.op_step[op] > k:
                        return f"{c}, which rank {r} posts only later, at step {self.op_step[op]}"
                    return (f"{c} ({loc(r, self.op_step[op])}) to complete: waits for "
                            + self._why_op(op))
                kinds = (("F",), ("B", "I"), ("I",))[e // self.SM]
                idx = e % self.SM
                st = self.s.stages[idx // self.s.num_microbatches].id
                mb = idx % self.s.num_microbatches
                return (" or ".join(op_text(x, st, mb) for x in kinds)
                        + ", which never finishes")
            return "its inputs"
        u = self.unit_at[r][k]
        for op in self.u_ops[u]:
            if ev[self.OD + op] is None:
                return f"{self.op_comm[op]} to complete: waits for " + self._why_op(op)
        return "its batch to complete"


def _template(s: Schedule):
    """Build the per-(kind, stage, rank) input template function for ``s``."""

    def make(kind, st, r, rank_of):
        out = []
        if kind is _F:
            p = s.prev_stage(st)
            if p is not None:
                out.append((0, p) if rank_of[p] == r else (3, CommKind.RECV_F))
        elif kind is _W:
            out.append((2, st))
        else:
            out.append((0, st))
            n = s.next_stage(st)
            if n is not None:
                out.append((1, n) if rank_of[n] == r else (3, CommKind.RECV_B))
        return tuple(out)

    return make


def replay(s: Schedule, costs: CostModel, comm_model: str) -> Analysis:
    """Build the tables (checking the little they need) and run the replay."""
    return Replay(s, costs, comm_model).run()


def _bad(c, r: int, k: int, why: str) -> ScheduleError:
    return ScheduleError(f"{c} {why}; analyze needs a well-formed schedule (run `check`)",
                         loc(r, k))

"""The discrete-event engine behind verifier.analysis.timeline (its module docstring
states the timing rules; SEMANTICS.md the semantics).

What it is: the static tables (verifier.analysis.replay_tables: the FIFO
pairing of every send with its receive, each compute's input events and
duration, the communication units and the model's streams), then a worklist
replay assigns every event its earliest time: a rank's program advances until
it needs an event that has not happened yet and parks on it; the event wakes
it. Each stream of the communication model is a worklist item too: its head
unit becomes active once posted and once the unit before it has completed.
The model is read through its fields (verifier.semantics.comm): ``send``
(rendezvous: a send and its receive complete together once both units are
active, plus the send's latency; buffered: a send completes once its unit is
active, its receive once its own unit is active and the data has arrived) and
``stream`` (which units share an in-order stream; none: a unit is active when
posted). ``run()`` returns an ``Analysis`` (verifier.analysis.replay_report).

Not covered: metrics definitions and the published formulas (verifier.analysis.timeline).
"""

from __future__ import annotations

from collections import deque

from verifier.analysis import replay_report
from verifier.analysis.costs import CostModel
from verifier.analysis.replay_tables import compute_tables, op_tables, stream_tables
from verifier.ir import Batch, Schedule
from verifier.results.analysis import Analysis
from verifier.semantics import comm
from verifier.semantics.comm import CommModel

_PREV, _NONE = replay_report.PREV, replay_report.NONE


class Replay:
    """The replay of one schedule under one cost model and communication model."""

    def __init__(self, s: Schedule, costs: CostModel, comm_model: "str | CommModel"):
        self.s = s
        self.costs = costs
        self.model = comm.model(comm_model)
        self.comm_model = self.model.name
        self.R = s.num_ranks
        M = s.num_microbatches
        self.sidx = sidx = {st.id: i for i, st in enumerate(s.stages)}
        self.SM = len(s.stages) * M
        t = op_tables(s, costs, sidx)
        self.op_comm, self.op_rank, self.op_step = t.op_comm, t.op_rank, t.op_step
        self.op_unit, self.op_lat, self.op_peer = t.op_unit, t.op_lat, t.op_peer
        self.op_send = t.op_send
        self.u_rank, self.u_step, self.u_ops = t.u_rank, t.u_step, t.u_ops
        self.units, self.unit_at, self.recv_at = t.units, t.unit_at, t.recv_at
        self.stream_of, self.stream_units = stream_tables(s, t, self.model)
        nops, nunits = len(t.op_comm), len(t.u_rank)
        # event ids
        self.OD = 3 * self.SM  # op done
        self.UD = self.OD + nops  # unit done
        self.NEVER = self.UD + nunits
        self.ev_time: list[float | None] = [None] * (self.NEVER + 1)
        self.ev_src: list[tuple[int, int] | None] = [None] * (3 * self.SM)
        self.step_deps, self.step_dur, self.step_makes = compute_tables(
            s, costs, sidx, t.recv_at, self.OD, self.NEVER)
        self._dynamic_state(nops, nunits)

    def _dynamic_state(self, nops: int, nunits: int) -> None:
        s, R = self.s, self.R
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
        self.u_left = [len(x) for x in self.u_ops]
        self.op_cause: list[object] = [None] * nops
        self.sptr = [0] * len(self.stream_units)
        self.waiters: dict[int, list[int]] = {}
        # worklist items: rank programs 0..R-1, then the model's streams
        self.work: deque[int] = deque(range(R))
        self.queued = [True] * R + [False] * len(self.stream_units)

    # -------------------------------------------------------------- helpers
    def _wake(self, e: int) -> None:
        ws = self.waiters.pop(e, None)
        if ws:
            q = self.queued
            for r in ws:
                if not q[r]:
                    q[r] = True
                    self.work.append(r)

    def _kick_stream(self, q: int) -> None:
        i = self.R + q
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
        if not self.u_ops[u]:
            self.ev_time[self.UD + u] = t
            self._wake(self.UD + u)
        if self.stream_of is not None:
            self._kick_stream(self.stream_of[u])
        else:  # no stream order: a unit is active once posted
            self._activate(u, t, "begin", self.u_post)

    def _activate(self, u: int, t: float, tag: str, act: list) -> None:
        """Unit u is active from ``t`` (``act``: when each unit is active, None
        if not yet; ``tag`` names that time in causes: "active" on a stream,
        "begin" when posted): complete what its ops can under the send rule."""
        if self.model.rendezvous:
            self._rendezvous(u, t, tag, act)
        else:
            self._buffered(u, t, tag, act)

    def _rendezvous(self, u: int, t: float, tag: str, act: list) -> None:
        """A send and its receive complete together once both units are active,
        plus the send's latency."""
        ev, OD, peer, unit = self.ev_time, self.OD, self.op_peer, self.op_unit
        for op in self.u_ops[u]:
            j = peer[op]
            if j < 0 or ev[OD + op] is not None:
                continue
            pu = unit[j]
            pa = act[pu]
            if pa is None:
                continue
            snd = op if self.op_send[op] else j
            if pa > t:
                when, c = pa, (tag, pu)
            else:
                when, c = t, (tag, u)
            when += self.op_lat[snd]
            self._complete(op, when, c)
            self._complete(j, when, c)

    def _buffered(self, u: int, t: float, tag: str, act: list) -> None:
        """A send completes once its unit is active; its receive once its own
        unit is active and the data has arrived (the send's time + latency)."""
        peer, unit, lat = self.op_peer, self.op_unit, self.op_lat
        ev, OD = self.ev_time, self.OD
        for i in self.u_ops[u]:
            j = peer[i]
            if self.op_send[i]:
                self._complete(i, t, (tag, u))
                if j >= 0 and act[unit[j]] is not None and ev[OD + j] is None:
                    rp = act[unit[j]]
                    if rp >= t + lat[i]:
                        self._complete(j, rp, (tag, unit[j]))
                    else:
                        self._complete(j, t + lat[i], ("op", i))
            elif j >= 0 and act[unit[j]] is not None and ev[OD + i] is None:
                arrive = act[unit[j]] + lat[j]
                if t >= arrive:
                    self._complete(i, t, (tag, u))
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
            if self.stream_of is not None:
                self._kick_stream(self.stream_of[u])

    def _run_stream(self, q: int) -> None:
        """Advance stream q: its head unit is active once posted and once the
        unit before it has completed."""
        units = self.stream_units[q]
        ev, UD, act = self.ev_time, self.UD, self.u_active
        while self.sptr[q] < len(units):
            i = self.sptr[q]
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
                self._activate(u, t, "active", act)
            if ev[UD + u] is None:
                return
            self.sptr[q] += 1

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
        return replay_report.result(self)


def replay(s: Schedule, costs: CostModel, comm_model: "str | CommModel") -> Analysis:
    """Build the tables (checking the little they need) and run the replay."""
    return Replay(s, costs, comm_model).run()

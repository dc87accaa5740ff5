"""The graph engine: deadlock-freedom by a happens-before graph, in linear time.

What it is: the events of specs/SEMANTICS.md as nodes, "cannot happen before"
as edges, and Kahn's topological sort. Every node fired: the schedule
terminates, and the order in which steps began is the witness. Some node
never fires: walking back from a stuck step along stuck predecessors reaches
either a cycle of waits or an op whose peer is never posted; that walk is the
counterexample, hop by hop.

Nodes (``checker.EventKind``):
- BEGIN(r, k): step k of rank r begins (a comm action is posted; a compute
  runs, start and finish being one event here). Waits for RETURN/BEGIN of
  step k-1, and for a compute for the data it consumes (``properties.needs``:
  the first matching receive or compute on its rank; none at all -> NEVER).
- RETURN(r, k): a ``Batch(wait=True)`` returns; waits for all its ops.
- nccl: ACTIVE(u): comm unit u (a plain op or a BATCH) is at the head of its
  rank's stream: after BEGIN(u) and UNIT_DONE of the rank's previous unit.
  OP_DONE(send, recv): a FIFO-matched pair completes, once both units are
  ACTIVE. UNIT_DONE(u): all ops of u done. An unmatched op waits for NEVER.
- eager: a send is done when posted (its BEGIN); OP_DONE(recv) waits for the
  BEGIN of its own step and of its matched send's step.

Matching is FIFO per ordered rank pair (``properties.fifo_pairs``), paired by
position and never by payload, so the engine decides deadlock-freedom also
when message-matching fails (an unmatched op never completes).

What it does not cover: the static properties (verifier.properties); a
well-formed schedule is assumed (the checker ensures it).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.checker import Event, EventKind, Hop, PropertyId, Violation, WaitCycle
from verifier.ir import Batch, CommKind, Schedule, comms_of, computes_of
from verifier.properties import first_steps, fifo_pairs, needs

_BEGIN, _RETURN, _ACTIVE, _UNIT_DONE, _OP_DONE, _NEVER = range(6)
_KINDS = (
    EventKind.BEGIN,
    EventKind.RETURN,
    EventKind.ACTIVE,
    EventKind.UNIT_DONE,
    EventKind.OP_DONE,
    EventKind.NEVER,
)


@dataclass(frozen=True)
class GraphOutcome:
    """``witness`` when the schedule terminates, else ``cycle`` and ``violation``."""

    witness: tuple[tuple[int, int], ...] | None
    cycle: WaitCycle | None
    violation: Violation | None
    num_events: int
    num_stuck: int


class _Graph:
    __slots__ = ("kind", "rank", "step", "sub", "succ", "indeg", "info")

    def __init__(self) -> None:
        self.kind: list[int] = []
        self.rank: list[int] = []
        self.step: list[int] = []
        self.sub: list = []
        self.succ: list[list[int]] = []
        self.indeg: list[int] = []
        self.info: dict[int, tuple] = {}  # OP_DONE -> (op record, peer record or None)

    def node(self, kind: int, rank: int, step: int, sub=None) -> int:
        self.kind.append(kind)
        self.rank.append(rank)
        self.step.append(step)
        self.sub.append(sub)
        self.succ.append([])
        self.indeg.append(0)
        return len(self.kind) - 1


def build(s: Schedule, comm_model: str) -> tuple[_Graph, int]:
    """The happens-before graph of a well-formed schedule; returns (graph, NEVER)."""
    g = _Graph()
    succ, indeg = g.succ, g.indeg
    never = g.node(_NEVER, -1, -1)
    indeg[never] = 1  # never fires

    def edge(a: int, b: int) -> None:
        succ[a].append(b)
        indeg[b] += 1

    begin: list[list[int]] = []
    ret: list[list[int]] = []
    for r, acts in enumerate(s.actions):
        bs, rs = [], []
        prev = -1
        for k, a in enumerate(acts):
            b = g.node(_BEGIN, r, k)
            if prev >= 0:
                edge(prev, b)
            if isinstance(a, Batch) and a.wait:
                rt = g.node(_RETURN, r, k)
                edge(b, rt)
            else:
                rt = b
            bs.append(b)
            rs.append(rt)
            prev = rt
        begin.append(bs)
        ret.append(rs)

    # ---- communication
    pairs, unmatched_sends, unmatched_recvs, _ = fifo_pairs(s)
    done: dict[tuple, int] = {}  # (rank, step, sub) -> node at which the op is done
    if comm_model == "nccl":
        active: dict[tuple[int, int], int] = {}
        udone: dict[tuple[int, int], int] = {}
        for r, acts in enumerate(s.actions):
            prev_u = -1
            for k, a in enumerate(acts):
                if not comms_of(a):
                    continue
                act = g.node(_ACTIVE, r, k)
                edge(begin[r][k], act)
                if prev_u >= 0:
                    edge(prev_u, act)
                ud = g.node(_UNIT_DONE, r, k)
                if isinstance(a, Batch) and a.wait:
                    edge(ud, ret[r][k])
                active[(r, k)] = act
                udone[(r, k)] = ud
                prev_u = ud
        for snd, rcv in pairs:
            d = g.node(_OP_DONE, snd[0], snd[1], snd[2])
            g.info[d] = (snd, rcv)
            edge(active[(snd[0], snd[1])], d)
            edge(active[(rcv[0], rcv[1])], d)
            edge(d, udone[(snd[0], snd[1])])
            edge(d, udone[(rcv[0], rcv[1])])
            done[snd[:3]] = d
            done[rcv[:3]] = d
        for x, _k in unmatched_sends + unmatched_recvs:
            d = g.node(_OP_DONE, x[0], x[1], x[2])
            g.info[d] = (x, None)
            edge(never, d)
            edge(active[(x[0], x[1])], d)
            edge(d, udone[(x[0], x[1])])
            done[x[:3]] = d
    else:  # eager
        for snd, rcv in pairs:
            done[snd[:3]] = begin[snd[0]][snd[1]]
            d = g.node(_OP_DONE, rcv[0], rcv[1], rcv[2])
            g.info[d] = (rcv, snd)
            edge(begin[rcv[0]][rcv[1]], d)
            edge(begin[snd[0]][snd[1]], d)
            done[rcv[:3]] = d
        for x, _k in unmatched_sends:
            done[x[:3]] = begin[x[0]][x[1]]
        for x, _k in unmatched_recvs:
            d = g.node(_OP_DONE, x[0], x[1], x[2])
            g.info[d] = (x, None)
            edge(never, d)
            edge(begin[x[0]][x[1]], d)
            done[x[:3]] = d
        for r, acts in enumerate(s.actions):
            for k, a in enumerate(acts):
                if isinstance(a, Batch) and a.wait:
                    rt = ret[r][k]
                    for j in range(len(a.ops)):
                        d = done[(r, k, j)]
                        if d != begin[r][k]:
                            edge(d, rt)

    # ---- data dependencies of computes
    firsts = first_steps(s)
    for r, acts in enumerate(s.actions):
        first = firsts[r]
        first_op: dict[tuple, int] = {}
        for k, a in enumerate(acts):
            ops = comms_of(a)
            if not ops:
                continue
            batched = isinstance(a, Batch)
            for j, op in enumerate(ops):
                if op.kind is CommKind.RECV_F or op.kind is CommKind.RECV_B:
                    first_op.setdefault((op.kind, op.stage, op.mb), done[(r, k, j if batched else None)])
        for k, a in enumerate(acts):
            cs = computes_of(a)
            if not cs:
                continue
            b = begin[r][k]
            for c in cs:
                for key in needs(s, r, c):
                    if isinstance(key[0], CommKind):
                        src = first_op.get(key, never)
                    else:
                        at = first.get(key)
                        src = never if at is None else begin[r][at]
                    edge(src, b)
    return g, never


def decide(s: Schedule, comm_model: str) -> GraphOutcome:
    g, never = build(s, comm_model)
    succ, indeg = g.succ, list(g.indeg)
    n = len(indeg)
    queue = [v for v in range(n) if indeg[v] == 0]
    i = 0
    while i < len(queue):
        v = queue[i]
        i += 1
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                queue.append(w)
    num_events = n - 1  # NEVER is not an event
    if len(queue) == num_events:
        kind, rank, step = g.kind, g.rank, g.step
        witness = tuple((rank[v], step[v]) for v in queue if kind[v] == _BEGIN)
        return GraphOutcome(witness, None, None, num_events, 0)
    fired = bytearray(n)
    for v in queue:
        fired[v] = 1
    return _refute(s, g, never, fired, num_events - len(queue), num_events)


def _refute(s: Schedule, g: _Graph, never: int, fired: bytearray, num_stuck: int, total: int) -> GraphOutcome:
    n = len(g.kind)
    preds: dict[int, list[int]] = {}
    for v in range(n):
        for w in g.succ[v]:
            if not fired[w]:
                preds.setdefault(w, []).append(v)
    # start at the first stuck step, lowest rank first
    start = min(
        (v for v in range(n) if not fired[v] and g.kind[v] == _BEGIN),
        key=lambda v: (g.rank[v], g.step[v]),
        default=None,
    )
    if start is None:  # only op completions are stuck
        start = min((v for v in range(n) if not fired[v] and v != never), key=lambda v: (g.rank[v], g.step[v]))
    path: list[int] = [start]
    seen = {start: 0}
    cur = start
    while True:
        cands = [p for p in preds.get(cur, ()) if not fired[p]]
        if never in cands:
            nxt = never
        else:
            # prefer a wait on another action over program order, for short cycles
            other = [p for p in cands if (g.rank[p], g.step[p]) != (g.rank[cur], g.step[cur] - 1)]
            nxt = (other or cands)[0]
        if nxt == never:
            path.append(never)
            closed = False
            break
        if nxt in seen:
            path = path[seen[nxt]:] + [nxt]
            closed = True
            break
        seen[nxt] = len(path)
        path.append(nxt)
        cur = nxt
    events = [_event(s, g, v) for v in path]
    hops = tuple(Hop(events[i], events[i + 1]) for i in range(len(events) - 1))
    cycle = WaitCycle(hops, closed)
    locs = []
    for e in events:
        if e.kind is not EventKind.NEVER and (e.rank, e.step) not in locs:
            locs.append((e.rank, e.step))
    viol = Violation(
        PropertyId.DEADLOCK_FREE,
        "deadlock" if closed else "stuck",
        tuple(locs),
        (("count", num_stuck), ("total", total)),
    )
    return GraphOutcome(None, cycle, viol, total, num_stuck)


def _op_text(s: Schedule, rec) -> str:
    return str(rec[3])


def _event(s: Schedule, g: _Graph, v: int) -> Event:
    kind = _KINDS[g.kind[v]]
    if kind is EventKind.NEVER:
        return Event(kind, -1, -1)
    r, k = g.rank[v], g.step[v]
    action = s.actions[r][k]
    if kind is EventKind.OP_DONE:
        rec, peer = g.info[v]
        return Event(
            kind, rec[0], rec[1], rec[2], str(rec[3]),
            None if peer is None else (peer[0], peer[1], peer[2]),
            "" if peer is None else str(peer[3]),
        )
    return Event(kind, r, k, None, str(action))

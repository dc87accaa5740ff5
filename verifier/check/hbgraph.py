"""The graph engine: deadlock-freedom by a happens-before graph, in linear time.

What it is: the events of specs/SEMANTICS.md as nodes, "cannot happen before"
as edges, and Kahn's topological sort. ``decide`` first runs Kahn with the
program-order, stream-order and pair edges left implicit (``_fast``: ranks
advance while their waits are met; a fired event wakes its waiters); only if
something never fires does it build the explicit graph (``build``) to extract
the counterexample. Every node fired: the schedule
terminates, and the order in which steps began is the witness. Some node
never fires: walking back from a stuck step along stuck predecessors reaches
either a cycle of waits or an op whose peer is never posted; that walk is the
counterexample, hop by hop.

Nodes (``EventKind``), for any model of ``verifier.semantics.comm`` (the
engine reads the model's fields, never its name):
- BEGIN(r, k): step k of rank r begins (a comm action is posted; a compute
  runs, start and finish being one event here). Waits for RETURN/BEGIN of
  step k-1, and for a compute for the data it consumes (``Tables.needs``:
  the first matching receive or compute on its rank; none at all -> NEVER).
- RETURN(r, k): a ``Batch(wait=True)`` returns; waits for all its ops.
- a model with streams: ACTIVE(u): comm unit u (a plain op or a BATCH) heads
  its stream: after BEGIN(u) and UNIT_DONE of the unit before it on its
  stream (``Tables.streams``). UNIT_DONE(u): all ops of u done. Without
  streams a unit is active at its BEGIN and has no UNIT_DONE.
- rendezvous sends: OP_DONE(send, recv): a FIFO-matched pair completes, once
  both units are active; an unmatched op's OP_DONE waits for NEVER.
  Buffered sends: a send is done when its unit is active; OP_DONE(recv)
  waits for its unit to be active and for its matched send (NEVER if none).

Matching is FIFO per ordered rank pair (``Tables.partner``), paired by
position and never by payload, so the engine decides deadlock-freedom also
when message-matching fails (an unmatched op never completes).

What it does not cover: the static properties (verifier.check.properties); a
well-formed schedule is assumed (the checker ensures it).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.results.check import Event, EventKind, Hop, PropertyId, Violation, WaitCycle
from verifier.ir import Batch, CommKind, Compute, Overlap, Schedule
from verifier.semantics.comm import CommModel, model as model_of
from verifier.semantics.tables import NEVER, tables_of as index

_BEGIN, _RETURN, _ACTIVE, _UNIT_DONE, _OP_DONE, _NEVER = range(6)
_SF, _SB = CommKind.SEND_F, CommKind.SEND_B
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
    """Nodes are ints. 0 is NEVER; 1..A are BEGIN(r, k) in (rank, step) order;
    the rest are described by ``extra[v - A - 1] = (kind, rank, step, info)``
    (info: the op index and its partner's for OP_DONE)."""

    __slots__ = ("succ", "indeg", "brank", "bstep", "extra", "num_actions", "idx")

    def node(self, kind: int, rank: int, step: int, info) -> int:
        """A new node of ``kind`` (not BEGIN, not NEVER); returns its number."""
        self.extra.append((kind, rank, step, info))
        self.succ.append([])
        self.indeg.append(0)
        return self.num_actions + len(self.extra)

    def edge(self, v: int, w: int) -> None:
        """``w`` cannot happen before ``v``."""
        self.succ[v].append(w)
        self.indeg[w] += 1

    def node_kind(self, v: int) -> int:
        if v == 0:
            return _NEVER
        if v <= self.num_actions:
            return _BEGIN
        return self.extra[v - self.num_actions - 1][0]

    def place(self, v: int) -> tuple[int, int]:
        if v == 0:
            return (-1, -1)
        if v <= self.num_actions:
            return (self.brank[v], self.bstep[v])
        e = self.extra[v - self.num_actions - 1]
        return (e[1], e[2])


def build(s: Schedule, comm_model: "str | CommModel") -> tuple[_Graph, int]:
    """The happens-before graph of a well-formed schedule; returns (graph, NEVER)."""
    m = model_of(comm_model)
    idx = index(s)
    g = _Graph()
    A = s.num_actions
    g.succ, g.indeg = [[] for _ in range(A + 1)], [0] * (A + 1)
    g.indeg[0] = 1  # NEVER never fires
    g.brank, g.bstep, g.extra, g.num_actions, g.idx = [-1], [-1], [], A, idx
    base, ret = _program(s, g)
    if m.has_streams:
        done = _stream_events(idx, g, m, base, ret)
    else:
        done = _posted_events(idx, g, m, base, ret)
    _data_edges(s, idx, g, base, done)
    return g, 0


def _program(s: Schedule, g: _Graph) -> tuple[list[int], list[list[int]]]:
    """BEGIN of every step, RETURN of every waited BATCH, program order. Returns
    the BEGIN node of each rank's step 0 and, per (rank, step), the node the
    next step waits for (RETURN of a waited BATCH, else BEGIN)."""
    base: list[int] = []
    ret: list[list[int]] = []
    b = 1
    for r, acts in enumerate(s.actions):
        n = len(acts)
        base.append(b)
        g.brank.extend([r] * n)
        g.bstep.extend(range(n))
        rr = list(range(b, b + n))
        for k, a in enumerate(acts):
            if type(a) is Batch and a.wait:
                rr[k] = g.node(_RETURN, r, k, None)
                g.edge(b + k, rr[k])
        for k in range(1, n):
            g.edge(rr[k - 1], b + k)
        ret.append(rr)
        b += n
    return base, ret


def _stream_events(idx, g: _Graph, m: CommModel, base, ret) -> list[int]:
    """A model with streams: ACTIVE(u) after its BEGIN and the UNIT_DONE of the
    unit before it on its stream; UNIT_DONE(u) after its ops (a waited BATCH
    returns then); op completions per the send rule. Returns each op's node
    of completion."""
    ops, partner = idx.ops, idx.partner
    st = idx.streams(m)
    act: list[int] = []
    ud: list[int] = []
    for u, r in enumerate(idx.unit_rank):
        k = ops[idx.unit_ops[u][0]][1]
        a = g.node(_ACTIVE, r, k, None)
        bk = base[r] + k
        g.edge(bk, a)
        p = st.pos[u]
        if p:
            g.edge(ud[st.units[st.of_unit[u]][p - 1]], a)
        d = g.node(_UNIT_DONE, r, k, None)
        if ret[r][k] != bk:  # a wait-BATCH returns when its unit is done
            g.edge(d, ret[r][k])
        act.append(a)
        ud.append(d)
    return _completions(idx, g, m, [act[u] for u in idx.unit_of_op], lambda i, d: g.edge(d, ud[idx.unit_of_op[i]]))


def _posted_events(idx, g: _Graph, m: CommModel, base, ret) -> list[int]:
    """A model without streams: a unit is active when posted (its BEGIN); a
    waited BATCH returns once each of its ops has completed."""
    ops = idx.ops
    started = [base[o[0]] + o[1] for o in ops]

    def finish(i: int, d: int) -> None:
        r, k = ops[i][0], ops[i][1]
        if ret[r][k] != base[r] + k:
            g.edge(d, ret[r][k])

    return _completions(idx, g, m, started, finish)


def _completions(idx, g: _Graph, m: CommModel, active: list[int], finish) -> list[int]:
    """Op completions per the send rule, given each op's ACTIVE node: rendezvous,
    an OP_DONE per matched pair (after both units are active) or unmatched op
    (after NEVER); buffered, a send is done when active and a receive's OP_DONE
    waits for its own activation and its send. ``finish(i, d)``: what waits for
    op i's completion node ``d``."""
    ops, partner = idx.ops, idx.partner
    done = [0] * len(ops)
    for i, (r, k, _sub, op) in enumerate(ops):
        j = partner[i]
        if m.rendezvous:
            if 0 <= j < i:
                continue
            if j >= 0:
                x, y = (i, j) if op.kind.is_send else (j, i)
                d = g.node(_OP_DONE, ops[x][0], ops[x][1], (x, y))
                for z in (x, y):
                    g.edge(active[z], d)
                    finish(z, d)
                done[x] = done[y] = d
            else:
                d = done[i] = g.node(_OP_DONE, r, k, (i, -1))
                g.edge(0, d)
                g.edge(active[i], d)
                finish(i, d)
        elif op.kind.is_send:
            done[i] = active[i]
            if m.has_streams:  # its unit has a completion of its own
                finish(i, active[i])
        else:
            d = done[i] = g.node(_OP_DONE, r, k, (i, j))
            g.edge(active[i], d)
            g.edge(0 if j < 0 else active[j], d)
            finish(i, d)
    return done


def _data_edges(s: Schedule, idx, g: _Graph, base, done) -> None:
    """Data dependencies of computes: the first receive or compute of each
    input on the rank, wherever it sits (a later one makes a cycle)."""
    for r, acts in enumerate(s.actions):
        b0 = base[r]
        for k, a in enumerate(acts):
            tp = type(a)
            if tp is not Compute and tp is not Overlap:
                continue
            for c in ((a,) if tp is Compute else (a.f, a.b)):
                for key in idx.needs(r, c):
                    x = idx.lookup(key)
                    g.edge(0 if x == NEVER else (done[x] if x >= 0 else b0 - 1 - x), b0 + k)


def _fast(s: Schedule, comm_model: "str | CommModel"):
    """Kahn's algorithm with the program-order, stream-order and pair edges left
    implicit: each rank advances while the next step's waits are met, and an
    event that fires wakes the ranks waiting for it. Returns (witness, number
    of events) when everything fires, else None (then ``decide`` builds the
    explicit graph for the counterexample). Same events, same waits as
    ``build``; the tests hold the two against each other. Units that become
    active (posted and at the head of their stream, or just posted when the
    model has no streams) wait in a list (``heads``) to complete their ops,
    so a long cascade of completions takes no stack depth.

    Unrolled on purpose: it is the graph engine's time in
    benchmarks/bench_check.py (check/PyTorch)."""
    # one unrolled loop: per-event calls cost measurably in benchmarks/bench_check.py
    m = model_of(comm_model)
    idx = index(s)
    partner = idx.partner
    rendezvous = m.rendezvous
    is_send = None if rendezvous else idx.is_send
    st = idx.streams(m)
    of_stream, sunits = st.of_unit, st.units  # None, []: no stream order
    R = s.num_ranks
    unit_rank, unit_ops, unit_of_op = idx.unit_rank, idx.unit_ops, idx.unit_of_op
    num_units = len(unit_rank)
    # per rank and step (see Tables): a comm step's unit (an int), a compute's
    # receives to wait for (a list; its local inputs come earlier on the
    # rank, so they have run), None for a compute that never begins
    steps, wait_unit = idx.steps, idx.wait_unit

    pc = [0] * R
    head = [0] * len(sunits)  # per stream, the index of its first unit not complete
    posted = bytearray(num_units)
    active = bytearray(num_units)
    left = [len(x) for x in unit_ops]
    done = bytearray(idx.num_ops)
    waiters: list[list[int] | None] = [None] * idx.num_ops  # op -> ranks blocked on it
    blocked_on = [-1] * R  # per rank, the op its next step waits for (-1: none yet)
    witness: list[tuple[int, int]] = []
    ready = list(range(R - 1, -1, -1))
    heads: list[int] = []  # units that became active, their ops to look at

    def unit_done(v: int) -> None:
        """Unit v completed: its rank wakes; its stream's next unit may head it."""
        ready.append(unit_rank[v])
        if of_stream is not None:
            sv = of_stream[v]
            h = head[sv] = head[sv] + 1
            su = sunits[sv]
            if h < len(su) and posted[su[h]]:
                heads.append(su[h])

    def finish(i: int) -> None:
        """Op i completed (buffered sends): wake its waiters, count it in its unit."""
        done[i] = 1
        w = waiters[i]
        if w is not None:
            ready.extend(w)
        v = unit_of_op[i]
        left[v] -= 1
        if not left[v]:
            unit_done(v)

    while ready:
        r = ready.pop()
        row, wa, k = steps[r], wait_unit[r], pc[r]
        if k and wa[k - 1] >= 0 and left[wa[k - 1]]:
            continue  # the previous step is a BATCH with wait, not complete yet
        n = len(row)
        while k < n:
            x = row[k]
            if type(x) is int:  # a comm step: post its unit
                witness.append((r, k))
                k += 1
                posted[x] = 1
                if of_stream is None or sunits[of_stream[x]][head[of_stream[x]]] == x:
                    heads.append(x)
                # an active unit completes every op the send rule allows; a
                # unit that completes wakes its rank and lets the next unit
                # of its stream become active
                while heads:
                    u = heads.pop()
                    active[u] = 1
                    for i in unit_ops[u]:
                        j = partner[i]
                        if not rendezvous:
                            if done[i]:
                                continue
                            if is_send[i]:
                                finish(i)
                                if j >= 0 and active[unit_of_op[j]] and not done[j]:
                                    finish(j)
                            elif j >= 0 and done[j]:
                                finish(i)
                            continue
                        if j < 0 or done[i]:
                            continue
                        v = unit_of_op[j]
                        if not active[v]:
                            continue
                        done[i] = done[j] = 1
                        w = waiters[i]
                        if w is not None:
                            ready.extend(w)
                        w = waiters[j]
                        if w is not None:
                            ready.extend(w)
                        left[v] -= 1
                        if not left[v]:
                            unit_done(v)
                        left[u] -= 1
                        if not left[u]:
                            unit_done(u)
                if wa[k - 1] >= 0 and left[x]:
                    break  # a BATCH with wait, not complete yet
                continue
            if x is None:
                break  # an input never comes before this step: it never begins
            for i in x:
                if not done[i]:
                    # wait for op i, once: a rank woken for something else
                    # finds itself blocked on the same op again
                    if blocked_on[r] != i:
                        blocked_on[r] = i
                        w = waiters[i]
                        if w is None:
                            waiters[i] = [r]
                        else:
                            w.append(r)
                    break
            else:
                witness.append((r, k))
                k += 1
                continue
            break
        pc[r] = k
    if len(witness) != s.num_actions or not all(done):
        return None
    return tuple(witness), num_events(idx, m)


def num_events(idx, m: CommModel) -> int:
    """How many events ``build`` makes (NEVER not counted)."""
    n = sum(len(row) for row in idx.steps) + idx.num_waits
    if m.has_streams:
        n += 2 * len(idx.unit_rank)
    if m.rendezvous:
        return n + idx.num_pairs + len(idx.unmatched)
    return n + idx.num_ops - sum(idx.is_send)


def decide(s: Schedule, comm_model: "str | CommModel") -> GraphOutcome:
    fast = _fast(s, comm_model)
    if fast is not None:
        return GraphOutcome(fast[0], None, None, fast[1], 0)
    return decide_explicit(s, comm_model)


def decide_explicit(s: Schedule, comm_model: "str | CommModel") -> GraphOutcome:
    """Kahn's algorithm on the explicit graph (``build``); the counterexample path."""
    g, never = build(s, comm_model)
    succ, indeg = g.succ, list(g.indeg)
    n = len(indeg)
    queue = [v for v in range(n) if indeg[v] == 0]
    i = 0
    for v in queue:  # the list grows while it is walked: Kahn's algorithm
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                queue.append(w)
    num_events = n - 1  # NEVER is not an event
    A = g.num_actions
    if len(queue) == num_events:
        brank, bstep = g.brank, g.bstep
        witness = tuple((brank[v], bstep[v]) for v in queue if v <= A)
        return GraphOutcome(witness, None, None, num_events, 0)
    fired = bytearray(n)
    for v in queue:
        fired[v] = 1
    return _refute(s, g, never, fired, num_events - len(queue), num_events)


def _refute(s: Schedule, g: _Graph, never: int, fired: bytearray, num_stuck: int, total: int) -> GraphOutcome:
    n = len(g.indeg)
    preds: dict[int, list[int]] = {}
    for v in range(n):
        for w in g.succ[v]:
            if not fired[w]:
                preds.setdefault(w, []).append(v)
    # start at the first stuck step, lowest rank first
    start = next((v for v in range(1, g.num_actions + 1) if not fired[v]), None)
    if start is None:  # only op completions are stuck
        start = min((v for v in range(1, n) if not fired[v]), key=g.place)
    path: list[int] = [start]
    seen = {start: 0}
    cur = start
    while True:
        cands = [p for p in preds.get(cur, ()) if not fired[p]]
        if never in cands:
            nxt = never
        else:
            # prefer a wait on another action over program order, for short cycles
            pr, pk = g.place(cur)
            other = [p for p in cands if g.place(p) != (pr, pk - 1)]
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


def _event(s: Schedule, g: _Graph, v: int) -> Event:
    kind = _KINDS[g.node_kind(v)]
    if kind is EventKind.NEVER:
        return Event(kind, -1, -1)
    r, k = g.place(v)
    if kind is EventKind.OP_DONE:
        x, y = g.extra[v - g.num_actions - 1][3]
        ops = g.idx.ops
        rec = ops[x]
        peer = None if y < 0 else ops[y]
        return Event(
            kind, rec[0], rec[1], rec[2], rec[3],
            None if peer is None else (peer[0], peer[1], peer[2]),
            None if peer is None else peer[3],
        )
    return Event(kind, r, k, None, s.actions[r][k])

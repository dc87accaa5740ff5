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

What it does not cover: the static properties (verifier.check.properties); a
well-formed schedule is assumed (the checker ensures it).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.results.check import Event, EventKind, Hop, PropertyId, Violation, WaitCycle
from verifier.ir import Batch, CommKind, Compute, Overlap, Schedule
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


def build(s: Schedule, comm_model: str) -> tuple[_Graph, int]:
    """The happens-before graph of a well-formed schedule; returns (graph, NEVER)."""
    idx = index(s)
    A = s.num_actions
    succ: list[list[int]] = [[] for _ in range(A + 1)]
    indeg = [0] * (A + 1)
    indeg[0] = 1  # NEVER never fires
    brank: list[int] = [-1]
    bstep: list[int] = [-1]
    extra: list[tuple] = []
    never = 0

    base: list[int] = []
    ret: list[list[int]] = []
    b = 1
    for r, acts in enumerate(s.actions):
        n = len(acts)
        base.append(b)
        brank.extend([r] * n)
        bstep.extend(range(n))
        rr = list(range(b, b + n))
        for k, a in enumerate(acts):
            if type(a) is Batch and a.wait:
                extra.append((_RETURN, r, k, None))
                succ.append([])
                indeg.append(0)
                v = A + len(extra)
                succ[b + k].append(v)
                indeg[v] += 1
                rr[k] = v
        for k in range(1, n):
            succ[rr[k - 1]].append(b + k)
            indeg[b + k] += 1
        ret.append(rr)
        b += n

    ops, partner = idx.ops, idx.partner
    done = [0] * len(ops)
    if comm_model == "nccl":
        unit_of_op = [0] * len(ops)
        units: list[tuple[int, int, int, int]] = []  # (rank, step, ACTIVE, UNIT_DONE)
        last_rank, last_step, prev_ud = -1, -1, -1
        for i, (r, k, _sub, _op) in enumerate(ops):
            if r != last_rank or k != last_step:
                extra.append((_ACTIVE, r, k, None))
                succ.append([])
                indeg.append(0)
                act = A + len(extra)
                bk = base[r] + k
                succ[bk].append(act)
                indeg[act] += 1
                if r == last_rank and prev_ud >= 0:
                    succ[prev_ud].append(act)
                    indeg[act] += 1
                extra.append((_UNIT_DONE, r, k, None))
                succ.append([])
                indeg.append(0)
                ud = A + len(extra)
                rv = ret[r][k]
                if rv != bk:  # a wait-BATCH returns when its unit is done
                    succ[ud].append(rv)
                    indeg[rv] += 1
                units.append((r, k, act, ud))
                last_rank, last_step, prev_ud = r, k, ud
            unit_of_op[i] = len(units) - 1
        for i, (r, k, sub, op) in enumerate(ops):
            j = partner[i]
            if j >= 0 and j < i:
                continue
            if j >= 0:
                x, y = (i, j) if (op.kind is _SF or op.kind is _SB) else (j, i)
                extra.append((_OP_DONE, ops[x][0], ops[x][1], (x, y)))
                succ.append([])
                indeg.append(0)
                d = A + len(extra)
                for z in (x, y):
                    u = units[unit_of_op[z]]
                    succ[u[2]].append(d)
                    succ[d].append(u[3])
                    indeg[u[3]] += 1
                indeg[d] += 2
                done[x] = done[y] = d
            else:
                extra.append((_OP_DONE, r, k, (i, -1)))
                succ.append([])
                indeg.append(0)
                d = A + len(extra)
                u = units[unit_of_op[i]]
                succ[never].append(d)
                succ[u[2]].append(d)
                succ[d].append(u[3])
                indeg[d] += 2
                indeg[u[3]] += 1
                done[i] = d
    else:  # eager
        for i, (r, k, sub, op) in enumerate(ops):
            bk = base[r] + k
            if op.kind is _SF or op.kind is _SB:
                done[i] = bk
                continue
            j = partner[i]
            extra.append((_OP_DONE, r, k, (i, j)))
            succ.append([])
            indeg.append(0)
            d = A + len(extra)
            succ[bk].append(d)
            src = never if j < 0 else base[ops[j][0]] + ops[j][1]
            succ[src].append(d)
            indeg[d] += 2
            done[i] = d
            rv = ret[r][k]
            if rv != bk:
                succ[d].append(rv)
                indeg[rv] += 1

    # data dependencies of computes: the first receive or compute of each
    # input on the rank, wherever it sits (a later one makes a cycle)
    for r, acts in enumerate(s.actions):
        b0 = base[r]
        for k, a in enumerate(acts):
            tp = type(a)
            if tp is not Compute and tp is not Overlap:
                continue
            bk = b0 + k
            for c in ((a,) if tp is Compute else (a.f, a.b)):
                for key in idx.needs(r, c):
                    x = idx.lookup(key)
                    src = never if x == NEVER else (done[x] if x >= 0 else b0 - 1 - x)
                    succ[src].append(bk)
                    indeg[bk] += 1
    g = _Graph()
    g.succ, g.indeg, g.brank, g.bstep, g.extra, g.num_actions, g.idx = succ, indeg, brank, bstep, extra, A, idx
    return g, never


def _fast(s: Schedule, comm_model: str):
    """Kahn's algorithm with the program-order, stream-order and pair edges left
    implicit: each rank advances while the next step's waits are met, and an
    event that fires wakes the ranks waiting for it. Returns (witness, number
    of events) when everything fires, else None (then ``decide`` builds the
    explicit graph for the counterexample). Same events, same waits as
    ``build``; the tests hold the two against each other. nccl: the units that
    reach the head of their stream wait in a list (``heads``) to complete
    their pairs, so a long cascade of completions takes no stack depth."""
    idx = index(s)
    partner = idx.partner
    nccl = comm_model == "nccl"
    R = s.num_ranks
    unit_rank, unit_ops, unit_of_op, runits = idx.unit_rank, idx.unit_ops, idx.unit_of_op, idx.runits
    num_units = len(unit_rank)
    # per rank and step (see Index): a comm step's unit (an int), a compute's
    # receives to wait for (a list; its local inputs come earlier on the
    # rank, so they have run), None for a compute that never begins
    steps, wait_unit = idx.steps, idx.wait_unit

    pc = [0] * R
    head = [0] * R  # index into runits[r] of the first unit not complete (nccl)
    posted = bytearray(num_units)
    # nccl: a unit at the head of its stream, posted, and its own pairs looked at
    active = bytearray(num_units)
    left = [len(x) for x in unit_ops]
    done = bytearray(idx.num_ops)
    waiters: list[list[int] | None] = [None] * idx.num_ops  # op -> ranks blocked on it
    blocked_on = [-1] * R  # per rank, the op its next step waits for (-1: none yet)
    witness: list[tuple[int, int]] = []
    ready = list(range(R - 1, -1, -1))
    heads: list[int] = []  # nccl: units that reached the head of their stream, to look at

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
                if nccl:
                    if runits[r][head[r]] == x:
                        heads.append(x)
                    # a unit at its head completes every pair whose other
                    # unit is at its head too; a unit that completes wakes
                    # its rank and brings the rank's next unit to the head
                    while heads:
                        u = heads.pop()
                        active[u] = 1
                        r_u = unit_rank[u]
                        for i in unit_ops[u]:
                            j = partner[i]
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
                                rv = unit_rank[v]
                                ready.append(rv)
                                h = head[rv] = head[rv] + 1
                                ru = runits[rv]
                                if h < len(ru) and posted[ru[h]]:
                                    heads.append(ru[h])
                            left[u] -= 1
                            if not left[u]:
                                ready.append(r_u)
                                h = head[r_u] = head[r_u] + 1
                                ru = runits[r_u]
                                if h < len(ru) and posted[ru[h]]:
                                    heads.append(ru[h])
                else:
                    ops = idx.ops
                    for i in unit_ops[x]:
                        j = partner[i]
                        if ops[i][3].kind is _SF or ops[i][3].kind is _SB:
                            _finish(i, done, waiters, ready, unit_of_op, left, unit_rank)
                            if j >= 0 and posted[unit_of_op[j]] and not done[j]:
                                _finish(j, done, waiters, ready, unit_of_op, left, unit_rank)
                        elif j >= 0 and posted[unit_of_op[j]] and not done[i]:
                            _finish(i, done, waiters, ready, unit_of_op, left, unit_rank)
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
    num_waits = idx.num_waits
    if nccl:
        n_events = s.num_actions + num_waits + 2 * num_units + idx.num_pairs + len(idx.unmatched)
    else:
        n_events = s.num_actions + num_waits + sum(1 for o in idx.ops if not (o[3].kind is _SF or o[3].kind is _SB))
    return tuple(witness), n_events


def _finish(i, done, waiters, ready, unit_of_op, left, unit_rank) -> None:
    """Eager: op i completes; the ranks waiting for it, or for its unit, wake."""
    done[i] = 1
    w = waiters[i]
    if w is not None:
        ready.extend(w)
    u = unit_of_op[i]
    left[u] -= 1
    if not left[u]:
        ready.append(unit_rank[u])


def decide(s: Schedule, comm_model: str) -> GraphOutcome:
    fast = _fast(s, comm_model)
    if fast is not None:
        return GraphOutcome(fast[0], None, None, fast[1], 0)
    return decide_explicit(s, comm_model)


def decide_explicit(s: Schedule, comm_model: str) -> GraphOutcome:
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
            kind, rec[0], rec[1], rec[2], str(rec[3]),
            None if peer is None else (peer[0], peer[1], peer[2]),
            "" if peer is None else str(peer[3]),
        )
    return Event(kind, r, k, None, str(s.actions[r][k]))

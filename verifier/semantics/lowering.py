"""Lowering: a compute-only schedule -> the same schedule with communication.

The rule (design.md section 3, made safe for in-order communication streams),
shared by every consumer:

- a send goes right after the compute that produces its data: SEND_F(s, m)
  after F(s, m) when the next stage of s is on another rank; SEND_B(s, m) after
  B(s, m) or I(s, m) when the previous stage of s is on another rank;
- a receive goes right before the compute that consumes it (RECV_F(s, m)
  before F(s, m), RECV_B(s, m) before B(s, m) or I(s, m)), *or earlier where
  that is needed so every rank posts its messages in one global order*: the
  order in which their data are produced in a reference execution of the
  compute-only schedule (every compute as soon as possible with unit
  durations F=I=W=1, B=2; ties by rank, then step). A receive is moved up only
  past sends of later messages;
- neighbouring stages on the same rank exchange nothing (the turn of a V);
- all communication between two consecutive computes of a rank is posted as
  one ``Batch(wait=False)`` in that global order; only the computes that
  consume a receive wait for it.

Why the global order: under the strict ``nccl`` model a rank's communication
runs in post order on one stream, so two ranks that post the two directions of
their traffic in opposite orders wait on each other forever (ZB-V 2x4 with
receives placed naively: rank 0 posts SEND_F(0,2) before RECV_F(3,0) while
rank 1 posts SEND_F(2,0) before RECV_F(1,2)). When every rank posts in one
global order, messages complete in that order, so the lowered schedule is
deadlock-free under ``nccl`` whenever its compute order can run at all. When
it cannot (a dependency cycle), the messages of the computes that never run in
the reference execution are placed by the plain rule and the checker reports
the fault.

Not covered: DeepSeek's own DualPipe communication pattern (its generators
emit that directly, with ``Batch(wait=True)`` before every compute).
"""

from __future__ import annotations

from verifier.ir import (
    Action,
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Schedule,
    ScheduleError,
    computes_of,
)
from verifier.semantics.routes import Routes, routes_of

_BACKWARD = (ComputeKind.B, ComputeKind.I)


def _recvs(nb: Routes, rank: int, c: Compute) -> list[Comm]:
    if c.kind is ComputeKind.F:
        other = nb.prev[c.stage]
        if other is not None and nb.rank_of[other] != rank:
            return [Comm(CommKind.RECV_F, c.stage, c.mb)]
    elif c.kind in _BACKWARD:
        other = nb.next[c.stage]
        if other is not None and nb.rank_of[other] != rank:
            return [Comm(CommKind.RECV_B, c.stage, c.mb)]
    return []


def _sends(nb: Routes, rank: int, c: Compute) -> list[Comm]:
    if c.kind is ComputeKind.F:
        other = nb.next[c.stage]
        if other is not None and nb.rank_of[other] != rank:
            return [Comm(CommKind.SEND_F, c.stage, c.mb)]
    elif c.kind in _BACKWARD:
        other = nb.prev[c.stage]
        if other is not None and nb.rank_of[other] != rank:
            return [Comm(CommKind.SEND_B, c.stage, c.mb)]
    return []


def _inputs(nb: Routes, c: Compute) -> list[tuple[str, int, int]]:
    """The data a compute waits for, as ('F'|'B'|'I', stage, mb) produced by another compute."""
    if c.kind is ComputeKind.F:
        p = nb.prev[c.stage]
        return [] if p is None else [("F", p, c.mb)]
    if c.kind in _BACKWARD:
        n = nb.next[c.stage]
        return [("F", c.stage, c.mb)] + ([] if n is None else [("B", n, c.mb)])
    return [("I", c.stage, c.mb)]


def _produced(c: Compute) -> list[tuple[str, int, int]]:
    if c.kind is ComputeKind.F:
        return [("F", c.stage, c.mb)]
    if c.kind is ComputeKind.B:
        return [("B", c.stage, c.mb)]
    if c.kind is ComputeKind.I:
        return [("B", c.stage, c.mb), ("I", c.stage, c.mb)]
    return [("W", c.stage, c.mb)]


# Unit durations of the reference execution (B = I + W, an OVERLAP costs both halves).
_DURATION = {ComputeKind.F: 1, ComputeKind.B: 2, ComputeKind.I: 1, ComputeKind.W: 1}


def reference_order(s: Schedule) -> dict[tuple[int, int], tuple[int, int, int]]:
    """(rank, step) -> (finish time, rank, step) in a reference execution of the computes.

    The reference execution starts every compute as soon as its rank is free and
    its inputs exist, with unit durations (F=1, I=1, W=1, B=2). Sorting by the
    returned keys gives a global order consistent with every rank's program
    order and with every data dependency. Steps that never run (a dependency
    cycle) are absent.
    """
    nb = routes_of(s)
    ready: dict[tuple[str, int, int], int] = {}
    pos = [0] * s.num_ranks
    free = [0] * s.num_ranks
    order: dict[tuple[int, int], tuple[int, int, int]] = {}
    progressed = True
    while progressed:
        progressed = False
        for r, acts in enumerate(s.actions):
            while pos[r] < len(acts):
                cs = computes_of(acts[pos[r]])
                needs = [d for c in cs for d in _inputs(nb, c)]
                if not all(d in ready for d in needs):
                    break
                start = max([free[r]] + [ready[d] for d in needs])
                free[r] = start + sum(_DURATION[c.kind] for c in cs)
                for c in cs:
                    for d in _produced(c):
                        ready[d] = free[r]
                order[(r, pos[r])] = (free[r], r, pos[r])
                pos[r] += 1
                progressed = True
    return order


def lower(s: Schedule) -> Schedule:
    """Insert communication into a compute-only schedule by the rule above."""
    if not s.is_compute_only:
        raise ScheduleError(
            "already has communication actions; lowering takes a compute-only schedule",
            s.name or None,
        )
    order = reference_order(s)
    nb = routes_of(s)
    never = (1 << 62, 0, 0, 0)  # key of messages whose producer never runs
    # key of each message = the reference key of its producing compute, then its index there
    key: dict[tuple[CommKind, int, int], tuple[int, int, int, int]] = {}
    for r, acts in enumerate(s.actions):
        for i, a in enumerate(acts):
            k = order.get((r, i))
            for j, op in enumerate(x for c in computes_of(a) for x in _sends(nb, r, c)):
                key[(op.kind, op.stage, op.mb)] = never if k is None else (*k, j)

    def msg_key(op: Comm) -> tuple[int, int, int, int]:
        if op.kind.is_send:
            return key.get((op.kind, op.stage, op.mb), never)
        if op.kind is CommKind.RECV_F:  # the matched send: SEMANTICS.md "Messages"
            return key.get((CommKind.SEND_F, nb.prev[op.stage], op.mb), never)
        return key.get((CommKind.SEND_B, nb.next[op.stage], op.mb), never)

    out: list[list[Action]] = []
    for rank, acts in enumerate(s.actions):
        # slot i = the gap before compute i (slot len(acts) = after the last one)
        slots: list[list[Comm]] = [[] for _ in range(len(acts) + 1)]
        placed: list[tuple[int, Comm]] = []
        for i, a in enumerate(acts):
            for c in computes_of(a):
                placed.extend((i, op) for op in _recvs(nb, rank, c))
                placed.extend((i + 1, op) for op in _sends(nb, rank, c))
        # walk messages from the latest key down: a receive may not sit after a
        # message with a later key, so it moves up to that message's gap
        placed.sort(key=lambda x: msg_key(x[1]), reverse=True)
        limit = len(acts)
        for slot, op in placed:
            if not op.kind.is_send:
                slot = min(slot, limit)
            limit = min(limit, slot)
            slots[slot].append(op)
        lowered: list[Action] = []
        for i in range(len(acts) + 1):
            if slots[i]:
                lowered.append(Batch(tuple(sorted(slots[i], key=msg_key)), wait=False))
            if i < len(acts):
                lowered.append(acts[i])
        out.append(lowered)
    return s.with_actions(out)


LoweredMap = tuple[tuple["int | tuple[int | None, ...]", ...], ...]


def lowering_map(s: Schedule, lowered: Schedule) -> LoweredMap:
    """Where each step of ``lowered = lower(s)`` (or ``torch_lower(s)``) comes from,
    per rank and lowered step: the step of ``s`` for a compute (both keep the
    computes in order), or for an inserted BATCH (or plain op) a tuple with, per op, the step of ``s`` of
    the compute it was inserted for (the producer of a send, the consumer of a
    receive; the first such compute when a schedule runs one twice, None if
    none). Computed from the two schedules, so ``lower`` pays nothing for it;
    ``verifier.format.origin`` reads it to name places in the user's steps."""
    out = []
    nb = routes_of(s)
    for r, (acts, lacts) in enumerate(zip(s.actions, lowered.actions)):
        cause: dict[Comm, int] = {}
        for i, a in enumerate(acts):
            for c in computes_of(a):
                for op in _sends(nb, r, c) + _recvs(nb, r, c):
                    cause.setdefault(op, i)
        row: list = []
        k = 0
        for a in lacts:
            if isinstance(a, Batch):
                row.append(tuple(cause.get(op) for op in a.ops))
            elif isinstance(a, Comm):  # a plain op (PyTorch's lowering posts each on its own)
                row.append((cause.get(a),))
            else:
                row.append(k)
                k += 1
        out.append(tuple(row))
    return tuple(out)


def lower_with_map(s: Schedule) -> tuple[Schedule, LoweredMap]:
    """``lower(s)`` and its ``lowering_map``."""
    low = lower(s)
    return low, lowering_map(s, low)


def lower_if_compute_only(s: Schedule) -> Schedule:
    """The schedule the engines, the replay and the executors run: ``lower(s)``
    when ``s`` is compute-only and has actions, else ``s`` itself (a schedule
    without any action has nothing to lower)."""
    return lower(s) if s.is_compute_only and s.num_actions else s


def strip_communication(s: Schedule) -> Schedule:
    """The compute-only skeleton of a schedule (inverse of ``lower`` on computes)."""
    return s.with_actions(
        [[a for a in acts if computes_of(a)] for acts in s.actions]
    )

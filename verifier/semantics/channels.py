"""The communication ops of any schedule, numbered and paired FIFO: the part of
the semantics tables that needs no well-formedness.

What it is: ``CommIndex(s)`` reads a schedule's actions as written (an action
on the wrong rank, an unmatched message, an empty BATCH are all taken as they
are) and states, once for every reader:

- the numbering (the one of verifier.semantics.tables): comm ops 0.. in rank,
  then post order (a BATCH's ops in order); comm units (a plain op, or a BATCH
  as a whole) likewise;
- each op's peer: the rank holding the stage at its other end
  (``Routes.peer_stage``), whatever rank posts the op;
- the FIFO channels (SEMANTICS.md "Messages"): an op posted on rank r with
  peer p is a send on channel (r, p) or a receive on channel (p, r); the k-th
  send of a channel is matched with its k-th receive (``fifo_pairs``, which
  verifier.semantics.tables' matching calls too);
- "the first RECV_F(s, m) of the rank": ``first_recv[(rank, kind, stage, mb)]``,
  the first receive of that kind, stage and micro-batch posted on that rank.

An op whose stage is on no route or not declared, or has no neighbour that way
(or an undeclared one), has no peer: ``op_peer`` -1, on no channel; it is
listed in ``bad`` with the reason, as is an op whose micro-batch is out of
range (that one still takes its channel). ``check()`` raises a located
``ScheduleError`` for the first of them in op order.

Readers: the analysis replay (verifier.analysis.replay_tables), the reference
executor (reference.machine); tests/test_semantics_channels.py holds it
against ``Tables`` on well-formed schedules.

Not covered: anything about computes beyond the first receives, payload
checks, blocking (verifier.semantics.tables, the engines).
"""

from __future__ import annotations

from functools import cached_property

from verifier.ir import Batch, Comm, Schedule, ScheduleError, loc
from verifier.semantics.routes import Routes, routes_of


class CommIndex:
    """The ops, units, peers, FIFO partners and first receives of one schedule
    (module docstring). Per op i: ``op_comm``, ``op_rank``, ``op_step``,
    ``op_unit``, ``op_send`` (1 for a send), ``op_peer`` (the peer rank, -1
    if none), ``op_pos`` (its position k on its channel, -1 if on none; built
    on first use), ``partner``
    (the op matched with i, or -1). Per unit u: ``unit_rank``,
    ``unit_step``, ``unit_ops`` (a range of op indices, empty for an empty
    BATCH); ``runits[r]`` rank r's units in post order, ``unit_at[r][step]``.
    Channels: ``counts[(src, dst)] = (#sends, #receives)`` for every channel
    an op takes; ``unmatched``: (op, k) for every op past its channel's other
    side, by channel, sends first. ``first_recv``, ``bad``: module docstring."""

    def __init__(self, s: Schedule, routes: Routes | None = None):
        nb = self.routes = routes if routes is not None else routes_of(s)
        R, M = s.num_ranks, s.num_microbatches
        op_comm: list[Comm] = []
        op_rank: list[int] = []
        op_step: list[int] = []
        op_unit: list[int] = []
        op_send = bytearray()
        op_peer: list[int] = []
        unit_rank: list[int] = []
        unit_step: list[int] = []
        unit_ops: list[range] = []
        runits: list[list[int]] = [[] for _ in range(R)]
        unit_at: list[dict[int, int]] = [{} for _ in range(R)]
        first_recv: dict[tuple, int] = {}
        bad: list[tuple[int, str]] = []
        chans: dict[int, tuple[list[int], list[int]]] = {}
        peer_of: dict[tuple, tuple[int, str]] = {}  # (kind, stage) -> (peer rank or -1, why)
        for r, acts in enumerate(s.actions):
            for k, a in enumerate(acts):
                ta = type(a)
                if ta is Comm:
                    ops: tuple = (a,)
                elif ta is Batch:
                    ops = a.ops
                else:
                    continue
                u = len(unit_rank)
                unit_rank.append(r)
                unit_step.append(k)
                runits[r].append(u)
                unit_at[r][k] = u
                i0 = len(op_comm)
                for c in ops:
                    i = len(op_comm)
                    op_comm.append(c)
                    op_rank.append(r)
                    op_step.append(k)
                    op_unit.append(u)
                    kind = c.kind
                    got = peer_of.get((kind, c.stage))
                    if got is None:
                        got = peer_of[(kind, c.stage)] = _peer(nb, kind, c.stage)
                    peer, why = got
                    op_peer.append(peer)
                    send = kind.is_send
                    op_send.append(send)
                    if peer < 0:
                        bad.append((i, why))
                    else:
                        if not 0 <= c.mb < M:
                            bad.append((i, f"has micro-batch {c.mb} outside 0..{M - 1}"))
                        key = r * R + peer if send else peer * R + r
                        ch = chans.get(key)
                        if ch is None:
                            ch = chans[key] = ([], [])
                        ch[0 if send else 1].append(i)
                    if not send:
                        first_recv.setdefault((r, kind, c.stage, c.mb), i)
                unit_ops.append(range(i0, len(op_comm)))
        self.op_comm, self.op_rank, self.op_step = op_comm, op_rank, op_step
        self.op_unit, self.op_send, self.op_peer = op_unit, op_send, op_peer
        self.unit_rank, self.unit_step, self.unit_ops = unit_rank, unit_step, unit_ops
        self.runits, self.unit_at = runits, unit_at
        self.first_recv, self.bad = first_recv, bad
        self.num_ops = len(op_comm)
        self.partner, self.unmatched, self.counts, _ = fifo_pairs(chans, self.num_ops, R)
        self._chans = chans

    @cached_property
    def op_pos(self) -> list[int]:
        """Per op: its position k on its channel (the k-th send or receive), -1 if on none."""
        pos = [-1] * self.num_ops
        for sends, recvs in self._chans.values():
            for lst in (sends, recvs):
                for k, i in enumerate(lst):
                    pos[i] = k
        return pos

    def op_at(self, rank: int, step: int, sub: int | None = None) -> int:
        """The index of the op at ``rank``'s ``step`` (``sub``: its index in a BATCH)."""
        rg = self.unit_ops[self.unit_at[rank][step]]
        return rg[0] if sub is None else rg[sub]

    def check(self, hint: str = "") -> None:
        """Raise a located ``ScheduleError`` for the first op in ``bad`` (module
        docstring), its message ending in ``hint``."""
        if self.bad:
            i, why = min(self.bad)
            raise ScheduleError(f"{self.op_comm[i]} {why}{hint}", loc(self.op_rank[i], self.op_step[i]))


def _peer(nb: Routes, kind, stage: int) -> tuple[int, str]:
    """(peer rank, "") of an op of ``kind`` on ``stage``, or (-1, why not)."""
    if stage not in nb.route_of or stage not in nb.rank_of:
        return -1, "names a stage that is not on any route"
    other = nb.peer_stage(kind, stage)
    if other is None:
        return -1, "has no peer (its route ends there)"
    if other not in nb.rank_of:
        return -1, f"has no peer (stage {other} is not declared)"
    return nb.rank_of[other], ""


def fifo_pairs(chans: dict, num_ops: int, R: int, sig: list | None = None):
    """FIFO matching per ordered rank pair (SEMANTICS.md "Messages"): ``chans``
    maps ``src * R + dst`` to (its sends, its receives), op indices in post
    order. Returns ``(partner, unmatched, counts, mismatched)``: the k-th send
    matched with the k-th receive (``partner[i]``, -1 if none), the ops past
    the other side as (op, k) by channel, sends first, ``counts[(src, dst)]``,
    and, when ``sig`` (per op a payload key) is given, the matched (send,
    receive) whose keys differ (else an empty list)."""
    partner = [-1] * num_ops
    unmatched: list[tuple[int, int]] = []
    mismatched: list[tuple[int, int]] = []
    counts: dict[tuple[int, int], tuple[int, int]] = {}
    for key in sorted(chans):
        a, b = chans[key]
        if not a and not b:
            continue  # a channel no op takes
        counts[divmod(key, R)] = (len(a), len(b))
        if sig is None:
            for x, y in zip(a, b):
                partner[x] = y
                partner[y] = x
        else:
            for x, y in zip(a, b):
                partner[x] = y
                partner[y] = x
                if sig[x] != sig[y]:
                    mismatched.append((x, y))
        unmatched.extend((x, k) for k, x in enumerate(a[len(b):], start=len(b)))
        unmatched.extend((x, k) for k, x in enumerate(b[len(a):], start=len(a)))
    return partner, unmatched, counts, mismatched

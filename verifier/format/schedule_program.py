"""A schedule written as the program a runtime following it would issue.

``program_from_schedule(s)`` turns each rank's actions into the calls a runtime
makes (specs/SEMANTICS.md, "Programs" and "Recorded programs"): a plain
SEND/RECV is an ``isend``/``irecv`` with its own handle (peer from the route,
payload named by its producing stage), a ``BATCH`` one ``batch_isend_irecv``
and, with ``wait``, a ``wait`` on each of its handles; a compute first waits on
the receives it consumes (the rank's first RECV of that (stage, micro-batch),
unless already waited), then runs. It is how this project's own schedules
become programs: the program checker and the schedule checker can be held
against each other, and benchmarks get programs of any size without a run.

What it does not cover: schedules whose ``dependencies`` fail (a compute that
needs a receive the rank posts later, or never: refused with ScheduleError),
source lines (``where`` is the schedule's own "rank R step S" place).
"""

from __future__ import annotations

from verifier.errors import ScheduleError
from verifier.ir import Batch, Comm, CommKind, Compute, ComputeKind, Overlap, Schedule
from verifier.program import (
    BatchP2P,
    ComputeOp,
    Group,
    P2P,
    Payload,
    Program,
    RankProgram,
    Wait,
    Where,
)
from verifier.semantics.routes import Routes, routes_of

SHAPE = (1,)
DTYPE = "float32"


def _peer_and_payload(c: Comm, rt: Routes) -> tuple[int, Payload]:
    s, m = c.stage, c.mb
    if c.kind is CommKind.SEND_F:
        nb, pay = rt.next.get(s), Payload("F", s, m)
    elif c.kind is CommKind.RECV_F:
        nb = rt.prev.get(s)
        pay = Payload("F", -1 if nb is None else nb, m)
    elif c.kind is CommKind.SEND_B:
        nb, pay = rt.prev.get(s), Payload("B", s, m)
    else:
        nb = rt.next.get(s)
        pay = Payload("B", -1 if nb is None else nb, m)
    peer = rt.rank_of.get(nb, -1) if nb is not None else -1
    return peer, pay


class _RankWriter:
    def __init__(self, rank: int, rt: Routes):
        self.rank, self.rt = rank, rt
        self.ops: list = []
        self.handle = 0
        self.recv_handle: dict[tuple, int] = {}  # (kind, stage, mb) of a RECV -> its first handle
        self.waited: set[int] = set()

    def p2p(self, c: Comm, step: int, top: bool) -> P2P:
        peer, pay = _peer_and_payload(c, self.rt)
        if peer < 0:
            raise ScheduleError(f"{c.kind.value}({c.stage}, {c.mb}) has no peer on its route",
                                f"rank {self.rank} step {step}")
        h = self.handle
        self.handle += 1
        if c.kind in (CommKind.RECV_F, CommKind.RECV_B):
            self.recv_handle.setdefault((c.kind, c.stage, c.mb), h)
        op = "isend" if c.kind in (CommKind.SEND_F, CommKind.SEND_B) else "irecv"
        return P2P(op, peer, 0, SHAPE, DTYPE, Where(f"rank {self.rank} step", step), True, 0, h,
                   pay)

    def wait(self, h: int, step: int) -> None:
        if h not in self.waited:
            self.waited.add(h)
            self.ops.append(Wait(h, Where(f"rank {self.rank} step", step)))

    def consume(self, c: Compute, step: int) -> None:
        """Wait on the receive ``c`` consumes, if its producer is on another rank."""
        rt, s = self.rt, c.stage
        if c.kind is ComputeKind.F and rt.remote(s, towards_next=False):
            key = (CommKind.RECV_F, s, c.mb)
        elif c.kind in (ComputeKind.B, ComputeKind.I) and rt.remote(s, towards_next=True):
            key = (CommKind.RECV_B, s, c.mb)
        else:
            return
        h = self.recv_handle.get(key)
        if h is None:
            raise ScheduleError(f"{c.stage}{c.kind.value}{c.mb} consumes a receive the rank has not "
                                "posted before it (dependencies fail): no program issues that",
                                f"rank {self.rank} step {step}")
        self.wait(h, step)

    def action(self, a, step: int) -> None:
        where = Where(f"rank {self.rank} step", step)
        if isinstance(a, Comm):
            self.ops.append(self.p2p(a, step, True))
        elif isinstance(a, Batch):
            entries = tuple(self.p2p(c, step, False) for c in a.ops)
            self.ops.append(BatchP2P(entries, where))
            if a.wait:
                for e in entries:
                    self.wait(e.handle, step)
        else:
            parts = (a.f, a.b) if isinstance(a, Overlap) else (a,)
            for c in parts:
                self.consume(c, step)
            for c in parts:
                self.ops.append(ComputeOp(c.kind.value, c.stage, c.mb, where))


def program_from_schedule(s: Schedule) -> Program:
    """The program of ``s`` (module docstring); ScheduleError where dependencies fail."""
    rt = routes_of(s)
    ranks = []
    for r, acts in enumerate(s.actions):
        w = _RankWriter(r, rt)
        for k, a in enumerate(acts):
            w.action(a, k)
        ranks.append(RankProgram(r, tuple(w.ops)))
    name = s.name or s.family
    return Program(num_ranks=s.num_ranks, groups=(Group(0, tuple(range(s.num_ranks)), "default"),),
                   ranks=tuple(ranks), name=f"{name} as a program" if name else "")

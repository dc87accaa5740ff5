"""Route neighbours: which stage comes before and after each stage on its
route, and on which rank it is (specs/SEMANTICS.md "Programs", "Messages").

Read from placement and routes alone, so it works on a schedule whose actions
are not checked yet: the lowering, the FIFO channels of any schedule
(verifier.semantics.channels), the well-formed tables
(verifier.semantics.tables), the analysis replay and the reference executor
read it. Two rules of SEMANTICS.md that need nothing but the routes are stated
here once: the stage at the other end of a communication op
(``Routes.peer_stage``) and what a compute consumes (``Routes.inputs``).

Not covered: the actions themselves (numbering, pairing: verifier.semantics.channels).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.ir import CommKind, ComputeKind, Schedule

# the ops whose other end holds the next stage of the route (the rest: the previous)
_TOWARDS_NEXT = frozenset((CommKind.SEND_F, CommKind.RECV_B))
_F, _I, _W = ComputeKind.F, ComputeKind.I, ComputeKind.W


@dataclass(frozen=True)
class Routes:
    """Route neighbours of every stage on a route: ``rank_of[s]``, ``next[s]`` /
    ``prev[s]`` (None at a route's end), ``route_of[s]``, and ``base[s]`` (the
    dense key base of s). A stage on two routes takes its last (well-formed
    refuses that schedule) takes its first, as ``Schedule.next_stage`` does."""

    rank_of: dict
    next: dict
    prev: dict
    route_of: dict
    base: dict

    def remote(self, stage: int, towards_next: bool) -> bool:
        """Whether ``stage``'s neighbour that way is on another rank."""
        o = (self.next if towards_next else self.prev)[stage]
        return o is not None and self.rank_of[o] != self.rank_of[stage]

    def peer_stage(self, kind: CommKind, stage: int) -> int | None:
        """The stage at the other end of an op of ``kind`` on ``stage``
        (SEMANTICS.md "Messages"): the next stage for SEND_F and RECV_B, the
        previous for SEND_B and RECV_F; None at a route's end. KeyError for a
        stage on no route."""
        return (self.next if kind in _TOWARDS_NEXT else self.prev)[stage]

    def inputs(self, rank: int, kind: ComputeKind, stage: int) -> tuple:
        """What a compute of ``kind`` on ``stage``, run on ``rank``, consumes
        (SEMANTICS.md "Programs"), in order, each of the same micro-batch:
        ``(F, s)`` the output of F(s) on this rank, ``("BI", s)`` the input
        gradient of the first B or I of s on this rank, ``(I, s)`` the state
        the I of s saved, ``(RECV_F, s)`` / ``(RECV_B, s)`` this rank's first
        receive of that kind on s. An F reads the previous stage's output (none
        on a route's first stage); a B or I its own F and the next stage's
        input gradient (none on a route's last stage: the loss); a W its I.
        KeyError for a stage on no route."""
        if kind is _F:
            p = self.prev[stage]
            if p is None:
                return ()
            return ((_F, p),) if self.rank_of[p] == rank else ((CommKind.RECV_F, stage),)
        if kind is _W:
            return ((_I, stage),)
        n = self.next[stage]
        if n is None:
            return ((_F, stage),)
        return ((_F, stage), ("BI", n) if self.rank_of[n] == rank else (CommKind.RECV_B, stage))


def routes_of(s: Schedule) -> Routes:
    """The route neighbours of ``s`` (placement and routes only)."""
    M = s.num_microbatches
    rank_of = {st.id: st.rank for st in s.stages}
    base = {st.id: n * M for n, st in enumerate(s.stages)}
    nxt: dict[int, int | None] = {}
    prv: dict[int, int | None] = {}
    route_of: dict[int, int] = {}
    for ri, r in enumerate(s.routes):
        st = r.stages
        for k, sid in enumerate(st):
            if sid in route_of:
                continue
            nxt[sid] = st[k + 1] if k + 1 < len(st) else None
            prv[sid] = st[k - 1] if k > 0 else None
            route_of[sid] = ri
    return Routes(rank_of, nxt, prv, route_of, base)

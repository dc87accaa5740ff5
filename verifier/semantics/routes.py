"""Route neighbours: which stage comes before and after each stage on its
route, and on which rank it is (specs/SEMANTICS.md "Programs", "Messages").

Read from placement and routes alone, so it works on a schedule whose actions
are not checked yet (the lowering reads it; ``verifier.semantics.tables``
builds on it). Not covered: anything about actions.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.ir import Schedule


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

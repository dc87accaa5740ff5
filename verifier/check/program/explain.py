"""Why a program's replay stops, in the user's words (``verifier.check.program.replay``).

``Explainer(replay)`` reads the final state of a replay that did not terminate:
where each rank blocks (``blocked``) and the chain of waits from the lowest
blocked rank (``chain``): the partner op never posted because its rank blocks
earlier (follow that rank), the unit ahead on a stream, a member that never
reaches a collective, until an op that can never complete or a rank already
named (a cycle). ``summary`` is the one line "rank 2 blocks in train.py:88
`recv` from rank 3 (...) while rank 3 blocks in ...".

What it does not cover: running the replay (``verifier.check.program.replay``).
"""

from __future__ import annotations

from verifier.program import BatchP2P, op_phrase
from verifier.results.program import Blocked, Place


class Explainer:
    """Turns the replay's final state into sentences about the user's calls."""

    def __init__(self, rp: _Replay):
        self.rp, self.p, self.pl = rp, rp.p, rp.pl

    def place(self, rank: int, k: int, sub: int | None = None) -> Place:
        op = self.p.ranks[rank].ops[k]
        shown = op.ops[sub] if sub is not None and isinstance(op, BatchP2P) else op
        return Place(rank, k, shown.where if sub is None else op.where, sub, op_phrase(shown))

    def req_text(self, q: int) -> str:
        r, k, sub = self.pl.req_place[q]
        pl = self.place(r, k, sub)
        inside = " in a batch_isend_irecv" if sub is not None else ""
        return f"rank {r}'s {pl.phrase}{inside} at {pl.where} (op {k})"

    def stuck_req(self, u: int) -> int | None:
        for q in self.rp.unit_reqs[u]:
            if not self.rp.req_done[q]:
                return q
        return None

    def why_req(self, q: int):
        """(sentence, next rank to follow or None) for a request that never completes."""
        rp, pl = self.rp, self.pl
        r = pl.req_place[q][0]
        u = rp.req_unit[q]
        if not rp.unit_ready[u]:
            return self.why_queued(u)
        m = pl.partner[q]
        op = pl.req_op[q]
        if m < 0:
            peer = op.peer
            if not 0 <= peer < self.p.num_ranks or peer == r:
                return f"it names rank {peer}, which has no such partner", None
            want = "recv from" if op.is_send else "send to"
            if rp.pc[peer] < len(self.p.ranks[peer].ops):  # the peer stops before it gets there
                return (f"rank {peer} has not posted the matching {want} rank {r} (FIFO per group "
                        f"and rank pair) when it blocks itself{self.ended(peer)}"), peer
            tail = self.ended(peer)
            return (f"rank {peer} never posts the matching {want} rank {r} "
                    f"(FIFO per group and rank pair){tail}"), None
        if rp.req_unit[m] < 0:
            mr, mk, _ = pl.req_place[m]
            return (f"its partner {self.req_text(m)} is never posted: rank {mr} stops before it"
                    ), mr
        return self.why_queued(rp.req_unit[m])

    def why_queued(self, u: int):
        """A unit not at the head of its stream: what it is queued behind."""
        rp = self.rp
        r, k = rp.unit_place[u]
        st = rp.streams[rp.unit_stream[u]]
        head = st[0][st[1]]
        hr, hk = rp.unit_place[head]
        what = "rank {}'s communication stream".format(r) if rp.rules.streams == "rank" else \
            "its communicator's stream on rank {}".format(r)
        hq = self.stuck_req(head)
        via = f"; that waits for {self.req_text(rp.pl.partner[hq])}" if hq is not None and rp.pl.partner[hq] >= 0 else ""
        return (f"it is queued on {what} behind {self.place(hr, hk).phrase} at "
                f"{self.place(hr, hk).where} (op {hk}), which never completes{via}"), \
            (rp.pl.req_place[rp.pl.partner[hq]][0] if hq is not None and rp.pl.partner[hq] >= 0 else None)

    def ended(self, rank: int) -> str:
        rp = self.p.ranks[rank]
        if rp.outcome == "finished":
            return ""
        err = f": {rp.error}" if rp.error else ""
        return f"; rank {rank}'s recording ends with outcome {rp.outcome}{err}"

    def blocked(self, rank: int) -> Blocked:
        """Where ``rank`` stops, and why."""
        return Blocked(self.place(rank, self.rp.pc[rank]), self.reason(rank)[0])

    def reason(self, rank: int):
        rp, pl = self.rp, self.pl
        what = rp.blocked_on[rank]
        if what is None:
            return "it is never resumed", None
        if what[0] == "never":
            return (f"it waits on handle {what[2]} a second time; under {rp.rules.name} a "
                    "second wait() on a completed handle never returns (gloo blocks forever)"), None
        kind, x = what
        if kind == "req":
            return self.why_req(x)
        u = x
        coll = rp.unit_coll[u]
        if coll is not None:
            return self.why_coll(u, coll)
        q = self.stuck_req(u)
        if q is None:
            return self.why_queued(u)
        if len(rp.unit_reqs[u]) > 1:
            sentence, nxt = self.why_req(q)
            return f"its batch entry {pl.req_place[q][2]} never completes: {sentence}", nxt
        return self.why_req(q)

    def why_coll(self, u: int, coll):
        rp = self.rp
        g = self.p.group(coll[0])
        units = rp.coll_units.get(coll, {})
        if g is None:
            return f"group {coll[0]} does not exist", None
        if not rp.unit_ready[u]:
            return self.why_queued(u)
        for r in g.ranks:
            if r not in units:
                tail = self.ended(r)
                return (f"rank {r}, a member of group {g.id}, never reaches this collective "
                        f"(its collective number {coll[1]} on the group){tail}"), r
            if not rp.unit_ready[units[r]]:
                sentence, _ = self.why_queued(units[r])
                return f"rank {r}'s matching collective is not started: {sentence}", r
        return "it never completes", None

    def chain(self):
        """From the lowest blocked rank, follow the waits: each hop a rank blocked at
        an op and what it waits for, until an op that never completes or a rank
        already named (closed: a cycle back to that rank)."""
        rp = self.rp
        start = next((r for r in range(self.p.num_ranks) if rp.pc[r] < len(self.p.ranks[r].ops)), None)
        hops: list[Blocked] = []
        if start is None:
            q = next(i for i, d in enumerate(rp.req_done) if not d and rp.req_unit[i] >= 0) \
                if not all(rp.req_done[i] or rp.req_unit[i] < 0 for i in range(len(rp.req_done))) else None
            if q is not None:
                r, k, sub = self.pl.req_place[q]
                hops.append(Blocked(self.place(r, k, sub),
                                    "every rank returned from its last op, but this op never completes: "
                                    + self.why_req(q)[0]))
            return tuple(hops), False
        seen: dict[int, int] = {}
        r: int | None = start
        while r is not None and r not in seen and rp.pc[r] < len(self.p.ranks[r].ops):
            seen[r] = len(hops)
            sentence, nxt = self.reason(r)
            hops.append(Blocked(self.place(r, rp.pc[r]), sentence))
            r = nxt
        closed = r is not None and r in seen
        if closed and seen[r] > 0:  # the cycle starts later: drop the lead-in
            hops = hops[seen[r]:]
        return tuple(hops), closed

    def summary(self, hops, closed: bool) -> str:
        parts = [f"rank {h.place.rank} blocks in {h.place.where} {h.place.phrase}" for h in hops]
        if not parts:
            return "some op never completes"
        text = " while ".join(parts)
        return text + (" (a cycle)" if closed else f": {hops[-1].reason}")

"""Deadlock freedom of a recorded program: the monotone replay under one model.

The replay runs every rank until nothing is enabled (specs/SEMANTICS.md,
"Recorded programs": the semantics is monotone, so this decides whether *some*
and hence *every* execution terminates). A rank's ops: isend/irecv/batch post
and return; send/recv post then wait; a wait blocks until its op (under a model
with streams: its whole batch) completed; a collective posts and blocks until
every member of its group has reached it. What completes what is the model's:

- ``buffered_sends``: a send completes once it is ready (eager);
  otherwise a send and its FIFO partner complete together once both are ready.
- ``streams`` (the model's ``stream_of``): ``none``: ready = posted; ``rank``:
  one stream per rank holds every unit (an unbatched op, a batch, a
  collective) in post order, ready = at the head; ``pair``: an unbatched op
  goes on the stream of its (group, peer) communicator, a batch and a
  collective on their group's stream.
- ``second_wait_blocks``: a second wait on one handle never returns (gloo).

Where it stops, ``verifier.check.program.explain`` follows the waits from a blocked rank to the op that
never completes or back to a rank already named (a cycle), in user terms.

What it does not cover: the static properties (``verifier.check.program``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from verifier.program import BatchP2P, P2P, Program
from verifier.check.program.plan import POST, POST_BLOCK, WAIT, Plan, plan
from verifier.check.program.cert import blocked_certificate, witness_certificate
from verifier.check.program.explain import Explainer
from verifier.results.program import ModelOutcome, ProgramCertificate
from verifier.semantics.comm import GROUP_STREAM, CommModel, SendRule


@dataclass(frozen=True)
class ReplayRules:
    """What a communication model says about a program's ops (see the docstring),
    read from ``verifier.semantics.comm.CommModel``'s fields."""

    name: str
    buffered_sends: bool
    streams: str  # "none" | "rank" | "pair"
    second_wait_blocks: bool
    model: CommModel | None = None

    @classmethod
    def of(cls, m: CommModel) -> "ReplayRules":
        return cls(m.name, m.send is SendRule.BUFFERED, m.stream.value, m.second_wait_blocks, m)


class _Replay:
    def __init__(self, p: Program, pl: Plan, rules: ReplayRules):
        self.p, self.pl, self.rules = p, pl, rules
        self.partner, self.is_send = pl.partner, pl.is_send
        n = len(pl.req_op)
        self.req_done = [False] * n
        self.req_unit = [-1] * n
        self.unit_reqs: list = []  # unit -> req ids (a collective: ())
        self.unit_left: list = []
        self.unit_ready: list = []
        self.unit_done: list = []
        self.unit_place: list = []
        self.unit_coll: list = []  # (group, k) or None
        self.unit_stream: list = []
        self.streams: dict = {}  # key -> [units, head]
        self.coll_units: dict = {}  # (group, k) -> {rank: unit}
        self.pc = [0] * p.num_ranks
        self.posted_at = [dict() for _ in range(p.num_ranks)]  # op index -> unit
        self.waited: list = [set() for _ in range(p.num_ranks)]
        self.blocked_on: list = [None] * p.num_ranks  # ("req", q) | ("unit", u) | ("never", why)
        self.waiters: dict = {}
        self.runnable = deque(range(p.num_ranks))
        self.todo: deque = deque()
        self.events = 0
        self.segments: list = []  # (rank, first, end): the ops a run_rank call returned from, in order

    # ------------------------------------------------------------ streams and units
    def stream_key(self, rank: int, op) -> object:
        """The stream a unit is queued on: the model's ``stream_of`` within the
        rank, and under per-pair streams also the group (each process group has
        its own communicators); a collective is on its group's stream."""
        m = self.rules.model
        batched = not isinstance(op, P2P)  # a batch or a collective: the group's stream
        peer = op.peer if isinstance(op, P2P) else GROUP_STREAM
        if m is not None:
            within = m.stream_of(batched, peer)
        else:
            within = None if self.rules.streams == "none" else 0 if self.rules.streams == "rank" \
                else GROUP_STREAM if batched else peer
        if within is None:
            return None
        if self.rules.streams == "rank":
            return (rank, within)
        group = op.group if not isinstance(op, BatchP2P) else op.ops[0].group if op.ops else -1
        return (rank, group, within)

    def post(self, rank: int, k: int, op) -> int:
        u = len(self.unit_reqs)
        reqs = self.pl.step_reqs[rank][k]
        coll = self.pl.coll_index[rank][k]
        self.unit_reqs.append(reqs)
        self.unit_left.append(len(reqs) if coll is None else 1)
        self.unit_ready.append(False)
        self.unit_done.append(False)
        self.unit_place.append((rank, k))
        self.unit_coll.append(coll)
        for q in reqs:
            self.req_unit[q] = u
        self.posted_at[rank][k] = u
        if coll is not None:
            self.coll_units.setdefault(coll, {})[rank] = u
        key = self.stream_key(rank, op)
        self.unit_stream.append(key)
        self.events += 1
        if key is None:
            self.make_ready(u)
        else:
            st = self.streams.setdefault(key, [[], 0])
            st[0].append(u)
            if st[1] == len(st[0]) - 1:
                self.make_ready(u)
        self.drain()
        return u

    def make_ready(self, u: int) -> None:
        """Queue ``u`` as ready (processed by ``drain``: no recursion along a stream)."""
        self.todo.append(u)

    def drain(self) -> None:
        while self.todo:
            self._ready(self.todo.popleft())

    def _ready(self, u: int) -> None:
        self.unit_ready[u] = True
        self.events += 1
        if self.unit_left[u] == 0:
            self.finish_unit(u)
            return
        partner, try_req = self.partner, self.try_req
        for q in self.unit_reqs[u]:
            try_req(q)
            if partner[q] >= 0:
                try_req(partner[q])
        coll = self.unit_coll[u]
        if coll is not None:
            self.try_coll(coll)

    def partner_ok(self, q: int) -> bool:
        return self.pl.partner[q] >= 0

    def ready(self, q: int) -> bool:
        u = self.req_unit[q]
        return u >= 0 and self.unit_ready[u]

    def try_req(self, q: int) -> None:
        unit_ready, req_unit = self.unit_ready, self.req_unit
        if self.req_done[q] or req_unit[q] < 0 or not unit_ready[req_unit[q]]:
            return
        buffered = self.rules.buffered_sends
        if buffered and self.is_send[q]:
            self.complete(q)
            return
        m = self.partner[q]
        if m < 0 or req_unit[m] < 0 or not unit_ready[req_unit[m]]:
            return
        self.complete(q)
        if not buffered and not self.req_done[m]:  # rendezvous: the pair completes together
            self.complete(m)

    def try_coll(self, coll) -> None:
        g = self.p.group(coll[0])
        units = self.coll_units.get(coll, {})
        if g is None or any(r not in units or not self.unit_ready[units[r]] for r in g.ranks):
            return
        for r in g.ranks:
            u = units[r]
            if not self.unit_done[u]:
                self.unit_left[u] = 0
                self.finish_unit(u)

    def complete(self, q: int) -> None:
        self.req_done[q] = True
        self.events += 1
        self.wake(("req", q))
        u = self.req_unit[q]
        self.unit_left[u] -= 1
        if self.unit_left[u] == 0:
            self.finish_unit(u)

    def finish_unit(self, u: int) -> None:
        if self.unit_done[u]:
            return
        self.unit_done[u] = True
        self.wake(("unit", u))
        key = self.unit_stream[u]
        if key is not None:
            st = self.streams[key]
            st[1] += 1
            if st[1] < len(st[0]):
                self.make_ready(st[0][st[1]])

    def wake(self, what) -> None:
        for r in self.waiters.pop(what, ()):
            self.runnable.append(r)

    # ------------------------------------------------------------ ranks
    def block(self, rank: int, what) -> None:
        self.blocked_on[rank] = what
        if what[0] != "never":
            self.waiters.setdefault(what, []).append(rank)

    def wait_target(self, rank: int, q: int):
        """What a wait on request q waits for: the request, or under streams its unit."""
        if self.rules.streams != "none":
            u = self.req_unit[q]
            return ("unit", u), self.unit_done[u]
        return ("req", q), self.req_done[q]

    def run_rank(self, rank: int) -> None:
        ops = self.p.ranks[rank].ops
        code, wait_req = self.pl.code[rank], self.pl.wait_req[rank]
        posted_at, unit_done, req_unit = self.posted_at[rank], self.unit_done, self.req_unit
        self.blocked_on[rank] = None
        k, n = self.pc[rank], len(ops)
        start = k
        while k < n:
            c = code[k]
            if c == POST or c == POST_BLOCK:
                u = posted_at.get(k)
                if u is None:
                    u = self.post(rank, k, ops[k])
                if c == POST_BLOCK and not unit_done[u]:
                    self.pc[rank] = k
                    self.segments.append((rank, start, k))
                    self.block(rank, ("unit", u))
                    return
            elif c == WAIT:
                q = wait_req[k]
                if q >= 0 and req_unit[q] >= 0:  # an unknown handle: well-formed says so
                    h = ops[k].handle
                    if h in self.waited[rank] and self.rules.second_wait_blocks:
                        self.pc[rank] = k
                        self.segments.append((rank, start, k))
                        self.block(rank, ("never", "second-wait", h))
                        return
                    target, done = self.wait_target(rank, q)
                    if not done:
                        self.pc[rank] = k
                        self.segments.append((rank, start, k))
                        self.block(rank, target)
                        return
                    self.waited[rank].add(h)
            k += 1
        self.pc[rank] = k
        self.events += n - start
        self.segments.append((rank, start, k))

    def run(self) -> None:
        while self.runnable:
            r = self.runnable.popleft()
            if self.pc[r] < len(self.p.ranks[r].ops):
                self.run_rank(r)

    def order(self) -> list[tuple[int, int]]:
        """Every (rank, op) the ranks returned from, in the order they did."""
        return [(r, k) for r, a, b in self.segments for k in range(a, b)]

    def certificate(self) -> ProgramCertificate:
        """The replay's answer as a certificate (``verifier.check.program.cert``)."""
        if self.terminated():
            return witness_certificate(self.rules.name, self.order())
        posted, done = self.posted_at, self.unit_done
        return blocked_certificate(
            self.p, self.pl, self.rules.name, self.rules.streams != "none", self.rules.second_wait_blocks,
            self.pc, lambda r, k: k in posted[r], self.req_done.__getitem__, lambda r, k: done[posted[r][k]])

    def terminated(self) -> bool:
        return (all(self.pc[r] == len(rp.ops) for r, rp in enumerate(self.p.ranks))
                and all(self.unit_done))


def replay(p: Program, rules: ReplayRules, pl: Plan | None = None) -> ModelOutcome:
    """Run ``p`` under ``rules`` until nothing is enabled; the outcome with, when it
    does not terminate, every rank that blocks and the chain of waits explained."""
    pl = pl or plan(p)
    rp = _Replay(p, pl, rules)
    rp.run()
    if rp.terminated():
        return ModelOutcome(rules.name, True, num_events=rp.events, certificate=rp.certificate())
    ex = Explainer(rp)
    blocked = tuple(ex.blocked(r) for r in range(p.num_ranks) if rp.pc[r] < len(p.ranks[r].ops))
    hops, closed = ex.chain()
    return ModelOutcome(rules.name, False, blocked=blocked, hops=hops, closed=closed,
                        summary=ex.summary(hops, closed), num_events=rp.events,
                        certificate=rp.certificate())

"""The monotone replay of a program without its explanation: terminates, and the event count.

``Fast(p, pl)`` numbers the program once for every model (a unit per
P2P/batch/collective op, in rank and issue order; a req per P2P op or batch
entry, as ``verifier.check.program.replay.plan`` does; one ``done`` slot per unit
and per req, so a blocking call and a wait both test one integer), then
``Fast.replay(rules)`` runs one model on flat lists. It takes the same steps
in the same order as ``replay._Replay`` (the same worklist of ranks, the
same queue of ready units, the same event count), so a program that
terminates gets the same ``ModelOutcome``; one that does not is left to
``_Replay``, whose final state the explanation reads (``replay`` returns None).

What it does not cover: explaining a deadlock (``verifier.check.program.explain``);
a program that is not well-formed (``usable`` is False: the caller replays it
with ``_Replay``, which copes with any peer, handle and group).
"""

from __future__ import annotations

from collections import deque
from itertools import repeat

import numpy as np

from verifier.check.program.plan import Plan
from verifier.check.program.replay import ReplayRules
from verifier.program import Program
from verifier.results.program import ModelOutcome, ProgramCertificate
from verifier.semantics.comm import GROUP_STREAM



class Fast:
    """The plan's units and reqs as slots of one ``done`` list, the owners a
    completion wakes, and the collectives' members."""

    def __init__(self, p: Program, pl: Plan):
        self.usable = not pl.bad_reqs and not pl.bad_handles and not pl.bad_colls and not pl.empty_batch
        self.nunit, self.nreq, self.base = len(pl.unit_rank), len(pl.req_op), pl.base
        self.unit_reqs, self.req_unit, self.unit_rank, self.pl = pl.unit_reqs, pl.req_unit, pl.unit_rank, pl
        # who a completion wakes: slot u (a unit), slot base + q (a req)
        urank = np.array(pl.unit_rank, dtype=np.int64)
        self.owner = pl.unit_rank + [0] * (self.base - self.nunit) + urank[pl.req_unit_array].tolist()
        self.members = _collectives(p, pl)
        self._targets: dict = {}
        self._peer_units: list | None = None

    @property
    def peer_units(self) -> list:
        """Per unit, the distinct units its requests' partners are in (-1: a request
        without a partner), in the order of each one's last request: under
        rendezvous a unit completes once it and each of these is ready (a request
        completes with its partner when both are), and counting them down in that
        order finishes units where counting request by request would."""
        if self._peer_units is None:
            out: list = [[] for _ in range(self.nunit)]
            pa = self.pl.partner_array
            if len(pa):
                ru = self.pl.req_unit_array
                pu = np.where(pa >= 0, ru[np.maximum(pa, 0)], -1)  # per req, its partner's unit
                key = ru * (self.nunit + 1) + (pu + 1)
                o = np.argsort(key, kind="stable")  # within a key, requests in order
                ks = key[o]
                last = np.ones(len(ks), dtype=bool)
                last[:-1] = ks[1:] != ks[:-1]
                q = np.sort(o[last])  # each (unit, peer unit)'s last request, in request order
                for x, y in zip(ru[q].tolist(), pu[q].tolist()):
                    out[x].append(y)
            self._peer_units = out
        return self._peer_units

    def streams(self, rules: ReplayRules) -> tuple[list, list]:
        """Per unit, the previous and the next unit of its stream (-1: none)."""
        nu = self.nunit
        prev, nxt = [-1] * nu, [-1] * nu
        if rules.streams == "none":
            return prev, nxt
        if rules.streams == "rank":  # one stream a rank: the rank's previous unit
            rank = np.array(self.unit_rank, dtype=np.int64)
            same = np.flatnonzero(rank[1:] == rank[:-1])
            p, n = np.full(nu, -1, dtype=np.int64), np.full(nu, -1, dtype=np.int64)
            p[same + 1], n[same] = same, same + 1
            return p.tolist(), n.tolist()
        m = rules.model
        last: dict = {}
        for u, key in enumerate(self.pl.unit_key):
            r, g, peer, batched = key
            within = m.stream_of(batched, peer) if m is not None else (GROUP_STREAM if batched else peer)
            key = (r, g, within)
            v = last.get(key, -1)
            if v >= 0:
                prev[u], nxt[v] = v, u
            last[key] = u
        return prev, nxt

    def targets(self, rules: ReplayRules, is_send: list) -> list:
        """Per rank, the walked ops under ``rules``: (op indices, entries, ops); an
        entry ``~u`` posts unit u, an entry ``t >= 0`` waits until slot t is done
        (the last slot, never done, for a second wait that never returns). A
        blocking call is a post then a wait on its unit. Left out, as they never
        block: a wait on the slot the previous entry waits on, and under
        buffered sends without streams a wait on a send (done once posted)."""
        to_unit, never = rules.streams != "none", rules.second_wait_blocks
        sends_done = rules.buffered_sends and not to_unit
        pl = self.pl
        if to_unit and not never:
            return pl.walk_unit
        if not to_unit and not (never and pl.second_waits):
            return pl.walk_recv if sends_done else pl.walk_req
        key = (to_unit, never, sends_done)
        if key in self._targets:
            return self._targets[key]
        req_unit, base, never_slot = self.req_unit, self.base, self.base + self.nreq
        out = []
        for idx, act, n in pl.walk:
            ix, ent = [], []
            last = -1
            waited: set = set()
            for k, a in zip(idx, act):
                if a >= 0:
                    ix.append(k)
                    ent.append(~(a >> 1))
                    last = -1
                    if a & 1:
                        ix.append(k)
                        last = a >> 1
                        ent.append(last)
                    continue
                q = ~a
                if never and q in waited:  # a handle names one req: the same handle again
                    t = never_slot
                else:
                    waited.add(q)
                    if sends_done and is_send[q]:
                        continue
                    t = req_unit[q] if to_unit else base + q
                    if t == last:
                        continue
                ix.append(k)
                ent.append(t)
                last = t
            out.append((ix, ent, n))
        self._targets[key] = out
        return out

    def replay(self, rules: ReplayRules, partner: list, is_send: list) -> ModelOutcome | None:
        """The outcome when the program terminates under ``rules``; None when it
        does not (the caller explains it with ``replay.replay``). Its witness is
        the whole execution: the runs of returns and when each unit completed."""
        prev, nxt = self.streams(rules)
        ev, stuck, segments, comp, marks = _run(self, self.targets(rules, is_send), prev, nxt, rules.buffered_sends,
                                                partner, is_send, rules.streams == "none")
        if stuck:
            return None
        pos: list = []
        for (c0, at), (c1, _a) in zip(marks, marks[1:] + [(len(comp), 0)]):
            pos.extend(repeat(at, c1 - c0))
        ur, uo = self.unit_rank, self.pl.unit_op
        cert = ProgramCertificate(rules.name, True, runs=tuple(segments),
                                  completions=(tuple(map(ur.__getitem__, comp)), tuple(map(uo.__getitem__, comp)),
                                               tuple(pos)))
        return ModelOutcome(rules.name, True, num_events=ev, certificate=cert)


def _collectives(p: Program, pl: Plan) -> list:
    """Per unit: None (not a collective), () (its instance never completes:
    no such group, or a member never reaches it) or the members' units."""
    if not pl.colls:
        return [None] * len(pl.unit_coll)
    groups = {g.id: g for g in p.groups}
    unit_of = {(c[0], c[1], pl.unit_rank[u]): u for u, c in enumerate(pl.unit_coll) if c is not None}
    out: list = []
    for c in pl.unit_coll:
        if c is None:
            out.append(None)
            continue
        g = groups.get(c[0])
        us = () if g is None else tuple(unit_of.get((c[0], c[1], r), -1) for r in g.ranks)
        out.append(() if -1 in us else us)
    return out


# The replay loop, unrolled (HOT_LOOPS: benchmarks/bench_program.py): the steps of
# replay._Replay.run_rank/post/_ready/try_req/complete/finish_unit/wake in
# their order. Under rendezvous, trying a req's partner after the req itself
# finds nothing to do (a pair completes together, or the partner's unit is not
# ready); under buffered sends, trying a receive's partner neither (a send
# completed when its unit became ready), so those tries are left out. Events
# are counted at the end: each unit is posted and made ready once, each req
# completes once, and a rank's last resumption walks on from where it blocked.
def _run(f: Fast, walk: list, prev: list, nxt: list, buffered: bool, partner: list, is_send: list,
         wake_reqs: bool):
    # unrolled on purpose, timed by benchmarks/bench_program.py
    nu, base = f.nunit, f.base
    unit_reqs, req_unit, owner, members = f.unit_reqs, f.req_unit, f.owner, f.members
    by_unit = not buffered and not wake_reqs  # rendezvous, waits on units only: count peer units down
    peers = f.peer_units if by_unit else None
    done = [False] * (base + f.nreq + 1)  # units, (a gap,) reqs, and a slot never done
    posted, ready = [False] * nu, [False] * nu
    left = [len(qs) if us is None else 1 for qs, us in zip(peers if by_unit else unit_reqs, members)]  # collective: 1
    colls = any(us is not None for us in members)
    nranks = len(walk)
    pos = [0] * nranks  # next walked op
    start = [0] * nranks  # op index of the last block (replay's pc when resumed)
    fin = [w[2] == 0 for w in walk]
    blocked = [-1] * nranks
    runnable = deque(range(nranks))
    todo: deque = deque()
    fins: list = []  # units to finish in order once a ready unit is handled
    segments: list = []  # (rank, first, end): the ops each resumption returned from, in order
    comp: list = []  # the units in the order they completed
    marks: list = []  # (first of comp, returns before it): completions happen while a post is handled
    nret = 0  # returns before the current resumption

    def complete(c):  # a req completes: wake its rank if it waits on it, count down its unit
        done[base + c] = True
        o = owner[base + c]
        if blocked[o] == base + c:
            blocked[o] = -1
            runnable.append(o)
        y = req_unit[c]
        left[y] -= 1
        if not left[y]:
            _finish(y, done, owner, blocked, runnable, nxt, posted, todo, comp)

    while runnable:
        r = runnable.popleft()
        if fin[r]:
            continue
        idx, ent, n = walk[r]
        j, nj = pos[r], len(idx)
        while j < nj:
            e = ent[j]
            if e >= 0:
                if not done[e]:
                    break
                j += 1
                continue
            j += 1
            u = ~e  # a rank resumes at a wait: each post is walked once
            posted[u] = True
            c0 = len(comp)
            p = prev[u]
            if p < 0 or done[p]:
                todo.append(u)
                while todo:
                    x = todo.popleft()
                    ready[x] = True
                    if not left[x]:
                        fins.append(x)
                    elif buffered:
                        for q in unit_reqs[x]:
                            if done[base + q]:
                                continue
                            m = partner[q]
                            if is_send[q]:
                                complete(q)
                                if m >= 0 and not done[base + m] and ready[req_unit[m]]:
                                    complete(m)
                            elif m >= 0 and ready[req_unit[m]]:
                                complete(q)
                    elif by_unit:  # rendezvous, waits on units only: count the peer units down
                        # (x and a peer unit y: every request between them completes once both are ready)
                        for y in peers[x]:
                            if y < 0 or not ready[y]:
                                continue
                            left[x] -= 1
                            if not left[x]:
                                _finish(x, done, owner, blocked, runnable, nxt, posted, todo, comp)
                            left[y] -= 1
                            if not left[y]:
                                _finish(y, done, owner, blocked, runnable, nxt, posted, todo, comp)
                    else:  # rendezvous, waits on reqs (no streams): complete(q), complete(m), unrolled
                        for q in unit_reqs[x]:
                            m = partner[q]
                            sq = base + q
                            if m < 0 or done[sq] or not ready[req_unit[m]]:
                                continue
                            done[sq] = True
                            o = owner[sq]
                            if blocked[o] == sq:
                                blocked[o] = -1
                                runnable.append(o)
                            left[x] -= 1
                            if not left[x]:
                                _finish(x, done, owner, blocked, runnable, nxt, posted, todo, comp)
                            sm = base + m
                            done[sm] = True
                            o = owner[sm]
                            if blocked[o] == sm:
                                blocked[o] = -1
                                runnable.append(o)
                            y = req_unit[m]
                            left[y] -= 1
                            if not left[y]:
                                _finish(y, done, owner, blocked, runnable, nxt, posted, todo, comp)
                    us = members[x] if colls else None
                    if us and all(ready[y] for y in us):
                        for y in us:
                            if not done[y]:
                                left[y] = 0
                                fins.append(y)
                    if fins:
                        for y in fins:
                            _finish(y, done, owner, blocked, runnable, nxt, posted, todo, comp)
                        fins.clear()
            if len(comp) > c0:
                marks.append((c0, nret + idx[j - 1] - start[r]))
        if j < nj:
            segments.append((r, start[r], idx[j]))
            nret += idx[j] - start[r]
            pos[r], start[r], blocked[r] = j, idx[j], ent[j]
            continue
        fin[r] = True
        segments.append((r, start[r], n))
        nret += n - start[r]
    if not all(fin) or not all(done[:nu]):
        return 0, True, segments, comp, marks
    return 2 * nu + f.nreq + sum(w[2] for w in walk) - sum(start), False, segments, comp, marks


def _finish(u, done, owner, blocked, runnable, nxt, posted, todo, comp) -> None:
    if done[u]:
        return
    done[u] = True
    comp.append(u)
    o = owner[u]
    if blocked[o] == u:
        blocked[o] = -1
        runnable.append(o)
    v = nxt[u]
    if v >= 0 and posted[v]:
        todo.append(v)

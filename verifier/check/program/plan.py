"""A program numbered once for every check: requests, FIFO partners, units, handles, collectives.

``plan(p)`` walks every op of a ``verifier.program.Program`` once and returns a
``Plan``: a request per P2P op or batch entry (FIFO partners per (group, src,
dst)), a unit per P2P/batch/collective op (what a stream orders and a
blocking call waits for), each rank's walk (the ops that post or wait, with
their op index), the flagged ops the well-formed property names, and the
calls a recording says never returned. The static properties
(``verifier.check.program``), the replay (``verifier.check.program.replay``) and
its fast form (``verifier.check.program.fast``) all read it.

What it does not cover: deciding anything; the communication models.
"""

from __future__ import annotations

import numpy as np

from verifier.program import BATCH as BATCH_
from verifier.program import BLOCKS as BLOCKS_
from verifier.program import COLLECTIVE as COLLECTIVE_
from verifier.program import POSTS as POSTS_
from verifier.program import WAIT as WAIT_
from verifier.program import P2P, Program, Wait

NOOP, POST, POST_BLOCK, WAIT = 0, 1, 2, 3


class Plan:
    """The program's requests (one per P2P op or batch entry), FIFO partners,
    handles, units and collective instances, computed once for every model.
    The per-op lists only the explaining replay reads are made on first use."""

    def __init__(self, p: Program):
        self.p = p
        self.req_op: list = []  # the P2P of each req
        self.partner: list = []  # req id or -1
        self.is_send: list = []  # per req
        self.bad_reqs: list = []  # reqs whose peer is not a rank of the op's group other than the caller
        self.bad_handles: list = []  # (rank, op) of a wait / is_completed naming no earlier handle
        self.colls: dict = {}  # (group, rank) -> op indices of the rank's collectives on the group
        self.pairs: list = []  # (send req, recv req) FIFO partners
        self.partner_array = np.zeros(0, dtype=np.int64)  # partner, as an array
        self.req_unit_array = np.zeros(0, dtype=np.int64)  # req_unit, as an array
        self.unit_rank: list = []  # per unit (a P2P, batch or collective op, rank and issue order)
        self.unit_op: list = []  # per unit: its op index
        self.unit_reqs: list = []  # per unit: tuple of req ids
        self.unit_coll: list = []  # per unit: (group, k) of a collective, else None
        self._unit_key: list | None = None
        self._unit_key_arrays: tuple = ()
        self.req_unit: list = []  # per req: its unit
        # Each rank's walk: (op indices, entries, number of ops), an entry ``~u``
        # posting unit u, an entry ``t >= 0`` waiting until slot t is done: unit u
        # is slot u, req q slot ``base + q`` (base: the number of ops, more than
        # there are units). A blocking call is a post then a wait on its unit.
        self.base = p.num_ops
        # walk_req: waits on reqs; walk_unit: waits on the reqs' units, one wait for
        # a run of waits on one unit; walk_recv: waits on receives only (made on first use)
        self._walk_arrays: tuple = ()
        self._walks: dict = {}
        self.second_waits = False  # a rank waits on one req twice
        self.bad_colls: list = []  # (rank, op) of a collective on an undeclared group or one not holding the rank
        self.not_returned: list = []  # (rank, op) of calls the recording says never returned
        self.empty_batch = False  # a batch_isend_irecv of no op
        self._req_place: list | None = None
        self._per_op: tuple | None = None

    @property
    def walk_req(self) -> list:
        """Per rank: (op indices, entries, ops): ``~u`` posts unit u, ``u`` waits for
        it (a blocking call), ``base + q`` waits for req q."""
        return _walk(self, "req")

    @property
    def walk_unit(self) -> list:
        """``walk_req`` with each wait on a req's unit instead, one for a run of waits on one unit."""
        return _walk(self, "unit")

    @property
    def walk_recv(self) -> list:
        """``walk_req`` without the waits on sends."""
        return _walk(self, "recv")

    @property
    def unit_key(self) -> list:
        """Per unit: (rank, group, peer or -1, batched), what a stream key is made of."""
        if self._unit_key is None:
            urank, ucode, counts, first, e_group, e_peer, uop = self._unit_key_arrays
            out = self._unit_key = []
            group = self.p.columns.group
            for r, cd, n, a, g in zip(urank.tolist(), ucode.tolist(), counts.tolist(), first, uop.tolist()):
                if cd == COLLECTIVE_:
                    out.append((r, int(group[g]), -1, True))
                elif cd == BATCH_:
                    out.append((r, int(e_group[a]) if n else -1, -1, True))
                else:
                    out.append((r, int(e_group[a]), int(e_peer[a]), False))
        return self._unit_key

    @property
    def req_place(self) -> list:
        """Per req: (rank, op, entry of a batch or None)."""
        if self._req_place is None:
            out = self._req_place = []
            for r, k, qs, c in zip(self.unit_rank, self.unit_op, self.unit_reqs, self.unit_coll):
                if type(self.p.ranks[r].ops[k]) is P2P:
                    out.append((r, k, None))
                else:
                    out.extend((r, k, j) for j in range(len(qs)))
        return self._req_place

    @property
    def walk(self) -> list:
        """Per rank: (op indices, what each does: unit u posted 2u, 2u + 1 when the
        call blocks on it; req q waited ~q; number of ops)."""
        out = []
        base = self.base
        for ix, ent, n in self.walk_req:
            idx, act = [], []
            for k, e in zip(ix, ent):
                if e < 0:
                    idx.append(k)
                    act.append(2 * ~e)
                elif e < base:
                    act[-1] += 1
                else:
                    idx.append(k)
                    act.append(~(e - base))
            out.append((idx, act, n))
        return out

    def _per_op_lists(self) -> tuple:
        if self._per_op is None:
            code = [[NOOP] * n for _i, _a, n in self.walk_req]
            wait_req = [[-1] * n for _i, _a, n in self.walk_req]
            step_reqs = [[()] * n for _i, _a, n in self.walk_req]
            coll_index = [[None] * n for _i, _a, n in self.walk_req]
            for r, (idx, act, _n) in enumerate(self.walk):
                for k, a in zip(idx, act):
                    if a < 0:
                        code[r][k], wait_req[r][k] = WAIT, ~a
                    else:
                        u = a >> 1
                        code[r][k] = POST_BLOCK if a & 1 else POST
                        step_reqs[r][k], coll_index[r][k] = self.unit_reqs[u], self.unit_coll[u]
            for r, k in self.bad_handles:
                if type(self.p.ranks[r].ops[k]) is Wait:
                    code[r][k] = WAIT
            self._per_op = (code, wait_req, step_reqs, coll_index)
        return self._per_op

    @property
    def code(self) -> list:
        """Per rank, per op: what the op does (NOOP, POST, POST_BLOCK, WAIT)."""
        return self._per_op_lists()[0]

    @property
    def wait_req(self) -> list:
        """Per rank, per op: the req a wait names (-1: none, or unknown handle)."""
        return self._per_op_lists()[1]

    @property
    def step_reqs(self) -> list:
        """Per rank, per op: the tuple of req ids it posts."""
        return self._per_op_lists()[2]

    @property
    def coll_index(self) -> list:
        """Per rank, per op: (group, k) of a collective, else None."""
        return self._per_op_lists()[3]


def plan(p: Program) -> Plan:
    """Number the program (see the module docstring) from its columns
    (``Program.columns``), array by array; the lists the checks and replays
    read are made from the arrays at the end."""
    pl = Plan(p)
    c = p.columns
    code, off, rank_of = c.code, c.off, c.rank
    nr = p.num_ranks
    is_unit = (code >= POSTS_) & (code <= COLLECTIVE_)
    uop = np.flatnonzero(is_unit)
    nu = len(uop)
    unit_of_op = np.cumsum(is_unit) - 1
    urank = rank_of[uop]
    pl.unit_rank, pl.unit_op = urank.tolist(), (uop - off[urank]).tolist()
    req_unit = unit_of_op[c.e_op]
    nq = len(req_unit)
    pl.req_op, pl.req_unit, pl.is_send = c.entries, req_unit.tolist(), c.e_send.tolist()
    pl.req_unit_array = req_unit
    counts = np.bincount(req_unit, minlength=nu) if nq else np.zeros(nu, dtype=np.int64)
    first = (np.cumsum(counts) - counts).tolist()
    pl.unit_reqs = list(map(range, first, (np.cumsum(counts)).tolist()))
    ucode = code[uop]
    pl.empty_batch = bool(np.any((ucode == BATCH_) & (counts == 0)))
    req_rank = rank_of[c.e_op]
    _collectives(pl, p, c, uop, urank)
    pl._unit_key_arrays = (urank, ucode, counts, first, c.e_group, c.e_peer, uop)
    _matching(pl, p, c, req_rank, nr)
    wait_q = _handles(pl, c, req_rank, nq)
    _walks(pl, c, uop, ucode, req_unit, wait_q, nu)
    pl.not_returned = [(int(rank_of[g]), g - int(off[rank_of[g]])) for g in c.not_returned]
    return pl


def _collectives(pl: Plan, p: Program, c, uop, urank) -> None:
    """unit_coll, colls and bad_colls: collectives are few, so a loop."""
    members = {g.id: frozenset(g.ranks) for g in p.groups}
    unit_coll = pl.unit_coll = [None] * len(uop)
    cix = np.flatnonzero(c.code[uop] == COLLECTIVE_).tolist()
    count: dict = {}
    for u in cix:
        r, g = int(urank[u]), int(c.group[uop[u]])
        k = int(uop[u] - c.off[r])
        n = count.get((g, r), 0)
        count[(g, r)] = n + 1
        unit_coll[u] = (g, n)
        pl.colls.setdefault((g, r), []).append(k)
        m = members.get(g)
        if m is None or r not in m:
            pl.bad_colls.append((r, k))


def _matching(pl: Plan, p: Program, c, req_rank, nr: int) -> None:
    """FIFO partners per (group, src, dst), and the requests whose peer is not
    a rank of the group other than the caller (bad_reqs)."""
    nq = len(req_rank)
    pl.partner = [-1] * nq
    if not nq:
        return
    send = c.e_send
    src = np.where(send, req_rank, c.e_peer)
    dst = np.where(send, c.e_peer, req_rank)
    gids = sorted({g.id for g in p.groups})
    gpos = np.searchsorted(np.array(gids, dtype=np.int64), c.e_group) if gids else np.zeros(nq, dtype=np.int64)
    declared = np.zeros(nq, dtype=bool)
    if gids:
        inside = gpos < len(gids)
        declared[inside] = np.array(gids, dtype=np.int64)[gpos[inside]] == c.e_group[inside]
    ok = declared & (src >= 0) & (src < nr) & (dst >= 0) & (dst < nr) & (src != dst)
    if gids:
        member = np.zeros((len(gids), nr), dtype=bool)
        for i, g in enumerate(sorted(p.groups, key=lambda g: g.id)):
            rs = [r for r in g.ranks if 0 <= r < nr]
            member[i, rs] = True
        okx = np.flatnonzero(ok)
        ok[okx] = member[gpos[okx], src[okx]] & member[gpos[okx], dst[okx]]
    pl.bad_reqs = np.flatnonzero(~ok).tolist()
    # one key per (group, src, dst, direction), then the position within the key
    chan = _dense(c.e_group, src, dst, below=(1 << 61) // (nq + 1))
    key = 2 * chan + send
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    seq = np.empty(nq, dtype=np.int64)
    seq[order] = np.arange(nq) - np.repeat(starts, np.diff(np.r_[starts, nq]))
    tag = chan * (nq + 1) + seq
    qs = np.flatnonzero(send)
    qr = np.flatnonzero(~send)
    rorder = np.argsort(tag[qr], kind="stable")
    rt = tag[qr][rorder]
    at = np.searchsorted(rt, tag[qs])
    hit = at < len(rt)
    hit[hit] = rt[at[hit]] == tag[qs][hit]
    a, b = qs[hit], qr[rorder[at[hit]]]
    partner = np.full(nq, -1, dtype=np.int64)
    partner[a], partner[b] = b, a
    pl.partner, pl.partner_array = partner.tolist(), partner
    pl.pairs = list(zip(a.tolist(), b.tolist()))


def _dense(*cols, below: int = 0):
    """One id per distinct tuple of the columns' values (any int64 values): the
    values packed into one integer, made dense from 0 (by a sort) unless every
    packed id is already under ``below``."""
    key = np.zeros(len(cols[0]), dtype=np.int64)
    if not len(key):
        return key
    span = 1
    for col in cols:
        lo, hi = int(col.min()), int(col.max())
        if (hi - lo + 1) * span >= 1 << 62:  # too wide to pack: make what is packed so far dense
            key = _densify(key)
            span = int(key.max()) + 1
            if (hi - lo + 1) * span >= 1 << 62:
                col = _densify(col)
                lo, hi = 0, int(col.max())
        key = key * (hi - lo + 1) + (col - lo)
        span *= hi - lo + 1
    return key if span <= below else _densify(key)


def _densify(key):
    """Ranks of the values: equal values one id, ids 0, 1, ... in value order."""
    o = np.argsort(key, kind="stable")
    ks = key[o]
    new = np.empty(len(key), dtype=bool)
    new[:1] = True
    new[1:] = ks[1:] != ks[:-1]
    out = np.empty(len(key), dtype=np.int64)
    out[o] = np.cumsum(new) - 1
    return out


def _handles(pl: Plan, c, req_rank, nq: int):
    """Per wait op (in op order), the request its handle names (-1: none issued
    earlier by the rank: bad_handles, with the polls naming none)."""
    code = c.code
    hix = np.flatnonzero(code >= WAIT_)
    if not len(hix):
        return hix, hix
    hrank = c.rank[hix]
    hh = c.handle[hix]
    got = np.full(len(hix), -1, dtype=np.int64)
    named = np.flatnonzero(c.e_handle >= 0)
    if len(named):
        # the first request of each (rank, handle), then a lookup per wait
        inv = _dense(np.concatenate([req_rank[named], hrank]), np.concatenate([c.e_handle[named], hh]),
                     below=1 << 62)
        kq, kw = inv[:len(named)], inv[len(named):]
        o = np.argsort(kq, kind="stable")  # the earliest request of a (rank, handle) first
        ks = kq[o]
        head = np.ones(len(ks), dtype=bool)
        head[1:] = ks[1:] != ks[:-1]
        keys, first = ks[head], named[o[head]]
        at = np.minimum(np.searchsorted(keys, kw), len(keys) - 1)
        got = np.where(keys[at] == kw, first[at], -1)
        found = got >= 0
        got[found] = np.where(c.e_op[got[found]] < hix[found], got[found], -1)
    bad = got < 0
    pl.bad_handles = [(int(c.rank[g]), int(g - c.off[c.rank[g]])) for g in hix[bad].tolist()]
    w = code[hix] == WAIT_
    return hix[w & ~bad], got[w & ~bad]


def _walks(pl: Plan, c, uop, ucode, req_unit, wait_q, nu: int) -> None:
    """Each rank's walk (see ``Plan``): a post ``~u`` per unit, a wait ``u`` after
    a blocking one, ``base + q`` per wait on a known handle; the unit form
    waits on ``req_unit[q]`` once per run, the receive form skips sends."""
    wg, wq = wait_q
    base = pl.base
    blocking = (ucode == BLOCKS_) | (ucode == COLLECTIVE_)
    units = np.arange(nu, dtype=np.int64)
    bix = np.flatnonzero(blocking)
    G = np.concatenate([uop, uop[bix], wg])
    S = np.concatenate([np.zeros(nu, dtype=np.int64), np.ones(len(bix), dtype=np.int64),
                        np.zeros(len(wg), dtype=np.int64)])
    V = np.concatenate([~units, bix, base + wq])
    U = np.concatenate([~units, bix, req_unit[wq] if len(wq) else wq])
    recv = np.concatenate([np.ones(nu + len(bix), dtype=bool), ~c.e_send[wq] if len(wq) else wq.astype(bool)])
    order = np.argsort(2 * G + S, kind="stable")
    G, V, U, recv = G[order], V[order], U[order], recv[order]
    pl.second_waits = len(np.unique(wq)) != len(wq)
    pl._walk_arrays = (G, V, U, recv, c.off, c.rank)


def _walk(pl: Plan, which: str) -> list:
    got = pl._walks.get(which)
    if got is not None:
        return got
    G, V, U, recv, off, rank = pl._walk_arrays
    if which == "unit":
        keep = np.ones(len(U), dtype=bool)
        keep[1:] = ~((U[1:] >= 0) & (U[1:] == U[:-1]))
        G, V = G[keep], U[keep]
    elif which == "recv":
        G, V = G[recv], V[recv]
    K = G - off[rank[G]]
    cuts = np.searchsorted(G, off).tolist()
    Kl, Vl = K.tolist(), V.tolist()
    out = pl._walks[which] = [(Kl[cuts[r]:cuts[r + 1]], Vl[cuts[r]:cuts[r + 1]], n)
                              for r, n in enumerate(np.diff(off).tolist())]
    return out

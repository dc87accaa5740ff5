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

from verifier.program import BatchP2P, Collective, IsCompleted, P2P, Program, Wait

NOOP, POST, POST_BLOCK, WAIT = 0, 1, 2, 3


class Plan:
    """The program's requests (one per P2P op or batch entry), FIFO partners,
    handles, units and collective instances, computed once for every model.
    The per-op lists only the explaining replay reads are made on first use."""

    def __init__(self, p: Program):
        self.p = p
        self.req_op: list = []  # the P2P of each req
        self.partner: list = []  # req id or -1
        self.handle_req: list = [dict() for _ in range(p.num_ranks)]  # per rank: {handle: req}
        self.is_send: list = []  # per req
        self.bad_reqs: list = []  # reqs whose peer is not a rank of the op's group other than the caller
        self.bad_handles: list = []  # (rank, op) of a wait / is_completed naming no earlier handle
        self.colls: dict = {}  # (group, rank) -> op indices of the rank's collectives on the group
        self.pairs: list = []  # (send req, recv req) FIFO partners
        self.unit_rank: list = []  # per unit (a P2P, batch or collective op, rank and issue order)
        self.unit_op: list = []  # per unit: its op index
        self.unit_reqs: list = []  # per unit: tuple of req ids
        self.unit_coll: list = []  # per unit: (group, k) of a collective, else None
        self.unit_key: list = []  # per unit: (rank, group, peer or -1, batched): what a stream key is made of
        self.req_unit: list = []  # per req: its unit
        # Each rank's walk: (op indices, entries, number of ops), an entry ``~u``
        # posting unit u, an entry ``t >= 0`` waiting until slot t is done: unit u
        # is slot u, req q slot ``base + q`` (base: the number of ops, more than
        # there are units). A blocking call is a post then a wait on its unit.
        self.base = p.num_ops
        self.walk_req: list = []  # waits on reqs
        self.walk_unit: list = []  # waits on the reqs' units, one wait for a run of waits on one unit
        self.walk_recv: list = []  # waits on receives only
        self.second_waits = False  # a rank waits on one req twice
        self.bad_colls: list = []  # (rank, op) of a collective on an undeclared group or one not holding the rank
        self.not_returned: list = []  # (rank, op) of calls the recording says never returned
        self.empty_batch = False  # a batch_isend_irecv of no op
        self._req_place: list | None = None
        self._per_op: tuple | None = None

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
    pl = Plan(p)
    members = {g.id: frozenset(g.ranks) for g in p.groups}
    sends: dict = {}
    recvs: dict = {}
    for rp in p.ranks:
        _rank(pl, rp.rank, rp.ops, members, sends, recvs)
    partner = pl.partner = [-1] * len(pl.req_op)
    pairs = pl.pairs
    for key, ss in sends.items():
        for a, b in zip(ss, recvs.get(key, ())):
            partner[a], partner[b] = b, a
            pairs.append((a, b))
    n = p.num_ranks
    for lists in (sends, recvs):
        for (group, src, dst), qs in lists.items():
            g = members.get(group)
            if not (0 <= src < n and 0 <= dst < n and src != dst and g is not None and src in g and dst in g):
                pl.bad_reqs.extend(qs)
    pl.bad_reqs.sort()
    return pl


# One pass over a rank's ops (HOT_LOOPS: benchmarks/bench_program.py): every
# list the checks and the replays read is filled here, so nothing walks the ops again.
def _rank(pl: Plan, rank: int, ops, members: dict, sends: dict, recvs: dict) -> None:
    # one loop on purpose, timed by benchmarks/bench_program.py
    hr = pl.handle_req[rank]
    ir, er, iu, eu, iv, ev = [], [], [], [], [], []  # walk_req, walk_unit, walk_recv
    req_op, is_send, req_unit, base = pl.req_op, pl.is_send, pl.req_unit, pl.base
    unit_rank, unit_op, unit_reqs, unit_coll = pl.unit_rank, pl.unit_op, pl.unit_reqs, pl.unit_coll
    coll_count: dict = {}
    last_u = -1  # the unit walk_unit's last entry waits on
    for k, op in enumerate(ops):
        if not op.returned:
            pl.not_returned.append((rank, k))
        t = type(op)
        if t is Wait:
            q = hr.get(op.handle, -1)
            if q < 0:
                pl.bad_handles.append((rank, k))
                continue
            ir.append(k)
            er.append(base + q)
            u = req_unit[q]
            if u != last_u:
                iu.append(k)
                eu.append(u)
                last_u = u
            if not is_send[q]:
                iv.append(k)
                ev.append(base + q)
            continue
        if t is P2P or t is BatchP2P:
            u = len(unit_rank)
            if t is P2P:
                entries, blocks = (op,), op.op == "send" or op.op == "recv"
                pl.unit_key.append((rank, op.group, op.peer, False))
            else:
                entries, blocks = op.ops, False
                if entries:
                    pl.unit_key.append((rank, entries[0].group, -1, True))
                else:
                    pl.empty_batch = True
                    pl.unit_key.append((rank, -1, -1, True))
            q = first = len(req_op)
            for e in entries:
                h = e.handle
                if h is not None and h not in hr:
                    hr[h] = q
                o = e.op
                if o == "isend" or o == "send":
                    key = (e.group, rank, e.peer)
                    lst = sends.get(key)
                    if lst is None:
                        lst = sends[key] = []
                    is_send.append(True)
                else:
                    key = (e.group, e.peer, rank)
                    lst = recvs.get(key)
                    if lst is None:
                        lst = recvs[key] = []
                    is_send.append(False)
                lst.append(q)
                req_unit.append(u)
                q += 1
            req_op.extend(entries)
            unit_reqs.append(tuple(range(first, q)))
            unit_coll.append(None)
        elif t is Collective:
            u = len(unit_rank)
            c = coll_count.get(op.group, 0)
            coll_count[op.group] = c + 1
            pl.colls.setdefault((op.group, rank), []).append(k)
            g = members.get(op.group)
            if g is None or rank not in g:
                pl.bad_colls.append((rank, k))
            pl.unit_key.append((rank, op.group, -1, True))
            unit_reqs.append(())
            unit_coll.append((op.group, c))
            blocks = True
        else:
            if t is IsCompleted and op.handle not in hr:
                pl.bad_handles.append((rank, k))
            continue
        unit_rank.append(rank)
        unit_op.append(k)
        ir.append(k)
        er.append(~u)
        iu.append(k)
        eu.append(~u)
        iv.append(k)
        ev.append(~u)
        last_u = -1
        if blocks:
            ir.append(k)
            er.append(u)
            iu.append(k)
            eu.append(u)
            iv.append(k)
            ev.append(u)
            last_u = u
    n = len(ops)
    pl.walk_req.append((ir, er, n))
    pl.walk_unit.append((iu, eu, n))
    pl.walk_recv.append((iv, ev, n))
    waits = [e for e in er if e >= base]
    if len(set(waits)) != len(waits):
        pl.second_waits = True

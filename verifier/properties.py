"""The static properties of specs/SEMANTICS.md: everything but deadlock-freedom.

What it is: one function per property (well-formed, exactly-once,
dependencies, message-matching, overlap-legal, memory), each returning the
list of ``Violation``s it finds (empty: the property holds), plus
``fifo_pairs`` (the message matching both engines and the certificate checker
take as given by the schedule). Every function is linear in the schedule's size
(dictionaries keyed by (stage, mb)).

Only ``well_formed`` is safe on an arbitrary schedule; the others assume it
holds (ids exist, every action sits on its stage's rank, every comm op has a
peer on another rank).

What it does not cover: deadlock-freedom (verifier.hbgraph, verifier.z3engine).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from verifier.checker import PropertyId, Violation
from verifier.ir import (
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    Schedule,
    computes_of,
    loc,
)
from verifier.memory import peak_activations

_WF, _EO, _DEP, _MM, _OV, _MEM = (
    PropertyId.WELL_FORMED,
    PropertyId.EXACTLY_ONCE,
    PropertyId.DEPENDENCIES,
    PropertyId.MESSAGE_MATCHING,
    PropertyId.OVERLAP_LEGAL,
    PropertyId.MEMORY,
)
_F, _B, _I, _W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W


def _v(pid, code, locations, **args) -> Violation:
    return Violation(pid, code, tuple(locations), tuple(args.items()))


def _at(rank: int, step: int, sub: int | None = None) -> str:
    return loc(rank, step, sub)


# --------------------------------------------------------------------- 1
def well_formed(s: Schedule) -> list[Violation]:
    """Property 1 (beyond the schema, which io.py has already enforced)."""
    out: list[Violation] = []
    R, M = s.num_ranks, s.num_microbatches
    ids = Counter(st.id for st in s.stages)
    for sid, n in sorted(ids.items()):
        if n > 1:
            out.append(_v(_WF, "duplicate-stage", (), stage=sid, count=n))
    for st in s.stages:
        if not 0 <= st.rank < R:
            out.append(_v(_WF, "stage-rank", (), stage=st.id, rank=st.rank, max_rank=R - 1))
    on_routes: Counter = Counter()
    mb_routes: Counter = Counter()
    for ri, r in enumerate(s.routes):
        for sid in r.stages:
            if sid not in ids:
                out.append(_v(_WF, "route-stage", (), route=ri, stage=sid))
            on_routes[sid] += 1
        for m in r.microbatches:
            if not 0 <= m < M:
                out.append(_v(_WF, "route-mb", (), route=ri, mb=m, max_mb=M - 1))
            mb_routes[m] += 1
    for sid in sorted(ids):
        if on_routes[sid] != 1:
            out.append(_v(_WF, "stage-routes", (), stage=sid, count=on_routes[sid]))
    for m in range(M):
        if mb_routes[m] != 1:
            out.append(_v(_WF, "mb-routes", (), mb=m, count=mb_routes[m]))
    if out:  # placement is broken: per-action checks would only repeat it
        return out
    # per stage: (rank, route index, rank towards next stage, rank towards previous)
    table: dict[int, tuple] = {}
    for ri, r in enumerate(s.routes):
        n = len(r.stages)
        for k, sid in enumerate(r.stages):
            nxt = by_rank(s, r.stages[k + 1]) if k + 1 < n else None
            prv = by_rank(s, r.stages[k - 1]) if k > 0 else None
            table[sid] = (by_rank(s, sid), ri, nxt, prv)
    route_of_mb = s.route_of_mb
    towards_next = (CommKind.SEND_F, CommKind.RECV_B)
    for rank, acts in enumerate(s.actions):
        for step, a in enumerate(acts):
            tp = type(a)
            if tp is Compute or tp is Comm:
                subs: tuple = (a,)
            elif tp is Overlap:
                subs = (a.f, a.b)
            else:
                subs = a.ops
                if not subs:
                    out.append(_v(_WF, "empty-batch", [(rank, step)], action=f"{_at(rank, step)} {a}"))
            for j, op in enumerate(subs):
                t_ = table.get(op.stage)
                mb = op.mb
                if t_ is not None and 0 <= mb < M and route_of_mb[mb] == t_[1] and t_[0] == rank:
                    if type(op) is not Comm:
                        continue
                    peer = t_[2] if op.kind in towards_next else t_[3]
                    if peer is not None and peer != rank:
                        continue
                where = f"{_at(rank, step, j if len(subs) > 1 else None)} {op}"
                if t_ is None:
                    out.append(_v(_WF, "action-stage", [(rank, step)], action=where, stage=op.stage))
                    continue
                if not 0 <= mb < M:
                    out.append(_v(_WF, "action-mb", [(rank, step)], action=where, mb=mb, max_mb=M - 1))
                    continue
                ri = t_[1]
                if route_of_mb[mb] != ri:
                    out.append(
                        _v(_WF, "action-route", [(rank, step)], action=where, mb=mb, stage=op.stage, route=ri)
                    )
                if t_[0] != rank:
                    out.append(
                        _v(_WF, "action-rank", [(rank, step)], action=where, stage=op.stage, owner=t_[0], rank=rank)
                    )
                    continue
                if type(op) is Comm:
                    peer = t_[2] if op.kind in towards_next else t_[3]
                    if peer is None:
                        end = "last" if op.kind in towards_next else "first"
                        out.append(
                            _v(_WF, "no-peer", [(rank, step)], action=where,
                               reason=f"stage {op.stage} is the {end} stage of its route")
                        )
                    elif peer == rank:
                        out.append(
                            _v(_WF, "no-peer", [(rank, step)], action=where,
                               reason=f"the neighbouring stage is on the same rank {rank}")
                        )
    return out


def by_rank(s: Schedule, stage: int) -> int:
    return s.stage_by_id[stage].rank


# --------------------------------------------------------------------- 2
def exactly_once(s: Schedule) -> list[Violation]:
    count = index(s).count
    for r in s.routes:
        for st in r.stages:
            for m in r.microbatches:
                if count.get((_F, st, m)) != 1:
                    return _exactly_once(s)
                b, i, w = count.get((_B, st, m)), count.get((_I, st, m)), count.get((_W, st, m))
                if not (b == 1 and i is None and w is None) and not (b is None and i == 1 and w == 1):
                    return _exactly_once(s)
    return []  # (a well-formed schedule has no compute off its routes)


def _exactly_once(s: Schedule) -> list[Violation]:
    where: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for rank, step, c in s.iter_computes():
        where[(c.kind, c.stage, c.mb)].append((rank, step))
    out: list[Violation] = []

    def text(places) -> str:
        return ", ".join(_at(r, k) for r, k in places)

    for r in s.routes:
        for st in r.stages:
            for m in r.microbatches:
                f, b, i, w = (where.get((k, st, m), []) for k in (_F, _B, _I, _W))
                if not f:
                    out.append(_v(_EO, "missing-f", (), stage=st, mb=m))
                for kind, places in ((_F, f), (_B, b), (_I, i), (_W, w)):
                    if len(places) > 1:
                        out.append(
                            _v(_EO, "duplicate", places, kind=kind.value, stage=st, mb=m,
                               count=len(places), places=text(places))
                        )
                if b and (i or w):
                    out.append(_v(_EO, "b-and-split", b + i + w, stage=st, mb=m, places=text(b + i + w)))
                elif not b and not i and not w:
                    out.append(_v(_EO, "missing-backward", (), stage=st, mb=m))
                elif not b and i and not w:
                    out.append(_v(_EO, "i-without-w", i, stage=st, mb=m))
                elif not b and w and not i:
                    out.append(_v(_EO, "w-without-i", w, stage=st, mb=m))
    return out


# --------------------------------------------------------------------- index
NEVER = 1 << 62  # Index.waits: an input that never comes


class Index:
    """One pass over a well-formed schedule: stage tables, every comm op, the
    first occurrence of each compute/op per rank, and the FIFO matching. Built
    once per schedule (``index``) and shared by the properties and the graph
    engine; never by the certificate checker.

    - ``ops[i] = (rank, step, sub, Comm)``, in post order per rank (``sub``: the
      op's index in a BATCH, None for a plain op);
    - ``first[rank]``: key -> step, keys (ComputeKind, stage, mb) and
      ("BI", stage, mb) for the first B or I;
    - ``first_recv[rank]``: (RECV kind, stage, mb) -> op index;
    - ``partner[i]``: the op FIFO-matched with op i, or -1;
    - ``unmatched``: (op index, position k on its rank pair) of unmatched ops;
    - ``counts[(src, dst)] = (#sends, #receives)``;
    - comm units (a plain op or a BATCH): ``unit_rank/unit_step/unit_ops[u]``,
      ``unit_of_op[i]``, ``runits[rank]`` (post order), ``step_unit[rank][step]``;
    - ``inputs[rank][step]``: the keys a compute step consumes (None: comm).
    """

    def __init__(self, s: Schedule):
        rank_of = {st.id: st.rank for st in s.stages}
        nxt: dict[int, int | None] = {}
        prv: dict[int, int | None] = {}
        for r in s.routes:
            st = r.stages
            for k, sid in enumerate(st):
                nxt[sid] = st[k + 1] if k + 1 < len(st) else None
                prv[sid] = st[k - 1] if k > 0 else None
        self.rank_of, self.next, self.prev = rank_of, nxt, prv
        to_next = {sid: (None if n is None else rank_of[n]) for sid, n in nxt.items()}
        to_prev = {sid: (None if p is None else rank_of[p]) for sid, p in prv.items()}
        ops: list[tuple] = []
        count: dict[tuple, int] = {}  # (ComputeKind, stage, mb) -> how many times it runs
        overlaps: list[tuple[int, int]] = []
        firsts: list[dict] = []
        first_recvs: list[dict] = []
        sends: dict[tuple[int, int], list[int]] = defaultdict(list)
        recvs: dict[tuple[int, int], list[int]] = defaultdict(list)
        SF, RF, SB = CommKind.SEND_F, CommKind.RECV_F, CommKind.SEND_B
        RB = CommKind.RECV_B
        # comm units (a plain op, or a BATCH as a whole), numbered globally
        unit_rank: list[int] = []
        unit_step: list[int] = []
        unit_ops: list[list[int]] = []
        unit_of_op: list[int] = []
        runits: list[list[int]] = [[] for _ in range(s.num_ranks)]
        step_unit: list[dict[int, int]] = [dict() for _ in range(s.num_ranks)]
        self.unit_rank, self.unit_step, self.unit_ops = unit_rank, unit_step, unit_ops
        self.unit_of_op, self.runits, self.step_unit = unit_of_op, runits, step_unit
        self.inputs: list[list] = []  # rank -> step -> the keys a compute step consumes (None: comm)
        for rank, acts in enumerate(s.actions):
            first: dict = {}
            first_recv: dict = {}
            inputs: list = [None] * len(acts)
            self.inputs.append(inputs)
            for step, a in enumerate(acts):
                tp = type(a)
                if tp is Compute or tp is Overlap:
                    if tp is Overlap:
                        overlaps.append((rank, step))
                    need: list[tuple] = []
                    for c in ((a,) if tp is Compute else (a.f, a.b)):
                        kind, st, mb = c.kind, c.stage, c.mb
                        key = (kind, st, mb)
                        count[key] = count.get(key, 0) + 1
                        if key not in first:
                            first[key] = step
                        # what it consumes (SEMANTICS.md "Programs"), as keys of
                        # first (computes) or first_recv (receives)
                        if kind is _F:
                            p = prv[st]
                            if p is not None:
                                need.append((RF, st, mb) if rank_of[p] != rank else (_F, p, mb))
                        elif kind is _W:
                            need.append((_I, st, mb))
                        else:
                            key = ("BI", st, mb)
                            if key not in first:
                                first[key] = step
                            need.append((_F, st, mb))
                            n = nxt[st]
                            if n is not None:
                                need.append((RB, st, mb) if rank_of[n] != rank else ("BI", n, mb))
                    inputs[step] = need
                    continue
                batched = tp is Batch
                u = len(unit_ops)
                unit_rank.append(rank)
                unit_step.append(step)
                i0 = len(ops)
                runits[rank].append(u)
                step_unit[rank][step] = u
                for j, op in enumerate(a.ops if batched else (a,)):
                    i = len(ops)
                    unit_of_op.append(u)
                    ops.append((rank, step, j if batched else None, op))
                    kind = op.kind
                    if kind is SF:
                        sends[(rank, to_next[op.stage])].append(i)
                    elif kind is SB:
                        sends[(rank, to_prev[op.stage])].append(i)
                    else:
                        key = (kind, op.stage, op.mb)
                        if key not in first_recv:
                            first_recv[key] = i
                        src = to_prev[op.stage] if kind is RF else to_next[op.stage]
                        recvs[(src, rank)].append(i)
                unit_ops.append(list(range(i0, len(ops))))
            firsts.append(first)
            first_recvs.append(first_recv)
        self.ops, self.first, self.first_recv = ops, firsts, first_recvs
        self.count, self.overlaps = count, overlaps
        partner = [-1] * len(ops)
        unmatched: list[tuple[int, int]] = []
        counts: dict[tuple[int, int], tuple[int, int]] = {}
        for key in sorted(set(sends) | set(recvs)):
            a, b = sends.get(key, []), recvs.get(key, [])
            counts[key] = (len(a), len(b))
            for x, y in zip(a, b):
                partner[x] = y
                partner[y] = x
            unmatched.extend((x, k) for k, x in enumerate(a[len(b):], start=len(b)))
            unmatched.extend((x, k) for k, x in enumerate(b[len(a):], start=len(a)))
        self.partner, self.unmatched, self.counts = partner, unmatched, counts
        self.pair_list = [(x, y) for x, y in enumerate(partner) if y > x]
        # waits[rank][step] (computes): each input of ``inputs`` resolved to an
        # int: i >= 0 the first receive (op i) of that key on the rank, -1 - j
        # the first producer at step j of the rank (maybe at or after the step:
        # a dependency failure), NEVER none at all. wait_unit[rank][step]: the
        # unit of a BATCH with wait at that step, else -1.
        self.waits: list[list] = []
        self.wait_unit: list[list[int]] = []
        never = NEVER
        for rank, acts in enumerate(s.actions):
            first, first_recv = firsts[rank], first_recvs[rank]
            row: list = [None] * len(acts)
            wu = [-1] * len(acts)
            for step, need in enumerate(self.inputs[rank]):
                if need is None:
                    a = acts[step]
                    if type(a) is Batch and a.wait:
                        wu[step] = step_unit[rank][step]
                    continue
                res = []
                for key in need:
                    if type(key[0]) is CommKind:
                        i = first_recv.get(key)
                        res.append(never if i is None else i)
                    else:
                        at = first.get(key)
                        res.append(never if at is None else -1 - at)
                row[step] = res
            self.waits.append(row)
            self.wait_unit.append(wu)

    def needs(self, rank: int, c: Compute) -> list[tuple]:
        """What compute ``c`` on ``rank`` consumes (SEMANTICS.md "Programs"), as keys
        of ``first``/``first_recv``: a receive or a compute on this rank."""
        kind, st, mb = c.kind, c.stage, c.mb
        if kind is _F:
            p = self.prev[st]
            if p is None:
                return []
            return [(CommKind.RECV_F, st, mb) if self.rank_of[p] != rank else (_F, p, mb)]
        if kind is _B or kind is _I:
            n = self.next[st]
            if n is None:
                return [(_F, st, mb)]
            return [(_F, st, mb), (CommKind.RECV_B, st, mb) if self.rank_of[n] != rank else ("BI", n, mb)]
        return [(_I, st, mb)]


_CACHE: list = [None, None]


def index(s: Schedule) -> Index:
    """The Index of a well-formed schedule (the last one is cached)."""
    if _CACHE[0] is not s:
        _CACHE[0], _CACHE[1] = s, Index(s)
    return _CACHE[1]


def first_steps(s: Schedule):
    return index(s).first


def needs(s: Schedule, rank: int, c: Compute) -> list[tuple]:
    return index(s).needs(rank, c)


def _key_text(key: tuple) -> str:
    kind, st, m = key
    name = "B or I" if kind == "BI" else kind.value
    return f"{name}(stage {st}, mb {m})"


def dependencies(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    idx = index(s)
    SF, SB = CommKind.SEND_F, CommKind.SEND_B
    ops = idx.ops
    for rank, acts in enumerate(s.actions):
        first = idx.first[rank]
        inputs, waits = idx.inputs[rank], idx.waits[rank]
        for step, a in enumerate(acts):
            tp = type(a)
            if tp is Compute or tp is Overlap:
                for j, x in enumerate(waits[step]):
                    at = None if x == NEVER else (ops[x][1] if x >= 0 else -1 - x)
                    if at is None or at >= step:
                        key = inputs[step][j]
                        _dep(out, rank, step, _consumer(s, rank, step, key), key, at)
                continue
            for op in (a.ops if tp is Batch else (a,)):
                if op.kind is SF:
                    key = (_F, op.stage, op.mb)
                elif op.kind is SB:
                    key = ("BI", op.stage, op.mb)
                else:
                    continue
                at = first.get(key)
                if at is None or at >= step:
                    _dep(out, rank, step, op, key, at)
    return out


def _consumer(s: Schedule, rank: int, step: int, key: tuple):
    """The compute of step ``step`` that consumes ``key`` (an OVERLAP has two)."""
    a = s.actions[rank][step]
    if type(a) is Overlap:
        for c in (a.f, a.b):
            if key in index(s).needs(rank, c):
                return c
    return a


def _dep(out, rank, step, what, key, at) -> None:
    action = f"{_at(rank, step)} {what}"
    if at is None:
        out.append(_v(_DEP, "dep-missing", [(rank, step)], action=action, needed=_key_text(key), rank=rank))
    else:
        out.append(
            _v(_DEP, "dep-order", [(rank, step), (rank, at)], action=action, needed=_key_text(key),
               other=_at(rank, at))
        )


# --------------------------------------------------------------------- 4
def fifo_pairs(s: Schedule):
    """FIFO matching per ordered rank pair (SEMANTICS.md "Messages").

    Returns (pairs, unmatched_sends, unmatched_recvs, counts) where an op is
    (rank, step, sub, Comm) with ``sub`` its index in a BATCH (None for a plain
    op), pairs are (send, recv), and counts maps (src, dst) -> (#sends, #recvs).
    """
    idx = index(s)
    ops = idx.ops
    pairs = []
    for x, y in idx.pair_list:
        if ops[x][3].kind.is_send:
            pairs.append((ops[x], ops[y]))
        else:
            pairs.append((ops[y], ops[x]))
    us = [(ops[i], k) for i, k in idx.unmatched if ops[i][3].kind.is_send]
    ur = [(ops[i], k) for i, k in idx.unmatched if not ops[i][3].kind.is_send]
    return pairs, us, ur, idx.counts


def _nth(k: int) -> str:
    n = k + 1
    suf = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suf}"


def message_matching(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    idx = index(s)
    ops, nxt, prv = idx.ops, idx.next, idx.prev
    SF, RF, RB = CommKind.SEND_F, CommKind.RECV_F, CommKind.RECV_B
    for x, y in idx.pair_list:
        snd, rcv = ops[x], ops[y]
        if not snd[3].kind.is_send:
            snd, rcv = rcv, snd
        so, ro = snd[3], rcv[3]
        if so.kind is SF:
            if ro.kind is RF and ro.mb == so.mb and ro.stage == nxt[so.stage]:
                continue
        elif ro.kind is RB and ro.mb == so.mb and ro.stage == prv[so.stage]:
            continue
        expected = s.matching_op(so)
        if expected != ro:
            out.append(
                _v(_MM, "payload", [(snd[0], snd[1]), (rcv[0], rcv[1])], send=str(snd[3]),
                   send_at=_at(*snd[:3]), recv=str(rcv[3]), recv_at=_at(*rcv[:3]), expected=str(expected))
            )
    _pairs, us, ur, counts = fifo_pairs(s) if idx.unmatched else ([], [], [], {})
    for (x, k) in us:
        peer = s.peer_of(x[3])
        out.append(
            _v(_MM, "unmatched-send", [(x[0], x[1])], send=str(x[3]), send_at=_at(*x[:3]), peer=peer,
               nth=_nth(k), count=counts[(x[0], peer)][1], rank=x[0])
        )
    for (x, k) in ur:
        peer = s.peer_of(x[3])
        out.append(
            _v(_MM, "unmatched-recv", [(x[0], x[1])], recv=str(x[3]), recv_at=_at(*x[:3]), peer=peer,
               nth=_nth(k), count=counts[(peer, x[0])][0], rank=x[0])
        )
    out.sort(key=lambda v: v.locations)
    return out


# --------------------------------------------------------------------- 6
def overlap_legal(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    for rank, step in index(s).overlaps:
        a = s.actions[rank][step]
        if a.f.kind is _F and (a.b.kind is _B or a.b.kind is _I) and a.f.mb != a.b.mb:
            continue
        where = f"{_at(rank, step)} {a}"
        if a.f.kind is not _F or a.b.kind not in (_B, _I):
            out.append(
                _v(_OV, "overlap-kinds", [(rank, step)], action=where, f_kind=a.f.kind.value,
                   b_kind=a.b.kind.value)
            )
        elif a.f.mb == a.b.mb:
            # one micro-batch takes one route, and every backward of it needs
            # the loss, which needs every forward of it
            out.append(
                _v(_OV, "overlap-dependent", [(rank, step)], action=where, mb=a.f.mb,
                   route=s.route_of_mb[a.f.mb])
            )
    return out


# --------------------------------------------------------------------- 7
def peaks(s: Schedule) -> list[float]:
    return peak_activations(s)


def memory(s: Schedule, limit: float | None) -> list[Violation]:
    if limit is None:
        return []
    out: list[Violation] = []
    for rank, peak in enumerate(peak_activations(s)):
        if peak > limit:
            out.append(
                _v(_MEM, "memory", [(rank, _peak_step(s, rank, peak))], rank=rank, peak=_num(peak),
                   step=_peak_step(s, rank, peak), limit=_num(limit))
            )
    return out


def _num(x: float):
    return int(x) if float(x).is_integer() else x


def _peak_step(s: Schedule, rank: int, peak: float) -> int:
    """First step at which ``rank`` reaches ``peak`` (same counting as verifier.memory)."""
    live = 0.0
    for step, a in enumerate(s.actions[rank]):
        cs = computes_of(a)
        live += sum(1.0 for c in cs if c.kind is _F)
        if live >= peak:
            return step
        live -= sum(1.0 for c in cs if c.kind in (_B, _I))
    return len(s.actions[rank]) - 1


def static_properties(s: Schedule, memory_limit: float | None) -> dict[PropertyId, list[Violation]]:
    """Properties 2, 3, 4, 6, 7 of a well-formed schedule."""
    return {
        _EO: exactly_once(s),
        _DEP: dependencies(s),
        _MM: message_matching(s),
        _OV: overlap_legal(s),
        _MEM: memory(s, memory_limit),
    }

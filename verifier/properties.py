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
    comms_of,
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
    by_id = s.stage_by_id
    route_of_mb = s.route_of_mb
    for rank, acts in enumerate(s.actions):
        for step, a in enumerate(acts):
            if isinstance(a, Batch) and not a.ops:
                out.append(_v(_WF, "empty-batch", [(rank, step)], action=f"{_at(rank, step)} {a}"))
            subs = computes_of(a) + comms_of(a)
            for j, op in enumerate(subs):
                sub = j if len(subs) > 1 else None
                where = f"{_at(rank, step, sub)} {op}"
                st = by_id.get(op.stage)
                if st is None:
                    out.append(_v(_WF, "action-stage", [(rank, step)], action=where, stage=op.stage))
                    continue
                if not 0 <= op.mb < M:
                    out.append(_v(_WF, "action-mb", [(rank, step)], action=where, mb=op.mb, max_mb=M - 1))
                    continue
                ri = s.route_of_stage(op.stage)
                if route_of_mb[op.mb] != ri:
                    out.append(
                        _v(_WF, "action-route", [(rank, step)], action=where, mb=op.mb, stage=op.stage, route=ri)
                    )
                if st.rank != rank:
                    out.append(
                        _v(_WF, "action-rank", [(rank, step)], action=where, stage=op.stage, owner=st.rank, rank=rank)
                    )
                    continue
                if isinstance(op, Comm):
                    peer = s.peer_of(op)
                    if peer is None:
                        end = "last" if op.kind in (CommKind.SEND_F, CommKind.RECV_B) else "first"
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


# --------------------------------------------------------------------- 2
def exactly_once(s: Schedule) -> list[Violation]:
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


# --------------------------------------------------------------------- 3
def first_steps(s: Schedule):
    """Per rank, the first step of each compute and comm op: key -> step.

    Keys: ("F"|"B"|"I"|"W"|"BI", stage, mb) for computes ("BI": B or I) and
    (CommKind, stage, mb) for comm ops.
    """
    out = []
    for acts in s.actions:
        first: dict[tuple, int] = {}
        for step, a in enumerate(acts):
            for c in computes_of(a):
                first.setdefault((c.kind, c.stage, c.mb), step)
                if c.kind is _B or c.kind is _I:
                    first.setdefault(("BI", c.stage, c.mb), step)
            for op in comms_of(a):
                first.setdefault((op.kind, op.stage, op.mb), step)
        out.append(first)
    return out


def needs(s: Schedule, rank: int, c: Compute) -> list[tuple]:
    """What compute ``c`` on ``rank`` consumes (SEMANTICS.md "Programs"), as keys
    of ``first_steps``: a receive on this rank or a compute on this rank."""
    out: list[tuple] = []
    if c.kind is _F:
        p = s.prev_stage(c.stage)
        if p is not None:
            if s.rank_of(p) != rank:
                out.append((CommKind.RECV_F, c.stage, c.mb))
            else:
                out.append((_F, p, c.mb))
    elif c.kind is _B or c.kind is _I:
        out.append((_F, c.stage, c.mb))
        n = s.next_stage(c.stage)
        if n is not None:
            if s.rank_of(n) != rank:
                out.append((CommKind.RECV_B, c.stage, c.mb))
            else:
                out.append(("BI", n, c.mb))
    else:
        out.append((_I, c.stage, c.mb))
    return out


def _key_text(key: tuple) -> str:
    kind, st, m = key
    name = "B or I" if kind == "BI" else kind.value
    return f"{name}(stage {st}, mb {m})"


def dependencies(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    firsts = first_steps(s)
    for rank, acts in enumerate(s.actions):
        first = firsts[rank]
        for step, a in enumerate(acts):
            for c in computes_of(a):
                for key in needs(s, rank, c):
                    _dep(out, rank, step, f"{_at(rank, step)} {c}", key, first)
            for op in comms_of(a):
                if op.kind is CommKind.SEND_F:
                    key = (_F, op.stage, op.mb)
                elif op.kind is CommKind.SEND_B:
                    key = ("BI", op.stage, op.mb)
                else:
                    continue
                _dep(out, rank, step, f"{_at(rank, step)} {op}", key, first)
    return out


def _dep(out, rank, step, action, key, first) -> None:
    at = first.get(key)
    if at is None:
        out.append(_v(_DEP, "dep-missing", [(rank, step)], action=action, needed=_key_text(key), rank=rank))
    elif at >= step:
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
    sends: dict[tuple[int, int], list] = defaultdict(list)
    recvs: dict[tuple[int, int], list] = defaultdict(list)
    for rank, acts in enumerate(s.actions):
        for step, a in enumerate(acts):
            ops = comms_of(a)
            batched = isinstance(a, Batch)
            for j, op in enumerate(ops):
                peer = s.peer_of(op)
                rec = (rank, step, j if batched else None, op)
                if op.kind is CommKind.SEND_F or op.kind is CommKind.SEND_B:
                    sends[(rank, peer)].append(rec)
                else:
                    recvs[(peer, rank)].append(rec)
    pairs, us, ur, counts = [], [], [], {}
    for key in sorted(set(sends) | set(recvs)):
        a, b = sends.get(key, []), recvs.get(key, [])
        counts[key] = (len(a), len(b))
        pairs.extend(zip(a, b))
        us.extend((x, k) for k, x in enumerate(a[len(b):], start=len(b)))
        ur.extend((x, k) for k, x in enumerate(b[len(a):], start=len(a)))
    return pairs, us, ur, counts


def _nth(k: int) -> str:
    n = k + 1
    suf = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suf}"


def message_matching(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    pairs, us, ur, counts = fifo_pairs(s)
    for snd, rcv in pairs:
        expected = s.matching_op(snd[3])
        if expected != rcv[3]:
            out.append(
                _v(_MM, "payload", [(snd[0], snd[1]), (rcv[0], rcv[1])], send=str(snd[3]),
                   send_at=_at(*snd[:3]), recv=str(rcv[3]), recv_at=_at(*rcv[:3]), expected=str(expected))
            )
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
    for rank, acts in enumerate(s.actions):
        for step, a in enumerate(acts):
            if not isinstance(a, Overlap):
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

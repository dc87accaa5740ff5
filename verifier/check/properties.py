"""The static properties of specs/SEMANTICS.md: everything but deadlock-freedom.

What it is: one function per property (well-formed, exactly-once,
dependencies, message-matching, overlap-legal, memory), each returning the
list of ``Violation``s it finds (empty: the property holds), plus
``fifo_pairs`` (the FIFO message matching, as ops). Every function is linear
in the schedule's size: the semantics tables (``verifier.semantics.tables``,
one pass over the actions, shared with the engines) record what the schedule
means and, on the way, whether exactly-once holds, which inputs and sends
break a dependency and which FIFO pairs carry different payloads; each
property here is one pass over what they found, putting it into words.

Only ``well_formed`` is safe on an arbitrary schedule; the others assume it
holds (ids exist, every action sits on its stage's rank, every comm op has a
peer on another rank).

What it does not cover: deadlock-freedom (verifier.check.hbgraph, verifier.check.z3engine).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from verifier.errors import IllFormed  # re-exported: raised by the tables
from verifier.errors import ScheduleError
from verifier.format.guard import bounded
from verifier.results.check import PropertyId, Violation
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
    op_text,
)
from verifier.semantics.memory import peak_activations
from verifier.semantics.routes import routes_of
from verifier.semantics.tables import tables_of
from verifier.format.units import format_bytes

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
    # the tables check every action on their way (and are memoised for the
    # other properties and the engines); the pass below runs only to word
    # what they refused
    try:
        tables_of(s)
    except IllFormed:
        return _action_faults(s)
    return []


def _action_faults(s: Schedule) -> list[Violation]:
    """The per-action conditions of well-formed, worded, on a schedule whose
    placement is sound."""
    out: list[Violation] = []
    M = s.num_microbatches
    # per stage: (rank, route index, rank towards next stage, rank towards previous)
    nb = routes_of(s)
    table: dict[int, tuple] = {
        sid: (nb.rank_of[sid], ri,
              None if nb.next[sid] is None else nb.rank_of[nb.next[sid]],
              None if nb.prev[sid] is None else nb.rank_of[nb.prev[sid]])
        for sid, ri in nb.route_of.items()}
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



def require_well_formed(s: Schedule, source: str, command: str = "this command") -> None:
    """Refuse (ScheduleError naming ``source``) a schedule that is not well-formed.

    Well-formed is property 1 of specs/SEMANTICS.md: every stage declared once
    and placed on a rank that exists, every route naming declared stages and
    every stage on one route, every micro-batch on one route, every action's
    stage declared, its micro-batch in range and on its stage's route, on the
    rank that holds its stage, every comm op with a peer on another rank.
    Every engine (analysis replay, lowering, reference and fastpath executors)
    assumes exactly this; ``check`` reports it as ``well-formed`` REFUTED.
    """
    viols = well_formed(s)
    if not viols:
        return
    more = f" (and {len(viols) - 1} more)" if len(viols) > 1 else ""
    raise ScheduleError(
        f"not well-formed: {bounded(viols[0].message, 300)}{more}; {command} needs a "
        "well-formed schedule (`python -m verifier check` lists every fault)", source)



# --------------------------------------------------------------------- 2
def exactly_once(s: Schedule) -> list[Violation]:
    if tables_of(s).exactly_once:
        return []
    return _exactly_once(s)


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


def needs(s: Schedule, rank: int, c: Compute) -> list[tuple]:
    return tables_of(s).needs(rank, c)


def _key_text(key: tuple) -> str:
    kind, st, m = key
    if kind == "BI":
        return f"{op_text('B', st, m)} or {op_text('I', st, m)}"
    return op_text(kind, st, m)


def dependencies(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    idx = tables_of(s)
    for rank, step, key, op in idx.dep_failures:
        what = op if op is not None else _consumer(s, rank, step, key)
        _dep(out, rank, step, what, key, idx.step_of(key))
    return out


def _consumer(s: Schedule, rank: int, step: int, key: tuple):
    """The compute of step ``step`` that consumes ``key`` (an OVERLAP has two)."""
    a = s.actions[rank][step]
    if type(a) is Overlap:
        for c in (a.f, a.b):
            if key in tables_of(s).needs(rank, c):
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
    idx = tables_of(s)
    ops = idx.ops
    pairs = []
    for x, y in idx.pair_list:
        if idx.is_send[x]:
            pairs.append((ops[x], ops[y]))
        else:
            pairs.append((ops[y], ops[x]))
    us = [(ops[i], k) for i, k in idx.unmatched if idx.is_send[i]]
    ur = [(ops[i], k) for i, k in idx.unmatched if not idx.is_send[i]]
    return pairs, us, ur, idx.counts


def _nth(k: int) -> str:
    n = k + 1
    suf = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suf}"


def message_matching(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    idx = tables_of(s)
    # the index pairs each send with its FIFO receive and compares payloads
    # on the way (a send's expected receive against the receive's own key)
    for x, y in sorted(idx.mismatched, key=min):
        snd, rcv = idx.ops[x], idx.ops[y]
        expected = s.matching_op(snd[3])
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
    for rank, step in tables_of(s).odd_overlaps:
        a = s.actions[rank][step]
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
def peaks(s: Schedule, sizes=None) -> list[float]:
    """Peak live activations per rank; in bytes with ``sizes`` (bytes per stage)."""
    return peak_activations(s, sizes)


def memory(s: Schedule, limit: float | None, sizes=None) -> list[Violation]:
    """Property 7; with ``sizes`` (bytes per stage) the peaks and ``limit`` are bytes."""
    if limit is None:
        return []
    out: list[Violation] = []
    for rank, peak in enumerate(peak_activations(s, sizes)):
        if peak > limit:
            step = _peak_step(s, rank, peak, sizes)
            if sizes is None:
                out.append(_v(_MEM, "memory", [(rank, step)], rank=rank, peak=_num(peak),
                              step=step, limit=_num(limit), at=_at(rank, step)))
                continue
            out.append(
                _v(_MEM, "memory-bytes", [(rank, step)], rank=rank, peak=_num(peak), step=step,
                   limit=_num(limit), at=_at(rank, step), peak_text=format_bytes(peak),
                   limit_text=format_bytes(limit),
                   stage_bytes=tuple((sid, _num(sizes[sid])) for sid in s.stages_on_rank[rank]))
            )
    return out


def _num(x: float):
    return int(x) if float(x).is_integer() else x


def _peak_step(s: Schedule, rank: int, peak: float, sizes=None) -> int:
    """First step at which ``rank`` reaches ``peak`` (same counting as verifier.semantics.memory)."""
    live = 0.0
    size = (lambda c: 1.0) if sizes is None else (lambda c: sizes.get(c.stage, 1.0))
    for step, a in enumerate(s.actions[rank]):
        cs = computes_of(a)
        live += sum(size(c) for c in cs if c.kind is _F)
        if live >= peak:
            return step
        live -= sum(size(c) for c in cs if c.kind in (_B, _I))
    return len(s.actions[rank]) - 1


def static_properties(s: Schedule, memory_limit: float | None,
                      sizes=None) -> dict[PropertyId, list[Violation]]:
    """Properties 2, 3, 4, 6, 7 of a well-formed schedule (``sizes``: bytes per
    stage, making ``memory_limit`` bytes)."""
    return {
        _EO: exactly_once(s),
        _DEP: dependencies(s),
        _MM: message_matching(s),
        _OV: overlap_legal(s),
        _MEM: memory(s, memory_limit, sizes),
    }

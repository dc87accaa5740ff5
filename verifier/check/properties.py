"""The static properties of specs/SEMANTICS.md: everything but deadlock-freedom.

What it is: one function per property (well-formed, exactly-once,
dependencies, message-matching, overlap-legal, memory), each returning the
list of ``Violation``s it finds (empty: the property holds), plus
``fifo_pairs`` (the message matching both engines and the certificate checker
take as given by the schedule). Every function is linear in the schedule's size:
one pass (``Index``) records, in tables indexed by (stage, mb), what the
properties and the graph engine read, and decides on the way whether
exactly-once holds, which inputs and sends break a dependency and which FIFO
pairs carry different payloads; the functions only word what it found.

Only ``well_formed`` is safe on an arbitrary schedule; the others assume it
holds (ids exist, every action sits on its stage's rank, every comm op has a
peer on another rank).

What it does not cover: deadlock-freedom (verifier.check.hbgraph, verifier.check.z3engine).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cached_property

from verifier.errors import IllFormed  # re-exported: raised by Index
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
    # the index checks every action on its way (and is kept for the other
    # properties); the loop below runs only to word what it refused
    try:
        idx = Index(s)
    except IllFormed:
        pass
    else:
        _CACHE[0], _CACHE[1] = s, idx
        return []
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

def by_rank(s: Schedule, stage: int) -> int:
    return s.stage_by_id[stage].rank


# --------------------------------------------------------------------- 2
def exactly_once(s: Schedule) -> list[Violation]:
    if index(s).exactly_once:
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


# --------------------------------------------------------------------- index
NEVER = 1 << 62  # Index.resolve: an input that never comes
# bits of the index's ``present`` per (stage, mb): F 1, B 2, I 4, W 8; the
# two ways to run exactly once are F + B and F + I + W
_WHOLE, _SPLIT = 1 | 2, 1 | 4 | 8


class Index:
    """One pass over a well-formed schedule, shared by the static properties
    and the graph engine (never by the certificate checker). Built once per
    schedule (``index``), by ``well_formed`` when the placement is sound: it
    checks each action as it reads it (the per-action conditions of
    well-formed) and raises ``IllFormed`` at the first that fails.

    In a well-formed schedule every compute and op of stage s sits on the rank
    of s, so "the first F(s, m) of the rank" is the first F(s, m) of the whole
    schedule: the tables below are global, indexed by the dense key
    ``base[s] + m`` (``base[s]``: s's position among the stages times M).

    - ``first[kind][key]``: the step of the first compute of that kind (kind
      in F, B, I, W and "BI", the first B or I), -1 if none;
      ``first_recv[kind][key]``: the first receive (RECV_F, RECV_B) as an op
      index, -1 if none;
    - ``ops[i] = (rank, step, sub, Comm)``, in post order per rank (``sub``: the
      op's index in a BATCH, None for a plain op; built on first use), ``num_ops``;
    - ``partner[i]``: the op FIFO-matched with op i, or -1; ``pair_list``: the
      matched (i, j), i < j, by i; ``unmatched``: (op index, position k on its
      rank pair); ``counts[(src, dst)] = (#sends, #receives)``;
      ``mismatched``: the matched (send, receive) whose payloads differ;
    - comm units (a plain op or a BATCH), numbered in rank then post order:
      ``unit_rank/unit_ops[u]``, ``unit_of_op[i]``, ``runits[rank]`` (in order);
    - ``steps[rank][step]``: for a comm step its unit; for a compute step the
      receives (op indices) it waits for, or None when one of its inputs is
      never there before it (a dependency failure: the step never begins);
      ``wait_unit[rank][step]``: the unit of a BATCH with wait, else -1
      (``num_waits`` of them);
    - ``dep_failures``: (rank, step, key, op) for every input of a compute
      (``op`` None) and every send (the op) whose data is not produced at an
      earlier step of its rank, in rank, step and input order;
    - ``exactly_once``: whether property 2 holds; ``odd_overlaps``: (rank, step)
      of every OVERLAP that is not a forward and a backward of two
      micro-batches (overlap-legal words them).
    """

    def __init__(self, s: Schedule):
        M, R = s.num_microbatches, s.num_ranks
        rank_of = {st.id: st.rank for st in s.stages}
        base = {st.id: n * M for n, st in enumerate(s.stages)}
        K = len(s.stages) * M
        nxt: dict[int, int | None] = {}
        prv: dict[int, int | None] = {}
        route_of: dict[int, int] = {}
        for ri, r in enumerate(s.routes):
            st = r.stages
            for k, sid in enumerate(st):
                nxt[sid] = st[k + 1] if k + 1 < len(st) else None
                prv[sid] = st[k - 1] if k > 0 else None
                route_of[sid] = ri
        self.rank_of, self.next, self.prev, self.base = rank_of, nxt, prv, base
        mb_route = [s.route_of_mb.get(m, -1) for m in range(M)]
        # per stage, read once per op: (rank, route, key base, how its F gets
        # its input, how its B/I gets the next stage's gradient, the previous
        # and next stage's key base and rank); "how": 0 none (first or last
        # stage), 1 a receive, 2 a compute on this rank; -1 where there is none
        info: dict[int, tuple] = {}
        for sid, r in rank_of.items():
            p, n = prv.get(sid), nxt.get(sid)
            info[sid] = (
                r, route_of[sid], base[sid],
                0 if p is None else (1 if rank_of[p] != r else 2),
                0 if n is None else (1 if rank_of[n] != r else 2),
                -1 if p is None else base[p], -1 if p is None else rank_of[p],
                -1 if n is None else base[n], -1 if n is None else rank_of[n],
            )
        # per op kind, per stage whose neighbour that way is on another rank:
        # (rank, route, key base, payload key base, the channel's list it joins);
        # the payload key: a receive's own (kind, stage, mb), a send's expected one
        chans: dict[int, tuple[list[int], list[int]]] = {}  # src * R + dst -> (sends, receives)

        def chan(src: int, dst: int) -> tuple[list[int], list[int]]:
            ch = chans.get(src * R + dst)
            if ch is None:
                ch = chans[src * R + dst] = ([], [])
            return ch

        sf_tab: dict[int, tuple] = {}
        sb_tab: dict[int, tuple] = {}
        rf_tab: dict[int, tuple] = {}
        rb_tab: dict[int, tuple] = {}
        for sid, (r, route, kb, _fi, _bi, pkb, prank, nkb, nrank) in info.items():
            if nrank >= 0 and nrank != r:
                sf_tab[sid] = (r, route, kb, nkb, chan(r, nrank)[0])
                rb_tab[sid] = (r, route, kb, K + kb, chan(nrank, r)[1])
            if prank >= 0 and prank != r:
                sb_tab[sid] = (r, route, kb, K + pkb, chan(r, prank)[0])
                rf_tab[sid] = (r, route, kb, kb, chan(prank, r)[1])
        fF, fB, fI, fW, fBI = ([-1] * K for _ in range(5))
        rF, rB = [-1] * K, [-1] * K
        present = bytearray(K)
        dup = False
        SF, RF, SB = CommKind.SEND_F, CommKind.RECV_F, CommKind.SEND_B
        n_ops = 0
        num_waits = 0
        sig: list[int] = []  # per op: a receive's own (kind, stage, mb) key, a send's expected one
        odd_overlaps: list[tuple[int, int]] = []
        dep_failures: list[tuple] = []
        unit_rank: list[int] = []
        unit_ops: list[range] = []
        unit_of_op: list[int] = []
        runits: list[list[int]] = []
        steps: list[list] = []
        wait_units: list[list[int]] = []
        bad = IllFormed
        for rank, acts in enumerate(s.actions):
            row: list = [None] * len(acts)
            wait_unit = [-1] * len(acts)
            u0 = len(unit_ops)
            for step, a in enumerate(acts):
                tp = type(a)
                if tp is Compute or tp is Overlap:
                    if tp is Overlap:
                        f, b = a.f, a.b
                        if not (f.kind is _F and (b.kind is _B or b.kind is _I) and f.mb != b.mb):
                            odd_overlaps.append((rank, step))
                    recvs: list[int] | None = []
                    for c in ((a,) if tp is Compute else (a.f, a.b)):
                        kind, st, mb = c.kind, c.stage, c.mb
                        t = info.get(st)
                        if t is None or not 0 <= mb < M:
                            raise bad
                        srank, route, kb, f_in, b_in, pkb, _pr, nkb, _nr = t
                        if srank != rank or mb_route[mb] != route:
                            raise bad
                        key = kb + mb
                        # record it, then look up what it consumes (SEMANTICS.md
                        # "Programs"): an input is met when it was produced (or
                        # its receive posted) at an earlier step of this rank
                        if kind is _F:
                            present[key] |= 1
                            if fF[key] < 0:
                                fF[key] = step
                            else:
                                dup = True
                            if f_in == 1:
                                i = rF[key]
                                if i >= 0:
                                    if recvs is not None:
                                        recvs.append(i)
                                    continue
                                need = (RF, st, mb)
                            elif f_in == 2:
                                if 0 <= fF[pkb + mb] < step:
                                    continue
                                need = (_F, prv[st], mb)
                            else:
                                continue
                        elif kind is _W:
                            present[key] |= 8
                            if fW[key] < 0:
                                fW[key] = step
                            else:
                                dup = True
                            if 0 <= fI[key] < step:
                                continue
                            need = (_I, st, mb)
                        else:
                            if kind is _B:
                                present[key] |= 2
                                t = fB
                            else:
                                present[key] |= 4
                                t = fI
                            if t[key] < 0:
                                t[key] = step
                            else:
                                dup = True
                            if fBI[key] < 0:
                                fBI[key] = step
                            if not 0 <= fF[key] < step:
                                dep_failures.append((rank, step, (_F, st, mb), None))
                                recvs = None
                            if b_in == 1:
                                i = rB[key]
                                if i >= 0:
                                    if recvs is not None:
                                        recvs.append(i)
                                    continue
                                need = (CommKind.RECV_B, st, mb)
                            elif b_in == 2:
                                if 0 <= fBI[nkb + mb] < step:
                                    continue
                                need = ("BI", nxt[st], mb)
                            else:
                                continue
                        dep_failures.append((rank, step, need, None))
                        recvs = None
                    row[step] = recvs
                    continue
                batched = tp is Batch
                if batched and not a.ops:
                    raise bad
                u = len(unit_ops)
                unit_rank.append(rank)
                row[step] = u
                if batched and a.wait:
                    wait_unit[step] = u
                    num_waits += 1
                i0 = n_ops
                for op in (a.ops if batched else (a,)):
                    kind, st, mb = op.kind, op.stage, op.mb
                    # per kind, the stage's row (absent: no such stage, or
                    # its neighbour that way is none or on the same rank)
                    if kind is SF:
                        t = sf_tab.get(st)
                        if t is None or not 0 <= mb < M:
                            raise bad
                        srank, route, kb, sb, lst = t
                        if srank != rank or mb_route[mb] != route:
                            raise bad
                        if fF[kb + mb] < 0:
                            dep_failures.append((rank, step, (_F, st, mb), op))
                        sig.append(sb + mb)
                    elif kind is RF:
                        t = rf_tab.get(st)
                        if t is None or not 0 <= mb < M:
                            raise bad
                        srank, route, kb, sb, lst = t
                        if srank != rank or mb_route[mb] != route:
                            raise bad
                        if rF[kb + mb] < 0:
                            rF[kb + mb] = n_ops
                        sig.append(sb + mb)
                    elif kind is SB:
                        t = sb_tab.get(st)
                        if t is None or not 0 <= mb < M:
                            raise bad
                        srank, route, kb, sb, lst = t
                        if srank != rank or mb_route[mb] != route:
                            raise bad
                        if fBI[kb + mb] < 0:
                            dep_failures.append((rank, step, ("BI", st, mb), op))
                        sig.append(sb + mb)
                    else:
                        t = rb_tab.get(st)
                        if t is None or not 0 <= mb < M:
                            raise bad
                        srank, route, kb, sb, lst = t
                        if srank != rank or mb_route[mb] != route:
                            raise bad
                        if rB[kb + mb] < 0:
                            rB[kb + mb] = n_ops
                        sig.append(sb + mb)
                    lst.append(n_ops)
                    n_ops += 1
                if batched:
                    unit_of_op += [u] * (n_ops - i0)
                else:  # one op: no list to extend by (bench_check.py, the CSV case)
                    unit_of_op.append(u)
                unit_ops.append(range(i0, n_ops))
            runits.append(list(range(u0, len(unit_ops))))
            steps.append(row)
            wait_units.append(wait_unit)
        self.num_ops, self.num_waits, self.odd_overlaps, self.dep_failures = n_ops, num_waits, odd_overlaps, dep_failures
        self._actions = s.actions
        self.unit_rank, self.unit_ops = unit_rank, unit_ops
        self.unit_of_op, self.runits, self.steps, self.wait_unit = unit_of_op, runits, steps, wait_units
        self.first = {_F: fF, _B: fB, _I: fI, _W: fW, "BI": fBI}
        self.first_recv = {RF: rF, CommKind.RECV_B: rB}
        # every required (stage, mb) is F + B or F + I + W, each once (a
        # well-formed schedule runs no compute off its routes)
        required = sum(len(r.stages) * len(r.microbatches) for r in s.routes)
        self.exactly_once = not dup and present.count(_WHOLE) + present.count(_SPLIT) == required
        # FIFO matching per ordered rank pair (SEMANTICS.md "Messages")
        partner = [-1] * n_ops
        unmatched: list[tuple[int, int]] = []
        mismatched: list[tuple[int, int]] = []
        counts: dict[tuple[int, int], tuple[int, int]] = {}
        for key in sorted(chans):
            a, b = chans[key]
            if not a and not b:
                continue  # a channel no op takes
            counts[divmod(key, R)] = (len(a), len(b))
            for x, y in zip(a, b):
                partner[x] = y
                partner[y] = x
                if sig[x] != sig[y]:
                    mismatched.append((x, y))
            unmatched.extend((x, k) for k, x in enumerate(a[len(b):], start=len(b)))
            unmatched.extend((x, k) for k, x in enumerate(b[len(a):], start=len(a)))
        self.partner, self.unmatched, self.counts, self.mismatched = partner, unmatched, counts, mismatched
        self.num_pairs = (n_ops - len(unmatched)) // 2

    @cached_property
    def ops(self) -> list[tuple]:
        """(rank, step, sub, Comm) of every op, by op index (built on first use:
        only counterexamples and the eager model read it)."""
        out = []
        for rank, acts in enumerate(self._actions):
            for step, a in enumerate(acts):
                if type(a) is Batch:
                    out.extend((rank, step, j, op) for j, op in enumerate(a.ops))
                elif type(a) is Comm:
                    out.append((rank, step, None, a))
        return out

    @property
    def pair_list(self) -> list[tuple[int, int]]:
        return [(x, y) for x, y in enumerate(self.partner) if y > x]

    def needs(self, rank: int, c: Compute) -> list[tuple]:
        """What compute ``c`` on ``rank`` consumes (SEMANTICS.md "Programs"), as keys
        (kind, stage, mb) of ``lookup``: a receive or a compute on this rank
        (kind "BI": the first B or I)."""
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

    def lookup(self, key: tuple) -> int:
        """A key of ``needs`` resolved: i >= 0 the first receive (op i) of a
        receive key, -1 - j the first compute (at step j, anywhere in the
        program) of a compute key, NEVER none at all."""
        kind, st, mb = key
        if kind in self.first_recv:
            i = self.first_recv[kind][self.base[st] + mb]
            return NEVER if i < 0 else i
        at = self.first[kind][self.base[st] + mb]
        return NEVER if at < 0 else -1 - at

    def step_of(self, key: tuple) -> int | None:
        """The step of a key's first receive or compute on its rank, None if none."""
        x = self.lookup(key)
        return None if x == NEVER else (self.ops[x][1] if x >= 0 else -1 - x)


_CACHE: list = [None, None]


def index(s: Schedule) -> Index:
    """The Index of a well-formed schedule (the last one is cached)."""
    if _CACHE[0] is not s:
        _CACHE[0], _CACHE[1] = s, Index(s)
    return _CACHE[1]


def release() -> None:
    """Drop the cached Index (the checker calls it when it is done)."""
    _CACHE[0] = _CACHE[1] = None


def needs(s: Schedule, rank: int, c: Compute) -> list[tuple]:
    return index(s).needs(rank, c)


def _key_text(key: tuple) -> str:
    kind, st, m = key
    if kind == "BI":
        return f"{op_text('B', st, m)} or {op_text('I', st, m)}"
    return op_text(kind, st, m)


def dependencies(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    idx = index(s)
    for rank, step, key, op in idx.dep_failures:
        what = op if op is not None else _consumer(s, rank, step, key)
        _dep(out, rank, step, what, key, idx.step_of(key))
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
        if ops[x][3].kind in _SENDS:
            pairs.append((ops[x], ops[y]))
        else:
            pairs.append((ops[y], ops[x]))
    us = [(ops[i], k) for i, k in idx.unmatched if ops[i][3].kind in _SENDS]
    ur = [(ops[i], k) for i, k in idx.unmatched if ops[i][3].kind not in _SENDS]
    return pairs, us, ur, idx.counts


_SENDS = frozenset((CommKind.SEND_F, CommKind.SEND_B))


def _nth(k: int) -> str:
    n = k + 1
    suf = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suf}"


def message_matching(s: Schedule) -> list[Violation]:
    out: list[Violation] = []
    idx = index(s)
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
    for rank, step in index(s).odd_overlaps:
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

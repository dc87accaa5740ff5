"""The semantics tables: what a well-formed schedule means, computed once.

What it is: one pass over a schedule (``Tables``) that turns the rules of
specs/SEMANTICS.md into dense tables every engine reads instead of deriving
them again: the static properties (verifier.check.properties), the graph
engine (verifier.check.hbgraph), the checker (verifier.check.checker) and,
through ``tables_of``, the Z3 encoding (verifier.check.encoding).

The parts that need no well-formed actions are stated below this module, and
``Tables`` uses them: route neighbours, the peer stage of an op and what a
compute consumes (verifier.semantics.routes: ``Routes``, ``peer_stage``,
``inputs``; the lowering reads it too), and the FIFO matching per ordered rank
pair (``fifo_pairs`` of verifier.semantics.channels, whose ``CommIndex``
numbers, pairs and finds the first receives of any schedule as written: the
analysis replay and the reference executor read that, since they take
schedules that are not well-formed; tests/test_semantics_channels.py holds the
two against each other). The one pass itself (``_scan``) numbers ops and
units and finds first receives inline, unrolled for speed, in the same order.

Numbering (one for every consumer):

- a (stage, micro-batch) is the dense key ``base[s] + m`` (``base[s]``: s's
  position among the declared stages times M);
- comm ops are numbered 0.. in rank, then post order (a BATCH's ops in order);
- comm *units* (a plain op, or a BATCH as a whole) likewise, 0.. in rank then
  post order.

In a well-formed schedule every compute and op of stage s sits on the rank of
s, so "the first F(s, m) of the rank" is the first F(s, m) of the schedule and
the first-producer tables are global.

The memo: ``tables_of(s)`` keeps the tables of the last schedule asked for (by
identity, through a weak reference, so it never keeps a schedule alive);
``forget()`` drops them. Nothing else caches.

Not covered: wording violations (verifier.check.properties), the models'
rules (verifier.semantics.comm), deciding anything. The certificate checker
reads none of this on purpose (it is the independent second opinion).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cached_property

from verifier.errors import IllFormed
from verifier.ir import Batch, Comm, CommKind, Compute, ComputeKind, Overlap, Schedule
from verifier.semantics.channels import fifo_pairs
from verifier.semantics.comm import CommModel, StreamRule
from verifier.semantics.routes import Routes, routes_of  # noqa: F401  (re-exported)

_F, _B, _I, _W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W
NEVER = 1 << 62  # Tables.lookup: an input that never comes
# bits of ``present`` per (stage, mb): F 1, B 2, I 4, W 8; the two ways to
# run exactly once are F + B and F + I + W
_WHOLE, _SPLIT = 1 | 2, 1 | 4 | 8


def _stage_rows(s: Schedule, nb: Routes):
    """Per stage, what the scan reads once per op: ``info[s]`` = (rank, route,
    key base, how its F gets its input, how its B/I gets the next stage's
    gradient, the previous and next stage's key base and rank; "how": 0 none
    (first or last stage), 1 a receive, 2 a compute on this rank; -1 where
    there is none); per op kind, per stage whose neighbour that way is on
    another rank: (rank, route, key base, payload key base, the FIFO channel's
    list it joins; the payload key: a receive's own (kind, stage, mb), a send's
    expected one); and the channels, ``src * R + dst -> (sends, receives)``."""
    R, K = s.num_ranks, len(s.stages) * s.num_microbatches
    rank_of, base, prv, nxt = nb.rank_of, nb.base, nb.prev, nb.next
    info: dict[int, tuple] = {}
    for sid, r in rank_of.items():
        if sid not in nb.route_of:
            raise IllFormed  # a stage on no route
        p, n = prv.get(sid), nxt.get(sid)
        info[sid] = (
            r, nb.route_of[sid], base[sid],
            0 if p is None else (1 if rank_of[p] != r else 2),
            0 if n is None else (1 if rank_of[n] != r else 2),
            -1 if p is None else base[p], -1 if p is None else rank_of[p],
            -1 if n is None else base[n], -1 if n is None else rank_of[n],
        )
    chans: dict[int, tuple[list[int], list[int]]] = {}

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
    return info, (sf_tab, sb_tab, rf_tab, rb_tab), chans


class Tables:
    """The tables of one well-formed schedule (module docstring). Building them
    checks each action as it is read (the per-action conditions of
    well-formed) and raises ``IllFormed`` at the first that fails.

    - ``routes``: the route neighbours (``Routes``; also as ``rank_of``,
      ``next``, ``prev``, ``base``);
    - ``first[kind][key]``: the step of the first compute of that kind (kind
      in F, B, I, W and "BI", the first B or I), -1 if none;
      ``first_recv[kind][key]``: the first receive (RECV_F, RECV_B) as an op
      index, -1 if none (the value a compute consumes: ``needs``, ``lookup``);
    - ``ops[i] = (rank, step, sub, Comm)`` (``sub``: the op's index in a BATCH,
      None for a plain op; built on first use), ``num_ops``; ``is_send[i]``,
      ``peer[i]`` (the rank on the other end), both built on first use;
    - the FIFO channels: ``partner[i]``: the op matched with op i, or -1;
      ``pair_list``: the matched (i, j), i < j; ``unmatched``: (op index,
      position k on its rank pair); ``counts[(src, dst)] = (#sends,
      #receives)``; ``mismatched``: the matched (send, receive) whose payloads
      differ; ``num_pairs``;
    - communication units: ``unit_rank/unit_ops[u]``, ``unit_of_op[i]``,
      ``runits[rank]`` (in post order); ``streams(model)`` groups them into
      the model's in-order streams;
    - where a rank blocks (every model): ``steps[rank][step]``: for a comm step
      its unit; for a compute step the receives (op indices) it waits for, or
      None when one of its inputs is never there before it (the step never
      begins); ``wait_unit[rank][step]``: the unit of a BATCH with wait, else
      -1 (``num_waits`` of them);
    - found on the way, for the static properties: ``dep_failures``: (rank,
      step, key, op) for every input of a compute (``op`` None) and every send
      (the op) whose data is not produced at an earlier step of its rank;
      ``exactly_once``: whether property 2 holds; ``odd_overlaps``: (rank,
      step) of every OVERLAP that is not a forward and a backward of two
      micro-batches.
    """

    def __init__(self, s: Schedule):
        nb = self.routes = routes_of(s)
        self.rank_of, self.next, self.prev, self.base = nb.rank_of, nb.next, nb.prev, nb.base
        self._schedule_actions = s.actions
        info, tabs, chans = _stage_rows(s, nb)
        _scan(self, s, nb, info, tabs)
        _match(self, chans, s.num_ranks)
        # every required (stage, mb) is F + B or F + I + W, each once (a
        # well-formed schedule runs no compute off its routes)
        required = sum(len(r.stages) * len(r.microbatches) for r in s.routes)
        present = self._present
        self.exactly_once = not self._dup and present.count(_WHOLE) + present.count(_SPLIT) == required
        del self._present

    @cached_property
    def ops(self) -> list[tuple]:
        """(rank, step, sub, Comm) of every op, by op index (built on first use:
        only counterexamples and some models read it)."""
        out = []
        for rank, acts in enumerate(self._schedule_actions):
            for step, a in enumerate(acts):
                if type(a) is Batch:
                    out.extend((rank, step, j, op) for j, op in enumerate(a.ops))
                elif type(a) is Comm:
                    out.append((rank, step, None, a))
        return out

    @cached_property
    def is_send(self) -> bytearray:
        """Per op: 1 for a send (from the FIFO channels' send lists)."""
        out = bytearray(self.num_ops)
        for sends, _recvs in self._chans.values():
            for i in sends:
                out[i] = 1
        return out

    @cached_property
    def peer(self) -> list[int]:
        """Per op: the rank on its other end (a well-formed op has one)."""
        rank_of, peer_stage = self.rank_of, self.routes.peer_stage
        return [rank_of[peer_stage(o[3].kind, o[3].stage)] for o in self.ops]

    @property
    def pair_list(self) -> list[tuple[int, int]]:
        return [(x, y) for x, y in enumerate(self.partner) if y > x]

    def streams(self, model: CommModel) -> "Streams":
        """The units grouped into ``model``'s in-order streams (memoised per
        stream rule on these tables)."""
        memo = self.__dict__.setdefault("_streams", {})
        got = memo.get(model.stream)
        if got is None:
            got = memo[model.stream] = _streams(self, model)
        return got

    def needs(self, rank: int, c: Compute) -> list[tuple]:
        """What compute ``c`` on ``rank`` consumes (SEMANTICS.md "Programs"), as keys
        (kind, stage, mb) of ``lookup``: a receive or a compute on this rank
        (kind "BI": the first B or I)."""
        mb = c.mb
        return [(k, st, mb) for k, st in self.routes.inputs(rank, c.kind, c.stage)]

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


@dataclass(frozen=True)
class Streams:
    """A model's in-order streams over the units of one schedule: ``of_unit[u]``
    the stream of unit u (None when the model has no stream order), ``units``
    each stream's units in post order, ``pos[u]`` u's place in its stream."""

    of_unit: list | None
    units: list
    pos: list | None


def _streams(t: Tables, m: CommModel) -> Streams:
    if m.stream is StreamRule.NONE:
        return Streams(None, [], None)
    if m.stream is StreamRule.RANK:
        of_unit = list(t.unit_rank)
        units = t.runits
    else:
        peer, ops, acts = t.peer, t.ops, t._schedule_actions
        key_of: dict[tuple[int, int | None], int] = {}
        units, of_unit = [], []
        for u, r in enumerate(t.unit_rank):
            i = t.unit_ops[u][0]
            key = (r, m.stream_of(type(acts[r][ops[i][1]]) is Batch, peer[i]))
            k = key_of.setdefault(key, len(units))
            if k == len(units):
                units.append([])
            units[k].append(u)
            of_unit.append(k)
    pos = [0] * len(of_unit)
    for lst in units:
        for p, u in enumerate(lst):
            pos[u] = p
    return Streams(of_unit, units, pos)


def _match(t: Tables, chans: dict, R: int) -> None:
    """FIFO matching per ordered rank pair (``fifo_pairs``, the one the
    channels of any schedule use), comparing payloads on the way (a send's
    expected key against the receive's own)."""
    t.partner, t.unmatched, t.counts, t.mismatched = fifo_pairs(chans, t.num_ops, R, t._sig)
    t._chans = chans
    t.num_pairs = (t.num_ops - len(t.unmatched)) // 2
    del t._sig


# the tables of the last schedule asked for: (weak reference to it, its tables)
_memo: list = [None, None]


def tables_of(s: Schedule) -> Tables:
    """The tables of a well-formed schedule, memoised for the last schedule
    asked for (by identity; module docstring). Raises ``IllFormed`` for a
    schedule that is not well-formed."""
    ref = _memo[0]
    if ref is None or ref() is not s:
        t = Tables(s)
        _memo[0], _memo[1] = weakref.ref(s), t
    return _memo[1]


def forget() -> None:
    """Drop the memoised tables (the checker calls it when it is done)."""
    _memo[0] = _memo[1] = None


def _scan(tb: Tables, s: Schedule, nb: Routes, info: dict, tabs: tuple) -> None:
    """The one pass over the actions (``Tables``), unrolled on purpose: it is
    most of ``check``'s time (benchmarks/bench_check.py, check/PyTorch)."""
    # one unrolled loop: per-op calls cost measurably in benchmarks/bench_check.py
    M, K = s.num_microbatches, len(s.stages) * s.num_microbatches
    prv, nxt = nb.prev, nb.next
    mb_route = [s.route_of_mb.get(m, -1) for m in range(M)]
    sf_tab, sb_tab, rf_tab, rb_tab = tabs
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
    tb.num_ops, tb.num_waits, tb.odd_overlaps, tb.dep_failures = n_ops, num_waits, odd_overlaps, dep_failures
    tb.unit_rank, tb.unit_ops = unit_rank, unit_ops
    tb.unit_of_op, tb.runits, tb.steps, tb.wait_unit = unit_of_op, runits, steps, wait_units
    tb.first = {_F: fF, _B: fB, _I: fI, _W: fW, "BI": fBI}
    tb.first_recv = {RF: rF, CommKind.RECV_B: rB}
    tb._sig, tb._present, tb._dup = sig, present, dup

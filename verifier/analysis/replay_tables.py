"""The static tables of the analysis replay (verifier.analysis.replay), built in
one pass over the schedule before any event is timed.

What it is: ``op_tables`` reads the numbering of the communication ops and
units (rank, then post order), each op's peer and FIFO partner and the first
receive of each (kind, stage, mb) of a rank from the semantics core, and adds
each op's latency; ``stream_tables`` groups the units into the communication model's
in-order streams (``CommModel.stream_of``); ``compute_tables`` gives each
compute step its input events, duration and the events it makes. Events are
small integers: the end of F / of B-or-I / of I for each (stage, micro-batch)
(``3 * S * M`` of them), then each op's completion (``OD + op``), then each
unit's (``UD + unit``), then ``NEVER``.

All of that is the semantics core's: route neighbours and what a compute
consumes (verifier.semantics.routes), the numbering, peers, FIFO pairing and
first receives (verifier.semantics.channels' ``CommIndex``, the part of the
tables that needs no well-formedness: unlike verifier.semantics.tables, the
replay times a schedule with actions on the wrong rank as written).

It checks only what it needs (a stage on a route, a micro-batch in range) and
raises a located ``ScheduleError`` otherwise; an action on the wrong rank or
an unmatched message is replayed as written (the replay reports it stuck).

Not covered: timing (verifier.analysis.replay), the reports
(verifier.analysis.replay_report).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.analysis.costs import CostModel
from verifier.ir import Batch, CommKind, Compute, ComputeKind, Overlap, Schedule
from verifier.ir import ScheduleError, loc
from verifier.semantics.channels import CommIndex
from verifier.semantics.comm import CommModel, StreamRule
from verifier.semantics.routes import Routes, routes_of

# the end of a located error of analyze
_HINT = "; analyze needs a well-formed schedule (run `check`)"
# an input of Routes.inputs as a kind of event: (0, stage) an F end, (1,
# stage) a B-or-I end, (2, stage) an I end, (3, receive kind) a receive
_EVENT_OF = {ComputeKind.F: 0, "BI": 1, ComputeKind.I: 2, CommKind.RECV_F: 3, CommKind.RECV_B: 3}

_F, _B, _I, _W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W


@dataclass
class OpTables:
    """Per op (index i): ``op_comm``, ``op_rank``, ``op_step``, ``op_unit``,
    ``op_lat`` (a send's latency, 0 for a receive), ``op_send``, ``op_peer``
    (the FIFO partner or -1), ``op_peer_rank`` (the rank at its other end);
    per unit u: ``u_rank``, ``u_step``, ``u_ops``; ``units[r]`` (rank r's
    units in post order), ``unit_at[r][step]``; ``recv_at[(r, kind, stage,
    mb)]``: the first such receive of rank r. All but ``op_lat`` are
    verifier.semantics.channels' ``CommIndex``, read as they are."""

    op_comm: list
    op_rank: list
    op_step: list
    op_unit: list
    op_lat: list
    op_send: list
    op_peer: list
    u_rank: list
    u_step: list
    u_ops: list
    units: list
    unit_at: list
    recv_at: dict
    op_peer_rank: list


def op_tables(s: Schedule, costs: CostModel, sidx: dict) -> OpTables:
    """The ops and units, their FIFO partners and first receives, as the
    semantics core numbers and pairs them (verifier.semantics.channels), plus
    each op's latency; a located ``ScheduleError`` for an op with no peer or a
    micro-batch out of range (module docstring)."""
    ix = CommIndex(s)
    ix.check(_HINT)
    lat = {st.id: costs.of(st.id).comm for st in s.stages}
    op_lat = [lat[c.stage] if snd else 0.0 for c, snd in zip(ix.op_comm, ix.op_send)]
    return OpTables(ix.op_comm, ix.op_rank, ix.op_step, ix.op_unit, op_lat,
                    ix.op_send, ix.partner, ix.unit_rank, ix.unit_step,
                    ix.unit_ops, ix.runits, ix.unit_at, ix.first_recv, ix.op_peer)


def stream_tables(s: Schedule, t: OpTables, model: CommModel):
    """``(of_unit, units)``: the stream of each unit and each stream's units in
    post order under ``model``; ``(None, [])`` when it has no stream order.
    Under one stream per rank, stream r is rank r's."""
    if not model.has_streams:
        return None, []
    if model.stream is StreamRule.RANK:
        return list(t.u_rank), t.units
    key_of: dict[tuple[int, int | None], int] = {}
    units: list[list[int]] = []
    of_unit: list[int] = []
    for u, r in enumerate(t.u_rank):
        batched = type(s.actions[r][t.u_step[u]]) is Batch
        first = t.u_ops[u][0] if t.u_ops[u] else None
        peer = t.op_peer_rank[first] if first is not None and not batched else -2
        k = key_of.setdefault((r, model.stream_of(batched, peer)), len(units))
        if k == len(units):
            units.append([])
        units[k].append(u)
        of_unit.append(k)
    return of_unit, units


def durations(s: Schedule, costs: CostModel) -> dict:
    """(kind or "FB"/"FI", stage) -> the cost of that compute."""
    dur: dict[tuple, float] = {}
    for st in s.stages:
        c = costs.of(st.id)
        for kind in ComputeKind:
            dur[(kind, st.id)] = getattr(c, kind.value)
        dur[("FB", st.id)], dur[("FI", st.id)] = c.FB, c.FI
    return dur


def compute_tables(s: Schedule, costs: CostModel, sidx: dict, recv_at: dict, OD: int, NEVER: int):
    """Per rank and step: the input events of a compute step (None for a comm
    step), its duration, and the events it makes."""
    M = s.num_microbatches
    SM = len(s.stages) * M
    dur = durations(s, costs)
    step_deps: list[list[tuple[int, ...] | None]] = []
    step_dur: list[list[float]] = []
    step_makes: list[list[tuple[int, ...]]] = []
    nb = routes_of(s)
    dep_cache: dict[tuple, tuple] = {}
    for r, acts in enumerate(s.actions):
        deps_r: list[tuple[int, ...] | None] = []
        dur_r: list[float] = []
        makes_r: list[tuple[int, ...]] = []
        for k, a in enumerate(acts):
            ta = type(a)
            if ta is Compute:
                cs = (a,)
                d = dur[(a.kind, a.stage)]
            elif ta is Overlap:
                cs = (a.f, a.b)
                kk = "FB" if a.b.kind is _B else "FI"
                d = 0.5 * (dur[(kk, a.f.stage)] + dur[(kk, a.b.stage)])
            else:
                deps_r.append(None)
                dur_r.append(0.0)
                makes_r.append(())
                continue
            deps: list[int] = []
            makes: list[int] = []
            for c in cs:
                st, m, kind = c.stage, c.mb, c.kind
                tmpl = dep_cache.get((kind, st, r))
                if tmpl is None:
                    if st not in nb.route_of or st not in sidx:
                        raise bad_input(c, r, k, "names a stage that is not on any route")
                    tmpl = dep_cache[(kind, st, r)] = _inputs(nb, kind, st, r)
                if not 0 <= m < M:
                    raise bad_input(c, r, k, f"has micro-batch {m} outside 0..{M - 1}")
                base = sidx[st] * M + m
                for typ, other in tmpl:
                    if typ == 0:  # F end of (other, m)
                        deps.append(sidx[other] * M + m)
                    elif typ == 1:  # B/I end of (other, m)
                        deps.append(SM + sidx[other] * M + m)
                    elif typ == 2:  # I end of (st, m)
                        deps.append(2 * SM + base)
                    else:  # own receive `other` (a CommKind)
                        i = recv_at.get((r, other, st, m))
                        deps.append(NEVER if i is None else OD + i)
                if kind is _F:
                    makes.append(base)
                elif kind is not _W:
                    makes.append(SM + base)
                    if kind is _I:
                        makes.append(2 * SM + base)
            deps_r.append(tuple(deps))
            dur_r.append(d)
            makes_r.append(tuple(makes))
        step_deps.append(deps_r)
        step_dur.append(dur_r)
        step_makes.append(makes_r)
    return step_deps, step_dur, step_makes


def _inputs(nb: Routes, kind, st: int, r: int) -> tuple:
    """What a compute of ``kind`` on stage ``st`` at rank ``r`` consumes
    (``Routes.inputs``) as events: (0, stage) an F end, (1, stage) a B-or-I
    end, (2, stage) an I end, (3, kind) this rank's receive of that kind (same
    stage and micro-batch)."""
    out = []
    for k, other in nb.inputs(r, kind, st):
        typ = _EVENT_OF[k]
        out.append((typ, k if typ == 3 else other))
    return tuple(out)


def bad_input(c, r: int, k: int, why: str) -> ScheduleError:
    return ScheduleError(f"{c} {why}{_HINT}", loc(r, k))

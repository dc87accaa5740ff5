"""Checking a recorded program: the properties of specs/SEMANTICS.md "Recorded programs".

``check_program(program, comm_model=...)`` decides, for a ``verifier.program.Program``:

- ``well-formed``: every peer a rank of the run other than the caller and in the
  op's group together with the caller; every wait/is_completed names a handle the
  rank issued earlier; every collective's group exists and holds the caller.
- ``message-matching``: point-to-point ops match first in, first out per
  (group, src, dst); a matched pair agrees in shape and dtype, and in payload
  (kind, micro-batch, stage) where both sides record one; an op left without a
  partner on a rank pair whose two recordings are complete is reported.
- ``collective-order``: every member of a group reaches the group's collectives
  in the same order (same name; same shape and dtype where both recorded).
- ``deadlock-free``: the monotone replay (``verifier.check.program.replay``)
  terminates under the model; otherwise the blocked ranks and the chain of waits.
  ``engine`` z3 / both decides it (also) by Z3, and every answer's certificate
  is validated (``verifier.check.program.engines``).

Every model is replayed whatever ``comm_model`` is (it is linear), so the result
says under which models the program would terminate, and, for a recording of a
run that hung, whether the replay blocks where the run did.

What it does not cover: schedules (``verifier.check.checker``), rendering
(``verifier.cli.check_program``).
"""

from __future__ import annotations

import time

import numpy as np

from verifier.check.program.engines import ENGINES, decide_deadlock
from verifier.check.program.fast import Fast
from verifier.check.program.plan import Plan, plan
from verifier.check.program.replay import ReplayRules, replay
from verifier.errors import ScheduleError
from verifier.format.guard import paused_gc
from verifier.program import (
    BatchP2P,
    Collective,
    IsCompleted,
    P2P,
    Program,
    Wait,
    op_phrase,
    shape_text,
)
from verifier.results.check import Status, Verdict
from verifier.semantics.comm import MODELS, implies
from verifier.results.program import (
    ModelOutcome,
    Place,
    ProgramCheckResult,
    ProgramProperty,
    ProgramPropertyResult,
    ProgramViolation,
)

# The models a program is replayed under: every model of the semantics core
# (verifier.semantics.comm.MODELS, strictest first), read through its fields.
PROGRAM_MODELS: dict[str, ReplayRules] = {name: ReplayRules.of(m) for name, m in MODELS.items()}
ALL = "all"


def program_models() -> tuple[str, ...]:
    return tuple(PROGRAM_MODELS)


def _place(p: Program, rank: int, k: int, sub: int | None = None) -> Place:
    op = p.ranks[rank].ops[k]
    shown = op.ops[sub] if sub is not None and isinstance(op, BatchP2P) else op
    return Place(rank, k, op.where, sub, op_phrase(shown))


def _at(pl: Place) -> str:
    return f"rank {pl.rank} {pl.phrase} at {pl.where} (op {pl.op}" + \
        (f", batch entry {pl.sub})" if pl.sub is not None else ")")


# ---------------------------------------------------------------- well-formed


def _well_formed(p: Program, pl: Plan) -> list[ProgramViolation]:
    """The violations of the ops the plan flagged (it checks every op in its one pass)."""
    out: list[ProgramViolation] = []
    WF = ProgramProperty.WELL_FORMED
    groups = {g.id: g for g in p.groups}
    for g in p.groups:
        bad = [r for r in g.ranks if not 0 <= r < p.num_ranks]
        if bad:
            out.append(ProgramViolation(WF, "group-rank", f"group {g.id} names rank {bad[0]}, "
                                        f"outside 0..{p.num_ranks - 1}"))
    flagged = [(pl.req_place[q], pl.req_op[q]) for q in pl.bad_reqs]
    flagged += [((r, k, None), p.ranks[r].ops[k]) for r, k in pl.bad_handles]
    flagged += [((r, k, None), p.ranks[r].ops[k]) for r, k in pl.bad_colls]
    for (rank, k, sub), e in sorted(flagged, key=lambda x: (x[0][0], x[0][1], x[0][2] or 0)):
        at = _at(_place(p, rank, k, sub))
        g = groups.get(e.group) if hasattr(e, "group") else None
        if type(e) is Collective:
            what = "is not declared" if g is None else f"({list(g.ranks)}) does not hold rank {rank}"
            out.append(ProgramViolation(WF, "collective-group", f"{at}: group {e.group} {what}",
                                        (_place(p, rank, k),)))
        elif type(e) in (Wait, IsCompleted):
            out.append(ProgramViolation(WF, "handle", f"{at}: handle {e.handle} was not returned by "
                                        f"an earlier isend/irecv of rank {rank}", (_place(p, rank, k),)))
        elif not 0 <= e.peer < p.num_ranks:
            out.append(ProgramViolation(WF, "peer-range", f"{at}: peer rank {e.peer} is outside "
                                        f"0..{p.num_ranks - 1}", (_place(p, rank, k, sub),)))
        elif e.peer == rank:
            out.append(ProgramViolation(WF, "peer-self", f"{at}: the peer is the rank itself",
                                        (_place(p, rank, k, sub),)))
        elif g is None:
            out.append(ProgramViolation(WF, "group", f"{at}: group {e.group} is not declared",
                                        (_place(p, rank, k, sub),)))
        else:
            out.append(ProgramViolation(WF, "group-member", f"{at}: group {e.group} ({list(g.ranks)}) "
                                        f"does not hold both rank {rank} and rank {e.peer}",
                                        (_place(p, rank, k, sub),)))
    return out


# ---------------------------------------------------------------- message-matching


def _payload_agrees(send, recv) -> bool:
    """Kinds and micro-batches equal; stages equal (both name the producing stage)
    or adjacent in the message's direction (each names its own stage: an
    activation goes to stage + 1, a gradient to stage - 1)."""
    a, b = send.payload, recv.payload
    if a is None or b is None:
        return True
    if a.kind != b.kind or a.mb != b.mb:
        return False
    return b.stage == a.stage or b.stage == a.stage + (1 if a.kind == "F" else -1)


def _pairs_agree(pl: Plan) -> bool:
    """Every request has a FIFO partner that agrees in shape, dtype and payload
    (then ``_message_matching`` has nothing to say; one pass, no message built)."""
    if len(pl.pairs) * 2 != len(pl.req_op):
        return False
    req_op = pl.req_op
    for a, b in pl.pairs:
        s, r = req_op[a], req_op[b]
        if s.shape != r.shape or s.dtype != r.dtype:
            return False
        x, y = s.payload, r.payload
        if x is not None and y is not None and (x.kind != y.kind or x.mb != y.mb or (
                y.stage != x.stage and y.stage != x.stage + (1 if x.kind == "F" else -1))):
            return False
    return True


def _message_matching(p: Program, pl: Plan) -> list[ProgramViolation]:
    if _pairs_agree(pl):
        return []
    out: list[ProgramViolation] = []
    MM = ProgramProperty.MESSAGE_MATCHING
    for q, op in enumerate(pl.req_op):
        m = pl.partner[q]
        r, k, sub = pl.req_place[q]
        if m < 0:
            peer = op.peer
            if not 0 <= peer < p.num_ranks or peer == r:
                continue  # well-formed says so
            if p.ranks[r].truncated or p.ranks[peer].truncated:
                continue  # the recording ends early: the run never got to post the partner
            here = _place(p, r, k, sub)
            want = "recv from" if op.is_send else "send to"
            out.append(ProgramViolation(MM, "unmatched", f"{_at(here)} has no partner: rank {peer} "
                                        f"never posts the matching {want} rank {r} in group {op.group} "
                                        "(FIFO per group and rank pair)", (here,)))
            continue
        if not op.is_send:
            continue
        recv = pl.req_op[m]
        if op.shape == recv.shape and op.dtype == recv.dtype and _payload_agrees(op, recv):
            continue
        mr, mk, msub = pl.req_place[m]
        a, b = _place(p, r, k, sub), _place(p, mr, mk, msub)
        if (op.shape, op.dtype) != (recv.shape, recv.dtype):
            out.append(ProgramViolation(MM, "shape", f"{_at(a)} sends {shape_text(op.shape, op.dtype)} "
                                        f"but its FIFO partner, {_at(b)}, receives "
                                        f"{shape_text(recv.shape, recv.dtype)}", (a, b)))
        elif not _payload_agrees(op, recv):
            out.append(ProgramViolation(MM, "payload", f"{_at(a)} sends {op.payload} but its FIFO "
                                        f"partner, {_at(b)}, expects {recv.payload}", (a, b)))
    return out


def _grouped_alike(p: Program, pl: Plan) -> bool:
    """No violation of ``_batch_grouping``: the requests of each (unit, group,
    peer) all have partners, all in one (unit, group, peer) of the same size
    (array by array over ``Program.columns``)."""
    partner = pl.partner_array
    if not len(partner):
        return True
    if np.any(partner < 0):
        return False
    c = p.columns
    _u, cls = np.unique(pl.req_unit_array * (p.num_ranks + 2) +
                        np.clip(c.e_peer, -1, p.num_ranks) + 1, return_inverse=True)
    cls = cls.reshape(-1)
    o = np.argsort(cls, kind="stable")
    co = cls[o]
    starts = np.flatnonzero(np.r_[True, co[1:] != co[:-1]])
    other = cls[partner][o]
    for col in (c.e_group[o], other):  # one group, and one partner class, per class
        if np.any(np.minimum.reduceat(col, starts) != np.maximum.reduceat(col, starts)):
            return False
    lo = np.minimum.reduceat(other, starts)
    size = np.bincount(cls)
    return bool(np.all(size == size[lo]))


def _batch_grouping(p: Program, pl: Plan) -> list[ProgramViolation]:
    """Ops between two ranks grouped differently on the two sides: for each unit
    (a plain op or a batch) and peer, the FIFO partners of its ops with that peer
    must be exactly the ops of one unit of the peer with this rank. NCCL leaves
    another grouping undefined (NVIDIA/nccl#1279, #2130); one violation per
    pair of units, unmatched ops left to ``unmatched``."""
    if _grouped_alike(p, pl):
        return []
    by_unit: dict[tuple[int, int, int, int], list[int]] = {}
    req_op = pl.req_op
    for r, k, qs in zip(pl.unit_rank, pl.unit_op, pl.unit_reqs):
        for q in qs:
            e = req_op[q]
            key = (r, k, e.group, e.peer)
            got = by_unit.get(key)
            if got is None:
                by_unit[key] = [q]
            else:
                got.append(q)
    out: list[ProgramViolation] = []
    said: set = set()
    for (r, k, g, peer), qs in by_unit.items():
        partners = [pl.partner[q] for q in qs]
        if any(m < 0 for m in partners):
            continue
        units = {pl.req_place[m][:2] for m in partners}
        if len(units) == 1:
            (pr, pk), = units
            if sorted(by_unit.get((pr, pk, g, r), ())) == sorted(partners):
                continue
        if (r, k) in said:  # named already, as the other side of an earlier violation
            continue
        said.update({(r, k), *units})
        a = _place(p, r, k)
        others = "; ".join(_at(_place(p, ur, uk)) for ur, uk in sorted(units))
        out.append(ProgramViolation(
            ProgramProperty.MESSAGE_MATCHING, "batch-grouping",
            f"{_at(a)} groups its ops with rank {peer} differently from rank {peer}, whose partners "
            f"are {others}: NCCL leaves a different grouping on the two sides undefined "
            "(NVIDIA/nccl#1279); gloo and eager run it", (a,)))
    return out


# ---------------------------------------------------------------- collective-order


def _collective_order(p: Program, pl: Plan) -> list[ProgramViolation]:
    out: list[ProgramViolation] = []
    CO = ProgramProperty.COLLECTIVE_ORDER
    seqs = {key: [(k, p.ranks[key[1]].ops[k]) for k in ks] for key, ks in pl.colls.items()}
    for g in p.groups:
        members = [r for r in g.ranks if 0 <= r < p.num_ranks]
        if not members:
            continue
        lists = {r: seqs.get((g.id, r), []) for r in members}
        first = members[0]
        longest = max(len(v) for v in lists.values())
        for i in range(longest):
            ref = next((r for r in members if i < len(lists[r])), None)
            if ref is None:
                break
            rk, rop = lists[ref][i]
            for r in members:
                if i >= len(lists[r]):
                    if p.ranks[r].truncated:
                        continue
                    a = _place(p, ref, rk)
                    out.append(ProgramViolation(CO, "collective-missing", f"{_at(a)} is collective number "
                                                f"{i} of group {g.id}, which rank {r} never reaches "
                                                f"(it calls {len(lists[r])} collectives on the group)", (a,)))
                    continue
                k, op = lists[r][i]
                same = op.name == rop.name and (op.shape is None or rop.shape is None or
                                                 (op.shape, op.dtype) == (rop.shape, rop.dtype))
                if not same:
                    a, b = _place(p, ref, rk), _place(p, r, k)
                    out.append(ProgramViolation(CO, "collective-order", f"collective number {i} of group "
                                                f"{g.id}: {_at(a)} but {_at(b)}", (a, b)))
        del first
    return out


# ---------------------------------------------------------------- assembling


def _status(violations) -> Status:
    return Status.FAILS if violations else Status.HOLDS


def _deadlock_violations(o: ModelOutcome) -> list[ProgramViolation]:
    if o.terminates:
        return []
    kind = "cycle" if o.closed else "stuck"
    places = tuple(h.place for h in o.hops)
    n = len(o.blocked)
    msg = f"under {o.model}, {n} rank{'s' if n != 1 else ''} never finish{'es' if n == 1 else ''}: {o.summary}"
    return [ProgramViolation(ProgramProperty.DEADLOCK_FREE, kind, msg, places, o.model)]


def _recorded_notes(p: Program, pl: Plan, outcomes: dict[str, ModelOutcome]) -> list[str]:
    """How the recorded run ended, and whether each model's replay explains it."""
    notes = []
    rec = p.recorded or {}
    used = rec.get("backend_used")
    stuck = pl.not_returned
    raised = [rp for rp in p.ranks if rp.outcome in ("raised", "killed", "interrupted")]
    for rp in raised:
        err = f" ({rp.error})" if rp.error else ""
        notes.append(f"the recorded run: rank {rp.rank} ended with outcome {rp.outcome}{err} after "
                     f"{len(rp.ops)} op(s); ops its peers expected from it afterwards were never issued")
    if stuck:
        where = "; ".join(str(_place(p, r, k)) + " " + _place(p, r, k).phrase for r, k in stuck)
        notes.append(f"the recorded run{' on ' + str(used) if used else ''} hung with these calls "
                     f"not returned: {where}")
        want = set(stuck)
        exact, other, ends = [], [], []
        for name, o in outcomes.items():
            got = {(b.place.rank, b.place.op) for b in o.blocked}
            if o.terminates:
                ends.append(name)
            elif got == want:
                exact.append(name)
            else:
                other.append(f"{name} ({len(got)} blocked call(s), {len(got & want)} where the run hung)")
        if exact:
            notes.append(f"under {', '.join(exact)} the replay blocks at exactly the calls the run hung in")
        if other:
            notes.append(f"under {', '.join(other)} the replay blocks elsewhere")
        if ends:
            notes.append(f"under {', '.join(ends)} the recorded calls terminate: the model does not "
                         "explain the hang (a different cause, or a model weaker than the runtime)")
    return notes


def _model_notes(chosen: tuple[str, ...], outcomes: dict[str, ModelOutcome]) -> list[str]:
    ok = [m for m, o in outcomes.items() if o.terminates]
    bad = [m for m, o in outcomes.items() if not o.terminates]
    if not bad or not ok or len(chosen) > 1:
        return []
    verdict_models = ", ".join(chosen)
    if all(m in ok for m in chosen):
        return [f"terminates under {', '.join(ok)}; deadlocks under {', '.join(bad)}"]
    tail = ""
    if "eager" in ok:
        tail = (": tests with small tensors (sent eagerly) can pass while the run hangs at "
                "production message sizes")
    return [f"deadlocks under {verdict_models}; terminates under {', '.join(ok)}{tail}"]


def _replays(p: Program, pl: Plan, chosen: tuple[str, ...], every_model: bool,
             by_order: bool = True) -> dict[str, ModelOutcome]:
    """Each model's outcome: the fast replay (``program.fast``) where it terminates, the
    explaining one (``program.replay``) where it does not or the program is not well-formed.
    With ``by_order``, a model the verdict is not about is not replayed when a
    model replayed before it terminates and implies it (``semantics.comm.implies``;
    a second wait on a handle breaks the chain at gloo, where it blocks): its
    outcome says ``implied_by``."""
    fast = Fast(p, pl)
    out: dict[str, ModelOutcome] = {}
    for name, rules in PROGRAM_MODELS.items():
        if not (every_model or name in chosen):
            continue
        if by_order and name not in chosen:
            src = next((m for m, o in out.items() if o.terminates and not o.implied_by and implies(m, name)
                        and not (pl.second_waits and PROGRAM_MODELS[name].second_wait_blocks
                                 and not PROGRAM_MODELS[m].second_wait_blocks)), None)
            if src is not None:
                out[name] = ModelOutcome(name, True, implied_by=src)
                continue
        o = fast.replay(rules, pl.partner, pl.is_send) if fast.usable else None
        out[name] = o if o is not None else replay(p, rules, pl)
    return out


def check_program(p: Program, comm_model: str = "nccl", *, every_model: bool = True, engine: str = "auto",
                  z3_timeout_ms: int | None = None, z3_rlimit: int | None = None,
                  validate_certificate: bool = True) -> ProgramCheckResult:
    """Decide the program properties under ``comm_model`` (a name of
    ``PROGRAM_MODELS``, or ``all``: deadlock-free under every model).
    ``every_model`` (default, what ``check`` prints): replay every model, so the
    result says under which others it would terminate; False replays only the
    model(s) the verdict needs (``models`` then holds only those). ``engine``
    (auto, graph: the replay; z3; both) decides ``deadlock-free``
    (``verifier.check.program.engines``); its certificates are validated by the
    independent checker unless ``validate_certificate`` is False."""
    t0 = time.perf_counter()
    if comm_model != ALL and comm_model not in PROGRAM_MODELS:
        raise ScheduleError(f"unknown communication model {comm_model!r}; choose one of "
                            f"{', '.join((*PROGRAM_MODELS, ALL))}", "--comm-model")
    if engine not in ENGINES:
        raise ScheduleError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}", "--engine")
    chosen = tuple(PROGRAM_MODELS) if comm_model == ALL else (comm_model,)
    with paused_gc():  # as the schedule checker: many small acyclic objects, nothing to collect
        return _check(p, comm_model, chosen, every_model, engine, z3_timeout_ms, z3_rlimit,
                      validate_certificate, t0)


def _check(p: Program, comm_model: str, chosen: tuple[str, ...], every_model: bool, engine: str,
           z3_timeout_ms: int | None, z3_rlimit: int | None, validate_certificate: bool,
           t0: float) -> ProgramCheckResult:
    pl = plan(p)
    wf = _well_formed(p, pl)
    props = [ProgramPropertyResult(ProgramProperty.WELL_FORMED, _status(wf), tuple(wf), "static")]
    mm = _message_matching(p, pl) + _batch_grouping(p, pl)
    props.append(ProgramPropertyResult(ProgramProperty.MESSAGE_MATCHING, _status(mm), tuple(mm), "static"))
    co = _collective_order(p, pl)
    props.append(ProgramPropertyResult(ProgramProperty.COLLECTIVE_ORDER, _status(co), tuple(co), "static"))
    outcomes = _replays(p, pl, chosen, every_model, by_order=engine in ("auto", "graph"))
    d = decide_deadlock(p, pl, outcomes, chosen, engine, z3_timeout_ms=z3_timeout_ms, z3_rlimit=z3_rlimit,
                        validate_certificate=validate_certificate)
    dl = [v for m in chosen for v in _deadlock_violations(outcomes[m])]
    status = Status.UNKNOWN if d.unknown else _status(dl)
    props.append(ProgramPropertyResult(ProgramProperty.DEADLOCK_FREE, status, tuple(d.unknown or dl),
                                       d.decided_by))
    st = {pr.status for pr in props}
    verdict = Verdict.REFUTED if Status.FAILS in st else Verdict.UNKNOWN if Status.UNKNOWN in st \
        else Verdict.VERIFIED
    notes = _recorded_notes(p, pl, outcomes) + _model_notes(chosen, outcomes)
    return ProgramCheckResult(
        verdict=verdict, comm_model=comm_model, properties=tuple(props),
        models=tuple(outcomes.values()), notes=tuple(notes), certificate=d.certificate,
        seconds=time.perf_counter() - t0, engine=d.engine, program=p, z3=d.z3)

"""The Z3 engine's constraint system, built as plain data and SMT-LIB text (no z3).

What it is: ``encode`` turns a (lowered) schedule into integer *event times*
and difference constraints ``t[x] - t[y] >= c``, grouped under labels that name
the property, rank and step they state; ``smtlib`` writes them as SMT-LIB 2
(QF_IDL) text, the specification in solver form, which verifier.check.z3engine
feeds to z3. One function per property group below; each appends to one
``Builder`` in a fixed order, so the variables, labels and text are the same
for the same schedule.

Events (integer times) per action at (rank r, step i): a compute step has
``start`` (after step i-1 returned and its inputs exist) and one ``finish``
per compute (two for an OVERLAP, whose halves share the start, plus its
``return``); a communication step has ``post`` (after step i-1 returned) and,
for a waited BATCH, ``return``. The communication model
(verifier.semantics.comm) is read through its fields, never its name: where it
has streams (``nccl``: one per rank; ``nccl-pairs``: one per peer for plain
ops, one group stream for BATCHes) each communication unit (a plain op, or a
BATCH as a whole) has ``active`` (posted, and the previous unit of its stream
complete) and ``complete``; without streams (``gloo``, ``eager``) a unit is
active when posted. A rendezvous model gives each matched send/receive pair
one shared ``complete`` once both units are active; a buffered one (``eager``)
completes a send when its unit is active and gives each receive its own
``complete``. Every causal edge has weight 1 (durations >= 1), so a cycle of waits
of any length is infeasible and a satisfying assignment lists dependent events
in strictly increasing time. Memory adds one counter per compute step.

The labels and what each prefix states: verifier.check.smt.

It reads the semantics tables (verifier.semantics.tables: route neighbours,
FIFO partners and payload mismatches, first producers and receives, the
model's streams) instead of deriving them; those exist for well-formed
schedules, so another input is a ``ScheduleError`` (the checker asks Z3 about
no other). Unmatched messages and missing producers are stated as false
constants, not crashed on.

What it does not cover: solving (verifier.check.z3engine, the only module here
that imports z3), properties 1-2 (verifier.check.properties).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from verifier.errors import IllFormed
from verifier.ir import (
    Batch, Comm, CommKind, ComputeKind, Overlap, Schedule, ScheduleError, comms_of, computes_of,
    loc, op_text,
)
from verifier.results.check import PropertyId
from verifier.semantics import comm
from verifier.semantics.comm import CommModel
from verifier.semantics.tables import Tables, tables_of
from verifier.check.smt import Builder, Encoding

# the label prefixes of the property groups (verifier.check.smt.property_of)
_DEP = PropertyId.DEPENDENCIES.value
_MSG = PropertyId.MESSAGE_MATCHING.value
_DL = PropertyId.DEADLOCK_FREE.value
_OVL = PropertyId.OVERLAP_LEGAL.value
_MEM = PropertyId.MEMORY.value

_F = ComputeKind.F
_BI = (ComputeKind.B, ComputeKind.I)
_RETURNS_WAITED = "returns once posted and all its ops complete"


@dataclass
class _Events:
    """The time variables of every step (filled by ``_program``) and of every
    op's completion (filled by ``_matching``)."""

    desc: list[list[str]]  # "rank r step i <action>", reused by the labels
    post: list[list[int]] = field(default_factory=list)  # compute start / comm post
    ret: list[list[int]] = field(default_factory=list)
    finish: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (r, i, half)
    unit_active: dict[tuple[int, int], int] = field(default_factory=dict)  # nccl units
    unit_complete: dict[tuple[int, int], int] = field(default_factory=dict)
    completion: dict[tuple[int, int, int | None], int] = field(default_factory=dict)

    def active(self, r: int, i: int) -> int:
        """When unit (r, i) is active: its own event on a stream, else its post."""
        return self.unit_active.get((r, i), self.post[r][i])


def _safe(fn, *args):
    try:
        return fn(*args)
    except (KeyError, IndexError):
        return None


def _overlap_dependent(s: Schedule, o: Overlap) -> bool:
    """The backward of ``o`` needs the forward of ``o`` (SEMANTICS, overlap-legal)."""
    if o.f.mb != o.b.mb:
        return False
    pf, pb = _safe(lambda: s.route_pos[o.f.stage]), _safe(lambda: s.route_pos[o.b.stage])
    return pf is not None and pb is not None and pf[0] == pb[0] and pb[1] >= pf[1]


def _descriptions(s: Schedule) -> list[list[str]]:
    """``"rank r step i <action>"`` for every step (computed once: labels reuse it)."""
    return [[f"{loc(r, i)} {a}" for i, a in enumerate(acts)] for r, acts in enumerate(s.actions)]


def encode(
    s: Schedule, comm_model: str | CommModel = "nccl", memory_limit: int | None = None
) -> Encoding:
    """The constraint system of properties 3-7 for a schedule with communication,
    under ``comm_model`` (a name of verifier.semantics.comm.MODELS or a model;
    the encoding reads its fields, never its name)."""
    try:
        m = comm.model(comm_model)
    except ValueError as e:
        raise ValueError(f"comm_model: {e}") from None
    try:
        t = tables_of(s)
    except IllFormed:
        raise ScheduleError(
            "the Z3 encoding needs a well-formed schedule (`check` names what is not)"
        ) from None
    b = Builder()
    ev = _Events(_descriptions(s))
    _program(b, s, ev, m)
    if m.has_streams:
        _comm_streams(b, s, t, ev, m)
    _matching(b, s, t, ev, m)
    _waited_batches(b, s, ev)
    for r in range(s.num_ranks):
        _RankDependencies(b, s, t, ev, r).state()
    _overlaps(b, s, ev)
    num_time = len(b.names)
    if memory_limit is not None:
        _memory(b, s, memory_limit)
    return Encoding(
        variables=tuple(b.names),
        num_time_events=num_time,
        groups=MappingProxyType({k: tuple(v) for k, v in b.groups.items()}),
        constants=MappingProxyType(dict(b.constants)),
        action_start=tuple(tuple(x) for x in ev.post),
    )


# ---------------------------------------------------------------------------
# program: the events of each step and what they mean
# ---------------------------------------------------------------------------


def _program(b: Builder, s: Schedule, ev: _Events, m: CommModel) -> None:
    """Per step: its start/post after the previous step returns, its finishes
    and return; where the model has streams, a unit's ``active`` and ``complete``
    (without streams a unit is active when posted: ``_Events.active``)."""
    for r in range(s.num_ranks):
        ev.post.append([]), ev.ret.append([])
        for i, a in enumerate(s.actions[r]):
            def lab(what, r=r, i=i):
                return f"program: {ev.desc[r][i]} {what}"

            cs = computes_of(a)
            # the step starts (a compute) or is posted (communication) once step i-1 returned
            st = b.var(f"{loc(r, i)} {'start' if cs else 'post'}")
            if i > 0:
                what = "starts" if cs else "is posted"
                b.after(lab(f"{what} after step {i - 1} returns"), st, ev.ret[r][i - 1])
            if cs:
                rt = _compute_events(b, ev, r, i, len(cs), st, lab)
            else:
                rt = st  # isend/irecv semantics: returns once posted ...
                if isinstance(a, Batch) and a.wait:  # ... unless it waits (_waited_batches)
                    rt = b.var(f"{loc(r, i)} return")
                    b.after(lab(_RETURNS_WAITED), rt, st)
                if m.has_streams and comms_of(a):
                    act = b.var(f"{loc(r, i)} active")
                    b.after(lab("is active on the comm stream once posted"), act, st)
                    ev.unit_active[(r, i)] = act
                    ev.unit_complete[(r, i)] = b.var(f"{loc(r, i)} complete")
            ev.post[r].append(st)
            ev.ret[r].append(rt)


def _compute_events(b: Builder, ev: _Events, r: int, i: int, n: int, st: int, lab) -> int:
    """The finish of each of the ``n`` computes of step (r, i); returns its return."""
    fins = []
    for h in range(n):
        f = b.var(f"{loc(r, i, h) if n > 1 else loc(r, i)} finish")
        b.after(lab("finishes after it starts"), f, st)
        ev.finish[(r, i, h)] = f
        fins.append(f)
    if n == 1:
        return fins[0]  # a compute returns when it finishes
    rt = b.var(f"{loc(r, i)} return")
    for f in fins:
        b.after(lab("returns when both halves finish"), rt, f)
    return rt


def _comm_streams(b: Builder, s: Schedule, t: Tables, ev: _Events, m: CommModel) -> None:
    """The model's in-order streams (``Tables.streams``): a unit is active only
    once the previous unit of its stream has completed."""
    st = t.streams(m)
    step_of = {}  # unit -> its step
    for r in range(s.num_ranks):
        for i, _a in enumerate(s.actions[r]):
            if (r, i) not in ev.unit_active:
                continue
            u = t.steps[r][i]
            step_of[u] = i
            if st.pos[u]:
                p = step_of[st.units[st.of_unit[u]][st.pos[u] - 1]]
                b.after(
                    f"{_DL}: {loc(r, i)} waits {loc(r, p)} on {_stream_name(s, m, r, i)} "
                    f"({s.actions[r][i]} after {s.actions[r][p]})",
                    ev.unit_active[(r, i)],
                    ev.unit_complete[(r, p)],
                )


def _stream_name(s: Schedule, m: CommModel, r: int, i: int) -> str:
    """The stream of the unit at (r, i), in words."""
    if m.stream is comm.StreamRule.RANK:
        return f"rank {r}'s comm stream"
    a = s.actions[r][i]
    if isinstance(a, Batch):
        return f"rank {r}'s group stream"
    return f"rank {r}'s stream with rank {s.peer_of(a)}"


def _waited_batches(b: Builder, s: Schedule, ev: _Events) -> None:
    """A waited BATCH returns when all its ops complete."""
    for r in range(s.num_ranks):
        for i, a in enumerate(s.actions[r]):
            if isinstance(a, Batch) and a.wait:
                for j, _op in enumerate(a.ops):
                    c = ev.completion.get((r, i, j))
                    if c is not None:  # an unmatched op never completes: its const is false
                        b.after(f"program: {ev.desc[r][i]} {_RETURNS_WAITED}", ev.ret[r][i], c)


# ---------------------------------------------------------------------------
# message matching: FIFO per ordered rank pair, and when each op completes
# ---------------------------------------------------------------------------

_Op = tuple[int, int, "int | None", Comm]  # rank, step, index in its BATCH (or None), op


def _channels(t: Tables):
    """The sends and receives (op indices) of each ordered rank pair, in post order."""
    sends: dict[tuple[int, int], list[int]] = {}
    recvs: dict[tuple[int, int], list[int]] = {}
    for x, (r, _i, _j, _op) in enumerate(t.ops):
        if t.is_send[x]:
            sends.setdefault((r, t.peer[x]), []).append(x)
        else:
            recvs.setdefault((t.peer[x], r), []).append(x)
    return sends, recvs


def _matching(b: Builder, s: Schedule, t: Tables, ev: _Events, m: CommModel) -> None:
    """State the FIFO pairing of each channel (``Tables.partner``): the payloads,
    the unmatched ops, and each pair's completion."""
    sends, recvs = _channels(t)
    differ = set(t.mismatched)
    for pair in sorted(t.counts):
        ss, rs = sends.get(pair, []), recvs.get(pair, [])
        for k in range(max(len(ss), len(rs))):
            if k >= len(rs):
                r, i, j, op = t.ops[ss[k]]
                b.const(
                    f"{_MSG}: {loc(r, i, j)} {op} (send #{k} from rank {pair[0]} "
                    f"to rank {pair[1]}) has no matching receive: rank {pair[1]} posts "
                    f"{len(rs)} receive(s) from rank {pair[0]}",
                    False,
                )
            elif k >= len(ss):
                r, i, j, op = t.ops[rs[k]]
                b.const(
                    f"{_MSG}: {loc(r, i, j)} {op} (receive #{k} on rank {pair[1]} "
                    f"from rank {pair[0]}) has no matching send: rank {pair[0]} posts "
                    f"{len(ss)} send(s) to rank {pair[1]}",
                    False,
                )
            else:
                x = ss[k]
                snd, rcv = t.ops[x], t.ops[t.partner[x]]
                _pair(b, s, snd, rcv, (x, t.partner[x]) not in differ)
                (_rendezvous if m.rendezvous else _buffered)(b, ev, snd, rcv)


def _pair(b: Builder, s: Schedule, snd: _Op, rcv: _Op, same: bool) -> None:
    """The payload a matched send carries is what its receive expects."""
    (sr, si, sj, sop), (rr, ri, rj, rop) = snd, rcv
    verdict = "equal" if same else f"differs (the receive expects {s.matching_op(rop)})"
    b.const(
        f"{_MSG}: {loc(sr, si, sj)} {sop} pairs with {loc(rr, ri, rj)} {rop}: payload {verdict}",
        same,
    )


def _rendezvous(b: Builder, ev: _Events, snd: _Op, rcv: _Op) -> None:
    """A send and its receive complete together, once both units are active."""
    (sr, si, sj, sop), (rr, ri, rj, rop) = snd, rcv
    c = b.var(f"{loc(sr, si, sj)} -> {loc(rr, ri, rj)} complete")
    why = "(its unit active)" if ev.unit_active else "(posted)"
    b.after(
        f"{_DL}: {loc(sr, si, sj)} {sop} waits {loc(rr, ri, rj)} {rop} {why}",
        c,
        ev.active(rr, ri),
    )
    b.after(
        f"{_DL}: {loc(rr, ri, rj)} {rop} waits {loc(sr, si, sj)} {sop} {why}",
        c,
        ev.active(sr, si),
    )
    _unit_completes(b, ev, ((sr, si), (rr, ri)), c)
    ev.completion[(sr, si, sj)] = ev.completion[(rr, ri, rj)] = c


def _buffered(b: Builder, ev: _Events, snd: _Op, rcv: _Op) -> None:
    """A send completes once its unit is active; its receive once its own unit
    is active and the send has completed."""
    (sr, si, sj, sop), (rr, ri, rj, rop) = snd, rcv
    sent = ev.active(sr, si)
    c = b.var(f"{loc(rr, ri, rj)} complete")
    if ev.unit_active:
        b.after(f"program: {loc(rr, ri, rj)} {rop} completes once its unit is active",
                c, ev.active(rr, ri))
        why = "(its unit active)"
    else:
        b.after(f"program: {loc(rr, ri, rj)} {rop} completes after it is posted",
                c, ev.post[rr][ri])
        why = "(posted)"
    b.after(f"{_DL}: {loc(rr, ri, rj)} {rop} waits {loc(sr, si, sj)} {sop} {why}", c, sent)
    _unit_completes(b, ev, ((sr, si),), sent, gap=0)
    _unit_completes(b, ev, ((rr, ri),), c)
    ev.completion[(rr, ri, rj)] = c
    ev.completion[(sr, si, sj)] = sent


def _unit_completes(b: Builder, ev: _Events, units, c: int, gap: int = 1) -> None:
    """Where the model has streams: each unit completes once its ops have."""
    for r, i in units:
        if (r, i) in ev.unit_complete:
            b.after(
                f"program: {ev.desc[r][i]} completes when its ops complete",
                ev.unit_complete[(r, i)],
                c,
                gap,
            )


# ---------------------------------------------------------------------------
# data dependencies on one rank
# ---------------------------------------------------------------------------


class _RankDependencies:
    """The data-flow order of rank ``r``: each compute after its producer or
    receive, each send after its compute, W after its I; the producers and
    receives are the tables' first ones (``Tables.first``, ``first_recv``)."""

    def __init__(self, b: Builder, s: Schedule, t: Tables, ev: _Events, r: int) -> None:
        self.b, self.s, self.t, self.ev, self.r = b, s, t, ev, r

    def state(self) -> None:
        for i, a in enumerate(self.s.actions[self.r]):
            for c in computes_of(a):
                self._compute(i, c, isinstance(a, Overlap))
            for op in comms_of(a):
                if op.kind.is_send:
                    kinds = (_F,) if op.kind is CommKind.SEND_F else _BI
                    self._need_compute(i, str(op), kinds, op.stage, op.mb)

    def _compute(self, i: int, c, same_ok: bool) -> None:
        t, r, what = self.t, self.r, str(c)
        if c.kind is _F:
            p = t.prev[c.stage]
            if p is not None and t.rank_of[p] != r:
                self._need_recv(i, what, CommKind.RECV_F, c.stage, c.mb)
            elif p is not None:
                self._need_compute(i, what, (_F,), p, c.mb, same_ok)
        elif c.kind in _BI:
            self._need_compute(i, what, (_F,), c.stage, c.mb, same_ok)
            n = t.next[c.stage]
            if n is not None and t.rank_of[n] != r:
                self._need_recv(i, what, CommKind.RECV_B, c.stage, c.mb)
            elif n is not None:
                self._need_compute(i, what, _BI, n, c.mb, same_ok)
        else:  # W
            self._need_compute(i, what, (ComputeKind.I,), c.stage, c.mb)

    def _first(self, kinds, stage: int, mb: int):
        """(step, half) of the first compute of ``kinds`` on (stage, mb), or None."""
        pi = self.t.first["BI" if kinds == _BI else kinds[0]][self.t.base[stage] + mb]
        if pi < 0:
            return None
        for h, c in enumerate(computes_of(self.s.actions[self.r][pi])):
            if c.kind in kinds and c.stage == stage and c.mb == mb:
                return pi, h
        return None  # on another rank: not this rank's producer

    def _need_compute(self, i, what, kinds, stage, mb, same_step_ok=False) -> None:
        """Step i waits for a compute of ``kinds`` on (stage, mb)."""
        b, r = self.b, self.r
        found = self._first(kinds, stage, mb)
        need = " or ".join(op_text(k, stage, mb) for k in kinds)
        if found is None:
            b.const(f"{_DEP}: {loc(r, i)} {what} needs {need}, not on rank {r}", False)
            return
        pi, ph = found
        if pi == i and same_step_ok:
            return  # the two halves of one OVERLAP: overlap-legal states that
        ok = pi < i
        b.const(
            f"{_DEP}: {loc(r, i)} {what} after {need} at {loc(r, pi)}"
            + ("" if ok else " (it comes later)"),
            ok,
        )
        if ok:
            b.after(
                f"{_DL}: {loc(r, i)} {what} waits {loc(r, pi)} {need}",
                self.ev.post[r][i],
                self.ev.finish[(r, pi, ph)],
            )

    def _need_recv(self, i, what, kind, stage, mb) -> None:
        """Step i waits for the first receive of (kind, stage, mb) on its rank."""
        b, r = self.b, self.r
        op = Comm(kind, stage, mb)
        x = self.t.first_recv[kind][self.t.base[stage] + mb]
        if x < 0:
            b.const(f"{_DEP}: {loc(r, i)} {what} needs {op}, not posted on rank {r}", False)
            return
        place = self.t.ops[x][1:3]
        ok = place[0] < i
        b.const(
            f"{_DEP}: {loc(r, i)} {what} after {op} at {loc(r, *place)}"
            + ("" if ok else " (it comes later)"),
            ok,
        )
        c = self.ev.completion.get((r, *place))
        if ok and c is not None:
            b.after(
                f"{_DL}: {loc(r, i)} {what} waits {loc(r, *place)} {op} (complete)",
                self.ev.post[r][i],
                c,
            )


# ---------------------------------------------------------------------------
# overlap legality and memory
# ---------------------------------------------------------------------------


def _overlaps(b: Builder, s: Schedule, ev: _Events) -> None:
    """The halves of each OVERLAP are a forward and a backward, independent."""
    for r in range(s.num_ranks):
        for i, a in enumerate(s.actions[r]):
            if not isinstance(a, Overlap):
                continue
            kinds_ok = a.f.kind is ComputeKind.F and a.b.kind in (ComputeKind.B, ComputeKind.I)
            dep = _overlap_dependent(s, a) if kinds_ok else False
            if not kinds_ok:
                verdict = "the halves must be a forward and a backward (B or I)"
            elif dep:
                verdict = "the backward depends on the forward"
            else:
                verdict = "a forward and a backward, independent"
            b.const(f"{_OVL}: {ev.desc[r][i]}: {verdict}", kinds_ok and not dep)


def _memory(b: Builder, s: Schedule, memory_limit: int) -> None:
    """Live activations by program order, at most ``memory_limit`` at each F."""
    zero = b.var("memory zero")
    for r in range(s.num_ranks):
        live = zero
        acc = f"{_MEM}: rank {r} live activations by program order"
        for i, a in enumerate(s.actions[r]):
            cs = computes_of(a)
            nf = sum(1 for c in cs if c.kind is ComputeKind.F)
            nb = sum(1 for c in cs if c.kind in (ComputeKind.B, ComputeKind.I))
            if not cs:
                continue
            mid = b.var(f"memory {loc(r, i)} peak")
            b.after(acc, mid, live, nf)
            b.after(acc, live, mid, -nf)
            if nf:
                b.after(
                    f"{_MEM}: {loc(r, i)} live activations at most {memory_limit}",
                    zero,
                    mid,
                    -memory_limit,
                )
            out = b.var(f"memory {loc(r, i)} after")
            b.after(acc, out, mid, -nb)
            b.after(acc, mid, out, nb)
            live = out

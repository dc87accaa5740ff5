"""The Z3 engine: properties 3-7 of specs/SEMANTICS.md as one difference-logic system.

What it is: the declarative specification of what a schedule means, in one
place. ``encode`` turns a (lowered) schedule into integer *event times* and
difference constraints ``t[x] - t[y] >= c``, grouped under labels that name the
property, rank and step they state; ``decide`` hands them to Z3 (QF_IDL,
z3's difference-logic solver), so that

- SAT gives a witness timing (``Z3Outcome.times``) and a global execution
  order of all actions (``Z3Outcome.order``, actions sorted by the time they
  begin: SEMANTICS.md "Witness");
- UNSAT gives a minimal unsat core: every group is re-asserted behind its
  label (``(=> p_k group_k)`` with ``check-sat-assuming``, i.e. z3's
  ``assert_and_track``), the core is minimised by deletion, and ordered so a
  deadlock reads as the cycle of waits, hop by hop;
- a resource limit (deterministic ``rlimit``) or wall-clock timeout gives
  ``unknown`` with the reason. Unknown is never a pass.

Events (integer times) per action at (rank r, step i): a compute step has
``start`` (after step i-1 returned and its inputs exist) and one ``finish``
per compute (two for an OVERLAP, whose halves share the start, plus its
``return``); a communication step has ``post`` (after step i-1 returned) and,
for a waited BATCH, ``return``. Under ``nccl`` each communication unit (a
plain op, or a BATCH as a whole) has ``active`` and ``complete``, and each
matched send/receive pair one shared ``complete`` (the rendezvous); under
``eager`` each receive has its own ``complete`` and a send completes when
posted. Every causal edge has weight 1 (durations >= 1), so a cycle of waits
of any length is infeasible and a satisfying assignment lists dependent events
in strictly increasing time. Memory adds one counter per compute step.

Label prefixes (``PROPERTY_IDS`` plus ``program``):

- ``program``: the meaning of one step (program order, durations, when it
  returns, a unit is active only once posted and completes with its ops). Not
  a property; it appears in cores as the glue of a cycle.
- ``dependencies``: the static data-flow order on each rank (a consumer after
  its producer / receive, a send after its compute, W after I); constant
  true/false once the rank's program is known. When it fails the matching
  timing edge is left out, so the core is that one label.
- ``message-matching``: FIFO pairing per ordered rank pair, payload equality,
  no unmatched op (constant true/false once paired: it states the property).
- ``deadlock-free``: the waits of the model: a compute waits for its inputs,
  a send for its compute, a unit for the previous one on the comm stream
  (nccl), a send/receive for its peer unit being active (nccl) or a receive
  for its send being posted (eager).
- ``overlap-legal``: the halves of an OVERLAP are F and B/I and independent.
- ``memory``: live activations by program order (the verifier.semantics.memory rule,
  one unit per stage and micro-batch) at most ``memory_limit``.

The SMT-LIB text of the system (``smtlib``) is the specification in solver
form; ``decide`` feeds exactly that text to z3 (a fresh context per check).

What it does not cover: properties 1-2 (well-formed, exactly-once; the static
checks of verifier.check.properties), weighted memory, the verdict and its printing
(verifier.check.checker), and the linear-time engine (verifier.check.hbgraph). The input is
assumed well-formed; unmatched messages and missing producers are reported,
not crashed on. This is the only module of verifier/ that imports z3.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import z3

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
    COMM_MODELS,
    loc,
    op_text,
)
from verifier.semantics.lowering import lower
from verifier.results.check import PropertyId
from verifier.check.z3budget import (  # noqa: F401  (the size estimate, re-exported)
    BUDGET_SHARE,
    DEFAULT_RLIMIT,
    DEFAULT_TIMEOUT_MS,
    RLIMIT_PER_CONSTRAINT,
    SECONDS_PER_CONSTRAINT,
    estimated_constraints,
    fits_budget,
)

# the properties the encoding tracks, as their ids' strings: each label starts
# with one of them (``property_of``)
_DEP = PropertyId.DEPENDENCIES.value
_MSG = PropertyId.MESSAGE_MATCHING.value
_DL = PropertyId.DEADLOCK_FREE.value
_OVL = PropertyId.OVERLAP_LEGAL.value
_MEM = PropertyId.MEMORY.value
PROPERTY_IDS: tuple[str, ...] = (_DEP, _MSG, _DL, _OVL, _MEM)
# Cores at most this long are re-minimised by deletion (one small check per label).
CORE_DELETION_MAX = 400


@dataclass(frozen=True)
class Z3Outcome:
    """What Z3 decided about one schedule under one communication model."""

    status: str  # "sat" | "unsat" | "unknown"
    order: tuple[tuple[int, int], ...] | None
    times: Mapping[str, int] | None
    core: tuple[str, ...]
    failed_properties: tuple[str, ...]
    reason: str
    stats: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in ("sat", "unsat", "unknown"):
            raise ValueError(f"status must be sat, unsat or unknown, got {self.status!r}")
        if self.status == "sat" and (self.order is None or self.times is None):
            raise ValueError("a sat outcome needs order and times")
        if self.status == "unsat" and not self.core:
            raise ValueError("an unsat outcome needs a non-empty core")

    @classmethod
    def unknown(cls, reason: str, stats: Mapping[str, object]) -> "Z3Outcome":
        """A solver that did not decide: never a pass."""
        return cls("unknown", None, None, (), (), reason, MappingProxyType(dict(stats)))


@dataclass(frozen=True)
class Encoding:
    """The constraint system of one schedule, as plain data (no z3 objects).

    ``variables`` names every integer variable: time events (``num_time_events``
    of them, first) then memory counters. ``groups`` maps a label to its
    difference constraints ``(x, y, c)`` meaning ``v[x] - v[y] >= c``;
    ``constants`` maps a label to the truth value it asserts.
    ``action_post[r][i]`` is the variable of the time step i of rank r starts.
    """

    variables: tuple[str, ...]
    num_time_events: int
    groups: Mapping[str, tuple[tuple[int, int, int], ...]]
    constants: Mapping[str, bool]
    action_start: tuple[tuple[int, ...], ...]

    @property
    def num_constraints(self) -> int:
        return sum(len(g) for g in self.groups.values()) + len(self.constants)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.groups) + tuple(self.constants)


# ---------------------------------------------------------------------------
# The encoding
# ---------------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.groups: dict[str, list[tuple[int, int, int]]] = {}
        self.constants: dict[str, bool] = {}

    def var(self, name: str) -> int:
        self.names.append(name)
        return len(self.names) - 1

    def after(self, label: str, later: int, earlier: int, gap: int = 1) -> None:
        """``later`` happens at least ``gap`` after ``earlier``."""
        self.groups.setdefault(label, []).append((later, earlier, gap))

    def const(self, label: str, value: bool) -> None:
        while label in self.constants:
            label += "'"
        self.constants[label] = value


_RETURNS_WAITED = "returns once posted and all its ops complete"


def _safe(fn, *args):
    try:
        return fn(*args)
    except (KeyError, IndexError):
        return None


def _overlap_dependent(s: Schedule, o: Overlap) -> bool:
    """The backward of ``o`` needs the forward of ``o`` (SEMANTICS, overlap-legal)."""
    if o.f.mb != o.b.mb:
        return False
    pf, pb = _safe(lambda: s._route_pos[o.f.stage]), _safe(lambda: s._route_pos[o.b.stage])
    return pf is not None and pb is not None and pf[0] == pb[0] and pb[1] >= pf[1]


def _descriptions(s: Schedule) -> list[list[str]]:
    """``"rank r step i <action>"`` for every step (computed once: labels reuse it)."""
    return [[f"{loc(r, i)} {a}" for i, a in enumerate(acts)] for r, acts in enumerate(s.actions)]


def encode(s: Schedule, comm_model: str = "nccl", memory_limit: int | None = None) -> Encoding:
    """The constraint system of properties 3-7 for a schedule with communication."""
    if comm_model not in COMM_MODELS:
        raise ValueError(f"comm_model must be one of {COMM_MODELS}, got {comm_model!r}")
    nccl = comm_model == "nccl"
    b = _Builder()
    R = s.num_ranks
    desc = _descriptions(s)

    # -- events and the meaning of each step ("program") ------------------
    post: list[list[int]] = []  # start of a compute step, post of a comm step
    ret: list[list[int]] = []
    finish: dict[tuple[int, int, int], int] = {}  # (rank, step, half) -> var
    unit_active: dict[tuple[int, int], int] = {}  # nccl: (rank, step) of a unit
    unit_complete: dict[tuple[int, int], int] = {}
    for r in range(R):
        post.append([]), ret.append([])
        for i, a in enumerate(s.actions[r]):
            def lab(what, r=r, i=i):
                return f"program: {desc[r][i]} {what}"

            cs = computes_of(a)
            # the step starts (a compute) or is posted (communication) once step i-1 returned
            st = b.var(f"{loc(r, i)} {'start' if cs else 'post'}")
            if i > 0:
                what = "starts" if cs else "is posted"
                b.after(lab(f"{what} after step {i - 1} returns"), st, ret[r][i - 1])
            if cs:
                fins = []
                for h, _c in enumerate(cs):
                    f = b.var(f"{loc(r, i, h) if len(cs) > 1 else loc(r, i)} finish")
                    b.after(lab("finishes after it starts"), f, st)
                    finish[(r, i, h)] = f
                    fins.append(f)
                if len(fins) == 1:
                    rt = fins[0]  # a compute returns when it finishes
                else:
                    rt = b.var(f"{loc(r, i)} return")
                    for f in fins:
                        b.after(lab("returns when both halves finish"), rt, f)
            else:
                rt = st  # isend/irecv semantics: returns once posted ...
                if isinstance(a, Batch) and a.wait:  # ... unless it waits (see below)
                    rt = b.var(f"{loc(r, i)} return")
                    b.after(lab(_RETURNS_WAITED), rt, st)
                if nccl and comms_of(a):
                    act = b.var(f"{loc(r, i)} active")
                    b.after(lab("is active on the comm stream once posted"), act, st)
                    unit_active[(r, i)] = act
                    unit_complete[(r, i)] = b.var(f"{loc(r, i)} complete")
            post[r].append(st)
            ret[r].append(rt)

    # nccl: one comm stream per rank, units in post order
    if nccl:
        for r in range(R):
            prev = None
            for i, a in enumerate(s.actions[r]):
                if (r, i) not in unit_active:
                    continue
                if prev is not None:
                    b.after(
                        f"{_DL}: {loc(r, i)} waits {loc(r, prev)} on rank {r}'s "
                        f"comm stream ({s.actions[r][i]} after {s.actions[r][prev]})",
                        unit_active[(r, i)],
                        unit_complete[(r, prev)],
                    )
                prev = i

    # -- message matching: FIFO per ordered rank pair -----------------------
    sends: dict[tuple[int, int], list[tuple[int, int, int, Comm]]] = {}
    recvs: dict[tuple[int, int], list[tuple[int, int, int, Comm]]] = {}
    posted = (
        (r, i, j if isinstance(a, Batch) else None, op)
        for r in range(R)
        for i, a in enumerate(s.actions[r])
        for j, op in enumerate(comms_of(a))
    )
    for r, i, j, op in posted:
        peer = _safe(s.peer_of, op)
        where = loc(r, i, j)
        if peer is None:
            b.const(f"{_MSG}: {where} {op} has no peer on its route", False)
            continue
        if op.kind.is_send:
            sends.setdefault((r, peer), []).append((r, i, j, op))
        else:
            recvs.setdefault((peer, r), []).append((r, i, j, op))
    completion: dict[tuple[int, int, int | None], int] = {}  # op place -> complete var
    for pair in sorted(set(sends) | set(recvs)):
        ss, rs = sends.get(pair, []), recvs.get(pair, [])
        for k in range(max(len(ss), len(rs))):
            if k >= len(rs):
                r, i, j, op = ss[k]
                b.const(
                    f"{_MSG}: {loc(r, i, j)} {op} (send #{k} from rank {pair[0]} "
                    f"to rank {pair[1]}) has no matching receive: rank {pair[1]} posts "
                    f"{len(rs)} receive(s) from rank {pair[0]}",
                    False,
                )
                continue
            if k >= len(ss):
                r, i, j, op = rs[k]
                b.const(
                    f"{_MSG}: {loc(r, i, j)} {op} (receive #{k} on rank {pair[1]} "
                    f"from rank {pair[0]}) has no matching send: rank {pair[0]} posts "
                    f"{len(ss)} send(s) to rank {pair[1]}",
                    False,
                )
                continue
            (sr, si, sj, sop), (rr, ri, rj, rop) = ss[k], rs[k]
            same = _safe(s.matching_op, sop) == rop
            verdict = (
                "equal" if same else f"differs (the receive expects {_safe(s.matching_op, rop)})"
            )
            b.const(
                f"{_MSG}: {loc(sr, si, sj)} {sop} pairs with {loc(rr, ri, rj)} "
                f"{rop}: payload {verdict}",
                same,
            )
            if nccl:
                c = b.var(f"{loc(sr, si, sj)} -> {loc(rr, ri, rj)} complete")
                b.after(
                    f"{_DL}: {loc(sr, si, sj)} {sop} waits {loc(rr, ri, rj)} {rop} "
                    f"(its unit active)",
                    c,
                    unit_active[(rr, ri)],
                )
                b.after(
                    f"{_DL}: {loc(rr, ri, rj)} {rop} waits {loc(sr, si, sj)} {sop} "
                    f"(its unit active)",
                    c,
                    unit_active[(sr, si)],
                )
                for r, i in ((sr, si), (rr, ri)):
                    b.after(
                        f"program: {desc[r][i]} completes when its ops complete",
                        unit_complete[(r, i)],
                        c,
                    )
                completion[(sr, si, sj)] = completion[(rr, ri, rj)] = c
            else:
                c = b.var(f"{loc(rr, ri, rj)} complete")
                b.after(
                    f"program: {loc(rr, ri, rj)} {rop} completes after it is posted",
                    c,
                    post[rr][ri],
                )
                b.after(
                    f"{_DL}: {loc(rr, ri, rj)} {rop} waits {loc(sr, si, sj)} {sop} "
                    f"(posted)",
                    c,
                    post[sr][si],
                )
                completion[(rr, ri, rj)] = c
                completion[(sr, si, sj)] = post[sr][si]

    # a waited BATCH (or, under nccl, a unit: the stream still has it) returns when complete
    for r in range(R):
        for i, a in enumerate(s.actions[r]):
            if isinstance(a, Batch) and a.wait:
                for j, _op in enumerate(a.ops):
                    c = completion.get((r, i, j))
                    if c is not None:  # an unmatched op never completes: its const is false
                        b.after(f"program: {desc[r][i]} {_RETURNS_WAITED}", ret[r][i], c)

    # -- data dependencies -----------------------------------------------
    for r in range(R):
        acts = s.actions[r]
        comp_at: dict[tuple[ComputeKind, int, int], tuple[int, int]] = {}
        recv_at: dict[tuple[CommKind, int, int], tuple[int, int | None]] = {}
        for i, a in enumerate(acts):
            for h, c in enumerate(computes_of(a)):
                comp_at.setdefault((c.kind, c.stage, c.mb), (i, h))
            for j, op in enumerate(comms_of(a)):
                if not op.kind.is_send:
                    recv_at.setdefault(
                        (op.kind, op.stage, op.mb), (i, j if isinstance(a, Batch) else None)
                    )

        def need_compute(i, wait_var, what, kinds, stage, mb, same_step_ok=False):
            """``wait_var`` (of step i) waits for a compute of ``kinds`` on (stage, mb)."""
            found = [comp_at[(k, stage, mb)] for k in kinds if (k, stage, mb) in comp_at]
            need = " or ".join(op_text(k, stage, mb) for k in kinds)
            if not found:
                b.const(f"{_DEP}: {loc(r, i)} {what} needs {need}, not on rank {r}", False)
                return
            pi, ph = min(found)
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
                    wait_var,
                    finish[(r, pi, ph)],
                )

        def need_recv(i, wait_var, what, kind, stage, mb):
            op = Comm(kind, stage, mb)
            place = recv_at.get((kind, stage, mb))
            if place is None:
                b.const(
                    f"{_DEP}: {loc(r, i)} {what} needs {op}, not posted on rank {r}", False
                )
                return
            ok = place[0] < i
            b.const(
                f"{_DEP}: {loc(r, i)} {what} after {op} at {loc(r, *place)}"
                + ("" if ok else " (it comes later)"),
                ok,
            )
            c = completion.get((r, *place))
            if ok and c is not None:
                b.after(
                    f"{_DL}: {loc(r, i)} {what} waits {loc(r, *place)} {op} (complete)",
                    wait_var,
                    c,
                )

        for i, a in enumerate(acts):
            for c in computes_of(a):
                if c.stage not in s._route_pos or c.stage not in s.stage_by_id:
                    continue  # unknown stage: well-formed reports it
                same_ok = isinstance(a, Overlap)
                if c.kind is ComputeKind.F:
                    p = s.prev_stage(c.stage)
                    if p is not None and _safe(s.rank_of, p) != r:
                        need_recv(i, post[r][i], str(c), CommKind.RECV_F, c.stage, c.mb)
                    elif p is not None:
                        need_compute(i, post[r][i], str(c), (ComputeKind.F,), p, c.mb, same_ok)
                elif c.kind in (ComputeKind.B, ComputeKind.I):
                    need_compute(i, post[r][i], str(c), (ComputeKind.F,), c.stage, c.mb, same_ok)
                    n = s.next_stage(c.stage)
                    if n is not None and _safe(s.rank_of, n) != r:
                        need_recv(i, post[r][i], str(c), CommKind.RECV_B, c.stage, c.mb)
                    elif n is not None:
                        need_compute(
                            i, post[r][i], str(c), (ComputeKind.B, ComputeKind.I), n, c.mb, same_ok
                        )
                else:  # W
                    need_compute(i, post[r][i], str(c), (ComputeKind.I,), c.stage, c.mb)
            for op in comms_of(a):
                if not op.kind.is_send or op.stage not in s._route_pos:
                    continue
                kinds = (
                    (ComputeKind.F,)
                    if op.kind is CommKind.SEND_F
                    else (ComputeKind.B, ComputeKind.I)
                )
                need_compute(i, post[r][i], str(op), kinds, op.stage, op.mb)

    # -- overlap legality -------------------------------------------------
    for r in range(R):
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
            b.const(f"{_OVL}: {desc[r][i]}: {verdict}", kinds_ok and not dep)

    num_time = len(b.names)

    # -- memory: live activations by program order ------------------------
    if memory_limit is not None:
        zero = b.var("memory zero")
        for r in range(R):
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

    return Encoding(
        variables=tuple(b.names),
        num_time_events=num_time,
        groups=MappingProxyType({k: tuple(v) for k, v in b.groups.items()}),
        constants=MappingProxyType(dict(b.constants)),
        action_start=tuple(tuple(x) for x in post),
    )


# ---------------------------------------------------------------------------
# Solving
# ---------------------------------------------------------------------------


def property_of(label: str) -> str:
    """The property id (or ``program``) a label states."""
    return label.split(":", 1)[0]


def smtlib(enc: Encoding, labels=None, tracked: bool = True) -> str:
    """The system as SMT-LIB 2 text: ``(=> p<k> ...)`` per label k when tracked."""
    use = list(enc.labels) if labels is None else list(labels)
    lines = ["(set-logic QF_IDL)"]
    lines += [f"(declare-const t{k} Int)" for k in range(len(enc.variables))]
    for k, lab in enumerate(use):
        if lab in enc.groups:
            body = " ".join(f"(>= (- t{x} t{y}) {_num(c)})" for x, y, c in enc.groups[lab])
            body = f"(and {body})" if len(enc.groups[lab]) > 1 else body
        else:
            body = "true" if enc.constants[lab] else "false"
        if tracked:
            lines.append(f"(declare-const p{k} Bool)")
            lines.append(f"(assert (=> p{k} {body}))")
        else:
            lines.append(f"(assert {body})")
    return "\n".join(lines)


def _num(c: int) -> str:
    return str(c) if c >= 0 else f"(- {-c})"


class _Session:
    """One z3 context driven by SMT-LIB 2 commands (the encoding's own text).

    Tracked, ``(assert (=> p<k> group_k))`` plus ``(check-sat-assuming (p0 ..
    pn))`` is what z3's ``assert_and_track`` does; untracked, every group is
    asserted plainly. The text route skips building one Python object per
    label and per variable, the dominant cost at 10^4 labels. A fresh context
    per check keeps sessions independent.
    """

    def __init__(self, rlimit: int, timeout_ms: int):
        self.ctx = z3.Context()
        self.rlimit, self.timeout_ms = int(rlimit), int(timeout_ms)

    def run(self, commands: str) -> str:
        return z3.Z3_eval_smtlib2_string(self.ctx.ref(), commands)

    def check(self, enc: Encoding, labels, tracked: bool = True) -> str:
        query = (
            "(check-sat-assuming (" + " ".join(f"p{k}" for k in range(len(labels))) + "))"
            if tracked
            else "(check-sat)"
        )
        out = self.run(
            "(set-option :produce-unsat-cores true)\n"
            # z3's difference-logic theory solver; auto_config would pick simplex
            "(set-option :smt.auto_config false)\n"
            "(set-option :smt.arith.solver 1)\n"
            f"(set-option :rlimit {self.rlimit})\n"
            f"(set-option :timeout {self.timeout_ms})\n"
            + smtlib(enc, labels, tracked)
            + "\n"
            + query
        )
        words = out.split()
        return words[-1] if words and words[-1] in ("sat", "unsat", "unknown") else out.strip()

    def rlimit_used(self) -> int:
        m = re.search(r":rlimit-count\s+(\d+)", self.run("(get-info :all-statistics)"))
        return int(m.group(1)) if m else 0

    def reason_unknown(self) -> str:
        m = re.search(r'"(.*)"', self.run("(get-info :reason-unknown)"))
        return m.group(1) if m else "unknown"

    def core(self) -> list[int]:
        return [int(w[1:]) for w in re.findall(r"p\d+", self.run("(get-unsat-core)"))]

    def values(self, n: int) -> list[int]:
        vals = [0] * n
        if n == 0:
            return vals
        out = self.run("(get-value (" + " ".join(f"t{k}" for k in range(n)) + "))")
        for k, neg, v in re.findall(r"\(t(\d+) (\(- )?(\d+)\)?\)", out):
            vals[int(k)] = -int(v) if neg else int(v)
        return vals


def _solve_order(enc: Encoding) -> list[str]:
    """Labels in reverse topological order of the constraint graph (constants first).

    A hint only: z3 takes assumptions in the order given, and adding the edges
    of a difference-logic system sink-first keeps its incremental propagation
    near-linear (measured: 16x512 DualPipe 2.9 s against 9.6 s in creation
    order). Labels on a cycle go first. No answer depends on it.
    """
    n = len(enc.variables)
    succ: list[list[int]] = [[] for _ in range(n)]
    indeg = [0] * n
    for g in enc.groups.values():
        for x, y, _c in g:
            succ[y].append(x)
            indeg[x] += 1
    pos = [n] * n
    ready = deque(k for k in range(n) if indeg[k] == 0)
    done = 0
    while ready:  # Kahn's algorithm, breadth first
        v = ready.popleft()
        pos[v] = done
        done += 1
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    keyed = [(-(n + 1), k, lab) for k, lab in enumerate(enc.constants)]
    keyed += [
        (-min(pos[x] for x, _y, _c in g), len(keyed) + k, lab)
        for k, (lab, g) in enumerate(enc.groups.items())
    ]
    return [lab for _p, _k, lab in sorted(keyed)]


def _check(
    enc: Encoding, labels, rlimit: int, timeout_ms: int, tracked: bool = True
) -> tuple[str, _Session]:
    """Check the system restricted to ``labels``: ("sat"|"unsat"|"unknown"|error, session)."""
    session = _Session(rlimit, timeout_ms)
    return session.check(enc, labels, tracked), session


def decide(
    schedule: Schedule,
    comm_model: str = "nccl",
    *,
    memory_limit: int | None = None,
    rlimit: int = DEFAULT_RLIMIT,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    minimize_core: bool = True,
) -> Z3Outcome:
    """Decide properties 3-7 of ``schedule`` under ``comm_model`` (see module docstring).

    A compute-only schedule is lowered first (``verifier.semantics.lowering.lower``) and
    ``order`` then names steps of the lowered schedule. ``rlimit`` (z3's
    deterministic resource count, 0 for none) and ``timeout_ms`` bound each z3
    check; hitting either gives status ``unknown`` with the reason. Unsat costs
    a second check with the labels plus, when ``minimize_core``, one small
    check per core label (deletion). ``stats``: num_events, num_variables,
    num_constraints, num_labels, encode_seconds, solve_seconds, rlimit_used,
    and for unsat core_size_raw, core_solve_seconds, core_minimize_seconds.
    """
    t0 = time.perf_counter()
    if schedule.is_compute_only:
        schedule = lower(schedule)
    enc = encode(schedule, comm_model, memory_limit)
    labels = _solve_order(enc)
    t1 = time.perf_counter()
    # Every group asserted: a model is the witness. Only when there is none are
    # the same groups re-asserted behind their labels, for the core (tracking
    # costs z3 a Boolean per label in every model: 5x the time at 10^5 labels).
    res, session = _check(enc, labels, rlimit, timeout_ms, tracked=False)
    t2 = time.perf_counter()
    used = session.rlimit_used()
    stats: dict[str, object] = {
        "comm_model": comm_model,
        "num_events": enc.num_time_events,
        "num_variables": len(enc.variables),
        "num_constraints": enc.num_constraints,
        "num_labels": len(labels),
        "encode_seconds": round(t1 - t0, 4),
        "solve_seconds": round(t2 - t1, 4),
        "rlimit_used": used,
    }
    if res == "sat":
        vals = session.values(enc.num_time_events)
        low = min(vals, default=0)
        vals = [v - low for v in vals]  # the witness starts at time 0
        times = {enc.variables[k]: vals[k] for k in range(enc.num_time_events)}
        order = sorted(
            ((vals[v], r, i) for r, row in enumerate(enc.action_start) for i, v in enumerate(row))
        )
        return Z3Outcome(
            status="sat",
            order=tuple((r, i) for _, r, i in order),
            times=MappingProxyType(times),
            core=(),
            failed_properties=(),
            reason="",
            stats=MappingProxyType(stats),
        )
    if res != "unsat":
        return Z3Outcome.unknown(
            _unknown_reason(session, res, used, rlimit, t2 - t1, timeout_ms), stats)
    res, session = _check(enc, labels, rlimit, timeout_ms, tracked=True)
    stats["core_solve_seconds"] = round(time.perf_counter() - t2, 4)
    if res != "unsat":
        return Z3Outcome.unknown(
            "unsat, but the labelled re-check for a core did not finish: "
            + _unknown_reason(session, res, session.rlimit_used(), rlimit, 0.0, timeout_ms),
            stats)
    t2 = time.perf_counter()
    core = [labels[k] for k in session.core() if k < len(labels)]
    if not core:  # cannot happen with every group tracked; never turn it into a pass
        return Z3Outcome.unknown("unsat, but z3 gave an empty core", stats)
    stats["core_size_raw"] = len(core)
    if minimize_core:
        core = _minimize(enc, core, rlimit, timeout_ms)
        stats["core_minimize_seconds"] = round(time.perf_counter() - t2, 4)
    order_of = {lab: k for k, lab in enumerate(labels)}
    core.sort(key=order_of.__getitem__)
    core = _cycle_order(enc, core)
    failed = tuple(p for p in PROPERTY_IDS if any(property_of(c) == p for c in core))
    return Z3Outcome(
        status="unsat",
        order=None,
        times=None,
        core=tuple(core),
        failed_properties=failed,
        reason="",
        stats=MappingProxyType(stats),
    )


def _unknown_reason(session, res, used, rlimit, seconds, timeout_ms) -> str:
    if res != "unknown":
        return f"z3 error: {res}"
    said = session.reason_unknown()
    if rlimit and used >= rlimit:
        return f"resource limit hit: rlimit {rlimit} (used {used}); z3: {said}"
    if seconds * 1000 >= timeout_ms:
        return f"timeout hit: {timeout_ms} ms; z3: {said}"
    return f"z3: {said}"


def _minimize(enc: Encoding, core: list[str], rlimit: int, timeout_ms: int) -> list[str]:
    """Shrink a core: re-check it alone until z3's core stops shrinking, then
    deletion (drop each label whose removal keeps the rest unsat) when it has
    at most ``CORE_DELETION_MAX`` labels; the result is then minimal."""
    falses = [c for c in core if c in enc.constants and not enc.constants[c]]
    if falses:  # a constant-false label is a core on its own
        return [falses[0]]
    keep = list(core)
    while True:
        res, session = _check(enc, keep, rlimit, timeout_ms)
        if res != "unsat":
            return keep
        used = set(session.core())
        if len(used) >= len(keep):
            break
        keep = [lab for j, lab in enumerate(keep) if j in used]
    if len(keep) > CORE_DELETION_MAX:
        return keep
    k = 0
    while k < len(keep):
        trial = keep[:k] + keep[k + 1 :]
        res, session = _check(enc, trial, rlimit, timeout_ms)
        if res == "unsat":
            used = set(session.core())
            keep = [lab for j, lab in enumerate(trial) if j in used]
        else:
            k += 1
    return keep


def _cycle_order(enc: Encoding, core: list[str]) -> list[str]:
    """Order a core of waits hop by hop: each label waits for what the next one
    produces (a minimal infeasible difference system is a cycle). Starts at
    the first cross-rank wait; labels off the cycle keep their order at the end."""
    if len(core) < 3 or any(lab not in enc.groups for lab in core):
        return core

    def cross(lab: str) -> bool:
        return len(set(re.findall(r"rank (\d+) step", lab))) > 1

    first = next((lab for lab in core if cross(lab)), core[0])
    out, rest = [first], [lab for lab in core if lab != first]
    while rest:
        waits_for = {y for _x, y, _c in enc.groups[out[-1]]}
        nxt = next(
            (lab for lab in rest if any(x in waits_for for x, _y, _c in enc.groups[lab])), None
        )
        if nxt is None:
            break
        out.append(nxt)
        rest.remove(nxt)
    return out + rest

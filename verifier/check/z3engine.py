"""The Z3 engine: properties 3-7 of specs/SEMANTICS.md decided by z3 (QF_IDL).

What it is: ``decide`` builds the constraint system of a (lowered) schedule
(verifier.check.encoding: integer event times, difference constraints under
labels naming the property, rank and step they state; its module docstring is
the semantics in solver form) and hands exactly its SMT-LIB text to z3's
difference-logic solver, a fresh context per check, so that

- SAT gives a witness timing (``Z3Outcome.times``) and a global execution
  order of all actions (``Z3Outcome.order``, actions sorted by the time they
  begin: SEMANTICS.md "Witness");
- UNSAT gives a minimal unsat core: every group is re-asserted behind its
  label (``(=> p_k group_k)`` with ``check-sat-assuming``, i.e. z3's
  ``assert_and_track``), the core is minimised by deletion, and ordered so a
  deadlock reads as the cycle of waits, hop by hop;
- a resource limit (deterministic ``rlimit``) or wall-clock timeout gives
  ``unknown`` with the reason. Unknown is never a pass.

``decide_program`` does the same for a recorded program's deadlock freedom
under one model (verifier.check.program.encoding states it): the answer, either
way, is a ``ProgramCertificate`` (the order the ranks return, or the state they
stop in) for the program certificate checker.

The encoding's names (``encode``; ``Encoding``, ``smtlib``, ``property_of``,
``PROPERTY_IDS`` of verifier.check.smt) and the size estimate of verifier.check.z3budget are
re-exported here.

What it does not cover: the constraints themselves (verifier.check.encoding),
properties 1-2 (verifier.check.properties), the verdict and its printing
(verifier.check.checker), the linear-time engine (verifier.check.hbgraph).
This and verifier.synth.z3synth are the only modules that import z3.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import z3

from verifier.ir import Schedule
from verifier.program import Program
from verifier.results.program import ProgramCertificate
from verifier.check.program.encoding import encode_program, read_outcome, smtlib_program, smtlib_terminates
from verifier.semantics.lowering import lower_if_compute_only
from verifier.check.encoding import encode  # noqa: F401  (re-exported)
from verifier.check.smt import (  # noqa: F401  (the system's data and text, re-exported)
    PROPERTY_IDS,
    Encoding,
    property_of,
    smtlib,
    solve_order,
)
from verifier.check.z3budget import (  # noqa: F401  (the size estimate, re-exported)
    BUDGET_SHARE,
    DEFAULT_RLIMIT,
    DEFAULT_TIMEOUT_MS,
    RLIMIT_PER_CONSTRAINT,
    SECONDS_PER_CONSTRAINT,
    Z3_MODELS,
    estimated_constraints,
    fits_budget,
)

COMM_MODELS = Z3_MODELS  # the models decide takes (every model of verifier.semantics.comm)
_solve_order = solve_order  # the name benchmarks/bench_z3.py and the tests use
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


# ---------------------------------------------------------------------------
# Solving
# ---------------------------------------------------------------------------


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
    schedule = lower_if_compute_only(schedule)
    enc = encode(schedule, comm_model, memory_limit)
    labels = solve_order(enc)
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
        return _witness(enc, session, stats)
    if res != "unsat":
        return Z3Outcome.unknown(
            _unknown_reason(session, res, used, rlimit, t2 - t1, timeout_ms), stats)
    return _core(enc, labels, rlimit, timeout_ms, minimize_core, stats)


@dataclass(frozen=True)
class ProgramZ3Outcome:
    """What Z3 decided about a recorded program under one model: ``status``
    "sat" (always, when it finishes: the maximal encoding has exactly one set
    of happening events) with the ``certificate`` read from its values, or
    "unknown" with the ``reason`` (a limit was hit; never a pass)."""

    status: str
    certificate: ProgramCertificate | None
    reason: str
    stats: Mapping[str, object] = field(default_factory=dict)


def decide_program(
    program: Program,
    comm_model: str = "nccl",
    *,
    rlimit: int = DEFAULT_RLIMIT,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    plan=None,
) -> ProgramZ3Outcome:
    """Deadlock freedom of a recorded program under ``comm_model`` by z3
    (``verifier.check.program.encoding``). First "does every event happen?" (a pure
    difference system; sat: the witness), skipped when an event can never
    happen; otherwise the maximal system, whose one set of happening events is
    where the program stops. ``stats``: num_events, num_constraints,
    encode_seconds, solve_seconds, rlimit_used, questions (1 or 2)."""
    t0 = time.perf_counter()
    enc = encode_program(program, comm_model, plan)
    stats: dict[str, object] = {"comm_model": comm_model, "num_events": len(enc.names),
                                "num_constraints": enc.num_constraints,
                                "encode_seconds": round(time.perf_counter() - t0, 4)}
    n = len(enc.names)
    res = "unsat"
    t1 = time.perf_counter()
    if not enc.never:
        res, session = _ask(smtlib_terminates(enc), rlimit, timeout_ms)
        stats["questions"] = 1
        if res == "sat":
            stats.update(solve_seconds=round(time.perf_counter() - t1, 4), rlimit_used=session.rlimit_used())
            return ProgramZ3Outcome("sat", read_outcome(enc, [True] * n, session.values(n)), "",
                                    MappingProxyType(stats))
    if res == "unsat":
        res, session = _ask(smtlib_program(enc), rlimit, timeout_ms)
        stats["questions"] = stats.get("questions", 0) + 1
    t2 = time.perf_counter()
    used = session.rlimit_used()
    stats.update(solve_seconds=round(t2 - t1, 4), rlimit_used=used)
    if res != "sat":  # the maximal system always has its one solution: only a limit or an error lands here
        return ProgramZ3Outcome("unknown", None, _unknown_reason(session, res, used, rlimit, t2 - t1, timeout_ms),
                                MappingProxyType(stats))
    happens = [False] * n
    if n:
        got = session.run("(get-value (" + " ".join(f"h{i}" for i in range(n)) + "))")
        for i, v in re.findall(r"\(h(\d+) (true|false)\)", got):
            happens[int(i)] = v == "true"
    return ProgramZ3Outcome("sat", read_outcome(enc, happens, session.values(n)), "", MappingProxyType(stats))


def _ask(text: str, rlimit: int, timeout_ms: int) -> tuple[str, _Session]:
    """One fresh z3 context on ``text``: ("sat"|"unsat"|"unknown"|error, session)."""
    session = _Session(rlimit, timeout_ms)
    out = session.run(
        "(set-option :smt.auto_config false)\n(set-option :smt.arith.solver 1)\n"
        f"(set-option :rlimit {session.rlimit})\n(set-option :timeout {session.timeout_ms})\n"
        + text + "\n(check-sat)")
    words = out.split()
    return (words[-1] if words and words[-1] in ("sat", "unsat", "unknown") else out.strip()), session


def _witness(enc: Encoding, session: _Session, stats: dict[str, object]) -> Z3Outcome:
    """The sat outcome: z3's model as times from 0, and the steps by start time."""
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


def _core(
    enc: Encoding, labels: list[str], rlimit: int, timeout_ms: int, minimize_core: bool,
    stats: dict[str, object],
) -> Z3Outcome:
    """The unsat outcome: re-check with every label tracked, minimise the core,
    order it as a cycle of waits."""
    t2 = time.perf_counter()
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

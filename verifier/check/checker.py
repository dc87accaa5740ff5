"""The checker: decides the seven properties of specs/SEMANTICS.md for a schedule.

Public API: ``check(schedule, comm_model="nccl", engine="auto",
memory_limit=None) -> CheckResult`` and the result data model below (frozen
dataclasses and ordered enums; text and JSON are rendered from them by
``verifier.cli.check``, never assembled here).

How a verdict is reached:

1. a compute-only schedule is lowered first (``verifier.semantics.lowering.lower``);
2. the static properties (well-formed, exactly-once, dependencies,
   message-matching, overlap-legal, memory) are decided by
   ``verifier.check.properties`` (if well-formed fails, the others are NOT_CHECKED:
   their questions are not defined on ids that do not exist);
3. deadlock-freedom is decided by an engine: ``graph`` (``verifier.check.hbgraph``,
   linear time, any size), ``z3`` (``verifier.check.z3engine``), ``both`` (each, and
   a disagreement is an UNKNOWN verdict naming it, never a pass) or ``auto``
   (the graph engine first: a static failure or a deadlock it finds is the
   answer, without waiting for Z3's minimised unsat core; otherwise Z3 proves
   it when ``z3budget.fits_budget`` says so, else the graph engine decides);
4. every certificate the graph engine produces (a witness order or a cycle of
   waits) is validated by ``verifier.check.certificate``, an interpreter that shares
   no code with the engines; a rejected certificate makes the verdict UNKNOWN.

What this module does not cover: timing (verifier.analysis.timeline), running the
schedule (reference/, fastpath/), the Z3 encoding itself (verifier.check.z3engine).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping

from verifier.check import certificate, hbgraph, properties, z3budget
from verifier.format.io import paused_gc
from verifier.ir import COMM_MODELS, Schedule, ScheduleError, comms_of
from verifier.semantics.lowering import lower
from verifier.semantics.tables import forget as forget_tables, tables_of
from verifier.results.check import (
    TEMPLATES,
    CheckResult,
    Event,
    EventKind,
    Hop,
    PropertyId,
    PropertyResult,
    Stats,
    Status,
    Verdict,
    Violation,
    WaitCycle,
)

ENGINES = ("auto", "graph", "z3", "both")
# auto gives Z3 this long before the graph engine decides instead
AUTO_Z3_TIMEOUT_MS = 10_000


def _verdict(props: list[PropertyResult]) -> Verdict:
    st = {p.status for p in props}
    if Status.FAILS in st:
        return Verdict.REFUTED
    if Status.UNKNOWN in st:
        return Verdict.UNKNOWN
    return Verdict.VERIFIED


def check(
    schedule: Schedule,
    comm_model: str = "nccl",
    engine: str = "auto",
    memory_limit: float | None = None,
    *,
    validate_certificate: bool = True,
    z3_timeout_ms: int | None = None,
    z3_rlimit: int | None = None,
    progress=None,
    activation_bytes: Mapping[int, float] | None = None,
) -> CheckResult:
    """Decide the seven properties of ``schedule`` under ``comm_model``.

    ``engine``: auto | graph | z3 | both (module docstring). ``progress``: an
    optional callable taking one short line, called between phases.
    ``activation_bytes``: bytes of each stage's activation for one micro-batch
    (``verifier.format.units``); with it peaks and ``memory_limit`` are in bytes, and
    memory is decided by the static check alone (it is exact: program order).
    Raises ScheduleError for a bad comm_model, engine or memory_limit.
    """
    with paused_gc():
        return _check(schedule, comm_model, engine, memory_limit, validate_certificate,
                      z3_timeout_ms, z3_rlimit, progress, activation_bytes)


def _check(schedule, comm_model, engine, memory_limit, validate_certificate, z3_timeout_ms,
           z3_rlimit, progress, activation_bytes=None) -> CheckResult:
    if comm_model not in COMM_MODELS:
        raise ScheduleError(
            f"unknown communication model {comm_model!r}; choose one of {', '.join(COMM_MODELS)}"
        )
    if engine not in ENGINES:
        raise ScheduleError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if memory_limit is not None and not (memory_limit >= 0):
        raise ScheduleError(f"memory limit must be >= 0, got {memory_limit!r}")
    say = progress or (lambda line: None)
    t0 = time.perf_counter()
    lowered = False
    original = schedule
    if schedule.is_compute_only and schedule.num_actions:
        try:
            schedule = lower(schedule)
            lowered = True
        except (KeyError, IndexError):
            # an action on a stage that is on no route: nothing to lower it
            # by; well-formed reports it below, on the input as written
            pass

    engine_note = ""

    def result(verdict, chosen, props, witness, cycle, peaks, cert, engine_s, cert_s, num_events, z3_stats, core):
        return CheckResult(
            verdict=verdict,
            comm_model=comm_model,
            engine=chosen,
            properties=tuple(props),
            witness=witness,
            cycle=cycle,
            peaks=tuple(peaks),
            memory_limit=memory_limit,
            lowered=lowered,
            certificate=cert,
            stats=Stats(
                seconds=time.perf_counter() - t0,
                num_actions=schedule.num_actions,
                num_ops=num_ops,
                num_events=num_events,
                engine_seconds=engine_s,
                certificate_seconds=cert_s,
                z3=z3_stats,
            ),
            z3_core=tuple(core),
            engine_note=engine_note,
            schedule=schedule,
            input_schedule=original if lowered else None,
            activation_bytes=activation_bytes,
        )

    say("well-formed")
    wf = properties.well_formed(schedule)
    if wf and lowered:
        # name the faults in the input's own steps, not in the lowering's
        wf_input = properties.well_formed(original)
        if wf_input:
            schedule, wf, lowered = original, wf_input, False
    if wf:
        num_ops = sum(len(comms_of(a)) for acts in schedule.actions for a in acts)
        props = [PropertyResult(PropertyId.WELL_FORMED, Status.FAILS, tuple(wf), "static")]
        props += [PropertyResult(p, Status.NOT_CHECKED) for p in list(PropertyId)[1:]]
        return result(Verdict.REFUTED, "none", props, None, None, (), "", 0.0, 0.0, 0, {}, ())
    say("static properties")
    static = properties.static_properties(schedule, memory_limit, activation_bytes)
    num_ops = tables_of(schedule).num_ops
    peaks = properties.peaks(schedule, activation_bytes)
    # the properties Z3 states besides deadlock-freedom (3, 4, 6, 7; memory
    # only in activation units)
    static_fail = {p for p, v in static.items() if v and p is not PropertyId.EXACTLY_ONCE
                   and not (p is PropertyId.MEMORY and activation_bytes is not None)}

    chosen = engine
    graph = None
    t_engine = time.perf_counter()
    if engine == "auto":
        chosen = "graph"
        # A refutation needs no proof: when a static check fails or the graph
        # engine finds a deadlock, they decide (the certificate checker
        # replays the cycle below) without importing Z3 or waiting for its
        # minimised unsat core; Z3 proves only what they find deadlock-free.
        say("graph engine")
        graph = hbgraph.decide(schedule, comm_model)
        if graph.witness is not None and not any(static.values()):
            budget = {"timeout_ms": z3_timeout_ms or AUTO_Z3_TIMEOUT_MS}
            if z3_rlimit is not None:
                budget["rlimit"] = z3_rlimit
            if z3budget.fits_budget(schedule, **budget):
                chosen = "z3"

    witness = None
    cycle = None
    dl_status = Status.HOLDS
    dl_viol: tuple[Violation, ...] = ()
    dl_by = chosen
    notes: list[Violation] = []  # disagreements, attached to deadlock-free
    engine_note = ""
    num_events = 0
    z3_stats: Mapping[str, object] = {}
    core: tuple[str, ...] = ()

    if chosen in ("graph", "both"):
        if graph is None:
            say("graph engine")
            graph = hbgraph.decide(schedule, comm_model)
        num_events = graph.num_events

    if chosen in ("z3", "both"):
        say("z3 engine")
        from verifier.check import z3engine  # deferred: importing z3 costs ~0.2 s; graph-only runs never pay it

        kw = {}
        if z3_timeout_ms is not None:
            kw["timeout_ms"] = z3_timeout_ms
        elif engine == "auto":
            kw["timeout_ms"] = AUTO_Z3_TIMEOUT_MS
        if z3_rlimit is not None:
            kw["rlimit"] = z3_rlimit
        # activations are whole units: "peak <= 2.5" is "peak <= 2" for the integer encoding
        z3_limit = (None if memory_limit is None or activation_bytes is not None
                    else int(math.floor(memory_limit)))
        try:
            z3o = z3engine.decide(schedule, comm_model, memory_limit=z3_limit, **kw)
        except Exception as e:  # a bug in the encoding must not pass, nor show a traceback
            z3o = _Z3Failure(f"z3 engine error: {type(e).__name__}: {e}")
        z3_stats = dict(getattr(z3o, "stats", {}) or {})
        core = tuple(getattr(z3o, "core", ()) or ())
        # Z3 states properties 3-7 at once; the static checks decide 3, 4, 6
        # and 7 on their own, so hold them against Z3's answer.
        z3_failed = {PropertyId(p) for p in (z3o.failed_properties or ())}
        if z3o.status == "unknown" and engine == "auto":
            # auto: Z3 gave up within its budget; the graph engine decides (a
            # complete procedure whose certificate is validated below)
            engine_note = f"z3 gave up ({z3o.reason or 'unknown'}); decided by the graph engine"
            chosen = dl_by = "graph"
        elif z3o.status == "unknown":
            dl_status = Status.UNKNOWN
            dl_viol = (Violation(PropertyId.DEADLOCK_FREE, "solver-unknown", (), (("detail", z3o.reason or "unknown"),)),)
        elif z3o.status == "sat":
            if static_fail:
                notes.append(_disagree(
                    "z3 finds every property holds, the static checks find "
                    + ", ".join(p.value for p in sorted(static_fail)) + " failing"))
            witness = tuple(tuple(x) for x in z3o.order)
        else:
            if not z3_failed - {PropertyId.DEADLOCK_FREE} <= static_fail:
                notes.append(_disagree(
                    "z3's core names " + ", ".join(p.value for p in sorted(z3_failed))
                    + " but the static checks find "
                    + (", ".join(p.value for p in sorted(static_fail)) or "nothing") + " failing"))
            if PropertyId.DEADLOCK_FREE in z3_failed:
                dl_status = Status.FAILS
            elif static_fail:
                # Z3's core stops at a failing static property (an unmatched op
                # or a missing producer makes its system unsatisfiable on its
                # own): deadlock-freedom is then decided by the graph engine.
                dl_by = "graph"
            else:
                notes.append(_disagree("z3 reports unsat without naming a failing property"))
        if graph is None and (dl_by == "graph" or dl_status is Status.FAILS):
            graph = hbgraph.decide(schedule, comm_model)
            num_events = graph.num_events
        elif dl_by == "graph" and graph is not None:
            num_events = graph.num_events
        if (chosen != "both" and dl_by != "graph" and dl_status is Status.FAILS
                and graph.witness is not None):
            notes.append(_disagree("z3 finds a deadlock, the graph engine a witness"))
        if chosen == "both" and z3o.status != "unknown" and dl_by != "graph":
            g_ok = graph.witness is not None
            z_ok = z3o.status == "sat" or PropertyId.DEADLOCK_FREE not in z3_failed
            if g_ok != z_ok:
                notes.append(_disagree(
                    f"graph says {'deadlock-free' if g_ok else 'deadlock'}, "
                    f"z3 says {'deadlock-free' if z_ok else 'deadlock'}"))
    if graph is not None and (chosen == "graph" or dl_by == "graph" or dl_status is Status.FAILS
                              or chosen == "both"):
        if graph.witness is not None:
            if chosen in ("graph",) or dl_by == "graph":
                witness = graph.witness
        else:
            dl_status = Status.FAILS
            cycle = graph.cycle
            dl_viol = (graph.violation,)
            witness = None
    if notes:
        dl_status = Status.UNKNOWN
        dl_viol = dl_viol + tuple(notes)
        witness = None
    engine_seconds = time.perf_counter() - t_engine
    # the index is not needed past this point: free it now, while the cyclic
    # collector is paused, rather than keep it until the next schedule
    forget_tables()

    cert_note = ""
    t_cert = time.perf_counter()
    if validate_certificate and (witness is not None or cycle is not None):
        say("certificate")

        if witness is not None:
            ok, why = certificate.check_witness(schedule, comm_model, witness)
        else:
            ok, why = certificate.check_deadlock(schedule, comm_model, cycle)
        if ok:
            cert_note = "accepted"
        else:
            cert_note = f"rejected: {why}"
            dl_status = Status.UNKNOWN
            dl_viol = dl_viol + (
                Violation(
                    PropertyId.DEADLOCK_FREE,
                    "certificate-rejected",
                    (),
                    (("engine", dl_by), ("detail", why)),
                ),
            )
            witness = None
    cert_seconds = time.perf_counter() - t_cert

    # static counterexamples are re-derived by the certificate checker too
    rejected: dict[PropertyId, list[Violation]] = {}
    if validate_certificate and any(static.values()):
        for v, why in certificate.check_violations(schedule, [v for vs in static.values() for v in vs]):
            rejected.setdefault(v.property, []).append(
                Violation(v.property, "certificate-rejected", v.locations,
                          (("engine", "static"), ("detail", f"{v.message}: {why}"))))
    props = [PropertyResult(PropertyId.WELL_FORMED, Status.HOLDS, (), "static")]
    for pid in list(PropertyId)[1:]:
        if pid is PropertyId.DEADLOCK_FREE:
            props.append(PropertyResult(pid, dl_status, dl_viol, dl_by))
        elif pid in rejected:
            props.append(PropertyResult(pid, Status.UNKNOWN, tuple(static[pid]) + tuple(rejected[pid]), "static"))
        else:
            v = static.get(pid, ())
            props.append(PropertyResult(pid, Status.FAILS if v else Status.HOLDS, tuple(v), "static"))
    verdict = _verdict(props)
    return result(verdict, chosen, props, witness, cycle, peaks, cert_note, engine_seconds,
                  cert_seconds, num_events, z3_stats, core)


@dataclass(frozen=True)
class _Z3Failure:
    """Stands in for a Z3Outcome when the engine raised: an unknown, with why."""

    reason: str
    status: str = "unknown"
    order: None = None
    core: tuple = ()
    failed_properties: tuple = ()
    stats: Mapping[str, object] = field(default_factory=dict)


def _disagree(detail: str) -> Violation:
    return Violation(PropertyId.DEADLOCK_FREE, "engine-disagree", (), (("detail", detail),))


__all__ = [
    "COMM_MODELS",
    "ENGINES",
    "CheckResult",
    "Event",
    "EventKind",
    "Hop",
    "PropertyId",
    "PropertyResult",
    "Stats",
    "Status",
    "Verdict",
    "Violation",
    "WaitCycle",
    "check",
]

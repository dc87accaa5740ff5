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
   which engines run and which models each decides is the data ``RUNS`` and
   ``ENGINE_MODELS``: no verdict under a model an engine does not decide;
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
from verifier.ir import Schedule, ScheduleError, comms_of
from verifier.semantics import comm
from verifier.semantics.lowering import lower
from verifier.semantics.lowering_torch import LOWERINGS, torch_lower
from verifier.semantics.tables import forget as forget_tables, tables_of
from verifier.results.check import (
    TEMPLATES,
    Certificate,
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
COMM_MODELS = comm.NAMES  # every model check takes (the registry's names)

# Which engine decides deadlock-freedom, as data: the engines each --engine
# value runs ("z3?": auto runs Z3 only to prove what the graph engine found
# deadlock-free, within its budget), and the models each engine decides (no
# verdict under a model an engine did not decide).
RUNS: Mapping[str, tuple[str, ...]] = {
    "graph": ("graph",), "z3": ("z3",), "both": ("graph", "z3"), "auto": ("graph", "z3?")}
ENGINE_MODELS: Mapping[str, tuple[str, ...]] = {"graph": comm.NAMES, "z3": z3budget.Z3_MODELS}
# the models the independent certificate checker implements (its own list)
_CERT_MODELS: tuple[str, ...] = tuple(certificate.MODELS)


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
    lowering: str = "ppverify",
) -> CheckResult:
    """Decide the seven properties of ``schedule`` under ``comm_model``.

    ``engine``: auto | graph | z3 | both (module docstring). ``progress``: an
    optional callable taking one short line, called between phases.
    ``activation_bytes``: bytes of each stage's activation for one micro-batch
    (``verifier.format.units``); with it peaks and ``memory_limit`` are in bytes, and
    memory is decided by the static check alone (it is exact: program order).
    ``lowering``: how a compute-only schedule gets its communication: "ppverify"
    (verifier.semantics.lowering) or "torch" (what torch.distributed.pipelining's
    runtime posts, verifier.semantics.lowering_torch; a schedule that already
    has communication is then refused).
    Raises ScheduleError for a bad comm_model, engine or memory_limit, and for
    an engine that does not decide that model.
    """
    _check_arguments(comm_model, engine, memory_limit)
    if lowering not in LOWERINGS:
        raise ScheduleError(f"unknown lowering {lowering!r}; choose one of {', '.join(LOWERINGS)}",
                            "lowering")
    if lowering == "torch":
        schedule_with_comm = torch_lower(schedule)  # ScheduleError where torch's rule does not apply
    with paused_gc():
        return _check(schedule, comm_model, engine, memory_limit, validate_certificate,
                      z3_timeout_ms, z3_rlimit, progress, activation_bytes,
                      None if lowering != "torch" else schedule_with_comm)


def _check_arguments(comm_model, engine, memory_limit) -> None:
    if comm_model not in COMM_MODELS:
        raise ScheduleError(
            f"unknown communication model {comm_model!r}; choose one of {', '.join(COMM_MODELS)}"
        )
    if engine not in ENGINES:
        raise ScheduleError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    for name in RUNS[engine]:
        if not name.endswith("?") and comm_model not in ENGINE_MODELS[name]:
            raise ScheduleError(
                f"--engine {engine}: the {name} engine does not decide the {comm_model} model "
                f"(it decides {', '.join(ENGINE_MODELS[name])}); use --engine graph or auto")
    if memory_limit is not None and not (memory_limit >= 0):
        raise ScheduleError(f"memory limit must be >= 0, got {memory_limit!r}")


@dataclass
class _Run:
    """One check in progress: what the phases below fill in."""

    schedule: Schedule
    comm_model: str
    engine: str
    memory_limit: float | None
    activation_bytes: Mapping[int, float] | None
    say: object
    t0: float
    original: Schedule
    lowered: bool = False
    lowering: str = "ppverify"  # which lowering made ``schedule`` when ``lowered``
    num_ops: int = 0
    chosen: str = "none"
    engine_note: str = ""
    z3_stats: Mapping[str, object] = field(default_factory=dict)
    core: tuple[str, ...] = ()

    def result(self, verdict, props, peaks=(), dl=None, cert=Certificate(), engine_s=0.0,
               cert_s=0.0) -> CheckResult:
        s = self.schedule
        return CheckResult(
            verdict=verdict, comm_model=self.comm_model, engine=self.chosen,
            properties=tuple(props), witness=None if dl is None else dl.witness,
            cycle=None if dl is None else dl.cycle, peaks=tuple(peaks),
            memory_limit=self.memory_limit, lowered=self.lowered, certificate=cert,
            stats=Stats(seconds=time.perf_counter() - self.t0, num_actions=s.num_actions,
                        num_ops=self.num_ops, num_events=0 if dl is None else dl.num_events,
                        engine_seconds=engine_s, certificate_seconds=cert_s, z3=self.z3_stats),
            z3_core=tuple(self.core), engine_note=self.engine_note, schedule=s,
            input_schedule=self.original if self.lowered else None,
            activation_bytes=self.activation_bytes,
            lowering=self.lowering if self.lowered else "",
        )


@dataclass
class _Deadlock:
    """The deadlock-free property as the engines leave it."""

    decided_by: str
    status: Status = Status.HOLDS
    violations: tuple[Violation, ...] = ()
    witness: tuple | None = None
    cycle: WaitCycle | None = None
    num_events: int = 0
    notes: list = field(default_factory=list)  # disagreements


def _check(schedule, comm_model, engine, memory_limit, validate_certificate, z3_timeout_ms,
           z3_rlimit, progress, activation_bytes=None, torch_lowered=None) -> CheckResult:
    run = _Run(schedule, comm_model, engine, memory_limit, activation_bytes,
               progress or (lambda line: None), time.perf_counter(), schedule)
    if torch_lowered is None:
        _lower(run)
    else:
        run.schedule, run.lowered, run.lowering = torch_lowered, True, "torch"
    run.say("well-formed")
    wf = properties.well_formed(run.schedule)
    if wf and run.lowered:
        # name the faults in the input's own steps, not in the lowering's
        wf_input = properties.well_formed(run.original)
        if wf_input:
            run.schedule, wf, run.lowered = run.original, wf_input, False
    if wf:
        run.num_ops = sum(len(comms_of(a)) for acts in run.schedule.actions for a in acts)
        props = [PropertyResult(PropertyId.WELL_FORMED, Status.FAILS, tuple(wf), "static")]
        props += [PropertyResult(p, Status.NOT_CHECKED) for p in list(PropertyId)[1:]]
        return run.result(Verdict.REFUTED, props)
    run.say("static properties")
    s = run.schedule
    static = properties.static_properties(s, memory_limit, activation_bytes)
    run.num_ops = tables_of(s).num_ops
    peaks = properties.peaks(s, activation_bytes)
    t_engine = time.perf_counter()
    dl = _decide(run, static, z3_timeout_ms, z3_rlimit)
    engine_seconds = time.perf_counter() - t_engine
    # the tables are not needed past this point: free them now, while the
    # cyclic collector is paused, rather than keep them until the next schedule
    forget_tables()
    t_cert = time.perf_counter()
    cert = _certify(run, dl) if validate_certificate else Certificate()
    cert_seconds = time.perf_counter() - t_cert
    props = _properties(run, static, dl, validate_certificate)
    return run.result(_verdict(props), props, peaks, dl, cert, engine_seconds, cert_seconds)


def _lower(run: _Run) -> None:
    if run.schedule.is_compute_only and run.schedule.num_actions:
        try:
            run.schedule = lower(run.schedule)
            run.lowered = True
        except (KeyError, IndexError):
            # an action on a stage that is on no route: nothing to lower it
            # by; well-formed reports it below, on the input as written
            pass


def _decide(run: _Run, static, z3_timeout_ms, z3_rlimit) -> _Deadlock:
    """Deadlock-freedom by the engines ``RUNS[run.engine]`` names (see RUNS)."""
    s, model = run.schedule, run.comm_model
    # the properties Z3 states besides deadlock-freedom (3, 4, 6, 7; memory
    # only in activation units)
    static_fail = {p for p, v in static.items() if v and p is not PropertyId.EXACTLY_ONCE
                   and not (p is PropertyId.MEMORY and run.activation_bytes is not None)}
    runs = RUNS[run.engine]
    graph = None
    chosen = run.engine
    if runs[-1] == "z3?":
        # A refutation needs no proof: when a static check fails or the graph
        # engine finds a deadlock, they decide (the certificate checker
        # replays the cycle) without importing Z3 or waiting for its
        # minimised unsat core; Z3 proves only what they find deadlock-free.
        chosen = "graph"
        run.say("graph engine")
        graph = hbgraph.decide(s, model)
        if model not in ENGINE_MODELS["z3"]:
            run.engine_note = f"z3 does not encode the {model} model; decided by the graph engine"
        elif graph.witness is not None and not any(static.values()):
            budget = {"timeout_ms": z3_timeout_ms or AUTO_Z3_TIMEOUT_MS}
            if z3_rlimit is not None:
                budget["rlimit"] = z3_rlimit
            if z3budget.fits_budget(s, **budget):
                chosen = "z3"
    run.chosen = chosen
    dl = _Deadlock(chosen)
    if chosen in ("graph", "both"):
        if graph is None:
            run.say("graph engine")
            graph = hbgraph.decide(s, model)
        dl.num_events = graph.num_events
    if chosen in ("z3", "both"):
        graph = _with_z3(run, dl, graph, static_fail, z3_timeout_ms, z3_rlimit)
    if graph is not None and (run.chosen == "graph" or dl.decided_by == "graph"
                              or dl.status is Status.FAILS or run.chosen == "both"):
        if graph.witness is not None:
            if run.chosen == "graph" or dl.decided_by == "graph":
                dl.witness = graph.witness
        else:
            dl.status, dl.cycle, dl.violations, dl.witness = Status.FAILS, graph.cycle, (graph.violation,), None
    if dl.notes:
        dl.status = Status.UNKNOWN
        dl.violations = dl.violations + tuple(dl.notes)
        dl.witness = None
    return dl


def _with_z3(run: _Run, dl: _Deadlock, graph, static_fail, z3_timeout_ms, z3_rlimit):
    """Run Z3 and hold its answer against the static checks and the graph
    engine; returns the graph engine's outcome (run here if Z3 needs it)."""
    s, model = run.schedule, run.comm_model
    run.say("z3 engine")
    z3o = _run_z3(run, z3_timeout_ms, z3_rlimit)
    run.z3_stats = dict(getattr(z3o, "stats", {}) or {})
    run.core = tuple(getattr(z3o, "core", ()) or ())
    # Z3 states properties 3-7 at once; the static checks decide 3, 4, 6
    # and 7 on their own, so hold them against Z3's answer.
    z3_failed = {PropertyId(p) for p in (z3o.failed_properties or ())}
    if z3o.status == "unknown" and run.engine == "auto":
        # auto: Z3 gave up within its budget; the graph engine decides (a
        # complete procedure whose certificate is validated below)
        run.engine_note = f"z3 gave up ({z3o.reason or 'unknown'}); decided by the graph engine"
        run.chosen = dl.decided_by = "graph"
    elif z3o.status == "unknown":
        dl.status = Status.UNKNOWN
        dl.violations = (Violation(PropertyId.DEADLOCK_FREE, "solver-unknown", (),
                                   (("detail", z3o.reason or "unknown"),)),)
    elif z3o.status == "sat":
        if static_fail:
            dl.notes.append(_disagree(
                "z3 finds every property holds, the static checks find "
                + ", ".join(p.value for p in sorted(static_fail)) + " failing"))
        dl.witness = tuple(tuple(x) for x in z3o.order)
    else:
        if not z3_failed - {PropertyId.DEADLOCK_FREE} <= static_fail:
            dl.notes.append(_disagree(
                "z3's core names " + ", ".join(p.value for p in sorted(z3_failed))
                + " but the static checks find "
                + (", ".join(p.value for p in sorted(static_fail)) or "nothing") + " failing"))
        if PropertyId.DEADLOCK_FREE in z3_failed:
            dl.status = Status.FAILS
        elif static_fail:
            # Z3's core stops at a failing static property (an unmatched op
            # or a missing producer makes its system unsatisfiable on its
            # own): deadlock-freedom is then decided by the graph engine.
            dl.decided_by = "graph"
        else:
            dl.notes.append(_disagree("z3 reports unsat without naming a failing property"))
    if graph is None and (dl.decided_by == "graph" or dl.status is Status.FAILS):
        graph = hbgraph.decide(s, model)
        dl.num_events = graph.num_events
    elif dl.decided_by == "graph" and graph is not None:
        dl.num_events = graph.num_events
    if (run.chosen != "both" and dl.decided_by != "graph" and dl.status is Status.FAILS
            and graph.witness is not None):
        dl.notes.append(_disagree("z3 finds a deadlock, the graph engine a witness"))
    if run.chosen == "both" and z3o.status != "unknown" and dl.decided_by != "graph":
        g_ok = graph.witness is not None
        z_ok = z3o.status == "sat" or PropertyId.DEADLOCK_FREE not in z3_failed
        if g_ok != z_ok:
            dl.notes.append(_disagree(
                f"graph says {'deadlock-free' if g_ok else 'deadlock'}, "
                f"z3 says {'deadlock-free' if z_ok else 'deadlock'}"))
    return graph


def _run_z3(run: _Run, z3_timeout_ms, z3_rlimit):
    from verifier.check import z3engine  # deferred: importing z3 costs ~0.2 s; graph-only runs never pay it

    kw = {}
    if z3_timeout_ms is not None:
        kw["timeout_ms"] = z3_timeout_ms
    elif run.engine == "auto":
        kw["timeout_ms"] = AUTO_Z3_TIMEOUT_MS
    if z3_rlimit is not None:
        kw["rlimit"] = z3_rlimit
    # activations are whole units: "peak <= 2.5" is "peak <= 2" for the integer encoding
    limit = run.memory_limit
    z3_limit = None if limit is None or run.activation_bytes is not None else int(math.floor(limit))
    try:
        return z3engine.decide(run.schedule, run.comm_model, memory_limit=z3_limit, **kw)
    except Exception as e:  # a bug in the encoding must not pass, nor show a traceback
        return _Z3Failure(f"z3 engine error: {type(e).__name__}: {e}")


def _certify(run: _Run, dl: _Deadlock) -> Certificate:
    """The independent certificate checker on the witness or the cycle; a
    rejected certificate makes deadlock-free UNKNOWN."""
    if dl.witness is None and dl.cycle is None:
        return Certificate()
    run.say("certificate")
    s, model = run.schedule, run.comm_model
    if model not in _CERT_MODELS:
        ok, why = False, f"the certificate checker does not implement the {model} model"
    elif dl.witness is not None:
        ok, why = certificate.check_witness(s, model, dl.witness)
    else:
        ok, why = certificate.check_deadlock(s, model, dl.cycle)
    if ok:
        return Certificate(True, True)
    dl.status = Status.UNKNOWN
    dl.violations = dl.violations + (
        Violation(PropertyId.DEADLOCK_FREE, "certificate-rejected", (),
                  (("engine", dl.decided_by), ("detail", why))),)
    dl.witness = None
    return Certificate(True, False, why)


def _properties(run: _Run, static, dl: _Deadlock, validate_certificate: bool) -> list[PropertyResult]:
    """Every property's result; static counterexamples are re-derived by the
    certificate checker too (a rejected one makes its property UNKNOWN)."""
    rejected: dict[PropertyId, list[Violation]] = {}
    if validate_certificate and any(static.values()):
        for v, why in certificate.check_violations(run.schedule, [v for vs in static.values() for v in vs]):
            rejected.setdefault(v.property, []).append(
                Violation(v.property, "certificate-rejected", v.locations,
                          (("engine", "static"), ("detail", f"{v.message}: {why}"))))
    props = [PropertyResult(PropertyId.WELL_FORMED, Status.HOLDS, (), "static")]
    for pid in list(PropertyId)[1:]:
        if pid is PropertyId.DEADLOCK_FREE:
            props.append(PropertyResult(pid, dl.status, dl.violations, dl.decided_by))
        elif pid in rejected:
            props.append(PropertyResult(pid, Status.UNKNOWN, tuple(static[pid]) + tuple(rejected[pid]), "static"))
        else:
            v = static.get(pid, ())
            props.append(PropertyResult(pid, Status.FAILS if v else Status.HOLDS, tuple(v), "static"))
    return props


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
    "Certificate",
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

"""`python -m verifier check --comm-model all`: one row per communication model.

What it is: ``check_all`` runs ``verifier.check.checker.check`` once per model
of ``verifier.semantics.comm.MODELS`` (strictest first) and ``render_all`` /
``all_json`` write one row a model (terminates / deadlocks / unknown, who
decided, the cycle of waits of each that deadlocks) and, for a schedule that
deadlocks under some model, under which models it would still terminate and
what that means on a real runtime (``advice``). specs/check-output.md
describes both outputs.

Rules: a model's row is that model's own decision, never inferred from
another's; a model not decided (UNKNOWN) says so and is left out of the
advice. Results that break the order of SEMANTICS.md (deadlock-free under a
stricter model, deadlock under a weaker) are reported as an engine fault,
and the exit code is then 3. With ``--engine z3`` or ``both``, a model the Z3
encoding does not take, or an instance too large for Z3's budget, is decided
by the graph engine and its row says so.

What it does not cover: the single-model output (``verifier.cli.check_text``,
``verifier.cli.check_json``), deciding anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.check import checker, z3budget
from verifier.check.checker import CheckResult, PropertyId, Status, Verdict, check
from verifier.check.grouping import batch_grouping
from verifier.cli.check_json import OUTPUT_VERSION, to_json
from verifier.cli.check_text import hop_lines, render_text
from verifier.format.origin import Origin
from verifier.semantics.comm import MODELS, NAMES, implies


@dataclass(frozen=True)
class ModelRow:
    """One model's outcome: ``terminates`` is None when not decided."""

    model: str
    result: CheckResult
    engine_note: str  # why this model ran on another engine than asked, or ""

    @property
    def terminates(self) -> bool | None:
        st = self.result.result_of(PropertyId.DEADLOCK_FREE).status
        return {Status.HOLDS: True, Status.FAILS: False}.get(st)

    @property
    def outcome(self) -> str:
        t = self.terminates
        if t is None:
            st = self.result.result_of(PropertyId.DEADLOCK_FREE).status
            return "not checked" if st is Status.NOT_CHECKED else "unknown"
        return "terminates" if t else "deadlocks"


def _engine_for(model: str, engine: str, schedule, z3_timeout_ms, z3_rlimit) -> tuple[str, str]:
    """The engine to run ``model`` with, and a note when it is not ``engine``."""
    if engine in ("auto", "graph"):
        return engine, ""
    if model not in checker.ENGINE_MODELS["z3"]:
        return "graph", f"the Z3 encoding does not take {model}: decided by the graph engine"
    budget = {} if z3_timeout_ms is None else {"timeout_ms": z3_timeout_ms}
    if z3_rlimit is not None:
        budget["rlimit"] = z3_rlimit
    if not z3budget.fits_budget(schedule, **budget):
        return "graph", "too large for Z3's budget: decided by the graph engine"
    return engine, ""


def check_all(schedule, engine: str = "auto", **kw) -> list[ModelRow]:
    """``check`` under every model, strictest first (keyword args as ``check``)."""
    rows = []
    for m in NAMES:
        eng, note = _engine_for(m, engine, schedule, kw.get("z3_timeout_ms"), kw.get("z3_rlimit"))
        rows.append(ModelRow(m, check(schedule, comm_model=m, engine=eng, **kw), note))
    return rows


def order_faults(rows: list[ModelRow]) -> list[str]:
    """Pairs of decided rows that contradict SEMANTICS.md's order."""
    out = []
    for a in rows:
        for b in rows:
            if a.model != b.model and implies(a.model, b.model) and a.terminates and b.terminates is False:
                out.append(f"terminates under {a.model} but deadlocks under {b.model}, "
                           f"though {a.model} is the stricter model")
    return out


def exit_code(rows: list[ModelRow]) -> int:
    """1 if any model refutes, else 3 if any is unknown or the order is broken, else 0."""
    verdicts = {r.result.verdict for r in rows}
    if order_faults(rows):
        return Verdict.UNKNOWN.exit_code
    for v in (Verdict.REFUTED, Verdict.UNKNOWN):
        if v in verdicts:
            return v.exit_code
    return Verdict.VERIFIED.exit_code


# what a model stands for on a real runtime (SEMANTICS.md "Which model a runtime needs")
_PASSES = {
    "nccl": "NCCL with eager init (init_process_group(device_id=...))",
    "nccl-pairs": "NCCL with lazy init (no device_id)",
    "gloo": "gloo",
    "eager": "tests with small tensors",
}
_HANGS = {
    "nccl": "NCCL at production message sizes with eager init (init_process_group(device_id=...))",
    "nccl-pairs": "NCCL at production message sizes with lazy init (no device_id)",
    "gloo": "gloo",
    "eager": "even tests with small tensors",
}


def _runtimes(models: list[str], words: dict[str, str]) -> str:
    if "nccl" in models and "nccl-pairs" in models:  # one phrase for both initialisations
        rest = [words[m] for m in models if m not in ("nccl", "nccl-pairs")]
        nccl = ("NCCL at production message sizes (eager or lazy init)" if words is _HANGS
                else "NCCL (eager or lazy init)")
        return ", ".join([nccl, *rest])
    return ", ".join(words[m] for m in models)


def advice(rows: list[ModelRow]) -> str:
    """A sentence a user acts on: where the schedule deadlocks and where it
    still terminates, over the decided models only."""
    dead = [r.model for r in rows if r.terminates is False]
    ok = [r.model for r in rows if r.terminates]
    undecided = [r.model for r in rows if r.terminates is None]
    tail = f" (not decided: {', '.join(undecided)})" if undecided else ""
    if not dead:
        return (f"terminates under {', '.join(ok)}" + tail) if ok else "no model decided" + tail
    if not ok:
        return f"deadlocks under {', '.join(dead)}: it hangs on every runtime{tail}"
    return (f"deadlocks under {', '.join(dead)}, terminates under {', '.join(ok)}: "
            f"{_runtimes(ok, _PASSES)} will pass and {_runtimes(dead, _HANGS)} can hang{tail}")


def render_all(rows: list[ModelRow], source: str = "", origin: Origin | None = None,
               verbose: bool = False, with_witness: bool = False,
               max_counterexamples: int | None = None) -> str:
    """The text output: a table, the advice, then each deadlocking model's
    cycle; the static properties once (they do not depend on the model)."""
    width = max(len(m) for m in NAMES)
    code = exit_code(rows)
    out = [f"deadlock-free under every model (--comm-model all), exit {code}:"]
    for r in rows:
        pr = r.result.result_of(PropertyId.DEADLOCK_FREE)
        by = f"decided by {pr.decided_by}" if pr.decided_by else ""
        note = f"; {r.engine_note}" if r.engine_note else ""
        out.append(f"  {r.model:<{width}}  {r.outcome:<11}  {by}{note}".rstrip())
    out.append(f"summary: {advice(rows)}")
    grouped = _grouping(rows)
    if grouped:
        out.append(f"NCCL grouping: {len(grouped)} pair(s) of BATCHes grouped differently on two "
                   "ranks (NCCL leaves this undefined; not part of any verdict above):")
        out.extend(f"  [{v.property.value}/{v.code}] {v.message if origin is None else origin.rewrite(v.message)}"
                   for v in grouped[:max_counterexamples or len(grouped)])
    for f in order_faults(rows):
        out.append(f"engine fault (exit 3): {f}")
    for r in rows:
        if r.terminates is False and r.result.cycle is not None:
            out.append(f"cycle of waits under {r.model}:")
            out.extend(f"  {i}. {t}" for i, t in enumerate(hop_lines(r.result, origin), 1))
    out.append("")
    out.append(f"full report under {rows[0].model} (the strictest model):")
    out.append(render_text(rows[0].result, verbose=verbose, with_witness=with_witness, source=source,
                           origin=origin, max_counterexamples=max_counterexamples).rstrip("\n"))
    return "\n".join(out) + "\n"


def _grouping(rows: list[ModelRow]):
    """batch-grouping findings of the checked (lowered) schedule; none when it
    is not well-formed (the check needs routes and peers)."""
    r = rows[0].result
    if r.result_of(PropertyId.WELL_FORMED).status is not Status.HOLDS:
        return []
    return batch_grouping(r.schedule)


def all_json(rows: list[ModelRow], source: str = "", origin: Origin | None = None,
             with_witness: bool = False, max_counterexamples: int | None = None) -> dict:
    """The JSON output of ``--comm-model all`` (specs/check-output.md)."""
    code = exit_code(rows)
    return {
        "format": "pp-check",
        "version": OUTPUT_VERSION,
        "comm_model": "all",
        "exit_code": code,
        "summary": advice(rows),
        "order_faults": order_faults(rows),
        "nccl_grouping": [{"code": v.code, "message": v.message,
                           "locations": [list(x) for x in v.locations]} for v in _grouping(rows)],
        "models": [
            {"comm_model": r.model,
             "outcome": r.outcome,
             "terminates": r.terminates,
             "verdict": r.result.verdict.value,
             "decided_by": r.result.result_of(PropertyId.DEADLOCK_FREE).decided_by,
             "engine_note": r.engine_note,
             "summary": MODELS[r.model].summary,
             "report": to_json(r.result, source=source, with_witness=with_witness, origin=origin,
                               max_counterexamples=max_counterexamples)}
            for r in rows
        ],
    }

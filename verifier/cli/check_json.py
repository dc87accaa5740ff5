"""The JSON output of `python -m verifier check` (specs/check-output.md):
``to_json``, one pp-check document.

What it does not cover: the text output (``verifier.cli.check_text``), the
per-model rows of ``--comm-model all`` (``verifier.cli.check_models``).
"""

from __future__ import annotations

from verifier.check.checker import CheckResult, Event, EventKind, Violation
from verifier.cli.check_text import hop_text, input_notes, user_message
from verifier.format.origin import Origin

OUTPUT_VERSION = "1.0"


def _jsonable(x):
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(y) for y in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return str(x)


def _violation_json(v: Violation, origin: Origin | None = None) -> dict:
    d = {
        "property": v.property.value,
        "code": v.code,
        "message": v.message,
        "locations": [list(x) for x in v.locations],
        "args": {k: _jsonable(val) for k, val in v.args},
    }
    if origin is not None:
        d["user_message"] = user_message(v, origin)
        d["user_locations"] = [origin.place(r, k).to_json() for r, k in v.locations]
    return d


def _event_json(e: Event, origin: Origin | None = None) -> dict:
    d = {"kind": e.kind.value}
    if e.kind is not EventKind.NEVER:
        d.update(rank=e.rank, step=e.step)
        if e.sub is not None:
            d["sub"] = e.sub
        d["action"] = e.text
        if e.peer is not None:
            d["peer"] = {"rank": e.peer[0], "step": e.peer[1], "sub": e.peer[2], "action": e.peer_text}
            if origin is not None:
                d["peer"]["user_place"] = origin.place(*e.peer).to_json()
        if origin is not None:
            d["user_place"] = origin.place(e.rank, e.step, e.sub).to_json()
    return d


def _capped(viols, cap: int | None) -> tuple[list, int]:
    viols = list(viols)
    if cap is None or len(viols) <= cap:
        return viols, 0
    return viols[:cap], len(viols) - cap


def to_json(result: CheckResult, source: str = "", with_witness: bool = False,
            origin: Origin | None = None, max_counterexamples: int | None = None) -> dict:
    """The JSON output (specs/check-output.md); ``origin`` adds the user's
    coordinates (``user_message``, ``user_locations``, ``user_place``); at most
    ``max_counterexamples`` counterexamples in the list and in each property's
    violations (the rest counted: "counterexamples_omitted", "violations_omitted")."""
    s = result.schedule
    shown, omitted = _capped(result.violations, max_counterexamples)
    per_prop = {pr.property: _capped(pr.violations, max_counterexamples)
                for pr in result.properties}
    cyc = None
    if result.cycle is not None:
        cyc = {
            "closed": result.cycle.closed,
            "hops": [
                {"waiter": _event_json(h.waiter, origin), "target": _event_json(h.target, origin),
                 "text": hop_text(h),
                 **({} if origin is None else {"user_text": origin.rewrite(hop_text(h))})}
                for h in result.cycle.hops
            ],
        }
    st = result.stats
    doc = {
        "format": "pp-check",
        "version": OUTPUT_VERSION,
        "verdict": result.verdict.value,
        "exit_code": result.verdict.exit_code,
        "comm_model": result.comm_model,
        "engine": result.engine,
        "engine_note": result.engine_note,
        "notes": input_notes(s),
        "schedule": {
            "source": source,
            "name": s.name,
            "family": s.family,
            "num_ranks": s.num_ranks,
            "num_microbatches": s.num_microbatches,
            "num_steps": s.num_actions,
            "lowered": result.lowered,
            **({"lowering": result.lowering} if result.lowered else {}),
            **({} if origin is None else {"input_form": origin.form}),
        },
        "properties": {
            pr.property.value: {
                "status": pr.status.value,
                "decided_by": pr.decided_by,
                "violations": [_violation_json(v, origin) for v in per_prop[pr.property][0]],
                "violations_omitted": per_prop[pr.property][1],
            }
            for pr in result.properties
        },
        "counterexamples": [_violation_json(v, origin) for v in shown],
        "counterexamples_total": len(result.violations),
        "counterexamples_omitted": omitted,
        "cycle": cyc,
        "memory": {"peaks": [_jsonable(p) for p in result.peaks], "limit": result.memory_limit,
                   "unit": "activations" if result.activation_bytes is None else "bytes",
                   **({} if result.activation_bytes is None else
                      {"activation_bytes": {str(k): v for k, v in sorted(result.activation_bytes.items())}})},
        "certificate": str(result.certificate),
        "z3_core": list(result.z3_core),
        "stats": {
            "seconds": round(st.seconds, 6),
            "engine_seconds": round(st.engine_seconds, 6),
            "certificate_seconds": round(st.certificate_seconds, 6),
            "num_actions": st.num_actions,
            "num_ops": st.num_ops,
            "num_events": st.num_events,
            "z3": _jsonable(dict(st.z3)),
        },
    }
    if with_witness:
        doc["witness"] = None if result.witness is None else [list(x) for x in result.witness]
    return doc

"""`python -m verifier check PROGRAM.json`: a recorded program's verdict, as text or JSON.

What it is: the rendering of ``verifier.check.program.check_program`` for the
``check`` command (``verifier.cli.check`` hands a file whose "kind" is
"program" here): the same contract as a schedule's check (properties by id,
VERIFIED/REFUTED, exit codes 0/1/2, ``--format json``), counterexamples in the
user's file and line, one row per communication model, and notes on how the
recorded run ended. specs/check-output.md describes both outputs.

What it does not cover: deciding (``verifier.check.program``); schedules
(``verifier.cli.check``).
"""

from __future__ import annotations

import argparse
import json
from typing import IO

from verifier.check.program import check_program
from verifier.errors import FlagError
from verifier.format import guard
from verifier.program import Program
from verifier.results.check import Status
from verifier.results.program import Blocked, ProgramCheckResult, ProgramProperty

OUTPUT_VERSION = "1.0"
# the codes of a deadlock-free that is UNKNOWN (printed under "why unknown:", not as counterexamples)
UNKNOWN_CODES = ("solver-unknown", "engine-disagree", "certificate-rejected")


def run_program(args: argparse.Namespace, program: Program, stdout: IO[str], source: str) -> int:
    """``check`` on a loaded program: flags that only mean something for a
    schedule are refused (exit 2), the rest as for a schedule."""
    for flag, value in (("--memory-limit", getattr(args, "memory_limit", None)),
                        ("--activation-bytes", getattr(args, "activation_bytes", None)),
                        ("--lowering", None if getattr(args, "lowering", "ppverify") == "ppverify"
                         else args.lowering)):
        if value is not None:
            raise FlagError("applies to schedules (stages and activations); a recorded program "
                            "has neither", flag)
    timeout = getattr(args, "timeout", None)
    with guard.naming(source):
        result = check_program(program, comm_model=args.comm_model, engine=getattr(args, "engine", "auto"),
                               z3_timeout_ms=None if timeout is None else max(1, int(timeout * 1000)),
                               z3_rlimit=getattr(args, "rlimit", None))
    cap = guard.limits_of(args).max_counterexamples
    if args.format == "json":
        stdout.write(json.dumps(program_json(result, source, cap), indent=1) + "\n")
    else:
        stdout.write(render_program(result, source, cap, verbose=getattr(args, "verbose", False)))
    return result.verdict.exit_code


def _hop(i: int, h: Blocked) -> str:
    pl = h.place
    return f"{i}. rank {pl.rank} blocks in {pl.where} {pl.phrase} (op {pl.op}): {h.reason}"


def _describe(p: Program, source: str) -> str:
    rec = p.recorded or {}
    run = f", recorded run {p.outcome}"
    if rec.get("backend_used"):
        run += f" on {rec['backend_used']}"
    name = guard.printable(p.name or source or "(unnamed)")
    return f"program: {name}, {p.num_ranks} ranks, {p.num_ops} ops{run}"


def render_program(result: ProgramCheckResult, source: str = "", max_counterexamples: int | None = None,
                   verbose: bool = False) -> str:
    out = [f"{result.verdict.value} under {result.comm_model} (engine: {result.engine})",
           _describe(result.program, source)]
    out.extend(f"note: {guard.printable(n)}" for n in result.notes)
    width = max(len(p.value) for p in ProgramProperty)
    for pr in result.properties:
        st = "FAILS" if pr.status is Status.FAILS else pr.status.value
        n = len(pr.violations)
        detail = f"{n} counterexample{'s' if n != 1 else ''}" if n else ""
        out.append(f"  {pr.property.value:<{width}}  {st:<11}  {detail}".rstrip())
    out.append("models:")
    mw = max(len(m.model) for m in result.models)
    for m in result.models:
        word = "terminates" if m.terminates else "deadlocks "
        why = f"(implied: terminates under the stricter {m.implied_by})" if m.implied_by else m.summary
        out.append(f"  {m.model:<{mw}}  {word}  {guard.printable(why)}".rstrip())
    viols = [v for v in result.violations if v.code not in UNKNOWN_CODES]
    why = [v for v in result.violations if v.code in UNKNOWN_CODES]
    if why:
        out.append("why unknown:")
        out.extend(f"  [{v.property.value}] {guard.printable(v.message)}" for v in why)
    left = 0
    if max_counterexamples is not None and len(viols) > max_counterexamples:
        left, viols = len(viols) - max_counterexamples, viols[:max_counterexamples]
    if viols:
        out.append("counterexamples:")
        for v in viols:
            out.append(f"  [{v.property.value}] {guard.printable(v.message)}")
            if v.property is ProgramProperty.DEADLOCK_FREE:
                o = result.outcome(v.model)
                for i, h in enumerate(o.hops, 1):
                    out.append(f"    {guard.printable(_hop(i, h))}")
                if o.closed:
                    out.append(f"    (and hop 1 again: a cycle of {len(o.hops)} waits)")
                named = {(h.place.rank, h.place.op) for h in o.hops}
                rest = [b for b in o.blocked if (b.place.rank, b.place.op) not in named]
                if rest:
                    out.append("    also blocked: " + "; ".join(
                        guard.printable(f"rank {b.place.rank} in {b.place.where} {b.place.phrase} (op {b.place.op})")
                        for b in rest))
        if left:
            out.append(f"  ... and {left} more counterexample{'s' if left != 1 else ''} "
                       "(--max-counterexamples N prints more)")
    if verbose:
        out.append(f"stats: {result.seconds:.3f} s, {result.program.num_ops} ops, "
                   + ", ".join(f"{m.model} implied by {m.implied_by}" if m.implied_by else
                               f"{m.model} {m.num_events} events" for m in result.models))
        if result.certificate:
            out.append(f"certificate: {guard.printable(result.certificate)}")
        if result.z3:
            out.append("z3: " + ", ".join(f"{m} {z.get('num_events', 0)} events "
                                          f"{z.get('solve_seconds', 0):.3f} s" for m, z in result.z3.items()))
    return "\n".join(out) + "\n"


def _place_json(pl) -> dict:
    d = {"rank": pl.rank, "op": pl.op, "file": pl.where.file, "line": pl.where.line,
         "function": pl.where.function, "call": pl.phrase}
    if pl.sub is not None:
        d["entry"] = pl.sub
    return d


def _blocked_json(b: Blocked) -> dict:
    return {**_place_json(b.place), "reason": b.reason}


def program_json(result: ProgramCheckResult, source: str = "", max_counterexamples: int | None = None) -> dict:
    p = result.program
    viols = list(result.violations)
    shown = viols if max_counterexamples is None else viols[:max_counterexamples]
    return {
        "format": "pp-check",
        "version": OUTPUT_VERSION,
        "kind": "program",
        "verdict": result.verdict.value,
        "exit_code": result.verdict.exit_code,
        "comm_model": result.comm_model,
        "engine": result.engine,
        "notes": list(result.notes),
        "program": {"source": source, "name": p.name, "num_ranks": p.num_ranks, "num_ops": p.num_ops,
                    "outcome": p.outcome, "recorded": p.recorded},
        "properties": {
            pr.property.value: {
                "status": pr.status.value, "decided_by": pr.decided_by,
                "violations": [{"code": v.code, "message": v.message,
                                "places": [_place_json(x) for x in v.places]} for v in pr.violations],
            } for pr in result.properties
        },
        "counterexamples": [{"property": v.property.value, "code": v.code, "message": v.message,
                             **({"model": v.model} if v.model else {}),
                             "places": [_place_json(x) for x in v.places]} for v in shown],
        "counterexamples_total": len(viols),
        "counterexamples_omitted": len(viols) - len(shown),
        "models": [{"model": m.model, "terminates": m.terminates, "summary": m.summary,
                    "closed": m.closed, "hops": [_blocked_json(h) for h in m.hops],
                    "blocked": [_blocked_json(b) for b in m.blocked],
                    **({"implied_by": m.implied_by} if m.implied_by else {})} for m in result.models],
        "certificate": result.certificate,
        "stats": {"seconds": round(result.seconds, 6), "num_ops": p.num_ops,
                  "events": {m.model: m.num_events for m in result.models},
                  **({"z3": result.z3} if result.z3 else {})},
    }

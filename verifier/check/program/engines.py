"""Who decides a program's ``deadlock-free``, and the second opinion on it.

``decide_deadlock`` takes the replay's outcome per model (``verifier.check.program.replay``,
always run: it is linear and its final state is what the explanation in the
user's terms reads) and, as ``engine`` says:

- ``auto`` / ``graph``: the replay decides (output ``engine: replay``);
- ``z3``: the Z3 engine (``verifier.check.program.encoding``, solved by
  ``verifier.check.z3engine.decide_program``) decides every model replayed; its
  answer must be the replay's state, whose explanation is printed, else the
  verdict is UNKNOWN (``engine-disagree``); a solver limit is UNKNOWN
  (``solver-unknown``), never a pass;
- ``both``: both decide, and any disagreement is UNKNOWN, saying so.

Every certificate of a model the verdict is about (the replay's, and z3's
where it ran) is validated by ``verifier.check.certificate.program``; a
rejected one makes ``deadlock-free`` UNKNOWN (``certificate-rejected``).

What it does not cover: the static properties and the verdict
(``verifier.check.program``), the explanation (``verifier.check.program.explain``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.check.certificate.program import check_program_certificate
from verifier.check.program.plan import Plan
from verifier.program import Program
from verifier.results.program import ModelOutcome, ProgramCertificate, ProgramProperty, ProgramViolation

ENGINES = ("auto", "graph", "z3", "both")
# what the output's "engine" says for each --engine value
ENGINE_LABEL = {"auto": "replay", "graph": "replay", "z3": "z3", "both": "both"}


@dataclass
class DeadlockDecision:
    """``unknown``: the violations that make ``deadlock-free`` UNKNOWN (empty: the
    replay's and z3's answers stand); ``certificate``: "accepted",
    "rejected: ...", or "" (none checked); ``z3``: z3's statistics per model."""

    engine: str
    decided_by: str
    unknown: list[ProgramViolation] = field(default_factory=list)
    certificate: str = ""
    z3: dict = field(default_factory=dict)


def answer_of(c: ProgramCertificate | None):
    """What a certificate says, comparable across engines: terminates, or the
    state it stops in (a witness order may differ between engines)."""
    if c is None:
        return None
    if c.terminates:
        return (True,)
    return (False, c.stops, frozenset(c.pending), frozenset((r, frozenset(n)) for r, n in c.waits))


def _words(c: ProgramCertificate) -> str:
    if c.terminates:
        return "terminates"
    stuck = [f"rank {r} at op {c.stops[r]}" for r, _need in c.waits if r < len(c.stops)]
    return "deadlocks (" + (", ".join(stuck) or f"{len(c.pending)} op(s) never complete") + ")"


def _z3_outcomes(p: Program, pl: Plan, models, timeout_ms: int | None, rlimit: int | None) -> dict:
    from verifier.check import z3engine  # deferred: importing z3 costs ~0.2 s; replay-only runs never pay it

    kw = {"timeout_ms": timeout_ms} if timeout_ms else {}
    if rlimit is not None:
        kw["rlimit"] = rlimit
    return {m: z3engine.decide_program(p, m, plan=pl, **kw) for m in models}


def decide_deadlock(p: Program, pl: Plan, outcomes: dict[str, ModelOutcome], chosen: tuple[str, ...],
                    engine: str, *, z3_timeout_ms: int | None = None, z3_rlimit: int | None = None,
                    validate_certificate: bool = True) -> DeadlockDecision:
    """See the module docstring. ``outcomes``: the replay's, per model replayed;
    ``chosen``: the models the verdict is about."""
    d = DeadlockDecision(ENGINE_LABEL[engine], "z3" if engine == "z3" else
                         "replay+z3" if engine == "both" else "replay")
    DF = ProgramProperty.DEADLOCK_FREE
    certs: list[tuple[str, str, ProgramCertificate | None]] = [
        (m, "replay", outcomes[m].certificate) for m in chosen] if engine != "z3" else []
    if engine in ("z3", "both"):
        z3o = _z3_outcomes(p, pl, tuple(outcomes), z3_timeout_ms, z3_rlimit)
        for m, z in z3o.items():
            d.z3[m] = dict(z.stats)
            if z.status != "sat":
                d.unknown.append(ProgramViolation(DF, "solver-unknown", f"under {m}, z3 did not decide: "
                                                  f"{z.reason}", (), m))
                continue
            if m in chosen:
                certs.append((m, "z3", z.certificate))
            if answer_of(z.certificate) != answer_of(outcomes[m].certificate):
                d.unknown.append(ProgramViolation(
                    DF, "engine-disagree", f"engines disagree under {m}: the replay says "
                    f"{_words(outcomes[m].certificate)}, z3 says {_words(z.certificate)}", (), m))
    if validate_certificate:
        rejected = []
        for m, who, cert in certs:
            ok, why = check_program_certificate(p, m, cert)
            if not ok:
                rejected.append(f"{who} under {m}: {why}")
                d.unknown.append(ProgramViolation(DF, "certificate-rejected", f"the {who} certificate "
                                                  f"under {m} was rejected: {why}", (), m))
        d.certificate = f"rejected: {'; '.join(rejected)}" if rejected else "accepted" if certs else ""
    return d

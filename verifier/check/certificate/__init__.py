"""The independent certificate checker: a small interpreter of specs/SEMANTICS.md.

What it is: a second, separately written statement of the semantics that
validates what an engine claims. It is deliberately independent: it imports,
of this project, only ``verifier.ir`` and the result data it validates
(``verifier.results.check``; tests/test_import_rules.py enforces it), and it
implements every communication model again from SEMANTICS.md's text
(``machine.MODELS``: ``nccl``, ``nccl-pairs``, ``gloo``, ``eager``) instead of
reading the semantics core's ``CommModel`` definitions.

- ``check_witness``: replays a witness order (every (rank, step) once, in the
  order steps begin) under a model, completing communication as soon as the
  model allows between entries; accepts it if every step could begin where
  it stands and everything completed at the end.
- ``check_deadlock`` (``cycles``): accepts a cycle of waits only if the
  schedule does not terminate and every hop is a genuine wait that never
  happens.
- ``check_violation(s)`` (``static``): re-derives a static counterexample.
- ``terminates``: whether the maximal execution under a model terminates.

Returns (ok, reason) pairs; it never raises on a wrong certificate. An
unknown model is a rejection naming the models.

Recorded programs have their own checker in ``program``
(``check_program_certificate``), which may also import the program's data
types (``verifier.program``) and certificate (``verifier.results.program``).

What it does not cover: well-formedness (the interpreter assumes a
well-formed schedule, as the engines do) and finding counterexamples itself.
"""

from __future__ import annotations

from verifier.ir import Schedule
from verifier.check.certificate.cycles import check_deadlock as _check_deadlock
from verifier.check.certificate.cycles import run_to_fixpoint
from verifier.check.certificate.machine import MODELS, Machine
from verifier.check.certificate.onepass import replays as _replays
from verifier.check.certificate.static import check_violation, check_violations
from verifier.results.check import WaitCycle

__all__ = ["MODELS", "check_deadlock", "check_violation", "check_violations", "check_witness",
           "run_to_fixpoint", "terminates"]


def _unknown(comm_model: str) -> str:
    return f"the certificate checker has no model {comm_model!r} (it knows {', '.join(MODELS)})"


def check_witness(s: Schedule, comm_model: str, witness) -> tuple[bool, str]:
    """Replay ``witness`` under ``comm_model`` (SEMANTICS.md "Witness").

    ``eager`` and ``nccl`` run the one-pass replay (``onepass.replays``) first;
    a witness it rejects, and every witness under the other models, is
    replayed step by step on a ``Machine``, which says why it is rejected.
    """
    if comm_model not in MODELS:
        return False, _unknown(comm_model)
    if len(witness) != s.num_actions:
        return False, f"witness has {len(witness)} entries, the schedule {s.num_actions} steps"
    fast = comm_model in ("eager", "nccl")
    if fast and _replays(s, comm_model == "nccl", witness):
        return True, ""
    ok, why = _replay(s, comm_model, witness)
    if ok and fast:
        return False, "the one-pass replay rejects what the step-by-step replay accepts"
    return ok, why


def _replay(s: Schedule, comm_model: str, witness) -> tuple[bool, str]:
    """The witness replayed step by step on a ``Machine``: (ok, why not)."""
    m = Machine(s, comm_model)
    R = s.num_ranks
    for pos, (r, k) in enumerate(witness):
        if not 0 <= r < R or m.pc[r] != k:
            return False, f"entry {pos}: rank {r} step {k} is not the rank's next step"
        ok, why = m.can_begin(r)
        if not ok:
            return False, f"entry {pos}: {why}"
        m.post(r, k)
    if not m.terminated():
        left = [i for i, d in enumerate(m.done) if not d]
        r, k, sub, op = m.ops[left[0]]
        return False, (f"after the last entry {len(left)} op(s) never complete, first {op} "
                       f"at rank {r} step {k}")
    return True, ""


def check_deadlock(s: Schedule, comm_model: str, cycle: WaitCycle | None) -> tuple[bool, str]:
    """Validate a cycle of waits under ``comm_model`` (``cycles.check_deadlock``)."""
    if comm_model not in MODELS:
        return False, _unknown(comm_model)
    return _check_deadlock(s, comm_model, cycle)


def terminates(s: Schedule, comm_model: str) -> bool:
    """Whether ``s`` terminates under ``comm_model`` (its maximal execution does)."""
    return run_to_fixpoint(s, comm_model).terminated()

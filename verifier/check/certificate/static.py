"""The certificate checker's static part: re-derive a counterexample of a
static property (a violated pair of dependencies, a FIFO mismatch, a
duplicate, a memory peak, an illegal OVERLAP, a BATCH grouped differently on
two ranks) from the schedule itself, sharing nothing with
verifier/check/properties.py.

What it does not cover: well-formedness and exactly-once counterexamples other
than duplicates (they are reported as not re-derived), finding violations.
"""

from __future__ import annotations

from verifier.ir import Batch, Comm, CommKind, ComputeKind, Overlap, Schedule, op_text
from verifier.results.check import PropertyId, Violation

from verifier.check.certificate.machine import SENDS, Machine


def _texts(a) -> list[str]:
    """Each compute or op of an action, as the IR writes it."""
    if isinstance(a, Overlap):
        return [str(a.f), str(a.b)]
    if isinstance(a, Batch):
        return [str(o) for o in a.ops]
    return [str(a)]


def _has(a, needed: str) -> bool:
    # properties words a needed value as one op, or "2B5 or 2I5"
    return any(x in needed.split(" or ") for x in _texts(a))


def check_violation(s: Schedule, v: Violation, machine: "Machine | None" = None) -> tuple[bool, str]:
    """Re-derive one static counterexample from the schedule (``machine``: a
    ``Machine`` of ``s`` to reuse across violations)."""
    p = v.property
    if p is PropertyId.DEPENDENCIES:
        r, k = v.locations[0]
        needed = v.arg("needed")
        earlier = [kk for kk in range(k) if _has(s.actions[r][kk], needed)]
        if earlier:
            return False, f"{needed} is at rank {r} step {earlier[0]}, before step {k}"
        if v.code == "dep-order":
            r2, k2 = v.locations[1]
            if r2 != r or not _has(s.actions[r][k2], needed):
                return False, f"rank {r2} step {k2} does not hold {needed}"
        elif any(_has(a, needed) for a in s.actions[r]):
            return False, f"rank {r} does hold {needed}"
        return True, ""
    if p is PropertyId.EXACTLY_ONCE and v.code == "duplicate":
        want = op_text(v.arg('kind'), v.arg('stage'), v.arg('mb'))
        found = [(r, k) for r, acts in enumerate(s.actions) for k, a in enumerate(acts) for x in _texts(a) if x == want]
        ok = len(found) == v.arg("count") and set(found) == set(v.locations)
        return ok, "" if ok else f"{want} runs at {found}"
    if p is PropertyId.MESSAGE_MATCHING and v.code == "batch-grouping":
        return _grouping(machine or Machine(s, "eager"), v)
    if p is PropertyId.MESSAGE_MATCHING:
        m = machine or Machine(s, "eager")
        if v.code == "payload":
            (r1, k1), (r2, k2) = v.locations
            for i, (r, k, _sub, op) in enumerate(m.ops):
                j = m.partner[i]
                if r == r1 and k == k1 and op.kind in SENDS and j is not None:
                    rr, kk, _, rop = m.ops[j]
                    if (rr, kk) == (r2, k2) and _expected(s, op) != rop:
                        return True, ""
            return False, "no FIFO pair with different payloads at these places"
        if v.code in ("unmatched-send", "unmatched-recv"):
            (r1, k1), = v.locations
            for i, (r, k, _sub, _op) in enumerate(m.ops):
                if (r, k) == (r1, k1) and m.partner[i] is None:
                    return True, ""
            return False, "the op has a FIFO partner"
    if p is PropertyId.MEMORY:
        (r, k), = v.locations
        sizes = dict(v.arg("stage_bytes") or ())  # memory-bytes: the rank's stages' sizes
        live = peak = 0
        for a in s.actions[r]:
            cs = (a.f, a.b) if isinstance(a, Overlap) else ((a,) if not isinstance(a, (Comm, Batch)) else ())
            live += sum(sizes.get(c.stage, 1) for c in cs if c.kind is ComputeKind.F)
            peak = max(peak, live)
            live -= sum(sizes.get(c.stage, 1) for c in cs if c.kind in (ComputeKind.B, ComputeKind.I))
        limit = v.arg("limit")
        return (peak > limit, "" if peak > limit else f"peak {peak} is within {limit}")
    if p is PropertyId.OVERLAP_LEGAL:
        (r, k), = v.locations
        a = s.actions[r][k]
        if not isinstance(a, Overlap):
            return False, f"rank {r} step {k} is not an OVERLAP"
        legal = a.f.kind is ComputeKind.F and a.b.kind in (ComputeKind.B, ComputeKind.I) and a.f.mb != a.b.mb
        return (not legal, "" if not legal else "the OVERLAP is legal")
    return True, "not re-derived"


def _grouping(m: Machine, v: Violation) -> tuple[bool, str]:
    """Two comm steps on two ranks whose ops with each other are linked by a FIFO
    pair, and each of which has an op matched outside the other (SEMANTICS.md:
    groupings that cross)."""
    (r1, k1), (r2, k2) = v.locations
    g1, g2 = m.unit_of_step[r1].get(k1), m.unit_of_step[r2].get(k2)
    if g1 is None or g2 is None:
        return False, "the places are not two comm steps"
    a = {i for i in m.units[g1][2] if m.peer(r1, m.ops[i][3]) == r2}
    b = {j for j in m.units[g2][2] if m.peer(r2, m.ops[j][3]) == r1}
    linked = any(m.partner[i] in b for i in a)
    a_out = any(m.partner[i] is not None and m.partner[i] not in b for i in a)
    b_out = any(m.partner[j] is not None and m.partner[j] not in a for j in b)
    ok = linked and a_out and b_out
    return ok, "" if ok else "the two steps are grouped alike (or not linked)"


def check_violations(s: Schedule, violations) -> list[tuple[Violation, str]]:
    """The violations whose re-derivation fails, with why (empty: all confirmed)."""
    bad = []
    machine = None
    for v in violations[:200]:  # a bounded sample keeps huge failure lists cheap
        if v.property is PropertyId.MESSAGE_MATCHING and machine is None:
            machine = Machine(s, "eager")
        ok, why = check_violation(s, v, machine)
        if not ok:
            bad.append((v, why))
    return bad


def _expected(s: Schedule, op: Comm) -> Comm:
    if op.kind is CommKind.SEND_F:
        return Comm(CommKind.RECV_F, s.next_stage(op.stage), op.mb)
    return Comm(CommKind.RECV_B, s.prev_stage(op.stage), op.mb)

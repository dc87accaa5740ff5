"""The certificate checker's validation of a cycle of waits (SEMANTICS.md
"Witness and counterexample"), under each model of ``machine.MODELS``.

What it is: ``check_deadlock`` runs the schedule to its maximal execution
(everything enabled runs; the semantics is monotone, so this decides
termination) and accepts a cycle only if the schedule does not terminate,
every event of it never happened, and every hop is a genuine wait of the
semantics, recomputed here (``waits``), that closes into a cycle or ends at
an op that never completes.

Events of a model without streams (``eager``, ``gloo``): a unit is active once
posted, so ``ACTIVE(u)`` waits only for ``BEGIN(u)``, and a matched pair's
completion may be stated as waiting for the two ``BEGIN`` events or the two
``ACTIVE`` events; a waited BATCH's return may wait for its ``UNIT_DONE`` or
for its ops directly. Each of these is a true wait of the semantics, so
accepting either wording accepts nothing false.

What it does not cover: finding a cycle (the engines do).
"""

from __future__ import annotations

from verifier.ir import Batch, Schedule
from verifier.results.check import Event, EventKind, WaitCycle

from verifier.check.certificate.machine import SENDS, Machine

_NEVER = (EventKind.NEVER, -1, -1, None)


def run_to_fixpoint(s: Schedule, comm_model: str) -> Machine:
    """The maximal execution: run every step that can begin until none can."""
    m = Machine(s, comm_model)
    progress = True
    while progress:
        progress = False
        for r in range(s.num_ranks):
            while m.pc[r] < len(s.actions[r]) and m.can_begin(r)[0]:
                m.post(r, m.pc[r])
                progress = True
    return m


def _key(e: Event) -> tuple:
    return (e.kind, e.rank, e.step, e.sub)


def happened(m: Machine, e: Event) -> bool:
    kd = e.kind
    if kd is EventKind.NEVER:
        return False
    if kd is EventKind.BEGIN:
        return m.posted(e.rank, e.step)
    if kd is EventKind.RETURN:
        return m.step_returned(e.rank, e.step)
    g = m.unit_of_step[e.rank].get(e.step)
    if g is None:
        return True  # not an event of this schedule; rejected elsewhere
    if kd is EventKind.ACTIVE:
        return m.unit_done(g) or m.active(g) or (m.buffered and m.posted(e.rank, e.step))
    if kd is EventKind.UNIT_DONE:
        return m.unit_done(g)
    i = m.op_at.get((e.rank, e.step, e.sub))
    return i is None or m.done[i]


def done_key(m: Machine, i: int) -> tuple:
    """The event at which op ``i`` is complete: under a buffered model a send at
    its BEGIN, a receive at its own OP_DONE; under rendezvous a matched pair at
    the OP_DONE of its send, an unmatched op at its own."""
    r, k, sub, op = m.ops[i]
    j = m.partner[i]
    if m.buffered:
        return (EventKind.BEGIN, r, k, None) if op.kind in SENDS else (EventKind.OP_DONE, r, k, sub)
    if j is None or op.kind in SENDS:
        return (EventKind.OP_DONE, r, k, sub)
    pr, pk, psub, _ = m.ops[j]
    return (EventKind.OP_DONE, pr, pk, psub)


def _streamed(m: Machine) -> bool:
    return m.model in ("nccl", "nccl-pairs")


def _begin_waits(m: Machine, r: int, k: int, g: int | None) -> set[tuple]:
    out: set[tuple] = set()
    s = m.s
    if k > 0:
        prev = s.actions[r][k - 1]
        kind = EventKind.RETURN if isinstance(prev, Batch) and prev.wait else EventKind.BEGIN
        out.add((kind, r, k - 1, None))
    if g is None:
        for inp in m.inputs(r, k):
            if inp[0] == "op":
                out.add(done_key(m, inp[1]))
            elif inp[0] == "step":
                out.add((EventKind.BEGIN, r, inp[1], None))
            else:
                out.add(_NEVER)
    return out


def _op_done_waits(m: Machine, r: int, k: int, sub) -> set[tuple]:
    i = m.op_at.get((r, k, sub))
    if i is None:
        return set()
    j = m.partner[i]
    kinds = (EventKind.ACTIVE,) if _streamed(m) else (
        (EventKind.BEGIN,) if m.buffered else (EventKind.BEGIN, EventKind.ACTIVE))
    out = {(kd, r, k, None) for kd in kinds}
    if j is None:
        out.add(_NEVER)
    else:
        out |= {(kd, m.ops[j][0], m.ops[j][1], None) for kd in kinds}
    return out


def waits(m: Machine, e: Event) -> set[tuple]:
    """Every event ``e`` directly waits for, recomputed from the semantics."""
    s = m.s
    r, k = e.rank, e.step
    if not (0 <= r < s.num_ranks and 0 <= k < len(s.actions[r])):
        return set()
    g = m.unit_of_step[r].get(k)
    if e.kind is EventKind.BEGIN:
        return _begin_waits(m, r, k, g)
    if e.kind is EventKind.OP_DONE:
        return _op_done_waits(m, r, k, e.sub)
    if g is None:
        return set()
    ops_done = {done_key(m, i) for i in m.units[g][2]}
    if e.kind is EventKind.RETURN:
        out = {(EventKind.BEGIN, r, k, None), (EventKind.UNIT_DONE, r, k, None)}
        return out if _streamed(m) else out | ops_done
    if e.kind is EventKind.UNIT_DONE:
        return ops_done
    if e.kind is EventKind.ACTIVE:
        out = {(EventKind.BEGIN, r, k, None)}
        prev = m.stream_prev(g) if _streamed(m) else None
        if prev is not None:
            pr, pk, _ids = m.units[prev]
            out.add((EventKind.UNIT_DONE, pr, pk, None))
        return out
    return set()


def check_deadlock(s: Schedule, comm_model: str, cycle: WaitCycle | None) -> tuple[bool, str]:
    """Validate a cycle of waits (SEMANTICS.md "Witness and counterexample")."""
    if cycle is None or not cycle.hops:
        return False, "no hops"
    m = run_to_fixpoint(s, comm_model)
    if m.terminated():
        return False, "the schedule terminates: there is no deadlock"
    hops = cycle.hops
    for n, h in enumerate(hops):
        if n > 0 and _key(hops[n - 1].target) != _key(h.waiter):
            return False, f"hop {n} does not start where hop {n - 1} ends"
        if _key(h.target) not in waits(m, h.waiter):
            return False, (
                f"hop {n}: {h.waiter.kind.value} of rank {h.waiter.rank} step {h.waiter.step} "
                f"does not wait for {h.target.kind.value} of rank {h.target.rank} step {h.target.step}"
            )
        if happened(m, h.waiter):
            return False, (f"hop {n}: {h.waiter.kind.value} of rank {h.waiter.rank} "
                           f"step {h.waiter.step} does happen")
    last = hops[-1].target
    if cycle.closed:
        if _key(last) != _key(hops[0].waiter):
            return False, "the cycle does not close"
    elif last.kind is not EventKind.NEVER:
        return False, "an open chain must end at an op that never completes"
    return True, ""

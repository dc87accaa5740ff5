"""Lowering: a compute-only schedule -> the same schedule with communication.

The rule (design.md section 3), shared by every consumer:

- a send goes right after the compute that produces its data: SEND_F(s, m)
  after F(s, m) when the next stage of s is on another rank; SEND_B(s, m) after
  B(s, m) or I(s, m) when the previous stage of s is on another rank;
- a receive goes right before the compute that consumes it: RECV_F(s, m)
  before F(s, m), RECV_B(s, m) before B(s, m) or I(s, m), for the same
  condition;
- neighbouring stages on the same rank exchange nothing (the V-shaped turn of
  ZB-V / DualPipeV);
- all communication between two consecutive computes of a rank (the sends of
  the earlier, then the receives of the later) is posted as one
  ``Batch(wait=False)``, as PyTorch's own runtime batches a forward send with
  the next backward receive. Only the computes that consume a receive wait
  for it.

Not covered: DeepSeek's own DualPipe communication pattern (its generators
emit that directly, with ``Batch(wait=True)`` before every compute).
"""

from __future__ import annotations

from verifier.ir import (
    Action,
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Schedule,
    ScheduleError,
    computes_of,
)


def _recvs(s: Schedule, rank: int, c: Compute) -> list[Comm]:
    if c.kind is ComputeKind.F:
        other = s.prev_stage(c.stage)
        if other is not None and s.rank_of(other) != rank:
            return [Comm(CommKind.RECV_F, c.stage, c.mb)]
    elif c.kind in (ComputeKind.B, ComputeKind.I):
        other = s.next_stage(c.stage)
        if other is not None and s.rank_of(other) != rank:
            return [Comm(CommKind.RECV_B, c.stage, c.mb)]
    return []


def _sends(s: Schedule, rank: int, c: Compute) -> list[Comm]:
    if c.kind is ComputeKind.F:
        other = s.next_stage(c.stage)
        if other is not None and s.rank_of(other) != rank:
            return [Comm(CommKind.SEND_F, c.stage, c.mb)]
    elif c.kind in (ComputeKind.B, ComputeKind.I):
        other = s.prev_stage(c.stage)
        if other is not None and s.rank_of(other) != rank:
            return [Comm(CommKind.SEND_B, c.stage, c.mb)]
    return []


def lower(s: Schedule) -> Schedule:
    """Insert communication into a compute-only schedule by the rule above."""
    if not s.is_compute_only:
        raise ScheduleError(
            "already has communication actions; lowering takes a compute-only schedule",
            s.name or None,
        )
    out: list[list[Action]] = []
    for rank, acts in enumerate(s.actions):
        lowered: list[Action] = []
        pending: list[Comm] = []
        for a in acts:
            cs = computes_of(a)
            for c in cs:
                pending.extend(_recvs(s, rank, c))
            if pending:
                lowered.append(Batch(tuple(pending), wait=False))
            lowered.append(a)
            pending = [op for c in cs for op in _sends(s, rank, c)]
        if pending:
            lowered.append(Batch(tuple(pending), wait=False))
        out.append(lowered)
    return s.with_actions(out)


def strip_communication(s: Schedule) -> Schedule:
    """The compute-only skeleton of a schedule (inverse of ``lower`` on computes)."""
    return s.with_actions(
        [[a for a in acts if computes_of(a)] for acts in s.actions]
    )

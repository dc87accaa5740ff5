"""Compute orders of the single-direction families: GPipe, 1F1B, interleaved
1F1B, ZB-H1 and ZB-V.

What it is: for each family, every rank's ordered compute actions (F, B, I, W),
following the paper and, where PyTorch pipelining ships the schedule, exactly
the compute order of ``torch.distributed.pipelining.schedules`` (2.13):

- gpipe: ``ScheduleGPipe``: all forwards, then all backwards, in micro-batch
  order. Same order.
- 1f1b: ``Schedule1F1B``: ``R-1-r`` warm-up forwards on rank r (capped at
  ``num_microbatches``), then F,B pairs, then the remaining backwards. Same
  order as PyTorch's runtime (``_step_microbatches``: ``min(M, R-r)`` warm-up
  forwards, then B,F pairs: the same sequence). PyTorch's
  ``_get_pipeline_order`` (used only for its simulator and drawings) numbers
  the last rank's forwards from 1 (``F1..FM``, no ``F0``): an off-by-one when a
  rank has no warm-up; we follow the runtime.
- interleaved-1f1b: ``ScheduleInterleaved1F1B`` (Narayanan et al. 2021,
  depth-first, PyTorch's "flex" rounds: ``rounds = max(1, M // R)``,
  ``M % rounds == 0`` required, warm-up ``(v-1)*M/rounds + 2*(R-1-r)``
  capped at ``v*M``). Same order.
- zb-h1: ZB-H1 of the zero-bubble paper (Qi et al. 2024, "ZB1P" in PyTorch's
  ``ScheduleInterleavedZeroBubble`` with one stage per rank): 1F1B's warm-up
  (``R-1-r`` forwards, so 1F1B's activation memory), B split into I and W,
  rank r runs its first ``r`` steady-state F,I pairs without W and then one W
  (the oldest pending, FIFO) after every I; leftover Ws at the end. Same
  order as PyTorch with one local stage (PyTorch only inserts idle slots).
- zbv: ``ScheduleZBVZeroBubble`` (zero-bubble paper section 6, V placement).
  Same order, including PyTorch's handling of ``M < 2R-1`` (plan for
  ``2R-1`` micro-batches and drop those that do not exist).
- interleaved-zb: ``ScheduleInterleavedZeroBubble`` (ZB1P over ``v`` stages
  per rank, round-robin): interleaved 1F1B's rounds with a warm-up of
  ``(v-1)*M/rounds + (R-1-r)`` forwards (one per hop, not two), B split
  into I and W, and ZB-H1's rule for W: rank r's first ``r`` steady-state
  backwards keep their W, then each I is followed by the oldest pending W;
  leftover Ws at the end. With ``v = 1`` it is zb-h1. Same order.
- looped-bfs: ``ScheduleLoopedBFS`` (Lamy-Poirier 2023, breadth-first over
  ``v`` stages per rank, round-robin): every forward of the rank's first
  stage, then of its next stage, ...; then the full backwards stage by stage
  from the last, each stage's micro-batches in reverse order. Same order.

What it does not cover: communication (``verifier.semantics.lowering`` inserts it),
idle slots (PyTorch's ``None`` entries are timing hints, not actions).
"""

from __future__ import annotations

from verifier.ir import Compute, ComputeKind, ScheduleError

F, B, I, W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W  # noqa: E741


def gpipe(num_ranks: int, num_microbatches: int) -> list[list[Compute]]:
    M = num_microbatches
    return [
        [Compute(F, r, m) for m in range(M)] + [Compute(B, r, m) for m in range(M)]
        for r in range(num_ranks)
    ]


def one_f_one_b(num_ranks: int, num_microbatches: int) -> list[list[Compute]]:
    M = num_microbatches
    out = []
    for r in range(num_ranks):
        warmup = min(num_ranks - 1 - r, M)
        acts = [Compute(F, r, m) for m in range(warmup)]
        for k in range(M - warmup):
            acts.append(Compute(F, r, warmup + k))
            acts.append(Compute(B, r, k))
        acts.extend(Compute(B, r, k) for k in range(M - warmup, M))
        out.append(acts)
    return out


def zb_h1(num_ranks: int, num_microbatches: int) -> list[list[Compute]]:
    M = num_microbatches
    out = []
    for r in range(num_ranks):
        warmup = min(num_ranks - 1 - r, M)
        acts = [Compute(F, r, m) for m in range(warmup)]
        pending_w: list[int] = []  # FIFO of micro-batches whose I ran, W not yet
        next_w = 0
        for op in range(warmup, M + warmup):
            if op < M:
                acts.append(Compute(F, r, op))
            b = op - warmup
            acts.append(Compute(I, r, b))
            pending_w.append(b)
            if op - warmup >= r:  # the first r backwards keep their W for later
                acts.append(Compute(W, r, pending_w[next_w]))
                next_w += 1
        acts.extend(Compute(W, r, m) for m in pending_w[next_w:])
        out.append(acts)
    return out


def interleaved_rounds(num_ranks: int, num_microbatches: int,
                       family: str = "interleaved-1f1b") -> tuple[int, int]:
    """(rounds, micro-batches per round) of PyTorch's flexible interleaving."""
    rounds = max(1, num_microbatches // num_ranks)
    if num_microbatches % rounds:
        raise ScheduleError(
            f"{family} needs num_microbatches to be a multiple of the number "
            f"of rounds max(1, num_microbatches // num_ranks) = {rounds}, got "
            f"num_microbatches={num_microbatches} with num_ranks={num_ranks}"
        )
    return rounds, num_microbatches // rounds


def interleaved_1f1b(
    num_ranks: int, num_microbatches: int, num_chunks: int
) -> list[list[Compute]]:
    R, M, v = num_ranks, num_microbatches, num_chunks
    _, per_round = interleaved_rounds(R, M)
    total = v * M
    out = []
    for r in range(R):
        warmup = min((v - 1) * per_round + 2 * (R - 1 - r), total)

        def fwd_stage(op: int) -> int:
            return ((op // per_round) % v) * R + r

        def bwd_stage(op: int) -> int:
            return (v - 1 - ((op - warmup) // per_round) % v) * R + r

        f_next: dict[int, int] = {}
        b_next: dict[int, int] = {}
        acts: list[Compute] = []

        def emit(kind, stage, counter):
            m = counter.get(stage, 0)
            counter[stage] = m + 1
            acts.append(Compute(kind, stage, m))

        for op in range(total + warmup):
            if op < total:
                emit(F, fwd_stage(op), f_next)
            if op >= warmup:
                emit(B, bwd_stage(op), b_next)
        out.append(acts)
    return out


def zbv(num_ranks: int, num_microbatches: int) -> list[list[Compute]]:
    R, M = num_ranks, num_microbatches
    n = max(2 * R - 1, M)  # planned micro-batches; those >= M are dropped
    out = []
    for r in range(R):
        stage = (r, 2 * R - 1 - r)  # chunk 0 (going down), chunk 1 (coming back)
        acts: list[Compute] = []
        f = [0, 0]  # next forward micro-batch per chunk
        b = [0, 0]  # next backward (I) micro-batch per chunk

        def fwd(c: int) -> None:
            acts.append(Compute(F, stage[c], f[c]))
            f[c] += 1

        def inp(c: int, with_w: bool) -> None:
            acts.append(Compute(I, stage[c], b[c]))
            if with_w:
                acts.append(Compute(W, stage[c], b[c]))
            b[c] += 1

        for _ in range(2 * (R - r) - 1):
            fwd(0)
        for _ in range(r):
            fwd(1)
            fwd(0)
        for _ in range(R - r):
            fwd(1)
            inp(1, True)
        while f[1] < f[0] or f[0] < n:
            if f[0] < n:
                fwd(0)
            inp(0, True)
            fwd(1)
            inp(1, True)
        w = list(b)  # next weight micro-batch per chunk
        for _ in range(r):
            inp(0, False)
            inp(1, False)
        for _ in range(R - r):
            inp(0, False)
            acts.append(Compute(W, stage[0], w[0]))
            w[0] += 1
        acts.extend(Compute(W, stage[1], m) for m in range(w[1], b[1]))
        acts.extend(Compute(W, stage[0], m) for m in range(w[0], b[0]))
        out.append([a for a in acts if a.mb < M])
    return out


def interleaved_zero_bubble(
    num_ranks: int, num_microbatches: int, num_chunks: int
) -> list[list[Compute]]:
    R, M, v = num_ranks, num_microbatches, num_chunks
    _, per_round = interleaved_rounds(R, M, "interleaved-zb")
    total = v * M  # forwards (and I's, and W's) per rank
    out = []
    for r in range(R):
        warmup = min((v - 1) * per_round + (R - 1 - r), total)

        def fwd_stage(op: int) -> int:
            return ((op // per_round) % v) * R + r

        def bwd_stage(op: int) -> int:
            return (v - 1 - ((op - warmup) // per_round) % v) * R + r

        nxt: dict[tuple, int] = {}  # (kind, stage) -> next micro-batch
        acts: list[Compute] = []

        def emit(kind, stage) -> None:
            m = nxt.get((kind, stage), 0)
            nxt[(kind, stage)] = m + 1
            acts.append(Compute(kind, stage, m))

        backward_ops: list[int] = []  # ops whose I ran, in order; W follows FIFO
        num_w = 0
        for op in range(total + warmup):
            if op < total:
                emit(F, fwd_stage(op))
            if op < warmup:
                continue
            emit(I, bwd_stage(op))
            backward_ops.append(op)
            if op - warmup >= r:  # the first r backwards keep their W for later
                emit(W, bwd_stage(backward_ops[num_w]))
                num_w += 1
        for op in backward_ops[num_w:]:
            emit(W, bwd_stage(op))
        out.append(acts)
    return out


def looped_bfs(num_ranks: int, num_microbatches: int, num_chunks: int) -> list[list[Compute]]:
    R, M, v = num_ranks, num_microbatches, num_chunks
    out = []
    for r in range(R):
        stages = [k * R + r for k in range(v)]
        acts = [Compute(F, s, m) for s in stages for m in range(M)]
        acts += [Compute(B, s, m) for s in reversed(stages) for m in reversed(range(M))]
        out.append(acts)
    return out

"""The reference executor: runs a schedule in one process, checking every message.

What it is: ``run_pipeline(schedule, layers, microbatches, ...)`` executes any
schedule the IR expresses (every family, two-direction DualPipe with tied
layers, split I/W backward, OVERLAP pairs, BATCH groups) on one virtual rank per
schedule rank and returns per-micro-batch losses and the gradients, to be
compared with ``reference.baseline.run_baseline``.

How it runs:

- Each virtual rank holds its own deep copy of the model layers its stages
  hold (``stage_layers``: stage -> model layer indices, by default
  ``reference.models.stage_layer_map(schedule, layers_per_stage)``). A tied
  layer held on two ranks is two copies; their weight gradients are summed
  (per micro-batch, in micro-batch order: reference.baseline).
- Per ordered rank pair (src, dst) one in-memory FIFO channel. ``SEND_F(s, m)``
  enqueues the output of F(s, m) with the tag (F, s -> next(s), m);
  ``SEND_B(s, m)`` the input gradient of B/I(s, m) with (B, s -> prev(s), m);
  a receive posted on dst is matched with the k-th send in post order, and its
  expected tag must equal the send's tag, else ``MessageMismatchError`` naming
  both ops, their rank and step, and both tags. A compute reads a receive's
  payload by its own (kind, stage, micro-batch), so a schedule with swapped
  receives fails loudly instead of training on the wrong tensor.
- Semantics follow specs/SEMANTICS.md under the ``eager`` communication model
  (sends buffered; a receive completes once its send is posted; a BATCH with
  ``wait`` blocks the rank until its receives have completed). The two halves
  of an OVERLAP run one after the other (forward first); they must be an F
  and a B or I, and since each half checks its own inputs before either runs,
  halves that depend on each other stop the run.
- Order of execution, never invented here: by default the checker's witness
  (``verifier.check.checker.check(schedule, comm_model="eager", engine="graph")``, a
  valid order of step beginnings). A refuted schedule raises
  ``RefutedScheduleError`` naming the checker's first counterexamples.
  ``order=`` runs a given (rank, step) order (a saved witness). ``force=True``
  runs the rank programs round-robin, each rank until it blocks, "as far as it
  goes": a fault raises a located ``ExecutionError`` subclass, and if every
  unfinished rank is blocked, ``BlockedError`` lists each rank's step and what
  it waits for. Mutation tests use this to show a wrong schedule never passes
  silently.
- Exactly-once is enforced at run time (an F, I, B or W run twice, a W with no
  I, a W after a B, a send of data not yet computed, a receive posted twice)
  and at the end (every (stage, micro-batch) of a route must have had its F
  and its B or I+W, every send matched, every received payload consumed).

Cost: every micro-batch's weight gradient is kept until the end (one tensor
per parameter per micro-batch), the price of a fixed summation order; the
weight pass of a split backward repeats the activation-gradient work inside the
stage (reference.split).

What it does not cover: real concurrency or communication (fastpath/), the
``nccl`` model's stricter blocking (the checker decides deadlock-freedom under
it; this executor runs eager semantics), memory savings, optimiser steps.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from torch import Tensor, nn

from reference.baseline import check_reduction
from reference.faults import (  # noqa: F401  (the faults, re-exported)
    BlockedError,
    DependencyError,
    ExactlyOnceError,
    ExecutionError,
    MessageMismatchError,
    OverlapError,
    RefutedScheduleError,
    WellFormedError,
)
from reference.machine import Run
from reference.result import PipelineResult
from reference.models import as_layer_list, loss_fn as default_loss_fn, stage_layer_map
from verifier.ir import Schedule, ScheduleError, loc
from verifier.check.checker import check
from verifier.results.check import Verdict
from verifier.semantics.lowering import lower_if_compute_only


def check_model_fits(
    schedule: Schedule, num_layers: int, stage_layers: Mapping[int, Sequence[int]]
) -> None:
    """Each route must traverse model layers 0..N-1 exactly, in order (so the
    pipeline computes the same function as the unpipelined stack)."""
    for st in schedule.stages:
        if st.id not in stage_layers:
            raise ScheduleError(f"stage {st.id} has no entry in the stage-to-layer map")
        for i in stage_layers[st.id]:
            if not (0 <= i < num_layers):
                raise ScheduleError(
                    f"stage {st.id} maps to model layer {i}, but the model has "
                    f"{num_layers} layers (0..{num_layers - 1})"
                )
    for ri, route in enumerate(schedule.routes):
        seq = [i for st in route.stages if st in stage_layers for i in stage_layers[st]]
        if seq != list(range(num_layers)):
            shown = seq if len(seq) <= 16 else seq[:16] + ["..."]
            raise ScheduleError(
                f"route {ri} traverses model layers {shown}, but the model is layers "
                f"0..{num_layers - 1} in order (check layers_per_stage / the stage map)"
            )


def checker_order(schedule: Schedule) -> tuple[tuple[int, int], ...]:
    """The checker's witness order (eager model, graph engine), or
    ``RefutedScheduleError`` naming its first counterexamples."""

    res = check(schedule, comm_model="eager", engine="graph")
    if res.witness is not None and res.verdict is Verdict.VERIFIED:
        return tuple((int(r), int(k)) for r, k in res.witness)
    parts = [v.summary() for v in res.violations[:3]]
    more = len(res.violations) - len(parts)
    detail = "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    raise RefutedScheduleError(
        f"the checker (graph engine, eager model) says {res.verdict}: {detail or 'no witness'}; "
        "nothing was run (force=True runs it as far as it goes)",
        res,
    )


def run_pipeline(
    schedule: Schedule,
    layers: nn.Module | Sequence[nn.Module],
    microbatches: Sequence[tuple[Tensor, Tensor]],
    *,
    stage_layers: Mapping[int, Sequence[int]] | None = None,
    layers_per_stage: int = 1,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = default_loss_fn,
    loss_reduction: str = "sum",
    order: Sequence[tuple[int, int]] | None = None,
    force: bool = False,
) -> PipelineResult:
    """Run ``schedule`` on ``layers`` (a list of modules or nn.Sequential) over
    ``microbatches`` ((input, target) pairs, one per schedule micro-batch).

    ``stage_layers``: stage id -> model layer indices (default
    ``stage_layer_map(schedule, layers_per_stage)``). ``order``: a (rank, step)
    order to follow (default: the checker's witness). ``force``: ignore the
    checker and run round-robin as far as it goes (module docstring).
    A compute-only schedule is lowered first (``order`` then refers to the
    lowered schedule). The user's layers are not modified (each rank runs deep
    copies); use ``PipelineResult.apply_to`` to write ``.grad``.
    """
    check_reduction(loss_reduction)
    schedule = lower_if_compute_only(schedule)
    layer_list = as_layer_list(layers)
    if len(microbatches) != schedule.num_microbatches:
        raise ScheduleError(
            f"the schedule has {schedule.num_microbatches} micro-batches but "
            f"{len(microbatches)} were given"
        )
    if stage_layers is None:
        stage_layers = stage_layer_map(schedule, layers_per_stage)
    check_model_fits(schedule, len(layer_list), stage_layers)
    run = Run(schedule, layer_list, microbatches, stage_layers, loss_fn, loss_reduction)
    if force:
        _round_robin(run)
        return run.finish("round-robin")
    how = "given"
    if order is None:
        order = checker_order(schedule)
        how = "witness"
    _follow(run, order)
    return run.finish(how)


def _follow(run: Run, order: Sequence[tuple[int, int]]) -> None:
    n = len(run.ranks)
    for rank, step in order:
        if not (0 <= rank < n):
            raise ExecutionError(f"order names rank {rank}, outside 0..{n - 1}")
        r = run.ranks[rank]
        if step != r.pc:
            raise ExecutionError(
                f"order runs {loc(rank, step)} but rank {rank} is at step {r.pc}", rank, step
            )
        if run.done(rank):
            raise ExecutionError(f"order runs {loc(rank, step)} past the end of rank {rank}")
        why = run.try_step(rank)
        if why is not None:
            raise ExecutionError(f"the given order is not executable here: {why}", rank, step)
    for rank in range(n):
        if not run.done(rank):
            raise ExecutionError(
                f"order ends with rank {rank} at step {run.ranks[rank].pc} of "
                f"{len(run.s.actions[rank])}",
                rank,
                run.ranks[rank].pc,
            )


def _round_robin(run: Run) -> None:
    n = len(run.ranks)
    while True:
        progressed = False
        blocked: list[tuple[int, str]] = []
        for rank in range(n):
            while not run.done(rank):
                why = run.try_step(rank)
                if why is not None:
                    blocked.append((rank, why))
                    break
                progressed = True
        if not blocked:
            return
        if not progressed:
            rank0, _ = blocked[0]
            detail = "; ".join(
                f"{loc(r, run.ranks[r].pc)}: {why}" for r, why in blocked
            )
            raise BlockedError(
                f"every unfinished rank is blocked: {detail}", rank0, run.ranks[rank0].pc
            )


__all__ = [
    "ExecutionError",
    "MessageMismatchError",
    "ExactlyOnceError",
    "DependencyError",
    "WellFormedError",
    "OverlapError",
    "BlockedError",
    "RefutedScheduleError",
    "PipelineResult",
    "run_pipeline",
    "checker_order",
    "check_model_fits",
]

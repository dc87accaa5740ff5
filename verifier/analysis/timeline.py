"""Timeline analysis: the as-soon-as-possible (ASAP) execution of a schedule.

What it is: a discrete-event replay of specs/SEMANTICS.md under a cost model
(verifier.analysis.costs) and a communication model (any of
verifier.semantics.comm.MODELS, read through its fields). Every action starts at the earliest time the semantics allow:

- a rank's step starts when the previous step has returned; a compute also
  waits for its inputs (the local producer's end, or the completion of its own
  receive), then runs for its cost; an ``OVERLAP`` runs both halves at once
  for the FB (or FI) cost;
- communication ops are posted at the time the program reaches them (posting
  takes no time); a ``Batch(wait=True)`` returns when all its ops complete;
- a communication unit (a plain op, or a whole batch) is active once posted
  and, where the model has streams (``nccl``: one per rank; ``nccl-pairs``: one
  per peer for plain ops and a group stream for batches), once the previous
  unit of its stream completed; a unit completes when all its ops have;
- rendezvous sends (``nccl``, ``nccl-pairs``, ``gloo``): a send and its matched
  receive complete together at ``max(active(send unit), active(recv unit)) +
  comm`` (comm = the cost of the sending stage);
- buffered sends (``eager``): a send completes when its unit is active; a
  receive at ``max(its unit active, the send's completion + comm)``.

Messages are matched FIFO per ordered rank pair (SEMANTICS.md). A
compute-only schedule is lowered first (verifier.semantics.lowering.lower).

Results (frozen dataclasses): the timeline (every compute span, every message
with post/active/complete times), the makespan, per-rank busy time (the sum of
its compute spans; an OVERLAP counts once, for its FB cost) and bubble
(makespan - busy), the bubble ratio (total bubble / (ranks * makespan)), the
critical path (the chain of computes and messages that determines the
makespan, found by following each event's latest input), the order in which
steps begin (a witness order of SEMANTICS.md, for verifier.check.certificate), peak live
activations per rank (verifier.semantics.memory, program order) and parameter copies per
rank. If the replay gets stuck, the result says ``deadlocked`` and lists, per
stuck rank, the step and what it waits for.

Not covered: correctness (the checker decides it; a schedule that fails
``dependencies`` or ``message-matching`` is timed as written, FIFO matching and
all, which is what hardware would do), bandwidth contention, kernel launch
overheads, compute/comm interference.
"""

from __future__ import annotations

from verifier.analysis.replay import replay
# the result types live in the leaf verifier.results.analysis; re-exported here
from verifier.results.analysis import (  # noqa: F401
    Analysis,
    ComputeSpan,
    Message,
    PathItem,
    RankMetrics,
    Stuck,
    label_of,
)
from verifier.analysis.costs import DEFAULT, CostModel
from verifier.ir import Schedule, ScheduleError, loc
from verifier.semantics import comm
from verifier.semantics.lowering import lower_if_compute_only

# the models analyze takes: every model of verifier.semantics.comm (the replay
# reads their fields)
COMM_MODELS: tuple[str, ...] = comm.NAMES


# ------------------------------------------------------------ the replay ---
def _check_computes(s: Schedule) -> None:
    on_route, known, M = s.route_pos, s.stage_by_id, s.num_microbatches
    for r, k, c in s.iter_computes():
        if c.stage not in on_route or c.stage not in known:
            raise ScheduleError(f"{c} names a stage that is not on any route; analyze needs "
                                "a well-formed schedule (run `check`)", loc(r, k))
        if not 0 <= c.mb < M:
            raise ScheduleError(f"{c} has micro-batch {c.mb} outside 0..{M - 1}; analyze "
                                "needs a well-formed schedule (run `check`)", loc(r, k))


def analyze(
    s: Schedule, costs: CostModel = DEFAULT, comm_model: str = "nccl"
) -> Analysis:
    """The ASAP timeline and its metrics (see the module docstring)."""
    try:
        comm.model(comm_model)
    except ValueError as e:
        raise ScheduleError(str(e)) from None
    if s.is_compute_only:
        _check_computes(s)  # lowering assumes well-formed computes
    s = lower_if_compute_only(s)
    a = replay(s, costs, comm_model)
    if not a.makespan < float("inf"):  # every cost is finite, their sum need not be
        raise ScheduleError(f"the timeline's times overflow (makespan {a.makespan}); give "
                            "smaller costs", "costs")
    return a


# ------------------------------------------------------ published numbers ---
def published_bubble(family: str, num_ranks: int, costs: CostModel = DEFAULT) -> float | None:
    """The bubble formula of the DualPipe README table for ``family``.

    PP is the number of pipeline stages of one micro-batch's route: ranks for
    1F1B and ZB1P (our zb-h1), ranks for DualPipe, 2 x ranks for DualPipeV.
    None for families the table does not list.
    """
    c = costs.default
    if family == "1f1b":
        return (num_ranks - 1) * (c.F + c.B)
    if family == "zb-h1":
        return (num_ranks - 1) * (c.F + c.B - 2 * c.W)
    if family == "dualpipe":
        return (num_ranks / 2 - 1) * (c.FB + c.B - 3 * c.W)
    if family == "dualpipev":
        return (num_ranks - 1) * (c.FB + c.B - 3 * c.W)
    return None

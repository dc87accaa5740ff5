"""Timeline analysis: the as-soon-as-possible (ASAP) execution of a schedule.

What it is: a discrete-event replay of specs/SEMANTICS.md under a cost model
(verifier.costs) and a communication model (``eager`` or ``nccl``). Every
action starts at the earliest time the semantics allow:

- a rank's step starts when the previous step has returned; a compute also
  waits for its inputs (the local producer's end, or the completion of its own
  receive), then runs for its cost; an ``OVERLAP`` runs both halves at once
  for the FB (or FI) cost;
- communication ops are posted at the time the program reaches them (posting
  takes no time); a ``Batch(wait=True)`` returns when all its ops complete;
- ``nccl``: a rank's communication units (a plain op, or a whole batch) become
  active in post order, each once posted and once the previous unit completed;
  a send and its matched receive complete together at
  ``max(active(send unit), active(recv unit)) + comm`` (comm = the cost of the
  sending stage); a unit completes when all its ops have;
- ``eager``: a send completes when posted; a receive at
  ``max(its post, the send's post + comm)``.

Messages are matched FIFO per ordered rank pair (SEMANTICS.md). A
compute-only schedule is lowered first (verifier.lowering.lower).

Results (frozen dataclasses): the timeline (every compute span, every message
with post/active/complete times), the makespan, per-rank busy time (the sum of
its compute spans; an OVERLAP counts once, for its FB cost) and bubble
(makespan - busy), the bubble ratio (total bubble / (ranks * makespan)), the
critical path (the chain of computes and messages that determines the
makespan, found by following each event's latest input), the order in which
steps begin (a witness order of SEMANTICS.md, for verifier.certificate), peak live
activations per rank (verifier.memory, program order) and parameter copies per
rank. If the replay gets stuck, the result says ``deadlocked`` and lists, per
stuck rank, the step and what it waits for.

Not covered: correctness (the checker decides it; a schedule that fails
``dependencies`` or ``message-matching`` is timed as written, FIFO matching and
all, which is what hardware would do), bandwidth contention, kernel launch
overheads, compute/comm interference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

from verifier.costs import DEFAULT, CostModel
from verifier.ir import Action, Comm, Overlap, Schedule, ScheduleError, action_text, loc

COMM_MODELS = ("nccl", "eager")


# ---------------------------------------------------------------- results ---
class ComputeSpan(NamedTuple):
    """One compute action (Compute or Overlap) on the timeline.

    (A NamedTuple rather than a frozen dataclass: immutable all the same, and
    several times cheaper to build by the ten thousand.)
    """

    rank: int
    step: int
    action: Action
    start: float
    end: float

    @property
    def kind(self) -> str:
        """'F', 'B', 'I', 'W', or 'FB' / 'FI' for an OVERLAP."""
        a = self.action
        if isinstance(a, Overlap):
            return "F" + a.b.kind.value
        return a.kind.value


class Message(NamedTuple):
    """A matched send/receive pair that completed (immutable, like ComputeSpan)."""

    id: int
    src: int
    dst: int
    send_step: int
    send: Comm
    recv_step: int
    recv: Comm
    send_post: float
    recv_post: float
    start: float  # nccl: both units active; eager: send posted
    end: float  # completion (the receive's data is there)
    latency: float  # the comm cost charged to this message


@dataclass(frozen=True, slots=True)
class PathItem:
    """One link of the critical path: a compute or a message."""

    what: str  # "compute" | "message"
    rank: int  # compute: its rank; message: the receiving rank
    step: int
    label: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Stuck:
    """Where a deadlocked replay stopped: the rank, step, action and the wait."""

    rank: int
    step: int
    action: str
    waits_for: str

    def __str__(self) -> str:
        return f"{loc(self.rank, self.step)}: {self.action} waits for {self.waits_for}"


@dataclass(frozen=True, slots=True)
class RankMetrics:
    rank: int
    busy: float
    bubble: float
    end: float
    peak_activations: float
    stages: int
    param_copies: float


@dataclass(frozen=True)
class Analysis:
    name: str
    family: str
    num_ranks: int
    num_microbatches: int
    comm_model: str
    costs: Mapping[str, object]
    deadlocked: bool
    stuck: tuple[Stuck, ...]
    makespan: float
    ranks: tuple[RankMetrics, ...]
    bubble_ratio: float
    critical_path: tuple[PathItem, ...]
    computes: tuple[ComputeSpan, ...] = field(repr=False)
    messages: tuple[Message, ...] = field(repr=False)
    # every (rank, step) in the order the steps begin in the timeline (ties in
    # causal order): a witness order of SEMANTICS.md; empty when deadlocked
    order: tuple[tuple[int, int], ...] = field(repr=False, default=())

    @property
    def max_bubble(self) -> float:
        return max((r.bubble for r in self.ranks), default=0.0)

    def to_json(self, timeline: bool = False) -> dict:
        """The stable JSON form (documented in `analyze --help`)."""
        out: dict = {
            "schema": "pp-analysis/1",
            "name": self.name,
            "family": self.family,
            "num_ranks": self.num_ranks,
            "num_microbatches": self.num_microbatches,
            "comm_model": self.comm_model,
            "costs": dict(self.costs),
            "deadlocked": self.deadlocked,
            "stuck": [
                {"rank": s.rank, "step": s.step, "action": s.action, "waits_for": s.waits_for}
                for s in self.stuck
            ],
            "makespan": self.makespan,
            "bubble_ratio": self.bubble_ratio,
            "max_bubble": self.max_bubble,
            "ranks": [
                {
                    "rank": r.rank,
                    "busy": r.busy,
                    "bubble": r.bubble,
                    "end": r.end,
                    "peak_activations": r.peak_activations,
                    "stages": r.stages,
                    "param_copies": r.param_copies,
                }
                for r in self.ranks
            ],
            "critical_path": [
                {
                    "what": p.what,
                    "rank": p.rank,
                    "step": p.step,
                    "label": p.label,
                    "start": p.start,
                    "end": p.end,
                }
                for p in self.critical_path
            ],
        }
        if timeline:
            out["timeline"] = [
                {"rank": c.rank, "step": c.step, "kind": c.kind, "label": label_of(c.action),
                 "start": c.start, "end": c.end}
                for c in self.computes
            ]
        return out


def label_of(a: Action) -> str:
    """Text for an action in the project's one notation (``verifier.ir.action_text``:
    ``0F3``, ``(0F3;7B1)OVERLAP_F_B``, ``BATCH[0SEND_F3]``)."""
    return action_text(a)


# ------------------------------------------------------------ the replay ---
def _check_computes(s: Schedule) -> None:
    on_route, known, M = s._route_pos, s.stage_by_id, s.num_microbatches
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
    if comm_model not in COMM_MODELS:
        raise ScheduleError(
            f"unknown communication model {comm_model!r}; choose nccl or eager")
    if s.is_compute_only and any(s.actions):
        from verifier.lowering import lower

        _check_computes(s)  # lowering assumes well-formed computes
        s = lower(s)
    from verifier.analysis_replay import replay

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

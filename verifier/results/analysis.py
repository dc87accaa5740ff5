"""The analysis-result vocabulary: the timeline (compute spans, messages), the
critical path, per-rank metrics, what a stuck replay waits for, and ``Analysis``.

A leaf module: it imports only ``verifier.ir`` and the standard library, so the
replay that produces these results (``verifier.analysis.replay``) and
``verifier.analysis.timeline`` that runs it both import it from below;
``verifier.analysis.timeline`` re-exports every name (the README's Python API).

What it does not cover: computing a timeline (``verifier.analysis.timeline``,
``verifier.analysis.replay``), rendering one (``verifier.render.pictures``,
``verifier.render.trace``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

from verifier.ir import Action, Comm, Overlap, action_text, loc

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

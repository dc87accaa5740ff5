"""The check-result vocabulary: verdicts, property ids, violations, the events
and waits of a deadlock certificate, and ``CheckResult``.

A leaf module: it imports only ``verifier.ir`` and the standard library, so the
engines that produce results (``verifier.check.properties``, ``verifier.check.hbgraph``,
``verifier.check.z3engine``), the independent ``verifier.check.certificate`` checker and
``verifier.check.checker`` that combines them all import it from below.
``verifier.check.checker`` re-exports every name (the README's Python API).

What it does not cover: deciding anything (``verifier.check.checker``), rendering
results as text or JSON (``verifier.cli.check``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import total_ordering
from typing import Mapping

from verifier.ir import Action, Batch, Comm, Schedule, action_text, loc

@total_ordering
class _Ordered(Enum):
    """An enum ordered by declaration order."""

    def __lt__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        members = list(type(self))
        return members.index(self) < members.index(other)

    def __str__(self) -> str:
        return self.value


class Verdict(_Ordered):
    VERIFIED = "VERIFIED"
    REFUTED = "REFUTED"
    UNKNOWN = "UNKNOWN"

    @property
    def exit_code(self) -> int:
        return {"VERIFIED": 0, "REFUTED": 1, "UNKNOWN": 3}[self.value]


class PropertyId(_Ordered):
    WELL_FORMED = "well-formed"
    EXACTLY_ONCE = "exactly-once"
    DEPENDENCIES = "dependencies"
    MESSAGE_MATCHING = "message-matching"
    DEADLOCK_FREE = "deadlock-free"
    OVERLAP_LEGAL = "overlap-legal"
    MEMORY = "memory"


class Status(_Ordered):
    HOLDS = "holds"
    FAILS = "fails"
    UNKNOWN = "unknown"
    NOT_CHECKED = "not-checked"


# Violation templates: the one place a violation's wording lives. Each code's
# template is formatted with the violation's ``args``.
TEMPLATES: dict[str, str] = {
    # well-formed
    "duplicate-stage": "stage {stage} is declared {count} times",
    "stage-rank": "stage {stage} is placed on rank {rank}, outside 0..{max_rank}",
    "route-stage": "route {route} names stage {stage}, which is not declared",
    "stage-routes": "stage {stage} lies on {count} routes (must be exactly one)",
    "route-mb": "route {route} names micro-batch {mb}, outside 0..{max_mb}",
    "mb-routes": "micro-batch {mb} takes {count} routes (must be exactly one)",
    "action-stage": "{action}: stage {stage} is not declared",
    "action-mb": "{action}: micro-batch {mb} is outside 0..{max_mb}",
    "action-route": "{action}: micro-batch {mb} does not take the route of stage {stage} (route {route})",
    "action-rank": "{action}: stage {stage} is held by rank {owner}, not rank {rank}",
    "no-peer": "{action}: has no peer ({reason})",
    "empty-batch": "{action}: a BATCH with no ops",
    # exactly-once
    "missing-f": "{stage}F{mb} never runs (no forward of stage {stage}, micro-batch {mb})",
    "duplicate": "{stage}{kind}{mb} runs {count} times (at {places})",
    "missing-backward": "no backward of stage {stage}, micro-batch {mb}: needs one {stage}B{mb}, or one {stage}I{mb} and one {stage}W{mb}",
    "b-and-split": "stage {stage}, micro-batch {mb} has both a full backward {stage}B{mb} and a split {stage}I{mb}/{stage}W{mb} (at {places})",
    "i-without-w": "{stage}I{mb} runs but {stage}W{mb} never does (stage {stage}, micro-batch {mb})",
    "w-without-i": "{stage}W{mb} runs but {stage}I{mb} never does (stage {stage}, micro-batch {mb})",
    # dependencies
    "dep-missing": "{action} needs {needed}, which rank {rank} never runs or posts",
    "dep-order": "{action} needs {needed}, which comes later, at {other}",
    # message-matching
    "payload": "{send} at {send_at} is received as {recv} at {recv_at} (expected {expected})",
    "unmatched-send": "{send} at {send_at} has no matching receive on rank {peer} (the {nth} send to it; rank {peer} posts {count} receive(s) from rank {rank})",
    "unmatched-recv": "{recv} at {recv_at} has no matching send from rank {peer} (the {nth} receive from it; rank {peer} posts {count} send(s) to rank {rank})",
    "batch-grouping": "{ops} at {at} and {other_ops} at {other_at} cross: each holds an op with the other rank matched outside the other (ranks {rank} and {peer} group these messages differently; NCCL may leave this undefined)",
    # deadlock-free
    "deadlock": "{count} of {total} events never happen; cycle of waits below",
    "stuck": "{count} of {total} events never happen; chain of waits ends at an op that can never complete",
    # overlap-legal
    "overlap-kinds": "{action}: the halves must be a forward and a backward (B or I), got {f_kind} and {b_kind}",
    "overlap-dependent": "{action}: the halves depend on each other (same micro-batch {mb} on route {route})",
    # memory
    "memory": "{peak} activations live at {at}, over the limit {limit}",
    "memory-bytes": "{peak_text} of activations live at {at}, over the limit {limit_text}",
    # engines
    "engine-disagree": "engines disagree: {detail}",
    "certificate-rejected": "the {engine} engine's certificate was rejected: {detail}",
    "solver-unknown": "the solver gave up: {detail}",
}


@dataclass(frozen=True)
class Violation:
    """One counterexample: which property, what kind (``code``), where, and the values.

    ``locations`` are (rank, step) pairs; ``args`` are (name, value) pairs that
    fill the code's template (``message``).
    """

    property: PropertyId
    code: str
    locations: tuple[tuple[int, int], ...]
    args: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if self.code not in TEMPLATES:
            raise ValueError(f"unknown violation code {self.code!r}")

    @property
    def message(self) -> str:
        return TEMPLATES[self.code].format(**dict(self.args))

    def arg(self, name: str, default=None):
        return dict(self.args).get(name, default)

    def summary(self, places: int = 2) -> str:
        """One line: ``[property] message (rank r step k, ...)`` naming at most
        ``places`` of its locations (how the executors quote a refutation)."""
        where = ", ".join(loc(r, k) for r, k in self.locations[:places])
        return f"[{self.property}] {self.message}" + (f" ({where})" if where else "")


class EventKind(_Ordered):
    """The events of the happens-before model (specs/SEMANTICS.md)."""

    BEGIN = "begin"  # a step is posted (comm) or runs (compute)
    RETURN = "return"  # a wait-BATCH returns (all its ops completed)
    ACTIVE = "active"  # a comm unit reached the head of its rank's stream (nccl)
    UNIT_DONE = "unit-done"  # every op of a comm unit completed
    OP_DONE = "op-done"  # an op (nccl: a matched pair together) completed
    NEVER = "never"  # an op with no matched peer: never completes


@dataclass(frozen=True)
class Event:
    """One event of the model: kind and the (rank, step[, op index]) it belongs
    to, with the action as data: ``action`` is the IR action at (rank, step),
    or for an op-done event its op, and ``peer_action`` the matched op at
    ``peer`` (rank, step, sub). ``text`` and ``peer_text`` render them in the
    project's one notation (``verifier.ir.action_text``)."""

    kind: EventKind
    rank: int
    step: int
    sub: int | None = None  # index of the op inside a BATCH
    action: Action | None = None
    peer: tuple[int, int, int | None] | None = None  # matched op (rank, step, sub)
    peer_action: Comm | None = None

    @property
    def where(self) -> str:
        return loc(self.rank, self.step)

    @property
    def text(self) -> str:
        return "" if self.action is None else action_text(self.action)

    @property
    def peer_text(self) -> str:
        return "" if self.peer_action is None else action_text(self.peer_action)

    @property
    def is_batch(self) -> bool:
        return type(self.action) is Batch


@dataclass(frozen=True)
class Hop:
    """``waiter`` cannot happen before ``target`` has happened."""

    waiter: Event
    target: Event


@dataclass(frozen=True)
class WaitCycle:
    """A deadlock certificate: hops ``h0 -> h1 -> ...``; ``closed`` means the last
    hop's target is the first hop's waiter (a cycle); otherwise the last target
    is a NEVER event (an op whose peer is never posted)."""

    hops: tuple[Hop, ...]
    closed: bool


@dataclass(frozen=True)
class PropertyResult:
    """One property's status, its counterexamples, and what decided it."""

    property: PropertyId
    status: Status
    violations: tuple[Violation, ...] = ()
    decided_by: str = ""  # "static", "graph" or "z3" ("" when not checked)


@dataclass(frozen=True)
class Stats:
    """Sizes and times of one ``check`` run."""

    seconds: float
    num_actions: int
    num_ops: int
    num_events: int
    engine_seconds: float
    certificate_seconds: float
    z3: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Certificate:
    """What the independent certificate checker said about the engine's
    witness or cycle: ``checked`` (False when none was checked), ``accepted``,
    and why it was rejected (``detail``). ``str()`` is the text of the
    outputs: "accepted", "rejected: ..." or ""."""

    checked: bool = False
    accepted: bool = False
    detail: str = ""

    def __post_init__(self) -> None:
        if self.accepted and not self.checked:
            raise ValueError("a certificate that was not checked cannot be accepted")

    def __bool__(self) -> bool:
        return self.checked

    def __str__(self) -> str:
        if not self.checked:
            return ""
        return "accepted" if self.accepted else f"rejected: {self.detail}"


@dataclass(frozen=True)
class CheckResult:
    """What ``check`` decides. ``witness`` (VERIFIED): (rank, step) of every action
    in an order that is a valid execution under ``comm_model`` (the order in
    which steps begin; see SEMANTICS.md "Witness"). ``cycle``: the deadlock
    certificate when deadlock-free fails. ``peaks``: activations per rank, in
    bytes when ``activation_bytes`` (bytes per stage) was given, and then
    ``memory_limit`` is bytes too.
    ``certificate``: what the certificate checker said (``Certificate``)."""

    verdict: Verdict
    comm_model: str
    engine: str
    properties: tuple[PropertyResult, ...]
    witness: tuple[tuple[int, int], ...] | None
    cycle: WaitCycle | None
    peaks: tuple[float, ...]
    memory_limit: float | None
    lowered: bool
    certificate: Certificate
    stats: Stats
    z3_core: tuple[str, ...] = ()
    engine_note: str = ""  # e.g. why auto fell back from z3 to graph
    schedule: Schedule = field(compare=False, repr=False, default=None)  # type: ignore[assignment]
    # when lowered: the compute-only schedule as given, before lowering (read by
    # ``verifier.format.origin`` through ``verifier.semantics.lowering.lowering_map``)
    input_schedule: Schedule | None = field(compare=False, repr=False, default=None)
    activation_bytes: Mapping[int, float] | None = field(compare=False, repr=False, default=None)
    # when lowered: which lowering ("ppverify", or "torch": PyTorch's runtime's placement)
    lowering: str = ""

    def result_of(self, pid: PropertyId | str) -> PropertyResult:
        pid = PropertyId(pid)
        for p in self.properties:
            if p.property is pid:
                return p
        raise KeyError(pid)

    @property
    def failed(self) -> tuple[PropertyId, ...]:
        return tuple(p.property for p in self.properties if p.status is Status.FAILS)

    @property
    def violations(self) -> tuple[Violation, ...]:
        return tuple(v for p in self.properties for v in p.violations)

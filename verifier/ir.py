"""The schedule model (IR): what a pipeline-parallel schedule is, as frozen data.

This module is the contract every other part of the project is built against.
It imports nothing from the project and nothing outside the standard library.

Vocabulary (one word, one meaning, everywhere):

- rank: a device. Ranks are numbered ``0 .. num_ranks-1``.
- micro-batch: a slice of the batch, numbered ``0 .. num_microbatches-1``.
- stage: a model chunk placed on one rank, holding one layer (a block of the
  model's weights). Two stages holding the same layer are TIED: their weight
  gradients are summed (DualPipe's mirrored copies).
- route: the ordered list of stages a micro-batch traverses, with the
  micro-batches that take it. Every stage lies on exactly one route, so a
  stage's upstream and downstream neighbours are well defined.
- action: one entry of a rank's ordered program (see below); a rank's *step*
  is the index of an action in that rank's list.

Actions:

- ``Compute(kind, stage, mb)``: F (forward), B (full backward), I (input
  gradient only) or W (weight gradient only).
- ``Overlap(f, b)``: a forward and a backward (B or I) of two chunks on the same
  rank, run concurrently (DualPipe's F&B).
- ``Comm(kind, stage, mb)``: SEND_F / RECV_F (activations downstream), SEND_B /
  RECV_B (gradients upstream). ``stage`` is always the *local* stage on the
  rank that posts the op (PyTorch pipelining's convention): ``SEND_F(s, m)``
  sends the output of F(s, m) to the rank of the stage after ``s`` on its route,
  which must post ``RECV_F(next(s), m)``; ``SEND_B(s, m)`` sends the input
  gradient of ``s`` to the rank of the stage before ``s``, which posts
  ``RECV_B(prev(s), m)``. The peer is derived from the route, never stated.
- ``Batch(ops, wait)``: communication ops posted as one unit
  (``batch_isend_irecv`` / ``ncclGroupStart..End``). ``wait=True`` means the
  rank blocks right after posting until every op of the batch has completed
  (DualPipe's ``_commit_and_wait_comm``); ``wait=False`` posts asynchronously and
  only the computes that consume its receives wait for them.

What this module does not cover: parsing and schema validation (``verifier.format.io``),
well-formedness and the other correctness properties (the checker), lowering
(``verifier.semantics.lowering``), timing (``verifier.analysis.timeline``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from functools import cached_property
from typing import Any, Callable, Iterator, Mapping, Union

from verifier.errors import ScheduleError  # re-exported: users import it from here

FORMAT_NAME = "pp-schedule"
FORMAT_VERSION = "1.0"


class ComputeKind(str, Enum):
    F = "F"
    B = "B"
    I = "I"  # noqa: E741  (the zero-bubble papers' name)
    W = "W"

    def __str__(self) -> str:
        return self.value


class CommKind(str, Enum):
    SEND_F = "SEND_F"
    RECV_F = "RECV_F"
    SEND_B = "SEND_B"
    RECV_B = "RECV_B"

    def __str__(self) -> str:
        return self.value

    @property
    def is_send(self) -> bool:
        return self in (CommKind.SEND_F, CommKind.SEND_B)

    @property
    def is_forward(self) -> bool:
        return self in (CommKind.SEND_F, CommKind.RECV_F)


F, B, I, W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W  # noqa: E741
SEND_F, RECV_F, SEND_B, RECV_B = (
    CommKind.SEND_F,
    CommKind.RECV_F,
    CommKind.SEND_B,
    CommKind.RECV_B,
)


@dataclass(frozen=True, slots=True)
class Stage:
    """A stage (``id``) placed on a rank, holding a layer (tied layers share one)."""

    id: int
    rank: int
    layer: int


@dataclass(frozen=True, slots=True)
class Route:
    """Stages in traversal order and the micro-batches that take them."""

    stages: tuple[int, ...]
    microbatches: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Compute:
    """A compute (F, B, I or W) of one micro-batch on one stage."""

    kind: ComputeKind
    stage: int
    mb: int

    def __str__(self) -> str:
        return f"{self.stage}{self.kind.value}{self.mb}"  # op_text, inline


@dataclass(frozen=True, slots=True)
class Overlap:
    """A forward and a backward (B or I) of two chunks run concurrently on one rank."""

    f: Compute
    b: Compute

    def __str__(self) -> str:
        return f"({self.f};{self.b})OVERLAP_F_B"

    @property
    def computes(self) -> tuple[Compute, Compute]:
        return (self.f, self.b)


@dataclass(frozen=True, slots=True)
class Comm:
    """A point-to-point op (SEND_F, RECV_F, SEND_B, RECV_B) of one micro-batch for one stage."""

    kind: CommKind
    stage: int
    mb: int

    def __str__(self) -> str:
        return f"{self.stage}{self.kind.value}{self.mb}"  # op_text, inline


@dataclass(frozen=True, slots=True)
class Batch:
    """Ops posted together (a batched isend/irecv); with ``wait`` the step returns once they complete."""

    ops: tuple[Comm, ...]
    wait: bool = True

    def __str__(self) -> str:
        inner = ", ".join(str(op) for op in self.ops)
        return f"BATCH{'+wait' if self.wait else ''}[{inner}]"


# ---- notation ------------------------------------------------------------
# One notation for actions in every human-facing output: PyTorch pipelining's
# (``_Action.__repr__`` in torch/distributed/pipelining/schedules.py), which is
# also the CSV cell syntax: ``<stage><KIND><micro-batch>`` (``2F5``, ``0I3``,
# ``3SEND_F1``, ``1RECV_B0``) and ``(<F op>;<B or I op>)OVERLAP_F_B`` for an
# overlapped pair. A BATCH (no PyTorch form) is ``BATCH[op, op]``, with
# ``+wait`` when the rank waits for it. ``str()`` of every action is this
# notation; ``op_text`` writes one op from its parts, ``op_words`` adds the
# words for readers who do not know the notation.


def op_text(kind: "ComputeKind | CommKind | str", stage: int, mb: int) -> str:
    """One op in PyTorch's notation: ``op_text("F", 2, 5) == "2F5"``."""
    return f"{stage}{getattr(kind, 'value', kind)}{mb}"


def action_text(a: "Action") -> str:
    """Any action in the project's one notation (the same as ``str(a)``)."""
    return str(a)


def op_words(kind: "ComputeKind | CommKind | str", stage: int, mb: int) -> str:
    """``2F5 (stage 2, micro-batch 5)``: the notation plus the words."""
    return f"{op_text(kind, stage, mb)} (stage {stage}, micro-batch {mb})"


Action = Union[Compute, Overlap, Comm, Batch]


def _field_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...]:
    """The setters of a frozen slotted dataclass's fields, in field order (for loaders).

    ``o = object.__new__(cls)`` followed by ``set(o, value)`` for each field in
    order makes the same object as ``cls(*values)``: the generated ``__init__``
    stores each field into the same slot through ``object.__setattr__``, which
    costs about twice as much. Nothing else runs in ``__init__`` of a class this
    accepts (no ``__post_init__``); defaults are not applied, so every field
    must be set. The object is as immutable as any other: its class's
    ``__setattr__`` still refuses every assignment.
    """
    params = getattr(cls, "__dataclass_params__", None)
    slotted = "__slots__" in cls.__dict__
    if params is None or not params.frozen or not slotted or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a frozen slotted dataclass without __post_init__")
    return tuple(cls.__dict__[f.name].__set__ for f in fields(cls))


def _slot_twin(*classes: type) -> type:
    """A plain class with the slots of ``classes`` (frozen slotted dataclasses
    without ``__post_init__``, all with the same fields in the same order), for
    loaders: ``o = twin()``, ``o.<field> = value`` for every field, then
    ``o.__class__ = cls`` makes the same object as ``cls(*values)``.

    Making the twin, three slot stores and one class assignment cost about
    half of ``object.__new__`` plus ``_field_setters``' three descriptor calls
    (bench_check.py, the CSV case).
    CPython refuses the class assignment (TypeError) unless the two layouts
    are the same, and that is tried here once per class, so a field added to
    one of ``classes`` fails here, not in a loader. Every field must be set
    (an unset slot reads as AttributeError); afterwards the object is as
    immutable as any other of its class.
    """
    names = None
    for cls in classes:
        _field_setters(cls)  # the same conditions
        got = tuple(f.name for f in fields(cls))
        if names is not None and got != names:
            raise TypeError(f"{cls.__name__}'s fields {got} differ from {names}")
        names = got
    twin = type("_SlotTwin", (), {"__slots__": names})
    for cls in classes:
        o = twin()
        for name in names:
            setattr(o, name, None)
        o.__class__ = cls
    return twin


def computes_of(action: Action) -> tuple[Compute, ...]:
    """The compute ops inside one action (none for communication)."""
    if isinstance(action, Compute):
        return (action,)
    if isinstance(action, Overlap):
        return (action.f, action.b)
    return ()


def comms_of(action: Action) -> tuple[Comm, ...]:
    """The communication ops inside one action (none for compute)."""
    if isinstance(action, Comm):
        return (action,)
    if isinstance(action, Batch):
        return action.ops
    return ()


@dataclass(frozen=True)
class Schedule:
    """A whole schedule: placement, routes, and every rank's ordered actions.

    Construction checks only shape (types, lengths); whether ids are in range and
    actions sit on the right rank is property 1 of the checker (well-formed), so
    that a wrong schedule can still be loaded and its faults reported as data.
    """

    num_ranks: int
    num_microbatches: int
    stages: tuple[Stage, ...]
    routes: tuple[Route, ...]
    actions: tuple[tuple[Action, ...], ...]
    name: str = ""
    family: str = ""
    params: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_ranks < 1:
            raise ScheduleError(f"num_ranks must be >= 1, got {self.num_ranks}")
        if self.num_microbatches < 1:
            raise ScheduleError(
                f"num_microbatches must be >= 1, got {self.num_microbatches}"
            )
        if len(self.actions) != self.num_ranks:
            raise ScheduleError(
                f"actions has {len(self.actions)} rank lists but num_ranks is "
                f"{self.num_ranks}"
            )

    # ---- placement -------------------------------------------------------
    @cached_property
    def stage_by_id(self) -> dict[int, Stage]:
        return {s.id: s for s in self.stages}

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def rank_of(self, stage: int) -> int:
        return self.stage_by_id[stage].rank

    def layer_of(self, stage: int) -> int:
        return self.stage_by_id[stage].layer

    @cached_property
    def stages_on_rank(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in range(self.num_ranks)]
        for s in self.stages:
            if 0 <= s.rank < self.num_ranks:
                out[s.rank].append(s.id)
        return tuple(tuple(x) for x in out)

    @cached_property
    def tied_layers(self) -> dict[int, tuple[int, ...]]:
        """layer -> the stages holding it (only layers held by 2+ stages)."""
        by_layer: dict[int, list[int]] = {}
        for s in self.stages:
            by_layer.setdefault(s.layer, []).append(s.id)
        return {k: tuple(v) for k, v in by_layer.items() if len(v) > 1}

    @cached_property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({s.layer for s in self.stages}))

    # ---- routes ----------------------------------------------------------
    @cached_property
    def route_pos(self) -> dict[int, tuple[int, int]]:
        """stage -> (route index, position in route); first route wins. A
        stage missing here is on no route."""
        pos: dict[int, tuple[int, int]] = {}
        for ri, r in enumerate(self.routes):
            for k, s in enumerate(r.stages):
                pos.setdefault(s, (ri, k))
        return pos

    @property
    def _route_pos(self) -> dict[int, tuple[int, int]]:
        """The old private name of ``route_pos`` (kept for code not yet moved)."""
        return self.route_pos

    @cached_property
    def route_of_mb(self) -> dict[int, int]:
        """micro-batch -> route index; first route wins."""
        out: dict[int, int] = {}
        for ri, r in enumerate(self.routes):
            for m in r.microbatches:
                out.setdefault(m, ri)
        return out

    def route_of_stage(self, stage: int) -> int:
        return self.route_pos[stage][0]

    def next_stage(self, stage: int) -> int | None:
        """The stage after ``stage`` on its route, None for the last stage."""
        ri, k = self.route_pos[stage]
        st = self.routes[ri].stages
        return st[k + 1] if k + 1 < len(st) else None

    def prev_stage(self, stage: int) -> int | None:
        """The stage before ``stage`` on its route, None for the first stage."""
        ri, k = self.route_pos[stage]
        return self.routes[ri].stages[k - 1] if k > 0 else None

    def is_first_stage(self, stage: int) -> bool:
        return self.route_pos[stage][1] == 0

    def is_last_stage(self, stage: int) -> bool:
        ri, k = self.route_pos[stage]
        return k == len(self.routes[ri].stages) - 1

    def peer_of(self, op: Comm) -> int | None:
        """The rank on the other end of a communication op (None if it has none)."""
        if op.kind in (CommKind.SEND_F, CommKind.RECV_B):
            other = self.next_stage(op.stage)
        else:
            other = self.prev_stage(op.stage)
        return None if other is None else self.rank_of(other)

    def matching_op(self, op: Comm) -> Comm | None:
        """The op the peer must post to pair with ``op`` (same micro-batch)."""
        if op.kind is CommKind.SEND_F:
            s = self.next_stage(op.stage)
            return None if s is None else Comm(CommKind.RECV_F, s, op.mb)
        if op.kind is CommKind.RECV_F:
            s = self.prev_stage(op.stage)
            return None if s is None else Comm(CommKind.SEND_F, s, op.mb)
        if op.kind is CommKind.SEND_B:
            s = self.prev_stage(op.stage)
            return None if s is None else Comm(CommKind.RECV_B, s, op.mb)
        s = self.next_stage(op.stage)
        return None if s is None else Comm(CommKind.SEND_B, s, op.mb)

    # ---- actions ---------------------------------------------------------
    @property
    def is_compute_only(self) -> bool:
        return not any(
            isinstance(a, (Comm, Batch)) for acts in self.actions for a in acts
        )

    @property
    def num_actions(self) -> int:
        return sum(len(a) for a in self.actions)

    def iter_computes(self) -> Iterator[tuple[int, int, Compute]]:
        """(rank, step, compute) for every compute op, in rank then step order."""
        for r, acts in enumerate(self.actions):
            for i, a in enumerate(acts):
                for c in computes_of(a):
                    yield r, i, c

    def iter_comms(self) -> Iterator[tuple[int, int, Comm]]:
        """(rank, step, comm) for every communication op, in post order."""
        for r, acts in enumerate(self.actions):
            for i, a in enumerate(acts):
                if isinstance(a, Comm):  # comms_of, inline: this runs once per action
                    yield r, i, a
                elif isinstance(a, Batch):
                    for c in a.ops:
                        yield r, i, c

    def with_actions(self, actions, **changes) -> "Schedule":
        """A copy with other action lists (and optionally other metadata)."""
        kw = dict(
            num_ranks=self.num_ranks,
            num_microbatches=self.num_microbatches,
            stages=self.stages,
            routes=self.routes,
            actions=tuple(tuple(a) for a in actions),
            name=self.name,
            family=self.family,
            params=self.params,
        )
        kw.update(changes)
        return Schedule(**kw)


def loc(rank: int, step: int, sub: int | None = None) -> str:
    """The one way the project names a place in a schedule."""
    return f"rank {rank} step {step}" + (f".{sub}" if sub is not None else "")

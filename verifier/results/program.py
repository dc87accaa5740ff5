"""What checking a recorded program decides, as data.

The vocabulary of ``verifier.check.program``: the program properties (ids),
each property's status and violations, where a rank blocks and why (the hops
of a deadlock explanation), one row per communication model, and
``ProgramCheckResult``. It reuses ``Verdict`` and ``Status`` of
``verifier.results.check`` (same exit codes, same words). Places are
(rank, op index[, batch entry]) with the user's source line.

What it does not cover: deciding (``verifier.check.program``), rendering
(``verifier.cli.check_program``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.program import Program, Where
from verifier.results.check import Status, Verdict, _Ordered


class ProgramProperty(_Ordered):
    """The properties of a recorded program (specs/SEMANTICS.md, Recorded programs)."""

    WELL_FORMED = "well-formed"
    MESSAGE_MATCHING = "message-matching"
    COLLECTIVE_ORDER = "collective-order"
    DEADLOCK_FREE = "deadlock-free"


@dataclass(frozen=True)
class Place:
    """An op of the program: rank, op index (``sub``: entry of a batch) and source line."""

    rank: int
    op: int
    where: Where
    sub: int | None = None
    phrase: str = ""  # the op in the user's words (verifier.program.op_phrase)

    def __str__(self) -> str:
        sub = f" entry {self.sub}" if self.sub is not None else ""
        return f"rank {self.rank} op {self.op}{sub} ({self.where})"


@dataclass(frozen=True)
class ProgramViolation:
    """One counterexample: property, code, the sentence, and the ops it names."""

    property: ProgramProperty
    code: str
    message: str
    places: tuple[Place, ...] = ()
    model: str = ""  # deadlock-free: the communication model it fails under


@dataclass(frozen=True)
class Blocked:
    """Where a rank stops in the replay: the op it is in, and why it cannot go on."""

    place: Place
    reason: str


Item = tuple[int, int, "int | None"]  # (rank, op, batch entry or None): a request, or a unit without one


@dataclass(frozen=True)
class ProgramCertificate:
    """An engine's answer for one model, in a form a second opinion can check
    (``verifier.check.certificate.program``; specs/SEMANTICS.md "Program
    certificates").

    ``terminates``: then ``order`` holds every (rank, op) once, in the order the
    ranks return from their ops (a rank posts its next op as soon as it
    returns; completions happen as soon as the model allows), or ``runs`` the
    same order as (rank, first op, end op) runs of consecutive returns of one
    rank; ``completions``, where given, says when each unit (a P2P, batch or
    collective op, named by (rank, op)) completes, as three columns in
    completion order: the ranks, the ops, and how many returns come before
    each; so the witness is a whole execution (``returns()``: the order,
    whichever form holds it). Otherwise
    ``stops[r]`` is the op rank r never returns from (``len(ops)``: it
    finished), ``pending`` every request posted that never completes (a
    collective or an empty batch: the unit, entry None), and ``waits`` per
    blocked rank the pending items its op waits for (empty: a second wait
    under a model where it never returns)."""

    model: str
    terminates: bool
    order: tuple[tuple[int, int], ...] = ()
    stops: tuple[int, ...] = ()
    pending: tuple[Item, ...] = ()
    waits: tuple[tuple[int, tuple[Item, ...]], ...] = ()
    runs: tuple[tuple[int, int, int], ...] = ()
    completions: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    def returns(self) -> tuple[tuple[int, int], ...]:
        """The witness order as (rank, op) pairs (from ``runs`` when ``order`` is empty)."""
        if self.order or not self.runs:
            return self.order
        return tuple((r, k) for r, a, b in self.runs for k in range(a, b))


@dataclass(frozen=True)
class ModelOutcome:
    """Deadlock freedom under one communication model: ``terminates``, or the ranks
    that block (``blocked``), the explanation chain (``hops``: each a rank blocked at
    an op and what it waits for; ``closed``: the chain returns to its first rank) and
    a one-line ``summary`` in the user's words. ``implied_by``: not replayed,
    decided by the order between models from that model's termination."""

    model: str
    terminates: bool
    blocked: tuple[Blocked, ...] = ()
    hops: tuple[Blocked, ...] = ()
    closed: bool = False
    summary: str = ""
    num_events: int = 0
    certificate: ProgramCertificate | None = field(default=None, compare=False, repr=False)
    implied_by: str = ""


@dataclass(frozen=True)
class ProgramPropertyResult:
    property: ProgramProperty
    status: Status
    violations: tuple[ProgramViolation, ...] = ()
    decided_by: str = ""


@dataclass(frozen=True)
class ProgramCheckResult:
    """The answer for a program under ``comm_model`` (a model name, or ``all``:
    deadlock-free must hold under every model). ``models``: one outcome per model
    decided (all of them, whatever ``comm_model`` is). ``notes``: what the reader
    should know besides the verdict (how the recorded run ended and whether the
    replay explains it; what other models say). ``certificate``: the second
    opinion's word on the deadlock verdict ("accepted", "rejected: ..."; a
    rejected one makes ``deadlock-free`` UNKNOWN). ``engine``: who decided
    ``deadlock-free`` (replay, z3, both)."""

    verdict: Verdict
    comm_model: str
    properties: tuple[ProgramPropertyResult, ...]
    models: tuple[ModelOutcome, ...]
    notes: tuple[str, ...] = ()
    certificate: str = ""
    seconds: float = 0.0
    engine: str = "replay"
    program: Program = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    z3: dict = field(default_factory=dict, compare=False, repr=False)  # z3's statistics per model, where it ran

    kind = "program"

    def result_of(self, pid: ProgramProperty | str) -> ProgramPropertyResult:
        pid = ProgramProperty(pid)
        for p in self.properties:
            if p.property is pid:
                return p
        raise KeyError(pid)

    def outcome(self, model: str) -> ModelOutcome:
        for m in self.models:
            if m.model == model:
                return m
        raise KeyError(model)

    @property
    def failed(self) -> tuple[ProgramProperty, ...]:
        return tuple(p.property for p in self.properties if p.status is Status.FAILS)

    @property
    def violations(self) -> tuple[ProgramViolation, ...]:
        return tuple(v for p in self.properties for v in p.violations)

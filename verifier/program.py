"""The recorded-program IR: what each rank of a real training run called, in order.

A *program* (pp-schedule 1.1, ``"kind": "program"``; /specs/SEMANTICS.md,
"Recorded programs") is a schedule written in the runtime's own terms:
point-to-point ops with explicit peers and process groups, payload shapes and
dtypes, async handles and their waits, collectives, and the user's source line
of every call. ``fastpath/record*`` writes it from a run; this module is the
data model the reader (``verifier.format.program``) builds and the program
checker (``verifier.check.program``) decides. It imports nothing of the project
but ``verifier.errors``.

What it does not cover: reading or validating files, deciding anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Union

import numpy as np

PROGRAM_KIND = "program"
PROGRAM_VERSION = "1.1"

P2P_OPS = ("send", "recv", "isend", "irecv")
OUTCOMES = ("finished", "hung", "raised", "killed", "interrupted")


@dataclass(frozen=True, slots=True)
class Where:
    """The user's source line of a call (the first frame outside torch and the recorder)."""

    file: str
    line: int
    function: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


NOWHERE = Where("?", 0)


@dataclass(frozen=True, slots=True)
class Payload:
    """What a message carries in the runtime's terms: kind ``F`` (an activation)
    or ``B`` (a gradient), the stage and the micro-batch."""

    kind: str
    stage: int
    mb: int

    def __str__(self) -> str:
        return f"{self.stage}{self.kind}{self.mb}"


@dataclass(frozen=True, slots=True)
class P2P:
    """One point-to-point call: ``send``/``recv`` (blocking) or ``isend``/``irecv``
    (``handle`` names the Work it returned); ``peer`` is a global rank."""

    op: str
    peer: int
    group: int
    shape: tuple[int, ...]
    dtype: str
    where: Where = NOWHERE
    returned: bool = True
    tag: int = 0
    handle: int | None = None
    payload: Payload | None = None

    def __post_init__(self) -> None:
        if self.op not in P2P_OPS:
            raise ValueError(f"P2P op must be one of {P2P_OPS}, got {self.op!r}")

    @property
    def is_send(self) -> bool:
        return self.op in ("send", "isend")

    @property
    def blocking(self) -> bool:
        return self.op in ("send", "recv")


@dataclass(frozen=True, slots=True)
class BatchP2P:
    """One ``batch_isend_irecv`` call: isend/irecv ops posted as one group."""

    ops: tuple[P2P, ...]
    where: Where = NOWHERE
    returned: bool = True

    op = "batch"


@dataclass(frozen=True, slots=True)
class Wait:
    """``Work.wait()`` on the handle of an earlier isend/irecv (or batch entry)."""

    handle: int
    where: Where = NOWHERE
    returned: bool = True

    op = "wait"


@dataclass(frozen=True, slots=True)
class IsCompleted:
    """``Work.is_completed()``: a poll, with the answer the run saw."""

    handle: int
    result: bool
    where: Where = NOWHERE
    returned: bool = True

    op = "is_completed"


@dataclass(frozen=True, slots=True)
class Collective:
    """A blocking collective (``all_reduce``, ``broadcast``, ``barrier``, ...) on a group."""

    name: str
    group: int
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    where: Where = NOWHERE
    returned: bool = True

    op = "collective"


@dataclass(frozen=True, slots=True)
class ComputeOp:
    """A compute the runtime made visible (kind F/B/I/W of a stage and micro-batch)."""

    kind: str
    stage: int
    mb: int
    where: Where = NOWHERE
    returned: bool = True

    op = "compute"


ProgramOp = Union[P2P, BatchP2P, Wait, IsCompleted, Collective, ComputeOp]


@dataclass(frozen=True, slots=True)
class Group:
    """A process group: id 0 is the world; ``ranks`` are global ranks in group order."""

    id: int
    ranks: tuple[int, ...]
    name: str = ""


@dataclass(frozen=True, slots=True)
class RankProgram:
    """One rank's calls in issue order, and how its run ended."""

    rank: int
    ops: tuple[ProgramOp, ...]
    outcome: str = "finished"
    error: str | None = None

    @property
    def truncated(self) -> bool:
        """The recording stops before the rank's program did (hung, raised, killed)."""
        return self.outcome != "finished"


@dataclass(frozen=True)
class Program:
    """A recorded run: ``ranks[r]`` is rank r's program. ``recorded`` is the
    recorder's metadata (command, backends, torch version, outcome) as read."""

    num_ranks: int
    groups: tuple[Group, ...]
    ranks: tuple[RankProgram, ...]
    recorded: dict | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.ranks) != self.num_ranks:
            raise ValueError(f"num_ranks is {self.num_ranks} but {len(self.ranks)} rank programs are given")
        for i, rp in enumerate(self.ranks):
            if rp.rank != i:
                raise ValueError(f"ranks[{i}] is the program of rank {rp.rank}; expected rank {i}")

    @property
    def num_ops(self) -> int:
        return sum(len(rp.ops) for rp in self.ranks)

    def group(self, gid: int) -> Group | None:
        for g in self.groups:
            if g.id == gid:
                return g
        return None

    @cached_property
    def columns(self) -> "ProgramColumns":
        """The ops as flat arrays (``ProgramColumns``), built on first use."""
        return ProgramColumns(self)

    @property
    def outcome(self) -> str:
        if self.recorded and isinstance(self.recorded.get("outcome"), str):
            return self.recorded["outcome"]
        bad = [rp.outcome for rp in self.ranks if rp.outcome != "finished"]
        return bad[0] if bad else "finished"


# What an op is, as ``ProgramColumns.code`` says: a compute (or anything that
# neither posts nor waits), an isend/irecv, a send/recv, a batch_isend_irecv,
# a collective, a wait, an is_completed poll.
OTHER, POSTS, BLOCKS, BATCH, COLLECTIVE, WAIT, POLL = range(7)
_CODE = {ComputeOp: OTHER, P2P: POSTS, BatchP2P: BATCH, Collective: COLLECTIVE, Wait: WAIT,
         IsCompleted: POLL}
_RETURNED = attrgetter("returned")
_IS_SEND = {"send": True, "isend": True, "recv": False, "irecv": False}


class ProgramColumns:
    """The program's data as flat arrays: the data as written, no semantics
    (no matching, no streams). Op ``g`` is op ``k`` of rank ``r`` with
    ``g = off[r] + k``; an *entry* is a P2P op or one op of a batch, in op order.

    Per op: ``ops`` (the objects), ``code`` (OTHER, POSTS, BLOCKS, BATCH,
    COLLECTIVE, WAIT, POLL), ``rank``, ``handle`` (of a wait or poll, else -1),
    ``group`` (of a collective, else -1); ``not_returned``: the ops the
    recording says never returned. Per entry: ``entries`` (the P2P objects),
    ``e_op`` (its op), ``e_sub`` (its index in a batch, -1 for a plain P2P),
    ``e_send``, ``e_peer``, ``e_group``, ``e_handle`` (-1: none)."""

    def __init__(self, p: "Program"):
        ops = self.ops = [op for rp in p.ranks for op in rp.ops]
        lens = [len(rp.ops) for rp in p.ranks]
        n = len(ops)
        self.off = off = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=off[1:])
        self.rank = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
        code = self.code = np.fromiter(map(_CODE.__getitem__, map(type, ops)), dtype=np.int8, count=n)
        p2p = np.flatnonzero(code == POSTS).tolist()
        if p2p:
            blocking = [i for i in p2p if ops[i].op in ("send", "recv")]
            code[blocking] = BLOCKS
        self.handle = np.full(n, -1, dtype=np.int64)
        hix = np.flatnonzero(code >= WAIT)
        self.handle[hix] = [ops[i].handle for i in hix.tolist()]
        self.group = np.full(n, -1, dtype=np.int64)
        cix = np.flatnonzero(code == COLLECTIVE)
        self.group[cix] = [ops[i].group for i in cix.tolist()]
        self.not_returned = [] if all(map(_RETURNED, ops)) else \
            np.flatnonzero(~np.fromiter(map(_RETURNED, ops), dtype=bool, count=n)).tolist()
        uix = np.flatnonzero((code >= POSTS) & (code <= BATCH))
        nested = [op.ops if type(op) is BatchP2P else (op,) for op in map(ops.__getitem__, uix.tolist())]
        counts = np.array([len(x) for x in nested], dtype=np.int64)
        ents = self.entries = [e for x in nested for e in x]
        ne = len(ents)
        self.e_op = np.repeat(uix, counts)
        first = np.cumsum(counts) - counts
        self.e_sub = np.arange(ne, dtype=np.int64) - np.repeat(first, counts)
        self.e_sub[code[self.e_op] != BATCH] = -1
        self.e_send = np.array([_IS_SEND[e.op] for e in ents], dtype=bool).reshape(ne)
        self.e_peer = np.array([e.peer for e in ents], dtype=np.int64).reshape(ne)
        self.e_group = np.array([e.group for e in ents], dtype=np.int64).reshape(ne)
        self.e_handle = np.array([-1 if e.handle is None else e.handle for e in ents], dtype=np.int64).reshape(ne)


def shape_text(shape: tuple[int, ...] | None, dtype: str | None) -> str:
    """``4x1024 bfloat16`` (a scalar: ``scalar bfloat16``)."""
    if shape is None:
        return dtype or ""
    dims = "x".join(str(d) for d in shape) if shape else "scalar"
    return f"{dims} {dtype}" if dtype else dims


def op_phrase(op: ProgramOp, rank: int | None = None) -> str:
    """An op in the user's words: ``recv from rank 3 (4x1024 bfloat16, 1F5)``."""
    if isinstance(op, P2P):
        direction = "to" if op.is_send else "from"
        extra = shape_text(op.shape, op.dtype)
        if op.payload is not None:
            extra += f", {op.payload}"
        group = f" in group {op.group}" if op.group != 0 else ""
        return f"`{op.op}` {direction} rank {op.peer}{group} ({extra})"
    if isinstance(op, BatchP2P):
        inner = ", ".join(op_phrase(x).replace("`", "") for x in op.ops)
        return f"`batch_isend_irecv` [{inner}]"
    if isinstance(op, Wait):
        return f"`wait` on handle {op.handle}"
    if isinstance(op, IsCompleted):
        return f"`is_completed` on handle {op.handle}"
    if isinstance(op, Collective):
        shp = f" ({shape_text(op.shape, op.dtype)})" if op.shape is not None else ""
        return f"`{op.name}` on group {op.group}{shp}"
    if isinstance(op, ComputeOp):
        return f"compute {op.stage}{op.kind}{op.mb}"
    return repr(op)

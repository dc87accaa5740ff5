"""Communication models as data: the rules of specs/SEMANTICS.md "Communication
models", one frozen ``CommModel`` per model, in a registry ``MODELS``.

What it is: each model states, in fields an engine reads (never by its name),

- ``send``: when a send completes. ``BUFFERED``: once its unit is active (an
  unmatched send too); a receive completes once its unit is active and its
  matched send has completed. ``RENDEZVOUS``: a send and its matched receive
  complete together, once both of their units are active; an unmatched op
  never completes.
- ``second_wait_blocks``: a second wait on a completed handle never returns
  (only programs with handles can say that; schedules cannot).
- ``stream``: which communication units (a plain op, or a ``BATCH`` as a
  whole) share an in-order stream. A unit is *active* once it is posted and
  the previous unit of its stream (if any) has completed. ``NONE``: no stream,
  a unit is active when posted. ``RANK``: one stream per rank. ``PAIR``: an
  unbatched op is on the stream of its (rank, peer) pair, every ``BATCH`` on
  the rank's group stream (``stream_of``).

What blocks the host is the same in every model (SEMANTICS.md "Programs"): a
compute waits until the receives it consumes have completed, a ``BATCH`` with
``wait`` until all of its ops (sends included) have, and a schedule terminates
only when every op posted has completed. Ops are matched FIFO per ordered rank
pair in every model (``verifier.semantics.tables``).

The order between models (``implies``): a stream partition finer than another
only drops waits, and a buffered send completes no later than a rendezvous
one, so every execution under a stricter model is one under the weaker, and
deadlock-free under ``nccl`` implies it under ``nccl-pairs``, then ``gloo``,
then ``eager`` (``MODELS`` is in that order; tests/test_comm_models.py checks it).

What it does not cover: deciding anything (the engines), the citations' prose
(specs/SEMANTICS.md), asymmetric grouping across communicators (NCCL's
undefined behaviour; matching here is per rank pair whatever the stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Mapping


class SendRule(str, Enum):
    """When a send completes."""

    BUFFERED = "buffered"  # once its unit is active (posted, for no stream)
    RENDEZVOUS = "rendezvous"  # together with its matched receive


class StreamRule(str, Enum):
    """Which units share an in-order stream."""

    NONE = "none"  # no stream order: a unit is active once posted
    RANK = "rank"  # one stream per rank
    PAIR = "pair"  # unbatched ops: one stream per (rank, peer); BATCHes: the rank's group stream


# the stream key of a BATCH under StreamRule.PAIR (peers are ranks >= 0)
GROUP_STREAM = -1


@dataclass(frozen=True)
class CommModel:
    """One communication model: its name, its rules, and the source it follows."""

    name: str
    send: SendRule
    stream: StreamRule
    summary: str  # one line for --help and reports
    source: str  # the runtime behaviour it follows (SEMANTICS.md cites the details)
    # a second wait() on a handle that already completed never returns (gloo,
    # measured on torch 2.13 CPU); read where the format has handles (recorded programs)
    second_wait_blocks: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower() or " " in self.name:
            raise ValueError(f"a model name is one lower-case word, got {self.name!r}")
        if not isinstance(self.send, SendRule) or not isinstance(self.stream, StreamRule):
            raise ValueError(f"model {self.name}: send {self.send!r} and stream {self.stream!r} "
                             "must be a SendRule and a StreamRule")

    @property
    def rendezvous(self) -> bool:
        return self.send is SendRule.RENDEZVOUS

    @property
    def has_streams(self) -> bool:
        return self.stream is not StreamRule.NONE

    def stream_of(self, batched: bool, peer: int) -> int | None:
        """The stream key of a unit within its rank: None (no stream order),
        0 (the rank's one stream), ``peer`` (an unbatched op's pair stream) or
        ``GROUP_STREAM`` (a BATCH under ``PAIR``)."""
        if self.stream is StreamRule.NONE:
            return None
        if self.stream is StreamRule.RANK:
            return 0
        return GROUP_STREAM if batched else peer

    def __str__(self) -> str:
        return self.name


NCCL = CommModel(
    "nccl", SendRule.RENDEZVOUS, StreamRule.RANK,
    "one communication stream per rank, rendezvous sends, a BATCH as one unit (strictest)",
    "NCCL P2P kernels on one stream; ncclGroupStart/End launches a group as one kernel")
NCCL_PAIRS = CommModel(
    "nccl-pairs", SendRule.RENDEZVOUS, StreamRule.PAIR,
    "a stream per peer pair for unbatched ops, a BATCH on the group's stream, rendezvous sends",
    "PyTorch ProcessGroupNCCL with lazy init: a 2-rank communicator per pair (getKeySendRecv); "
    "batch_isend_irecv as one group on the group's communicator")
GLOO = CommModel(
    "gloo", SendRule.RENDEZVOUS, StreamRule.NONE,
    "rendezvous sends, no stream order, host blocks on consumed receives and waited batches",
    "Gloo pairs: a send's data moves once the peer posted its receive; measured on torch 2.13 CPU",
    second_wait_blocks=True)
EAGER = CommModel(
    "eager", SendRule.BUFFERED, StreamRule.NONE,
    "buffered sends that never block; a receive waits for its send",
    "PyTorch pipelining's schedule simulator; NCCL sends small enough for the peer's buffer")

# strictest first: deadlock-free under a model implies it under every later one
MODELS: Mapping[str, CommModel] = MappingProxyType(
    {m.name: m for m in (NCCL, NCCL_PAIRS, GLOO, EAGER)})
NAMES: tuple[str, ...] = tuple(MODELS)
DEFAULT = NCCL.name


def model(name: "str | CommModel") -> CommModel:
    """The model of that name (a CommModel is returned as is); ValueError names
    the known ones."""
    if isinstance(name, CommModel):
        return name
    m = MODELS.get(name)
    if m is None:
        raise ValueError(f"unknown communication model {name!r}; choose one of {', '.join(NAMES)}")
    return m


def implies(stricter: "str | CommModel", weaker: "str | CommModel") -> bool:
    """Whether deadlock-free under ``stricter`` implies it under ``weaker`` (the
    chain of ``MODELS``; a model implies itself)."""
    return NAMES.index(model(stricter).name) <= NAMES.index(model(weaker).name)

"""The hooks a runtime (or a user's training loop) calls to tell the recorder what it does.

What it is: two calls that cost nothing when no recording is active, so a
training loop may keep them in for good:

- ``compute(kind, stage, mb)``: records a compute op (kind "F", "B", "I" or "W"
  of model chunk ``stage`` on micro-batch ``mb``) at this point of the rank's
  program.
- ``with payload(kind, stage, mb):``: every point-to-point op posted inside the
  block (send, recv, isend, irecv, and every ``P2POp`` created inside it) carries
  that payload: what the message holds, named by its producer (kind "F": the
  forward output of ``stage``; kind "B": the input gradient from the backward of
  ``stage``), the same on the sending and the receiving side.

torch.distributed.pipelining, DeepSeek's DualPipe and megatron-core are hooked
by the recorder itself (fastpath.record.recorder); these are for runtimes it
does not know.

What it does not cover: recording (fastpath.record.recorder sets ``ACTIVE``).
Imports no torch.
"""

from __future__ import annotations

from contextlib import contextmanager

KINDS = ("F", "B", "I", "W")

ACTIVE = None  # the process's Recorder while one is installed (fastpath.record.recorder)


def _checked(kind: str, stage: int, mb: int) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(stage, int) or not isinstance(mb, int) or stage < 0 or mb < 0:
        raise ValueError(f"stage and mb must be integers >= 0, got stage={stage!r} mb={mb!r}")
    return {"kind": kind, "stage": int(stage), "mb": int(mb)}


def compute(kind: str, stage: int, mb: int) -> None:
    """Record a compute op of this rank (a no-op when nothing is recording)."""
    rec = ACTIVE
    if rec is not None:
        rec.compute(_checked(kind, stage, mb))


@contextmanager
def payload(kind: str, stage: int, mb: int):
    """Point-to-point ops posted (or ``P2POp``s created) inside carry this payload."""
    rec = ACTIVE
    if rec is None:
        yield
        return
    saved = rec.payload
    rec.payload = _checked(kind, stage, mb)
    try:
        yield
    finally:
        rec.payload = saved

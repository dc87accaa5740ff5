"""DeepSeek's DualPipe (PyPI ``dualpipe``), made visible to the recorder.

What it is: ``patch(recorder, module)`` wraps methods of ``dualpipe.DualPipe``
once the script imports ``dualpipe.dualpipe``: its forward, backward (B, or I
when zero-bubble defers the weight gradient), weight (W, first in first out,
as its WeightGradStore) and overlapped forward-and-backward computes become
compute ops, and the ``P2POp``s its ``_send_*``/``_recv_*`` build carry
payloads named by their producer. Stages are numbered along the two routes:
on rank r (its pipeline rank) the chunk of phase 0 is stage r (route 0 runs
over ranks 0..R-1) and the chunk of phase 1 is stage 2R-1-r (route 1 runs
back over R-1..0), so on each route the previous stage is the stage - 1;
micro-batch numbers are the chunk ids DualPipe counts per phase.

What it does not cover: DualPipeV (absent from the PyPI package), other
versions' private methods (a method that is absent is left alone).
"""

from __future__ import annotations

import functools

MODULE = "dualpipe.dualpipe"


def _stage(pipe, phase: int) -> tuple[int, int]:
    """(stage, phase after DualPipe's second-half swap) of ``phase`` on this rank."""
    p = int(phase) ^ int(pipe.is_in_second_half)
    r, n = pipe.rank, pipe.num_ranks
    return (r if p == 0 else 2 * n - 1 - r), p


def patch_module(rec, module) -> None:
    cls = getattr(module, "DualPipe", None)
    if cls is None:
        return
    for name, kind, delta, counter in (
            ("_send_forward", "F", 0, "current_send_f_chunk_id"),
            ("_recv_forward", "F", -1, "current_recv_f_chunk_id"),
            ("_send_backward", "B", 0, "current_send_b_chunk_id"),
            ("_recv_backward", "B", 1, "current_recv_b_chunk_id")):
        if hasattr(cls, name):
            rec._patch(cls, name, _with_payload(rec, getattr(cls, name), kind, delta, counter))
    for name, make in (("_forward_compute_chunk", _forward), ("_backward_compute_chunk", _backward),
                       ("_forward_backward_compute_chunk", _overlapped), ("_weight_chunk", _weight)):
        if hasattr(cls, name):
            rec._patch(cls, name, make(rec, getattr(cls, name)))


def _with_payload(rec, orig, kind: str, delta: int, counter: str):
    @functools.wraps(orig)
    def wrapper(pipe, phase, *args, **kwargs):
        stage, p = _stage(pipe, phase)
        saved = rec.payload
        rec.payload = {"kind": kind, "stage": stage + delta, "mb": int(getattr(pipe, counter)[p])}
        try:
            return orig(pipe, phase, *args, **kwargs)
        finally:
            rec.payload = saved

    return wrapper


def _forward(rec, orig):
    @functools.wraps(orig)
    def wrapper(pipe, phase, *args, **kwargs):
        stage, p = _stage(pipe, phase)
        rec.compute({"kind": "F", "stage": stage, "mb": int(pipe.current_f_chunk_id[p])})
        return orig(pipe, phase, *args, **kwargs)

    return wrapper


def _backward(rec, orig):
    @functools.wraps(orig)
    def wrapper(pipe, phase, enable_zb=False, *args, **kwargs):
        if not pipe.forward_only:
            stage, p = _stage(pipe, phase)
            mb = int(pipe.current_b_chunk_id[p])
            rec.compute({"kind": "I" if enable_zb else "B", "stage": stage, "mb": mb})
            if enable_zb:
                pipe.__dict__.setdefault("_ppv_deferred_w", []).append((stage, mb))
        return orig(pipe, phase, enable_zb, *args, **kwargs)

    return wrapper


def _overlapped(rec, orig):
    @functools.wraps(orig)
    def wrapper(pipe, phase0, phase1, *args, **kwargs):
        if not pipe.forward_only and pipe.overlaped_forward_backward:
            s0, p0 = _stage(pipe, phase0)
            s1, p1 = _stage(pipe, phase1)  # otherwise its own forward and backward record them
            rec.compute({"kind": "F", "stage": s0, "mb": int(pipe.current_f_chunk_id[p0])})
            rec.compute({"kind": "B", "stage": s1, "mb": int(pipe.current_b_chunk_id[p1])})
        return orig(pipe, phase0, phase1, *args, **kwargs)

    return wrapper


def _weight(rec, orig):
    @functools.wraps(orig)
    def wrapper(pipe, *args, **kwargs):
        res = orig(pipe, *args, **kwargs)  # posts and waits its pending messages first
        deferred = pipe.__dict__.get("_ppv_deferred_w")
        if not pipe.forward_only and deferred:
            stage, mb = deferred.pop(0)
            rec.compute({"kind": "W", "stage": stage, "mb": mb})
        return res

    return wrapper

"""Activation memory by program order: the one definition every part uses.

An activation of (stage s, micro-batch m) becomes live when F(s, m) starts and
is freed when the backward that consumes it ends: B(s, m), or I(s, m) when the
backward is split (the zero-bubble papers' accounting, where W keeps only the
small weight-gradient inputs; this is what makes ZB-H1's peak equal 1F1B's).
Inside an OVERLAP the forward's activation is counted before the backward
frees its own, since both run at once. Units: one stage's activation for one
micro-batch (``weights`` may give a size per stage).

Not covered: parameter memory, gradients, optimizer state (see analysis).
"""

from __future__ import annotations

from typing import Mapping

from verifier.ir import Compute, ComputeKind, Overlap, Schedule, computes_of

_F, _B, _I = ComputeKind.F, ComputeKind.B, ComputeKind.I


def peak_activations(
    s: Schedule, weights: Mapping[int, float] | None = None
) -> list[float]:
    """Peak live activations per rank (the maximum over every step, F before B)."""
    if weights is None:
        return [_unit_peak(acts) for acts in s.actions]
    peaks = []
    for acts in s.actions:
        live = peak = 0.0
        for a in acts:
            cs = computes_of(a)
            for c in cs:  # forwards first: inside an OVERLAP both are live at once
                if c.kind is _F:
                    live += weights.get(c.stage, 1.0)
            peak = max(peak, live)
            for c in cs:
                if c.kind is _B or c.kind is _I:
                    live -= weights.get(c.stage, 1.0)
        peaks.append(peak)
    return peaks


def _unit_peak(acts) -> float:
    """The same count with every activation of size 1, in one tight pass (the
    checker runs it on every schedule): live only grows at a forward, so the
    peak is taken there."""
    live = peak = 0.0
    for a in acts:
        tp = type(a)
        if tp is Compute:
            kind = a.kind
            if kind is _F:
                live += 1.0
                if live > peak:
                    peak = live
            elif kind is _B or kind is _I:
                live -= 1.0
        elif tp is Overlap:
            for c in (a.f, a.b):  # forwards first: both activations are live at once
                if c.kind is _F:
                    live += 1.0
            if live > peak:
                peak = live
            for c in (a.f, a.b):
                if c.kind is _B or c.kind is _I:
                    live -= 1.0
    return peak

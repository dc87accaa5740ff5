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

from verifier.ir import ComputeKind, Schedule, computes_of


def peak_activations(
    s: Schedule, weights: Mapping[int, float] | None = None
) -> list[float]:
    """Peak live activations per rank (the maximum over every step, F before B)."""
    peaks = []
    for rank in range(s.num_ranks):
        live = peak = 0.0
        for a in s.actions[rank]:
            cs = computes_of(a)
            for c in cs:  # forwards first: inside an OVERLAP both are live at once
                if c.kind is ComputeKind.F:
                    live += 1.0 if weights is None else weights.get(c.stage, 1.0)
            peak = max(peak, live)
            for c in cs:
                if c.kind in (ComputeKind.B, ComputeKind.I):
                    live -= 1.0 if weights is None else weights.get(c.stage, 1.0)
        peaks.append(peak)
    return peaks

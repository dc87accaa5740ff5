"""The unpipelined baseline and the per-parameter comparison against it.

What it is: ``run_baseline`` runs the same layers on the same micro-batches with
no pipeline (layer 0 .. N-1 in order, one micro-batch at a time) and returns the
per-micro-batch losses and the gradients; ``compare`` sets a pipelined result
beside it, parameter by parameter (max abs difference, max relative difference,
bitwise equality) and loss by loss.

How gradients are accumulated (the same rule in the pipeline executor, which is
what makes bitwise equality possible for every schedule family): each
micro-batch's weight gradient is kept separately, and the total is summed in
micro-batch order ``g_0 + g_1 + ... + g_{M-1}`` (``accumulate``), whatever order
the schedule ran its W's in. A tied layer (two stages holding the same layer,
DualPipe's mirrored copies) is no exception: each micro-batch uses one copy, and
summing per-micro-batch gradients in order equals summing the copies'
gradients (the all-reduce DeepSeek does), with a fixed order.

Loss reduction over micro-batches (``loss_reduction``): ``"sum"`` (default)
back-propagates each micro-batch loss as is, so gradients are those of
``sum_m loss_m``; ``"mean"`` back-propagates ``loss_m * (1/M)``, so gradients
are those of ``mean_m loss_m``. Inside one micro-batch the loss is whatever
``loss_fn`` returns (reference.models.loss_fn: mean over elements).

Tolerances: float64 results are expected to be bitwise equal; when they are
not (a model with 3+ consumers of one tensor, or a user loss that is not
deterministic), ``compare`` also states whether every element is within
``|a - b| <= atol + rtol * |b|`` (``default_tolerance``: float64 rtol 1e-10 atol
1e-12, float32 rtol 1e-4 atol 1e-6).

What it does not cover: optimiser steps, gradient clipping, data parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from reference.models import as_layer_list, loss_fn as default_loss_fn, named_parameters
from verifier.ir import ScheduleError

from reference.names import LOSS_REDUCTIONS  # noqa: E402  (importable without torch)


def check_reduction(loss_reduction: str) -> None:
    if loss_reduction not in LOSS_REDUCTIONS:
        raise ScheduleError(
            f"unknown loss reduction {loss_reduction!r}; choose one of "
            f"{', '.join(LOSS_REDUCTIONS)}"
        )


def loss_for_backward(loss: Tensor, loss_reduction: str, num_microbatches: int) -> Tensor:
    """The tensor a micro-batch back-propagates from (shared with the executor)."""
    if loss_reduction == "mean":
        return loss * (1.0 / num_microbatches)
    return loss


def accumulate(per_microbatch: Sequence[Tensor]) -> Tensor:
    """``g_0 + g_1 + ... `` left to right, in micro-batch order (never in place on g_0)."""
    total = per_microbatch[0].clone()
    for g in per_microbatch[1:]:
        total.add_(g)
    return total


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for a dtype."""
    if dtype == torch.float64:
        return 1e-10, 1e-12
    if dtype in (torch.float16, torch.bfloat16):
        return 1e-2, 1e-3
    return 1e-4, 1e-6


@dataclass(frozen=True)
class BaselineResult:
    losses: tuple[Tensor, ...]  # per micro-batch, as loss_fn returned it (detached)
    grads: Mapping[str, Tensor]  # "layer{i}.{name}" -> summed gradient

    @property
    def total_loss(self) -> float:
        return float(sum(float(x) for x in self.losses))


def run_baseline(
    layers: nn.Module | Sequence[nn.Module],
    microbatches: Sequence[tuple[Tensor, Tensor]],
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = default_loss_fn,
    loss_reduction: str = "sum",
) -> BaselineResult:
    """Unpipelined forward and backward of every micro-batch (see module docstring).

    Does not touch ``.grad`` of the layers; returns the gradients instead.
    """
    check_reduction(loss_reduction)
    layer_list = as_layer_list(layers)
    named = list(named_parameters(layer_list))
    names = [n for n, _ in named]
    params = [p for _, p in named]
    m_total = len(microbatches)
    if m_total < 1:
        raise ScheduleError("run_baseline needs at least one micro-batch")
    per_mb: list[list[Tensor]] = [[] for _ in params]
    losses: list[Tensor] = []
    for x, target in microbatches:
        h = x
        for layer in layer_list:
            h = layer(h)
        loss = loss_fn(h, target)
        losses.append(loss.detach())
        grads = torch.autograd.grad(
            loss_for_backward(loss, loss_reduction, m_total), params, allow_unused=True
        )
        for acc, g, p in zip(per_mb, grads, params):
            acc.append(torch.zeros_like(p) if g is None else g)
    return BaselineResult(
        tuple(losses), {n: accumulate(gs) for n, gs in zip(names, per_mb)}
    )


@dataclass(frozen=True)
class ParamDiff:
    name: str
    max_abs: float  # max |a - b|
    max_rel: float  # max |a - b| / max |b| (0 when both are all zero)
    bitwise: bool
    within_tolerance: bool


@dataclass(frozen=True)
class LossDiff:
    mb: int
    pipeline: float
    baseline: float
    abs_diff: float
    bitwise: bool


@dataclass(frozen=True)
class Comparison:
    params: tuple[ParamDiff, ...]
    losses: tuple[LossDiff, ...]
    missing: tuple[str, ...]  # in the baseline, absent from the pipeline result
    extra: tuple[str, ...]  # in the pipeline result, absent from the baseline
    rtol: float
    atol: float

    @property
    def bitwise(self) -> bool:
        return (
            not self.missing
            and not self.extra
            and all(p.bitwise for p in self.params)
            and all(x.bitwise for x in self.losses)
        )

    @property
    def matches(self) -> bool:
        """Every gradient and loss within tolerance and nothing missing."""
        return (
            not self.missing
            and not self.extra
            and all(p.within_tolerance for p in self.params)
            and all(
                abs(x.pipeline - x.baseline) <= self.atol + self.rtol * abs(x.baseline)
                for x in self.losses
            )
        )

    @property
    def max_abs(self) -> float:
        vals = [p.max_abs for p in self.params] + [x.abs_diff for x in self.losses]
        return max(vals, default=0.0)

    @property
    def max_rel(self) -> float:
        return max((p.max_rel for p in self.params), default=0.0)

    @property
    def mismatched(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if not p.within_tolerance) + self.missing


def _diff(name: str, a: Tensor, b: Tensor, rtol: float, atol: float) -> ParamDiff:
    if a.shape != b.shape:
        return ParamDiff(name, float("inf"), float("inf"), False, False)
    a64, b64 = a.detach().double(), b.detach().double()
    d = (a64 - b64).abs()
    max_abs = float(d.max()) if d.numel() else 0.0
    scale = float(b64.abs().max()) if b64.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    ok = bool((d <= atol + rtol * b64.abs()).all())
    return ParamDiff(name, max_abs, max_rel, bool(torch.equal(a, b)), ok)


def compare(
    result,
    baseline: BaselineResult,
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> Comparison:
    """Per-parameter and per-loss differences of ``result`` against ``baseline``
    (anything with ``grads``: name -> tensor and ``losses``: per micro-batch,
    tensors or floats; e.g. a PipelineResult or a BaselineResult).
    Tolerances default to ``default_tolerance`` of the baseline's dtype."""
    some = next(iter(baseline.grads.values()), None)
    dt = some.dtype if some is not None else torch.float64
    d_rtol, d_atol = default_tolerance(dt)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    rows = tuple(
        _diff(n, result.grads[n], g, rtol, atol)
        for n, g in baseline.grads.items()
        if n in result.grads
    )
    missing = tuple(n for n in baseline.grads if n not in result.grads)
    extra = tuple(n for n in result.grads if n not in baseline.grads)
    losses = []
    for m, lb in enumerate(baseline.losses):
        lp = result.losses[m] if m < len(result.losses) else None
        if lp is None:
            losses.append(LossDiff(m, float("nan"), float(lb), float("inf"), False))
            continue
        if isinstance(lp, Tensor) and isinstance(lb, Tensor):
            same = lp.dtype == lb.dtype and bool(torch.equal(lp, lb))
        else:  # plain floats (e.g. gathered from other processes)
            same = float(lp) == float(lb)
        losses.append(LossDiff(m, float(lp), float(lb), abs(float(lp) - float(lb)), same))
    if len(result.losses) > len(baseline.losses):
        missing = missing + tuple(
            f"loss of micro-batch {m} (not in baseline)"
            for m in range(len(baseline.losses), len(result.losses))
        )
    return Comparison(rows, tuple(losses), missing, extra, rtol, atol)


__all__ = [
    "LOSS_REDUCTIONS",
    "BaselineResult",
    "Comparison",
    "LossDiff",
    "ParamDiff",
    "accumulate",
    "compare",
    "default_tolerance",
    "loss_for_backward",
    "run_baseline",
]

"""Split backward through plain autograd: input gradient (I) now, weight gradient (W) later.

What it is: the zero-bubble I/W split for any ``nn.Module`` with no change to
the module. ``backward_input`` runs autograd from the stage outputs to the stage
inputs only, keeping the graph (``retain_graph=True``), and returns a
``WeightGradState`` that holds what the weight pass needs (outputs, their
gradients, the parameters). ``backward_weight`` later runs autograd from the same
outputs to the parameters and frees the graph. ``backward_full`` is the unsplit
backward (B): one autograd pass to inputs and parameters together.

Numerics: the weight pass recomputes the gradients of the activations inside
the stage (autograd has no public way to keep them), using the same kernels on
the same tensors, so each parameter gradient is bitwise the one ``backward_full``
(or an unpipelined ``torch.autograd.grad``) gives. Cost: the weight pass repeats
the activation-gradient work inside the stage, once.

A parameter the outputs do not depend on gets a zero gradient (never None).

What it does not cover: saving memory by dropping activations the weight pass
does not need (PyTorch pipelining's ``stage_backward_weight`` does that by
walking the autograd graph), gradient accumulation into ``.grad`` (callers get
tensors back and decide how to sum them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

TensorOrSeq = Tensor | Sequence[Tensor]


def _as_tuple(x: TensorOrSeq | None) -> tuple:
    if x is None:
        return ()
    if isinstance(x, Tensor):
        return (x,)
    return tuple(x)


def _grad_outputs(outputs: tuple, grad_outputs: TensorOrSeq | None):
    gos = _as_tuple(grad_outputs)
    if not gos:
        return None
    if len(gos) != len(outputs):
        raise ValueError(
            f"{len(outputs)} outputs but {len(gos)} grad_outputs were given"
        )
    return gos


def _fill(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, like))


@dataclass
class WeightGradState:
    """What the weight pass needs after ``backward_input``; usable once."""

    outputs: tuple[Tensor, ...]
    grad_outputs: tuple[Tensor, ...] | None
    params: tuple[Tensor, ...]
    consumed: bool = field(default=False)


def backward_input(
    outputs: TensorOrSeq,
    inputs: Sequence[Tensor],
    grad_outputs: TensorOrSeq | None,
    params: Sequence[Tensor],
) -> tuple[tuple[Tensor, ...], WeightGradState]:
    """I: gradients of ``inputs`` (zeros where unused), keeping the graph for W.

    ``grad_outputs`` None means the outputs are scalar losses (gradient 1).
    ``inputs`` may be empty (the first stage of a route): then nothing runs now
    and the whole work happens in ``backward_weight``.
    """
    outs = _as_tuple(outputs)
    gos = _grad_outputs(outs, grad_outputs)
    ins = tuple(inputs)
    if ins:
        gi = torch.autograd.grad(
            outs, ins, gos, retain_graph=True, allow_unused=True
        )
        grads = _fill(gi, ins)
    else:
        grads = ()
    return grads, WeightGradState(outs, gos, tuple(params))


def backward_weight(state: WeightGradState) -> tuple[Tensor, ...]:
    """W: gradients of the state's parameters (zeros where unused); frees the graph."""
    if state.consumed:
        raise RuntimeError("backward_weight called twice on the same WeightGradState")
    state.consumed = True
    if not state.params:
        return ()
    gp = torch.autograd.grad(
        state.outputs, state.params, state.grad_outputs, allow_unused=True
    )
    out = _fill(gp, state.params)
    state.outputs = ()
    state.grad_outputs = None
    return out


def backward_full(
    outputs: TensorOrSeq,
    inputs: Sequence[Tensor],
    grad_outputs: TensorOrSeq | None,
    params: Sequence[Tensor],
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """B: (input gradients, parameter gradients) in one autograd pass."""
    outs = _as_tuple(outputs)
    gos = _grad_outputs(outs, grad_outputs)
    ins, ps = tuple(inputs), tuple(params)
    if not ins and not ps:
        return (), ()
    g = torch.autograd.grad(outs, ins + ps, gos, allow_unused=True)
    return _fill(g[: len(ins)], ins), _fill(g[len(ins) :], ps)


__all__ = ["WeightGradState", "backward_input", "backward_weight", "backward_full"]

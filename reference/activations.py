"""Activation bytes per stage, measured on the user's model.

What it is: ``measure_activation_bytes(schedule, layers, microbatch)`` runs
each route's stages forward on one micro-batch, as the reference executor runs
an F (the stage's model layers in order; the last stage of a route also
computes the loss), and counts the bytes autograd saves for the backward
(``torch.autograd.graph.saved_tensors_hooks``): one count per tensor storage,
parameters excluded. That is the size of one stage's activation for one
micro-batch, the unit of ``verifier.semantics.memory``; ``activation_document`` writes
it as the ``pp-activation-bytes`` JSON that ``python -m verifier check
--memory-limit 80GiB --activation-bytes FILE.json`` (and ``analyze``) reads.

What it does not cover: the allocator's rounding and fragmentation, the
stage's output while it waits to be sent, temporaries freed within the
forward, parameters, gradients and optimizer state; activations that differ
per micro-batch (the first micro-batch is measured).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from reference.models import as_layer_list, loss_fn as default_loss, stage_layer_map
from verifier.ir import Schedule, ScheduleError
from verifier.format.units import ACTIVATION_FORMAT


def measure_activation_bytes(
    schedule: Schedule,
    layers: nn.Module | Sequence[nn.Module],
    microbatch: tuple[Tensor, Tensor],
    *,
    stage_layers: Mapping[int, Sequence[int]] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = default_loss,
) -> dict[int, int]:
    """stage id -> bytes saved for backward by that stage's forward on ``microbatch``
    ((input, target)); ``stage_layers`` as in ``run_pipeline`` (default: one
    model layer per schedule layer)."""
    layers = as_layer_list(layers)
    if stage_layers is None:
        stage_layers = stage_layer_map(schedule, 1)
    params = {p.untyped_storage().data_ptr() for m in layers for p in m.parameters()}
    x0, target = microbatch
    out: dict[int, int] = {}
    for route in schedule.routes:
        x = x0
        for k, sid in enumerate(route.stages):
            if sid not in stage_layers:
                raise ScheduleError(f"stage {sid} has no entry in the stage-to-layer map")
            if k > 0:  # as the executor: a received activation is a leaf with grad
                x = x.detach().requires_grad_(True)
            saved: dict[int, int] = {}

            def pack(t: Tensor) -> Tensor:
                st = t.untyped_storage()
                if st.data_ptr() not in params:
                    saved[st.data_ptr()] = st.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                h = x
                for i in stage_layers[sid]:
                    h = layers[i](h)
                if k == len(route.stages) - 1:
                    loss_fn(h, target)
            out[sid] = sum(saved.values())
            x = h.detach()
    return out


def activation_document(sizes: Mapping[int, int], **about) -> dict:
    """The ``pp-activation-bytes`` JSON object for ``sizes`` (``about``: informative keys)."""
    return {
        "format": ACTIVATION_FORMAT,
        "version": "1.0",
        **about,
        "stages": {str(k): int(v) for k, v in sorted(sizes.items())},
        "flag": "--activation-bytes " + ",".join(f"{k}={int(v)}" for k, v in sorted(sizes.items())),
    }

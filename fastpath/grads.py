"""Gradients on one rank: the I/W split helpers and the weight-gradient reduction.

What it is:

- the "graph" I/W split (``_graph_backward_input`` / ``_graph_backward_weight``):
  PyTorch pipelining's ``stage_backward_input`` / ``stage_backward_weight`` (a
  private torch API) with the gradients returned instead of left in ``.grad``;
  the "autograd" split is reference/split.py, used as is;
- ``_unalias``: a parameter gradient that is the pooled receive buffer itself
  is copied before the buffer is reused;
- ``GradReduction``, the part of ``RankRunner`` that turns the per-stage weight
  gradients into per-parameter totals at the end of a step: ``running`` order
  (each parameter's ``.grad``, accumulated in place in the order the rank runs
  its B and W, then an all-reduce per set of ranks that share tied layers) or ``microbatch`` order (reference.baseline's rule: per layer
  ``g_0 + g_1 + ...`` in micro-batch order, the running sum of a tied layer
  passed from rank to rank in that order, then broadcast).

What it does not cover: computing the gradients (fastpath.runtime runs the
computes), optimiser steps, gradient clipping, data parallelism.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastpath.supervise import wait_failure
from fastpath.watchdog import describe_wait


@dataclass
class _GraphW:
    """W state of the "graph" split: the gradients captured at the weight-consuming
    nodes during I (torch.distributed.pipelining._backward's param groups)."""

    groups: list
    params: tuple
    grad_out: torch.Tensor | None


def _graph_backward_input(out, ins, g, params):
    """I without recomputation in W: PyTorch pipelining's ``stage_backward_input``
    (a private torch API; it walks the autograd graph once per call)."""
    from torch.distributed.pipelining._backward import stage_backward_input

    dinputs, groups = stage_backward_input([out], None if g is None else [g], list(ins),
                                           iter(params))
    gi = tuple(torch.zeros_like(x) if d is None else d for x, d in zip(ins, dinputs))
    return gi, _GraphW(groups, tuple(params), g)


def _graph_backward_weight(state: _GraphW) -> tuple:
    """W from the captured gradients, returned (``.grad`` left as it was)."""
    from torch.distributed.pipelining._backward import stage_backward_weight

    saved = [p.grad for p in state.params]
    for p in state.params:
        p.grad = None
    try:
        stage_backward_weight(iter(state.params), state.groups)
        return tuple(torch.zeros_like(p) if p.grad is None else p.grad for p in state.params)
    finally:
        for p, s in zip(state.params, saved):
            p.grad = s


def _unalias(grads, grad_out):
    """Autograd may hand back the incoming gradient itself as a parameter's gradient
    (``y = x + p`` with p of y's shape); that tensor is a pooled receive buffer that
    the next receive overwrites, so such a gradient is copied."""
    if grad_out is None:
        return grads
    ptr = grad_out.untyped_storage().data_ptr()
    return tuple(g.clone() if g.untyped_storage().data_ptr() == ptr else g for g in grads)


class GradReduction:
    """Mixin of RankRunner: the end-of-step reduction (see the module docstring)."""

    def _names(self, stage: int) -> list[str]:
        """``layer{i}.{name}`` of the stage's parameters, in ``self.params`` order
        (worked out once per stage: it was a named_parameters walk per stage per step)."""
        names = self._names_of.get(stage)
        if names is None:
            names = self._names_of[stage] = [
                f"layer{i}.{n}"
                for i, mod in zip(self.stage_layers[stage], self.mods[stage])
                for n, _ in mod.named_parameters()
            ]
        return names

    def _layer_grads(self) -> dict[str, torch.Tensor]:
        """running order: each parameter's ``.grad`` (summed in the order the rank ran
        its B and W) -> per parameter name."""
        out: dict[str, torch.Tensor] = {}
        for st in sorted(self.plan.stages):
            for n, p in zip(self._names(st), self.params[st]):
                # tied stages on this rank share the module: one .grad holds both
                out[n] = torch.zeros_like(p) if p.grad is None else p.grad.detach()
        return out

    def _allreduce_tied(self, grads: dict[str, torch.Tensor], end: int) -> None:
        for g, pg in self.tied_pgs:
            names = [n for st in self._stages_of_layers(g.layers) for n in self._names(st)]
            names = sorted(set(names))
            flat = torch.cat([grads[n].reshape(-1) for n in names])
            self._collective(lambda: dist.all_reduce(flat, group=pg), end,
                             f"all-reduce of tied layers {list(g.layers)}", g.ranks)
            self._unflatten(flat, names, grads)

    def _stages_of_layers(self, layers) -> list[int]:
        return [st for st in sorted(self.plan.stages) if self.s.layer_of(st) in layers]

    @staticmethod
    def _unflatten(flat, names, grads) -> None:
        off = 0
        for n in names:
            k = grads[n].numel()
            grads[n] = flat[off:off + k].view_as(grads[n])
            off += k

    def _collective(self, fn, end, what, ranks) -> None:
        if self.watchdog is not None:
            self.watchdog.waiting(f"end ({end})", what, what, None)
        t0 = time.perf_counter()
        try:
            fn()
        except RuntimeError as e:
            waited = time.perf_counter() - t0
            raise wait_failure(
                e, waited, None if self.cuda else self.timeout.total_seconds(),
                timed_out=lambda: describe_wait(self.rank, f"end ({end})", what, what,
                                                None, waited),
                failed=f"rank {self.rank} end ({end}): {what} with ranks {list(ranks)} failed",
            ) from None
        finally:
            if self.watchdog is not None:
                self.watchdog.idle()

    def _ordered_grads(self, end: int) -> dict[str, torch.Tensor]:
        """microbatch order (reference.baseline's rule): per layer, g_0 + g_1 + ... in
        micro-batch order. A tied layer's micro-batches live on several ranks; the
        running sum travels from rank to rank in micro-batch order (one P2P hop per
        change of owner) and the last owner broadcasts it to the group."""
        s = self.s
        out: dict[str, torch.Tensor] = {}
        pgs = {g.ranks: pg for g, pg in self.tied_pgs}
        for layer in sorted({s.layer_of(st) for st in self.plan.stages}):
            mine = self._stages_of_layers((layer,))
            names = self._names(mine[0])
            like = [p for p in self.params[mine[0]]]
            owners = []  # (mb, rank, stage)
            for m in range(s.num_microbatches):
                route = s.routes[s.route_of_mb[m]]
                for st in route.stages:
                    if s.layer_of(st) == layer:
                        owners.append((m, s.rank_of(st), st))
                        break
            ranks = sorted({r for _, r, _ in owners})
            partial = None
            prev_owner = None
            for m, r, st in owners:
                if r != prev_owner and prev_owner is not None:
                    if self.rank == prev_owner:
                        w = dist.isend(partial.contiguous(), r)
                        self._wait(w, f"end ({end})", f"layer {layer} gradient",
                                   f"sending the partial gradient sum of layer {layer}", r)
                        partial = None
                    elif self.rank == r:
                        buf = torch.empty(sum(p.numel() for p in like),
                                          dtype=like[0].dtype, device=self.device)
                        w = dist.irecv(buf, prev_owner)
                        self._wait(w, f"end ({end})", f"layer {layer} gradient",
                                   f"the partial gradient sum of layer {layer}", prev_owner)
                        partial = buf
                prev_owner = r
                if r != self.rank:
                    continue
                g = self.per_mb.get(st, {}).get(m)
                if g is None:
                    g = [torch.zeros_like(p) for p in like]
                flat = torch.cat([x.reshape(-1) for x in g])
                partial = flat.clone() if partial is None else partial.add_(flat)
            if len(ranks) > 1:
                last = owners[-1][1]
                if self.rank != last:
                    partial = torch.empty(sum(p.numel() for p in like),
                                          dtype=like[0].dtype, device=self.device)
                pg = pgs[tuple(ranks)] if tuple(ranks) in pgs else None
                self._collective(lambda: dist.broadcast(partial, src=last, group=pg), end,
                                 f"broadcast of layer {layer} gradient", ranks)
            if partial is None:
                partial = torch.cat([torch.zeros_like(p).reshape(-1) for p in like])
            grads = {n: p for n, p in zip(names, like)}
            self._unflatten(partial, names, grads)
            out.update(grads)
        return out

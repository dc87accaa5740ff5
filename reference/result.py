"""What a run of the reference executor returns: ``PipelineResult``.

Not covered: how it is computed (reference.machine, reference.executor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from torch import Tensor, nn

from reference.baseline import accumulate
from reference.models import as_layer_list


@dataclass
class PipelineResult:
    """What a pipelined run produced.

    ``losses[m]``: micro-batch m's loss as ``loss_fn`` returned it (detached).
    ``grads``: "layer{i}.{name}" -> gradient summed over micro-batches in
    micro-batch order (tied copies included). ``order``: "witness",
    "given" or "round-robin". ``num_steps``: steps executed.
    """

    losses: tuple[Tensor, ...]
    grads: dict[str, Tensor]
    order: str
    num_steps: int
    per_microbatch: dict[str, list[Tensor]] = field(repr=False, default_factory=dict)
    owner: dict[str, list[int]] = field(repr=False, default_factory=dict)

    def copy_grads(self) -> dict[tuple[int, str], Tensor]:
        """(rank, param name) -> that rank's copy's gradient (micro-batch order);
        for a tied layer, the copies' sum is ``grads`` up to summation order."""
        out: dict[tuple[int, str], list[Tensor]] = {}
        for name, gs in self.per_microbatch.items():
            for g, r in zip(gs, self.owner[name]):
                out.setdefault((r, name), []).append(g)
        return {k: accumulate(v) for k, v in out.items()}

    def apply_to(self, layers: nn.Module | Sequence[nn.Module]) -> None:
        """Write ``grads`` into ``.grad`` of the user's layers (replacing it)."""
        for i, m in enumerate(as_layer_list(layers)):
            for n, p in m.named_parameters():
                g = self.grads.get(f"layer{i}.{n}")
                if g is not None:
                    p.grad = g.clone()

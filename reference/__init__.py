"""Reference executor: the gradient ground truth for pipeline schedules.

What it is: a single-process, pure-PyTorch executor that runs any schedule the
IR expresses (one virtual rank per schedule rank, FIFO in-memory channels that
check every message's tag), the I/W autograd split it uses, small test models,
and an unpipelined baseline with a per-parameter comparison.

- ``reference.models``: ``make_layers``, ``make_microbatches``, ``loss_fn``,
  ``stage_layer_map`` and parameter naming ``layer{i}.{name}``.
- ``reference.split``: ``backward_input`` / ``backward_weight`` /
  ``backward_full``.
- ``reference.executor``: ``run_pipeline`` and its errors.
- ``reference.baseline``: ``run_baseline`` and ``compare``.

What it does not cover: speed across devices, real communication, memory
savings (fastpath/ does that); it never imports z3 and never derives a schedule
of its own.
"""

from reference.baseline import Comparison, compare, run_baseline
from reference.executor import (
    ExecutionError,
    PipelineResult,
    RefutedScheduleError,
    run_pipeline,
)
from reference.models import make_layers, make_microbatches, loss_fn, stage_layer_map

__all__ = [
    "Comparison",
    "ExecutionError",
    "PipelineResult",
    "RefutedScheduleError",
    "compare",
    "loss_fn",
    "make_layers",
    "make_microbatches",
    "run_baseline",
    "run_pipeline",
    "stage_layer_map",
]

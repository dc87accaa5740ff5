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
of its own. Needs torch (``pip install 'ppverify[torch]'``); the names above
are imported on first use.
"""

import importlib

from verifier import __version__
from verifier.extras import require

_EXPORTS = {
    "Comparison": "reference.baseline",
    "compare": "reference.baseline",
    "run_baseline": "reference.baseline",
    "ExecutionError": "reference.executor",
    "PipelineResult": "reference.executor",
    "RefutedScheduleError": "reference.executor",
    "run_pipeline": "reference.executor",
    "loss_fn": "reference.models",
    "measure_activation_bytes": "reference.activations",
    "activation_document": "reference.activations",
    "make_layers": "reference.models",
    "make_microbatches": "reference.models",
    "stage_layer_map": "reference.models",
}


def __getattr__(name: str):
    """The public API, imported on first use: without torch, ``import reference``
    still works (``python -m reference`` then says which extra to install) and
    using a name raises MissingExtra naming ``pip install 'ppverify[torch]'``."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reference' has no attribute {name!r}")
    require("torch", "torch", f"reference.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = sorted(_EXPORTS) + ["__version__"]

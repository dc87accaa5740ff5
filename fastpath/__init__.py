"""fastpath: run a verified pipeline-parallel schedule fast, one process per rank.

What it is: the real-ranks executor of the project. ``python -m fastpath run
FILE --nproc R`` (or ``torchrun ... -m fastpath run FILE``) verifies a
schedule with the checker, runs it under torch.distributed (gloo on CPU, NCCL
on GPU) with asynchronous P2P posted where the schedule posts it, batches as
``batch_isend_irecv``, pooled receive buffers, the I/W split, OVERLAP pairs
and tied-layer gradient reduction; a watchdog turns a hang into an error that
names the rank, step, action and peer; ``--check`` compares every gradient
with reference/; ``--trace`` writes what really ran as a pp-schedule.

Layout: plan (what one rank does), runtime (the step loop), grads (I/W split
helpers, end-of-step gradient reduction), watchdog, launch
(spawn / torchrun), check (verify, differential), trace, cli, and
conformance (a schedule's communication alone on real gloo ranks: does it
terminate; benchmarks/conformance_gloo.py compares that with the models).

What it does not cover: choosing or repairing schedules (verifier/), a
single-process simulation (reference/), optimiser steps, multi-node clocks.
Needs torch (``pip install 'ppverify[torch]'``; ``run`` says so, exit 2).
Never imports z3 (the checker runs with its graph engine). The CUDA path
(streams, events, NCCL) is tested by tests/test_fastpath_gpu.py and
benchmarks/gpu_check.sh, which need a GPU (the tests skip without CUDA); the
README's fastpath section says whether it has run on one.
"""

from verifier import __version__  # noqa: E402

__all__ = ["__version__"]

"""Before and after a run: verify the schedule, and compare the run with reference/.

What it is:

- ``verify(schedule, comm_model)``: the checker's verdict (graph engine, no
  z3) as ``Verification``; ``refusal(...)`` turns a REFUTED or UNKNOWN verdict
  into the one-paragraph message the CLI prints (counterexamples located by
  rank and step).
- ``merge(job_result)``: every rank's part of a fast run as one result with
  ``losses`` (a tuple, micro-batch order) and ``grads`` (``layer{i}.{name}``),
  the shape ``reference.baseline.compare`` takes.
- ``reference_run(schedule, job)``: the same schedule, model, seed and
  micro-batches through ``reference.executor.run_pipeline`` (one process), and
  ``differential(...)``: per-parameter max differences (reference.baseline's
  ``compare``; bitwise expected in float64 with grad order "microbatch",
  within ``default_tolerance`` otherwise).

What it does not cover: running the ranks (fastpath.launch), printing
(fastpath.cli).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastpath.launch import DTYPES, cpu_threads
from reference.baseline import compare
from reference.executor import run_pipeline
from reference.models import make_layers, make_microbatches, num_model_layers
from verifier.check.checker import check
from verifier.ir import Schedule


@dataclass(frozen=True)
class Verification:
    verdict: str  # VERIFIED / REFUTED / UNKNOWN
    comm_model: str
    lines: tuple[str, ...]  # counterexamples, one per line (empty when VERIFIED)
    seconds: float


def verify(schedule: Schedule, comm_model: str = "nccl") -> Verification:
    res = check(schedule, comm_model=comm_model, engine="graph")
    lines = []
    for v in res.violations:
        lines.append(v.summary())
    if res.cycle is not None:
        for hop in list(getattr(res.cycle, "hops", ()))[:8]:
            w, t = hop.waiter, hop.target
            lines.append(
                f"  wait: {w.kind} {w.where} {w.text} -> {t.kind} {t.where} {t.text}"
            )
    return Verification(str(res.verdict), comm_model, tuple(lines), res.stats.seconds)


def refusal(v: Verification, source: str) -> str:
    head = (
        f"{source}: the checker (graph engine, {v.comm_model} model) says {v.verdict}; "
        "not running it (--no-verify runs it anyway)"
    )
    return "\n".join([head] + [f"  {x}" for x in v.lines[:12]])


@dataclass
class MergedResult:
    losses: tuple
    grads: dict


def merge(job_result) -> MergedResult:
    grads: dict[str, torch.Tensor] = {}
    losses: dict[int, torch.Tensor] = {}
    for r in job_result.ranks:
        for n, g in r.grads.items():
            grads.setdefault(n, g)  # tied copies are equal after the reduction
        losses.update(r.losses)
    ordered = tuple(losses[m] for m in sorted(losses))
    return MergedResult(ordered, grads)


def reference_run(schedule: Schedule, job):
    dtype = DTYPES[job.dtype]
    layers = make_layers(job.model, num_model_layers(schedule, job.layers_per_stage),
                         hidden=job.hidden, seed=job.seed, dtype=dtype)
    mbs = make_microbatches(job.model, schedule.num_microbatches, hidden=job.hidden,
                            batch=job.batch, seq=job.seq, seed=job.seed, dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(job, schedule.num_ranks))  # same kernels' reductions
    try:
        return run_pipeline(schedule, layers, mbs, layers_per_stage=job.layers_per_stage,
                            loss_reduction=job.loss_reduction)
    finally:
        torch.set_num_threads(before)


def differential(merged: MergedResult, reference):
    """``reference.baseline.Comparison`` of the fast run against the reference run."""

    return compare(merged, reference)


def comparison_lines(cmp) -> list[str]:
    """One line per parameter and per loss (the --check output format)."""
    out = []
    for p in cmp.params:
        out.append(
            f"param {p.name} max_abs={p.max_abs:.3e} max_rel={p.max_rel:.3e} "
            f"bitwise={'yes' if p.bitwise else 'no'} ok={'yes' if p.within_tolerance else 'no'}"
        )
    for x in cmp.losses:
        out.append(
            f"loss mb {x.mb} fast={x.pipeline!r} reference={x.baseline!r} "
            f"abs_diff={x.abs_diff:.3e} bitwise={'yes' if x.bitwise else 'no'}"
        )
    for n in cmp.missing:
        out.append(f"missing {n}")
    for n in cmp.extra:
        out.append(f"extra {n}")
    return out

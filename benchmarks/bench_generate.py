"""Benchmark: time to generate large schedules with communication.

Part 2 (same run): generation plus lowering of DualPipeV at 32 ranks x 256
micro-batches, compute-only generation followed by ``verifier.semantics.lowering.lower``,
against PyTorch's own generation with communication,
``torch.distributed.pipelining._schedule_visualizer.get_schedule_ops(
"DualPipeV", 32, 256, with_comms=True)``. Both produce every rank's
compute and send/receive actions. Target: ours faster (ratio < 1). Skipped,
with a line saying so, where torch is not installed.

What it measures: ``generate("dualpipe", 64, 512)`` (DeepSeek's communication
included, so every rank's list has its computes and its Batch(wait=True)
actions), best of N runs, and a baseline measured in the same run on the same
result: ``verifier.format.io.dumps_json`` of that schedule (serialising the same
actions once). The ratio generate / serialise says how generation compares to
merely writing the result out; the target is under 1 s of generation.

What it does not cover: checking, CLI start-up.

Run: python benchmarks/bench_generate.py [--ranks 64] [--microbatches 512] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

from verifier.generators import generate
from verifier.format.io import dumps_json


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="dualpipe")
    p.add_argument("--ranks", type=int, default=64)
    p.add_argument("--microbatches", type=int, default=512)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()

    t_gen, s = best_of(lambda: generate(a.family, a.ranks, a.microbatches), a.repeat)
    n_actions = s.num_actions
    n_ops = sum(1 for _ in s.iter_computes()) + sum(1 for _ in s.iter_comms())
    t_json, text = best_of(lambda: dumps_json(s), a.repeat)
    print(f"generate {a.family} --ranks {a.ranks} --microbatches {a.microbatches}: "
          f"{n_actions} actions ({n_ops} compute+comm ops)")
    print(f"  generate (with communication): {t_gen * 1e3:8.1f} ms  (best of {a.repeat})")
    print(f"  baseline dumps_json of result: {t_json * 1e3:8.1f} ms  ({len(text) / 1e6:.1f} MB)")
    print(f"  ratio generate / dumps_json:   {t_gen / t_json:8.2f}x")
    print(f"  target < 1000 ms: {'met' if t_gen < 1.0 else 'MISSED'}")
    dualpipev_vs_pytorch(a.repeat)


def dualpipev_vs_pytorch(repeat: int, ranks: int = 32, microbatches: int = 256) -> None:
    from verifier.semantics.lowering import lower

    try:
        from torch.distributed.pipelining._schedule_visualizer import get_schedule_ops
    except ImportError:
        print("dualpipev vs PyTorch: skipped (torch not installed)")
        return
    t_ours, ours = best_of(
        lambda: lower(generate("dualpipev", ranks, microbatches, compute_only=True)), repeat)
    t_torch, theirs = best_of(
        lambda: get_schedule_ops("DualPipeV", ranks, microbatches, with_comms=True),
        max(1, repeat // 2))
    n_ours = sum(1 for _ in ours.iter_computes()) + sum(1 for _ in ours.iter_comms())
    n_theirs = sum(1 for row in theirs for a in row if a is not None)
    print(f"dualpipev --ranks {ranks} --microbatches {microbatches}, generation + lowering:")
    print(f"  ours  generate + lower:                 {t_ours * 1e3:8.1f} ms  ({n_ours} compute+comm ops)")
    print(f"  PyTorch get_schedule_ops(with_comms):   {t_torch * 1e3:8.1f} ms  ({n_theirs} actions)")
    print(f"  ratio ours / PyTorch:                   {t_ours / t_torch:8.3f}x  "
          f"(target < 1: {'met' if t_ours < t_torch else 'MISSED'})")


if __name__ == "__main__":
    main()

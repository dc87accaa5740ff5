"""Benchmark: the checker against PyTorch's own schedule simulator, and loading
against json.loads; optionally the Z3 engine's proof times.

What it measures (one run prints every number and the ratios):

1. ``check`` (all seven properties, the nccl model, ``--engine auto``, which
   at this size is the graph engine plus the independent certificate checker)
   of DualPipeV at 32 ranks x 256 micro-batches with communication, against
   ``torch.distributed.pipelining.schedules._simulate_comms_compute`` on the
   same action lists (ours converted to PyTorch ``_Action`` lists: an OVERLAP
   becomes its F then its B, a BATCH its sends then its receives, since
   PyTorch has neither). PyTorch's simulator checks one thing (the eager model's
   progress) and none of the properties; ours checks all of them under the
   stricter model. Target ratio: <= 1.0.
2. ``verifier.io.load_schedule`` (parse + schema validation + IR) against
   ``json.loads`` of the same file. Target ratio: <= 3.
3. with ``--z3``: the Z3 engine's proof of DualPipe at 16 ranks x 64
   micro-batches (target <= 5 s); with ``--z3-scan``: the largest DualPipe
   instance Z3 proves within 60 s (sizes doubling).

Times are the best of ``--repeat`` runs, wall clock (``time.perf_counter``)
and CPU (``time.process_time``; steadier on a shared machine). Run:
``python benchmarks/bench_check.py [--ranks 32 --microbatches 256] [--z3] [--z3-scan]``.

What it does not cover: the executors (bench_reference.py, bench_fastpath.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.checker import Verdict, check  # noqa: E402
from verifier.generators import generate  # noqa: E402
from verifier.io import dumps_json, load_schedule  # noqa: E402
from verifier.ir import Batch, Comm, Compute, Overlap, Schedule  # noqa: E402


def best(fn, repeat: int, setup=None) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result); ``setup()`` (untimed)
    makes each run's argument."""
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        arg = setup() if setup else None
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(arg) if setup else fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def to_pytorch(s: Schedule):
    """Our action lists as PyTorch pipelining ``_Action`` lists (rank -> list)."""
    from torch.distributed.pipelining.schedules import _Action
    from torch.distributed.pipelining.schedules import _ComputationType as CT

    def conv(a) -> list:
        if isinstance(a, (Compute, Comm)):
            return [_Action(a.stage, CT(a.kind.value), a.mb)]
        if isinstance(a, Overlap):
            return conv(a.f) + conv(a.b)
        assert isinstance(a, Batch)
        ops = sorted(a.ops, key=lambda o: not o.kind.is_send)  # posted together: sends first
        return [x for o in ops for x in conv(o)]

    return {r: [x for a in acts for x in conv(a)] for r, acts in enumerate(s.actions)}


def bench_check(ranks: int, microbatches: int, repeat: int) -> dict:
    from torch.distributed.pipelining.schedules import _simulate_comms_compute

    s = generate("dualpipev", ranks, microbatches)
    text = dumps_json(s)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dualpipev.json"
        path.write_text(text)
        t_json = best(lambda: json.loads(path.read_text()), repeat)
        t_load = best(lambda: load_schedule(path), repeat)
    # a fresh Schedule object for every run: nothing cached from the previous one
    fresh = lambda: s.with_actions(s.actions)  # noqa: E731
    t_check = best(lambda x: check(x, "nccl", "auto"), repeat, fresh)
    r = t_check[2]
    assert r.verdict is Verdict.VERIFIED and r.certificate == "accepted", r.violations
    t_nocert = best(lambda x: check(x, "nccl", "graph", validate_certificate=False), repeat, fresh)
    order = to_pytorch(s)
    rank_of = {st.id: st.rank for st in s.stages}
    n_pt = sum(len(v) for v in order.values())
    t_pt = best(
        lambda: _simulate_comms_compute({k: list(v) for k, v in order.items()}, rank_of.__getitem__, s.num_stages),
        repeat,
    )
    print(f"DualPipeV {ranks} ranks x {microbatches} micro-batches: {s.num_actions} steps, "
          f"{r.stats.num_ops} comm ops, {r.stats.num_events} events; PyTorch lists: {n_pt} actions")
    print(f"  check (auto -> {r.engine}, 7 properties, nccl, certificate {r.certificate}): "
          f"{t_check[0]:.3f} s wall, {t_check[1]:.3f} s CPU")
    print(f"    of which engine {r.stats.engine_seconds:.3f} s, certificate {r.stats.certificate_seconds:.3f} s")
    print(f"  check without certificate validation: {t_nocert[0]:.3f} s wall, {t_nocert[1]:.3f} s CPU")
    print(f"  PyTorch _simulate_comms_compute:      {t_pt[0]:.3f} s wall, {t_pt[1]:.3f} s CPU")
    print(f"  load_schedule: {t_load[0]:.3f} s wall ({t_load[1]:.3f} CPU); json.loads: "
          f"{t_json[0]:.3f} s wall ({t_json[1]:.3f} CPU); file {len(text) / 1e6:.1f} MB")
    out = {
        "check_vs_pytorch_wall": t_check[0] / t_pt[0],
        "check_vs_pytorch_cpu": t_check[1] / t_pt[1],
        "check_nocert_vs_pytorch_cpu": t_nocert[1] / t_pt[1],
        "load_vs_json_wall": t_load[0] / t_json[0],
        "load_vs_json_cpu": t_load[1] / t_json[1],
    }
    print("ratios (target: check <= 1.0x PyTorch, load <= 3x json.loads):")
    print(f"  check / PyTorch simulator:            {out['check_vs_pytorch_wall']:.2f}x wall, "
          f"{out['check_vs_pytorch_cpu']:.2f}x CPU")
    print(f"  check (no certificate) / PyTorch:     {out['check_nocert_vs_pytorch_cpu']:.2f}x CPU")
    print(f"  load_schedule / json.loads:           {out['load_vs_json_wall']:.2f}x wall, "
          f"{out['load_vs_json_cpu']:.2f}x CPU")
    return out


def bench_z3(scan: bool) -> None:
    try:
        from verifier import z3engine
    except ImportError:
        print("z3: verifier.z3engine is not installed; skipped")
        return
    s = generate("dualpipe", 16, 64)
    w0 = time.perf_counter()
    o = z3engine.decide(s, "nccl", timeout_ms=120_000)
    dt = time.perf_counter() - w0
    print(f"z3: DualPipe 16 ranks x 64 micro-batches: {o.status} in {dt:.2f} s (target <= 5 s) "
          f"{dict(o.stats)}")
    if not scan:
        return
    largest = None
    sizes = ((8, 32), (16, 64), (16, 128), (32, 64), (32, 128), (32, 256), (64, 128), (64, 256), (64, 512))
    for ranks, mbs in sizes:  # growing; stop at the first one not proved within 60 s
        s = generate("dualpipe", ranks, mbs)
        w0 = time.perf_counter()
        o = z3engine.decide(s, "nccl", timeout_ms=60_000)
        dt = time.perf_counter() - w0
        print(f"  dualpipe {ranks}x{mbs} ({s.num_actions} steps): {o.status} in {dt:.2f} s")
        if o.status != "sat" or dt > 60:
            break
        largest = (ranks, mbs, s.num_actions, round(dt, 2))
    print(f"z3: largest DualPipe proved within 60 s (ranks, micro-batches, steps, seconds): {largest}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=32)
    p.add_argument("--microbatches", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--z3", action="store_true", help="also time the Z3 proof of DualPipe 16x64")
    p.add_argument("--z3-scan", action="store_true", help="also find the largest DualPipe Z3 proves in 60 s")
    a = p.parse_args(argv)
    bench_check(a.ranks, a.microbatches, a.repeat)
    if a.z3 or a.z3_scan:
        bench_z3(a.z3_scan)
    return 0


if __name__ == "__main__":
    sys.exit(main())

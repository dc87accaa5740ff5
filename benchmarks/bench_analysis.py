"""Benchmark: the ASAP replay (analyze) and the picture (show) at large sizes.

What it measures, best of N runs each:

- ``analyze`` of DualPipeV 32 ranks x 256 micro-batches (DeepSeek's
  communication, nccl model), target under 1 s; baseline in the same run:
  loading the same schedule from its JSON file (``verifier.format.io.load_schedule``),
  so the ratio says how timing compares to merely reading the input;
- ``show`` of 1F1B and DualPipeV 16 ranks x 64 micro-batches to PNG (layout +
  raster + zlib), target under 5 s; baseline: the analyze of the same schedule.

What it does not cover: CLI start-up, SVG size on disk, the chrome trace.

Run: python benchmarks/bench_analysis.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from verifier.analysis.timeline import analyze
from verifier.generators import generate
from verifier.format.io import load_schedule, save_schedule
from verifier.render.pictures import layout
from verifier.render.png import to_png


def best_of(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()

    s = generate("dualpipev", 32, 256)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "dpv.json")
        save_schedule(s, path)
        t_load, s2 = best_of(lambda: load_schedule(path), a.repeat)
    t_an, res = best_of(lambda: analyze(s2, comm_model="nccl"), a.repeat)
    n_ops = sum(1 for _ in s.iter_computes()) + sum(1 for _ in s.iter_comms())
    print(f"analyze dualpipev 32 x 256: {s.num_actions} actions ({n_ops} compute+comm ops), "
          f"makespan {res.makespan:g}, deadlocked {res.deadlocked}")
    print(f"  analyze (nccl):              {t_an * 1e3:8.1f} ms  (best of {a.repeat})")
    print(f"  baseline load_schedule JSON: {t_load * 1e3:8.1f} ms")
    print(f"  ratio analyze / load:        {t_an / t_load:8.2f}x")
    print(f"  target < 1000 ms: {'met' if t_an < 1.0 else 'MISSED'}")

    for fam in ("1f1b", "dualpipev"):
        s = generate(fam, 16, 64)
        t_base, an = best_of(lambda: analyze(s), a.repeat)

        def draw():
            return to_png(layout(s, an))

        t_png, data = best_of(draw, a.repeat)
        print(f"show {fam} 16 x 64 to PNG: {len(data) / 1e3:.0f} kB")
        print(f"  layout + PNG:                {t_png * 1e3:8.1f} ms  (best of {a.repeat})")
        print(f"  baseline analyze:            {t_base * 1e3:8.1f} ms")
        print(f"  ratio show / analyze:        {t_png / t_base:8.2f}x")
        print(f"  target < 5000 ms (with analyze): "
              f"{'met' if t_png + t_base < 5.0 else 'MISSED'}")


if __name__ == "__main__":
    main()

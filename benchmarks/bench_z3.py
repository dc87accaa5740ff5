"""Benchmark of the Z3 engine: proving DualPipe deadlock-free (nccl, with comm).

What it measures, in one run:

1. DualPipe 16 ranks x 64 micro-batches (DeepSeek's communication pattern, from
   ``verifier.generators``): the seconds ``z3engine.decide`` takes (median of
   ``--repeat`` runs, lowering + encoding + solving + reading the witness),
   printed with its ratio to a baseline measured in the same run: the seconds
   to BUILD the constraint system without solving it (``encode`` + its SMT-LIB
   text). ``json.loads`` of the schedule's JSON file is printed as a second,
   solver-free reference point.
2. The largest DualPipe instance proved within 60 s: micro-batches doubled at
   16 ranks until an attempt fails, then ranks doubled from the best size.
   Attempts run with no rlimit and a 60 s solver timeout (less when the
   benchmark's own ``--budget`` is nearly spent; then the result says so); an
   attempt whose predicted time (from the largest proof so far) exceeds the
   limit or the budget left is printed as skipped rather than run.

Usage: ``python benchmarks/bench_z3.py [--budget SECONDS] [--repeat N]``.
Total run stays under ``--budget`` (default 170 s) plus one attempt's overrun.

Not covered: the graph engine (benchmarks of verifier.check.hbgraph), unsat
instances (their cost is dominated by the same solve plus core minimisation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.check import z3engine as Z  # noqa: E402
from verifier.generators import generate  # noqa: E402
from verifier.format.io import dumps_json  # noqa: E402

SEARCH_LIMIT_S = 60.0
GROWTH = 1.25  # measured: doubling the events costs ~2.3x (16x256 -> 16x512)


def _timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t, out


def headline(repeat: int) -> None:
    s = generate("dualpipe", 16, 64)
    text = dumps_json(s)
    json_s = min(_timed(json.loads, text)[0] for _ in range(5))

    def build():
        enc = Z.encode(s, "nccl")
        return Z.smtlib(enc, Z._solve_order(enc))

    build_s = min(_timed(build)[0] for _ in range(3))
    runs = []
    for _ in range(repeat):
        secs, out = _timed(Z.decide, s, "nccl")
        if out.status != "sat":
            print(f"dualpipe 16x64: expected sat, got {out.status} {out.reason} {out.core[:3]}")
            raise SystemExit(1)
        runs.append(secs)
    prove_s = statistics.median(runs)
    st = out.stats
    print("DualPipe 16 ranks x 64 micro-batches, nccl, DeepSeek's communication")
    print(
        f"  size: {s.num_actions} actions, {st['num_events']} events, "
        f"{st['num_constraints']} constraints, {st['num_labels']} tracked labels"
    )
    print(
        f"  prove (decide, median of {repeat}): {prove_s:.3f} s  "
        f"[solve {st['solve_seconds']:.3f} s, rlimit used {st['rlimit_used']}]"
    )
    print(f"  baseline: build the constraint system without solving: {build_s:.3f} s")
    print(f"  ratio prove / build: {prove_s / build_s:.1f}x")
    print(f"  reference: json.loads of its JSON file ({len(text)} bytes): {json_s:.4f} s "
          f"(ratio prove / json.loads: {prove_s / json_s:.0f}x)")
    print(f"  target <= 5 s: {'met' if prove_s <= 5.0 else 'MISSED'}")


def attempt(num_ranks: int, num_mb: int, limit_s: float):
    s = generate("dualpipe", num_ranks, num_mb)
    secs, out = _timed(Z.decide, s, "nccl", rlimit=0, timeout_ms=int(limit_s * 1000))
    status = out.status if out.status != "unknown" else f"unknown ({out.reason})"
    print(
        f"  {num_ranks:>3} ranks x {num_mb:>4} micro-batches: {status:<8} {secs:7.2f} s  "
        f"({out.stats['num_events']} events, {out.stats['num_constraints']} constraints, "
        f"rlimit used {out.stats['rlimit_used']})",
        flush=True,
    )
    return out.status == "sat" and secs <= SEARCH_LIMIT_S, secs, out.stats["num_events"]


def _events(num_ranks: int, num_mb: int) -> int:
    return Z.encode(generate("dualpipe", num_ranks, num_mb)).num_time_events


def search(budget_s: float, started: float) -> None:
    """Double micro-batches at 16 ranks, then ranks; an attempt predicted (from
    the largest proof so far, time ~ events^GROWTH) to need more than the 60 s
    limit, or than the budget left, is reported as skipped, not run, so the
    whole benchmark stays short."""
    print(f"Largest DualPipe proved within {SEARCH_LIMIT_S:.0f} s (doubling):")
    best = None  # (ranks, micro-batches, events, seconds)

    def go(r, m):
        nonlocal best
        limit = min(SEARCH_LIMIT_S, budget_s - (time.perf_counter() - started))
        if best is not None:
            events = _events(r, m)
            predicted = best[3] * (events / best[2]) ** GROWTH
            if predicted > limit:
                print(
                    f"  {r:>3} ranks x {m:>4} micro-batches: skipped, predicted "
                    f"{predicted:.0f} s from {best[0]}x{best[1]} ({events} events), "
                    f"over the {limit:.0f} s left for it"
                )
                return False
        if limit < 10:
            print(f"  {r:>3} ranks x {m:>4} micro-batches: not tried, benchmark budget spent")
            return False
        ok, secs, events = attempt(r, m, limit)
        if ok and (best is None or events > best[2]):
            best = (r, m, events, secs)
        if not ok and limit < SEARCH_LIMIT_S:
            print(f"    (stopped by the benchmark budget at {limit:.0f} s, not by the 60 s limit)")
        return ok

    m = 64
    while go(16, m):
        m *= 2
    r = 32
    while go(r, max(64, 2 * r)):
        r *= 2
    if best:
        print(
            f"  largest proved: {best[0]} ranks x {best[1]} micro-batches "
            f"({best[2]} events) in {best[3]:.1f} s"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=170.0, help="seconds for the whole run")
    p.add_argument("--repeat", type=int, default=3, help="runs of the 16x64 proof")
    a = p.parse_args(argv)
    started = time.perf_counter()
    headline(a.repeat)
    search(a.budget, started)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark and results table of `python -m verifier synthesize`.

What it measures (default run, bounded to a few minutes on 2 loaded cores):

1. time to OPTIMAL for P=4, M=8 with DualPipe's costs (F=I=W=1, B=2, FB=3)
   on each placement at the cap of its own family's peak and at tighter caps
   (one `synthesize` call each, --time-limit LIMIT; NOT PROVED rows show the
   gap);
2. the largest size proved OPTIMAL within 60 s (--size-limit), sweeping
   (P, M) = (2,4), (4,8), (6,12), (8,16), ... on the V placement at cap P+1
   (between ZB-V-half's and ZB-V's) and on the bidirectional placement at
   cap P, stopping at the first size not proved.

Solver: Z3 only (the default and only solver; no second solver was added, so
there is no per-solver comparison).

--table writes the results table of docs/synthesis.md: for P in {2,4,6,8},
M in {P, 2P}, the families 1F1B, ZB-H1 (linear), ZB-V, DualPipeV (v),
DualPipe (bidirectional) timed by `analyze` (nccl, their generated schedule
with their own communication), against the synthesized optimum of their
placement at their own peak activations as the cap (1F1B: B unsplit; the
others split). --costs picks the cost set; --measure-costs measures F, I, W of
the reference executor's transformer layer on this machine (one thread,
float32, median of repeats; B := I + W of the recomputing split, FB := F + B)
and prints them in units of F/4, rounded (W := B - I, the cost of a split
that does not recompute; the reference's split recomputes, and its W is
printed too).

Not covered: other solvers, GPU timings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

DP = "F=1,I=1,W=1,B=2,FB=3"


def synth(P, M, placement, cap, costs=DP, limit=60.0, split="yes"):
    argv = [sys.executable, "-m", "verifier", "synthesize", "--ranks", str(P),
            "--microbatches", str(M), "--placement", placement, "--costs", costs,
            "--time-limit", str(limit), "--format", "json", "--split-backward", split]
    if cap is not None:
        argv += ["--memory-limit", str(cap)]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True)
    took = time.monotonic() - t0
    if p.returncode not in (0, 3):
        return {"status": f"exit {p.returncode}", "error": p.stderr.strip(), "seconds": took}
    doc = json.loads(p.stdout)
    doc["wall"] = took
    return doc


def family(fam, P, M, costs=DP):
    from verifier.analysis import costs as cmod
    from verifier.analysis.timeline import analyze
    from verifier.generators import generate
    from verifier.ir import ScheduleError

    try:
        s = generate(fam, P, M)
    except ScheduleError:
        return None
    a = analyze(s, cmod.load(costs), "nccl")
    busy = max(r.busy for r in a.ranks)
    return {"makespan": a.makespan, "bubble": a.makespan - busy,
            "peak": int(max(r.peak_activations for r in a.ranks))}


def time_to_optimal(limit: float) -> None:
    print(f"P=4, M=8, DualPipe costs {DP}, --time-limit {limit:g} each")
    rows = [("v", 8, "ZB-V peak"), ("v", 9, "DualPipeV peak"), ("v", 6, ""), ("v", 5, ""),
            ("bidirectional", 5, "DualPipe peak"), ("bidirectional", 4, ""),
            ("linear", 4, "1F1B/ZB-H1 peak"), ("linear", 3, ""), ("looped", 8, "")]
    for placement, cap, note in rows:
        d = synth(4, 8, placement, cap, limit=limit)
        print(f"  {placement:13s} cap {cap:2d} {note:16s} {_res(d)}", flush=True)


def _res(d) -> str:
    if "makespan" not in d:
        return f"{d['status']}: {d.get('error', '')}"
    calls = sum(len(r["calls"]) for r in d["results"])
    return (f"{d['status']:10s} makespan {d['makespan']:g} bound {d['lower_bound']:g} "
            f"in {d['seconds']:.1f} s ({calls} solver calls)")


def largest(limit: float, max_p: int) -> None:
    print(f"largest size proved OPTIMAL within {limit:g} s (DualPipe costs)")
    for placement, cap_of in (("v", lambda P: P + 1), ("bidirectional", lambda P: P)):
        best = None
        for P in range(2, max_p + 1, 2):
            d = synth(P, 2 * P, placement, cap_of(P), limit=limit)
            print(f"  {placement} P={P} M={2 * P} cap {cap_of(P)}: {_res(d)}", flush=True)
            if d.get("status") != "OPTIMAL":
                break
            best = (P, 2 * P)
        print(f"  -> {placement}: largest proved {best}")


def table(costs: str, limit: float, sizes) -> None:
    fams = (("1f1b", "linear", "no"), ("zb-h1", "linear", "yes"), ("zbv", "v", "yes"),
            ("dualpipev", "v", "yes"), ("dualpipe", "bidirectional", "yes"))
    print(f"costs {costs}; synthesize --time-limit {limit:g} per cell\n")
    print("| P | M | family | makespan | bubble | cap (its peak) | synthesized | bubble "
          "| status | proof |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for P, M in sizes:
        for fam, placement, split in fams:
            f = family(fam, P, M, costs)
            if f is None:
                print(f"| {P} | {M} | {fam} | n/a | | | | | | |")
                continue
            d = synth(P, M, placement, f["peak"], costs, limit, split)
            if "makespan" not in d:
                print(f"| {P} | {M} | {fam} | {f['makespan']:g} | {f['bubble']:g} | "
                      f"{f['peak']} | {d['status']} | | | |")
                continue
            r = d["results"][0]
            st = d["status"] if d["status"] == "OPTIMAL" else \
                f"NOT PROVED (bound {d['lower_bound']:g})"
            print(f"| {P} | {M} | {fam} | {f['makespan']:g} | {f['bubble']:g} | {f['peak']} | "
                  f"{d['makespan']:g} | {r['bubble']:g} | {st} | {r['bound_source']}, "
                  f"{d['seconds']:.1f} s |", flush=True)


def measure_costs(hidden: int = 256, seq: int = 128, batch: int = 4, reps: int = 15) -> str:
    import statistics

    import torch

    from reference.models import make_layers
    from reference.split import backward_full, backward_input, backward_weight

    torch.set_num_threads(1)
    layer = make_layers("transformer", 1, hidden=hidden, dtype=torch.float32)[0]
    params = list(layer.parameters())
    ts = {"F": [], "B": [], "I": [], "W": []}
    for _ in range(reps):
        x = torch.randn(batch, seq, hidden, requires_grad=True)
        t = time.perf_counter()
        y = layer(x)
        ts["F"].append(time.perf_counter() - t)
        g = torch.randn_like(y)
        t = time.perf_counter()
        backward_full(y, [x], g, params)
        ts["B"].append(time.perf_counter() - t)
        y = layer(x)
        t = time.perf_counter()
        _, st = backward_input(y, [x], g, params)
        ts["I"].append(time.perf_counter() - t)
        t = time.perf_counter()
        backward_weight(st)
        ts["W"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in ts.items()}
    unit = med["F"] / 4  # costs in quarters of F, integers
    F, B, I = 4, round(med["B"] / unit), round(med["I"] / unit)  # noqa: E741
    W = max(0, B - I)  # a split without recomputation: W = B - I (the model needs B = I + W)
    print("measured (ms, median of %d): " % reps
          + ", ".join(f"{k}={1000 * v:.2f}" for k, v in med.items())
          + f"; the reference's recomputing W costs {med['W'] / unit:.1f} units, B - I "
          f"{(med['B'] - med['I']) / unit:.1f}")
    costs = f"F={F},I={I},W={W},B={B},FB={F + B}"
    print(f"costs (units of F/4 = {1000 * unit:.2f} ms, rounded; W := B - I):", costs)
    return costs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=float, default=60.0, help="time limit per P=4,M=8 call")
    ap.add_argument("--size-limit", type=float, default=60.0)
    ap.add_argument("--max-p", type=int, default=8)
    ap.add_argument("--skip-sizes", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the results table instead")
    ap.add_argument("--costs", default=DP)
    ap.add_argument("--measure-costs", action="store_true")
    ap.add_argument("--sizes", default="2x2,2x4,4x4,4x8,6x6,6x12,8x8,8x16")
    a = ap.parse_args()
    if a.measure_costs:
        measure_costs()
        return 0
    if a.table:
        sizes = [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]
        table(a.costs, a.limit, sizes)
        return 0
    time_to_optimal(a.limit)
    if not a.skip_sizes:
        largest(a.size_limit, a.max_p)
    return 0


if __name__ == "__main__":
    sys.exit(main())

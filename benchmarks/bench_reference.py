"""Benchmark: the reference executor on DualPipe 8 ranks x 20 micro-batches
against the unpipelined baseline, same MLP model, same micro-batches, same process.

Prints the median wall time of each (after one warm-up run), the ratio
reference / baseline (target: at most 1.3x), the checker's time to produce the
witness order (reported separately: it is paid once per schedule, not per
step), and whether the gradients were bitwise equal.

Run: ``python benchmarks/bench_reference.py [--hidden 128 --batch 4 --seq 32
--repeats 5 --threads 1 --dtype float64]``. Exit 0 when the ratio is within
``--target`` and the gradients match, else 1.

What it does not measure: the fast executor, memory, or anything across
processes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from reference.baseline import compare, run_baseline  # noqa: E402
from reference.executor import checker_order, run_pipeline  # noqa: E402
from reference.models import make_layers, make_microbatches, num_model_layers  # noqa: E402
from verifier.generators import generate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--microbatches", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--layers-per-stage", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--target", type=float, default=1.3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32

    s = generate("dualpipe", args.ranks, args.microbatches)
    k = args.layers_per_stage
    layers = make_layers("mlp", num_model_layers(s, k), hidden=args.hidden, dtype=dtype)
    mbs = make_microbatches(
        "mlp", args.microbatches, hidden=args.hidden, batch=args.batch, seq=args.seq, dtype=dtype
    )
    t0 = time.perf_counter()
    order = checker_order(s)
    t_check = time.perf_counter() - t0

    def pipe():
        return run_pipeline(s, layers, mbs, layers_per_stage=k, order=order)

    def base():
        return run_baseline(layers, mbs)

    res, ref = pipe(), base()  # warm-up, and the correctness check
    c = compare(res, ref)
    t_pipe, t_base = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both
        t0 = time.perf_counter()
        pipe()
        t_pipe.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        base()
        t_base.append(time.perf_counter() - t0)
    mp, mb = statistics.median(t_pipe), statistics.median(t_base)
    ratio = mp / mb
    print(
        f"dualpipe {args.ranks} ranks x {args.microbatches} micro-batches, mlp "
        f"{num_model_layers(s, k)} blocks hidden {args.hidden}, micro-batch "
        f"{args.batch}x{args.seq}, {args.dtype}, {args.threads} thread(s), "
        f"median of {args.repeats}"
    )
    print(f"baseline (unpipelined): {mb * 1e3:9.1f} ms")
    print(f"reference executor    : {mp * 1e3:9.1f} ms  ({res.num_steps} steps)")
    print(f"checker witness (once): {t_check * 1e3:9.1f} ms")
    print(f"ratio reference/baseline: {ratio:.3f}x (target <= {args.target}x)")
    print(f"gradients: {'bitwise equal' if c.bitwise else f'max abs diff {c.max_abs:.3e}'}")
    return 0 if ratio <= args.target and c.matches else 1


if __name__ == "__main__":
    sys.exit(main())

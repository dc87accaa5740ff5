"""Benchmark: what recording costs a training step (issue 13 item 7; target <= 1.2x).

What it measures: the same processes run the same training step again and
again, alternating unrecorded and recorded steps (``fastpath.record.recording``
installed for the recorded ones: every torch.distributed call patched, one
JSON line written per call with its source line); each step is timed by the
slowest rank between two barriers, and the paired ratio (recorded /
unrecorded, per pair of neighbouring steps, median with quartiles) cancels
load that drifts on a shared machine. Workloads (2 ranks, gloo, CPU):

- ``pipelining``: torch.distributed.pipelining ``Schedule1F1B``, one
  ``Linear(H, H)`` + ReLU stack per stage (``--layers``), ``--microbatches``
  micro-batches of ``--batch`` rows (a small real step: compute and messages);
- ``p2p``: a worst case with no compute at all, ``--messages`` ping-pongs of
  a 16-float tensor per step (every step is pure recorder + gloo overhead).

Usage: python benchmarks/bench_record.py [--workload pipelining|p2p|both]
[--pairs 20] [--hidden 512] ...; prints one line per workload with the
median ratio. Exit 1 when ``pipelining``'s median exceeds --max-ratio (1.2).

What it does not cover: the launcher's own cost (start-up of the ranks, the
merge at the end: seconds, once per run, independent of the steps) and
torchrun; ``python -m verifier record`` runs the same recorder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

WORKER = r'''
import json, os, sys, time
import torch, torch.distributed as dist
from fastpath.record import recording

cfg = json.loads(sys.argv[1])
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)

if cfg["workload"] == "pipelining":
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B
    H = cfg["hidden"]
    layers = []
    for _ in range(cfg["layers"]):
        layers += [torch.nn.Linear(H, H), torch.nn.ReLU()]
    stage = PipelineStage(torch.nn.Sequential(*layers), rank, world, torch.device("cpu"))
    sched = Schedule1F1B(stage, n_microbatches=cfg["microbatches"],
                         loss_fn=lambda out, tgt: out.pow(2).mean())
    x = torch.randn(cfg["batch"] * cfg["microbatches"], H)
    tgt = torch.zeros_like(x)

    def step():
        if rank == 0:
            sched.step(x)
        else:
            sched.step(target=tgt, losses=[])
else:
    t = torch.zeros(16)

    def step():
        for _ in range(cfg["messages"]):
            if rank == 0:
                dist.send(t, 1); dist.recv(t, 1)
            else:
                dist.recv(t, 0); dist.send(t, 0)


def timed():
    dist.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    dt = torch.tensor([time.perf_counter() - t0])
    cpu = torch.tensor([time.process_time() - c0])
    dist.all_reduce(dt, op=dist.ReduceOp.MAX)
    dist.all_reduce(cpu, op=dist.ReduceOp.SUM)
    return float(dt), float(cpu)


for _ in range(cfg["warmup"]):
    timed()
    with recording(cfg["parts"]):
        timed()
pairs = []
for i in range(cfg["pairs"]):
    order = (False, True) if i % 2 == 0 else (True, False)
    got = {}
    for rec in order:
        if rec:
            with recording(cfg["parts"]):
                got[rec] = timed()
        else:
            got[rec] = timed()
    pairs.append((got[False], got[True]))  # ((wall, cpu) unrecorded, (wall, cpu) recorded)
if rank == 0:
    with open(cfg["out"], "w") as f:
        json.dump(pairs, f)
dist.destroy_process_group()
'''


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workload(cfg: dict, nproc: int = 2) -> list[tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "worker.py")
        with open(script, "w") as f:
            f.write(WORKER)
        cfg = dict(cfg, parts=os.path.join(tmp, "parts"), out=os.path.join(tmp, "pairs.json"))
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                   WORLD_SIZE=str(nproc), OMP_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, script, json.dumps(cfg)],
                                  env=dict(env, RANK=str(r))) for r in range(nproc)]
        codes = [p.wait(timeout=1800) for p in procs]
        if any(codes):
            raise SystemExit(f"a rank failed: exit codes {codes}")
        with open(cfg["out"]) as f:
            return [(tuple(a), tuple(b)) for a, b in json.load(f)]


def _ratio(pairs, k: int) -> tuple[float, list[float], float, float]:
    ratios = sorted(rec[k] / plain[k] for plain, rec in pairs)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return (statistics.median(ratios), q, statistics.median(p[k] for p, _ in pairs),
            statistics.median(r[k] for _, r in pairs))


def summarize(name: str, pairs: list) -> float:
    """Print the wall-time and CPU-time ratios; return the wall-time median ratio."""
    med, q, plain, rec = _ratio(pairs, 0)
    cmed, cq, cplain, crec = _ratio(pairs, 1)
    print(f"{name}:\n  wall: recorded/unrecorded step, median of {len(pairs)} pairs "
          f"{med:.3f}x (quartiles {q[0]:.3f}-{q[2]:.3f}); median step {plain * 1e3:.2f} ms "
          f"unrecorded, {rec * 1e3:.2f} ms recorded\n"
          f"  cpu (process time, all ranks): {cmed:.3f}x (quartiles {cq[0]:.3f}-{cq[2]:.3f}); "
          f"{cplain * 1e3:.2f} ms unrecorded, {crec * 1e3:.2f} ms recorded")
    return med


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=("pipelining", "p2p", "both"), default="both")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--microbatches", type=int, default=8)
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--max-ratio", type=float, default=1.2)
    args = p.parse_args(argv)
    base = dict(pairs=args.pairs, warmup=args.warmup, hidden=args.hidden, layers=args.layers,
                batch=args.batch, microbatches=args.microbatches, messages=args.messages)
    code = 0
    if args.workload in ("pipelining", "both"):
        med = summarize(f"pipelining 1F1B (2 ranks, {args.microbatches} micro-batches of "
                        f"{args.batch}x{args.hidden}, {args.layers} layers a stage)",
                        run_workload(dict(base, workload="pipelining")))
        if med > args.max_ratio:
            print(f"over the target: {med:.3f}x > {args.max_ratio}x")
            code = 1
    if args.workload in ("p2p", "both"):
        summarize(f"p2p worst case (2 ranks, {args.messages} ping-pongs of 16 floats a step, "
                  f"no compute)", run_workload(dict(base, workload="p2p")))
    return code


if __name__ == "__main__":
    sys.exit(main())

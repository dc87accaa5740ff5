"""Benchmark: fastpath step time against DeepSeek's DualPipe and torch.distributed.pipelining.

What it measures, in one run, on gloo (CPU), same model (reference/models.py
MLP blocks, float32), same micro-batches, same number of ranks:

- fastpath ``dualpipe``  vs DeepSeek's ``dualpipe.DualPipe`` 1.0.0 (PyPI; it
  asserts CUDA, so this harness, in the DualPipe worker only, makes
  ``torch.cuda.current_device`` return "cpu" and allocates its receive buffers
  on CPU; nothing else of it is changed). Its modules are plain blocks, so its
  zero-bubble W steps do no work (weight gradients are computed in its B);
  fastpath runs the same schedule with a real I/W split.
- fastpath ``1f1b`` / ``zbv`` / ``dualpipev`` vs PyTorch's ``Schedule1F1B`` /
  ``ScheduleZBVZeroBubble`` / ``ScheduleDualPipeV`` (PipelineStage per stage,
  ``scale_grads=False`` so both sum micro-batch losses). Both get the same
  compute order per rank (but for fastpath's split cooldown, below) and add
  communication their own way: fastpath lowers
  it (``verifier.semantics.lowering``; ``generate(..., compute_only=True)``), PyTorch
  inserts its sends/receives (``_prepare_schedule_with_comms``). Both then
  post 16 sends and 16 receives of 256 KiB per rank and step (2 ranks, 8
  micro-batches, hidden 256). By default fastpath posts every receive at the
  start of the step, after F0 on a rank whose F0 consumes none (``--prepost
  all``: ``fastpath.plan.prepost_receives``), so
  a gloo send never waits for its receiver to announce a receive; it holds one
  receive buffer per message (16 of 256 KiB per rank here). By default it
  also waits every send right after posting it (``--batches sends``:
  ``fastpath.plan.waited_sends``; the receive is already posted, so the wait
  ends once the data has moved, and no comm thread competes with the computes
  for the two cores), and runs each rank's backwards after its last forward as
  I, send, W (``--split-cooldown on``: ``fastpath.plan.split_cooldown``), so the
  previous stage, left with only backwards, gets its gradient before W runs;
  for 1F1B on 2 ranks that is the last stage's last B, whose W then runs beside
  stage 0's last B instead of before it. Same gradients (loss sums printed).
  Every schedule fastpath runs here is first verified under ``gloo``, the model
  of the backend that runs it (``fastpath run --comm-model auto``); nccl refutes
  the early receives (they reorder each rank's stream), as it refutes the
  receives PyTorch's runtime posts one compute early, and eager would also
  accept waited sends whose receives are not posted, which hang on gloo.
  ``--prepost 0`` runs the lowering as it is. The CLI runs the same with
  ``python -m fastpath run FILE --prepost-receives all --wait-sends
  --split-cooldown --grad-order running --split graph``.
  The same holds against DeepSeek's DualPipe: fastpath runs its compute order
  (the same per rank, OVERLAP pairs included) with its own communication.
  ``--comm deepseek`` runs fastpath's dualpipe and dualpipev with DeepSeek's
  communication instead (every batch waited, sends included), its receives
  moved by ``--prepost`` too: each waited batch then waits for its sends
  alone, which gloo verifies and nccl refutes.

Step time: every rank passes a barrier, runs one training step (forward and
backward of every micro-batch; tied/mirrored layers' gradients all-reduced
for DualPipe and fastpath dualpipe), and the slowest rank's time is the step
time; the median over the timed iterations is reported, after warm-up. Both
systems live in the same processes and alternate step by step (fastpath
first on even iterations, the other first on odd ones), so background load on
the machine falls on both alike. The
ratio is fastpath / other (<= 1.0 means fastpath is at least as fast).
fastpath runs with ``grad_order="running"`` (its fast gradient order: into
``.grad`` in place, like both baselines; ``microbatch`` keeps one copy per
micro-batch for bitwise equality with reference/ and is not what they do),
``split="graph"`` (W reuses the gradients I captured; ``--split autograd``
measures reference/split.py's recomputing split instead), every send waited
right after posting (``--batches sends``, the default; ``--batches
as-scheduled`` waits a BATCH only where the schedule says, sends then go to a
comm thread and are waited at the end of the step; ``--batches waited`` waits
for every BATCH right after posting, as PyTorch's 1F1B does; each is verified
before it runs) and its watchdog thread, as under the CLI. Measured at
stop 19 with an ad-hoc harness (not in the repo) running the variants in the
same processes, 100-200 iterations, order rotated; paired ratio against
PyTorch: 1f1b as-scheduled 0.981x, split-cooldown 0.953x,
sends 0.965x, both 0.947x; zbv as-scheduled 0.952x, sends 0.939x; dualpipev
0.960x, 0.951x, 0.955x, 0.952x; 1f1b at hidden 8, batch 1: 0.996x, 1.035x,
0.936x, 0.953x.

Robustness on a small shared machine: each iteration runs both systems back
to back, so the paired ratio (median of per-iteration ratios, with quartiles and
how many iterations fastpath won) cancels load that drifts over the run; the
iterations of three process groups, spawned one after the other, are pooled
(``--repeats 3``), as one group's ratio differs from the next's by more than
its iterations differ among themselves; CPU time
is printed for the whole process (gloo's TCP loop threads included) and for the
main thread alone.

Also the best (minimum) step of each, and the CPU time per step (process time, summed over ranks; less sensitive
to other load on the machine than wall time). Beside it, fastpath's measured
idle time per rank (makespan minus compute)
and the bubble ``verifier.analysis.timeline`` predicts for the same schedule with the
measured mean F/B/I/W durations as costs (comm cost 0: the prediction has no
communication latency, the measurement has gloo's).

Usage: ``python benchmarks/bench_fastpath.py [--ranks 2] [--microbatches 8]
[--hidden 256] [--batch 4] [--seq 64] [--iterations 30] [--warmup 3]
[--repeats 3] [--batches sends|as-scheduled|waited|needed] [--prepost N|all]
[--split-cooldown on|off]
[--only NAME ...]``. Output: one line per comparison and one per rank.

What it does not cover: GPUs (no CUDA here: NCCL, streams and real overlap
are not measured), multi-node, optimiser steps, memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


# ---------------------------------------------------------------- config
def _layers_and_data(cfg, num_layers):
    from reference.models import make_layers, make_microbatches

    layers = make_layers("mlp", num_layers, hidden=cfg["hidden"], seed=0, dtype=torch.float32)
    mbs = make_microbatches("mlp", cfg["M"], hidden=cfg["hidden"], batch=cfg["batch"],
                            seq=cfg["seq"], seed=0, dtype=torch.float32)
    return layers, mbs


def _loss(out, tgt):
    from reference.models import loss_fn

    return loss_fn(out, tgt)


# ---------------------------------------------------------------- workers
def _dualpipe_step(rank, R, cfg):
    import dualpipe.comm as dcomm
    from dualpipe import DualPipe, set_p2p_tensor_dtype, set_p2p_tensor_shapes

    torch.cuda.current_device = lambda: "cpu"  # DualPipe asserts its modules are on it

    def cpu_buffers():
        return [torch.empty(s, dtype=dcomm.TENSOR_DTYPE, requires_grad=True)
                for s in dcomm.TENSOR_SHAPES]

    dcomm.build_from_tensor_shapes = cpu_buffers
    layers, mbs = _layers_and_data(cfg, R)
    m0, m1 = layers[rank], layers[R - 1 - rank]
    dp = DualPipe((m0, m1))
    set_p2p_tensor_shapes([(cfg["batch"], cfg["seq"], cfg["hidden"])])
    set_p2p_tensor_dtype(torch.float32)
    M, half = cfg["M"], cfg["M"] // 2
    x0 = torch.cat([mbs[m][0] for m in range(half)])
    y0 = torch.cat([mbs[m][1] for m in range(half)])
    x1 = torch.cat([mbs[m][0] for m in range(half, M)])
    y1 = torch.cat([mbs[m][1] for m in range(half, M)])
    groups = {r: dist.new_group([r, R - 1 - r]) for r in range(R // 2)}
    mirror = groups[min(rank, R - 1 - rank)]

    def step():
        for p in dp.parameters():
            p.grad = None
        if rank == 0:
            loss, _ = dp.step(x0, num_chunks=M, criterion=_loss, labels=(y1,))
        elif rank == R - 1:
            loss, _ = dp.step(x1, num_chunks=M, criterion=_loss, labels=(y0,))
        else:
            loss, _ = dp.step(num_chunks=M)
        # the mirrored copies: layer r lives on ranks r and R-1-r; sum their grads
        flat = torch.cat([p.grad.reshape(-1) for m in (m0, m1) for p in m.parameters()])
        dist.all_reduce(flat, group=mirror)
        return None if loss is None else float(loss.detach().sum())

    return step


def _torch_step(rank, R, cfg, family):
    from torch.distributed.pipelining import PipelineStage
    from torch.distributed.pipelining.schedules import (
        Schedule1F1B,
        ScheduleDualPipeV,
        ScheduleZBVZeroBubble,
    )

    v = family != "1f1b"
    n_stages = 2 * R if v else R
    layers, mbs = _layers_and_data(cfg, n_stages)
    ids = [rank, 2 * R - 1 - rank] if v else [rank]
    dev = torch.device("cpu")
    stages = [PipelineStage(layers[i], i, n_stages, dev) for i in ids]
    M = cfg["M"]
    cls = {"1f1b": Schedule1F1B, "zbv": ScheduleZBVZeroBubble, "dualpipev": ScheduleDualPipeV}
    if v:
        sched = cls[family](stages, M, loss_fn=_loss, scale_grads=False)
    else:
        sched = cls[family](stages[0], M, loss_fn=_loss, scale_grads=False)
    x = torch.cat([mb[0] for mb in mbs])
    y = torch.cat([mb[1] for mb in mbs])
    first = 0 in ids
    last = (n_stages - 1) in ids

    def step():
        for i in ids:
            for p in layers[i].parameters():
                p.grad = None
        losses = [] if last else None
        args = (x,) if first else ()
        kw = dict(target=y, losses=losses) if last else {}
        sched.step(*args, **kw)
        return float(sum(float(l.detach()) for l in losses)) if last else None

    return step


def _fastpath_step(rank, R, cfg, family):
    from fastpath.launch import Job, build_runner
    from verifier.format.io import schedule_to_dict

    s = _schedule(family, R, cfg["M"], cfg.get("blocking", False), cfg.get("comm", "own"),
                  cfg.get("prepost", 0), cfg.get("cooldown", False))
    job = Job(schedule_to_dict(s), model="mlp", hidden=cfg["hidden"], batch=cfg["batch"],
              seq=cfg["seq"], dtype="float32", grad_order="running", split=cfg["split"],
              threads=cfg["threads"])
    # the watchdog thread runs as under the CLI (python -m fastpath run), so the
    # step measured is the one shipped: every wait reports to it
    from fastpath.watchdog import Watchdog

    wd = Watchdog(rank, 120.0)
    wd.start()
    runner = build_runner(job, rank, R, torch.device("cpu"), wd, 120.0, {})
    last = {}

    def step():
        res = runner.run()
        last["timeline"] = [(t.start, t.end, t.blocked) for t in res.timeline]
        last["executed"] = list(res.executed)
        return sum(float(v) for v in res.losses.values()) if res.losses else None

    return step, last


def _entry(rank, R, port, family, cfg, q):
    """One rank: build both systems, then alternate their steps (order flipped every
    iteration), each after a barrier, so machine load falls on both alike."""
    try:
        torch.set_num_threads(cfg["threads"])
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=R)
        other = _dualpipe_step(rank, R, cfg) if family == "dualpipe" else \
            _torch_step(rank, R, cfg, family)
        fast, last = _fastpath_step(rank, R, cfg, family)
        times = {"fast": [], "other": []}
        cpu = {"fast": [], "other": []}
        main_cpu = {"fast": [], "other": []}  # this thread only (no gloo loop threads)
        losses = {}
        for i in range(cfg["warmup"] + cfg["iters"]):
            order = (("fast", fast), ("other", other))
            for name, fn in (order if i % 2 == 0 else order[::-1]):
                dist.barrier()
                c0, m0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
                losses[name] = fn()
                t = time.perf_counter() - t0
                c, mc = time.process_time() - c0, time.thread_time() - m0
                if i >= cfg["warmup"]:
                    times[name].append(t)
                    cpu[name].append(c)
                    main_cpu[name].append(mc)
        dist.barrier()
        q.put(("ok", rank, (times, losses, last["timeline"], last["executed"], cpu,
                            main_cpu)))
        dist.destroy_process_group()
    except BaseException as e:  # noqa: BLE001
        import traceback

        q.put(("error", rank, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"))
    q.close()
    q.join_thread()
    os._exit(0)


def run_pair(family, R, cfg, timeout=600):
    """(fastpath step times, other step times, loss sums, fastpath JobResult of the
    last iteration), step time = slowest rank per iteration."""
    from fastpath.launch import JobResult, free_port
    from fastpath.runtime import RankResult, StepTime

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, R, port, family, cfg, q), daemon=True)
             for r in range(R)]
    for p in procs:
        p.start()
    out = {}
    t_end = time.monotonic() + timeout
    try:
        while len(out) < R:
            if time.monotonic() > t_end:
                raise RuntimeError(f"{family}: timed out after {timeout}s")
            try:
                status, rank, payload = q.get(timeout=1.0)
            except Exception:  # noqa: BLE001 - queue.Empty
                continue
            if status == "error":
                raise RuntimeError(f"{family} rank {rank}: {payload}")
            out[rank] = payload
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    n = cfg["iters"]
    fast = [max(out[r][0]["fast"][i] for r in range(R)) for i in range(n)]
    other = [max(out[r][0]["other"][i] for r in range(R)) for i in range(n)]
    loss = {k: sum(out[r][1][k] for r in range(R) if out[r][1].get(k) is not None)
            for k in ("fast", "other")}
    ranks = [RankResult(r, timeline=[StepTime(*x) for x in out[r][2]], executed=out[r][3])
             for r in range(R)]
    cpu = {k: [sum(out[r][4][k][i] for r in range(R)) for i in range(n)]
           for k in ("fast", "other")}
    main = {k: [sum(out[r][5][k][i] for r in range(R)) for i in range(n)]
            for k in ("fast", "other")}
    return fast, other, loss, JobResult(ranks), cpu, main


def _schedule(family, R, M, blocking=False, comm="own", prepost=0, cooldown=False):
    """The schedule fastpath runs against ``family``'s baseline.

    Both runtimes get the family's compute order and add communication their
    own way, as ScheduleDualPipeV does for its compute-only order
    (``_prepare_schedule_with_comms``) and DeepSeek's DualPipe with its batches:
    fastpath lowers it (``verifier.semantics.lowering``: sends after the producer,
    receives before the consumer, ``Batch(wait=False)``: only consumers wait),
    then ``prepost`` applies ``fastpath.plan.prepost_receives`` with that
    lookahead (None: every receive at the start, or after a first F that
    consumes none; 0: as lowered), and
    ``blocking="sends"`` waits each send right after posting it
    (``fastpath.plan.waited_sends``); ``cooldown`` first splits each rank's
    backwards after its last forward (``fastpath.plan.split_cooldown``). ``comm="deepseek"`` runs
    dualpipe and dualpipev with DeepSeek's communication instead, then
    ``prepost`` (each waited batch includes sends, and a gloo send completes
    only once the peer has posted its receive: as scheduled, every batch is a
    handshake with the peer, about twice the blocking waits per step of
    PyTorch's runtime, measured with ``--prepost 0``; with the receives posted
    up front the peer's receive is already there). For 1f1b and zbv there is no
    DeepSeek form."""
    from fastpath.plan import blocking_batches, prepare_schedule
    from verifier.generators import generate

    own = comm == "own" or family not in ("dualpipe", "dualpipev")
    s = prepare_schedule(generate(family, R, M, compute_only=own))
    if cooldown:
        from fastpath.plan import split_cooldown

        s = split_cooldown(s)
    if prepost != 0:
        from fastpath.plan import prepost_receives

        s = prepost_receives(s, prepost)
    if not blocking:
        return s
    if blocking == "sends":
        from fastpath.plan import waited_sends

        return waited_sends(s)
    return blocking_batches(s, only_needed_next=blocking == "needed")


def _paired(fast: list[float], other: list[float]) -> tuple[float, float, float, int]:
    """Per-iteration ratios fast_i / other_i (the two steps of one iteration ran back to
    back, so load that drifts over the run cancels): (median, lower quartile, upper
    quartile, iterations where fastpath was faster)."""
    r = sorted(f / o for f, o in zip(fast, other))
    q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0], r[0], r[0]]
    return statistics.median(r), q[0], q[2], sum(1 for f, o in zip(fast, other) if f < o)


def main(argv=None) -> int:
    from fastpath.cli import lookahead_arg

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--microbatches", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=30,
                    help="timed steps of each system per process group (default 30)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per rank")
    ap.add_argument("--split", choices=("graph", "autograd"), default="graph",
                    help="fastpath's I/W split (default graph)")
    ap.add_argument("--batches", choices=("as-scheduled", "waited", "needed", "sends"),
                    default="sends",
                    help="as-scheduled: a BATCH is waited on where the schedule "
                         "says (DualPipe/DualPipeV: all; lowered 1F1B/ZBV: none, only the "
                         "receives a compute consumes, sends at the end); waited: every "
                         "BATCH waited right after posting, as PyTorch's 1F1B does "
                         "(fastpath.plan.blocking_batches, `python -m fastpath run "
                         "--wait-batches`; verified first); needed: only the batches "
                         "holding a receive the next compute consumes (for 1f1b this is "
                         "PyTorch's fused waits); sends (default): every send waited right after "
                         "posting (fastpath.plan.waited_sends, `fastpath run --wait-sends`; "
                         "with the default --prepost all, the combination only the gloo "
                         "model verifies)")
    ap.add_argument("--comm", choices=("own", "deepseek"), default="own",
                    help="own (default): fastpath's dualpipe/dualpipev are their compute "
                         "order lowered by fastpath (then --prepost), as the baselines add "
                         "their own communication to it; deepseek: DeepSeek's "
                         "communication (every batch waited; then --prepost)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="process groups spawned per comparison, their iterations pooled "
                         "(default 3: on 2 cores one group's paired ratio for 1f1b moved "
                         "between 0.92x and 0.98x from one spawn to the next, more than "
                         "within a group)")
    ap.add_argument("--prepost", type=lookahead_arg, default=None, metavar="N|all",
                    help="post each receive N computes earlier than the "
                         "lowering does (all: every receive at the start of the step, after "
                         "the first compute when it consumes none; "
                         "fastpath.plan.prepost_receives; verified under gloo; 0: the "
                         "lowering as it is, verified under nccl). Default all")
    ap.add_argument("--split-cooldown", choices=("on", "off"), default="on",
                    help="on (default): each rank's backwards after its last forward run as "
                         "I, send, W (fastpath.plan.split_cooldown; `python -m fastpath run "
                         "--split-cooldown`): the previous stage, which has only backwards "
                         "left, gets each gradient before W runs; off: as generated")
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["dualpipe", "1f1b", "zbv", "dualpipev"])
    a = ap.parse_args(argv)
    from fastpath.check import verify
    from fastpath.preflight import BACKEND_MODEL
    from fastpath.trace import measured_idle, predicted_bubble

    R, M = a.ranks, a.microbatches
    cfg = dict(M=M, hidden=a.hidden, batch=a.batch, seq=a.seq, iters=a.iterations,
               warmup=a.warmup, split=a.split,
               blocking={"waited": True, "needed": "needed", "sends": "sends"}.get(a.batches, False),
               comm=a.comm, prepost=a.prepost, cooldown=a.split_cooldown == "on",
               threads=a.threads or max(1, (os.cpu_count() or 1) // R))
    print(f"bench_fastpath: ranks={R} microbatches={M} mlp hidden={a.hidden} batch={a.batch} "
          f"seq={a.seq} float32 gloo threads/rank={cfg['threads']} split={a.split} "
          f"batches={a.batches} comm={a.comm} "
          f"prepost={'all' if a.prepost is None else a.prepost} "
          f"split-cooldown={a.split_cooldown} "
          f"iterations={a.iterations} "
          f"warmup={a.warmup} torch={torch.__version__}")
    pairs = [("dualpipe", "DeepSeek DualPipe 1.0.0"),
             ("1f1b", "torch Schedule1F1B"),
             ("zbv", "torch ScheduleZBVZeroBubble"),
             ("dualpipev", "torch ScheduleDualPipeV")]
    worst = worst_paired = worst_cpu = 0.0
    for family, other_name in pairs:
        if a.only and family not in a.only:
            continue
        # the model of the backend that runs it (fastpath run's --comm-model auto)
        model = BACKEND_MODEL["gloo"]
        s = _schedule(family, R, M, cfg["blocking"], cfg["comm"], cfg["prepost"], cfg["cooldown"])
        v = verify(s, model).verdict
        if v != "VERIFIED":
            print(f"{family}: SKIPPED (fastpath's schedule is {v} under {model}; fastpath runs "
                  "only verified ones)")
            continue
        fp, ot, fc, oc, fm, om = [], [], [], [], [], []
        try:
            for _ in range(a.repeats):
                f_times, o_times, losses, jr, cpu, main_cpu = run_pair(family, R, cfg)
                fp += f_times
                ot += o_times
                fc += cpu["fast"]
                oc += cpu["other"]
                fm += main_cpu["fast"]
                om += main_cpu["other"]
        except Exception as e:  # noqa: BLE001
            print(f"{family}: FAILED {type(e).__name__}: {str(e)[:400]}")
            continue
        fp_loss, ot_loss = losses["fast"], losses["other"]
        idle = measured_idle(jr, s)
        try:
            pred = predicted_bubble(s, jr, model)
        except Exception as e:  # noqa: BLE001
            pred = None
            print(f"  (predicted bubble unavailable: {type(e).__name__}: {e})")
        f_med, o_med = statistics.median(fp), statistics.median(ot)
        ratio = f_med / o_med
        wall = _paired(fp, ot)
        cpu_p = _paired(fc, oc)
        worst = max(worst, ratio)
        worst_paired = max(worst_paired, wall[0])
        worst_cpu = max(worst_cpu, cpu_p[0])
        print(f"{family}: fastpath {f_med * 1e3:.2f} ms vs {other_name} {o_med * 1e3:.2f} ms "
              f"ratio {ratio:.3f}x (median of {len(fp)} / {len(ot)}; loss sums {fp_loss:.6f} / "
              f"{ot_loss:.6f})")
        print(f"  paired wall: ratio {wall[0]:.3f}x (median of per-iteration ratios, quartiles "
              f"{wall[1]:.3f}-{wall[2]:.3f}); fastpath faster in {wall[3]}/{len(fp)} iterations")
        print(f"  best step: fastpath {min(fp) * 1e3:.2f} ms vs {min(ot) * 1e3:.2f} ms "
              f"ratio {min(fp) / min(ot):.3f}x")
        print(f"  cpu per step (all ranks, process time): fastpath "
              f"{statistics.median(fc) * 1e3:.2f} ms vs {statistics.median(oc) * 1e3:.2f} ms "
              f"ratio {statistics.median(fc) / statistics.median(oc):.3f}x, paired "
              f"{cpu_p[0]:.3f}x (quartiles {cpu_p[1]:.3f}-{cpu_p[2]:.3f})")
        print(f"  cpu per step (all ranks, main thread only, no gloo threads): fastpath "
              f"{statistics.median(fm) * 1e3:.2f} ms vs {statistics.median(om) * 1e3:.2f} ms "
              f"ratio {statistics.median(fm) / statistics.median(om):.3f}x")
        for r, (busy, idl) in enumerate(idle):
            pb = f"{pred[1][r] * 1e3:.2f} ms" if pred else "n/a"
            print(f"  rank {r}: busy {busy * 1e3:.2f} ms idle {idl * 1e3:.2f} ms "
                  f"predicted bubble {pb}")
    if worst == 0.0:
        print("worst ratio: n/a (no comparison ran)")
        return 1
    print(f"worst ratio: {worst:.3f}x (medians); paired wall {worst_paired:.3f}x; "
          f"paired cpu {worst_cpu:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

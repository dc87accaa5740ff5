"""Starting the ranks: spawn them here, or join a ``torchrun`` launch, and collect results.

What it is:

- ``Job``: one schedule run (the schedule as a pp-schedule dict, the model, its
  sizes, seed, dtype, loss reduction, gradient order, timed iterations).
- ``spawn(jobs, nproc=R, ...)``: starts R processes (``torch.multiprocessing``
  spawn context, rendezvous on a free TCP port of 127.0.0.1), runs every job in
  order in the same process group (start-up paid once) and returns, per job,
  every rank's ``RankResult``. When a rank fails, its message (the watchdog
  names rank, step, action and peer) is raised here as ``RunFailed`` and the
  other ranks are killed; the parent never waits longer than ``deadline_s``.
- ``rank_main(...)``: the body of one rank, also used under ``torchrun``
  (env:// rendezvous: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), where rank 0
  gets every rank's results through ``gather_object``.
- backend "auto": NCCL when CUDA has a device per rank, else gloo on CPU.

Exit codes of a failed rank (also the CLI's): 4 watchdog, 5 any other failure
of a rank (an exception, a peer that died, a rank that exited without a word).

What it does not cover: multi-node launches (use torchrun), elastic restarts,
the differential check (fastpath.check) and the command line (fastpath.cli).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import queue as queue_mod
import socket
import time
import traceback
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fastpath.watchdog import (
    EXIT_WATCHDOG,
    FastpathError,
    PeerFailure,
    Watchdog,
    WatchdogTimeout,
)

EXIT_RANK_FAILED = 5
_ERROR_GRACE_S = 5.0  # how long the launcher collects failure reports after the first
BACKENDS = ("auto", "gloo", "nccl")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Job:
    schedule: dict
    model: str = "mlp"
    layers_per_stage: int = 1
    hidden: int = 16
    batch: int = 2
    seq: int = 4
    seed: int = 0
    dtype: str = "float64"
    loss_reduction: str = "sum"
    grad_order: str = "microbatch"
    split: str = "autograd"  # I/W split: "autograd" (reference.split) or "graph"
    iterations: int = 1
    warmup: int = 0
    threads: int | None = None  # torch CPU threads per rank (None: cores // ranks)


def cpu_threads(job: Job, world: int) -> int:
    """Intra-op threads a CPU rank uses; reductions inside a kernel (LayerNorm's
    weight gradient) round differently with another count, so the reference
    comparison runs with the same number."""
    return job.threads or max(1, (os.cpu_count() or 1) // world)


@dataclass
class JobResult:
    ranks: list  # RankResult per rank (of the last iteration)
    step_seconds: list[list[float]] = field(default_factory=list)  # [iteration][rank]


class RunFailed(FastpathError):
    """A spawned run failed; ``rank``, message and ``exit_code`` are the root cause's,
    ``others`` the (rank, message, code) of ranks that failed as a consequence."""

    def __init__(self, rank: int | None, message: str, exit_code: int,
                 others: tuple = ()):
        self.rank, self.exit_code, self.others = rank, exit_code, tuple(others)
        super().__init__(message)


# How a rank sees a peer that died or timed out first: gloo closes the pair, NCCL
# reports a remote error. Such a failure is a consequence, never the root cause.
_PEER_LOSS_TEXT = ("connection closed by peer", "connection reset by peer",
                   "broken pipe", "remote process exited", "socket closed")


def is_peer_loss(e: BaseException) -> bool:
    if isinstance(e, PeerFailure):
        return True
    text = str(e).lower()
    return any(t in text for t in _PEER_LOSS_TEXT)


def root_cause(errors: list[tuple]) -> RunFailed:
    """The error to report among the ranks' ``(rank, message, code[, peer_loss])``,
    given in arrival order: the earliest that is a rank's own failure (a watchdog
    report, an exception), and only when there is none, the earliest of the ranks
    that merely lost a peer."""

    def rank_of(item):
        _, (_, _, _, *rest) = item
        return (bool(rest and rest[0]), item[0])

    _, (rank, msg, code, *_) = min(enumerate(errors), key=rank_of)
    others = tuple((r, m, c) for (r, m, c, *_) in errors if (r, m) != (rank, msg))
    return RunFailed(rank, msg, code, others)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_backend(backend: str, nproc: int) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if torch.cuda.is_available() and torch.cuda.device_count() >= nproc:
        return "nccl"
    return "gloo"


def _device(backend: str, local_rank: int) -> torch.device:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def build_runner(job: Job, rank: int, world: int, device, watchdog=None,
                 wait_s: float = 300.0, group_cache: dict | None = None):
    """This rank's ``RankRunner`` for ``job`` in the current process group (tied-layer
    subgroups created: a collective, every rank must call it)."""
    from fastpath.plan import build_plan
    from fastpath.runtime import RankRunner
    from reference.baseline import loss_for_backward
    from reference.models import loss_fn, make_layers, make_microbatches, stage_layer_map
    from verifier.io import schedule_from_dict

    sched = schedule_from_dict(job.schedule, "<job>")
    if sched.num_ranks != world:
        raise ValueError(f"the schedule has {sched.num_ranks} ranks but {world} were started")
    dtype = DTYPES[job.dtype]
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(job, world))
    plan = build_plan(sched, rank)
    smap = stage_layer_map(sched, job.layers_per_stage)
    needed = sorted({i for st in plan.stages for i in smap[st]})
    layers = {}
    if needed:
        made = make_layers(job.model, max(needed) + 1, hidden=job.hidden, seed=job.seed,
                           dtype=dtype)
        layers = {i: made[i].to(device) for i in needed}
    mbs = make_microbatches(job.model, sched.num_microbatches, hidden=job.hidden,
                            batch=job.batch, seq=job.seq, seed=job.seed, dtype=dtype)
    M = sched.num_microbatches
    runner = RankRunner(
        plan, smap, layers, mbs,
        lambda out, tgt: loss_fn(out, tgt),
        device=device, watchdog=watchdog, wait_timeout_s=wait_s,
        grad_order=job.grad_order, split=job.split,
        backward_loss=lambda loss: loss_for_backward(loss, job.loss_reduction, M),
    )
    runner.setup_tied_groups(group_cache)
    return runner


def _run_job(job: Job, rank: int, world: int, device, watchdog, wait_s: float,
             group_cache: dict) -> tuple:
    runner = build_runner(job, rank, world, device, watchdog, wait_s, group_cache)
    times = []
    res = None
    for _ in range(job.warmup + job.iterations):
        dist.barrier()
        res = runner.run()
        times.append(res.step_seconds)
    res.grads = {n: g.detach().cpu() for n, g in res.grads.items()}
    res.losses = {m: v.detach().cpu() for m, v in res.losses.items()}
    return res, times[job.warmup:]


def rank_main(rank: int, world: int, jobs: list[Job], *, backend: str = "auto",
              init_method: str = "env://", watchdog_s: float = 300.0,
              report=None, local_rank: int | None = None, threads: int | None = None):
    """One rank: run every job; returns the gathered [JobResult] on rank 0, None elsewhere.

    ``report(kind, payload)`` (spawn mode) receives ("error", (rank, message, code))
    from the watchdog thread when it has to end the process."""

    def fire(msg: str) -> None:
        if report is not None:
            report("error", (rank, msg, EXIT_WATCHDOG))
        else:
            import sys

            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    backend = choose_backend(backend, world)
    device = _device(backend, rank if local_rank is None else local_rank)
    if threads:
        jobs = [dataclasses.replace(j, threads=threads) for j in jobs]
    wd = Watchdog(rank, watchdog_s, on_fire=fire)
    wd.start()
    # Collectives (gather, tied all-reduce) time out later than the watchdog, so a
    # stuck P2P wait is what gets reported, not its consequence on another rank.
    timeout = datetime.timedelta(seconds=2 * watchdog_s + 10)
    kw = dict(device_id=device) if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=timeout, **kw)
    group_cache: dict = {}
    out = []
    for job in jobs:
        res, times = _run_job(job, rank, world, device, wd, watchdog_s, group_cache)
        out.append((res, times))
    wd.waiting("end", "gathering results", "rank 0's gather", 0)
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(out, gathered, dst=0)
    dist.destroy_process_group()  # together, so no rank tears down under another
    wd.idle()
    wd.stop()
    if rank != 0:
        return None
    results = []
    for j in range(len(jobs)):
        ranks = [gathered[r][j][0] for r in range(world)]
        iters = len(gathered[0][j][1])
        step = [[gathered[r][j][1][i] for r in range(world)] for i in range(iters)]
        results.append(JobResult(ranks, step))
    return results


def _to_bytes(obj) -> bytes:
    """Results cross the queue as bytes: torch's queue would share tensors through
    file descriptors that die with the child process."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _from_bytes(data: bytes):
    import io

    return torch.load(io.BytesIO(data), weights_only=False)


def _spawn_entry(rank, world, port, jobs, opts, q):  # pragma: no cover - child process
    def report(kind, payload):
        # the watchdog thread calls this right before os._exit: flush it through
        q.put((kind, payload))
        q.close()
        q.join_thread()

    code = 0
    try:
        res = rank_main(rank, world, jobs, init_method=f"tcp://127.0.0.1:{port}",
                        report=report, **opts)
        if rank == 0:
            q.put(("result", _to_bytes(res)))
    except WatchdogTimeout as e:
        code = EXIT_WATCHDOG
        q.put(("error", (rank, str(e), code)))
    except PeerFailure as e:
        code = EXIT_RANK_FAILED
        q.put(("error", (rank, str(e), code, True)))
    except FastpathError as e:
        code = EXIT_RANK_FAILED
        q.put(("error", (rank, str(e), code)))
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        code = EXIT_RANK_FAILED
        tb = traceback.format_exc(limit=6)
        q.put(("error", (rank, f"rank {rank} failed: {type(e).__name__}: {e}\n{tb}", code,
                         is_peer_loss(e))))
    q.close()
    q.join_thread()
    os._exit(code)


def spawn(jobs: list[Job], nproc: int, *, backend: str = "auto", watchdog_s: float = 300.0,
          deadline_s: float | None = None, threads: int | None = None) -> list[JobResult]:
    """Run ``jobs`` on ``nproc`` freshly spawned ranks; see the module docstring."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    opts = dict(backend=backend, watchdog_s=watchdog_s, threads=threads)
    procs = [ctx.Process(target=_spawn_entry, args=(r, nproc, port, jobs, opts, q), daemon=True)
             for r in range(nproc)]
    for p in procs:
        p.start()
    if deadline_s is None:
        deadline_s = 120.0 + watchdog_s * 2 + 60.0 * len(jobs)
    t_end = time.monotonic() + deadline_s
    result = None
    exited_at = None
    errors: list[tuple] = []
    first_error_at = None
    try:
        while True:
            try:
                kind, payload = q.get(timeout=0.1)
            except queue_mod.Empty:
                kind = None
            if kind == "error":
                errors.append(payload)
                first_error_at = first_error_at or time.monotonic()
            if errors:
                # One rank's failure makes its peers fail too (a closed connection),
                # sometimes sooner than its own report arrives: collect the reports
                # until every rank has exited (or a short grace), then name the cause.
                done = all(p.exitcode is not None for p in procs)
                if (done and kind is None) or time.monotonic() - first_error_at > _ERROR_GRACE_S:
                    raise root_cause(errors)
                continue
            if kind == "result":
                result = _from_bytes(payload)
            codes = [p.exitcode for p in procs]
            if result is not None and all(c == 0 for c in codes):
                return result
            bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                # give its message a moment to arrive through the queue
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 3.0:
                    r, c = bad[0]
                    raise RunFailed(r, f"rank {r} exited with code {c} and no message",
                                    EXIT_RANK_FAILED)
            if all(c is not None for c in codes) and result is None and not bad:
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 3.0:
                    raise RunFailed(None, "every rank exited but no result arrived",
                                    EXIT_RANK_FAILED)
            if time.monotonic() > t_end:
                raise RunFailed(None, f"the run exceeded its deadline of {deadline_s:.0f}s",
                                EXIT_WATCHDOG)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
        q.close()

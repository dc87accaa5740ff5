"""Starting the ranks: spawn them here, or join a ``torchrun`` launch, and collect results.

What it is:

- ``Job``: one schedule run (the schedule as a pp-schedule dict, the model, its
  sizes, seed, dtype, loss reduction, gradient order, timed iterations).
- ``spawn(jobs, nproc=R, ...)``: starts R processes (``torch.multiprocessing``
  spawn context, rendezvous on a free TCP port of 127.0.0.1), runs every job in
  order in the same process group (start-up paid once) and returns, per job,
  every rank's ``RankResult``. When a rank fails, the root cause is raised
  here as ``RunFailed``: the first rank that failed on its own (its message;
  the watchdog names rank, step, action and peer) or whose process died
  ("rank 2 died (SIGKILL)"), with the ranks that then lost a connection to it
  as ``others`` (fastpath.supervise); the other ranks are killed and reaped;
  the parent never waits longer than ``deadline_s``. SIGINT and SIGTERM to the
  launcher are forwarded to the ranks, which are reaped before it exits; the
  ranks die with the launcher even when it is SIGKILLed (parent-death signal,
  and the watchdog's parent poll).
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
import pickle
import queue as queue_mod
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fastpath.supervise import (  # noqa: F401 - RunFailed, root_cause: the launcher's API
    EXIT_RANK_FAILED,
    Failure,
    Interrupted,
    RunFailed,
    describe_exit,
    is_peer_loss,
    rank_process,
    root_cause,
    short_comm_error,
    signals_raise,
    stop,
)
from fastpath.watchdog import (
    EXIT_WATCHDOG,
    FastpathError,
    PeerFailure,
    Watchdog,
    WatchdogTimeout,
)
from fastpath.plan import build_plan
from fastpath.runtime import RankRunner
from reference.baseline import loss_for_backward
from reference.models import loss_fn, make_layers, make_microbatches, stage_layer_map
from verifier.format.io import schedule_from_dict

_ERROR_GRACE_S = 5.0  # how long the launcher collects failure reports after the first
_STOP_GRACE_S = 3.0  # how long ranks get to exit on a forwarded SIGTERM/SIGINT
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
        dtype=dtype,
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
              report=None, local_rank: int | None = None, threads: int | None = None,
              parent_pid: int | None = None):
    """One rank: run every job; returns the gathered [JobResult] on rank 0, None elsewhere.

    ``report(kind, payload)`` (spawn mode) receives ("error", Failure) from the
    watchdog thread when it has to end the process, and ("ready", rank) once the
    process group is up. ``parent_pid``: the watchdog ends this rank when that
    process is gone (fastpath.watchdog)."""

    def fire(msg: str) -> None:
        if report is not None:
            report("error", Failure(rank, msg, EXIT_WATCHDOG, "own"))
        else:
            import sys

            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    backend = choose_backend(backend, world)
    device = _device(backend, rank if local_rank is None else local_rank)
    if threads:
        jobs = [dataclasses.replace(j, threads=threads) for j in jobs]
    wd = Watchdog(rank, watchdog_s, on_fire=fire, parent_pid=parent_pid)
    wd.start()
    # Collectives (gather, tied all-reduce) time out later than the watchdog, so a
    # stuck P2P wait is what gets reported, not its consequence on another rank.
    timeout = datetime.timedelta(seconds=2 * watchdog_s + 10)
    kw = dict(device_id=device) if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=timeout, **kw)
    if report is not None:
        report("ready", rank)
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


def _spawn_entry(rank, world, port, jobs, opts, parent_pid, q):  # pragma: no cover - child
    """A rank's body once fastpath.supervise.rank_process has set it up (parent death,
    signals, name) and unpickled this call, importing torch."""

    def report(kind, payload, flush=False):
        q.put((kind, payload))
        if flush:  # the watchdog thread calls this right before os._exit
            q.close()
            q.join_thread()

    code = 0
    try:
        res = rank_main(rank, world, jobs, init_method=f"tcp://127.0.0.1:{port}",
                        report=lambda k, p: report(k, p, flush=(k == "error")),
                        parent_pid=parent_pid, **opts)
        if rank == 0:
            report("result", _to_bytes(res))
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        failure = _failure_of(rank, e)
        code = failure.exit_code
        report("error", failure)
    q.close()
    q.join_thread()
    os._exit(code)


def _failure_of(rank: int, e: BaseException) -> Failure:
    """A rank's exception as the launcher reports it: whose fault (fastpath.supervise
    kinds), one line for the failures fastpath names, a short traceback for others
    (a bug: where it happened matters)."""
    if isinstance(e, WatchdogTimeout):
        return Failure(rank, str(e), EXIT_WATCHDOG, "own")
    if isinstance(e, PeerFailure):
        return Failure(rank, str(e), EXIT_RANK_FAILED, "peer")
    if isinstance(e, FastpathError):
        return Failure(rank, str(e), EXIT_RANK_FAILED, "own")
    if is_peer_loss(e):  # outside a wait fastpath names (barrier, gather, new_group)
        return Failure(rank, f"rank {rank} lost a peer: {short_comm_error(str(e))}",
                       EXIT_RANK_FAILED, "peer")
    tb = traceback.format_exc(limit=6)
    return Failure(rank, f"rank {rank} failed: {type(e).__name__}: {e}\n{tb}",
                   EXIT_RANK_FAILED, "own")


class _Watch:
    """The launcher's view of a spawned run: failures in the order it observed them."""

    def __init__(self, procs):
        self.procs = procs
        self.failures: list[Failure] = []
        self.reported: set[int] = set()  # ranks whose own report arrived
        self.exited: set[int] = set()  # ranks whose exit has been looked at
        self.ready: list[int] = []  # ranks whose process group is up, in that order
        self.result = None
        self.first_failure_at: float | None = None

    def observe(self, q, timeout: float) -> None:
        """One round: which ranks exited (looked at first, so that every message a
        rank sent before it exited is read below, before its silent exit is judged),
        then every message that is there; then the silent deaths among those exits."""
        codes = [p.exitcode for p in self.procs]
        items = []
        try:
            items.append(q.get(timeout=timeout) if timeout > 0 else q.get_nowait())
            while True:
                items.append(q.get_nowait())
        except queue_mod.Empty:
            pass
        deaths = []
        for r, c in enumerate(codes):
            if c is None or r in self.exited:
                continue
            self.exited.add(r)
            if c != 0 and not any(k == "error" and p.rank == r for k, p in items) \
                    and r not in self.reported:
                code = EXIT_WATCHDOG if c == EXIT_WATCHDOG else EXIT_RANK_FAILED
                deaths.append(Failure(r, describe_exit(r, c), code, "death"))
        # a death seen in this round came before the messages read in it: the
        # connection errors of its peers are its consequences
        for f in deaths:
            self._fail(f)
        for kind, payload in items:
            if kind == "error":
                self.reported.add(payload.rank)
                self._fail(payload)
            elif kind == "ready":
                self.ready.append(payload)
            elif kind == "result":
                self.result = _from_bytes(payload)

    def _fail(self, f: Failure) -> None:
        self.failures.append(f)
        if self.first_failure_at is None:
            self.first_failure_at = time.monotonic()

    @property
    def all_exited(self) -> bool:
        return all(p.exitcode is not None for p in self.procs)


def spawn(jobs: list[Job], nproc: int, *, backend: str = "auto", watchdog_s: float = 300.0,
          deadline_s: float | None = None, threads: int | None = None,
          on_event=None) -> list[JobResult]:
    """Run ``jobs`` on ``nproc`` freshly spawned ranks; see the module docstring.

    SIGINT (KeyboardInterrupt) and SIGTERM (``Interrupted``) are forwarded to the
    ranks, which are reaped before the exception propagates. ``on_event(kind,
    value)``, for tests and tools: ("pids", [pid per rank]) once started, ("ready",
    rank) as each rank's process group comes up."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    opts = dict(backend=backend, watchdog_s=watchdog_s, threads=threads)
    me = os.getpid()
    # The rank's call travels as bytes, unpickled (importing torch, seconds) only after
    # rank_process has armed the parent-death signal and set its signals.
    procs = [ctx.Process(target=rank_process,
                         args=(r, me, pickle.dumps((_spawn_entry, (r, nproc, port, jobs, opts,
                                                                   me))), q),
                         daemon=True, name=f"fastpath-rank{r}")
             for r in range(nproc)]
    if deadline_s is None:
        deadline_s = 120.0 + watchdog_s * 2 + 60.0 * len(jobs)
    signum = signal.SIGKILL  # how the ranks left over at the end are stopped
    with signals_raise():
        try:
            for p in procs:
                p.start()
            if on_event is not None:
                on_event("pids", [p.pid for p in procs])
            return _supervise(procs, q, time.monotonic() + deadline_s, deadline_s, on_event)
        except KeyboardInterrupt:
            signum = signal.SIGINT
            raise
        except Interrupted as e:
            signum = e.signum
            raise
        finally:
            stop(procs, signum, _STOP_GRACE_S)
            q.close()


def _supervise(procs, q, t_end: float, deadline_s: float, on_event) -> list[JobResult]:
    w = _Watch(procs)
    exited_at = None
    while True:
        ready = len(w.ready)
        w.observe(q, 0.05)
        if on_event is not None:
            for r in w.ready[ready:]:
                on_event("ready", r)
        if w.failures:
            # One rank's failure makes its peers fail too (a closed connection),
            # sometimes sooner than its own report arrives: collect the reports
            # until every rank has exited (or a short grace), then name the cause.
            if w.all_exited or time.monotonic() - w.first_failure_at > _ERROR_GRACE_S:
                w.observe(q, 0.0)  # what arrived meanwhile
                raise root_cause(w.failures)
            continue
        if w.result is not None and all(p.exitcode == 0 for p in procs):
            return w.result
        if w.all_exited and w.result is None:
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > 3.0:
                raise RunFailed(None, "every rank exited but no result arrived",
                                EXIT_RANK_FAILED)
        if time.monotonic() > t_end:
            raise RunFailed(None, f"the run exceeded its deadline of {deadline_s:.0f}s",
                            EXIT_WATCHDOG)

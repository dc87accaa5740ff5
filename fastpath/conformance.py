"""Conformance harness: run a schedule's communication for real and see whether it ends.

What it is: ``run_schedules(schedules, num_ranks, timeout_s=...)`` spawns one
process per rank once (gloo on CPU, rendezvous on a free port of 127.0.0.1) and
runs every schedule in turn in that process group. Each rank walks its action
list of the schedule as given (lower a compute-only schedule first:
``fastpath.plan.prepare_schedule``), posting exactly what the schedule says,
in its order, with plain ``torch.distributed``:

- a ``Comm`` is one ``isend`` / ``irecv`` of a 1-element tensor to the peer
  the route names (``Schedule.peer_of``);
- a ``Batch`` is one ``batch_isend_irecv`` of its ops (on gloo that is the ops'
  isend/irecv in order); a waited ``Batch`` then waits every op of it;
- a compute (or both halves of an ``Overlap``) is a no-op that first waits for
  what SEMANTICS.md says it waits for: the rank's first receive of its remote
  input (``fastpath.plan.consumer_key``), and its local inputs (a compute whose
  input is produced later on the rank, or whose receive is posted later or
  never, never starts: the rank is stuck there);
- after its last step a rank waits every op it posted and has not waited yet.

No handle is waited twice (on gloo a second ``wait()`` on a completed
send/recv handle blocks: specs/SEMANTICS.md, the ``gloo`` model). Every wait has the
deadline ``timeout_s`` after the schedule's common start (a store barrier);
a wait that runs past it raises in gloo, and the rank records where it was
stuck. A schedule *terminated* when every rank finished; otherwise it *hung*
and ``Outcome.ranks`` says, per rank, the step and the op it was waiting for.

A gloo wait that times out closes its pair ("Application timeout caused pair
closure"), so after a hung schedule every rank moves to a fresh gloo group
(``dist.new_group``); after a terminated one the group is reused (nothing of
it is left pending). Each schedule uses its own tag, so nothing of one
schedule can match an op of the next.

``backend="nccl"`` runs the same walk on NCCL: rank r on CUDA device
r mod the device count (two ranks on one device are refused: NCCL does not
take them), tensors of ``elements`` float32 (NCCL completes a send that fits
the peer's buffer before the receive is posted, so small tensors show
``eager`` behaviour and large ones rendezvous), ``eager_init`` passes
``device_id`` to ``init_process_group`` (every P2P op on the group's
communicator) or leaves communicators lazy (one per rank pair for unbatched
ops). Before the first schedule every communicator the schedules can use is
created (a collective, then one blocking send/recv per rank pair in one
global order), because creating one blocks the host (not modelled,
specs/SEMANTICS.md). A wait polls ``is_completed`` until its deadline (an
NCCL wait does not block the host); a batch on NCCL returns one Work for the
whole group (``_coalescing_manager``), so every op of it is waited through
that one handle, as a PyTorch program must. A hung NCCL communicator cannot be
reused: after a hang every rank exits and ``run_schedules`` starts fresh
ranks for the schedules left.

What it does not cover: payloads and real computes (tensors are never read),
deciding what a model predicts (the checker and
benchmarks/conformance_gloo.py do that), aborting a hung NCCL kernel (the
ranks are killed).
"""

from __future__ import annotations

import datetime
import os
import queue as queue_mod
import socket
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastpath.plan import compute_inputs, consumer_key, recv_key
from verifier.errors import PpError
from verifier.ir import Batch, Comm, Compute, ComputeKind, Schedule, comms_of, computes_of

DEFAULT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class RankOutcome:
    """One rank's end: ``finished``, or the step and op it was stuck at."""

    rank: int
    finished: bool
    step: int = -1  # the step it was stuck at; len(actions) = the final wait-all
    waiting_for: str = ""
    seconds: float = 0.0  # from the common start to finishing or giving up


@dataclass(frozen=True)
class Outcome:
    terminated: bool
    ranks: tuple[RankOutcome, ...]

    @property
    def seconds(self) -> float:
        return max(r.seconds for r in self.ranks)

    def describe(self) -> str:
        if self.terminated:
            return f"terminated in {self.seconds * 1e3:.1f} ms"
        stuck = "; ".join(
            f"rank {r.rank} step {r.step}: {r.waiting_for}" for r in self.ranks if not r.finished
        )
        return f"hung ({stuck})"


class _Stuck(PpError):
    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step, self.what = step, what


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class _Runtime:
    """How a rank talks: the backend, its device, the tensor size, eager init."""

    backend: str = "gloo"
    elements: int = 1
    eager_init: bool = False
    device: str = "cpu"

    @property
    def poll(self) -> bool:
        return self.backend == "nccl"

    def tensor(self):
        return torch.zeros(self.elements, device=self.device)


class _RankWalk:
    """One rank's walk of one schedule (see the module docstring)."""

    def __init__(self, schedule: Schedule, rank: int, group, tag: int, deadline: float,
                 rt: "_Runtime | None" = None):
        self.s, self.rank, self.group, self.tag, self.deadline = schedule, rank, group, tag, deadline
        self.rt = rt or _Runtime()
        self.pending: list[tuple[object, str, int]] = []  # (work, op text, step), not yet waited
        self.first_recv: dict[tuple, object] = {}  # recv key -> work of the rank's first such receive
        self.done: set[tuple[str, int, int]] = set()  # computes that ran: (kind, stage, mb)

    def _wait(self, work, what: str, step: int) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Stuck(step, what)
        if self.rt.poll:  # NCCL: wait() would only order streams; poll until the deadline
            while not work.is_completed():
                if time.monotonic() > self.deadline:
                    raise _Stuck(step, what)
                time.sleep(0.0005)
        else:
            try:
                work.wait(datetime.timedelta(seconds=left))
            except RuntimeError as e:  # gloo: timeout, or a peer that timed out closed the pair
                raise _Stuck(step, what) from e
        self.pending = [p for p in self.pending if p[0] is not work]

    def _post(self, step: int, action) -> None:
        ops = []
        for op in comms_of(action):
            peer = self.s.peer_of(op)
            if peer is None or peer == self.rank:
                raise _Stuck(step, f"{op} has no peer on another rank")
            fn = dist.isend if op.kind.is_send else dist.irecv
            ops.append((op, dist.P2POp(fn, self.rt.tensor(), peer, self.group, self.tag)))
        if isinstance(action, Batch):
            works = dist.batch_isend_irecv([p for _, p in ops])
            if len(works) != len(ops):  # NCCL coalesces a batch into one Work: it is every op's
                works = [works[0]] * len(ops)
        else:
            works = [p.op(p.tensor, p.peer, p.group, p.tag) for _, p in ops]
        for (op, _), w in zip(ops, works):
            self.pending.append((w, str(op), step))
            if not op.kind.is_send:
                self.first_recv.setdefault(recv_key(op), w)
        if isinstance(action, Batch) and action.wait:
            for w, (op, _) in zip(works, ops):
                if any(p[0] is w for p in self.pending):
                    self._wait(w, f"{op} of the waited {action}", step)

    def _inputs_ready(self, step: int, c: Compute) -> None:
        local, remote = compute_inputs(self.s, self.rank, c)
        for key in local:
            if key not in self.done:
                raise _Stuck(step, f"{c} waits for {key[0]}({key[1]}, {key[2]}), not run before it")
        if remote:
            key = consumer_key(c)
            w = self.first_recv.get(key)
            if w is None:
                raise _Stuck(step, f"{c} waits for a receive of {key} not posted before it")
            if any(p[0] is w for p in self.pending):
                self._wait(w, f"{c} waiting for its receive {key}", step)

    def run(self) -> None:
        acts = self.s.actions[self.rank]
        for step, a in enumerate(acts):
            if isinstance(a, (Comm, Batch)):
                self._post(step, a)
                continue
            cs = computes_of(a)
            for c in cs:  # both halves of an Overlap start together
                self._inputs_ready(step, c)
            for c in cs:
                self.done.add((c.kind.value, c.stage, c.mb))
                if c.kind in (ComputeKind.B, ComputeKind.I):
                    self.done.add(("BI", c.stage, c.mb))
        for w, what, step in list(self.pending):
            self._wait(w, f"{what} (posted at step {step}) at the end", len(acts))


def _init(rank, world, port, rt: _Runtime):  # pragma: no cover - child
    """The store and the process group of one rank; NCCL's communicators created."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    store = dist.TCPStore("127.0.0.1", port, world, rank == 0,
                          timeout=datetime.timedelta(seconds=120))
    kw = {}
    if rt.backend == "nccl":
        torch.cuda.set_device(torch.device(rt.device))
        if rt.eager_init:
            kw["device_id"] = torch.device(rt.device)
    dist.init_process_group(rt.backend, store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120), **kw)
    if rt.backend != "nccl":
        return store, dist.new_group(backend="gloo")
    t = rt.tensor()
    dist.all_reduce(t)  # the group's communicator
    for a in range(world):  # every pair's communicator (lazy init), in one global order
        for b in range(a + 1, world):
            if rank == a:
                dist.send(t, b)
            elif rank == b:
                dist.recv(t, a)
    torch.cuda.synchronize()
    return store, None


def _rank_entry(rank, world, port, schedules, timeout_s, q, rt=None):  # pragma: no cover - child
    rt = rt or _Runtime()
    if rt.backend == "nccl":
        rt = _Runtime(rt.backend, rt.elements, rt.eager_init,
                      f"cuda:{rank % torch.cuda.device_count()}")
    store, group = _init(rank, world, port, rt)
    for i, s in enumerate(schedules):
        store.set(f"go{i}/{rank}", "1")
        store.wait([f"go{i}/{r}" for r in range(world)])
        t0 = time.monotonic()
        walk = _RankWalk(s, rank, group, tag=i + 1, deadline=t0 + timeout_s, rt=rt)
        try:
            walk.run()
            out = RankOutcome(rank, True, seconds=time.monotonic() - t0)
        except _Stuck as e:
            out = RankOutcome(rank, False, e.step, e.what, time.monotonic() - t0)
        store.set(f"end{i}/{rank}", "1" if out.finished else "0")
        q.put((i, out))
        ends = [store.get(f"end{i}/{r}") for r in range(world)]  # get waits for the key
        if any(e != b"1" for e in ends):
            if rt.backend == "nccl":
                break  # a hung NCCL communicator is not reusable: fresh ranks go on
            group = dist.new_group(backend="gloo")  # a timed-out wait closed pairs of the old one
    store.set(f"bye/{rank}", "1")
    if rank == 0:  # rank 0 serves the store: it leaves last
        store.wait([f"bye/{r}" for r in range(world)])
    q.put(("bye", rank))
    q.close()
    q.join_thread()
    os._exit(0)  # abandoned groups may hold threads blocked on closed pairs


def run_schedules(schedules: list[Schedule], num_ranks: int, *,
                  timeout_s: float = DEFAULT_TIMEOUT_S, deadline_s: float | None = None,
                  backend: str = "gloo", elements: int = 1,
                  eager_init: bool = False) -> list[Outcome]:
    """Run every schedule's communication on ``num_ranks`` ranks; one Outcome each.

    Every schedule must have ``num_ranks`` ranks. ``deadline_s`` bounds each
    spawn of ranks (default: start-up plus ``timeout_s`` and a second per
    schedule); past it the ranks are killed and RuntimeError is raised.
    ``backend`` gloo (CPU) or nccl (CUDA, one device per rank: ValueError when
    there are fewer devices than ranks); ``elements``, ``eager_init``: see the
    module docstring."""
    for s in schedules:
        if s.num_ranks != num_ranks:
            raise ValueError(f"schedule {s.name!r} has {s.num_ranks} ranks, the run {num_ranks}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be gloo or nccl, got {backend!r}")
    if backend == "nccl" and torch.cuda.device_count() < num_ranks:
        raise ValueError(f"{num_ranks} NCCL ranks need {num_ranks} CUDA devices (one rank per "
                         f"device), this machine has {torch.cuda.device_count()}")
    rt = _Runtime(backend, elements, eager_init)
    out: list[Outcome] = []
    while len(out) < len(schedules):  # gloo: one spawn; NCCL: a fresh one after each hang
        rest = schedules[len(out):]
        got = _spawn(rest, num_ranks, timeout_s, deadline_s, rt)
        before = len(out)
        for i in range(len(rest)):
            if i not in got:
                break
            ranks = tuple(got[i][r] for r in range(num_ranks))
            out.append(Outcome(all(r.finished for r in ranks), ranks))
        if len(out) < len(schedules) and (len(out) == before or out[-1].terminated):
            raise RuntimeError("conformance: the ranks stopped before every schedule ran")
    return out


def _spawn(schedules, num_ranks, timeout_s, deadline_s, rt) -> dict[int, dict[int, RankOutcome]]:
    """One spawn of ``num_ranks`` ranks running ``schedules`` until they end (or,
    on NCCL, until one hangs): the outcomes per schedule index and rank."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_entry, args=(r, num_ranks, port, schedules, timeout_s, q, rt),
                         daemon=True) for r in range(num_ranks)]
    for p in procs:
        p.start()
    if deadline_s is None:
        deadline_s = 120 + len(schedules) * (timeout_s + 1.0)
    end = time.monotonic() + deadline_s
    got: dict[int, dict[int, RankOutcome]] = {}
    byes = 0
    try:
        while byes < num_ranks:
            try:
                msg = q.get(timeout=max(0.1, min(1.0, end - time.monotonic())))
            except queue_mod.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"conformance: rank {dead[0]} died "
                                       f"(exit {procs[dead[0]].exitcode})") from None
                if time.monotonic() > end:
                    raise RuntimeError(f"conformance: no result within {deadline_s:.0f} s") from None
                continue
            if msg[0] == "bye":
                byes += 1
            else:
                got.setdefault(msg[0], {})[msg[1].rank] = msg[1]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return {i: rs for i, rs in got.items() if len(rs) == num_ranks}

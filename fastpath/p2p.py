"""One rank's point-to-point traffic: receive buffers, posting ops, and waiting on them.

What it is: ``P2P``, the part of ``fastpath.runtime.RankRunner`` that talks to
the peers (a mixin, like fastpath.grads.GradReduction):

- ``_post`` posts a plain ``Comm`` as one ``isend``/``irecv`` and a ``Batch`` as
  one ``batch_isend_irecv``, at the step the schedule posts it, to the peer
  fastpath.plan worked out, tag 0: ops are matched FIFO per ordered rank pair,
  as specs/SEMANTICS.md says. A send takes the tensor its producing compute
  left in ``send_data``; a receive takes a buffer from ``_Pool``. On gloo a
  send that is not waited right away is posted by a comm thread
  (``_CommThread``), in the rank's order of sends, so that writing it into the
  socket does not hold up the rank's computes.
- ``_take_recv`` hands a compute the receive it consumes and waits for it
  there (the first wait on its handle); ``_wait_batch`` waits every op of a
  waited ``Batch`` right after posting it; ``_wait_sends`` waits, at the end of
  the step, every send not waited yet. A handle is waited at most once on the
  CPU: on gloo a second ``wait()`` on a completed handle blocks forever
  (measured, torch 2.13; ``python benchmarks/conformance_gloo.py
  --probe-second-wait``), so every waited handle goes into ``done``.
- ``_wait`` bounds every wait and says whose fault a failed one is
  (fastpath.supervise.wait_failure: ``WatchdogTimeout`` when the wait lasted
  its bound, else ``PeerFailure``); a fault of this rank's own schedule (a
  send before its data, a compute whose receive was never posted) is a
  ``ScheduleFault``, raised before anything is posted or waited.
- receive buffers come from ``_Pool``, keyed by shape, preallocated to the
  plan's peak (fastpath.plan.peak_receive_buffers) and given back once the
  activation they hold is dead; on CUDA a buffer carries the event of its last
  use and is reused only after it.

What it does not cover: which ops to post where (the schedule and
fastpath.plan decide; the checker verified it under the backend's model),
computes, collectives (fastpath.grads).
"""

from __future__ import annotations

import datetime
import queue
import threading
import time

import torch
import torch.distributed as dist

from fastpath.plan import recv_key
from fastpath.supervise import wait_failure
from fastpath.watchdog import FastpathError, ScheduleFault, describe_wait
from verifier.ir import Batch, Comm, CommKind


class _Posted:
    """What a consumer waits for: a receive and the step that posted it. Formatted only
    when a message needs it (watchdog, error), not on every wait."""

    __slots__ = ("op", "step")

    def __init__(self, op: Comm, step: int):
        self.op, self.step = op, step

    def __str__(self) -> str:
        return f"{self.op} (posted at step {self.step})"


class _Pool:
    """Reusable receive buffers per shape; on CUDA a buffer is reused after its release event."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self.free: dict[tuple[int, ...], list] = {}
        self.allocated = 0

    def take(self, shape: tuple[int, ...], stream=None) -> torch.Tensor:
        lst = self.free.get(shape)
        if lst:
            buf, ev = lst.pop()
            if ev is not None and stream is not None:
                stream.wait_event(ev)
            return buf
        self.allocated += 1
        return torch.empty(shape, dtype=self.dtype, device=self.device)

    def preallocate(self, shape: tuple[int, ...], count: int) -> None:
        while self.allocated < count:
            self.allocated += 1
            self.give(torch.empty(shape, dtype=self.dtype, device=self.device))

    def give(self, buf: torch.Tensor, event=None) -> None:
        self.free.setdefault(tuple(buf.shape), []).append((buf, event))


class _Deferred:
    """A gloo send handed to the comm thread: its Work once the thread has posted it.
    Waited like a Work (``wait(timeout)``, ``is_completed()``)."""

    __slots__ = ("work", "error", "ready")

    def __init__(self):
        self.work = None
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def posted(self, timeout_s: float) -> None:
        if not self.ready.wait(timeout_s):
            raise RuntimeError(f"the comm thread did not post the send within {timeout_s} s")
        if self.error is not None:
            raise RuntimeError(f"posting the send failed: {self.error}") from self.error

    def wait(self, timeout: datetime.timedelta) -> bool:
        t0 = time.monotonic()
        self.posted(timeout.total_seconds())
        left = timeout.total_seconds() - (time.monotonic() - t0)
        return self.work.wait(timeout=datetime.timedelta(seconds=max(left, 0.001)))

    def is_completed(self) -> bool:
        return self.work is not None and self.work.is_completed()


class _CommThread:
    """One thread per process that posts gloo sends in the order they were handed over.

    Why: a gloo send to a receive already posted (fastpath.plan.prepost_receives)
    writes the data into the socket from the calling thread, and on a busy CPU
    that thread loses its core to the receiver's transport thread it wakes
    (measured on 2 cores: 256 KiB sends took 0.27-2.7 ms median wall for 0.2 ms
    of CPU; with 2 KiB messages, posting was a third of a rank's step). Posted
    from here, the rank's main thread goes on computing. Small sends gain too:
    bench_fastpath 1f1b at hidden 8, batch 1, every send here against every send
    inline, same processes: median step 0.72-1.08x over 5 runs (0.73, 1.03,
    0.72, 0.83, 1.08); zbv 0.97x, dualpipev 0.78x. The thread never waits for
    anything but the process group's ``send`` call (which does not wait for the
    peer) and the GIL, which every blocking torch call releases, so a send handed
    over is posted whatever the main thread then waits for."""

    _lock = threading.Lock()
    _queue: queue.SimpleQueue | None = None

    @classmethod
    def submit(cls, pg, t: torch.Tensor, dst: int) -> _Deferred:
        q = cls._queue
        if q is None:
            with cls._lock:
                if cls._queue is None:
                    cls._queue = queue.SimpleQueue()
                    threading.Thread(target=cls._run, args=(cls._queue,),
                                     name="fastpath-gloo-send", daemon=True).start()
                q = cls._queue
        d = _Deferred()
        q.put((pg, t, dst, d))
        return d

    @staticmethod
    def _run(q: queue.SimpleQueue) -> None:
        while True:
            pg, t, dst, d = q.get()
            try:
                d.work = pg.send([t], dst, 0)
            except BaseException as e:  # noqa: BLE001 - raised to whoever waits for it
                d.error = e
            d.ready.set()


class P2P:
    """Posting and waiting for ``RankRunner`` (which sets the attributes used here)."""

    _gloo = None  # (process group, peer -> its rank in the group), set at the first post

    def _reset_p2p(self) -> None:
        self.send_data, self.recvs, self.sends = {}, {}, []
        self.handed_over: _Deferred | None = None  # the last send given to the comm thread
        self.done: set = set()  # works waited (or seen complete): never waited again
        self.pending = []  # (work, step, action, op, peer): the watchdog's view

    def _wait(self, work, step, action, what, peer: int | None) -> float:
        """Wait for ``work``; ``what`` (a str, or an op formatted only if a message needs
        it) and ``peer`` name it to the watchdog and in errors."""
        t0 = time.perf_counter()
        if self.watchdog is not None:
            self.watchdog.waiting(step, action, what, peer)
        try:
            if self.cuda:
                work.wait()  # makes the current stream wait; no host block
            else:
                work.wait(timeout=self.timeout)
        except RuntimeError as e:
            waited = time.perf_counter() - t0
            raise wait_failure(
                e, waited, None if self.cuda else self.timeout.total_seconds(),
                timed_out=lambda: describe_wait(self.rank, step, action, what, peer, waited),
                failed=f"rank {self.rank} step {step} ({action}): {what} with rank {peer} "
                       "failed",
            ) from None
        finally:
            if self.watchdog is not None:
                self.watchdog.idle()
        return time.perf_counter() - t0

    def _post(self, step: int, action, ops: tuple[Comm, ...]) -> list:
        """Post ops (one batch_isend_irecv when ``action`` is a Batch); returns their
        records (work, step, action, op, peer).

        Within a batch the sends are posted before the receives, each kind in its
        own order: FIFO matching per direction is unchanged, and no model lets a
        batch's own order decide anything between its ops (the receives of a
        batch never feed its sends). On gloo the order matters for CPU (measured,
        bench_fastpath 1f1b on 2 ranks: ~5% more CPU per step with the receive
        first, all of it in gloo's TCP loop threads; PyTorch's 1F1B posts sends
        first too)."""
        is_batch = isinstance(action, Batch)
        order = [i for i, op in enumerate(ops) if op.kind.is_send] + \
            [i for i, op in enumerate(ops) if not op.kind.is_send]
        meta = []
        for sub in order:
            op = ops[sub]
            peer = self.plan.peers[(step, sub if is_batch else 0)]
            t = self._send_tensor(step, action, op) if op.kind.is_send else \
                self._recv_buffer(op)
            meta.append((op, peer, t))
        works = self._issue_cuda(meta, is_batch) if self.cuda else \
            self._issue_gloo(meta, is_batch and action.wait)
        if len(works) != len(meta):
            # NCCL coalesces a batch into one work that stands for every op in it
            if len(works) != 1:
                raise FastpathError(
                    f"rank {self.rank} step {step} ({action}): {len(meta)} ops posted but "
                    f"{len(works)} works came back"
                )
            works = [works[0]] * len(meta)
        out = []
        for (op, peer, t), w in zip(meta, works):
            rec = (w, step, action, op, peer)  # op formatted only when reported
            if op.kind.is_send:
                self.sends.append((w, t))
            else:
                self.recvs[recv_key(op)] = (w, t, step, action, op, peer)
            self.pending.append(rec)
            out.append(rec)
        return out

    def _issue_gloo(self, meta, waited: bool) -> list:
        """Each op through the process group's own send/recv, in order. That is what
        ``batch_isend_irecv`` does on gloo (no coalescing: it posts each op of the
        batch as a plain isend/irecv, torch/distributed/distributed_c10d.py), without
        its Python layers (P2POp, the per-op group and rank checks): they were about
        a fifth of a rank's main-thread CPU with tiny computes (cProfile with a CPU
        clock, bench_fastpath dualpipe --hidden 8 --batch 1).

        A send outside a waited batch goes to the comm thread (``_CommThread``); a
        waited batch is posted here, as its wait follows at once. Sends are matched FIFO per peer, so a send posted here first
        lets the thread post every send handed to it before (``handed_over``):
        the order of this rank's sends is the schedule's."""
        if self._gloo is None:
            pg = self.group if self.group is not None else dist.group.WORLD
            peers = set(self.plan.peers.values())
            self._gloo = (pg, {p: dist.get_group_rank(pg, p) for p in peers})
        pg, grank = self._gloo
        works = []
        for op, peer, t in meta:
            if not op.kind.is_send:
                works.append(pg.recv([t], grank[peer], 0))
            elif not waited:
                self.handed_over = _CommThread.submit(pg, t, grank[peer])
                self.result.sends_handed_over += 1
                works.append(self.handed_over)
            else:
                if self.handed_over is not None:  # its failure is raised by its wait
                    if not self.handed_over.ready.wait(self.timeout.total_seconds()):
                        raise FastpathError(
                            f"rank {self.rank}: the comm thread did not post a send within "
                            f"{self.timeout.total_seconds()} s")
                    self.handed_over = None
                works.append(pg.send([t], grank[peer], 0))
        return works

    def _issue_cuda(self, meta, is_batch: bool) -> list:
        p2p = [dist.P2POp(dist.isend if op.kind.is_send else dist.irecv, t, peer, self.group)
               for op, peer, t in meta]
        with torch.cuda.stream(self.comm_stream):
            if is_batch:
                return dist.batch_isend_irecv(p2p)
            op = p2p[0]
            return [op.op(op.tensor, op.peer, op.group)]

    def _send_tensor(self, step, action, op: Comm) -> torch.Tensor:
        t = self.send_data.pop((op.kind, op.stage, op.mb), None)
        if t is None:
            raise ScheduleFault(
                f"rank {self.rank} step {step} ({action}): {op} posted before "
                "its data exist (the schedule sends before the producing compute)"
            )
        if self.cuda:
            self.comm_stream.wait_event(t[1])
        return t[0]

    def _recv_buffer(self, op: Comm) -> torch.Tensor:
        st_in, st_out = self.shapes[op.stage]
        shape = st_in if op.kind is CommKind.RECV_F else st_out
        return self.pool.take(shape, self.comm_stream if self.cuda else None)

    def _wait_batch(self, recs) -> float:
        """Wait every op of a waited ``Batch`` just posted (``recs`` from ``_post``)."""
        blocked = 0.0
        for w, step, action, what, peer in recs:
            if w not in self.done:  # NCCL: one work stands for the whole batch
                blocked += self._wait(w, step, action, what, peer)
                self.done.add(w)
        return blocked

    def _take_recv(self, key, step, action) -> tuple[torch.Tensor, float]:
        item = self.recvs.pop(key, None)
        if item is None:
            raise ScheduleFault(
                f"rank {self.rank} step {step} ({action}): needs {key} but no receive "
                "for it was posted earlier on this rank"
            )
        w, t, rstep, raction, op, peer = item
        # On CUDA a wait is a stream wait on the *current* stream, so it is repeated
        # for every consumer (an OVERLAP's halves run on two streams); on CPU a
        # handle is never waited twice.
        blocked = 0.0 if (w in self.done and not self.cuda) else self._wait(
            w, step, action, _Posted(op, rstep), peer
        )
        self.done.add(w)
        return t, blocked

    def _prune_sends(self) -> None:
        """On CUDA, drop completed sends (their tensors may be freed); ``is_completed``
        does not block (it queries the work's CUDA event). gloo's works report
        completion only once waited, so on the CPU the sends wait for the end."""
        if self.cuda and self.sends:
            keep = []
            for w, t in self.sends:
                if w.is_completed():
                    self.done.add(w)
                else:
                    keep.append((w, t))
            self.sends = keep
        if len(self.pending) > 64:
            self.pending = [p for p in self.pending if p[0] not in self.done]

    def _wait_sends(self, end: int) -> None:
        """The end of the step: wait every send not waited yet."""
        for w, _ in self.sends:
            if w not in self.done:
                self._wait(w, f"end ({end})", "pending sends", "a posted send", None)
                self.done.add(w)
        self.sends = []

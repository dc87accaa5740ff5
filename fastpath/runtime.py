"""The per-rank executor: runs one rank's actions of a verified schedule on real tensors.

What it is: ``RankRunner`` executes ``plan.actions`` in order on one process of
a torch.distributed group, with the model layers of its stages:

- communication: each plain ``Comm`` is one ``isend``/``irecv``; each ``Batch``
  is one ``batch_isend_irecv`` posted at its step. Ops are posted exactly where
  the schedule posts them (receives no later, sends right when the schedule's
  producing compute has run) and are matched FIFO per rank pair, tag 0, as
  specs/SEMANTICS.md says NCCL does. ``Batch(wait=True)`` waits for all of its
  ops before the next step; otherwise only the compute that consumes a receive
  waits for it, and sends are waited on lazily (polled each step, all at the
  end). On gloo a send completes only once the peer has posted the matching
  receive (a NOTIFY_SEND_READY / NOTIFY_RECV_READY handshake before the data),
  so a ``Batch(wait=True)`` holding sends is a handshake with the peer: DeepSeek's
  DualPipeV communication (13 such batches per rank, 2 ranks, 8 micro-batches)
  blocked the main thread about twice as often per step as the lowered
  compute order (measured with ``benchmarks/bench_fastpath.py --comm deepseek``
  against the default ``--comm own``).
- receive buffers come from a pool keyed by shape (shapes probed once from the
  model), preallocated to the plan's peak (``plan.peak_receive_buffers``), and
  go back to it once the activation they hold is dead (after the stage's B or
  W); stage inputs, outputs and I/W state are dropped at that same step.
- computes: F through the stage's layers (the loss on a route's last stage), B
  with ``reference.split.backward_full``, I/W with reference/split.py
  (``split="autograd"``: W repeats the stage's activation-gradient work) or
  PyTorch pipelining's helpers (``split="graph"``: no recomputation); see
  fastpath.grads, which also sums the weight gradients at the end of a step
  (``grad_order`` "running": fast, all-reduce of tied layers; "microbatch":
  reference.baseline's order, bitwise equal to reference/).
- CUDA: computes on the current stream, communication posted from a separate
  comm stream that first waits for an event recorded after the producing
  compute; receives are consumed with ``work.wait()`` (a stream wait, not a
  host wait); the forward half of an ``OVERLAP`` runs on a second compute
  stream. Pool buffers carry the event of their last use before reuse.
- a timeline: host start/end time of every step and the time spent blocked
  inside it (on CUDA, step times are host enqueue times; see fastpath.trace).

Failures say whose fault they are (fastpath.watchdog): ``ScheduleFault`` for
this rank's own schedule, ``PeerFailure`` for a communication op that failed
(a peer died: a consequence), ``WatchdogTimeout`` for a wait past the bound. A
gloo wait raises a bare RuntimeError for both a timeout and a lost peer (torch
2.13), so a timeout is told by the clock (the wait lasted its bound), not by
the text.

What it does not cover: checking the schedule (the checker does, before this
runs), choosing where ops go (the schedule does), anything but the two test
models' calling convention (one tensor in, one tensor out per layer), and
multi-node clocks. The CUDA path is tested by tests/test_fastpath_gpu.py and
benchmarks/gpu_check.sh, which need a GPU (the tests skip without CUDA); the
README's fastpath section says whether it has run on one.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from fastpath.grads import (
    GradReduction,
    _graph_backward_input,
    _graph_backward_weight,
    _GraphW,
    _unalias,
)
from fastpath.plan import RankPlan, consumer_key, peak_receive_buffers, recv_key
from fastpath.watchdog import (
    FastpathError,
    PeerFailure,
    ScheduleFault,
    Watchdog,
    WatchdogTimeout,
    describe_wait,
)
from fastpath.supervise import short_comm_error
from reference.split import backward_full, backward_input, backward_weight
from verifier.ir import Batch, Comm, CommKind, Compute, ComputeKind, Overlap, comms_of


GRAD_ORDERS = ("microbatch", "running")
SPLITS = ("autograd", "graph")


@dataclass
class StepTime:
    start: float
    end: float
    blocked: float = 0.0  # seconds inside the step spent waiting for communication


@dataclass
class RankResult:
    rank: int
    losses: dict[int, float] = field(default_factory=dict)  # mb -> loss (last stages here)
    grads: dict[str, torch.Tensor] = field(default_factory=dict)  # layer{i}.{name}
    timeline: list[StepTime] = field(default_factory=list)
    executed: list = field(default_factory=list)  # the actions dispatched, in order
    num_buffers: int = 0  # receive buffers the pool has allocated so far
    step_seconds: float = 0.0


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


class RankRunner(GradReduction):
    def __init__(
        self,
        plan: RankPlan,
        stage_layers: dict[int, list[int]],
        layers: dict[int, nn.Module],
        microbatches: list[tuple[torch.Tensor, torch.Tensor]],
        loss_fn,
        *,
        device: torch.device,
        backward_loss=None,
        watchdog: Watchdog | None = None,
        wait_timeout_s: float = 300.0,
        group=None,
        grad_order: str = "microbatch",
        split: str = "autograd",
        dtype: torch.dtype | None = None,
    ):
        if grad_order not in GRAD_ORDERS:
            raise ValueError(f"grad_order must be one of {GRAD_ORDERS}, got {grad_order!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.grad_order = grad_order
        self.split = split
        self.plan = plan
        self.rank = plan.rank
        self.s = plan.schedule
        self.device = device
        self.cuda = device.type == "cuda"
        self.layers = layers  # model layer index -> module (shared by tied stages here)
        self.stage_layers = {st: stage_layers[st] for st in plan.stages}
        self.mods = {st: [layers[i] for i in self.stage_layers[st]] for st in plan.stages}
        self.params = {
            st: tuple(p for m in self.mods[st] for p in m.parameters()) for st in plan.stages
        }
        self.microbatches = [(x.to(device), y.to(device)) for x, y in microbatches]
        self.loss_fn = loss_fn
        self.backward_loss = backward_loss or (lambda loss: loss)
        self.watchdog = watchdog
        self.timeout = datetime.timedelta(seconds=wait_timeout_s)
        self.group = group
        if dtype is None:  # an idle rank (no stages) has no layers: the data's dtype
            dtype = next((p.dtype for m in layers.values() for p in m.parameters()),
                         self.microbatches[0][0].dtype)
        self.pool = _Pool(dtype, device)
        self.shapes = self._probe_shapes()
        # every activation and gradient of these models has one shape: allocate the
        # peak number of receive buffers the plan needs now, reuse them every step
        shapes = {sh for pair in self.shapes.values() for sh in pair}
        if len(shapes) == 1 and plan.num_recvs:
            self.pool.preallocate(shapes.pop(), peak_receive_buffers(plan))
        self.tied_pgs = []  # (TiedGroup, process group) where this rank is a member
        self.pending: list = []  # (work, step, action, op, peer) not yet seen complete
        if self.cuda:
            self.compute_stream = torch.cuda.current_stream(device)
            self.comm_stream = torch.cuda.Stream(device)
            self.side_stream = torch.cuda.Stream(device)
        if watchdog is not None:
            watchdog.set_pending_source(lambda: list(self.pending))

    # ---- setup -----------------------------------------------------------
    @torch.no_grad()
    def _probe_shapes(self) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
        """stage -> (input shape, output shape), from micro-batch 0 through every layer.

        A stage's input is assumed to have the micro-batch input's shape (true of
        layer stacks that keep (batch, seq, hidden), like reference/models.py);
        every forward checks its output against the probed shape."""
        x = self.microbatches[0][0]
        shape = tuple(x.shape)
        out = {}
        for st in self.plan.stages:
            y = x
            for m in self.mods[st]:
                y = m(y)
            out[st] = (shape, tuple(y.shape))
        return out

    def setup_tied_groups(self, cache: dict | None = None) -> None:
        """Create one subgroup per rank set of tied layers (collective: every rank
        calls it, in the same order); ``cache`` reuses groups across runs."""
        self.tied_pgs = []
        cache = {} if cache is None else cache
        for g in self.plan.tied_groups:
            pg = cache.get(g.ranks)
            if pg is None:
                pg = cache[g.ranks] = dist.new_group(list(g.ranks), timeout=self.timeout)
            if self.rank in g.ranks:
                self.tied_pgs.append((g, pg))

    # ---- waiting ---------------------------------------------------------
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
            # the wait was given this bound: one that lasted it timed out, whatever
            # the backend's text (gloo's type is the same for both)
            if waited >= self.timeout.total_seconds() * 0.95:
                raise WatchdogTimeout(
                    describe_wait(self.rank, step, action, what, peer, waited)
                ) from None
            raise PeerFailure(
                f"rank {self.rank} step {step} ({action}): {what} with rank {peer} failed: "
                f"{short_comm_error(str(e)) or type(e).__name__}"
            ) from None
        finally:
            if self.watchdog is not None:
                self.watchdog.idle()
        return time.perf_counter() - t0

    # ---- communication -----------------------------------------------------
    def _post(self, step: int, action, ops: tuple[Comm, ...]) -> list:
        """Post ops (one batch_isend_irecv when ``action`` is a Batch); returns works.

        Within a batch the sends are posted before the receives, each kind in its
        own order: FIFO matching per direction is unchanged and the verified model
        treats a batch as one unit. On gloo the order matters for CPU (measured,
        bench_fastpath 1f1b on 2 ranks: ~5% more CPU per step with the receive
        first, all of it in gloo's TCP loop threads; PyTorch's 1F1B posts sends
        first too)."""
        p2p = []
        meta = []
        is_batch = isinstance(action, Batch)
        order = [i for i, op in enumerate(ops) if op.kind.is_send] + \
            [i for i, op in enumerate(ops) if not op.kind.is_send]
        for sub in order:
            op = ops[sub]
            peer = self.plan.peers[(step, sub if is_batch else 0)]
            if op.kind.is_send:
                t = self.send_data.pop((op.kind, op.stage, op.mb), None)
                if t is None:
                    raise ScheduleFault(
                        f"rank {self.rank} step {step} ({action}): {op} posted before "
                        "its data exist (the schedule sends before the producing compute)"
                    )
                if self.cuda:
                    self.comm_stream.wait_event(t[1])
                    t = t[0]
                else:
                    t = t[0]
                p2p.append(dist.P2POp(dist.isend, t, peer, self.group))
            else:
                st_in, st_out = self.shapes[op.stage]
                shape = st_in if op.kind is CommKind.RECV_F else st_out
                t = self.pool.take(shape, self.comm_stream if self.cuda else None)
                p2p.append(dist.P2POp(dist.irecv, t, peer, self.group))
            meta.append((op, peer, t))
        if self.cuda:
            with torch.cuda.stream(self.comm_stream):
                works = self._issue(p2p, action)
        else:
            works = self._issue(p2p, action)
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

    @staticmethod
    def _issue(p2p, action) -> list:
        if isinstance(action, Batch):
            return dist.batch_isend_irecv(p2p)
        op = p2p[0]
        return [op.op(op.tensor, op.peer, op.group)]

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
        # completed work is not waited on twice.
        blocked = 0.0 if (w in self.done and not self.cuda) else self._wait(
            w, step, action, _Posted(op, rstep), peer
        )
        self.done.add(w)
        return t, blocked

    def _prune_sends(self) -> None:
        """Drop completed sends (their tensors may be freed); ``is_completed`` does not
        block (on NCCL it queries the work's CUDA event)."""
        if self.sends:
            keep = []
            for w, t in self.sends:
                if w.is_completed():
                    self.done.add(w)
                else:
                    keep.append((w, t))
            self.sends = keep
        if len(self.pending) > 64:
            self.pending = [p for p in self.pending if p[0] not in self.done]

    # ---- compute -----------------------------------------------------------
    def _forward(self, c: Compute, step, action) -> float:
        s, m = self.s, c.mb
        key = (c.stage, m)
        blocked = 0.0
        prev = s.prev_stage(c.stage)
        if prev is None:
            x = self.microbatches[m][0]
            inp = None
        elif s.rank_of(prev) == self.rank:
            x = self.local_fwd.pop(key).detach().requires_grad_()
            inp = x
        else:
            buf, blocked = self._take_recv(consumer_key(c), step, action)
            self.held[key].append(buf)
            x = buf.detach().requires_grad_()
            inp = x
        y = x
        for mod in self.mods[c.stage]:
            y = mod(y)
        if tuple(y.shape) != self.shapes[c.stage][1]:
            raise FastpathError(
                f"rank {self.rank} step {step} ({action}): stage {c.stage} produced shape "
                f"{tuple(y.shape)}, expected {self.shapes[c.stage][1]} (receive buffers are "
                "sized from micro-batch 0; every micro-batch must have its shape)"
            )
        nxt = s.next_stage(c.stage)
        if nxt is None:
            loss = self.loss_fn(y, self.microbatches[m][1])
            self.result.losses[m] = loss.detach()
            y = self.backward_loss(loss)
        elif s.rank_of(nxt) == self.rank:
            self.local_fwd[(nxt, m)] = y
        else:
            self.send_data[(CommKind.SEND_F, c.stage, m)] = self._ready(y.detach())
        self.state[key] = (inp, y)
        return blocked

    def _ready(self, t: torch.Tensor):
        t = t.contiguous()
        if self.cuda:
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(self.device))
            return (t, ev)
        return (t, None)

    def _grad_out(self, c: Compute, step, action):
        s = self.s
        nxt = s.next_stage(c.stage)
        if nxt is None:
            return None, 0.0
        if s.rank_of(nxt) == self.rank:
            return self.local_bwd.pop((c.stage, c.mb)), 0.0
        buf, blocked = self._take_recv(consumer_key(c), step, action)
        self.held[(c.stage, c.mb)].append(buf)
        return buf, blocked

    def _backward(self, c: Compute, step, action) -> float:
        key = (c.stage, c.mb)
        inp, out = self.state[key]
        g, blocked = self._grad_out(c, step, action)
        ins = (inp,) if inp is not None else ()
        params = self.params[c.stage]
        if c.kind is ComputeKind.B and self.grad_order == "running":
            # straight into .grad (AccumulateGrad adds in place): no extra pass
            torch.autograd.backward(out, g, inputs=list(ins) + list(params))
            gi = tuple(x.grad for x in ins)
            if g is not None:
                for p in params:
                    if p.grad is not None and p.grad.untyped_storage().data_ptr() == \
                            g.untyped_storage().data_ptr():
                        p.grad = p.grad.clone()
        elif c.kind is ComputeKind.B:
            gi, gp = backward_full(out, ins, g, params)
            self._accumulate(c.stage, c.mb, _unalias(gp, g))
        else:
            if self.split == "graph" and ins:
                gi, wstate = _graph_backward_input(out, ins, g, params)
            else:
                gi, wstate = backward_input(out, ins, g, params)
            self.wstate[key] = wstate
        if inp is not None:
            self._pass_grad_back(c, gi[0])
        return blocked

    def _pass_grad_back(self, c: Compute, gi: torch.Tensor) -> None:
        prev = self.s.prev_stage(c.stage)
        if self.s.rank_of(prev) == self.rank:
            self.local_bwd[(prev, c.mb)] = gi
        else:
            self.send_data[(CommKind.SEND_B, c.stage, c.mb)] = self._ready(gi)

    def _weight(self, c: Compute) -> None:
        state = self.wstate.pop((c.stage, c.mb))
        if isinstance(state, _GraphW):
            g, gp = state.grad_out, _graph_backward_weight(state)
        else:
            g = state.grad_outputs[0] if state.grad_outputs else None
            gp = backward_weight(state)
        self._accumulate(c.stage, c.mb, _unalias(gp, g))

    def _accumulate(self, stage: int, mb: int, grads) -> None:
        if self.grad_order == "microbatch":
            self.per_mb.setdefault(stage, {})[mb] = grads
            return
        for p, g in zip(self.params[stage], grads):  # running order: into .grad
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)

    def _free(self, key, step) -> None:
        if self.plan.free_after.get(key) != step:
            return
        self.state.pop(key, None)
        ev = None
        if self.cuda:
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(self.device))
        for buf in self.held.pop(key, ()):
            self.pool.give(buf, ev)

    def _compute(self, c: Compute, step, action) -> float:
        if c.kind is ComputeKind.F:
            return self._forward(c, step, action)
        if c.kind is ComputeKind.W:
            self._weight(c)
            return 0.0
        return self._backward(c, step, action)

    def _overlap(self, a: Overlap, step) -> float:
        if not self.cuda:
            # One CPU thread runs one op at a time; the pair runs back to back.
            return self._compute(a.f, step, a) + self._compute(a.b, step, a)
        cur = torch.cuda.current_stream(self.device)
        self.side_stream.wait_stream(cur)
        with torch.cuda.stream(self.side_stream):
            blocked = self._compute(a.f, step, a)
        blocked += self._compute(a.b, step, a)
        cur.wait_stream(self.side_stream)
        return blocked

    # ---- the step loop -------------------------------------------------------
    def run(self) -> RankResult:
        """One training step (every action of this rank once). Returns this rank's part."""
        self.result = RankResult(self.rank)
        self.state, self.wstate, self.per_mb = {}, {}, {}
        if self.grad_order == "running":
            for ps in self.params.values():
                for p in ps:
                    p.grad = None
        self.local_fwd, self.local_bwd = {}, {}
        self.send_data, self.recvs, self.sends = {}, {}, []
        self.held = {key: [] for key in self.plan.free_after}
        self.done: set = set()
        self.pending = []
        timeline = self.result.timeline
        clock = time.perf_counter
        t_begin = clock()
        executed = self.result.executed
        for step, a in enumerate(self.plan.actions):
            t0 = clock()
            executed.append(a)
            blocked = 0.0
            if isinstance(a, Compute):
                blocked = self._compute(a, step, a)
                self._free((a.stage, a.mb), step)
            elif isinstance(a, Overlap):
                blocked = self._overlap(a, step)
                for c in a.computes:
                    self._free((c.stage, c.mb), step)
            else:
                recs = self._post(step, a, comms_of(a))
                if isinstance(a, Batch) and a.wait:
                    for w, _, _, what, peer in recs:
                        blocked += self._wait(w, step, a, what, peer)
                        self.done.add(w)
                self._prune_sends()
            timeline.append(StepTime(t0, clock(), blocked))
        self._finish()
        self.result.step_seconds = clock() - t_begin
        self.result.num_buffers = self.pool.allocated
        return self.result

    def _finish(self) -> None:
        end = len(self.plan.actions)
        for w, t in self.sends:
            if w not in self.done:
                self._wait(w, f"end ({end})", "pending sends", "a posted send", None)
        if self.recvs:
            key = next(iter(self.recvs))
            raise ScheduleFault(
                f"rank {self.rank}: receive {self.recvs[key][4]} posted at step "
                f"{self.recvs[key][2]} was never consumed by a compute"
            )
        self.sends = []
        self.pending = []
        self.done = set()
        if self.grad_order == "microbatch":
            grads = self._ordered_grads(end)
        else:
            grads = self._layer_grads()
            self._allreduce_tied(grads, end)
        if self.cuda:
            self._sync(end)
        self.result.grads = grads

    def _sync(self, end) -> None:
        if self.watchdog is not None:
            self.watchdog.waiting(f"end ({end})", "cuda synchronize", "device work", None)
        torch.cuda.synchronize(self.device)
        if self.watchdog is not None:
            self.watchdog.idle()

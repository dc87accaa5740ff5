"""The per-rank executor: runs one rank's actions of a verified schedule on real tensors.

What it is: ``RankRunner`` executes ``plan.actions`` in order on one process of
a torch.distributed group, with the model layers of its stages:

- communication (fastpath.p2p): each plain ``Comm`` is one ``isend``/``irecv``
  and each ``Batch`` one ``batch_isend_irecv``, posted at its step, matched
  FIFO per rank pair. A ``Batch(wait=True)`` is waited right after posting;
  otherwise only the compute that consumes a receive waits for it, and sends
  are waited at the end of the step. The checker verified the schedule under
  the model of the backend that runs it (``gloo``: a send completes only with
  its receive, so a waited batch holding sends is a handshake with the peer;
  ``nccl``: one stream per rank).
- computes: F through the stage's layers (the loss on a route's last stage), B
  with ``reference.split.backward_full``, I/W with reference/split.py
  (``split="autograd"``: W repeats the stage's activation-gradient work) or
  PyTorch pipelining's helpers (``split="graph"``: no recomputation); see
  fastpath.grads, which also sums the weight gradients at the end of a step
  (``grad_order`` "running": fast, all-reduce of tied layers; "microbatch":
  reference.baseline's order, bitwise equal to reference/). A receive buffer,
  the stage's input and output and its I/W state are dropped at the step that
  frees their activation (the stage's B or W).
- CUDA: computes on the current stream, communication posted from a separate
  comm stream that first waits for an event recorded after the producing
  compute; receives are consumed with ``work.wait()`` (a stream wait, not a
  host wait); the forward half of an ``OVERLAP`` runs on a second compute
  stream.
- a timeline: host start/end time of every step and the time spent blocked
  inside it (on CUDA, step times are host enqueue times; see fastpath.trace).

Failures say whose fault they are, by type (fastpath.watchdog):
``ScheduleFault`` for this rank's own schedule, ``PeerFailure`` for a
communication op that failed (a peer died: a consequence), ``WatchdogTimeout``
for a wait past the bound, ``FastpathError`` for anything else of this rank's.

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
from fastpath.p2p import P2P, _Pool
from fastpath.plan import RankPlan, consumer_key, peak_receive_buffers
from fastpath.watchdog import FastpathError, ScheduleFault, Watchdog
from reference.split import backward_full, backward_input, backward_weight
from verifier.ir import Batch, CommKind, Compute, ComputeKind, Overlap, comms_of


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
    sends_handed_over: int = 0  # sends the comm thread posted (gloo; fastpath.p2p)
    step_seconds: float = 0.0


class RankRunner(GradReduction, P2P):
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
        self._names_of: dict[int, list[str]] = {}  # stage -> parameter names (fastpath.grads)
        self._reset_p2p()
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
            # straight into .grad (AccumulateGrad adds in place): no extra pass. The
            # graph's only leaves that need a gradient are ins (a stage's input is a
            # detached leaf) and params, so no ``inputs=`` filter: it made the engine
            # walk the graph first (about 10 us per B with tiny computes, 1% of B at
            # hidden 256; paired microbenchmark, last and middle stage)
            torch.autograd.backward(out, g)
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
        self._reset_p2p()
        self.held = {key: [] for key in self.plan.free_after}
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
                    blocked = self._wait_batch(recs)
                self._prune_sends()
            timeline.append(StepTime(t0, clock(), blocked))
        self._finish()
        self.result.step_seconds = clock() - t_begin
        self.result.num_buffers = self.pool.allocated
        return self.result

    def _finish(self) -> None:
        end = len(self.plan.actions)
        self._wait_sends(end)
        if self.recvs:
            key = next(iter(self.recvs))
            raise ScheduleFault(
                f"rank {self.rank}: receive {self.recvs[key][4]} posted at step "
                f"{self.recvs[key][2]} was never consumed by a compute"
            )
        self._reset_p2p()
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

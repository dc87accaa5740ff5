"""The reference executor's machine: one virtual rank per schedule rank, FIFO
in-memory channels, and the compute of each step through autograd.

What it is: ``Run`` executes one step of one rank at a time (``try_step``:
None when it ran, else what it waits for; a fault raises a located
reference.faults error) and ``finish`` checks the end state (every message
matched and consumed, every compute exactly once) and returns the
``PipelineResult``. The semantics, the channels' tags and the exactly-once
rules are those of reference.executor's module docstring; the order in which
steps run is the caller's (reference.executor).

What the schedule means is read from the semantics core, never derived here:
the peer stage of an op and what a compute consumes (verifier.semantics.routes:
``Routes.peer_stage``, ``Routes.inputs``), and the op numbering, each op's peer
rank, its FIFO partner and each rank's first receive of a (kind, stage,
micro-batch) (verifier.semantics.channels' ``CommIndex``, which takes any
schedule as written, so ``force`` runs still get it). The channels are driven
by that partner table: a posted send meets the receive the core pairs it with
once both are posted; what is checked here is the payload each carries.

Not covered: choosing the order (reference.executor), the model
(reference.models), the split backward (reference.split).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from torch import Tensor, nn

from reference.baseline import accumulate, loss_for_backward
from reference.faults import (
    DependencyError,
    ExactlyOnceError,
    MessageMismatchError,
    OverlapError,
    WellFormedError,
)
from reference.result import PipelineResult
from reference.split import backward_full, backward_input, backward_weight
from verifier.ir import Batch, Comm, CommKind, Compute, ComputeKind, Overlap, loc, op_text, op_words
from verifier.semantics.channels import CommIndex


def _tag_str(tag: tuple) -> str:
    kind, a, b, m = tag
    return f"{kind} stage {a}->{b} mb {m}"


@dataclass
class _Send:
    tag: tuple
    payload: Tensor
    rank: int
    step: int
    op: Comm


@dataclass
class _Recv:
    tag: tuple
    rank: int
    step: int
    op: Comm


@dataclass
class _Rank:
    pc: int = 0
    wait_ops: tuple = ()  # receives (op indices) a posted wait-BATCH still waits for
    wait_step: int = -1
    posted: dict = field(default_factory=dict)  # recv key -> step it was posted at
    inbox: dict = field(default_factory=dict)  # receive (op index) -> payload (matched)


class Run:
    def __init__(self, schedule, layers, microbatches, stage_layers, loss_fn, reduction):
        self.s = schedule
        # numbering, peers, FIFO partners, first receives: the semantics core's
        self.ix = CommIndex(schedule)
        self.nb = self.ix.routes  # route neighbours and what a compute consumes
        self.mbs = microbatches
        self.loss_fn = loss_fn
        self.reduction = reduction
        self.M = schedule.num_microbatches
        self.stage_layers = stage_layers
        self.ranks = [_Rank() for _ in range(schedule.num_ranks)]
        self.sends: dict[int, _Send] = {}  # posted sends, by op index
        self.recvs: dict[int, _Recv] = {}  # posted receives, by op index
        # per-rank copies of the layers: copies[rank][model layer] -> module
        self.copies: list[dict[int, nn.Module]] = [{} for _ in range(schedule.num_ranks)]
        for st in schedule.stages:
            if 0 <= st.rank < schedule.num_ranks:
                for i in stage_layers[st.id]:
                    if i not in self.copies[st.rank]:
                        self.copies[st.rank][i] = copy.deepcopy(layers[i])
        self.stage_params: dict[tuple[int, int], tuple[list[str], list[Tensor]]] = {}
        # compute state
        self.f_done: dict[tuple[int, int], tuple[int, int]] = {}
        self.bwd_done: dict[tuple[int, int], tuple[str, int, int]] = {}
        self.w_done: dict[tuple[int, int], tuple[int, int]] = {}
        self.act: dict[tuple[int, int], tuple[Tensor, Tensor, bool]] = {}
        self.wstate: dict[tuple[int, int], tuple] = {}
        self.fwd_out: dict[tuple[int, int], Tensor] = {}  # F output awaiting send / local use
        self.bwd_out: dict[tuple[int, int], Tensor] = {}  # input grad awaiting send / local use
        self.sent: dict[tuple[str, int, int], tuple[int, int]] = {}
        self.losses: dict[int, Tensor] = {}
        self.per_mb: dict[str, dict[int, Tensor]] = {}
        self.owner: dict[str, dict[int, int]] = {}
        self.num_steps = 0

    # ---- helpers ---------------------------------------------------------
    def _params(self, rank: int, stage: int):
        key = (rank, stage)
        got = self.stage_params.get(key)
        if got is None:
            names, ps = [], []
            for i in self.stage_layers[stage]:
                for n, p in self.copies[rank][i].named_parameters():
                    names.append(f"layer{i}.{n}")
                    ps.append(p)
            got = self.stage_params[key] = (names, ps)
        return got

    def _check_place(self, rank: int, step: int, what, stage: int, mb: int) -> None:
        st = self.s.stage_by_id.get(stage)
        if st is None:
            raise WellFormedError(f"{what}: stage {stage} is not declared", rank, step)
        if st.rank != rank:
            raise WellFormedError(
                f"{what}: stage {stage} is held by rank {st.rank}, not rank {rank}", rank, step
            )
        if not (0 <= mb < self.M):
            raise WellFormedError(f"{what}: micro-batch {mb} is outside 0..{self.M - 1}", rank, step)
        route = self.nb.route_of.get(stage)
        if self.s.route_of_mb.get(mb) != route:
            raise WellFormedError(
                f"{what}: micro-batch {mb} does not take the route of stage {stage} "
                f"(route {route})",
                rank,
                step,
            )

    def _record_grads(self, rank: int, step: int, c: Compute, grads) -> None:
        names, _ = self._params(rank, c.stage)
        for n, g in zip(names, grads):
            slot = self.per_mb.setdefault(n, {})
            if c.mb in slot:
                raise ExactlyOnceError(
                    f"{c}: weight gradient of {n} for micro-batch {c.mb} computed a second "
                    f"time (first on rank {self.owner[n][c.mb]})",
                    rank,
                    step,
                )
            slot[c.mb] = g
            self.owner.setdefault(n, {})[c.mb] = rank

    # ---- readiness (None = ready; a string = blocked on that; raises on faults)
    def _source(self, rank: int, c: Compute):
        """The tensor an F, B or I reads, from the core (``Routes.inputs``; the
        other input of a B or I, its own F, is the activation it saved): None
        (the micro-batch's input, or the loss), (F or "BI", stage) a compute's
        output on this rank, (RECV_F or RECV_B, stage) this rank's first receive."""
        ins = self.nb.inputs(rank, c.kind, c.stage)
        if c.kind is not ComputeKind.F:
            ins = ins[1:]
        return ins[0] if ins else None

    def _ready(self, rank: int, step: int, c: Compute):
        self._check_place(rank, step, c, c.stage, c.mb)
        key = (c.stage, c.mb)
        if c.kind is ComputeKind.F:
            if key in self.f_done:
                raise ExactlyOnceError(
                    f"{c} runs a second time (first at {loc(*self.f_done[key])})", rank, step
                )
        elif c.kind is ComputeKind.W:
            if key in self.w_done:
                raise ExactlyOnceError(
                    f"{c} runs a second time (first at {loc(*self.w_done[key])})", rank, step
                )
            done = self.bwd_done.get(key)
            if done is None:
                raise DependencyError(f"{c} needs {op_text('I', c.stage, c.mb)}, which has not run", rank, step)
            if done[0] == "B":
                raise ExactlyOnceError(
                    f"{c} after the full backward {op_text('B', c.stage, c.mb)} at {loc(done[1], done[2])}",
                    rank,
                    step,
                )
            return None
        else:  # B or I
            done = self.bwd_done.get(key)
            if done is not None:
                raise ExactlyOnceError(
                    f"{c} after {op_text(done[0], c.stage, c.mb)} at {loc(done[1], done[2])}",
                    rank,
                    step,
                )
            if key not in self.f_done:
                raise DependencyError(f"{c} needs {op_text('F', c.stage, c.mb)}, which has not run", rank, step)
        src = self._source(rank, c)
        if src is None:
            return None
        kind, st = src
        if kind is ComputeKind.F or kind == "BI":
            store = self.fwd_out if c.kind is ComputeKind.F else self.bwd_out
            if (st, c.mb) not in store:
                need = ("F",) if c.kind is ComputeKind.F else ("B", "I")
                raise DependencyError(
                    f"{c} needs {' or '.join(op_text(x, st, c.mb) for x in need)} on this rank, "
                    "which has not run",
                    rank,
                    step,
                )
            return None
        i = self.ix.first_recv.get((rank, kind, st, c.mb))
        if i is None or i not in self.recvs:
            raise DependencyError(
                f"{c} needs {op_text(kind, st, c.mb)}, which rank {rank} has not posted",
                rank,
                step,
            )
        if i not in self.ranks[rank].inbox:
            return f"{c} waits for {op_text(kind, st, c.mb)} posted at {loc(rank, self.ix.op_step[i])}"
        return None

    # ---- compute ---------------------------------------------------------
    def _take_input(self, rank: int, step: int, c: Compute):
        src = self._source(rank, c)
        if src is None:
            return None
        kind, st = src
        if kind is ComputeKind.F or kind == "BI":
            store = self.fwd_out if c.kind is ComputeKind.F else self.bwd_out
            return store.pop((st, c.mb))
        return self.ranks[rank].inbox.pop(self.ix.first_recv[(rank, kind, st, c.mb)])

    def _compute(self, rank: int, step: int, c: Compute) -> None:
        key = (c.stage, c.mb)
        if c.kind is ComputeKind.F:
            inp = self._take_input(rank, step, c)
            first = inp is None
            x = self.mbs[c.mb][0] if first else inp.detach().requires_grad_(True)
            h = x
            for i in self.stage_layers[c.stage]:
                h = self.copies[rank][i](h)
            if self.nb.next[c.stage] is None:
                loss = self.loss_fn(h, self.mbs[c.mb][1])
                self.losses[c.mb] = loss.detach()
                out = loss_for_backward(loss, self.reduction, self.M)
            else:
                out = h
                self.fwd_out[key] = h.detach()
            self.act[key] = (x, out, not first)
            self.f_done[key] = (rank, step)
            return
        if c.kind is ComputeKind.W:
            st = self.wstate.pop(key)
            grads = backward_weight(st)
            self.w_done[key] = (rank, step)
            self._record_grads(rank, step, c, grads)
            return
        grad_out = self._take_input(rank, step, c)
        x, out, needs_input_grad = self.act.pop(key)
        _, params = self._params(rank, c.stage)
        ins = [x] if needs_input_grad else []
        if c.kind is ComputeKind.B:
            gin, gparams = backward_full(out, ins, grad_out, params)
            self._record_grads(rank, step, c, gparams)
        else:
            gin, st = backward_input(out, ins, grad_out, params)
            self.wstate[key] = st
        if gin:
            self.bwd_out[key] = gin[0]
        self.bwd_done[key] = (c.kind.value, rank, step)

    # ---- communication ---------------------------------------------------
    def _match(self, si: int, ri: int) -> None:
        """Send op ``si`` meets receive op ``ri``, its partner in the core's
        FIFO pairing; their payloads must agree."""
        snd, rcv = self.sends[si], self.recvs[ri]
        if snd.tag != rcv.tag:
            raise MessageMismatchError(
                f"message #{self.ix.op_pos[ri]} from rank {snd.rank} to rank {rcv.rank}: {rcv.op} at "
                f"{loc(rcv.rank, rcv.step)} expects [{_tag_str(rcv.tag)}] but the matched "
                f"{snd.op} at {loc(snd.rank, snd.step)} carries [{_tag_str(snd.tag)}]",
                rcv.rank,
                rcv.step,
            )
        self.ranks[rcv.rank].inbox[ri] = snd.payload
        snd.payload = None  # type: ignore[assignment]

    def _post(self, rank: int, step: int, op: Comm, i: int) -> None:
        """Post op ``op``, op ``i`` of the core's numbering."""
        self._check_place(rank, step, op, op.stage, op.mb)
        other = self.nb.peer_stage(op.kind, op.stage)
        if other is None:
            raise WellFormedError(f"{op}: stage {op.stage} has no peer stage in that direction", rank, step)
        peer = self.ix.op_peer[i]
        if peer < 0:  # the core says why (an undeclared peer stage)
            raise WellFormedError(f"{op} {dict(self.ix.bad)[i]}", rank, step)
        if peer == rank:
            raise WellFormedError(
                f"{op}: peer stage {other} is on the same rank; nothing is exchanged", rank, step
            )
        key = (op.kind, op.stage, op.mb)
        j = self.ix.partner[i]
        if op.kind.is_send:
            if key in self.sent:
                raise ExactlyOnceError(
                    f"{op} posted a second time (first at {loc(*self.sent[key])})", rank, step
                )
            store = self.fwd_out if op.kind is CommKind.SEND_F else self.bwd_out
            payload = store.pop((op.stage, op.mb), None)
            if payload is None:
                need = ("F",) if op.kind is CommKind.SEND_F else ("B", "I")
                raise DependencyError(
                    f"{op} sends the result of {' or '.join(op_text(x, op.stage, op.mb) for x in need)}, "
                    "which has not run on this rank",
                    rank,
                    step,
                )
            self.sent[key] = (rank, step)
            kind = "F" if op.kind is CommKind.SEND_F else "B"
            self.sends[i] = _Send((kind, op.stage, other, op.mb), payload, rank, step, op)
            if j >= 0 and j in self.recvs:
                self._match(i, j)
        else:
            r = self.ranks[rank]
            if key in r.posted:
                raise ExactlyOnceError(
                    f"{op} posted a second time (first at {loc(rank, r.posted[key])})", rank, step
                )
            r.posted[key] = step
            kind = "F" if op.kind is CommKind.RECV_F else "B"
            self.recvs[i] = _Recv((kind, other, op.stage, op.mb), rank, step, op)
            if j >= 0 and j in self.sends:
                self._match(j, i)

    # ---- one step --------------------------------------------------------
    def try_step(self, rank: int):
        """Run the next step of ``rank``. None if it ran, else why it is blocked."""
        r = self.ranks[rank]
        if r.wait_ops:
            missing = [i for i in r.wait_ops if i not in r.inbox]
            if missing:
                return f"BATCH at {loc(rank, r.wait_step)} waits for {self._recv_text(missing[0])}"
            r.wait_ops = ()
        step = r.pc
        a = self.s.actions[rank][step]
        if isinstance(a, Compute):
            why = self._ready(rank, step, a)
            if why is not None:
                return why
            self._compute(rank, step, a)
        elif isinstance(a, Overlap):
            if a.f.kind is not ComputeKind.F or a.b.kind not in (ComputeKind.B, ComputeKind.I):
                raise OverlapError(
                    f"{a}: the halves must be a forward and a backward (B or I), got "
                    f"{a.f.kind.value} and {a.b.kind.value}",
                    rank,
                    step,
                )
            for c in (a.f, a.b):
                why = self._ready(rank, step, c)
                if why is not None:
                    return why
            self._compute(rank, step, a.f)
            self._compute(rank, step, a.b)
        elif isinstance(a, Comm):
            self._post(rank, step, a, self.ix.op_at(rank, step))
        elif isinstance(a, Batch):
            if not a.ops:
                raise WellFormedError(f"{a}: a BATCH with no ops", rank, step)
            ops = self.ix.unit_ops[self.ix.unit_at[rank][step]]
            for i, op in zip(ops, a.ops):
                self._post(rank, step, op, i)
            if a.wait:
                r.wait_ops = tuple(i for i in ops if not self.ix.op_send[i])
                r.wait_step = step
        else:  # pragma: no cover - the IR has no other action
            raise WellFormedError(f"unknown action {a!r}", rank, step)
        r.pc += 1
        self.num_steps += 1
        return None

    def done(self, rank: int) -> bool:
        return self.ranks[rank].pc >= len(self.s.actions[rank])

    def _recv_text(self, i: int) -> str:
        op = self.ix.op_comm[i]
        return op_text(op.kind, op.stage, op.mb)

    # ---- after the last step ---------------------------------------------
    def finish(self, order: str) -> PipelineResult:
        """Check the end state (module docstring) and return the result."""
        self._check_messages_at_end()
        self._check_computes_at_end()
        return self._result(order)

    def _check_messages_at_end(self) -> None:
        """Every waited BATCH got its receives; every op has its FIFO partner
        (every op was posted by now, so the core's channels are the run's)."""
        for rank, r in enumerate(self.ranks):
            missing = [i for i in r.wait_ops if i not in r.inbox]
            if missing:
                raise MessageMismatchError(
                    f"the last BATCH waits for {self._recv_text(missing[0])}, which "
                    "no send ever matches",
                    rank,
                    r.wait_step,
                )
        ix = self.ix
        if ix.unmatched:
            i, k = ix.unmatched[0]
            if ix.op_send[i]:
                snd, dst = self.sends[i], ix.op_peer[i]
                n = ix.counts[(snd.rank, dst)][1]
                raise MessageMismatchError(
                    f"{snd.op} [{_tag_str(snd.tag)}] has no matching receive on rank {dst} "
                    f"(send #{k} to it; rank {dst} posts {n} receive(s))",
                    snd.rank,
                    snd.step,
                )
            rcv, src = self.recvs[i], ix.op_peer[i]
            n = ix.counts[(src, rcv.rank)][0]
            raise MessageMismatchError(
                f"{rcv.op} [{_tag_str(rcv.tag)}] has no matching send from rank {src} "
                f"(receive #{k} from it; rank {src} posts {n} send(s))",
                rcv.rank,
                rcv.step,
            )

    def _check_computes_at_end(self) -> None:
        s = self.s
        for route in s.routes:
            for st in route.stages:
                for m in route.microbatches:
                    key = (st, m)
                    if key not in self.f_done:
                        raise ExactlyOnceError(f"{op_words('F', st, m)} never ran")
                    b = self.bwd_done.get(key)
                    if b is None:
                        raise ExactlyOnceError(
                            f"no backward of stage {st}, micro-batch {m} ran: needs one "
                            f"{op_text('B', st, m)}, or one {op_text('I', st, m)} and one "
                            f"{op_text('W', st, m)}"
                        )
                    if b[0] == "I" and key not in self.w_done:
                        raise ExactlyOnceError(
                            f"{op_text('I', st, m)} at {loc(b[1], b[2])} has no {op_text('W', st, m)}", b[1], b[2]
                        )
        for rank, r in enumerate(self.ranks):
            for i in r.inbox:
                raise DependencyError(
                    f"{self._recv_text(i)} posted at {loc(rank, self.ix.op_step[i])} was "
                    "received but no compute consumed it",
                    rank,
                    self.ix.op_step[i],
                )
        leftover = [k for k in self.fwd_out if self.nb.next[k[0]] is not None]
        leftover += list(self.bwd_out)
        if leftover:
            st, m = leftover[0]
            raise DependencyError(
                f"the result of stage {st}, micro-batch {m} was computed but never sent or used"
            )
        missing_loss = [m for m in range(self.M) if m not in self.losses]
        if missing_loss:
            raise ExactlyOnceError(f"micro-batch {missing_loss[0]} never reached its loss")

    def _result(self, order: str) -> PipelineResult:
        grads: dict[str, Tensor] = {}
        per_mb: dict[str, list[Tensor]] = {}
        owners: dict[str, list[int]] = {}
        for name, slot in self.per_mb.items():
            absent = [m for m in range(self.M) if m not in slot]
            if absent:
                raise ExactlyOnceError(
                    f"no weight gradient of {name} from micro-batch {absent[0]}"
                )
            gs = [slot[m] for m in range(self.M)]
            per_mb[name] = gs
            owners[name] = [self.owner[name][m] for m in range(self.M)]
            grads[name] = accumulate(gs)
        losses = tuple(self.losses[m] for m in range(self.M))
        return PipelineResult(losses, grads, order, self.num_steps, per_mb, owners)

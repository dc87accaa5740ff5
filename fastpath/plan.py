"""What one rank must do, derived once from a (lowered) schedule before running.

What it is: ``RankPlan`` holds, for one rank, the stages it runs, the peer of
every communication op it posts, where each compute takes its input from and
where its result goes (same rank or a receive/send), which tied layers it
must all-reduce and with which ranks, and the step after which each
activation can be freed. ``prepare_schedule`` lowers a compute-only schedule
and ``stage_layers`` maps a stage to the model layers it runs.

It does not run anything, touch torch.distributed or check correctness: the
checker (verifier.check.checker) decides whether the schedule is right, and the
runtime (fastpath.runtime) executes this plan. Inputs that the plan cannot
execute at all (a comm op with no peer, an action on the wrong rank) raise
``ScheduleError`` naming the rank and step; everything subtler is the
checker's job, and with ``--no-verify`` shows up as a wrong result or a
watchdog error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.ir import (
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    Schedule,
    ScheduleError,
    comms_of,
    computes_of,
    loc,
)
from verifier.semantics.lowering import lower_if_compute_only


def prepare_schedule(schedule: Schedule) -> Schedule:
    """The schedule the runtime executes: lowered when compute-only, else as is."""
    return lower_if_compute_only(schedule)


def blocking_batches(schedule: Schedule, only_needed_next: bool = False) -> Schedule:
    """The same schedule with ``Batch(wait=False)`` made ``Batch(wait=True)``: the rank
    waits for a batch's sends and receives right after posting it (PyTorch's 1F1B
    runtime does this). On gloo under CPU oversubscription this keeps sends
    progressing instead of leaving them to a background thread that competes with
    compute. ``only_needed_next``: only the batches holding a receive that the
    rank's next compute consumes (which the rank waits for there anyway), so the
    extra wait is for the batch's sends alone. It is a different schedule: verify
    it (the CLI does) before running."""
    out = []
    for acts in schedule.actions:
        new = list(acts)
        for i, a in enumerate(acts):
            if not isinstance(a, Batch) or a.wait:
                continue
            if only_needed_next:
                nxt = next((b for b in acts[i + 1:] if isinstance(b, (Compute, Overlap))), None)
                needs = set() if nxt is None else {
                    consumer_key(c) for c in (nxt.computes if isinstance(nxt, Overlap) else (nxt,))}
                if not any(not op.kind.is_send and recv_key(op) in needs for op in a.ops):
                    continue
            new[i] = Batch(a.ops, True)
        out.append(new)
    return schedule.with_actions(out)


def waited_sends(schedule: Schedule) -> Schedule:
    """The same schedule with every action that holds sends and no receive (a send
    ``Comm`` or a send-only ``Batch``) made a ``Batch(wait=True)``: the rank waits for
    its sends right after posting them. With receives posted early
    (``prepost_receives``) each such wait ends once the data has moved, and it
    gives the CPU to gloo's transport thread at the moment the peer needs the
    data. It is a different schedule: only the ``gloo`` model justifies it
    together with early receives (nccl refutes the early receives, and eager
    does not model that a gloo send completes only with its receive); verify
    it under the model of the backend that runs it."""
    out = []
    for acts in schedule.actions:
        new = []
        for a in acts:
            ops = comms_of(a) if isinstance(a, (Comm, Batch)) else ()
            if ops and all(op.kind.is_send for op in ops) and not (
                    isinstance(a, Batch) and a.wait):
                a = Batch(tuple(ops), True)
            new.append(a)
        out.append(new)
    return schedule.with_actions(out)


def split_cooldown(schedule: Schedule) -> Schedule:
    """The same schedule with each rank's cooldown B split: I, then the send of its
    input gradient, then W (the same micro-batch's weight gradients).

    A cooldown B is a plain ``B`` (not half of an ``OVERLAP``) after the rank's last
    forward whose stage's previous stage runs on another rank. Once that rank has
    run its own last forward it has nothing left but backwards, each waiting for
    one of these gradients; after the split it gets each gradient as soon as the
    activation gradient exists, and W runs while it is in flight (the tail of
    the zero-bubble schedules, ZB-H1, applied to the cooldown alone). The
    activations are freed at W, which runs right after the send, so they are
    held one action longer, together with the gradients I keeps for W (both
    splits: reference/split.py, fastpath.grads). B's earlier in the step are left
    whole: a split costs CPU (I and W of the benchmark's last stage took about
    10% more than its B) and gains nothing while the peer is still busy with its
    own forwards (splitting every B of 1F1B's last stage measured slower,
    bench_fastpath). With tiny computes the split is a loss: the graph split
    costs about 0.3 ms of Python per I and W whatever their size (bench_fastpath
    1f1b at hidden 8, batch 1, paired against PyTorch in the same processes:
    0.930x and 0.980x with the split, 0.882x and 0.870x without).

    Works on a lowered schedule: W goes right after the action that posts the
    I's gradient send (after I itself when there is none). Gradients are those
    of B, summed in the same order. It is a different schedule: verify it (the
    CLI does) before running."""
    out = []
    for r, acts in enumerate(schedule.actions):
        last_f = max((i for i, a in enumerate(acts)
                      if any(c.kind is ComputeKind.F for c in computes_of(a))), default=-1)
        new = list(acts)
        inserts: dict[int, list[Compute]] = {}  # action index -> W's to run right after it
        for i in range(last_f + 1, len(acts)):
            a = acts[i]
            if not isinstance(a, Compute) or a.kind is not ComputeKind.B:
                continue
            prev = schedule.prev_stage(a.stage)
            if prev is None or schedule.rank_of(prev) == r:
                continue
            new[i] = Compute(ComputeKind.I, a.stage, a.mb)
            after = next((j for j in range(i + 1, len(acts)) if any(
                op.kind is CommKind.SEND_B and op.stage == a.stage and op.mb == a.mb
                for op in comms_of(acts[j]))), i)
            inserts.setdefault(after, []).append(Compute(ComputeKind.W, a.stage, a.mb))
        out.append([x for i, a in enumerate(new) for x in (a, *inserts.get(i, ()))])
    return schedule.with_actions(out)


def prepost_receives(schedule: Schedule, lookahead: int | None = None) -> Schedule:
    """The same schedule with each rank's receives posted ``lookahead`` computes
    earlier (``None``: all at the start of the step, or right after the rank's
    first compute when that compute consumes none of them), so a peer's send finds
    its receive already posted. On gloo a send's data moves only after the receiver has
    announced its receive; a receive posted just before its consumer puts that
    round trip on the critical path (measured: bench_fastpath ``--prepost``).

    A receive posted before the rank's compute k (the next compute after it, its
    consumer or an earlier one) moves to right before compute ``max(0, k -
    lookahead)``; ``lookahead=0`` changes nothing. With ``None`` each moves to
    before compute 0, or before compute 1 when no receive precedes compute 0
    (a first stage's F0: posting them first would delay the output its peer
    waits for; a peer's send that comes sooner, as in DualPipe's other
    direction, waits on gloo until they are posted, one compute at most;
    bench_fastpath 1f1b, paired against PyTorch, same processes: 0.947x posting
    them first, 0.933x after F0; at hidden 8, batch 1: 0.980x, 0.915x).
    Receives moved to the same compute are posted together as one ``Batch(wait=False)`` in their
    original order, after whatever stood before that compute, so the order of
    receives per peer and direction (their FIFO matching) is unchanged. A batch
    that loses its receives keeps its sends, and its wait: a waited batch then
    waits for its sends alone (DeepSeek's DualPipe batches, say), and one left
    empty is dropped (its receives are waited by the computes that consume them).
    Each rank holds more receive buffers at once (the runtime's pool grows to the
    plan's new peak).

    The result is a different schedule: verify it under the model of the backend
    that runs it. nccl refutes it in general (receives ahead of the rank's earlier
    sends reorder its stream); eager cannot vouch for waited sends (it says a send
    never blocks); ``gloo`` has no stream order and lets a send complete once its
    receive is posted, so it is the model that can verify early receives together
    with waited batches."""
    if lookahead is not None and lookahead < 0:
        raise ValueError(f"lookahead must be >= 0 or None, got {lookahead}")
    out = []
    for acts in schedule.actions:
        compute_at = []  # per action: index of the next compute at or after it
        nxt = sum(1 for a in acts if isinstance(a, (Compute, Overlap)))
        for a in reversed(acts):
            if isinstance(a, (Compute, Overlap)):
                nxt -= 1
            compute_at.append(nxt)
        compute_at.reverse()
        # lookahead None: before the first compute, or after it when it consumes no
        # receive (its output is what the peer waits for first)
        start = 0 if any(k == 0 and isinstance(a, (Comm, Batch)) and any(
            not op.kind.is_send for op in comms_of(a)) for a, k in zip(acts, compute_at)) else 1
        moved: dict[int, list[Comm]] = {}
        kept: list = []
        for a, k in zip(acts, compute_at):
            if isinstance(a, (Comm, Batch)):
                target = start if lookahead is None else max(0, k - lookahead)
                ops = comms_of(a)
                recvs = [op for op in ops if not op.kind.is_send]
                if recvs and target < k:
                    moved.setdefault(target, []).extend(recvs)
                    sends = tuple(op for op in ops if op.kind.is_send)
                    if sends:
                        kept.append(Batch(sends, a.wait) if isinstance(a, Batch) else sends[0])
                    continue
            kept.append(a)
        new: list = []
        count = 0  # computes emitted so far
        for a in kept:
            if isinstance(a, (Compute, Overlap)):
                if count in moved:
                    new.append(Batch(tuple(moved.pop(count)), False))
                count += 1
            new.append(a)
        assert not moved, moved  # every target is a compute of this rank
        out.append(new)
    return schedule.with_actions(out)


def stage_layers(schedule: Schedule, stage: int, layers_per_stage: int) -> list[int]:
    """Model layers of ``stage``: schedule layer L -> model layers L*K .. L*K+K-1."""
    k = layers_per_stage
    base = schedule.layer_of(stage) * k
    return list(range(base, base + k))


def num_model_layers(schedule: Schedule, layers_per_stage: int) -> int:
    return (max(schedule.layers) + 1) * layers_per_stage


@dataclass(frozen=True)
class TiedGroup:
    """Schedule layers whose weight gradients are summed over ``ranks``."""

    ranks: tuple[int, ...]
    layers: tuple[int, ...]


@dataclass
class RankPlan:
    rank: int
    schedule: Schedule
    stages: tuple[int, ...]
    peers: dict[tuple[int, int], int] = field(default_factory=dict)  # (step, sub) -> peer
    # (stage, mb) -> step after which the stage input/output/W state can be freed
    free_after: dict[tuple[int, int], int] = field(default_factory=dict)
    tied_groups: tuple[TiedGroup, ...] = ()
    num_sends: int = 0
    num_recvs: int = 0

    @property
    def actions(self):
        return self.schedule.actions[self.rank]


def tied_groups(schedule: Schedule) -> tuple[TiedGroup, ...]:
    """Every set of 2+ ranks sharing a tied layer, in a fixed order (all ranks agree)."""
    by_ranks: dict[tuple[int, ...], list[int]] = {}
    for layer in sorted(schedule.tied_layers):
        ranks = tuple(sorted({schedule.rank_of(s) for s in schedule.tied_layers[layer]}))
        if len(ranks) > 1:
            by_ranks.setdefault(ranks, []).append(layer)
    return tuple(TiedGroup(r, tuple(ls)) for r, ls in sorted(by_ranks.items()))


def build_plan(schedule: Schedule, rank: int) -> RankPlan:
    """The plan of ``rank`` for an already lowered schedule."""
    if schedule.is_compute_only and schedule.num_ranks > 1 and any(
        schedule.rank_of(s) != schedule.rank_of(n)
        for s in schedule.stage_by_id
        if (n := schedule.next_stage(s)) is not None
    ):
        raise ScheduleError("compute-only schedule; lower it first (prepare_schedule)")
    plan = RankPlan(
        rank=rank,
        schedule=schedule,
        stages=schedule.stages_on_rank[rank],
        tied_groups=tied_groups(schedule),
    )
    for step, a in enumerate(schedule.actions[rank]):
        for sub, op in enumerate(comms_of(a)):
            where = loc(rank, step, sub if isinstance(a, Batch) else None)
            if op.stage not in schedule.stage_by_id:
                raise ScheduleError(f"{op} names an unknown stage", where)
            if schedule.rank_of(op.stage) != rank:
                raise ScheduleError(
                    f"{op}: stage {op.stage} is on rank {schedule.rank_of(op.stage)}",
                    where,
                )
            peer = schedule.peer_of(op)
            if peer is None or peer == rank:
                raise ScheduleError(f"{op} has no peer on another rank", where)
            plan.peers[(step, sub)] = peer
            if op.kind.is_send:
                plan.num_sends += 1
            else:
                plan.num_recvs += 1
        for c in computes_of(a):
            if c.stage not in schedule.stage_by_id or schedule.rank_of(c.stage) != rank:
                raise ScheduleError(f"{c} does not belong on rank {rank}", loc(rank, step))
            if c.kind in (ComputeKind.B, ComputeKind.W):
                plan.free_after[(c.stage, c.mb)] = step
    return plan


def peak_receive_buffers(plan: RankPlan) -> int:
    """How many receive buffers this rank holds at once at most: a receive's buffer
    is taken when it is posted and given back at the step that frees its
    (stage, micro-batch) (its B or W), which is how the runtime's pool behaves."""
    live = peak = 0
    release: dict[int, int] = {}
    for step, a in enumerate(plan.actions):
        for op in comms_of(a):
            if not op.kind.is_send:
                live += 1
                end = plan.free_after.get((op.stage, op.mb))
                if end is not None:
                    release[end] = release.get(end, 0) + 1
        peak = max(peak, live)
        live -= release.pop(step, 0)
    return peak


def recv_key(op: Comm) -> tuple[str, int, int]:
    """The key a receive is stored under until its consumer takes it."""
    return ("F" if op.kind is CommKind.RECV_F else "B", op.stage, op.mb)


def consumer_key(c: Compute) -> tuple[str, int, int] | None:
    """The receive key a compute consumes when its input is remote."""
    if c.kind is ComputeKind.F:
        return ("F", c.stage, c.mb)
    if c.kind in (ComputeKind.B, ComputeKind.I):
        return ("B", c.stage, c.mb)
    return None


def compute_inputs(s: Schedule, rank: int, c: Compute) -> tuple[list[tuple[str, int, int]], bool]:
    """What compute ``c`` on ``rank`` consumes: the keys of the local computes
    that must have run (("F" | "I" | "BI", stage, mb); "BI" is a B or an I),
    and whether it also consumes a receive (its input comes from another rank)."""
    local: list[tuple[str, int, int]] = []
    remote = False
    if c.kind is ComputeKind.F:
        p = s.prev_stage(c.stage)
        if p is not None:
            if s.rank_of(p) == rank:
                local.append(("F", p, c.mb))
            else:
                remote = True
    elif c.kind in (ComputeKind.B, ComputeKind.I):
        local.append(("F", c.stage, c.mb))
        n = s.next_stage(c.stage)
        if n is not None:
            if s.rank_of(n) == rank:
                local.append(("BI", n, c.mb))
            else:
                remote = True
    else:
        local.append(("I", c.stage, c.mb))
    return local, remote

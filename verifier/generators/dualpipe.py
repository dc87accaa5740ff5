"""DualPipe and DualPipeV exactly as DeepSeek's reference code runs them.

What it is: a replay, rank by rank, of ``DualPipe.step()`` and
``DualPipeV.step()`` of deepseek-ai/DualPipe (``dualpipe/dualpipe.py``,
``dualpipe/dualpipev.py``; PyPI ``dualpipe`` 1.0.0), emitting our IR instead of
running tensors. It reproduces, in order:

- the 8 phases (nF0, nF0F1, nB1W1F1, nF0B1F1B0, nB1F1B0, nB1B0, nWB0, nW) and
  which F and B are overlapped (``Overlap(F, B)``; DeepSeek's overlapped
  backward never splits, so it is a full B);
- the zero-bubble split: a backward run with ``enable_zb=True`` computes only
  the input gradient (``I``) and pushes its weight-gradient closure group onto
  ``WeightGradStore``'s FIFO queue; each ``_weight_chunk`` pops the oldest one
  (``W`` of that stage and micro-batch);
- the communication: ``_recv_*`` / ``_send_*`` append P2P ops to a queue (in
  the order the code calls them; skipped where the peer stage is absent or on
  the same rank, i.e. the route ends and DualPipeV's V-turn), and
  ``_commit_and_wait_comm`` posts the queue with ``batch_isend_irecv`` and waits
  for all of it right before every compute (and ``_weight_chunk``) and once at
  the end: ``Batch(ops, wait=True)``; an empty queue posts nothing.

Phases: DeepSeek's code numbers a rank's two chunks by "phase". For DualPipe,
physical phase 0 is the forward-direction route (route 0, stage r on rank r,
micro-batches 0..M/2-1) and physical phase 1 the reverse route (stage 2R-1-r on
rank r, micro-batches M/2..M-1); ``step()`` speaks of logical phases that are
flipped on the second half of the ranks (``phase ^ is_in_second_half``). For
DualPipeV, phase 0 is stage r (going down the V) and phase 1 stage 2R-1-r
(coming back), all micro-batches on both.

Parameter rules (DeepSeek's asserts): DualPipe needs an even number of ranks
and ``num_microbatches`` even and ``>= 2*num_ranks``; DualPipeV needs
``num_microbatches >= 2*num_ranks``. PyTorch's ``ScheduleDualPipeV`` produces
the same compute order, micro-batch and stage numbering (stage r and 2R-1-r
on rank r; B for overlapped and non-zero-bubble backwards, I/W for the
zero-bubble ones, W FIFO): tests/test_generators.py checks it over a grid and
against PyTorch's artifact ``dualpipev_4rank_10mb.csv``. PyTorch differs only
in communication, which its runtime inserts itself (``_add_send_recv``), not
DeepSeek's wait-before-every-compute batches that we emit.

Checked against DeepSeek's code by tests/test_dualpipe_fidelity.py, which runs
the real package on CPU/gloo and compares every action, batches included.

What it does not cover: ``forward_only`` (inference) steps, ``return_outputs``,
and the number of tensors per message (one message is one Comm here; DeepSeek
posts one P2P op per tensor of ``set_p2p_tensor_shapes``).
"""

from __future__ import annotations

from collections import deque

from verifier.ir import (
    Action,
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    ScheduleError,
)

_F, _B, _I, _W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W
_SEND_F, _RECV_F, _SEND_B, _RECV_B = (
    CommKind.SEND_F,
    CommKind.RECV_F,
    CommKind.SEND_B,
    CommKind.RECV_B,
)


def check_dualpipe(num_ranks: int, num_microbatches: int) -> None:
    if num_ranks % 2:
        raise ScheduleError(f"dualpipe needs an even number of ranks, got {num_ranks}")
    if num_microbatches % 2 or num_microbatches < 2 * num_ranks:
        raise ScheduleError(
            "dualpipe needs num_microbatches >= 2*num_ranks and even, got "
            f"num_microbatches={num_microbatches} with num_ranks={num_ranks}"
        )


def check_dualpipev(num_ranks: int, num_microbatches: int) -> None:
    if num_microbatches < 2 * num_ranks:
        raise ScheduleError(
            "dualpipev needs num_microbatches >= 2*num_ranks, got "
            f"num_microbatches={num_microbatches} with num_ranks={num_ranks}"
        )


class _RankReplay:
    """One rank of DeepSeek's step(), recording actions instead of running them.

    ``stage[p]``, ``base[p]``: the stage and first micro-batch of physical phase
    p. ``prev_remote[p]`` / ``next_remote[p]``: whether the route has a stage
    before / after ``stage[p]`` on another rank (else DeepSeek posts nothing).
    """

    __slots__ = (
        "stage", "base", "prev_remote", "next_remote", "flip",
        "f", "b", "send_f", "send_b", "recv_f", "recv_b", "queue", "wq", "out",
        "with_comm",
    )

    def __init__(self, stage, base, prev_remote, next_remote, flip, with_comm):
        self.stage = stage
        self.base = base
        self.prev_remote = prev_remote
        self.next_remote = next_remote
        self.flip = flip  # DualPipe: logical phase ^ is_in_second_half
        self.with_comm = with_comm
        self.f = [0, 0]
        self.b = [0, 0]
        self.send_f = [0, 0]
        self.send_b = [0, 0]
        self.recv_f = [0, 0]
        self.recv_b = [0, 0]
        self.queue: list[Comm] = []  # DeepSeek's self.comm_ops
        self.wq: deque[tuple[int, int]] = deque()  # WeightGradStore FIFO
        self.out: list[Action] = []

    # -- communication (queued) --------------------------------------------
    def _post(self, kind: CommKind, p: int, counter: list[int], remote: list[bool]):
        if not remote[p]:
            return
        m = self.base[p] + counter[p]
        counter[p] += 1
        if self.with_comm:
            self.queue.append(Comm(kind, self.stage[p], m))

    def recv_forward(self, lp: int) -> None:
        self._post(_RECV_F, lp ^ self.flip, self.recv_f, self.prev_remote)

    def send_forward(self, lp: int) -> None:
        self._post(_SEND_F, lp ^ self.flip, self.send_f, self.next_remote)

    def recv_backward(self, lp: int) -> None:
        self._post(_RECV_B, lp ^ self.flip, self.recv_b, self.next_remote)

    def send_backward(self, lp: int) -> None:
        self._post(_SEND_B, lp ^ self.flip, self.send_b, self.prev_remote)

    def commit(self) -> None:
        if self.queue:
            self.out.append(Batch(tuple(self.queue), wait=True))
            self.queue = []

    # -- compute -----------------------------------------------------------
    def _fwd(self, lp: int) -> Compute:
        p = lp ^ self.flip
        m = self.base[p] + self.f[p]
        self.f[p] += 1
        return Compute(_F, self.stage[p], m)

    def _bwd(self, lp: int, zb: bool) -> Compute:
        p = lp ^ self.flip
        m = self.base[p] + self.b[p]
        self.b[p] += 1
        if zb:
            self.wq.append((self.stage[p], m))
            return Compute(_I, self.stage[p], m)
        return Compute(_B, self.stage[p], m)

    def forward_chunk(self, lp: int, recv: bool = True, send: bool = True) -> None:
        if recv:
            self.recv_forward(lp)
        self.commit()
        self.out.append(self._fwd(lp))
        if send:
            self.send_forward(lp)

    def backward_chunk(self, lp: int, zb: bool = False, recv: bool = True, send: bool = True) -> None:
        if recv:
            self.recv_backward(lp)
        self.commit()
        self.out.append(self._bwd(lp, zb))
        if send:
            self.send_backward(lp)

    def forward_backward_chunk(self, lp0: int, lp1: int, recv0: bool = True) -> None:
        if recv0:
            self.recv_forward(lp0)
        self.recv_backward(lp1)
        self.commit()
        self.out.append(Overlap(self._fwd(lp0), self._bwd(lp1, False)))
        self.send_forward(lp0)
        self.send_backward(lp1)

    def weight_chunk(self) -> None:
        self.commit()
        stage, m = self.wq.popleft()
        self.out.append(Compute(_W, stage, m))


def _replay(rank: _RankReplay, num_half: int, half_rank: int, num_half_chunks: int,
            is_turn_rank: bool) -> list[Action]:
    """DeepSeek's step() phases, shared by DualPipe and DualPipeV.

    DualPipe calls it with (R/2, min(r, R-1-r), M/2, is_middle_rank);
    DualPipeV with (R, r, M, is_last_rank): the two step() bodies are the same
    text under that substitution.
    """
    x = rank
    # Step 1: nF0
    for _ in range((num_half - half_rank - 1) * 2):
        x.forward_chunk(0)
    # Step 2: nF0F1
    step_2 = half_rank + 1
    x.recv_forward(0)
    for i in range(step_2):
        x.forward_chunk(0, recv=False, send=is_turn_rank)
        x.recv_forward(0)
        x.forward_chunk(1, send=(not is_turn_rank) or (i < step_2 - 1))
        if not is_turn_rank:
            x.send_forward(0)
    # Step 3: nB1W1F1 (zero bubble)
    for _ in range(num_half - half_rank - 1):
        x.backward_chunk(1, zb=True)
        x.recv_forward(1)
        x.weight_chunk()
        x.forward_chunk(1, recv=False)
    # Step 4 (main): nF0B1F1B0
    for i in range(num_half_chunks - 2 * num_half + half_rank + 1):
        if i == 0:
            if is_turn_rank:
                # DeepSeek does not overlap these two chunks (smaller bubble).
                x.forward_chunk(0, recv=False, send=False)
                x.send_forward(1)
                x.backward_chunk(1, send=False)
                x.send_forward(0)
                x.send_backward(1)
            else:
                x.forward_backward_chunk(0, 1, recv0=False)
        else:
            x.forward_backward_chunk(0, 1)
        x.forward_backward_chunk(1, 0)
    # Step 5: nB1F1B0
    for _ in range(num_half - half_rank - 1):
        x.backward_chunk(1)
        x.forward_backward_chunk(1, 0)
    # Step 6: nB1B0 (second half of the chunks zero bubble)
    step_6 = half_rank + 1
    zb = False
    for i in range(step_6):
        if i == step_6 // 2 and half_rank % 2 == 1:
            zb = True
        x.backward_chunk(1, zb=zb)
        if i == step_6 // 2 and half_rank % 2 == 0:
            zb = True
        x.backward_chunk(0, zb=zb)
    # Step 7: nWB0 (zero bubble)
    for _ in range(num_half - half_rank - 1):
        x.weight_chunk()
        x.backward_chunk(0, zb=True)
    # Step 8: nW
    for _ in range(half_rank + 1):
        x.weight_chunk()
    assert not x.wq, "WeightGradStore queue must be empty at the end"
    x.commit()
    return x.out


def dualpipe(num_ranks: int, num_microbatches: int, with_comm: bool) -> list[list[Action]]:
    R, M = num_ranks, num_microbatches
    check_dualpipe(R, M)
    half = M // 2
    out = []
    for r in range(R):
        # physical phase 0: route 0 (stage r, down), 1: route 1 (stage 2R-1-r, up)
        x = _RankReplay(
            stage=(r, 2 * R - 1 - r),
            base=(0, half),
            prev_remote=(r > 0, r < R - 1),
            next_remote=(r < R - 1, r > 0),
            flip=int(r >= R // 2),
            with_comm=with_comm,
        )
        is_middle = r in (R // 2 - 1, R // 2)
        out.append(_replay(x, R // 2, min(r, R - 1 - r), half, is_middle))
    return out


def dualpipev(num_ranks: int, num_microbatches: int, with_comm: bool) -> list[list[Action]]:
    R, M = num_ranks, num_microbatches
    check_dualpipev(R, M)
    out = []
    for r in range(R):
        # phase 0: stage r (down the V), phase 1: stage 2R-1-r (back up).
        # The V-turn (stage R-1 -> R, both on rank R-1) exchanges nothing.
        x = _RankReplay(
            stage=(r, 2 * R - 1 - r),
            base=(0, 0),
            prev_remote=(r > 0, r < R - 1),
            next_remote=(r < R - 1, r > 0),
            flip=0,
            with_comm=with_comm,
        )
        out.append(_replay(x, R, r, M, r == R - 1))
    return out

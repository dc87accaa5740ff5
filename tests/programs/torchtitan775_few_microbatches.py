"""torchtitan#775: 1F1B with fewer micro-batches than stages (bug; hangs on gloo).

A 1F1B loop (Megatron's shape: warm-up forwards, then one forward and one
backward per step with send-forward/receive-backward exchanged as one batch,
then cool-down backwards) whose warm-up length is ``num_stages - rank - 1``,
not clamped to the number of micro-batches: with 4 stages and 2 micro-batches
rank 0 runs 3 warm-up forwards and sends an activation of a third micro-batch
that stage 1 never receives. torchtitan775_fixed.py clamps it.
"""

import sys

import torch
import torch.distributed as dist

from fastpath.record import compute, payload

NUM_MICROBATCHES = 2


def exchange(*ops):
    """Post ``(kind, tensor, peer, payload)`` ops as one batch and wait for it."""
    p2p = []
    for kind, tensor, peer, (pk, stage, mb) in ops:
        if peer is None:
            continue
        with payload(pk, stage, mb):
            p2p.append(dist.P2POp(dist.isend if kind == "send" else dist.irecv, tensor, peer))
    if p2p:
        for w in dist.batch_isend_irecv(p2p):
            w.wait()


def one_f_one_b(clamp: bool) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    prev = rank - 1 if rank > 0 else None
    nxt = rank + 1 if rank + 1 < world else None
    M = NUM_MICROBATCHES
    warmup = world - rank - 1
    if clamp:
        warmup = min(warmup, M)
    steady = max(M - warmup, 0)
    act, grad = torch.ones(2, 8), torch.ones(2, 8)
    f = b = 0
    for _ in range(warmup):
        exchange(("recv", act, prev, ("F", rank - 1, f)))
        compute("F", rank, f)
        exchange(("send", act, nxt, ("F", rank, f)))
        f += 1
    if steady:
        exchange(("recv", act, prev, ("F", rank - 1, f)))
    for i in range(steady):
        compute("F", rank, f)
        exchange(("send", act, nxt, ("F", rank, f)), ("recv", grad, nxt, ("B", rank + 1, b)))
        f += 1
        compute("B", rank, b)
        if i + 1 == steady:
            exchange(("send", grad, prev, ("B", rank, b)))
        else:
            exchange(("send", grad, prev, ("B", rank, b)), ("recv", act, prev, ("F", rank - 1, f)))
        b += 1
    for _ in range(warmup):
        exchange(("recv", grad, nxt, ("B", rank + 1, b)))
        compute("B", rank, b)
        exchange(("send", grad, prev, ("B", rank, b)))
        b += 1


if __name__ == "__main__":
    dist.init_process_group("gloo")
    one_f_one_b(clamp="--clamp" in sys.argv)
    dist.destroy_process_group()

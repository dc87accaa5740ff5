"""Megatron-LM#5100: shape-exchange messages in a fixed order (bug; hangs only under NCCL).

With variable_seq_lengths each step first exchanges tensor shapes with both
neighbours. Here (PP=4) every rank posts its shape messages as separate
batch_isend_irecv calls in one fixed order (sends to next and previous, then
receives from previous and next) and waits for all of them at the end. gloo
completes it (ops of a rank complete in any order); under NCCL a rank's
batches run one after another on its stream, so rank 3's first batch (a
send to rank 2) waits for rank 2's last batch, which waits behind rank 2's
first (a send to rank 3, whose receive is rank 3's second batch): a deadlock.
megatron5100_fixed.py posts each rank's shape messages as one batch.
"""

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
prev = rank - 1 if rank > 0 else None
nxt = rank + 1 if rank + 1 < world else None
shape = torch.tensor([4, 16, 64])
got = {p: torch.empty(3, dtype=torch.long) for p in (prev, nxt) if p is not None}

ops = []
if nxt is not None:
    ops.append(dist.P2POp(dist.isend, shape, nxt))
if prev is not None:
    ops.append(dist.P2POp(dist.isend, shape, prev))
    ops.append(dist.P2POp(dist.irecv, got[prev], prev))
if nxt is not None:
    ops.append(dist.P2POp(dist.irecv, got[nxt], nxt))
works = []
for op in ops:                                    # one batch per message, fixed order
    works += dist.batch_isend_irecv([op])
for w in works:
    w.wait()
dist.destroy_process_group()

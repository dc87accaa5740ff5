"""Megatron-LM#5100, fixed: each rank's shape messages in one batch (see megatron5100_shape_exchange.py)."""

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
for w in dist.batch_isend_irecv(ops):             # one batch: one unit under NCCL
    w.wait()
dist.destroy_process_group()

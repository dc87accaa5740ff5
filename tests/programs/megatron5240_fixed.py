"""Megatron-LM#5240, fixed: Megatron's parity order for unbatched P2P (see megatron5240_pair_order.py):
even ranks send to next, receive from previous, send to previous, receive from next;
odd ranks receive from previous, send to next, receive from next, send to previous."""

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
prev = rank - 1 if rank > 0 else None
nxt = rank + 1 if rank + 1 < world else None
out = torch.ones(2, 8)
inp = {p: torch.empty(2, 8) for p in (prev, nxt) if p is not None}

if rank % 2 == 0:
    order = [("send", nxt), ("recv", prev), ("send", prev), ("recv", nxt)]
else:
    order = [("recv", prev), ("send", nxt), ("recv", nxt), ("send", prev)]
works = []
for kind, p in order:
    if p is None:
        continue
    works.append(dist.isend(out, p) if kind == "send" else dist.irecv(inp[p], p))
for w in works:
    w.wait()
dist.destroy_process_group()

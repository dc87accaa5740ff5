"""Megatron-LM#5240: unbatched P2P on per-pair communicators (bug; hangs under nccl-pairs).

Without batching, PyTorch's NCCL backend (lazy initialisation) gives each pair
of ranks its own communicator and stream, both directions on one stream.
Here every rank posts its receives first (from previous, then from next), then
its sends, and waits at the end. gloo completes it; on the stream of a pair
(r, r+1) both ranks put their receive first, so neither send can start: a
deadlock under nccl-pairs (and nccl). megatron5240_fixed.py uses Megatron's
parity order: even ranks send first, odd ranks receive first.
"""

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
prev = rank - 1 if rank > 0 else None
nxt = rank + 1 if rank + 1 < world else None
out = torch.ones(2, 8)
inp = {p: torch.empty(2, 8) for p in (prev, nxt) if p is not None}

works = []
for p in (prev, nxt):
    if p is not None:
        works.append(dist.irecv(inp[p], p))
for p in (nxt, prev):
    if p is not None:
        works.append(dist.isend(out, p))
for w in works:
    w.wait()
dist.destroy_process_group()

"""NVIDIA/nccl#1279, #2130: ranks group the same calls differently in batch_isend_irecv
(bug; hangs under NCCL, not on gloo).

Three ranks: rank 0 sends to 1 and 2, rank 1 sends to 2 and receives from 0,
rank 2 receives from 0 and 1. Each rank posts its two calls as two
batch_isend_irecv groups, in its own order, and waits at the end. Under NCCL a
rank's groups run one after another: rank 0's first group (send to 1) needs
rank 1's second, behind rank 1's first (send to 2), which needs rank 2's
second, behind rank 2's first (receive from 0), which needs rank 0's second:
a cycle. nccl1279_fixed.py puts each rank's calls in one group.
"""

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.ones(4)
buf = [torch.empty(4), torch.empty(4)]
calls = {
    0: [dist.P2POp(dist.isend, t, 1), dist.P2POp(dist.isend, t, 2)],
    1: [dist.P2POp(dist.isend, t, 2), dist.P2POp(dist.irecv, buf[0], 0)],
    2: [dist.P2POp(dist.irecv, buf[0], 0), dist.P2POp(dist.irecv, buf[1], 1)],
}[rank]
works = []
for call in calls:                     # one group per call
    works += dist.batch_isend_irecv([call])
for w in works:
    w.wait()
dist.destroy_process_group()

"""nccl#1279/#2130, fixed: every rank posts its calls as one group (see nccl1279_grouping.py)."""

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
for w in dist.batch_isend_irecv(calls):   # one group
    w.wait()
dist.destroy_process_group()

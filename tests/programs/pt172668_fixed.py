"""pytorch#172668, fixed: the receive is posted in the same batch as the send
(see pt172668_deferred_recv.py): one unit, so neither send waits for a receive
posted after it (an irecv posted first alone is not enough under NCCL, where a
rank's units run in post order)."""

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
peer = 1 - rank
act = torch.ones(2, 8)
incoming = torch.empty(2, 8)
ops = [dist.P2POp(dist.irecv, incoming, peer),   # RECV_F posted with the send
       dist.P2POp(dist.isend, act, peer)]        # 0SEND_F1 / 1SEND_F0
for w in dist.batch_isend_irecv(ops):
    w.wait()
dist.destroy_process_group()

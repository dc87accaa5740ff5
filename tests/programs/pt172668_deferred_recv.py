"""pytorch#172668: receives deferred past rendezvous sends (bug; hangs on gloo).

Two ranks, four interleaved stages (0 and 2 on rank 0, 1 and 3 on rank 1). In
the same step rank 0 runs ``0SEND_F1`` (stage 0 sends micro-batch 1's
activation to stage 1) and rank 1 runs ``1SEND_F0`` (stage 1 sends micro-batch
0's to stage 2); each rank defers its receive until the compute that needs it,
so both block in a send whose receive is posted only after it. Rendezvous
sends (gloo, NCCL above its buffer) deadlock. pt172668_fixed.py posts the
receives first.
"""

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
peer = 1 - rank
act = torch.ones(2, 8)
incoming = torch.empty(2, 8)
dist.send(act, peer)        # 0SEND_F1 / 1SEND_F0
dist.recv(incoming, peer)   # the deferred RECV_F
dist.destroy_process_group()

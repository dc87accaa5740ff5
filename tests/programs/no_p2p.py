"""A script that makes no point-to-point call (record: exit 2)."""

import torch.distributed as dist

dist.init_process_group("gloo")
dist.barrier()
dist.destroy_process_group()

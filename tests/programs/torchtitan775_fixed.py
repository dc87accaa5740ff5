"""torchtitan#775, fixed: the warm-up clamped to the number of micro-batches."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.argv.append("--clamp")

import torch.distributed as dist  # noqa: E402

from torchtitan775_few_microbatches import one_f_one_b  # noqa: E402

dist.init_process_group("gloo")
one_f_one_b(clamp=True)
dist.destroy_process_group()

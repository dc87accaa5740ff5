"""Two ranks that each send before they receive: hangs on gloo (a send completes
only once its receive is posted) and on NCCL at production message sizes.

Run under a launcher (the recorder, or torchrun) with 2 ranks."""

import sys

import torch
import torch.distributed as dist


def main() -> int:
    dist.init_process_group("gloo")
    r = dist.get_rank()
    x = torch.ones(4, 1024)
    dist.send(x, 1 - r)
    dist.recv(x, 1 - r)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

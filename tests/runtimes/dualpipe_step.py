"""One step of DeepSeek's DualPipe (PyPI ``dualpipe``) on gloo/CPU, tiny model.

Run under a launcher that sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (the
recorder, or torchrun): ``dualpipe_step.py [--v] [--microbatches M]`` (an even
number of ranks; ``--v``: DualPipeV, when the installed package has it).

DualPipe is written for CUDA; patched, and only that (PATCHES):
1. ``torch.cuda.current_device`` returns "cpu" (DualPipe asserts its modules
   are on the current CUDA device);
2. ``dualpipe.comm.build_from_tensor_shapes`` allocates receive buffers on the
   CPU (it allocates them on CUDA).
Each of the two chunks per rank is a Linear(H, H); loss: mean squared error.
"""

from __future__ import annotations

import argparse
import sys

PATCHES = (
    "torch.cuda.current_device -> 'cpu' (DualPipe's device assertion)",
    "dualpipe.comm.build_from_tensor_shapes -> CPU receive buffers",
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--v", action="store_true", help="DualPipeV instead of DualPipe")
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=4)
    args = ap.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")
    import torch
    import torch.distributed as dist

    torch.cuda.current_device = lambda: "cpu"
    import dualpipe.comm as comm

    def cpu_buffers():
        return [torch.empty(s, dtype=comm.TENSOR_DTYPE, requires_grad=True) for s in comm.TENSOR_SHAPES]

    comm.build_from_tensor_shapes = cpu_buffers
    if args.v:
        from dualpipe.dualpipev import DualPipeV as cls  # absent from PyPI dualpipe 1.0.0
    else:
        from dualpipe import DualPipe as cls
    dist.init_process_group("gloo")
    R, r = dist.get_world_size(), dist.get_rank()
    H, M, rows = args.hidden, args.microbatches, 2
    torch.manual_seed(0)
    comm.set_p2p_tensor_shapes([(rows, H)])
    comm.set_p2p_tensor_dtype(torch.float32)
    model = cls((torch.nn.Linear(H, H), torch.nn.Linear(H, H)))

    def criterion(y, t):
        return ((y - t) ** 2).mean()

    ends = r in (0, R - 1) if not args.v else r == 0
    n = M // 2 if not args.v else M
    x = torch.randn(n * rows, H) if ends else None
    t = torch.randn(n * rows, H) if ends else None
    model.step(x, num_chunks=M, criterion=criterion if ends else None, labels=(t,))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

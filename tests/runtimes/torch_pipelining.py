"""One training step of a torch.distributed.pipelining schedule on gloo/CPU, tiny model.

Run under a launcher that sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (the
recorder, or torchrun): ``torch_pipelining.py --schedule NAME [--microbatches M]``
with NAME one of torch's schedule classes (GPipe, 1F1B, Interleaved1F1B,
LoopedBFS, InterleavedZeroBubble, ZBVZeroBubble, DualPipeV), or
``--csv FILE`` (a compute-only PyTorch CSV, run by torch's
``_PipelineScheduleRuntime``, which adds its own sends and receives), with
``--placement loop|v`` saying where the CSV's stages live.

Each stage is one Linear(H, H); the loss is the mean of the last stage's output.
Placement: one stage per rank (GPipe, 1F1B), two per rank round-robin (stage
r and r + R: Interleaved1F1B, LoopedBFS, InterleavedZeroBubble) or in a V
(stage r and 2R - 1 - r: ZBVZeroBubble, DualPipeV).
"""

from __future__ import annotations

import argparse
import sys

V_SHAPED = ("ZBVZeroBubble", "DualPipeV")
SINGLE = ("GPipe", "1F1B")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedule", default="1F1B")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--placement", choices=("single", "loop", "v"), default=None)
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=8)
    args = ap.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")
    import torch
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage
    from torch.distributed.pipelining import schedules as sch

    dist.init_process_group("gloo")
    R, r = dist.get_world_size(), dist.get_rank()
    H, M = args.hidden, args.microbatches
    placement = args.placement or ("v" if args.schedule in V_SHAPED
                                   else "single" if args.schedule in SINGLE else "loop")
    if placement == "single":
        ids, num = [r], R
    elif placement == "v":
        ids, num = [r, 2 * R - 1 - r], 2 * R
    else:
        ids, num = [r, r + R], 2 * R
    torch.manual_seed(0)
    layers = [torch.nn.Linear(H, H) for _ in range(num)]
    stages = [PipelineStage(layers[i], i, num, torch.device("cpu")) for i in ids]

    def loss_fn(out, target):
        return ((out - target) ** 2).mean()

    if args.csv:
        schedule = sch._PipelineScheduleRuntime(stages, M, loss_fn=loss_fn)
        schedule._load_csv(args.csv, format="compute_only")
    else:
        cls = sch.get_schedule_class(args.schedule)
        schedule = cls(stages[0] if placement == "single" else stages, M, loss_fn=loss_fn)
    x = torch.randn(M, H)
    y = torch.randn(M, H)
    first = 0 in ids
    last = (num - 1) in ids
    kwargs = {"target": y, "losses": []} if last else {}
    if first:
        schedule.step(x, **kwargs)
    else:
        schedule.step(**kwargs)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

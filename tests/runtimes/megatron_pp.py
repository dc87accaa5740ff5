"""One training step of megatron-core's pipeline schedules on gloo/CPU, tiny model.

Run under a launcher that sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (the
recorder, or torchrun): ``megatron_pp.py [--interleaved] [--batch-p2p] [--microbatches M]``.

megatron-core is written for CUDA; what forces it, and only that, is patched
(each patch listed in PATCHES and printed by ``--list-patches``):

1. ``torch.cuda.current_device`` returns "cpu": p2p_communication allocates its
   receive buffers and shape tensors on ``torch.cuda.current_device()``.
2. ``torch.zeros(..., device="cuda")`` makes a CPU tensor: the schedules'
   ``total_num_tokens`` counter is created on "cuda".
3. ``torch.cuda.synchronize`` does nothing (batch_isend_irecv with
   ``batch_p2p_sync``; set False here too).

The model: each pipeline stage (model chunk) is one Linear(H, H) with
``set_input_tensor``; the loss is the mean of the last stage's output.
"""

from __future__ import annotations

import argparse
import os
import sys

PATCHES = (
    "torch.cuda.current_device -> 'cpu' (p2p_communication's buffers and shape tensors)",
    "torch.zeros(device='cuda') -> CPU (schedules' total_num_tokens)",
    "torch.cuda.synchronize -> no-op (batch_p2p_sync)",
)


def _patch_cuda(torch) -> None:
    torch.cuda.current_device = lambda: "cpu"
    zeros = torch.zeros

    def cpu_zeros(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return zeros(*args, **kwargs)

    torch.zeros = cpu_zeros
    torch.cuda.synchronize = lambda *a, **k: None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--interleaved", action="store_true")
    ap.add_argument("--batch-p2p", action="store_true")
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--list-patches", action="store_true")
    args = ap.parse_args(argv)
    if args.list_patches:
        print("\n".join(PATCHES))
        return 0
    import warnings

    warnings.simplefilter("ignore")
    import torch
    import torch.distributed as dist

    _patch_cuda(torch)
    from megatron.core import parallel_state
    from megatron.core.model_parallel_config import ModelParallelConfig
    from megatron.core.enums import ModelType
    from megatron.core.pipeline_parallel import schedules

    dist.init_process_group("gloo")
    world = dist.get_world_size()
    vp = 2 if args.interleaved else None
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=1, pipeline_model_parallel_size=world,
        virtual_pipeline_model_parallel_size=vp)
    H, S, B = args.hidden, 2, 1  # hidden, sequence length, micro-batch size
    config = ModelParallelConfig(pipeline_model_parallel_size=world, pipeline_dtype=torch.float32,
                                 batch_p2p_comm=args.batch_p2p, batch_p2p_sync=False,
                                 virtual_pipeline_model_parallel_size=vp)
    # what a TransformerConfig carries and the schedules read (shapes; offloading off)
    config.hidden_size = H
    config.fine_grained_activation_offloading = False
    if vp is not None:
        config.overlap_p2p_comm = not args.batch_p2p  # megatron: exactly one of the two

    class Chunk(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(H, H)
            self.input_tensor = None
            self.config = config
            self.model_type = ModelType.encoder_or_decoder

        def set_input_tensor(self, t):
            self.input_tensor = t[0] if isinstance(t, list) else t

        def forward(self, x):
            inp = self.input_tensor if self.input_tensor is not None else x
            return self.lin(inp)

    torch.manual_seed(0)
    chunks = [Chunk() for _ in range(vp or 1)]

    def forward_step(data_iterator, model):
        x = next(data_iterator)
        out = model(x)

        def loss_func(output):
            loss = output.float().mean()
            return loss, {"loss": loss.detach()}

        return out, loss_func

    M = args.microbatches
    data = [torch.randn(S, B, H) for _ in range(M)]
    iters = [iter(list(data)) for _ in chunks]
    fb = (schedules.forward_backward_pipelining_with_interleaving if args.interleaved
          else schedules.forward_backward_pipelining_without_interleaving)
    fb(forward_step_func=forward_step, data_iterator=iters if args.interleaved else iters[0],
       model=chunks if args.interleaved else chunks[0], num_microbatches=M,
       seq_length=S, micro_batch_size=B, forward_only=False)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

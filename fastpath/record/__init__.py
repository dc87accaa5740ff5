"""Recording a real training script's communication as a checkable program (issue 13).

What it is: the torch side of ``python -m verifier record`` and of
``torchrun ... -m verifier.record``. A script runs unmodified, one process per
rank on CPU with gloo (an "nccl" request runs on gloo and the program says
so); every torch.distributed point-to-point call, every wait on its handles,
every barrier and collective, and the computes of the runtimes it knows
(torch.distributed.pipelining, DeepSeek's DualPipe, megatron-core's schedules)
are written down per rank with the user's source line, and merged
into a pp-schedule 1.1 ``program`` that ``python -m verifier check`` decides.

- ``launch``: the launcher (``record(target, nproc, timeout_s=, out=)``), torch-free;
- ``worker``: one rank (runs the script with the recorder installed);
- ``recorder``: the patches of torch.distributed; ``pipelining``, ``dualpipe``,
  ``megatron``: the runtimes whose stages it knows;
- ``parts``: the per-rank files and their merge into the program (torch-free);
- ``hooks``: ``compute(kind, stage, mb)`` and ``payload(kind, stage, mb)`` for
  runtimes the recorder does not know (free when nothing records).

The Python API for a launcher of your own, inside each rank::

    from fastpath.record import recording, merge_parts
    with recording("run.parts"):          # rank from RANK / torch.distributed
        train()
    # once every rank has left the block, in one process:
    merge_parts("run.parts", num_ranks=4, out="program.json")

What it does not cover: checking (verifier/), multi-node merging (the parts
folder must be shared). Importing this package loads no torch; ``recording``
loads it when called.
"""

from __future__ import annotations

from contextlib import contextmanager

from fastpath.record.hooks import compute, payload
from fastpath.record.parts import merge, write_program

__all__ = ["recording", "merge_parts", "compute", "payload"]


@contextmanager
def recording(parts_dir: str, rank: int | None = None, world: int | None = None):
    """Record this process's torch.distributed calls into ``parts_dir`` while the
    block runs (``rank``/``world``: from torch.distributed once initialised, else
    RANK / WORLD_SIZE). An exception leaving the block is recorded as the rank's
    outcome ``raised`` and propagates."""
    import os

    # torch loads only when a recording starts
    from fastpath.record.parts import PartWriter, part_path
    from fastpath.record.recorder import Recorder
    import torch
    import torch.distributed as dist

    if rank is None:
        rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    if world is None:
        world = dist.get_world_size() if dist.is_initialized() \
            else int(os.environ.get("WORLD_SIZE", "1"))
    os.makedirs(parts_dir, exist_ok=True)
    writer = PartWriter(part_path(parts_dir, rank))
    writer.write({"t": "start", "rank": rank, "world": world, "pid": os.getpid(),
                  "torch": torch.__version__.split("+")[0]})
    if dist.is_initialized():
        writer.write({"t": "backend", "requested": None, "used": str(dist.get_backend())})
    rec = Recorder(writer, rank, world)
    rec.install()
    try:
        yield rec
    except BaseException as e:
        writer.write({"t": "end", "outcome": "raised", "blocked": rec.inside,
                      "error": f"{type(e).__name__}: {e}"[:2000]})
        raise
    else:
        writer.write({"t": "end", "outcome": "finished", "error": None, "blocked": None})
    finally:
        rec.uninstall()
        writer.close()


def merge_parts(parts_dir: str, num_ranks: int, out: str, command: list[str] | None = None,
                timeout_s: float | None = None) -> dict:
    """Merge the parts ``recording`` wrote into a program, write it to ``out``, return it."""
    program = merge(parts_dir, num_ranks, command=command or [], timeout_s=timeout_s)
    write_program(program, out)
    return program

"""PyTorch pipelining CSV <-> Schedule: read and write the dialect of
``torch.distributed.pipelining.schedules`` (``_dump_csv`` / ``_load_csv``).

The dialect (learnt from PyTorch's ``_Action.__repr__`` / ``_Action.from_str``
and the artifacts in test/distributed/pipelining/artifacts):

- one row per rank, row r = rank r's ordered actions; a cell is one action,
  an empty cell is an idle slot (PyTorch writes ``None`` as an empty cell);
- a cell is ``<stage><TYPE><micro-batch>``: ``2F0``, ``7I3``, ``1W5``,
  ``3B2`` (full backward), ``0SEND_F1``, ``2RECV_F1``, ``1SEND_B0``,
  ``3RECV_B4``; or ``(<F-cell>;<B-or-I-cell>)OVERLAP_F_B`` for an overlapped
  pair (DualPipeV's F&B). Comm ops name the *local* stage, as in our IR;
- two forms: ``compute_only`` (F, B, I, W, OVERLAP_F_B only) and
  ``compute_comms`` (the same plus SEND_F / RECV_F / SEND_B / RECV_B).
  Reading decides the form from the cells: any comm cell makes it
  compute_comms.

What a CSV does not carry, and how reading infers it (as PyTorch does):

- num_ranks = the number of rows (a blank line is a rank with no actions);
- stages = 0 .. S-1 with S = 1 + the largest stage id in any cell; every stage
  must occur in some cell, and its rank is the row of the first cell that runs
  it (rows in order, then columns). A stage run on two rows is read as
  written: its cells on the other row are actions on a rank that does not hold
  their stage, which ``check`` reports as ``well-formed`` REFUTED naming both
  cells (``verifier.format.origin``);
- layer of stage s = s (no tied stages);
- one route through stages 0, 1, .., S-1 taken by every micro-batch;
- num_microbatches = 1 + the largest micro-batch id in any cell;
- name, family and params are empty, except that the layout is kept in
  ``params["pytorch_csv"] = {"form": ..., "idle": {"<rank>": [column, ..]},
  "newline": "\\r\\n"}`` (idle cells as 0-based column indices; ``newline``
  only when every line ends with CRLF, as ``csv.writer`` in PyTorch's
  ``_dump_csv`` writes), so that writing the schedule back in the same form
  reproduces the file byte for byte.

PyTorch's runtime puts UNSHARD / RESHARD / REDUCE_GRAD (FSDP's parameter
all-gather and free, and the data-parallel gradient reduction) into every
compute_comms dump. They move nothing between pipeline ranks, so they are read
as no-ops: no action of the schedule, but kept with their place in
``params["pytorch_csv"]["fsdp"] = {"<rank>": [[column, "0UNSHARD"], ..]}`` so
that writing back reproduces the file, and ``fsdp_note(schedule)`` says how
many there were (``check`` prints it). ``drop_fsdp=True`` (``convert
--drop-fsdp``) drops them without a trace. Inside an OVERLAP_F_B they are
refused.

Writing is the inverse and refuses, with one line naming what and why, every
schedule whose reading-back would differ: more than one route (two-direction
DualPipe), a route other than 0..S-1 or micro-batches other than 0..M-1, a
stage whose layer is not its id (tied stages), a stage or the last micro-batch
absent from every action, an action on a rank that does not hold its stage.
A ``Batch`` has no CSV form (PyTorch's runtime posts each communication cell
as its own ``batch_isend_irecv``, not waited): a BATCH of one op without a wait
means exactly that, and is written as its op (``flatten_batches=None``, the
default; ``trivial_batches(schedule)`` counts them). Any other batch is refused
unless ``flatten_batches=True``, which writes each batch's ops one by one in
order; that loses the grouping (under the ``nccl`` model a group is one unit,
separate ops are separate units) and a batch's wait point. An overlap is
written forward first. Output rows end with ``\\n`` (the form of the
artifacts in PyTorch's repository) unless ``newline`` says CRLF; reading
accepts both.

The parts: ``verifier.format.csv_dialect`` (the vocabulary both directions
share), ``verifier.format.csv_read`` (reading), ``verifier.format.csv_write``
(writing); this module is their public face and states the dialect.

Not covered: modelling PyTorch's FSDP and gradient-reduction actions (read
as no-ops, see above); PyTorch's own lowering passes (``_add_send_recv`` etc.) are not
reproduced here (``verifier.semantics.lowering`` is ours).
"""

from __future__ import annotations

from verifier.format.csv_dialect import (
    COMPUTE_COMMS,
    COMPUTE_ONLY,
    FSDP_KINDS,
    MAX_ID,
    PARAMS_KEY,
)
from verifier.format.csv_read import csv_to_schedule, fsdp_cells, fsdp_note
from verifier.format.csv_write import (
    check_expressible,
    flatten_batches,
    schedule_to_csv,
    trivial_batches,
)

__all__ = [
    "COMPUTE_COMMS",
    "COMPUTE_ONLY",
    "FSDP_KINDS",
    "MAX_ID",
    "PARAMS_KEY",
    "check_expressible",
    "csv_to_schedule",
    "flatten_batches",
    "fsdp_cells",
    "fsdp_note",
    "schedule_to_csv",
    "trivial_batches",
]

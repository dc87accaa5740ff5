"""The PyTorch CSV dialect's vocabulary, shared by reading and writing.

What it is: the names reading (``verifier.format.csv_read``) and writing
(``verifier.format.csv_write``) must agree on: the cell syntax, the action
types a cell may name, PyTorch's FSDP cells, the ``params`` key that keeps a
file's layout, and how a cell and an error quote are spelt.

Not covered: the dialect itself (stated in ``verifier.format.csvio``'s
docstring), reading and writing.
"""

from __future__ import annotations

import re
from typing import Iterable

from verifier.ir import Action, Batch, Comm, CommKind, Compute, ComputeKind, Overlap

PARAMS_KEY = "pytorch_csv"
COMPUTE_ONLY, COMPUTE_COMMS = "compute_only", "compute_comms"
MAX_ID = 10_000_000  # the same bound as the JSON schema's index

CELL = re.compile(r"([0-9]+)([A-Z_]+)([0-9]*)")  # <stage><TYPE><micro-batch>
COMPUTE_KINDS = {k.value: k for k in ComputeKind}
COMM_KINDS = {k.value: k for k in CommKind}
# PyTorch's FSDP and data-parallel cells: no action of the schedule (no-ops)
FSDP_WORDS = {
    "UNSHARD": "FSDP parameter unshard",
    "RESHARD": "FSDP parameter reshard",
    "REDUCE_GRAD": "gradient reduction",
}
FSDP_KINDS = frozenset(FSDP_WORDS)
EXPECTED = "F, B, I, W, SEND_F, RECV_F, SEND_B, RECV_B or (F;B)OVERLAP_F_B"


def show_cell(cell: str) -> str:
    """A cell quoted for an error message, cut at 60 characters."""
    return repr(cell if len(cell) <= 60 else cell[:57] + "...")


def cell_text(a: Compute | Comm) -> str:
    """The cell of one compute or communication op: ``2F0``, ``0SEND_F1``."""
    return f"{a.stage}{a.kind.value}{a.mb}"


def flat_ops(a: Action) -> Iterable[Compute | Comm]:
    """The ops of an action in order: an overlap's F then B, a batch's ops."""
    if isinstance(a, Overlap):
        return (a.f, a.b)
    if isinstance(a, Batch):
        return a.ops
    return (a,)

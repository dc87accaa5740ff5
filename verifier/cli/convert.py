"""`python -m verifier convert`: a schedule between our JSON format and PyTorch
pipelining CSV (both its compute_only and compute_comms forms).

What it does: reads IN (a file, or "-" for standard input) as JSON or CSV (by
extension, sniffed on stdin, or --from; as ``verifier.format.io.load_schedule``),
optionally drops communication (--compute-only) or flattens batches
(--flatten-batches), and writes OUT in the target format. What CSV infers and
cannot express is stated in ``verifier.format.csvio``; ``to_csv`` (also used by
``generate -o FILE.csv``) decides what to do with BATCHes: one op without a
wait is written as its op; other batches are written op by op when the
flattened schedule still checks VERIFIED under nccl (graph engine), else
refused.

Not covered: lowering a compute-only schedule to one with communication
(the checker lowers on its own; see verifier/semantics/lowering.py), checking.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from verifier.format.csvio import (
    check_expressible,
    csv_to_schedule,
    flatten_batches,
    fsdp_cells,
    schedule_to_csv,
    trivial_batches,
)
from verifier.errors import OutputError
from verifier.format import guard
from verifier.format.io import STDIN, detect_format, dumps_json, parse_json_text, read_text, sniff_format, source_name
from verifier.format.io import check_text_size
from verifier.ir import Batch, Schedule, ScheduleError
from verifier.semantics.lowering import strip_communication

_FSDP_CELL = re.compile(r"(?:^|,)\s*[0-9]+(?:UNSHARD|RESHARD|REDUCE_GRAD)[0-9]*\s*(?=,|$)", re.M)

HELP = "convert a schedule between JSON and PyTorch pipelining CSV"

DESCRIPTION = """\
Convert a schedule between the pp-schedule JSON format and PyTorch pipelining
CSV (torch.distributed.pipelining: _dump_csv / _load_csv), both ways.

CSV dialect: one row per rank, one action per cell ('2F0' = stage 2 forward
of micro-batch 0; B full backward, I input-grad, W weight-grad;
'0SEND_F1', '2RECV_F1', '1SEND_B0', '3RECV_B4'; '(0F7;7B3)OVERLAP_F_B');
an empty cell is an idle slot (kept, so CSV -> JSON -> CSV reproduces the
file). A CSV carries no placement or routes; reading infers them as PyTorch
does: stages 0..S-1 from the largest stage id, each stage on the rank whose
row runs it, layer = stage id, one route 0..S-1 for micro-batches 0..M-1
(M from the largest micro-batch id).

Refused with one error line (exit 2), naming what and why:
  - writing CSV from a schedule with two routes (two-direction DualPipe), a
    route other than 0..S-1, a stage whose layer is not its id (tied
    layers), or a stage with no action;
  - writing compute_comms CSV from a schedule whose BATCHes cannot be
    written op by op: PyTorch's runtime posts each communication cell as a
    batch of its own, not waited, so a BATCH of one op without a wait is
    written as its op (a note says so), and any other BATCH is written op by
    op only when the schedule so flattened still checks VERIFIED under the
    nccl model (graph engine; a note says so); otherwise refused, naming
    --flatten-batches (write op by op anyway) and --compute-only.
PyTorch's UNSHARD, RESHARD and REDUCE_GRAD cells (FSDP and data-parallel
collectives, in every compute_comms dump of PyTorch's runtime) move nothing
between pipeline ranks: they are read as no-ops and kept, with their column,
in params.pytorch_csv.fsdp; --drop-fsdp drops them instead.
The name, family and params of a JSON schedule are not written to CSV.
Line endings (LF, or CRLF as PyTorch's _dump_csv writes), idle cells and
FSDP cells of a CSV are kept in params.pytorch_csv of the JSON, so CSV ->
JSON -> CSV reproduces the file byte for byte.

output: the converted schedule in OUT; with '-o -' it goes to stdout (notes,
if any, to stderr), otherwise one line on stdout:
  wrote OUT: FORMAT FORM, R ranks, S stages, M micro-batches, N actions
  (then ", K batches" when there are, ", D UNSHARD/RESHARD/REDUCE_GRAD dropped"
  with --drop-fsdp, ", D UNSHARD/RESHARD/REDUCE_GRAD kept as no-ops" without)
then a line "note: ..." for each batch decision above.

OUT is checked before work starts (its directory exists and is writable, it
is not a directory); a failed write is exit 2 naming OUT. Largest input:
--max-bytes, --max-actions, --max-cells (see below).

exit codes:
  0  converted
  2  bad input (unreadable or malformed file, with file and place in the
     message), an unsupported conversion, or bad usage
"""


def add_arguments(p) -> None:
    p.add_argument("input", metavar="IN", help="schedule file: .json or .csv (or see --from); - reads stdin")
    p.add_argument(
        "-o", "--output", metavar="OUT", required=True,
        help="file to write; '-' writes to stdout",
    )
    p.add_argument(
        "--to", choices=("json", "csv"), default=None,
        help="output format (default: from OUT's extension, .csv or .json; for "
        "'-' or another extension, the format IN is not in)",
    )
    p.add_argument(
        "--from", dest="from_format", choices=("json", "csv"), default=None,
        help="input format (default: from IN's extension; .csv is CSV, anything else JSON)",
    )
    p.add_argument(
        "--compute-only", action="store_true",
        help="drop communication actions: CSV in PyTorch's compute_only form, "
        "JSON with computes only (without this flag CSV output is compute_only "
        "exactly when the schedule has no communication, else compute_comms)",
    )
    p.add_argument(
        "--drop-fsdp", action="store_true",
        help="when reading CSV, drop PyTorch's UNSHARD, RESHARD and REDUCE_GRAD "
        "cells (FSDP / data-parallel collectives; read as no-ops and kept in "
        "params.pytorch_csv without this flag); not needed to check a dump",
    )
    p.add_argument(
        "--flatten-batches", action="store_true",
        help="write each BATCH's ops one by one in order, unchecked (CSV has no "
        "batch form; this loses the grouping and the batch's wait point, which can "
        "change the meaning under the nccl communication model). Without it, "
        "batches are flattened only where that provably changes nothing (see above)",
    )
    guard.add_limit_arguments(p)


def to_csv(schedule: Schedule, *, compute_only: bool = False, flatten: bool = False,
           source: str | None = None) -> tuple[str, list[str], Schedule]:
    """(CSV text, notes, the schedule written) for ``schedule``; the BATCH
    policy of the DESCRIPTION.

    Raises ScheduleError (prefixed "cannot convert to CSV") where the CSV
    form cannot express the schedule.
    """
    s = schedule
    try:
        check_expressible(s, source)
    except ScheduleError as e:
        raise ScheduleError(f"cannot convert to CSV: {e.detail}", e.where) from None
    notes: list[str] = []
    n_trivial, n_batches = (0, 0) if compute_only else trivial_batches(s)
    if flatten and n_batches:
        notes.append(f"{n_batches} BATCHes written op by op (--flatten-batches; grouping "
                     "and wait points dropped, not checked)")
    elif n_batches and n_trivial == n_batches:
        notes.append(f"{n_batches} BATCHes of one op without a wait written as their op "
                     "(the same meaning: PyTorch posts each communication cell as a batch "
                     "of its own)")
    elif n_batches:
        flat = flatten_batches(s)
        # deferred: the checker (~15 ms) loads only when BATCHes are flattened, not for the parser
        from verifier.check.checker import Verdict, check

        res = check(flat, comm_model="nccl", engine="graph")
        if res.verdict is not Verdict.VERIFIED:
            failing = sorted({v.property.value for v in res.violations})
            why = (f" ({', '.join(failing)} fail{'s' if len(failing) == 1 else ''})"
                   if failing else "")
            r, k, a = next((r, k, a) for r, acts in enumerate(s.actions)
                           for k, a in enumerate(acts) if isinstance(a, Batch) and not
                           (len(a.ops) == 1 and not a.wait))
            raise ScheduleError(
                f"cannot convert to CSV: a BATCH of {len(a.ops)} op(s) (wait="
                f"{str(a.wait).lower()}) has no PyTorch CSV form (PyTorch posts each "
                f"communication cell as a batch of its own), and with its "
                f"{n_batches - n_trivial} BATCHes of several ops or with a wait written op "
                f"by op this schedule is {res.verdict.value} under nccl{why}; "
                "--compute-only writes the computes only (PyTorch's runtime adds its own "
                "communication), --flatten-batches writes the ops one by one anyway",
                f"{source}: rank {r} step {k}" if source else f"rank {r} step {k}",
            )
        notes.append(f"{n_batches} BATCHes written op by op ({n_batches - n_trivial} of "
                     "several ops or with a wait): PyTorch posts each communication cell as "
                     "a batch of its own; the schedule so flattened checks VERIFIED under "
                     "nccl (graph engine)")
        flatten = True
    if flatten or (n_batches and n_trivial == n_batches):
        s = flatten_batches(s)
    try:
        text = schedule_to_csv(s, compute_only=True if compute_only else None, source=source)
    except ScheduleError as e:
        raise ScheduleError(f"cannot convert to CSV: {e.detail}", e.where) from None
    return text, notes, s


def _target(args, in_fmt: str) -> str:
    if args.to:
        return args.to
    out = str(args.output).lower()
    if out.endswith(".csv"):
        return "csv"
    if out.endswith(".json"):
        return "json"
    return "json" if in_fmt == "csv" else "csv"


def _write(path: str, text: str, stdout) -> None:
    if path == "-":
        stdout.write(text)
        return
    target = Path(path)
    if target.is_dir():
        raise OutputError("is a directory, expected a file to write", path)
    if target.exists() and not target.is_file():  # a device or FIFO: never replace it
        guard.write_output(path, text.encode("utf-8", "backslashreplace"), "-o")
        return
    parent = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=parent)
    except FileNotFoundError:
        raise OutputError(f"cannot write: no directory {str(parent)!r}", path) from None
    except OSError as e:
        raise OutputError(f"cannot write: {e.strerror}", path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="") as fp:
            fp.write(text)
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"cannot write: {e.strerror}", path) from None


def run(args, stdout, stderr) -> int:
    guard.check_output_path(args.output, "-o")
    limits = guard.limits_of(args)
    source = source_name(args.input)
    text = read_text(args.input, max_bytes=limits.max_bytes)
    in_fmt = args.from_format or (
        sniff_format(text) if args.input == STDIN else detect_format(args.input))

    check_text_size(text, in_fmt, limits, source)
    dropped = kept = 0
    notes: list[str] = []
    if in_fmt == "csv":
        s = csv_to_schedule(text, source=source, drop_fsdp=args.drop_fsdp)
        dropped = len(_FSDP_CELL.findall(text)) if args.drop_fsdp else 0
        kept = fsdp_cells(s)
    else:
        s = parse_json_text(text, source)
    guard.check_size(s, limits, source)
    to = _target(args, in_fmt)
    if args.compute_only:
        s = strip_communication(s)
    if to == "csv":
        text, notes, s = to_csv(s, compute_only=args.compute_only,
                                flatten=args.flatten_batches, source=source)
        form = "compute_only" if (args.compute_only or s.is_compute_only) else "compute_comms"
    else:
        if args.flatten_batches:
            s = flatten_batches(s)
        text = dumps_json(s)
        form = "compute-only" if s.is_compute_only else "with communication"
    _write(args.output, text, stdout)
    if args.output != "-":
        n_batch = sum(isinstance(a, Batch) for acts in s.actions for a in acts)
        extra = f", {n_batch} batches" if n_batch else ""
        if dropped:
            extra += f", {dropped} UNSHARD/RESHARD/REDUCE_GRAD dropped"
        if kept:
            extra += f", {kept} UNSHARD/RESHARD/REDUCE_GRAD kept as no-ops"
        stdout.write(
            f"wrote {args.output}: {to} {form}, {s.num_ranks} ranks, {s.num_stages} stages, "
            f"{s.num_microbatches} micro-batches, {s.num_actions} actions{extra}\n"
        )
    for note in notes:
        (stdout if args.output != "-" else stderr).write(f"note: {note}\n")
    return 0

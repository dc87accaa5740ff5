"""`python -m verifier convert`: a schedule between our JSON format and PyTorch
pipelining CSV (both its compute_only and compute_comms forms).

What it does: reads IN (a file, or "-" for standard input) as JSON or CSV (by
extension, sniffed on stdin, or --from; as ``verifier.io.load_schedule``), optionally drops communication (--compute-only) or
flattens batches (--flatten-batches), and writes OUT in the target format.
What CSV infers and cannot express is stated in ``verifier.csvio``.

Not covered: lowering a compute-only schedule to one with communication
(the checker lowers on its own; see verifier/lowering.py), checking.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from verifier.csvio import csv_to_schedule, flatten_batches, schedule_to_csv
from verifier.io import STDIN, detect_format, dumps_json, parse_json_text, read_text, sniff_format
from verifier.ir import Batch, ScheduleError
from verifier.lowering import strip_communication

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
  - writing compute_comms CSV from a schedule with BATCH actions, unless
    --flatten-batches (or --compute-only);
  - reading PyTorch actions this verifier does not model (UNSHARD, RESHARD,
    REDUCE_GRAD; PyTorch's runtime puts them in every compute_comms dump):
    the message names the row (rank) and column; --drop-fsdp drops them.
The name, family and params of a JSON schedule are not written to CSV.
Line endings (LF, or CRLF as PyTorch's _dump_csv writes) and idle cells of
a CSV are kept in params.pytorch_csv of the JSON, so CSV -> JSON -> CSV
reproduces the file byte for byte.

output: the converted schedule in OUT; with '-o -' it goes to stdout and
nothing else is printed, otherwise one line on stdout:
  wrote OUT: FORMAT FORM, R ranks, S stages, M micro-batches, N actions
  (then ", K batches" when there are, ", D UNSHARD/RESHARD/REDUCE_GRAD dropped"
  with --drop-fsdp)

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
        "actions (data-parallel collectives this verifier does not model) instead "
        "of refusing them; what is checked afterwards says nothing about them",
    )
    p.add_argument(
        "--flatten-batches", action="store_true",
        help="write each BATCH's ops one by one in order (CSV has no batch form; "
        "this loses the grouping and the batch's wait point, which changes the "
        "meaning under the nccl communication model)",
    )


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
        raise ScheduleError("is a directory, expected a file to write", path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=parent)
    except FileNotFoundError:
        raise ScheduleError(f"cannot write: no directory {str(parent)!r}", path) from None
    except OSError as e:
        raise ScheduleError(f"cannot write: {e.strerror}", path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fp:
            fp.write(text)
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ScheduleError(f"cannot write: {e.strerror}", path) from None


def run(args, stdout, stderr) -> int:
    if args.output != "-" and Path(args.output).is_dir():
        raise ScheduleError("is a directory, expected a file to write", str(args.output))
    source = "<stdin>" if args.input == STDIN else str(args.input)
    text = read_text(args.input)
    in_fmt = args.from_format or (
        sniff_format(text) if args.input == STDIN else detect_format(args.input))
    dropped = 0
    if in_fmt == "csv":
        s = csv_to_schedule(text, source=source, drop_fsdp=args.drop_fsdp)
        dropped = len(_FSDP_CELL.findall(text)) if args.drop_fsdp else 0
    else:
        s = parse_json_text(text, source)
    to = _target(args, in_fmt)
    if args.compute_only:
        s = strip_communication(s)
    if args.flatten_batches:
        s = flatten_batches(s)
    if to == "csv":
        try:
            text = schedule_to_csv(
                s, compute_only=True if args.compute_only else None, source=source
            )
        except ScheduleError as e:
            raise ScheduleError(f"cannot convert to CSV: {e.detail}", e.where) from None
        form = "compute_only" if (args.compute_only or s.is_compute_only) else "compute_comms"
    else:
        text = dumps_json(s)
        form = "compute-only" if s.is_compute_only else "with communication"
    _write(args.output, text, stdout)
    if args.output != "-":
        n_batch = sum(isinstance(a, Batch) for acts in s.actions for a in acts)
        extra = f", {n_batch} batches" if n_batch else ""
        if dropped:
            extra += f", {dropped} UNSHARD/RESHARD/REDUCE_GRAD dropped"
        stdout.write(
            f"wrote {args.output}: {to} {form}, {s.num_ranks} ranks, {s.num_stages} stages, "
            f"{s.num_microbatches} micro-batches, {s.num_actions} actions{extra}\n"
        )
    return 0

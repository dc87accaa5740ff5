"""`python -m verifier generate`: write a generated schedule as JSON.

What it is: the command-line face of ``verifier.generators.generate``. It
prints the schedule in the project's JSON format (``verifier.format.io``) on stdout,
or writes it to ``-o FILE`` (PyTorch CSV when FILE ends in .csv).

What it does not cover: checking the schedule (``check``), drawing it
(``show``), timing it (``analyze``).
"""

from __future__ import annotations

import argparse
from typing import IO

from verifier.cli.convert import _write, to_csv
from verifier.format.csvio import flatten_batches
from verifier.generators import DEFAULT_INTERLEAVED_CHUNKS, FAMILIES, generate, resolve_family
from verifier.errors import OutputError
from verifier.format.guard import DEFAULT, Limits, check_generated_size, check_output_path, positive_int, printable
from verifier.format.io import dump_json, save_schedule
from verifier.ir import ScheduleError

# 1f1b 100 x 1000 (100,000 cells) takes 13 s and 390 MB; 1000 x 2000 ran > 120 s, 2 GB
GENERATE_MAX_CELLS = 262_144

HELP = "generate a schedule (1F1B, zero-bubble, DualPipe, ...) as JSON"

DESCRIPTION = f"""\
Generate the schedule of one family and write it as JSON (stdout unless -o).

families: {", ".join(FAMILIES)}
  gpipe, 1f1b, zb-h1     one stage per rank (route 0..R-1)
  interleaved-1f1b, interleaved-zb, looped-bfs
                         --chunks V stages per rank, round-robin (default {DEFAULT_INTERLEAVED_CHUNKS})
  zbv, dualpipev         two stages per rank in a V
  dualpipe               two routes in opposite directions, tied mirrored stages
NAME may also be PyTorch's schedule class name, case-insensitive, with or
without the Schedule prefix: GPipe, 1F1B, Interleaved1F1B,
InterleavedZeroBubble (interleaved-zb), LoopedBFS (looped-bfs), ZBVZeroBubble
(zbv), DualPipeV. Compute orders equal torch 2.13's pipeline_order for those
classes (1F1B: its runtime's order; see verifier/generators/pipelines.py).

Without --compute-only the schedule carries its communication: DeepSeek's own
batches for dualpipe/dualpipev (Batch(wait=True) before every compute), the
shared lowering for the other families.

rules: dualpipe needs an even number of ranks and an even
num_microbatches >= 2*num_ranks; dualpipev needs num_microbatches >= 2*num_ranks;
interleaved-1f1b and interleaved-zb need num_microbatches to be a multiple of
max(1, num_microbatches // num_ranks).

output: the schedule document (JSON; PyTorch CSV if -o ends in .csv, written
as `convert` writes it: BATCHes op by op only where that changes nothing, a
"note:" line on stderr saying so; refused where it would, exit 2);
nothing else on stdout.
A size over --max-cells (ranks x stages per rank x micro-batches, default
{GENERATE_MAX_CELLS}) is refused before anything is built; -o is checked before
work starts, and a failed write is exit 2 naming the path.

exit codes: 0 written, 2 bad parameters or usage (one line on stderr).
"""


def _family(name: str) -> str:
    """argparse type of NAME: a family or PyTorch's class name for one."""
    try:
        return resolve_family(name)
    except ScheduleError as e:
        raise argparse.ArgumentTypeError(e.detail) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("family", metavar="NAME", type=_family,
                        help="schedule family: " + ", ".join(FAMILIES)
                        + " (or PyTorch's class name, e.g. ScheduleInterleaved1F1B)")
    parser.add_argument("--ranks", type=int, required=True, metavar="R",
                        help="number of ranks (pipeline devices)")
    parser.add_argument("--microbatches", type=int, required=True, metavar="M",
                        help="number of micro-batches")
    parser.add_argument("--chunks", type=int, default=None, metavar="V",
                        help="stages per rank (interleaved-1f1b, interleaved-zb, looped-bfs; "
                        "others accept only their own fixed count)")
    parser.add_argument("--compute-only", action="store_true",
                        help="compute actions only, no communication")
    parser.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="write to FILE instead of stdout (checked before work starts)")
    parser.add_argument("--flatten-batches", action="store_true",
                        help="write each BATCH's ops one by one, unchecked (as `convert "
                        "--flatten-batches`; loses grouping and wait points)")
    parser.add_argument("--max-cells", type=positive_int, default=GENERATE_MAX_CELLS, metavar="N",
                        help="largest ranks x stages per rank x micro-batches generated "
                        f"(default {GENERATE_MAX_CELLS}); larger is refused up front")


def stages_per_rank(family: str, num_chunks: int | None) -> int:
    """How many stages a generated schedule of ``family`` puts on each rank (at most)."""
    if family in ("gpipe", "1f1b", "zb-h1"):
        return 1
    if family in ("zbv", "dualpipev", "dualpipe"):
        return 2
    return num_chunks or max(DEFAULT_INTERLEAVED_CHUNKS, 2)


def run(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    check_output_path(args.output, "-o")
    if args.ranks >= 1 and args.microbatches >= 1 and (args.chunks or 1) >= 1:
        check_generated_size(args.ranks, args.microbatches,
                             stages_per_rank(args.family, args.chunks), limits_cells(args))
    schedule = generate(
        args.family,
        args.ranks,
        args.microbatches,
        num_chunks=args.chunks,
        compute_only=args.compute_only,
    )
    if args.flatten_batches and not str(args.output or "").lower().endswith(".csv"):
        schedule = flatten_batches(schedule)
    if args.output is None:
        dump_json(schedule, stdout)
        return 0

    if str(args.output).lower().endswith(".csv"):
        text, notes, _ = to_csv(schedule, compute_only=args.compute_only,
                                flatten=args.flatten_batches, source=args.output)
        _write(args.output, text, stdout)
        for note in notes:
            stderr.write(f"note: {note}\n")
        return 0
    try:
        save_schedule(schedule, args.output)
    except OSError as e:
        raise OutputError(f"cannot write: {e.strerror}", f"-o {printable(args.output)}") from None
    return 0


def limits_cells(args: argparse.Namespace):
    return Limits(max_cells=args.max_cells)

"""`python -m verifier check`: prove a schedule correct, or show why it is not.

What it is: the command-line face of ``verifier.check.checker.check``, and the one
place its result is rendered (text or JSON; specs/check-output.md is the
normative description of both). It loads the file through
``verifier.format.io.load_schedule`` (JSON, or PyTorch CSV by extension).

What it does not cover: deciding anything (verifier.check.checker), drawing the
schedule (``show``), timing it (``analyze``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO

from verifier.check.checker import AUTO_Z3_TIMEOUT_MS, COMM_MODELS, ENGINES, check
from verifier.format import guard
from verifier.errors import FlagError
from verifier.format.io import paused_gc, source_name
from verifier.format.program import load_document
from verifier.program import Program
from verifier.cli.check_program import run_program
from verifier.check.program import program_models
from verifier.semantics.lowering_torch import LOWERINGS
from verifier.ir import ScheduleError
from verifier.cli.check_json import OUTPUT_VERSION, to_json
from verifier.cli.check_text import render_text
from verifier.cli.check_models import all_json, check_all, exit_code, render_all
from verifier.format.units import (
    ActivationBytes,
    MemoryLimit,
    parse_activation_bytes,
    parse_memory_limit,
    require_sizes,
)
from verifier.check.z3budget import DEFAULT_TIMEOUT_MS

HELP = "prove a schedule correct (7 properties) or print counterexamples"

__all__ = ["OUTPUT_VERSION", "add_arguments", "render_text", "run", "to_json"]

DESCRIPTION = """\
Check a schedule file (JSON, or PyTorch pipelining CSV by extension) against
the seven properties of specs/SEMANTICS.md under one communication model, and
print a verdict with counterexamples. A compute-only schedule is lowered first
(verifier/semantics/lowering.py; with --lowering torch where PyTorch's runtime
posts its sends and receives) and the lowered schedule is what is checked.

properties (ids):
  well-formed       ids in range, each action on the rank holding its stage
  exactly-once      per (stage, micro-batch): one F, and one B or one I + one W
  dependencies      each rank's order allows the data flow (receive before use,
                    producer before consumer, send after its compute, W after I)
  message-matching  FIFO pairing per ordered rank pair, equal payloads, none left over
  deadlock-free     the schedule terminates under the communication model
  overlap-legal     an OVERLAP pairs an F with a B/I of another micro-batch
  memory            peak live activations per rank <= --memory-limit (without it:
                    the peak is reported and the property holds); in activation
                    units, or in bytes with --activation-bytes (a limit such as
                    80GiB; sizes per stage given or measured by `python -m
                    reference activations`; decided statically, exact)

communication models (--comm-model):
  nccl   (default, strictest) one comm stream per rank: its units (a plain op,
         or a BATCH as a whole) run one after another in post order; a send
         completes only together with its matched receive, once both units are
         at the head of their streams; a BATCH with wait blocks its rank until
         all its ops complete. What NCCL does with P2P kernels on one stream.
  nccl-pairs  as nccl, but a plain op is on the stream of its peer pair and
         every BATCH on the group's stream (PyTorch's ProcessGroupNCCL with lazy
         initialisation, no device_id).
  gloo   a send completes only together with its matched receive, once both
         are posted; no stream order; a BATCH with wait blocks until all its
         ops, sends included, complete.
  eager  sends are buffered and complete when posted; a receive completes once
         its matched send is posted (what PyTorch's schedule simulator assumes).
  Deadlock-free under nccl implies it under nccl-pairs, then gloo, then eager.
  all    one row per model (terminates / deadlocks / unknown, each model
         decided on its own; the cycle of each that deadlocks) and where a
         refuted schedule would still terminate ("deadlocks under nccl,
         terminates under eager: tests with small tensors will pass and NCCL
         at production message sizes ... can hang"), then the full report
         under nccl; BATCHes grouped differently on two ranks are listed as an
         NCCL warning. Exit 1 if any model refutes, 3 if any is unknown or the
         rows break the order above. --engine z3|both: a model or an instance
         Z3 does not take is decided by the graph engine, and its row says so.

recorded programs (pp-schedule 1.1, "kind": "program", written by a recorder
from a real run): checked for well-formed, message-matching (shape, dtype,
payload of FIFO pairs per group and rank pair), collective-order and
deadlock-free by a replay under every model (--comm-model all lists
every model's outcome); counterexamples name the rank, op index and source line
("rank 2 blocks in train.py:88 `recv` from rank 3 (4x1024 bfloat16) while
..."), and "models:" lists every model's outcome. --engine: auto and graph
run the replay (engine: replay), z3 a Z3 encoding of the same rules (engine:
z3), both both (a disagreement is UNKNOWN, exit 3); each engine's answer (an
order of returns, or the state the program stops in) is validated by an
independent certificate checker (verifier/check/certificate/program.py); a
rejected one is UNKNOWN. specs/SEMANTICS.md, "Recorded programs".

engines (--engine):
  auto   (default) the graph engine first: a failing static property or a
         deadlock it finds is the answer (engine: graph), without waiting for
         z3's minimised unsat core (--engine z3 gives that core); otherwise z3
         proves it when the schedule fits its budget, else graph decides; if
         z3 gives up (10 s unless --timeout) the graph engine decides (noted)
  graph  happens-before graph, linear time, any size
  z3     the declarative encoding (verifier/check/z3engine.py); solver limits give UNKNOWN
  both   run both; a disagreement is UNKNOWN (and a bug to report)
  Every witness order and cycle of waits is validated by an independent
  certificate checker (verifier/check/certificate/); a rejected certificate gives
  UNKNOWN, never a pass.

text output (default):
  line 1    VERDICT under MODEL (engine: ENGINE)      VERDICT: VERIFIED|REFUTED|UNKNOWN
  line 2    schedule: NAME, R ranks, M micro-batches, N steps[, lowered from compute-only]
  then      "note: ..." lines, if any: why auto fell back to the graph
            engine; PyTorch FSDP cells (UNSHARD, RESHARD, REDUCE_GRAD) of a
            CSV, read as no-ops
  then      one line per property: "  ID  STATUS  detail"
            STATUS: holds | FAILS | unknown | not-checked
  then      "why unknown:" (solver limit, engine disagreement, rejected
            certificate) if anything is unknown, then
            "counterexamples:" and one line per violation, "  [ID] message",
            places written "rank R step S" (".J" = J-th op of a BATCH), or
            in the user's coordinates: a CSV's row, column and cell ("rank 2
            (CSV row 3, column 7: `2F5`)"), and for a compute-only schedule
            the lowered step it was checked as ("...; lowered step 21)"; a
            send/receive the lowering inserted names the compute it was
            inserted for); a stage on two CSV rows names both cells;
            actions in PyTorch's notation ("2F5" = F of stage 2, micro-batch
            5; "0SEND_F1"; "(2F5;5B1)OVERLAP_F_B"; "BATCH[..]"); a
            deadlock is followed by its cycle of waits, one numbered hop a line:
            "    1. A waits for B", and the next hop starts at B.
  --verbose adds timings and a step x rank grid (rows are steps) with the
            steps named by a counterexample marked with '*'.

JSON output (--format json): one object, specs/check-output.md:
  {"format": "pp-check", "version": "1.0", "verdict", "comm_model", "engine",
   "engine_note", "notes", "schedule": {...}, "properties": {ID: {"status",
   "decided_by", "violations": [...]}}, "counterexamples": [...], "cycle": {...}|null,
   "memory": {"peaks", "limit", "unit"[, "activation_bytes"]}, "certificate",
   "z3_core", "witness"
   (with --witness), "stats": {"seconds", ...}}

exit codes:
  0  VERIFIED (every property holds under the model)
  1  REFUTED (at least one property fails; counterexamples printed)
  2  bad input or usage (one line on stderr naming file, place and value)
  3  UNKNOWN (a solver limit was hit, engines disagree, or a certificate was
     rejected; never a pass)

Under --format json a bad input is one JSON object on stdout as well
({"format": "pp-error", ...}, specs/check-output.md), still exit 2.

counterexamples: at most --max-counterexamples are printed (default 100);
the rest are counted ("... and K more counterexamples"; JSON:
"counterexamples_total" and "counterexamples_omitted").

progress lines go to stderr only when stderr is a terminal or with --progress.

""" + guard.LIMITS_DOC + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="schedule file (.json, or .csv in PyTorch's format; - reads stdin)")
    p.add_argument("--comm-model", choices=(*COMM_MODELS, *_PROGRAM_ONLY), default="nccl",
                   help="communication model, strictest first: " + ", ".join(COMM_MODELS)
                   + " (default nccl), or all: one row per model")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="decision engine: auto (default), graph, z3, both")
    p.add_argument("--lowering", choices=LOWERINGS, default="ppverify",
                   help="how a compute-only schedule (e.g. a PyTorch CSV without SEND/RECV) gets "
                   "its communication before it is checked: ppverify (default; "
                   "verifier/semantics/lowering.py) or torch: where torch.distributed.pipelining's "
                   "runtime posts it (its _add_send_recv, restated in "
                   "verifier/semantics/lowering_torch.py); torch refuses a schedule that already "
                   "has communication or more than one route (exit 2)")
    p.add_argument("--memory-limit", type=_limit, default=None, metavar="N|SIZE",
                   help="max live activations per rank: a plain number N is in units of one "
                   "stage's activation for one micro-batch; a size with a byte unit (80GiB, "
                   "512MiB, 1.5e9B, 2GB) is bytes and needs --activation-bytes; without it the "
                   "peak is reported and passes")
    p.add_argument("--activation-bytes", type=_sizes, default=None, metavar="SIZES",
                   help="bytes of one stage's activation for one micro-batch: SIZE for every "
                   "stage (2GiB; plain numbers are bytes here), S=SIZE,.. per stage "
                   "(0=1GiB,1=2GiB; one plain SIZE covers the rest), or FILE.json as written "
                   "by `python -m reference activations` (measured on your model); peaks are "
                   "then reported in bytes and --memory-limit is a size")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="output format (default text)")
    p.add_argument("--verbose", action="store_true",
                   help="text: add timings and a step x rank grid with failing steps marked")
    p.add_argument("--witness", action="store_true",
                   help="also print the witness order (rank, step) of a VERIFIED result")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                   help=f"wall-clock limit for the z3 engine, 0 < SECONDS <= {MAX_TIMEOUT_S} "
                   f"(default {AUTO_Z3_TIMEOUT_MS // 1000} s under --engine auto, where hitting "
                   "it leaves the decision to the graph engine; "
                   f"{DEFAULT_TIMEOUT_MS // 1000} s under --engine z3 or both, where hitting "
                   "it gives UNKNOWN, exit 3)")
    p.add_argument("--rlimit", type=_rlimit, default=None, metavar="N",
                   help="deterministic resource limit for the z3 engine (z3's rlimit, "
                   f"1..{MAX_RLIMIT}; hitting it gives UNKNOWN, exit 3)")
    p.add_argument("--progress", action="store_true",
                   help="print progress lines to stderr even when it is not a terminal")
    guard.add_limit_arguments(p, "max_bytes", "max_actions", "max_cells", "max_counterexamples")


# what --comm-model takes besides the models: "all" (schedules and recorded
# programs), and any model a recorded program is replayed under that the engines lack
_PROGRAM_ONLY = tuple(m for m in (*program_models(), "all") if m not in COMM_MODELS)

MAX_TIMEOUT_S = 4294967  # z3 takes a timeout of at most 2**32-1 ms
MAX_RLIMIT = 2**32 - 1  # z3's rlimit is an unsigned 32-bit count


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {guard.bounded(text)!r}") from None
    if not 0 < v <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"expected seconds in (0, {MAX_TIMEOUT_S}] (z3 counts milliseconds in 32 bits), "
            f"got {guard.bounded(text)!r}")
    return v


def _rlimit(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {guard.bounded(text)!r}") from None
    if not 1 <= v <= MAX_RLIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer in 1..{MAX_RLIMIT} (z3's "
                                         f"limit is 32 bits), got {v}")
    return v


def _limit(text: str) -> MemoryLimit:
    try:
        return parse_memory_limit(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number >= 0 (activations) or a size such as 80GiB, got {text!r}") from None


def _sizes(text: str) -> ActivationBytes:
    try:
        return parse_activation_bytes(text)
    except ScheduleError as e:
        raise argparse.ArgumentTypeError(e.detail) from None


def memory_args(args, schedule) -> tuple[float | None, dict[int, float] | None]:
    """(limit, bytes per stage) for ``check`` from --memory-limit and
    --activation-bytes; FlagError for bytes without sizes and for sizes with a
    limit in activations."""
    limit, sizes = args.memory_limit, args.activation_bytes
    require_sizes(limit, sizes)
    if sizes is None:
        return (None if limit is None else limit.value), None
    if limit is not None and not limit.in_bytes:
        raise FlagError(
            f"{limit.text} is in activations but --activation-bytes is given; write the limit "
            "as a size (e.g. 80GiB), or drop --activation-bytes", "--memory-limit")
    return (None if limit is None else limit.value), sizes.for_schedule(schedule)


def run(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    show_progress = args.progress or (hasattr(stderr, "isatty") and stderr.isatty())

    def progress(line: str) -> None:
        if show_progress:
            stderr.write(f"check: {line}\n")
            stderr.flush()

    limits = guard.limits_of(args)
    source = source_name(args.file)
    # one pause of the cyclic collector from reading to writing: its passes
    # over the schedule's many small acyclic objects free nothing
    with paused_gc():
        return _run(args, stdout, source, progress, limits)


def _run(args: argparse.Namespace, stdout: IO[str], source: str, progress, limits) -> int:
    progress(f"loading {source}")
    loaded = load_document(args.file, limits=limits)
    if isinstance(loaded, Program):  # a recorded program (pp-schedule 1.1): its own checker
        return run_program(args, loaded, stdout, source)
    schedule, origin = loaded
    memory_limit, sizes = memory_args(args, schedule)
    kw = dict(memory_limit=memory_limit, activation_bytes=sizes, lowering=args.lowering,
              z3_timeout_ms=None if args.timeout is None else max(1, int(args.timeout * 1000)),
              z3_rlimit=args.rlimit, progress=progress)
    if args.comm_model == "all":
        return _run_all(args, stdout, source, schedule, origin, limits, kw)
    with guard.naming(source):
        result = check(schedule, comm_model=args.comm_model, engine=args.engine, **kw)
    if result.lowered:
        origin = origin.with_lowering(result.input_schedule, result.schedule)
    cap = limits.max_counterexamples
    if args.format == "json":
        doc = to_json(result, source=source, with_witness=args.witness, origin=origin,
                      max_counterexamples=cap)
        stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        stdout.write(render_text(result, verbose=args.verbose, with_witness=args.witness,
                                 source=source, origin=origin, max_counterexamples=cap))
    return result.verdict.exit_code


def _run_all(args, stdout, source, schedule, origin, limits, kw) -> int:
    """``--comm-model all``: one check per model (verifier.cli.check_models)."""
    with guard.naming(source):
        rows = check_all(schedule, engine=args.engine, **kw)
    first = rows[0].result
    if first.lowered:
        origin = origin.with_lowering(first.input_schedule, first.schedule)
    cap = limits.max_counterexamples
    if args.format == "json":
        doc = all_json(rows, source=source, origin=origin, with_witness=args.witness,
                       max_counterexamples=cap)
        stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        stdout.write(render_all(rows, source=source, origin=origin, verbose=args.verbose,
                                with_witness=args.witness, max_counterexamples=cap))
    return exit_code(rows)


if __name__ == "__main__":  # pragma: no cover
    from verifier.cli.app import main

    sys.exit(main(["check", *sys.argv[1:]]))

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

from verifier.check.checker import (
    AUTO_Z3_TIMEOUT_MS,
    COMM_MODELS,
    ENGINES,
    CheckResult,
    Event,
    EventKind,
    PropertyId,
    Status,
    Violation,
    check,
)
from verifier.format import guard
from verifier.errors import FlagError
from verifier.format.io import paused_gc, source_name
from verifier.format.program import load_document
from verifier.program import Program
from verifier.cli.check_program import run_program
from verifier.check.program import program_models
from verifier.ir import Batch, ScheduleError, action_text, loc
from verifier.format.origin import Origin
from verifier.format.units import (
    ActivationBytes,
    MemoryLimit,
    format_bytes,
    parse_activation_bytes,
    parse_memory_limit,
    require_sizes,
)
from verifier.format.csvio import fsdp_note
from verifier.check.z3budget import DEFAULT_TIMEOUT_MS

HELP = "prove a schedule correct (7 properties) or print counterexamples"

OUTPUT_VERSION = "1.0"

DESCRIPTION = """\
Check a schedule file (JSON, or PyTorch pipelining CSV by extension) against
the seven properties of specs/SEMANTICS.md under one communication model, and
print a verdict with counterexamples. A compute-only schedule is lowered first
(verifier/semantics/lowering.py) and the lowered schedule is what is checked.

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
  eager  sends are buffered and complete when posted; a receive completes once
         its matched send is posted (what PyTorch's schedule simulator assumes).
  Deadlock-free under nccl implies deadlock-free under eager.

recorded programs (pp-schedule 1.1, "kind": "program", written by a recorder
from a real run): checked for well-formed, message-matching (shape, dtype,
payload of FIFO pairs per group and rank pair), collective-order and
deadlock-free by a replay under every model (--comm-model also takes gloo,
nccl-pairs and all); counterexamples name the rank, op index and source line
("rank 2 blocks in train.py:88 `recv` from rank 3 (4x1024 bfloat16) while
..."), and "models:" lists every model's outcome. specs/SEMANTICS.md,
"Recorded programs".

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
  certificate checker (verifier/check/certificate.py); a rejected certificate gives
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
  3  UNKNOWN (a solver limit was hit, or engines disagree; never a pass)

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
                   help="communication model: nccl (default, strictest) or eager; a recorded "
                   "program also takes gloo, nccl-pairs and all")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="decision engine: auto (default), graph, z3, both")
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


# models a recorded program is replayed under that schedules do not take yet
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
    --activation-bytes; ScheduleError for bytes without sizes, FlagError for sizes
    with a limit in activations."""
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
    with guard.naming(source):
        result = check(
            schedule,
            comm_model=args.comm_model,
            engine=args.engine,
            memory_limit=memory_limit,
            activation_bytes=sizes,
            z3_timeout_ms=None if args.timeout is None else max(1, int(args.timeout * 1000)),
            z3_rlimit=args.rlimit,
            progress=progress,
        )
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


# ---------------------------------------------------------------- text


def _at(e: Event) -> str:
    return f"{loc(e.rank, e.step)} {e.action}"


def _msg(e: Event) -> str:
    """An op-done event: the op, and its matched partner when it has one."""
    here = f"{e.action} at {loc(e.rank, e.step, e.sub)}"
    if e.peer is None:
        return here
    pr, pk, psub = e.peer
    return f"{here} with its matched {e.peer_action} at {loc(pr, pk, psub)}"


def _is_comm(e: Event) -> bool:
    return e.action.startswith(("SEND", "RECV", "BATCH"))


def hop_text(h, merge: bool = False) -> str | None:
    """One hop of a cycle of waits as a sentence; None when ``merge`` folds it
    into the next one (a plain op's unit completing is that op completing; a
    wait-BATCH returning is it completing)."""
    w, t = h.waiter, h.target
    K = EventKind
    if w.kind is K.BEGIN:
        if t.kind in (K.BEGIN, K.RETURN) and t.rank == w.rank and t.step == w.step - 1:
            what = "return" if t.kind is K.RETURN else ("be posted" if _is_comm(t) else "run")
            return f"{_at(w)} comes after {_at(t)}, which must {what} first"
        if t.kind is K.BEGIN:
            return f"{_at(w)} needs {_at(t)} to run first"
        if t.kind is K.OP_DONE:
            return f"{_at(w)} needs its input, the message {_msg(t)}, to complete first"
        if t.kind is K.NEVER:
            return f"{_at(w)} needs an input that rank {w.rank} never receives or computes"
    if w.kind is K.RETURN:
        if merge and t.kind is K.UNIT_DONE:
            return None
        return f"{_at(w)} returns only once its ops complete"
    if w.kind is K.ACTIVE:
        if t.kind is K.BEGIN:
            return f"{_at(w)} enters rank {w.rank}'s comm stream only once rank {w.rank} posts it"
        if t.kind is K.UNIT_DONE:
            return (f"{_at(w)} is queued on rank {w.rank}'s comm stream behind {_at(t)}, "
                    "which must complete first")
    if w.kind is K.UNIT_DONE and t.kind is K.OP_DONE:
        if merge and not w.action.startswith("BATCH"):
            return None
        return f"{_at(w)} completes only once its op {_msg(t)} does"
    if w.kind is K.OP_DONE:
        if t.kind is K.NEVER:
            return (f"{w.action} at {loc(w.rank, w.step, w.sub)} has no matched partner "
                    "(FIFO on its rank pair), so it never completes")
        if t.kind is K.ACTIVE:
            return (f"{_msg(w)} complete together, once both head their ranks' comm streams: "
                    f"{_at(t)} must get there first")
        if t.kind is K.BEGIN:
            return f"{_msg(w)} completes only once rank {t.rank} posts {t.action} at {loc(t.rank, t.step)}"
    return f"{w.kind.value} of {_at(w)} waits for {t.kind.value} of {_at(t)}"


def hop_lines(result: CheckResult, origin: Origin | None = None) -> list[str]:
    """The cycle of waits for the text output, one line a hop (internal hops
    merged), places in the user's coordinates when ``origin`` is given."""
    if result.cycle is None:
        return []
    lines = [hop_text(h, merge=True) for h in result.cycle.hops]
    return [x if origin is None else origin.rewrite(x) for x in lines if x is not None]


def user_message(v: Violation, origin: Origin | None) -> str:
    """A violation's message with its places in the user's coordinates; a stage
    on the wrong rank of a CSV also names the cell that placed the stage."""
    if origin is None:
        return v.message
    msg = origin.rewrite(v.message)
    if v.code == "action-rank":
        placed = origin.stage_place(v.arg("stage"))
        if placed is not None:
            msg += f" ({placed} places stage {v.arg('stage')} on rank {v.arg('owner')})"
    return msg


def _status_text(st: Status) -> str:
    return "FAILS" if st is Status.FAILS else st.value


def _detail(result: CheckResult, pid: PropertyId) -> str:
    pr = result.result_of(pid)
    if pr.status is Status.NOT_CHECKED:
        return "(well-formed fails)"
    if pr.status is Status.UNKNOWN:
        return "see \"why unknown\" below"
    if pr.status is Status.FAILS:
        n = len(pr.violations)
        return f"{n} counterexample{'s' if n != 1 else ''}"
    if pid is PropertyId.DEADLOCK_FREE:
        cert = f"; certificate {result.certificate}" if result.certificate else ""
        return f"witness order of {result.stats.num_actions} steps (decided by {pr.decided_by}{cert})"
    if pid is PropertyId.MEMORY and result.activation_bytes is not None:
        pk = ", ".join(format_bytes(x) for x in result.peaks)
        lim = "no limit given" if result.memory_limit is None else f"limit {format_bytes(result.memory_limit)}"
        return f"peak activation memory per rank: {pk} ({lim})"
    if pid is PropertyId.MEMORY:
        pk = " ".join(_num(x) for x in result.peaks)
        lim = "no limit given" if result.memory_limit is None else f"limit {_num(result.memory_limit)}"
        return f"peak activations per rank: {pk} ({lim})"
    return ""


def input_notes(schedule) -> list[str]:
    """What reading the input did that the verdict does not show (text: "note:"
    lines; JSON: "notes"): PyTorch FSDP cells read as no-ops."""

    note = fsdp_note(schedule)
    return [note] if note else []


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_UNKNOWN_CODES = ("solver-unknown", "engine-disagree", "certificate-rejected")


def render_text(result: CheckResult, verbose: bool = False, with_witness: bool = False,
                source: str = "", origin: Origin | None = None,
                max_counterexamples: int | None = None) -> str:
    """The text output; ``origin`` (the input file's ``verifier.format.origin.Origin``)
    writes counterexample places in the user's coordinates (CSV row and column,
    the user's step of a lowered schedule); at most ``max_counterexamples``
    counterexamples are listed, the rest counted."""
    s = result.schedule
    out = [f"{result.verdict.value} under {result.comm_model} (engine: {result.engine})"]
    name = guard.printable(s.name or s.family or source or "(unnamed)")
    low = ", lowered from compute-only" if result.lowered else ""
    out.append(
        f"schedule: {name}, {s.num_ranks} ranks, {s.num_microbatches} micro-batches, "
        f"{s.num_actions} steps{low}"
    )
    if result.engine_note:
        out.append(f"note: {result.engine_note}")
    out.extend(f"note: {n}" for n in input_notes(s))
    width = max(len(p.value) for p in PropertyId)
    for pr in result.properties:
        line = f"  {pr.property.value:<{width}}  {_status_text(pr.status):<11}  {_detail(result, pr.property)}"
        out.append(line.rstrip())
    viols = [v for v in result.violations if v.code not in _UNKNOWN_CODES]
    why = [v for v in result.violations if v.code in _UNKNOWN_CODES]
    if why:
        out.append("why unknown:")
        out.extend(f"  [{v.property.value}] {v.message}" for v in why)
    left_out = 0
    if max_counterexamples is not None and len(viols) > max_counterexamples:
        left_out = len(viols) - max_counterexamples
        viols = viols[:max_counterexamples]
    if viols:
        out.append("counterexamples:")
        for v in viols:
            out.append(f"  [{v.property.value}] {user_message(v, origin)}")
            if v.property is PropertyId.DEADLOCK_FREE and v.code in ("deadlock", "stuck"):
                lines = hop_lines(result, origin)
                for i, text in enumerate(lines, 1):
                    out.append(f"    {i}. {text}")
                if result.cycle is not None and result.cycle.closed:
                    out.append(f"    (and hop 1 again: a cycle of {len(lines)} waits)")
        if left_out:
            out.append(f"  ... and {left_out} more counterexample{'s' if left_out != 1 else ''} "
                       "(--max-counterexamples N prints more)")
    if result.z3_core and verbose:
        out.append("z3 unsat core:")
        out.extend(f"  {c}" for c in result.z3_core)
    if with_witness and result.witness is not None:
        out.append("witness: " + " ".join(f"{r}:{k}" for r, k in result.witness))
    if verbose:
        st = result.stats
        out.append(
            f"stats: {st.seconds:.3f} s total, engine {st.engine_seconds:.3f} s, certificate "
            f"{st.certificate_seconds:.3f} s, {st.num_actions} steps, {st.num_ops} comm ops, "
            f"{st.num_events} events"
        )
        out.extend(grid(result))
    return "\n".join(out) + "\n"


def _short(a) -> str:
    """A grid cell: the one notation (``action_text``), a BATCH as ``[op op]``
    (``]w``: with wait) to keep the columns narrow."""
    if isinstance(a, Batch):
        return "[" + " ".join(action_text(o) for o in a.ops) + ("]w" if a.wait else "]")
    return action_text(a)


GRID_MAX_CELLS = 1_000_000  # --verbose's grid: steps x ranks printed at most


def grid(result: CheckResult) -> list[str]:
    """Step x rank grid: one row a step, one column a rank; '*' marks a counterexample
    step. Omitted (one line says so) past GRID_MAX_CELLS steps x ranks."""
    s = result.schedule
    depth = max((len(a) for a in s.actions), default=0)
    if depth * s.num_ranks > GRID_MAX_CELLS:
        return [f"grid omitted: {depth} steps x {s.num_ranks} ranks is more than "
                f"{GRID_MAX_CELLS} cells"]
    marked = {tuple(x) for v in result.violations for x in v.locations}
    if result.cycle is not None:
        for h in result.cycle.hops:
            for e in (h.waiter, h.target):
                if e.kind is not EventKind.NEVER:
                    marked.add((e.rank, e.step))
    cells = [
        [("*" if (r, k) in marked else " ") + _short(a) for k, a in enumerate(acts)]
        for r, acts in enumerate(s.actions)
    ]
    depth = max((len(c) for c in cells), default=0)
    widths = [max([len(f"rank {r}")] + [len(x) for x in cells[r]]) for r in range(s.num_ranks)]
    head = "step  " + "  ".join(f"{'rank ' + str(r):<{widths[r]}}" for r in range(s.num_ranks))
    lines = ["grid (* = named by a counterexample; [..] = BATCH, [..]w = BATCH with wait):", head.rstrip()]
    for k in range(depth):
        row = "  ".join(
            f"{cells[r][k] if k < len(cells[r]) else '':<{widths[r]}}" for r in range(s.num_ranks)
        )
        lines.append(f"{k:<4}  {row}".rstrip())
    return lines


# ---------------------------------------------------------------- json


def _jsonable(x):
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(y) for y in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return str(x)


def _violation_json(v: Violation, origin: Origin | None = None) -> dict:
    d = {
        "property": v.property.value,
        "code": v.code,
        "message": v.message,
        "locations": [list(x) for x in v.locations],
        "args": {k: _jsonable(val) for k, val in v.args},
    }
    if origin is not None:
        d["user_message"] = user_message(v, origin)
        d["user_locations"] = [origin.place(r, k).to_json() for r, k in v.locations]
    return d


def _event_json(e: Event, origin: Origin | None = None) -> dict:
    d = {"kind": e.kind.value}
    if e.kind is not EventKind.NEVER:
        d.update(rank=e.rank, step=e.step)
        if e.sub is not None:
            d["sub"] = e.sub
        d["action"] = e.action
        if e.peer is not None:
            d["peer"] = {"rank": e.peer[0], "step": e.peer[1], "sub": e.peer[2], "action": e.peer_action}
            if origin is not None:
                d["peer"]["user_place"] = origin.place(*e.peer).to_json()
        if origin is not None:
            d["user_place"] = origin.place(e.rank, e.step, e.sub).to_json()
    return d


def _capped(viols, cap: int | None) -> tuple[list, int]:
    viols = list(viols)
    if cap is None or len(viols) <= cap:
        return viols, 0
    return viols[:cap], len(viols) - cap


def to_json(result: CheckResult, source: str = "", with_witness: bool = False,
            origin: Origin | None = None, max_counterexamples: int | None = None) -> dict:
    """The JSON output (specs/check-output.md); ``origin`` adds the user's
    coordinates (``user_message``, ``user_locations``, ``user_place``); at most
    ``max_counterexamples`` counterexamples in the list and in each property's
    violations (the rest counted: "counterexamples_omitted", "violations_omitted")."""
    s = result.schedule
    shown, omitted = _capped(result.violations, max_counterexamples)
    per_prop = {pr.property: _capped(pr.violations, max_counterexamples)
                for pr in result.properties}
    cyc = None
    if result.cycle is not None:
        cyc = {
            "closed": result.cycle.closed,
            "hops": [
                {"waiter": _event_json(h.waiter, origin), "target": _event_json(h.target, origin),
                 "text": hop_text(h),
                 **({} if origin is None else {"user_text": origin.rewrite(hop_text(h))})}
                for h in result.cycle.hops
            ],
        }
    st = result.stats
    doc = {
        "format": "pp-check",
        "version": OUTPUT_VERSION,
        "verdict": result.verdict.value,
        "exit_code": result.verdict.exit_code,
        "comm_model": result.comm_model,
        "engine": result.engine,
        "engine_note": result.engine_note,
        "notes": input_notes(s),
        "schedule": {
            "source": source,
            "name": s.name,
            "family": s.family,
            "num_ranks": s.num_ranks,
            "num_microbatches": s.num_microbatches,
            "num_steps": s.num_actions,
            "lowered": result.lowered,
            **({} if origin is None else {"input_form": origin.form}),
        },
        "properties": {
            pr.property.value: {
                "status": pr.status.value,
                "decided_by": pr.decided_by,
                "violations": [_violation_json(v, origin) for v in per_prop[pr.property][0]],
                "violations_omitted": per_prop[pr.property][1],
            }
            for pr in result.properties
        },
        "counterexamples": [_violation_json(v, origin) for v in shown],
        "counterexamples_total": len(result.violations),
        "counterexamples_omitted": omitted,
        "cycle": cyc,
        "memory": {"peaks": [_jsonable(p) for p in result.peaks], "limit": result.memory_limit,
                   "unit": "activations" if result.activation_bytes is None else "bytes",
                   **({} if result.activation_bytes is None else
                      {"activation_bytes": {str(k): v for k, v in sorted(result.activation_bytes.items())}})},
        "certificate": result.certificate,
        "z3_core": list(result.z3_core),
        "stats": {
            "seconds": round(st.seconds, 6),
            "engine_seconds": round(st.engine_seconds, 6),
            "certificate_seconds": round(st.certificate_seconds, 6),
            "num_actions": st.num_actions,
            "num_ops": st.num_ops,
            "num_events": st.num_events,
            "z3": _jsonable(dict(st.z3)),
        },
    }
    if with_witness:
        doc["witness"] = None if result.witness is None else [list(x) for x in result.witness]
    return doc


if __name__ == "__main__":  # pragma: no cover
    from verifier.cli.app import main

    sys.exit(main(["check", *sys.argv[1:]]))

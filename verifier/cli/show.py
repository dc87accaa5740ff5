"""`python -m verifier show`: draw a schedule's ASAP timeline (PNG, SVG or text).

Not covered: the metrics table (``analyze``), interactive traces
(``analyze --chrome-trace``).
"""

from __future__ import annotations

from pathlib import Path

import math

from verifier.analysis import costs as costs_mod
from verifier.format import guard
from verifier.analysis.timeline import COMM_MODELS, analyze
from verifier.cli._common import load_for_engines
from verifier.cli.analyze import COSTS_DOC, COSTS_HELP
from verifier.errors import FlagError
from verifier.format.io import source_name
from verifier.ir import ScheduleError
from verifier.semantics.lowering import lower_if_compute_only

HELP = "draw a schedule's timeline (PNG, SVG or a coloured text grid)"

DESCRIPTION = f"""\
Draw the as-soon-as-possible timeline of a schedule in the style of DeepSeek's
DualPipe README: one row per rank, time across, a cell per compute with its
micro-batch id; F orange, B green, I teal, W blue; a rank's later stage (the
reverse direction of DualPipe, the way back up a V) in a darker shade with
white digits; an overlapped F&B as one cell (forward and backward parts in one
thick border); idle time white with grey unit ticks; a time axis below.
--critical-path outlines the cells of the critical path in red; a deadlocked
schedule is drawn up to where each rank got stuck, marked in red.

-o FILE picks the format by extension: .png, .svg, or .txt (text grid without
colours). Without -o the text grid goes to stdout, with ANSI colours when
stdout is a terminal (or --color always).

{COSTS_DOC}

The picture is refused up front (exit 2) when it would exceed --max-pixels
(pixels of a PNG/SVG, characters of the text grid; default {guard.DEFAULT.max_pixels});
a larger --dt or a smaller --scale makes it smaller. -o is checked before work
starts (directory exists, writable, not a directory). A schedule that is not
well-formed is refused, exit 2.

{guard.LIMITS_DOC}

exit codes: 0 drawn, 1 the replay deadlocked (the picture shows what ran
before it got stuck; the stuck places go to stderr), 2 bad input or usage."""


def add_arguments(p) -> None:
    p.add_argument("file", help="schedule file (.json, or PyTorch pipelining .csv; - reads stdin)")
    p.add_argument("-o", "--output", default=None, metavar="OUT",
                   help="write OUT.png, OUT.svg or OUT.txt instead of printing")
    p.add_argument("--costs", default=None, help=COSTS_HELP)
    p.add_argument("--comm-model", choices=COMM_MODELS, default="nccl")
    p.add_argument("--comm", action="store_true",
                   help="draw a thin strip per rank with its messages in flight")
    p.add_argument("--scale", type=_finite, default=None, metavar="PX",
                   help="pixels per cost unit, in (0, 1000] (PNG/SVG; default: fit, at most "
                   "8000 px wide)")
    p.add_argument("--dt", type=_finite, default=None,
                   help="text: time units per character, > 0 (default: half the shortest compute)")
    p.add_argument("--critical-path", action="store_true",
                   help="outline the critical path's cells in red (PNG/SVG)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    guard.add_limit_arguments(p, "max_bytes", "max_actions", "max_cells", "max_pixels")


def _finite(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {guard.bounded(text)!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {guard.bounded(text)!r}")
    return v


_FORMATS = (".png", ".svg", ".txt")


def _refuse_size(what: str, cols: float, rows: float, limit: int, fix: str) -> None:
    total = cols * rows
    if not math.isfinite(total) or total > limit:
        raise FlagError(
            f"the {what} would be {cols:.4g} x {rows:.4g} = {total:.4g}, more than --max-pixels "
            f"{limit}; {fix} or raise --max-pixels", "show")


def run(args, stdout, stderr) -> int:
    # deferred: render imports numpy (~0.15 s); loaded only when a picture is drawn
    from verifier.render.pictures import geometry, layout
    from verifier.render.png import to_png
    from verifier.render.svg import to_svg
    from verifier.render.textgrid import to_text

    if args.scale is not None and not (0 < args.scale <= 1000):
        raise FlagError(f"must be in (0, 1000] pixels per unit, got {args.scale}", "--scale")
    if args.dt is not None and not args.dt > 0:
        raise FlagError(f"must be > 0, got {args.dt}", "--dt")
    out = args.output
    if out is not None:
        ext = Path(out).suffix.lower()
        if ext not in _FORMATS:
            raise FlagError(f"unknown picture format {ext or '(none)'!r}; use .png, .svg or .txt",
                                f"-o {guard.printable(out)}")
        guard.check_output_path(out, "-o")
    cm = costs_mod.load(args.costs)
    s = load_for_engines(args, "show")
    with guard.naming(source_name(args.file)):
        s = lower_if_compute_only(s)
        a = analyze(s, cm, args.comm_model)
        pic = layout(s, a, critical=args.critical_path)
    limit = guard.limits_of(args).max_pixels
    if out is None or ext == ".txt":
        dt = args.dt or pic.min_duration / 2
        if not dt > 0:
            raise ScheduleError(f"the shortest compute takes {pic.min_duration:g}; pass --dt", "show")
        _refuse_size("text grid (characters)", pic.makespan / dt, pic.num_ranks + 4, limit,
                     "pass a larger --dt")
    else:
        g = geometry(pic, args.scale, args.comm, 8000)
        _refuse_size("picture (pixels)", g.width, g.height, limit,
                     "pass a smaller --scale (pixels per cost unit)")
    if a.deadlocked:
        stderr.write(f"deadlock under {a.comm_model}; drawn up to where it got stuck:\n")
        for x in a.stuck:
            stderr.write(f"  {x}\n")
    if out is None:
        color = args.color == "always" or (
            args.color == "auto" and hasattr(stdout, "isatty") and stdout.isatty())
        stdout.write(to_text(pic, color=color, dt=args.dt))
    else:
        if ext == ".png":
            data = to_png(pic, args.scale, args.comm)
        elif ext == ".svg":
            data = to_svg(pic, args.scale, args.comm)
        else:
            data = to_text(pic, color=args.color == "always", dt=args.dt)
        guard.write_output(out, data, "-o")
        stdout.write(f"wrote {guard.printable(out)}\n")
    return 1 if a.deadlocked else 0

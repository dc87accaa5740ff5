"""`python -m verifier show`: draw a schedule's ASAP timeline (PNG, SVG or text).

Not covered: the metrics table (``analyze``), interactive traces
(``analyze --chrome-trace``).
"""

from __future__ import annotations

from pathlib import Path

from verifier import costs as costs_mod
from verifier.analysis import COMM_MODELS, analyze
from verifier.commands.analyze import COSTS_DOC, COSTS_HELP
from verifier.ir import ScheduleError

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
    p.add_argument("--scale", type=float, default=None, metavar="PX",
                   help="pixels per cost unit (PNG/SVG; default: fit, at most 8000 px wide)")
    p.add_argument("--dt", type=float, default=None,
                   help="text: time units per character (default: half the shortest compute)")
    p.add_argument("--critical-path", action="store_true",
                   help="outline the critical path's cells in red (PNG/SVG)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")


def run(args, stdout, stderr) -> int:
    from verifier.io import load_schedule
    from verifier.lowering import lower
    from verifier.render import layout, to_png, to_svg, to_text

    cm = costs_mod.load(args.costs)
    s = load_schedule(args.file)
    if args.scale is not None and not (0 < args.scale <= 1000):
        raise ScheduleError(f"--scale must be in (0, 1000] pixels per unit, got {args.scale}")
    if args.dt is not None and not args.dt > 0:
        raise ScheduleError(f"--dt must be > 0, got {args.dt}")
    if s.is_compute_only and any(s.actions):
        s = lower(s)
    a = analyze(s, cm, args.comm_model)
    pic = layout(s, a, critical=args.critical_path)
    if a.deadlocked:
        stderr.write(f"deadlock under {a.comm_model}; drawn up to where it got stuck:\n")
        for x in a.stuck:
            stderr.write(f"  {x}\n")
    out = args.output
    if out is None:
        color = args.color == "always" or (
            args.color == "auto" and hasattr(stdout, "isatty") and stdout.isatty())
        stdout.write(to_text(pic, color=color, dt=args.dt))
    else:
        ext = Path(out).suffix.lower()
        if ext == ".png":
            data = to_png(pic, args.scale, args.comm)
            _write(out, data)
        elif ext == ".svg":
            _write(out, to_svg(pic, args.scale, args.comm).encode("utf-8"))
        elif ext == ".txt":
            _write(out, to_text(pic, color=args.color == "always", dt=args.dt).encode("utf-8"))
        else:
            raise ScheduleError(f"unknown picture format {ext or '(none)'!r}; use .png, .svg or .txt",
                                out)
        stdout.write(f"wrote {out}\n")
    return 1 if a.deadlocked else 0


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise ScheduleError(f"cannot write: {e.strerror}", path) from None

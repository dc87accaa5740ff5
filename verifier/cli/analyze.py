"""`python -m verifier analyze`: the ASAP timeline of one schedule and its metrics.

Not covered: correctness (``check``), pictures (``show``).
"""

from __future__ import annotations

import json

from verifier.analysis import costs as costs_mod
from verifier.format import guard
from verifier.check.properties import require_well_formed
from verifier.analysis.timeline import COMM_MODELS, Analysis, analyze
from verifier.format.io import load_schedule_with_origin, source_name
from verifier.semantics.lowering import lower
from verifier.semantics.memory import peak_activations
from verifier.render.trace import chrome_trace
from verifier.format.units import format_bytes, parse_activation_bytes

HELP = "time a schedule: makespan, bubbles, critical path, peak memory"

COSTS_HELP = (
    "costs: KEY=VALUE list (keys F, B, I, W, FB, FI, comm; e.g. F=1,B=2,W=1,FB=2.5,comm=0) "
    "or a JSON file {\"F\":1, ..., \"stages\": {\"3\": {\"F\": 2}}}. Missing keys: F=1; "
    "B=I+W if both given else 2F; I=B-W / W=B-I, or I=W=B/2; FB=F+B; FI=max(FB-W,F,I); comm=0"
)

COSTS_DOC = """\
costs (--costs): a KEY=VALUE list, keys F, B, I, W, FB (an overlapped F&B),
FI (an overlapped F&I), comm (message latency), e.g. F=1,B=2,W=1,FB=2.5,comm=0;
or a JSON file {"F": 1, ..., "stages": {"3": {"F": 2}}} with per-stage
overrides. Missing keys: F=1; B=I+W if both given, else 2F; I=B-W or W=B-I if
one is given, else I=W=B/2; FB=F+B; FI=max(FB-W, F, I); comm=0. A bad value
is an error naming the key (F, B, FB, FI > 0; I, W, comm >= 0; B = I+W;
FB >= max(F, B)). Times are in the units of the costs."""

DESCRIPTION = f"""\
Replay a schedule as soon as possible under a cost model and a communication
model (specs/SEMANTICS.md) and report makespan, per-rank busy time and bubble
(makespan - busy; an overlapped F&B counts once, for its FB cost), the bubble
ratio (all bubbles / (ranks x makespan)), the critical path, peak live
activations per rank (verifier.semantics.memory: units of one stage's activation for one
micro-batch, freed by B or I) and parameter copies per rank (distinct layers
held x ranks / layers: DualPipe 2, every other family 1). A compute-only
schedule is lowered first.

{COSTS_DOC}

--format text (default): a header, one table row per rank, the critical path.
--format json: one object, schema "pp-analysis/1":
  name, family, num_ranks, num_microbatches, comm_model,
  costs {{F,B,I,W,FB,FI,comm[,stages]}}, deadlocked (bool),
  stuck [{{rank, step, action, waits_for}}], makespan, bubble_ratio, max_bubble,
  ranks [{{rank, busy, bubble, end, peak_activations, stages, param_copies}}]
  (with --activation-bytes also peak_activation_bytes per rank, and
  activation_bytes {{stage: bytes}}),
  critical_path [{{what: compute|message, rank, step, label, start, end}}],
  and with --timeline: timeline [{{rank, step, kind, label, start, end}}].
--chrome-trace OUT.json writes a trace for Perfetto / chrome://tracing (one
process per rank, compute and comm threads, flow arrows send -> receive).

A schedule that is not well-formed (an undeclared stage, a stage on a rank
that does not exist, ...: `check`'s property 1) is refused, exit 2.
Under --format json an error is one JSON object on stdout as well
({{"format": "pp-error", ...}}, specs/check-output.md).

{guard.LIMITS_DOC}

exit codes: 0 timed to the end, 1 the replay deadlocked (stuck places are
listed: rank, step, action and what it waits for; in the text output a CSV's
places as row, column and cell, and a compute-only schedule's with the lowered
step, as check writes them), 2 bad input or usage."""


def add_arguments(p) -> None:
    p.add_argument("file", help="schedule file (.json, or PyTorch pipelining .csv; - reads stdin)")
    p.add_argument("--costs", default=None, help=COSTS_HELP)
    p.add_argument("--comm-model", choices=COMM_MODELS, default="nccl",
                   help="communication model (default nccl, the strictest)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--timeline", action="store_true",
                   help="json: include every compute span")
    p.add_argument("--chrome-trace", metavar="OUT.json", default=None,
                   help="also write a Chrome/Perfetto trace (the path is checked before work starts)")
    p.add_argument("--activation-bytes", default=None, metavar="SIZES",
                   help="bytes of one stage's activation for one micro-batch (SIZE for every "
                   "stage, e.g. 2GiB; S=SIZE,.. per stage; or FILE.json from `python -m "
                   "reference activations`): adds each rank's peak activation memory in bytes "
                   "(text column 'peak mem', JSON ranks[].peak_activation_bytes)")
    guard.add_limit_arguments(p)


def fmt(x: float) -> str:
    return f"{x:.6g}"


def render_text(a: Analysis, max_path: int = 12, peak_bytes: list[float] | None = None,
                origin=None) -> str:
    """The text output; ``origin`` (``verifier.format.origin.Origin``) writes the stuck
    places of a deadlock in the user's coordinates (CSV cell, lowered step)."""
    lines = [
        f"schedule: {guard.printable(a.name or '(unnamed)')}" + (f" [{a.family}]" if a.family else ""),
        f"ranks {a.num_ranks}, micro-batches {a.num_microbatches}, comm model {a.comm_model}",
        "costs: " + ", ".join(f"{k}={fmt(v)}" for k, v in a.costs.items() if k != "stages")
        + (" (+ per-stage overrides)" if "stages" in a.costs else ""),
    ]
    if a.deadlocked:
        lines.append(f"DEADLOCK under {a.comm_model}: the replay got stuck at")
        lines.extend(f"  {s if origin is None else origin.rewrite(str(s))}" for s in a.stuck)
        return "\n".join(lines) + "\n"
    lines.append(
        f"makespan {fmt(a.makespan)}, bubble ratio {100 * a.bubble_ratio:.2f}%, "
        f"max bubble {fmt(a.max_bubble)}"
    )
    hdr = ("rank", "busy", "bubble", "bubble%", "end", "peak act", "stages", "params")
    if peak_bytes is not None:
        hdr = hdr[:6] + ("peak mem",) + hdr[6:]
    rows = [hdr]
    for r in a.ranks:
        row = (
            str(r.rank), fmt(r.busy), fmt(r.bubble),
            f"{100 * r.bubble / a.makespan:.1f}%" if a.makespan else "-",
            fmt(r.end), fmt(r.peak_activations), str(r.stages), f"{r.param_copies:g}x",
        )
        if peak_bytes is not None:
            row = row[:6] + (format_bytes(peak_bytes[r.rank]),) + row[6:]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(hdr))]
    for row in rows:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    path = a.critical_path
    lines.append(f"critical path ({len(path)} links, start -> end):")
    shown = list(path)
    if len(path) > max_path:
        half = max_path // 2
        shown = list(path[:half]) + [None] + list(path[-half:])
    for p in shown:
        if p is None:
            lines.append(f"  ... {len(path) - 2 * (max_path // 2)} more ...")
            continue
        where = "" if p.what == "message" else f"rank {p.rank} step {p.step}: "
        lines.append(f"  [{fmt(p.start)}, {fmt(p.end)}] {where}{p.label}")
    return "\n".join(lines) + "\n"


def run(args, stdout, stderr) -> int:
    guard.check_output_path(args.chrome_trace, "--chrome-trace")
    cm = costs_mod.load(args.costs)
    sizes = None if args.activation_bytes is None else parse_activation_bytes(args.activation_bytes)
    source = source_name(args.file)
    s, origin = load_schedule_with_origin(args.file, limits=guard.limits_of(args))
    require_well_formed(s, source, "analyze")
    peak_bytes = None
    if sizes is not None:  # by program order, as verifier.semantics.memory counts activations
        peak_bytes = peak_activations(s, sizes.for_schedule(s))
    with guard.naming(source):
        a = analyze(s, cm, args.comm_model)
    if args.chrome_trace:
        guard.write_output(args.chrome_trace, json.dumps(chrome_trace(a)), "--chrome-trace")
    if args.format == "json":
        doc = a.to_json(timeline=args.timeline)
        if peak_bytes is not None and "ranks" in doc:
            doc["activation_bytes"] = {str(k): v for k, v in sorted(sizes.for_schedule(s).items())}
            for row in doc["ranks"]:
                row["peak_activation_bytes"] = peak_bytes[row["rank"]]
        stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        if a.deadlocked and s.is_compute_only:  # analyze lowered it: name the input's steps

            origin = origin.with_lowering(s, lower(s))
        stdout.write(render_text(a, peak_bytes=peak_bytes, origin=origin))
    return 1 if a.deadlocked else 0

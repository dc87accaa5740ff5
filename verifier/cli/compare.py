"""`python -m verifier compare`: every family side by side at one size.

Not covered: searching over sizes or costs (run it once per point).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from verifier.analysis import costs as costs_mod

from verifier.format import guard
from verifier.analysis.timeline import COMM_MODELS, analyze, published_bubble
from verifier.cli.analyze import COSTS_DOC, COSTS_HELP
from verifier.cli.generate import stages_per_rank
from verifier.analysis.costs import scaled
from verifier.generators import CHUNKED_FAMILIES, FAMILIES, generate, resolve_family
from verifier.errors import FlagError
from verifier.ir import ScheduleError

# every family generated and timed: 32 x 256 (16,384 cells) takes 24 s, 100 x 500 > 120 s
COMPARE_MAX_CELLS = 32_768

HELP = "compare all schedule families at one size (table, optional chart)"

DESCRIPTION = f"""\
Generate every family (verifier.generators) for --ranks R and --microbatches M,
time each one (the ASAP replay of `analyze`) and print one row per family:

  family     the generator's family name
  PP         stages on one micro-batch's route (DualPipeV/ZB-V: 2R)
  makespan   end of the last action
  bubble     the largest per-rank bubble (makespan - busy)
  ratio      all bubbles / (ranks x makespan)
  formula    the DualPipe README's bubble formula where it has one
             (1F1B, ZB1P = zb-h1, DualPipe, DualPipeV), else -
  act        peak live activations, worst rank, in units of one
             one-stage-per-rank stage's activation (see below)
  params     parameter copies per rank (distinct layers x ranks / layers)

Same model, same ranks: the costs describe one stage of a one-stage-per-rank
pipeline (1/R of the model). A family whose route has PP stages (interleaved,
ZB-V, DualPipeV: PP = chunks x R) runs each stage at R/PP of those costs, and
its activation count is scaled by R/PP too, so every row is the same model on
the same R ranks. DualPipe's stages are whole 1/R stages (its route has R
stages; each rank holds two, mirrored: params 2x). --per-stage-costs turns
this off (every stage of every family costs the given costs, activations in
that family's stage units). The formula column uses the scaled costs.

A family that cannot serve the parameters shows "n/a: reason"; one whose
replay deadlocks under the chosen model shows "DEADLOCK: first stuck place".

{COSTS_DOC}

-o chart.svg / chart.png also draws a chart (makespan split into busy and
bubble, and peak activations, one row per family).
--format json prints a list of objects with the same fields (null for n/a),
plus status: ok | n/a | deadlock and note.

A size over --max-cells is refused before anything is generated; -o is
checked before work starts and a failed write is exit 2 naming the path.

exit codes: 0 the table was printed (n/a and deadlocks are rows, not errors),
2 bad input or usage."""


def add_arguments(p) -> None:
    p.add_argument("--ranks", type=int, required=True)
    p.add_argument("--microbatches", type=int, required=True)
    p.add_argument("--chunks", type=int, default=None,
                   help="stages per rank for interleaved-1f1b (default: the generator's)")
    p.add_argument("--families", default=None,
                   help="comma-separated subset of the families (default: all)")
    p.add_argument("--costs", default=None, help=COSTS_HELP)
    p.add_argument("--comm-model", choices=COMM_MODELS, default="nccl")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--per-stage-costs", action="store_true",
                   help="do not scale costs and activations by R/PP (see above)")
    p.add_argument("-o", "--output", default=None, metavar="CHART",
                   help="write a chart (.svg or .png; checked before work starts)")
    p.add_argument("--max-cells", type=guard.positive_int, default=COMPARE_MAX_CELLS,
                   metavar="N", help="largest ranks x stages per rank x micro-batches a family "
                   f"is generated at (default {COMPARE_MAX_CELLS}); larger is refused up front")


@dataclass(frozen=True, slots=True)
class Row:
    family: str
    status: str  # ok | n/a | deadlock
    note: str
    pp: int | None = None
    makespan: float | None = None
    bubble: float | None = None
    ratio: float | None = None
    formula: float | None = None
    mean_busy: float | None = None
    peak_activations: float | None = None
    param_copies: float | None = None


def compare(num_ranks: int, num_microbatches: int, costs, comm_model: str = "nccl",
            families=None, num_chunks: int | None = None, normalize: bool = True) -> list[Row]:
    """One Row per family (see DESCRIPTION); ``normalize``: costs and activations
    per R/PP as described there."""

    rows = []
    for fam in families or FAMILIES:
        try:
            s = generate(fam, num_ranks, num_microbatches,
                         num_chunks=num_chunks if fam in CHUNKED_FAMILIES else None)
        except ScheduleError as e:
            rows.append(Row(fam, "n/a", str(e)))
            continue
        pp = max(len(r.stages) for r in s.routes)
        # same model on the same ranks: a stage of a PP-stage route is R/PP of
        # the one-stage-per-rank stage the costs describe
        scale = num_ranks / pp if normalize else 1.0
        fam_costs = scaled(costs, scale)
        a = analyze(s, fam_costs, comm_model)
        if a.deadlocked:
            first = a.stuck[0] if a.stuck else None
            rows.append(Row(fam, "deadlock", f"{first}" if first else "", pp=pp))
            continue
        rows.append(Row(
            fam, "ok", "", pp=pp, makespan=a.makespan, bubble=a.max_bubble,
            ratio=a.bubble_ratio, formula=published_bubble(fam, num_ranks, fam_costs),
            mean_busy=sum(r.busy for r in a.ranks) / len(a.ranks),
            peak_activations=max(r.peak_activations for r in a.ranks) * scale,
            param_copies=max(r.param_copies for r in a.ranks),
        ))
    return rows


def _g(x) -> str:
    return "-" if x is None else f"{x:.6g}"


def render_table(rows: list[Row]) -> str:
    hdr = ("family", "PP", "makespan", "bubble", "ratio", "formula", "act", "params")
    table = [hdr]
    notes = []
    for r in rows:
        if r.status != "ok":
            label = "n/a" if r.status == "n/a" else "DEADLOCK"
            notes.append((r.family, f"{label}: {r.note}"))
            continue
        table.append((r.family, str(r.pp), _g(r.makespan), _g(r.bubble),
                      f"{100 * r.ratio:.1f}%", _g(r.formula), _g(r.peak_activations),
                      f"{r.param_copies:g}x"))
    widths = [max(len(t[i]) for t in table) for i in range(len(hdr))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(t, widths))) for t in table]
    for fam, n in notes:
        lines.append(f"{fam.ljust(widths[0])}  {n}")
    return "\n".join(lines) + "\n"


def run(args, stdout, stderr) -> int:
    from pathlib import Path

    if args.output:
        ext = Path(args.output).suffix.lower()
        if ext not in (".svg", ".png"):
            raise FlagError(f"unknown chart format {ext or '(none)'!r}; use .svg or .png",
                                f"-o {guard.printable(args.output)}")
        guard.check_output_path(args.output, "-o")
    cm = costs_mod.load(args.costs)
    fams = None
    if args.families:
        fams = []
        for f in (f.strip() for f in args.families.split(",")):
            if f:
                try:
                    fams.append(resolve_family(f))
                except ScheduleError as e:
                    raise FlagError(e.detail, "--families") from None
    for name, v in (("--ranks", args.ranks), ("--microbatches", args.microbatches)):
        if v < 1:
            raise FlagError(f"must be >= 1, got {v}", name)
    if args.chunks is not None and args.chunks < 1:
        raise FlagError(f"must be >= 1, got {args.chunks}", "--chunks")

    spr = max(stages_per_rank(f, args.chunks) for f in (fams or FAMILIES))
    guard.check_generated_size(args.ranks, args.microbatches, spr,
                               guard.Limits(max_cells=args.max_cells))
    rows = compare(args.ranks, args.microbatches, cm, args.comm_model, fams, args.chunks,
                   normalize=not args.per_stage_costs)
    title = (f"ranks {args.ranks}, micro-batches {args.microbatches}, comm {args.comm_model}, "
             f"costs {cm.describe()}"
             + (" per stage" if args.per_stage_costs else " per 1/R of the model"))
    if args.format == "json":
        stdout.write(json.dumps([{
            k: getattr(r, k) for k in Row.__slots__} for r in rows], indent=1) + "\n")
    else:
        stdout.write(title + "\n" + render_table(rows))
    if args.output:
        # deferred: render_chart imports numpy (~0.15 s); loaded only when a chart is drawn
        from verifier.render.chart import ChartRow, chart_png, chart_svg

        crows = [ChartRow(r.family, r.makespan, r.mean_busy, r.peak_activations,
                          ("n/a: " if r.status == "n/a" else "DEADLOCK: ") + r.note
                          if r.status != "ok" else "") for r in rows]
        data = chart_png(crows, title) if ext == ".png" else chart_svg(crows, title)
        guard.write_output(args.output, data, "-o")
        if args.format == "text":
            stdout.write(f"wrote {guard.printable(args.output)}\n")
    return 0

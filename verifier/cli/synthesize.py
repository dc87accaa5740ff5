"""`python -m verifier synthesize`: the least-makespan schedule, with its proof.

What it is: the command-line face of verifier.synth.synthesis (the problem,
incumbents), verifier.synth.search (bisection, emission) and
verifier.synth.z3synth (the solver). It prints the verdict, the bound and how it
was proved, and writes the best schedule (with communication, VERIFIED by
``check`` under ``nccl``).

Not covered: placements other than the four listed, overlapped pairs that
are faster than their halves in sequence (refused, exit 2).
"""

from __future__ import annotations

import json
import time

from verifier.analysis import costs as costs_mod
from verifier.format import guard
from verifier.cli.analyze import COSTS_DOC, COSTS_HELP
from verifier.errors import FlagError, OutputError
from verifier.format.io import save_schedule
from verifier.synth.synthesis import PLACEMENTS, least_feasible_memory, make_problem, skeleton

HELP = "find a least-makespan schedule for given costs and memory, and prove it"

DESCRIPTION = f"""\
Search every per-rank order of the compute actions of one placement for the
least makespan within a memory cap, and prove it. Timing is `analyze`'s: the
written schedule is timed by the ASAP replay under the nccl model.

placements (--placement): linear (one stage per rank: 1F1B, ZB-H1),
v (2 stages per rank in a V: ZB-V, DualPipeV), bidirectional (DualPipe: two
mirrored routes, micro-batches 0..M/2-1 on the first), looped (2 stages per
rank round-robin: interleaved 1F1B), any (each of them; the best is written).
Costs are per stage of that placement, as `analyze --costs` reads them.

The space: jobs F, and I + W (--split-backward yes, default; a plain B is
never better than I directly followed by W, so this also covers schedules
mixing B) or B (no). --overlap yes extends the claim to schedules with
OVERLAP(F, B/I) pairs, accepted only when FB >= F + B and FI >= F + I (then
F and B in sequence is never worse, so the bound covers them and the written
schedule needs none); faster overlapped pairs are not encoded: exit 2.

The proof: the lower bound is on the *dataflow* makespan (each compute after
the previous one on its rank and after its inputs, + comm across ranks),
which no placement of the communication under nccl or eager can beat. It is
the trivial bound (longest dependency chain, per-rank work) or a Z3 UNSAT of
"makespan <= bound - delta" (delta: one unit of the costs' least common
denominator). Z3 (time-indexed encoding, verifier/synth/z3synth.py) is called in
a bisection; each call has the remaining time as timeout and --rlimit.
Symmetry broken: micro-batch order on the first stage of each route only.
Incumbents: the generator families of the placement, two greedy list
schedules, one micro-batch at a time.
The written schedule is the best order with communication added by
verifier.semantics.lowering or by its timed variant (receives posted when the data is
produced), whichever analyze times faster; it must be VERIFIED by check
(nccl, the memory limit). OPTIMAL is printed only when analyze's nccl
makespan of that file equals the proved bound.

{COSTS_DOC}

output (text): one verdict line
  OPTIMAL makespan X   or   NOT PROVED best X, lower bound L, gap G (P%)
then the bound's proof, the written schedule's check and analyze figures,
the incumbents and the solver calls. --format json: one object, schema
"pp-synthesis/1": status (OPTIMAL | NOT_PROVED), makespan, lower_bound, gap,
placement, results [one per placement tried: placement, status, makespan,
dataflow_makespan, lower_bound, bound_source, best_source, communication,
check, peak_activations, bubble, incumbents, calls [{{T, status, seconds}}],
scale], costs, memory_limit, output. An infeasible cap (exit 1) prints
{{schema, status: INFEASIBLE, reason, least_feasible_memory}}.

exit codes: 0 OPTIMAL (schedule written if -o), 1 the memory limit is below
what any schedule of the placement needs (the least feasible cap is named),
2 bad input or usage (costs, flags, unsupported overlap costs), 3 NOT PROVED
(time limit or solver limit: best found and best lower bound, with the gap;
never OPTIMAL)."""


EMIT_RESERVE = 0.3  # seconds kept for checking, timing and writing the result


def _yes_no(v: str) -> bool:
    return v == "yes"


def add_arguments(p) -> None:
    p.add_argument("--ranks", type=int, required=True, metavar="P", help="number of ranks")
    p.add_argument("--microbatches", type=int, required=True, metavar="M",
                   help="number of micro-batches")
    p.add_argument("--costs", default=None, help=COSTS_HELP)
    p.add_argument("--memory-limit", type=int, default=None, metavar="K",
                   help="peak live activations per rank (verifier.semantics.memory units); default none")
    p.add_argument("--placement", choices=PLACEMENTS + ("any",), default="v",
                   help="stage placement (default v)")
    p.add_argument("--split-backward", choices=("yes", "no"), default="yes",
                   help="backward as I + W (default yes) or B")
    p.add_argument("--overlap", choices=("yes", "no"), default="no",
                   help="claim the bound for overlapped F&B pairs too (only when they "
                   "are not faster than F then B)")
    p.add_argument("--time-limit", type=float, default=60.0, metavar="S",
                   help="seconds for the whole search (default 60)")
    p.add_argument("--rlimit", type=int, default=0, metavar="N",
                   help="z3 resource limit per solver call (default 0: none)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write the best schedule (.json, or .csv; checked before work starts)")
    p.add_argument("--max-cells", type=guard.positive_int, default=SYNTH_MAX_CELLS, metavar="N",
                   help="largest ranks x 2 x micro-batches searched (default "
                   f"{SYNTH_MAX_CELLS}); larger is refused up front")


SYNTH_MAX_CELLS = 2048  # 100000 x 100000 ran > 60 s (1 GB) ignoring --time-limit 5; 16 x 128: > 100 s


def _validate(args, cm) -> None:
    for flag, v, lo in (("--ranks", args.ranks, 1), ("--microbatches", args.microbatches, 1),
                        ("--memory-limit", args.memory_limit, 1), ("--rlimit", args.rlimit, 0)):
        if v is not None and v < lo:
            raise FlagError(f"must be >= {lo}, got {v}", flag)
    if args.rlimit > 2**32 - 1:
        raise FlagError(f"must be at most {2**32 - 1} (z3's limit is 32 bits), got "
                            f"{args.rlimit}", "--rlimit")
    guard.check_generated_size(args.ranks, args.microbatches, 2,
                               guard.Limits(max_cells=args.max_cells))
    guard.check_output_path(args.output, "-o")
    if not (args.time_limit > 0 and args.time_limit < 1e7):
        raise FlagError(f"must be a number of seconds > 0, got {args.time_limit}",
                            "--time-limit")
    stages = [c for c in [cm.default, *cm.per_stage.values()]]
    if args.overlap == "yes":
        for c in stages:
            if c.FB < c.F + c.B or c.FI < c.F + c.I:
                raise FlagError(
                    f"--overlap yes with FB={c.FB:g} < F+B={c.F + c.B:g} or FI={c.FI:g} < "
                    f"F+I={c.F + c.I:g}: faster overlapped pairs are not encoded", "--costs")
    if args.split_backward == "yes" and args.memory_limit is not None:
        for c in stages:
            if c.I <= 0:
                raise FlagError(f"I={c.I:g}: a memory limit needs I > 0 (an I frees "
                               "its activation at a point in time)", "--costs")


def _one(placement: str, args, cm, time_limit: float, progress) -> dict:
    # deferred: the search and its imports (~20 ms) load when the command runs, not when the CLI builds its parser
    from verifier.synth.search import emit, search

    pb = make_problem(args.ranks, args.microbatches, placement, cm,
                      _yes_no(args.split_backward), args.memory_limit)
    out = search(pb, time_limit, args.rlimit, progress, costs=cm)
    e = out.emitted or emit(pb, out.orders, cm)
    sc = pb.scale
    lower, best = out.lower / sc, e.makespan
    if best < lower - 1e-9 * max(1.0, lower):
        raise AssertionError(f"analyze timed the written schedule at {best} below the proved "
                             f"bound {lower}: the bound is wrong")
    optimal = (out.proved and e.verdict == "VERIFIED"
               and abs(best - out.best / sc) <= 1e-9 * max(1.0, best))
    busy = max(sum(pb.jobs[j].dur for j in js) for js in pb.rank_jobs) / sc
    return {
        "placement": placement,
        "status": "OPTIMAL" if optimal else "NOT_PROVED",
        "makespan": best,
        "dataflow_makespan": out.best / sc,
        "lower_bound": lower,
        "bound_source": out.lower_source,
        "best_source": out.best_source,
        "communication": e.communication,
        "communication_candidates": [{"how": c[0], "makespan": c[1], "check": c[2]}
                                     for c in e.candidates],
        "check": e.verdict,
        "peak_activations": e.peak,
        "bubble": best - busy,
        "incumbents": [{"source": s, "makespan": m / sc} for s, m in out.incumbents],
        "calls": [{"T": c.T / sc, "status": c.status, "seconds": round(c.seconds, 3)}
                  for c in out.calls],
        "timed_out": out.timed_out,
        "seconds": round(out.seconds, 3),
        "scale": sc,
        "_schedule": e.schedule,
    }


def run(args, stdout, stderr) -> int:
    t0 = time.monotonic()
    cm = costs_mod.load(args.costs)
    _validate(args, cm)
    places = PLACEMENTS if args.placement == "any" else (args.placement,)
    feasible, refused = [], []
    for pl in places:
        least = least_feasible_memory(skeleton(pl, args.ranks, args.microbatches))
        if args.memory_limit is not None and args.memory_limit < least:
            refused.append(f"placement {pl} needs at least {least}")
        else:
            feasible.append(pl)
    if not feasible:
        least = min(int(r.rsplit(" ", 1)[1]) for r in refused)
        why = (f"--memory-limit {args.memory_limit} is below what any schedule needs "
               f"({'; '.join(refused)}: on some rank one micro-batch's activations of that "
               "many stages are live at once)")
        stderr.write(f"INFEASIBLE: {why}; least feasible cap: {least}\n")
        if args.format == "json":
            stdout.write(json.dumps({"schema": "pp-synthesis/1", "status": "INFEASIBLE",
                                     "reason": why, "least_feasible_memory": least}) + "\n")
        return 1
    results = []
    for k, pl in enumerate(feasible):
        left = args.time_limit - EMIT_RESERVE - (time.monotonic() - t0)
        share = max(0.0, left / (len(feasible) - k))
        results.append(_one(pl, args, cm, share, None))
    best = min(results, key=lambda r: r["makespan"])
    lower = min(r["lower_bound"] for r in results)
    status = "OPTIMAL" if all(r["status"] == "OPTIMAL" for r in results) \
        and best["makespan"] <= lower + 1e-9 * max(1.0, lower) else "NOT_PROVED"
    if args.output:
        try:
            save_schedule(best["_schedule"], args.output)
        except OSError as e:
            raise OutputError(f"cannot write: {e.strerror}", args.output) from None
    doc = {
        "schema": "pp-synthesis/1", "status": status, "makespan": best["makespan"],
        "lower_bound": lower, "gap": best["makespan"] - lower, "placement": best["placement"],
        "ranks": args.ranks, "microbatches": args.microbatches,
        "split_backward": args.split_backward, "overlap": args.overlap,
        "costs": cm.as_dict(), "memory_limit": args.memory_limit, "output": args.output,
        "not_feasible": refused,
        "results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
        "seconds": round(time.monotonic() - t0, 3),
    }
    if args.format == "json":
        stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        stdout.write(render_text(doc))
    return 0 if status == "OPTIMAL" else 3


def _g(x: float) -> str:
    return f"{x:.6g}"


def render_text(doc: dict) -> str:
    L = []
    if doc["status"] == "OPTIMAL":
        L.append(f"OPTIMAL makespan {_g(doc['makespan'])} (placement {doc['placement']})")
    else:
        gap = doc["gap"]
        pct = 100 * gap / doc["makespan"] if doc["makespan"] else 0.0
        L.append(f"NOT PROVED best {_g(doc['makespan'])}, lower bound {_g(doc['lower_bound'])}, "
                 f"gap {_g(gap)} ({pct:.1f}%) (placement {doc['placement']})")
    L.append(f"ranks {doc['ranks']}, micro-batches {doc['microbatches']}, split backward "
             f"{doc['split_backward']}, overlap {doc['overlap']}, memory limit "
             f"{doc['memory_limit'] if doc['memory_limit'] is not None else 'none'}")
    L.append("costs: " + ",".join(f"{k}={_g(v)}" for k, v in doc["costs"].items()
                                  if k != "stages"))
    L.append("bound: no order of the placement's computes (any communication, nccl or "
             "eager) has a smaller makespan")
    for note in doc["not_feasible"]:
        L.append(f"not feasible at this memory limit: {note}")
    for r in doc["results"]:
        L.append(f"[{r['placement']}] {r['status']}: makespan {_g(r['makespan'])} "
                 f"(dataflow {_g(r['dataflow_makespan'])}), lower bound "
                 f"{_g(r['lower_bound'])} by {r['bound_source']}")
        L.append(f"  best from {r['best_source']}; communication by {r['communication']}; "
                 f"check (nccl) {r['check']}; peak activations {_g(r['peak_activations'])}; "
                 f"bubble per rank {_g(r['bubble'])}")
        if r["timed_out"]:
            L.append("  stopped by the time limit or a solver limit")
        L.append("  incumbents: " + ", ".join(f"{i['source']} {_g(i['makespan'])}"
                                              for i in r["incumbents"]))
        if r["calls"]:
            L.append("  solver calls: " + ", ".join(
                f"<={_g(c['T'])} {c['status']} {c['seconds']:.2f}s" for c in r["calls"]))
    if doc["output"]:
        L.append(f"written: {doc['output']}")
    L.append(f"time {doc['seconds']:.2f} s")
    return "\n".join(L) + "\n"

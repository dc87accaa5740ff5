"""The command line: ``python -m reference run FILE ...``.

What it is: loads a schedule (JSON or PyTorch CSV, schema-validated), builds a
test model (reference.models) with ``layers_per_stage`` model layers per
schedule layer, runs the schedule in the reference executor in the checker's
witness order, runs the unpipelined baseline on the same micro-batches, and
prints per-micro-batch losses and the per-parameter gradient comparison.
``main(argv, stdout, stderr) -> int``; the help text below is the contract.

What it does not cover: user models (use the Python API, reference.executor),
timing (benchmarks/bench_reference.py), the checker's own report
(``python -m verifier check``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Sequence

from reference.names import LOSS_REDUCTIONS, MODELS
from verifier.format import guard
from verifier.check.properties import require_well_formed
from verifier.cli.app import RaisingParser, add_version, help_to, run_cli
from verifier.errors import FlagError
from verifier.extras import MissingExtra, require
from verifier.format.io import load_schedule, load_schedule_with_origin, source_name
from verifier.ir import ScheduleError
from verifier.semantics.lowering import lower

EXIT_MATCH, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2

DESCRIPTION = """\
Run a schedule in the single-process reference executor and compare its losses
and gradients with an unpipelined run of the same model on the same
micro-batches.

The model: --layers-per-stage K model blocks per schedule layer (schedule layer
L holds blocks L*K .. L*K+K-1; tied stages hold copies of the same blocks, whose
gradients are summed). Micro-batches: inputs and targets of shape
(--batch, --seq, --hidden), drawn from --seed. Loss: mean squared error per
micro-batch; --loss-reduction sum (default) back-propagates the sum over
micro-batches, mean the mean.

Order of execution: the checker's witness (graph engine, eager communication
model). A schedule the checker refutes is not run (exit 1, RESULT: REFUTED)
unless --force, which runs the rank programs round-robin as far as they go and
reports the first fault the executor detects (message tag mismatch, compute run
twice or never, data used before it exists, every rank blocked). The executor
follows the eager model (sends buffered): a schedule that deadlocks only under
the stricter nccl model runs here; `python -m verifier check` decides that.

Output (text): a header, then one line per micro-batch
  loss mb M: PIPELINE baseline BASELINE bitwise|diff D
then one line per parameter (named layer{i}.{name})
  grad NAME: max_abs A max_rel R bitwise|within tolerance|MISMATCH
and a last line
  RESULT: MATCH bitwise | MATCH within tolerance ... | MISMATCH ... |
          FAULT <kind> at rank R step S: ... | REFUTED by the checker: ...
(places of a PyTorch CSV or a lowered compute-only schedule written in the
user's coordinates, as `python -m verifier check` writes them: "rank 2 (CSV
row 3, column 7: `2F5`; lowered step 21)"; JSON fault.user_message/user_place)
Gradients are expected bitwise equal (per-micro-batch gradients summed in
micro-batch order in both runs); the tolerance otherwise is
|a-b| <= atol + rtol*|b| with float64 rtol 1e-10 atol 1e-12, float32 rtol 1e-4
atol 1e-6. --format json prints one JSON object with the same content
(keys: schedule, model, order, losses, params, result, bitwise, fault).

exit codes: 0 match (bitwise or within tolerance); 1 mismatch, a fault the
executor detected, or the checker refuted the schedule (the RESULT line says
which); 2 bad input or usage (one line on stderr, no traceback; under
--format json also one JSON object on stdout, {"format": "pp-error", ...}).

A schedule that is not well-formed (an undeclared stage, a stage on a rank
that does not exist, ...) is refused, exit 2, also with --force. The size
of the run is estimated before anything is built and refused over
--max-elements; the file over --max-bytes, --max-actions, --max-cells."""


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """The test model's flags, the same for ``run`` and ``activations``."""
    p.add_argument("--model", choices=MODELS, default="mlp", help="test model (default mlp)")
    p.add_argument("--layers-per-stage", type=_positive, default=1, metavar="K",
                   help="model blocks per schedule layer (default 1)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="parameter and data type (default float64)")
    p.add_argument("--seed", type=_seed, default=0, help=f"weights and data seed, 0..{MAX_SEED} (default 0)")
    p.add_argument("--hidden", type=_positive, default=16, help="hidden size (default 16)")
    p.add_argument("--batch", type=_positive, default=2, help="micro-batch size (default 2)")
    p.add_argument("--seq", type=_positive, default=4, help="sequence length (default 4)")


def build_parser(stdout: IO[str]) -> RaisingParser:
    parser = RaisingParser(
        prog="python -m reference",
        description="Reference executor for pipeline-parallel schedules.\n\n"
        "exit codes: 0 match, 1 mismatch / executor fault / refuted, 2 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=RaisingParser)
    p = sub.add_parser(
        "run",
        help="run a schedule and compare with the unpipelined baseline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="schedule file (.json, or .csv: PyTorch pipelining; - reads stdin)")
    _model_arguments(p)
    p.add_argument("--loss-reduction", choices=LOSS_REDUCTIONS, default="sum",
                   help="combine micro-batch losses by sum (default) or mean")
    p.add_argument("--force", action="store_true",
                   help="run even if the checker refutes it, round-robin, as far as it goes")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument("--max-elements", type=guard.positive_int, default=DEFAULT_MAX_ELEMENTS,
                   metavar="N", help="largest model + data the run may build, in tensor "
                   f"elements (estimated up front; default {DEFAULT_MAX_ELEMENTS}, about 2 GiB "
                   "of float64)")
    guard.add_limit_arguments(p)
    a = sub.add_parser(
        "activations",
        help="measure each stage's activation bytes on the model (for check --memory-limit 80GiB)",
        description=ACTIVATIONS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("file", metavar="FILE", help="schedule file (.json or .csv; - reads stdin)")
    _model_arguments(a)
    a.add_argument("-o", "--output", metavar="OUT.json", default=None,
                   help="write the JSON there instead of standard output")
    a.add_argument("--max-elements", type=guard.positive_int, default=DEFAULT_MAX_ELEMENTS,
                   metavar="N", help=f"as for run (default {DEFAULT_MAX_ELEMENTS})")
    guard.add_limit_arguments(a)
    help_to(stdout, parser, p, a)
    return parser


ACTIVATIONS_DESCRIPTION = """Measure the bytes one stage's activation for one micro-batch occupies: each
route's stages run forward on the first micro-batch, as the executor runs an F
(the last stage also computes the loss), and the bytes autograd saves for the
backward are counted (each tensor storage once, parameters excluded;
reference/activations.py). The model and micro-batch flags are those of `run`;
for your own model use the Python API, reference.measure_activation_bytes.

Output: one JSON object {"format": "pp-activation-bytes", "version": "1.0",
"model": {...}, "stages": {"0": BYTES, ...}, "flag": "--activation-bytes
0=BYTES,.."} on standard output, or in OUT.json with -o. Feed it to the
checker: python -m verifier check FILE --memory-limit 80GiB --activation-bytes
OUT.json (or analyze ... --activation-bytes OUT.json).

Not counted: allocator rounding, a stage's output waiting to be sent,
temporaries freed inside the forward, parameters, gradients, optimizer state.

exit codes: 0 measured; 2 bad input or usage."""


def _activations(args, stdout: IO[str]) -> int:
    torch = require("torch", "torch", "python -m reference activations")
    # deferred: imports torch (seconds to load); --help, usage and bad-input answers run without it
    from reference.activations import activation_document, measure_activation_bytes
    from reference.models import make_layers, make_microbatches, num_model_layers, stage_layer_map

    guard.check_output_path(args.output, "-o")
    source = source_name(args.file)
    s = load_schedule(args.file, limits=guard.limits_of(args))
    require_well_formed(s, source, "reference activations")
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    k = args.layers_per_stage
    with guard.naming(source):
        n = num_model_layers(s, k)
    _refuse_size(args, n, 1, s, source)
    layers = make_layers(args.model, num_model_layers(s, k), hidden=args.hidden, seed=args.seed,
                         dtype=dtype)
    (mb,) = make_microbatches(args.model, 1, hidden=args.hidden, batch=args.batch, seq=args.seq,
                              seed=args.seed, dtype=dtype)
    sizes = measure_activation_bytes(s, layers, mb, stage_layers=stage_layer_map(s, k))
    doc = activation_document(sizes, schedule=args.file, model={
        "model": args.model, "layers_per_stage": k, "hidden": args.hidden, "batch": args.batch,
        "seq": args.seq, "dtype": args.dtype, "seed": args.seed})
    text = json.dumps(doc, indent=1) + "\n"
    if args.output is None:
        stdout.write(text)
    else:
        guard.write_output(args.output, text, "-o")
        stdout.write(f"wrote {guard.printable(args.output)}: {len(sizes)} stages\n")
    return 0


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
DEFAULT_MAX_ELEMENTS = 1 << 28


def _seed(text: str) -> int:
    v = _int(text)
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..{MAX_SEED}, got {v}")
    return v


def estimated_elements(model: str, num_layers: int, hidden: int, num_microbatches: int,
                       batch: int, seq: int, num_stages: int) -> int:
    """A generous estimate of the tensor elements a run builds: parameters with
    their gradients (pipelined and baseline), inputs and targets, and the
    activations kept for every stage of every micro-batch (about 8 x hidden
    per token per block: the MLP's 4x hidden layer and its input, twice)."""
    per_block = (12 * hidden * hidden + 13 * hidden) if model == "transformer" else (
        8 * hidden * hidden + 5 * hidden)
    params = 4 * num_layers * per_block
    tokens = num_microbatches * batch * seq
    data = 2 * tokens * hidden
    acts = tokens * hidden * 8 * max(num_layers, num_stages)
    return params + data + acts


def _refuse_size(args, num_layers: int, num_microbatches: int, s, source: str) -> None:
    need = estimated_elements(args.model, num_layers, args.hidden, num_microbatches, args.batch,
                              args.seq, s.num_stages)
    if need > args.max_elements:
        raise FlagError(
            f"the {args.model} model of {num_layers} blocks, hidden {args.hidden}, "
            f"{num_microbatches} micro-batches of {args.batch} x {args.seq} needs about {need} "
            f"tensor elements, more than --max-elements {args.max_elements}; use a smaller "
            "--hidden, --batch, --seq or --layers-per-stage, or raise --max-elements", source)


def _fmt(x: float) -> str:
    return f"{x:.17g}"


def _run(args, stdout: IO[str]) -> int:
    torch = require("torch", "torch", "python -m reference")
    # deferred: imports torch (seconds to load); --help, usage and bad-input answers run without it
    from reference.baseline import compare, run_baseline
    from reference.executor import ExecutionError, RefutedScheduleError, run_pipeline
    from reference.models import make_layers, make_microbatches, num_model_layers

    source = source_name(args.file)
    s, origin = load_schedule_with_origin(args.file, limits=guard.limits_of(args))
    require_well_formed(s, source, "reference run")
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    k = args.layers_per_stage
    with guard.naming(source):
        n = num_model_layers(s, k)
    _refuse_size(args, n, s.num_microbatches, s, source)
    layers = make_layers(args.model, n, hidden=args.hidden, seed=args.seed, dtype=dtype)
    mbs = make_microbatches(
        args.model, s.num_microbatches, hidden=args.hidden, batch=args.batch,
        seq=args.seq, seed=args.seed, dtype=dtype,
    )
    out, text = _run_header(args, s, source, n)
    try:
        with guard.naming(source):
            res = run_pipeline(
                s, layers, mbs, layers_per_stage=k, loss_reduction=args.loss_reduction,
                force=args.force,
            )
    except RefutedScheduleError as e:
        origin = _lowered_origin(origin, s)
        out.update(result="refuted", bitwise=False, losses=[], params=[],
                   fault={"kind": e.kind, "rank": None, "step": None, "message": e.detail,
                          "user_message": origin.rewrite(e.detail)})
        text.append(f"RESULT: REFUTED by the checker: {origin.rewrite(e.detail)}")
        _emit(args, stdout, out, text)
        return EXIT_MISMATCH
    except ExecutionError as e:
        _fault(out, text, e, _lowered_origin(origin, s))
        _emit(args, stdout, out, text)
        return EXIT_MISMATCH
    c = compare(res, run_baseline(layers, mbs, loss_reduction=args.loss_reduction))
    result = _comparison(c, out, text)
    _emit(args, stdout, out, text)
    return EXIT_MATCH if result == "match" else EXIT_MISMATCH


def _run_header(args, s, source: str, n: int) -> tuple[dict, list[str]]:
    """The JSON object and the text lines ``run`` starts with: the schedule,
    the model of ``n`` blocks and the order the steps run in."""
    k = args.layers_per_stage
    header = {
        "schedule": {
            "file": args.file, "name": s.name, "family": s.family,
            "num_ranks": s.num_ranks, "num_microbatches": s.num_microbatches,
            "num_stages": s.num_stages, "tied_layers": len(s.tied_layers),
        },
        "model": {
            "model": args.model, "num_layers": n, "layers_per_stage": k,
            "hidden": args.hidden, "batch": args.batch, "seq": args.seq,
            "dtype": args.dtype, "seed": args.seed, "loss_reduction": args.loss_reduction,
        },
    }
    order = "round-robin (forced)" if args.force else "checker witness (graph engine, eager model)"
    out: dict = {**header, "order": order}
    text = [
        f"schedule: {source}: {guard.printable(s.name or '(unnamed)')}"
        f"{' [' + s.family + ']' if s.family else ''}: {s.num_ranks} ranks, "
        f"{s.num_microbatches} micro-batches, {s.num_stages} stages, "
        f"{len(s.tied_layers)} tied layers",
        f"model: {args.model} x {n} blocks ({k} per schedule layer), hidden {args.hidden}, "
        f"batch {args.batch}, seq {args.seq}, {args.dtype}, seed {args.seed}, "
        f"loss reduction {args.loss_reduction}",
        f"order: {order}",
    ]
    return out, text


def _fault(out: dict, text: list[str], e, origin) -> None:
    """Add the executor's fault ``e`` (an ExecutionError) to ``out`` and ``text``,
    placed in the user's file through ``origin``."""
    fault = {"kind": e.kind, "rank": e.rank, "step": e.step, "message": e.detail,
             "user_message": origin.rewrite(e.detail)}
    where = ""
    if e.rank is not None:
        place = origin.place(e.rank, e.step)
        fault["user_place"] = place.to_json()
        where = f" at {place.text()}"
    out.update(result="fault", bitwise=False, losses=[], params=[], fault=fault)
    text.append(f"RESULT: FAULT {e.kind}{where}: {origin.rewrite(e.detail)}")


def _comparison(c, out: dict, text: list[str]) -> str:
    """Add the comparison ``c`` of the pipelined run with the baseline
    (reference.baseline.compare) to ``out`` and ``text``; "match" or "mismatch"."""
    losses, params = [], []
    for x in c.losses:
        losses.append({"mb": x.mb, "pipeline": x.pipeline, "baseline": x.baseline,
                       "abs_diff": x.abs_diff, "bitwise": x.bitwise})
        state = "bitwise" if x.bitwise else f"diff {x.abs_diff:.3e}"
        text.append(f"loss mb {x.mb}: {_fmt(x.pipeline)} baseline {_fmt(x.baseline)} {state}")
    for p in c.params:
        params.append({"name": p.name, "max_abs": p.max_abs, "max_rel": p.max_rel,
                       "bitwise": p.bitwise, "within_tolerance": p.within_tolerance})
        state = "bitwise" if p.bitwise else ("within tolerance" if p.within_tolerance else "MISMATCH")
        text.append(f"grad {p.name}: max_abs {p.max_abs:.3e} max_rel {p.max_rel:.3e} {state}")
    for name in c.missing:
        text.append(f"grad {name}: MISSING from the pipelined run")
    for name in c.extra:
        text.append(f"grad {name}: EXTRA (not in the baseline)")
    tol = f"rtol {c.rtol:g} atol {c.atol:g}"
    if c.bitwise:
        result = "match"
        text.append(f"RESULT: MATCH bitwise ({len(c.params)} parameters, {len(c.losses)} losses)")
    elif c.matches:
        result = "match"
        text.append(f"RESULT: MATCH within tolerance {tol}: max abs {c.max_abs:.3e}, "
                    f"max rel {c.max_rel:.3e}")
    else:
        result = "mismatch"
        bad = list(c.mismatched)
        bad_losses = [x.mb for x in c.losses
                      if abs(x.pipeline - x.baseline) > c.atol + c.rtol * abs(x.baseline)]
        text.append(
            f"RESULT: MISMATCH ({tol}): {len(bad)} parameter(s) "
            f"[{', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}], "
            f"{len(bad_losses)} loss(es) {bad_losses[:5]}; max abs {c.max_abs:.3e}"
        )
    out.update(result=result, bitwise=c.bitwise, losses=losses, params=params, fault=None,
               tolerance={"rtol": c.rtol, "atol": c.atol})
    return result


def _lowered_origin(origin, s):
    """``origin`` of a schedule that run_pipeline lowers first (compute-only):
    places are then named in the input's steps too (verifier.format.origin)."""
    if s.is_compute_only and s.num_actions:
        return origin.with_lowering(s, lower(s))
    return origin


def _emit(args, stdout: IO[str], out: dict, text: list[str]) -> None:
    if args.format == "json":
        stdout.write(json.dumps(out, indent=1, allow_nan=True) + "\n")
    else:
        stdout.write("\n".join(text) + "\n")


def main(
    argv: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    errors: list = [((ScheduleError, ValueError, MissingExtra), EXIT_BAD_INPUT)]
    try:  # without torch, _run says which extra to install (MissingExtra, exit 2)
        # deferred: imports torch (seconds to load); --help, usage and bad-input answers run without it
        from reference.executor import ExecutionError
    except ImportError:
        pass
    else:  # _run reports those itself; listed so none escapes as a traceback
        errors.insert(0, (ExecutionError, EXIT_MISMATCH))
    def dispatch(args, out, err) -> int:
        return _activations(args, out) if args.command == "activations" else _run(args, out)

    return run_cli(build_parser, dispatch, argv, stdout, stderr,
                   errors=errors, on_broken_pipe=EXIT_MATCH)


__all__ = ["main", "build_parser", "DESCRIPTION"]

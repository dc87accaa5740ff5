"""The command line: ``python -m fastpath run FILE --nproc R ...`` (or under torchrun).

What it is: ``main(argv, stdout, stderr) -> int``. ``run`` loads a schedule
(JSON or PyTorch CSV via verifier.format.io; a compute-only one is lowered), verifies
it with the checker (graph engine), runs it on R ranks (spawned here, or the
ranks of a ``torchrun`` launch: ``torchrun --nproc-per-node R -m fastpath run
FILE``), optionally compares every gradient and loss with the reference
executor, writes a trace, and prints what it measured.

What it does not cover: generating schedules (``python -m verifier generate``),
models other than reference/models.py's, optimiser steps.
"""

from __future__ import annotations

import argparse
import os
from typing import IO, Sequence

from fastpath.plan import (
    blocking_batches,
    prepare_schedule,
    prepost_receives,
    split_cooldown,
    waited_sends,
)
from fastpath.preflight import (
    DEFAULT_MAX_ELEMENTS,
    BadInput,
    check_numbers,
    check_output_path,
    check_size,
    launch_env,
    verify_model,
)
from fastpath.supervise import Interrupted, die_with_parent, is_peer_loss, short_comm_error
from fastpath.trace import measured_idle, predicted_bubble, trace_schedule
from fastpath.watchdog import WatchdogTimeout
from verifier.format import guard
from verifier.check.properties import require_well_formed
from verifier.cli.app import RaisingParser, add_version, help_to, run_cli
from verifier.errors import InputError
from verifier.extras import MissingExtra, require
from verifier.format.io import load_schedule, save_schedule, schedule_to_dict, source_name
from verifier.ir import ScheduleError
from verifier.semantics import comm

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3
EXIT_WATCHDOG, EXIT_RANK_FAILED = 4, 5

DESCRIPTION = """\
Run a pipeline-parallel schedule on real ranks (one process per rank,
torch.distributed: gloo on CPU, NCCL on GPU).

Output (stdout), one line each:
  fastpath: FILE family=F ranks=R microbatches=M backend=B model=X dtype=D verify=VERDICT
  step: S s (iteration i of N; slowest rank)                     one per timed iteration
  rank R: busy=S s idle=S s predicted_bubble=S s                 last iteration
  param NAME max_abs=E max_rel=E bitwise=yes|no ok=yes|no        with --check
  loss mb M fast=V reference=V abs_diff=E bitwise=yes|no         with --check
  check: MATCH bitwise | MATCH within rtol=R atol=A | MISMATCH (N parameters: NAMES)
  trace: PATH                                                    with --trace
predicted_bubble is verifier.analysis.timeline's bubble with costs calibrated from
this run's mean F/B/I/W times ("n/a" if the analysis is unavailable).

Exit codes:
  0  ran (and, with --check, matched the reference within tolerance)
  1  --check found a difference, or the checker REFUTED the schedule
  2  bad input or usage (file, flags, ranks that do not fit the schedule, a
     schedule that is not well-formed (--no-verify included), the launch
     environment, a --trace path that cannot be written), checked before any
     rank starts; also a --trace write that fails at the end
  3  the checker said UNKNOWN (never run as if verified; --no-verify overrides)
  4  watchdog: a rank waited longer than --watchdog-seconds (the message names
     rank, step, action and peer); every rank is stopped
  5  a rank failed otherwise: its own exception or a fault of its schedule, or
     its process died ("rank 2 died (SIGKILL)"); the ranks that then lost a
     connection are listed after it as "consequence:" lines
  130  interrupted (SIGINT, Ctrl-C): forwarded to every rank, all reaped first
  143  terminated (SIGTERM): forwarded to every rank, all reaped first
A launcher killed outright (SIGKILL) takes its ranks with it: each rank gets
SIGKILL from the kernel when the launcher dies (Linux), and its watchdog ends
it within a fraction of a second when the launcher's pid is gone (elsewhere).

Environment: a torchrun-style launch (TORCHELASTIC_RUN_ID, RANK, WORLD_SIZE or
LOCAL_RANK set) needs RANK and WORLD_SIZE integers with 0 <= RANK <
WORLD_SIZE, LOCAL_RANK (default RANK) in [0, WORLD_SIZE), MASTER_ADDR and
MASTER_PORT (1..65535); anything else is exit 2 naming the variable.
"""


def build_parser(stdout: IO[str]) -> RaisingParser:
    p = RaisingParser(prog="python -m fastpath", description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=RaisingParser)
    r = sub.add_parser("run", help="run a schedule on real ranks", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("file", help="schedule file (pp-schedule JSON, or PyTorch pipelining CSV; - reads stdin)")
    r.add_argument("--nproc", type=int, default=None,
                   help="ranks to spawn, >= 1 (must equal the schedule's num_ranks, and "
                        "WORLD_SIZE under torchrun; default: the schedule's)")
    r.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="auto: nccl when CUDA has a device per rank, else gloo (default auto)")
    r.add_argument("--model", choices=("mlp", "transformer"), default="mlp",
                   help="reference/models.py layer stack (default mlp)")
    r.add_argument("--layers-per-stage", type=int, default=1, metavar="K",
                   help="model layers per schedule layer (default 1)")
    r.add_argument("--hidden", type=int, default=16, help="hidden size (default 16)")
    r.add_argument("--batch", type=int, default=2, help="micro-batch size (default 2)")
    r.add_argument("--seq", type=int, default=4, help="sequence length (default 4)")
    r.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="parameters and activations (default float64)")
    r.add_argument("--seed", type=int, default=0,
                   help="seed of the layers and micro-batches (default 0)")
    r.add_argument("--loss-reduction", choices=("sum", "mean"), default="sum",
                   help="gradients of the sum or the mean of micro-batch losses (default sum)")
    r.add_argument("--grad-order", choices=("microbatch", "running"), default="microbatch",
                   help="microbatch: keep each micro-batch's weight gradient and sum them in "
                        "micro-batch order like reference/ (bitwise in float64); running: "
                        "accumulate into .grad in the order the rank runs B/W, all-reduce "
                        "tied layers (faster, less memory; equal within tolerance). "
                        "Default microbatch")
    r.add_argument("--split", choices=("autograd", "graph"), default="autograd",
                   help="I/W split: autograd (reference/split.py: W repeats the stage's "
                        "activation-gradient work) or graph (PyTorch pipelining's "
                        "stage_backward_input/weight: W reuses what I captured; faster). "
                        "Both are bitwise equal to reference/ on the test models. "
                        "Default autograd")
    r.add_argument("--iterations", type=int, default=1, help="timed steps (default 1)")
    r.add_argument("--warmup", type=int, default=0, help="untimed steps first (default 0)")
    r.add_argument("--check", action="store_true",
                   help="compare every gradient and loss with reference/ (exit 1 on a difference)")
    r.add_argument("--trace", metavar="OUT.json",
                   help="write what each rank executed, with timestamps, as a pp-schedule "
                        "(its directory must exist and be writable, the path not a "
                        "directory or a device: checked before the run)")
    r.add_argument("--watchdog-seconds", type=float, default=300.0,
                   help="a rank waiting longer than this stops the run (exit 4; a finite "
                        "number in [0.001, 1e6]; default 300)")
    _add_comm_arguments(r)
    guard.add_limit_arguments(r)
    r.add_argument("--max-elements", type=int, default=None, metavar="N",
                   help="largest model + data the run may build on this machine, in tensor "
                        "elements (estimated up front from the model, sizes, ranks and "
                        "--check: fastpath.preflight.estimated_elements; default 1073741824, "
                        "about 8 GiB of float64); a larger run is exit 2 naming this flag")
    r.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per rank, 1..1024 (default: cores / ranks)")
    help_to(stdout, p, *sub.choices.values())
    return p


def _add_comm_arguments(r) -> None:
    """The flags that decide what is verified and which communication runs."""
    r.add_argument("--no-verify", action="store_true",
                   help="run even when the checker refutes the schedule (or says UNKNOWN)")
    r.add_argument("--comm-model", choices=("auto",) + comm.NAMES, default="auto",
                   help="the checker's communication model. auto (default): the model of "
                        "the backend that runs it (gloo: gloo; nccl: nccl). Another model "
                        "only if VERIFIED under it implies the backend's (order nccl => "
                        "nccl-pairs => gloo => eager): eager on gloo or NCCL is exit 2")
    r.add_argument("--wait-batches", action="store_true",
                   help="wait for every BATCH right after posting it, sends included "
                        "(fastpath.plan.blocking_batches: a different schedule, verified "
                        "and traced as such; PyTorch's 1F1B waits the same way). On gloo "
                        "with as many ranks as cores it measured faster on an idle "
                        "machine and slower on a loaded one (benchmarks/bench_fastpath.py "
                        "--batches waited)")
    r.add_argument("--prepost-receives", type=lookahead_arg, default=0, metavar="N|all",
                   help="post each receive N computes earlier than the schedule does (all: "
                        "every receive at the start of the step, after the first compute "
                        "when it consumes none), so a send finds its "
                        "receive posted (fastpath.plan.prepost_receives: a different "
                        "schedule, verified and traced as such; more receive buffers held). "
                        "A waited BATCH keeps its sends and its wait. nccl refutes it in "
                        "general (it reorders each rank's stream); gloo verifies it: no "
                        "stream order, and a waited send's receive is already posted. "
                        "benchmarks/bench_fastpath.py --prepost measures it. Default 0")
    r.add_argument("--split-cooldown", action="store_true",
                   help="run each backward after the rank's last forward as I, the send of "
                        "its input gradient, then W (fastpath.plan.split_cooldown: a "
                        "different schedule, verified and traced as such): the previous "
                        "stage, left with only backwards, gets each gradient before W runs. "
                        "Same gradients; activations freed one action later, at W. "
                        "Each split costs about 0.3 ms of CPU per I and W, so with tiny "
                        "computes it is slower. "
                        "benchmarks/bench_fastpath.py "
                        "--split-cooldown measures it")
    r.add_argument("--wait-sends", action="store_true",
                   help="wait for every send right after posting it (fastpath.plan."
                        "waited_sends: each send becomes a waited BATCH; a different "
                        "schedule, verified and traced as such). With --prepost-receives "
                        "all on gloo, the peer's receive is already posted, so the wait "
                        "ends once the data has moved; only the gloo model justifies that "
                        "combination (benchmarks/bench_fastpath.py --batches sends)")


def lookahead_arg(text: str) -> int | None:
    """argparse type of --prepost-receives (also benchmarks/bench_fastpath.py): N >= 0, or
    "all" (None: every receive as early as fastpath.plan.prepost_receives puts it: at
    the start, or after a first compute that consumes none)."""
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'all', got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'all', got {text!r}")
    return n


def main(argv: Sequence[str] | None = None, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None) -> int:
    return run_cli(build_parser, _run, argv, stdout, stderr,
                   errors=(((InputError, MissingExtra), EXIT_BAD_INPUT),))


def _bad(stderr, msg: str) -> int:
    stderr.write(f"error: {msg}\n")
    return EXIT_BAD_INPUT


def _preflight(args):
    """Everything checked before the schedule is read and any rank starts: the launch
    environment (a LaunchEnv under torchrun, else None); BadInput otherwise."""
    for name in ("layers_per_stage", "hidden", "batch", "seq", "iterations"):
        v = getattr(args, name)
        if v < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.warmup < 0:
        raise BadInput(f"--warmup must be >= 0, got {args.warmup}")
    check_numbers(args)
    if args.max_elements is None:
        args.max_elements = DEFAULT_MAX_ELEMENTS
    elif args.max_elements < 1:
        raise BadInput(f"--max-elements must be >= 1, got {args.max_elements}")
    tr = launch_env()
    if args.trace is not None and (tr is None or tr.rank == 0):
        check_output_path(args.trace, "--trace")
    return tr


def _run(args, stdout, stderr) -> int:
    require("torch", "torch", "python -m fastpath")
    # deferred: imports torch (seconds to load); --help, usage and bad-input answers run without it
    from fastpath.check import refusal, verify
    from fastpath.launch import Job

    try:
        tr = _preflight(args)
        source = source_name(args.file)
        schedule = _schedule_to_run(args, source)
        nproc = _nproc(args, tr, schedule, source)
        backend = _backend(args, nproc)
        model = None if args.no_verify else verify_model(args.comm_model, backend)
    except BadInput as e:
        return _bad(stderr, str(e))
    rank = tr.rank if tr else 0
    verdict = "not-checked"
    if model is not None:
        v = verify(schedule, model)
        verdict = f"{v.verdict}({v.comm_model})"
        if v.verdict != "VERIFIED":
            if rank == 0:
                stderr.write(refusal(v, source) + "\n")
                if args.prepost_receives != 0 and comm.model(model).has_streams:
                    stderr.write("  (--prepost-receives reorders each rank's stream, which "
                                 f"{model} refutes in general; on gloo verify with "
                                 "--comm-model gloo, the default there)\n")
            return EXIT_MISMATCH if v.verdict == "REFUTED" else EXIT_UNKNOWN
    job = Job(
        schedule=schedule_to_dict(schedule), model=args.model,
        layers_per_stage=args.layers_per_stage, hidden=args.hidden, batch=args.batch,
        seq=args.seq, seed=args.seed, dtype=args.dtype, loss_reduction=args.loss_reduction,
        grad_order=args.grad_order, split=args.split, iterations=args.iterations,
        warmup=args.warmup,
        threads=args.threads,
    )
    code, results = _launch(args, tr, job, nproc, backend, stderr)
    if results is None:
        return code
    return _report(args, schedule, job, results[0], backend, verdict, stdout, stderr)


def _schedule_to_run(args, source: str):
    """The schedule the ranks run: the file's, lowered when compute-only, with the
    communication changes the flags ask for (each a different schedule, verified as
    such). BadInput for what cannot run at all."""
    schedule = load_schedule(args.file, limits=guard.limits_of(args))
    # lowering, planning and the ranks assume property 1: --no-verify included
    require_well_formed(schedule, source, "fastpath run")
    try:
        check_size(schedule, args)
    except BadInput as e:
        raise BadInput(f"{source}: {e}") from None
    schedule = prepare_schedule(schedule)
    if args.split_cooldown:
        schedule = split_cooldown(schedule)
    if args.prepost_receives != 0:
        try:
            schedule = prepost_receives(schedule, args.prepost_receives)
        except ValueError as e:
            raise BadInput(f"{source}: --prepost-receives: {e}") from None
    if args.wait_batches:
        schedule = blocking_batches(schedule)
    if args.wait_sends:
        schedule = waited_sends(schedule)
    return schedule


def _nproc(args, tr, schedule, source: str) -> int:
    if tr and args.nproc is not None and args.nproc != tr.world:
        raise BadInput(f"--nproc is {args.nproc} but WORLD_SIZE is {tr.world} "
                       "(the ranks torchrun started)")
    nproc = args.nproc if args.nproc is not None else (tr.world if tr else schedule.num_ranks)
    if nproc != schedule.num_ranks:
        where = "--nproc" if args.nproc is not None or not tr else "WORLD_SIZE"
        raise BadInput(f"{source}: the schedule has {schedule.num_ranks} ranks, "
                       f"{where} is {nproc}")
    return nproc


def _backend(args, nproc: int) -> str:
    # deferred: imports torch (seconds to load); --help, usage and bad-input answers run without it
    from fastpath.launch import choose_backend

    if args.backend == "nccl":
        import torch

        if not torch.cuda.is_available():
            raise BadInput("--backend nccl needs CUDA, and no CUDA device is available")
    return choose_backend(args.backend, nproc)


def _launch(args, tr, job, nproc: int, backend: str, stderr):
    """Run the ranks: (exit code, None) when the run failed or this is not rank 0,
    else (0, the ranks' results)."""
    # deferred: imports torch (seconds to load); --help, usage and bad-input answers run without it
    from fastpath.launch import RunFailed, spawn

    rank = tr.rank if tr else 0
    try:
        if tr:
            results = _torchrun_rank(tr, job, backend, args.watchdog_seconds)
            if rank != 0:
                return EXIT_OK, None
        else:
            # no overall deadline: the watchdog bounds every wait, so a long run
            # (--iterations) that makes progress is never cut short
            results = spawn([job], nproc, backend=backend, watchdog_s=args.watchdog_seconds,
                            deadline_s=float("inf"))
    except RunFailed as e:
        _failure_lines(e, stderr)
        return e.exit_code, None
    except Interrupted as e:
        stderr.write(f"interrupted: {e}; every rank stopped\n")
        return e.exit_code, None
    except Exception as e:  # noqa: BLE001 - under torchrun: this rank's failure
        text = short_comm_error(str(e)) if is_peer_loss(e) else str(e)
        stderr.write(f"error: rank {rank}: {text}\n")
        return (EXIT_WATCHDOG if isinstance(e, WatchdogTimeout) else EXIT_RANK_FAILED), None
    return EXIT_OK, results


def _torchrun_rank(tr, job, backend: str, watchdog_s: float):
    """This process as rank ``tr.rank`` of a torchrun launch; under torchrun's agent it
    dies with the agent (fastpath.supervise), as a spawned rank does with fastpath."""
    # deferred: imports torch (seconds to load); --help, usage and bad-input answers run without it
    from fastpath.launch import rank_main

    parent = None
    if tr.elastic:
        parent = os.getppid()
        die_with_parent(parent)
    return rank_main(tr.rank, tr.world, [job], backend=backend, watchdog_s=watchdog_s,
                     local_rank=tr.local_rank, parent_pid=parent)


def _failure_lines(e, stderr) -> None:
    """The root cause first (its message as it is), then one line per consequence."""
    stderr.write(f"error: {e}\n")
    for f in e.others:
        first = f.message.strip().splitlines()[0] if f.message.strip() else ""
        if f.kind == "peer":
            stderr.write(f"  consequence: {first}\n")
        else:
            stderr.write(f"  then: {first}\n")


def _report(args, schedule, job, jr, backend, verdict, stdout, stderr) -> int:
    # deferred: imports torch (seconds to load); --help, usage and bad-input answers run without it
    from fastpath.check import comparison_lines, differential, merge, reference_run

    w = stdout.write
    w(f"fastpath: {guard.printable(args.file)} family={schedule.family or '-'} ranks={schedule.num_ranks} "
      f"microbatches={schedule.num_microbatches} backend={backend} model={args.model} "
      f"dtype={args.dtype} verify={verdict}\n")
    for i, per_rank in enumerate(jr.step_seconds):
        w(f"step: {max(per_rank):.6f} s (iteration {i + 1} of {len(jr.step_seconds)}; "
          "slowest rank)\n")
    idle = measured_idle(jr, schedule)
    try:
        pred = predicted_bubble(schedule, jr, args.comm_model)
    except Exception:  # noqa: BLE001 - a prediction problem never fails the run
        pred = None
    for r, (busy, idl) in enumerate(idle):
        pb = f"{pred[1][r]:.6f} s" if pred else "n/a"
        w(f"rank {r}: busy={busy:.6f} s idle={idl:.6f} s predicted_bubble={pb}\n")
    code = EXIT_OK
    if args.check:
        try:
            ref = reference_run(schedule, job)
        except ScheduleError as e:
            stderr.write(f"error: the reference executor refused the schedule: {e}\n")
            return EXIT_MISMATCH
        cmp = differential(merge(jr), ref)
        for line in comparison_lines(cmp):
            w(line + "\n")
        if cmp.bitwise:
            w("check: MATCH bitwise\n")
        elif cmp.matches:
            w(f"check: MATCH within rtol={cmp.rtol:g} atol={cmp.atol:g} "
              f"(max_abs={cmp.max_abs:.3e})\n")
        else:
            bad = cmp.mismatched
            w(f"check: MISMATCH ({len(bad)} parameters: {', '.join(bad[:8])})\n")
            code = EXIT_MISMATCH
    if args.trace:
        try:
            save_schedule(trace_schedule(schedule, jr, backend), args.trace)
        except OSError as e:
            stderr.write(f"error: --trace {args.trace}: cannot write it: "
                         f"{e.strerror or e}\n")
            return EXIT_BAD_INPUT
        w(f"trace: {args.trace}\n")
    return code

"""``python -m verifier record``: run a training script on CPU ranks and record its communication.

What it is: the command line of the recorder. It checks its flags and that
torch is installed (without importing it: one line naming the ``[torch]``
extra, exit 2), then runs the torch side (``python -m fastpath.record
launch``: fastpath/record/) in a subprocess, which runs the script on
``--nproc`` ranks and writes the program; with ``--check`` it then checks the
program with ``python -m verifier check``'s own code.

What it does not cover: recording itself (fastpath.record), the meaning of a
program and its verdicts (the check command, specs/SEMANTICS.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from typing import IO

from verifier.cli.app import main as verifier_main  # --check runs the check command itself
from verifier.errors import FlagError
from verifier.extras import MissingExtra, install_hint

HELP = "run a training script on CPU ranks (gloo) and record its communication as a program"

DESCRIPTION = """\
Run SCRIPT (or -m MODULE) unmodified, one process per rank on CPU with gloo
(MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK set as torchrun sets
them), and record per rank every torch.distributed point-to-point call (send,
recv, isend, irecv, batch_isend_irecv / P2POp), every wait()/is_completed() on
their handles, barrier and collectives, with peer, group, shape, dtype and the
script's own file and line. A script that asks for NCCL runs on gloo and the
program says so (recorded.backend_requested). torch.distributed.pipelining's
and DeepSeek's DualPipe's forward/backward are recorded as computes (stage,
micro-batch) and their messages carry payloads; other runtimes can say the
same with fastpath.record.compute / payload (README).

The program (pp-schedule 1.1, kind "program") is written to --output whatever
happens: each rank appends its calls to a file as it makes them, so a hang, a
killed rank or Ctrl-C keeps everything posted. A run in which no rank makes a
new call for --timeout seconds is hung: every rank is stopped, the call it is
blocked in is marked "returned": false. Check it with
`python -m verifier check PROGRAM`, or here with --check.

usage forms:
  python -m verifier record --nproc 4 [options] -- train.py [ARGS...]
  python -m verifier record --nproc 4 [options] -m package.train [ARGS...]
  torchrun --nproc-per-node 4 -m verifier.record [--timeout S] [-o OUT] train.py [ARGS...]

output: one line, on stdout when the run finished ("recorded R ranks: N
point-to-point ops, ...; program written to OUT"), else "error: ..." on stderr
naming the rank, what it raised or the call it was blocked in and where; with
--check, then the check's own output.

exit codes:
  0    the script finished on every rank (with --check: and the program is VERIFIED)
  1    with --check: the program is REFUTED (a deadlock, a mismatch...)
  2    bad input: no such script, not a Python script, a script that makes no
       point-to-point call, a bad flag, torch not installed
  3    with --check: UNKNOWN (a solver limit; never a pass)
  5    the run failed: a rank raised (its exception shown), died (killed from
       outside) or hung (no progress for --timeout seconds); the partial program
       is written (with --check, a REFUTED or UNKNOWN verdict on it wins)
  130  interrupted (Ctrl-C; 143 for SIGTERM); the partial program is written
"""

EXIT_FAILED, EXIT_INTERRUPTED = 5, 130
_CHILD_GRACE_S = 30.0  # how long the launcher gets to stop its ranks after Ctrl-C


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=int, required=True, metavar="R",
                   help="number of ranks (processes) to start")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds without any rank making a new torch.distributed call before "
                        "the run counts as hung and is stopped (default 60; counted from when "
                        "every rank has started)")
    p.add_argument("-o", "--output", default="program.json", metavar="OUT",
                   help="where to write the recorded program (default program.json)")
    p.add_argument("--check", action="store_true",
                   help="check the recorded program (as `python -m verifier check OUT`) and "
                        "exit with its verdict")
    p.add_argument("--comm-model", default=None, metavar="MODEL",
                   help="with --check: the communication model to decide under (as check's "
                        "--comm-model: nccl, the default, nccl-pairs, gloo, eager or all)")
    p.add_argument("--engine", default=None, metavar="ENGINE",
                   help="with --check: the decision engine (as check's --engine: auto, the "
                        "default, graph (the replay), z3 or both)")
    p.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE",
                   help="run a module (as python -m MODULE ARGS...) instead of a script")
    p.add_argument("script", nargs=argparse.REMAINDER, metavar="-- SCRIPT [ARGS...]",
                   help="the script and its arguments (after --)")


def target_of(args: argparse.Namespace) -> list[str]:
    """``[SCRIPT, ARGS...]`` or ``["-m", MODULE, ARGS...]`` from the command line."""
    if args.module is not None:
        if not args.module:
            raise FlagError("needs a module name", "-m")
        return ["-m", *args.module]
    rest = list(args.script)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if rest[:1] == ["-m"]:
        if len(rest) < 2:
            raise FlagError("needs a module name", "-m")
        return rest
    if not rest:
        raise FlagError("no script given: record --nproc R [options] -- SCRIPT [ARGS...] "
                        "or -m MODULE [ARGS...]", "SCRIPT")
    return rest


def check_flags(args: argparse.Namespace) -> None:
    for flag, value in (("--comm-model", args.comm_model), ("--engine", args.engine)):
        if value is not None and not args.check:
            raise FlagError("only applies with --check", flag)
    if args.nproc < 1:
        raise FlagError(f"must be at least 1, got {args.nproc}", "--nproc")
    if not args.timeout > 0:
        raise FlagError(f"must be a positive number of seconds, got {args.timeout:g}",
                        "--timeout")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise FlagError(f"folder {out_dir} does not exist", "--output")


def require_torch(needed_by: str) -> None:
    """MissingExtra (exit 2, one line) unless torch is installed; does not import it."""
    if importlib.util.find_spec("torch") is None:
        raise MissingExtra(install_hint("torch", "torch", needed_by), name="torch")


def _launch(target: list[str], args: argparse.Namespace) -> int:
    """Run the launcher; Ctrl-C here is passed on to it and waited for."""
    cmd = [sys.executable, "-m", "fastpath.record", "launch", "--nproc", str(args.nproc),
           "--timeout", repr(args.timeout), "-o", args.output, "--", *target]
    env = dict(os.environ, PPV_RECORD_PARENT=str(os.getpid()))
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        sig = signal.SIGINT
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        old = None
    try:
        try:
            proc.send_signal(sig)  # it may have had it from the terminal already
        except OSError:
            pass
        try:
            proc.wait(timeout=_CHILD_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return EXIT_INTERRUPTED


def run(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    target = target_of(args)
    check_flags(args)
    require_torch("record")
    stdout.flush()
    stderr.flush()
    code = _launch(target, args)
    if not args.check or code not in (0, EXIT_FAILED) or not os.path.exists(args.output):
        return code
    model = [] if args.comm_model is None else ["--comm-model", args.comm_model]
    model += [] if args.engine is None else ["--engine", args.engine]
    verdict = verifier_main(["check", args.output, *model], stdout, stderr)
    if code == EXIT_FAILED and verdict not in (1, 3):
        return code
    return verdict

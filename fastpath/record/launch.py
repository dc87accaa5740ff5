"""The recording launcher: one process per rank, a watchdog over them all, one program out.

What it is: ``record(target, nproc=R, timeout_s=S, out=PATH)`` checks the
target (a script that exists and compiles as Python, or an importable
module), starts R workers (``python -m fastpath.record worker``, each in its
own session, with the environment torchrun would give it: MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, and
OMP_NUM_THREADS=1 unless set), follows their part files
(fastpath.record.parts) and ends the run:

- every rank's script ended: the ranks are told to exit (``x`` on the control
  pipe);
- a rank raised, or its process died (killed from outside): the others get
  ``FAILURE_GRACE_S`` to end too, then are stopped (``s``: each writes the
  call it is blocked in) and, ``STOP_GRACE_S`` later, killed;
- no rank issued a new call for ``timeout_s`` seconds (once all have started;
  ``is_completed`` polls do not count): the run is hung; every rank is stopped the same way;
- Ctrl-C or SIGTERM to the launcher: the same, outcome ``interrupted``.

Then the parts are merged into the program, written to ``out`` whatever
happened, and ``RecordResult`` says how it went: ``exit_code`` (0 finished, 2
bad input: no such script, not Python, no point-to-point call, 5 a rank
raised, died or hung, 130/143 interrupted) and ``message``, one line. No rank
outlives the launcher: each worker dies with it (parent-death signal), sees
its control pipe close, and its whole session is killed at the end.

What it does not cover: the torch side (fastpath.record.worker, recorder),
checking (``python -m verifier record --check``), multi-node runs (use
torchrun with ``-m verifier.record``). Imports no torch.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from fastpath.record.parts import RankEnd, count_ops, merge, part_path, write_program
from fastpath.supervise import Interrupted, signals_raise
from verifier.errors import InputError

FAILURE_GRACE_S = 1.0  # after a rank failed, how long the others get to end by themselves
STOP_GRACE_S = 3.0  # after "stop", how long a rank gets to write its record and exit
START_ALLOWANCE_S = 120.0  # how long ranks may take to start (import torch) on a loaded machine
POLL_S = 0.05
EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 5, 130


@dataclass(frozen=True)
class RecordResult:
    program: dict
    path: str
    exit_code: int
    message: str


def check_target(target: list[str]) -> None:
    """Raise ``InputError`` (one line) unless ``target`` names a Python script that
    compiles or a module that can be found."""
    if not target:
        raise InputError("no script given: record [options] -- SCRIPT [ARGS...] or -m MODULE")
    if target[0] == "-m":
        if len(target) < 2:
            raise InputError("-m needs a module name")
        import importlib.util

        try:
            spec = importlib.util.find_spec(target[1])
        except (ImportError, ValueError) as e:
            raise InputError(f"cannot find module {target[1]!r}: {e}", "-m") from None
        if spec is None:
            raise InputError(f"no module named {target[1]!r}", "-m")
        return
    path = target[0]
    if not os.path.exists(path):
        raise InputError(f"script not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not a Python script")
    try:
        with open(path, "rb") as f:
            source = f.read()
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise InputError(f"{path} is not a Python script: {e.msg} at line {e.lineno}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not a Python script: {e}") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None


class _Follow:
    """What the launcher has read of one rank's part file."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.started = False
        self.ended: str | None = None  # "finished" | "raised"
        self.ops = 0
        self.tail = b""

    def poll(self) -> bool:
        """Read what is new; True when a line (an op, a group, the backend...) was added."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return False
        if not data:
            return False
        self.offset += len(data)
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        grew = False
        for line in lines:
            if line.startswith(b'{"op":"is_completed"'):  # polling is not progress
                continue
            grew = True
            if line.startswith(b'{"op"'):
                self.ops += 1
            elif line.startswith(b'{"t":"start"'):
                self.started = True
            elif line.startswith(b'{"t":"end"'):
                self.ended = "raised" if b'"outcome":"raised"' in line else "finished"
        return grew


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (fastpath.launch has the same, but
    importing it loads torch)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class _Run:
    def __init__(self, target, nproc, timeout_s, parts_dir, env):
        self.nproc, self.timeout_s = nproc, timeout_s
        self.procs: list[subprocess.Popen] = []
        self.ctl: list[int | None] = []
        self.follow = [_Follow(part_path(parts_dir, r)) for r in range(nproc)]
        self.ends = [RankEnd() for _ in range(nproc)]
        self.reason = "finished"  # or "failure", "timeout", "interrupt"
        self._start(target, parts_dir, env)

    def _start(self, target, parts_dir, env) -> None:
        port = free_port()
        for r in range(self.nproc):
            rd, wr = os.pipe()
            e = dict(env)
            e.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                     WORLD_SIZE=str(self.nproc), LOCAL_RANK=str(r),
                     LOCAL_WORLD_SIZE=str(self.nproc), GROUP_RANK="0", ROLE_RANK=str(r),
                     ROLE_WORLD_SIZE=str(self.nproc))
            e.setdefault("OMP_NUM_THREADS", "1")
            cmd = [sys.executable, "-m", "fastpath.record", "worker", "--parts", parts_dir,
                   "--ctl", str(rd), "--parent", str(os.getpid()), "--", *target]
            try:
                p = subprocess.Popen(cmd, env=e, pass_fds=(rd,), start_new_session=True)
            finally:
                os.close(rd)
            self.procs.append(p)
            self.ctl.append(wr)

    def watch(self) -> None:
        started_at = last_progress = time.monotonic()
        failed_at = None
        all_started = False
        while True:
            now = time.monotonic()
            for f in self.follow:
                if f.poll():
                    last_progress = now
            for r, p in enumerate(self.procs):
                code = p.poll()
                if code is not None and self.follow[r].ended is None and self.ends[r].ended_by is None:
                    self.follow[r].poll()  # the lines it wrote before dying
                    if self.follow[r].ended is None:
                        self.ends[r] = RankEnd("signal", _signal_name(code)) if code < 0 \
                            else RankEnd("exited")
                        failed_at = failed_at or now
            if all(f.ended for f in self.follow):
                return
            if failed_at is None and any(f.ended == "raised" for f in self.follow):
                failed_at = now
            if failed_at is not None and now - failed_at > FAILURE_GRACE_S:
                self.reason = "failure"
                return
            if all_started or all(f.started for f in self.follow):
                if not all_started:  # the clock starts once every rank runs its script
                    all_started, last_progress = True, now
                if now - last_progress > self.timeout_s:
                    self.reason = "timeout"
                    return
            elif now - started_at > START_ALLOWANCE_S + self.timeout_s:
                self.reason = "timeout"
                return
            time.sleep(POLL_S)

    def finish(self) -> None:
        """End every rank: ``x`` to all when every script ended, else ``s`` to those
        still running, then kill what is left of each rank's session and reap."""
        saved = []
        try:
            saved = [(s, signal.signal(s, signal.SIG_IGN)) for s in (signal.SIGINT, signal.SIGTERM)]
        except ValueError:  # not the main thread
            pass
        try:
            done = all(f.ended for f in self.follow)
            for r, wr in enumerate(self.ctl):
                if self.follow[r].ended is None and self.ends[r].ended_by is None:
                    self.ends[r] = RankEnd(self.reason)
                try:
                    os.write(wr, b"x" if done or self.follow[r].ended else b"s")
                except OSError:
                    pass
            t_end = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < t_end and any(p.poll() is None for p in self.procs):
                time.sleep(POLL_S)
            for p in self.procs:
                try:
                    os.killpg(p.pid, signal.SIGKILL)  # the rank and anything it started
                except (ProcessLookupError, PermissionError):
                    pass
                p.wait()
            for wr in self.ctl:
                try:
                    os.close(wr)
                except OSError:
                    pass
        finally:
            for s, h in saved:
                signal.signal(s, h)


def record(target: list[str], nproc: int, *, timeout_s: float = 60.0,
           out: str = "program.json", env: dict | None = None) -> RecordResult:
    """Run ``target`` (``[SCRIPT, ARGS...]`` or ``["-m", MODULE, ARGS...]``) on ``nproc``
    recorded ranks and write the program to ``out``; see the module docstring.
    Raises ``InputError`` for a target that cannot run (nothing is started)."""
    if nproc < 1:
        raise InputError(f"--nproc must be at least 1, got {nproc}", "--nproc")
    if not timeout_s > 0:
        raise InputError(f"--timeout must be positive, got {timeout_s}", "--timeout")
    check_target(target)
    parts_dir = out + ".parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    os.makedirs(parts_dir)
    run = _Run(target, nproc, timeout_s, parts_dir, os.environ if env is None else env)
    try:
        with signals_raise():
            run.watch()
    except KeyboardInterrupt:
        run.reason = "interrupt"
        interrupted = EXIT_INTERRUPTED
    except Interrupted as e:
        run.reason = "interrupt"
        interrupted = e.exit_code
    else:
        interrupted = None
    finally:
        run.finish()
    program = merge(parts_dir, nproc, command=list(target), timeout_s=timeout_s, ends=run.ends)
    write_program(program, out)
    shutil.rmtree(parts_dir, ignore_errors=True)
    code, message = summarize(program, out, target, interrupted)
    return RecordResult(program, out, code, message)


def _where(op: dict | None) -> str:
    w = (op or {}).get("where") or {}
    return f" at {w.get('file')}:{w.get('line')}" if w else ""


def _describe_blocked(op: dict) -> str:
    kind = op["op"]
    if kind in ("send", "isend"):
        what = f"{kind} to rank {op.get('peer')}"
    elif kind in ("recv", "irecv"):
        what = f"{kind} from rank {op.get('peer')}"
    elif kind == "wait":
        what = f"wait on handle {op.get('handle')}"
    elif kind == "collective":
        what = f"{op.get('name')} on group {op.get('group')}"
    else:
        what = kind
    return what + _where(op)


def summarize(program: dict, out: str, target: list[str], interrupted: int | None) -> tuple[int, str]:
    """(exit code, one-line message) of a recorded run."""
    ranks = program["ranks"]
    kept = f"partial program written to {out}"
    if interrupted is not None:
        return interrupted, f"interrupted; {kept}"
    for outcome, verb in (("killed", "was killed"), ("raised", "raised")):
        for r in ranks:
            if r["outcome"] == outcome:
                err = r["error"] or ""
                if outcome == "killed":
                    verb, err = ("was killed", err[len("killed "):]) if err.startswith("killed ") \
                        else ("", err)
                return EXIT_FAILED, f"rank {r['rank']} {verb} {err}; {kept}".replace("  ", " ")
    hung = [r for r in ranks if r["outcome"] == "hung"]
    if hung:
        blocked = []
        for r in hung:
            op = next((o for o in r["ops"] if not o["returned"]), None)
            blocked.append(f"rank {r['rank']} in {_describe_blocked(op)}" if op
                           else f"rank {r['rank']} outside any torch.distributed call")
        shown = "; ".join(blocked[:4]) + ("; ..." if len(blocked) > 4 else "")
        t = program["recorded"]["timeout_s"]
        return EXIT_FAILED, (f"hung: no rank made progress for {t:g}s (--timeout): {shown}; "
                             f"{kept}")
    n = count_ops(program)
    name = target[1] if target and target[0] == "-m" else (target[0] if target else "?")
    if n["p2p"] == 0:
        return EXIT_BAD_INPUT, (f"{name} made no point-to-point call (send, recv, isend, irecv, "
                                f"batch_isend_irecv) on any of its {len(ranks)} ranks; nothing "
                                f"to check; program written to {out}")
    return EXIT_OK, (f"recorded {len(ranks)} ranks: {n['p2p']} point-to-point ops, "
                     f"{n['collective']} collectives, {n['compute']} computes; "
                     f"program written to {out}")

"""Keeping the ranks' processes in hand: parent death, signals, exits, and the root cause.

What it is:

- in a rank: ``rank_process`` is the first code a spawned rank runs: before
  anything heavy is imported (torch takes seconds) it calls
  ``die_with_parent(parent_pid)``, which asks Linux to SIGKILL this process when
  the launcher dies (``prctl(PR_SET_PDEATHSIG)`` through ctypes) and exits at
  once if the launcher is already gone, names the process (``fp-rank2`` in
  ``ps`` and ``top``) and sets SIGINT/SIGTERM to their default action (a rank
  blocked in a gloo wait would see a KeyboardInterrupt only when the wait
  returns); then it unpickles and runs the rank's body. A Ctrl-C that reaches a
  rank in the first moments of its Python start-up, before ``rank_process``
  runs, can still print a KeyboardInterrupt traceback from it (the launcher
  stops everything all the same); starting the ranks with SIGINT ignored would
  close that window but loses a Ctrl-C sent while the launcher starts them
  (seen: 2 of 3 tries with the signal sent right then), the worse failure.
  The watchdog thread also polls the parent pid (``Watchdog(parent_pid=...)``),
  the fallback where prctl is unavailable.
- in the launcher: ``signals_raise()`` turns SIGTERM into ``Interrupted`` (SIGINT
  is already ``KeyboardInterrupt``) for the duration of a run; ``stop(procs,
  signum)`` forwards the signal to every live rank, waits a short grace, then
  SIGKILLs the rest and reaps them all.
- ``Failure``: one rank's failure as the launcher saw it, of one of three kinds:
  ``own`` (the rank reported its own error: watchdog, exception, a fault of its
  schedule), ``death`` (the process died by a signal, or exited non-zero without
  a word) or ``peer`` (the rank lost a connection: a consequence of another
  rank's failure). ``root_cause`` names the earliest own failure or death, in the
  order the launcher observed them, and reports the rest as consequences.

What it does not cover: torchrun's agent (it supervises its own workers; a rank
under torchrun still gets the watchdog's parent poll), other operating systems'
parent-death mechanisms (the parent poll covers them, within the poll interval).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from fastpath.watchdog import FastpathError, PeerFailure, WatchdogTimeout
from verifier.errors import PpError

EXIT_RANK_FAILED = 5
KINDS = ("own", "death", "peer")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def _prctl(option: int, arg) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int) -> bool:
    """SIGKILL this process when ``parent_pid`` (the process that started it) dies;
    exits now if it already has. True when the kernel will do it (Linux)."""
    armed = _prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL))
    if os.getppid() != parent_pid:  # died before the prctl: nobody left to report to
        os._exit(EXIT_RANK_FAILED)
    return armed


def name_process(name: str) -> None:
    """The name ``ps -o comm`` and ``top`` show (Linux; 15 bytes at most)."""
    _prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


def rank_process(rank: int, parent_pid: int, payload: bytes, *extra) -> None:
    """A spawned rank's entry point (see the module docstring): ``payload`` is the
    pickled ``(function, args)`` to run, called with ``*args, *extra``."""
    die_with_parent(parent_pid)
    name_process(f"fp-rank{rank}")
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import pickle

    fn, args = pickle.loads(payload)
    fn(*args, *extra)


class Interrupted(PpError):
    """The launcher received SIGTERM; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


@contextmanager
def signals_raise():
    """Within the block, SIGTERM raises ``Interrupted`` in the main thread (elsewhere,
    or where signals cannot be set, nothing changes)."""

    def handler(signum, frame):
        raise Interrupted(signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def stop(procs, signum: int = signal.SIGKILL, grace_s: float = 3.0) -> None:
    """Send ``signum`` to every live process of ``procs`` (multiprocessing
    ``Process``es), wait up to ``grace_s`` for them to exit, SIGKILL what is left,
    and reap them all. A second SIGTERM or Ctrl-C meanwhile is ignored: the
    cleanup is bounded and must not be cut short, or ranks would outlive it."""
    try:
        saved = [(s, signal.signal(s, signal.SIG_IGN)) for s in (signal.SIGINT, signal.SIGTERM)]
    except ValueError:
        saved = []
    procs = [p for p in procs if p.pid is not None]  # started
    try:
        live = [p for p in procs if p.is_alive()]
        for p in live:
            _send(p, signum)
        t_end = time.monotonic() + (grace_s if signum != signal.SIGKILL else 0.0)
        while any(p.is_alive() for p in live) and time.monotonic() < t_end:
            time.sleep(0.02)
        for p in live:
            if p.is_alive():
                _send(p, signal.SIGKILL)
        for p in procs:
            p.join(timeout=10)
    finally:
        for s, h in saved:
            signal.signal(s, h)


def _send(p, signum: int) -> None:
    try:
        os.kill(p.pid, signum)
    except (ProcessLookupError, TypeError):  # gone already, or never started
        pass


def describe_exit(rank: int, code: int) -> str:
    """``rank 2 died (SIGKILL)`` for a negative multiprocessing exit code, else
    ``rank 2 exited with code 3 and no message``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"rank {rank} died ({name})"
    return f"rank {rank} exited with code {code} and no message"


# How a rank sees a peer that died or timed out first: gloo closes the pair, NCCL
# reports a remote error. gloo raises a bare RuntimeError for it (torch 2.13), so
# the text is the only sign; torch's DistNetworkError is one by type.
_PEER_LOSS_TEXT = ("connection closed by peer", "connection reset by peer",
                   "broken pipe", "remote process exited", "socket closed")


def is_peer_loss(e: BaseException) -> bool:
    if isinstance(e, PeerFailure):
        return True
    try:
        import torch.distributed as dist

        if isinstance(e, dist.DistNetworkError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(e).lower()
    return any(t in text for t in _PEER_LOSS_TEXT)


def wait_failure(e: BaseException, waited: float, bound_s: float | None, *,
                 timed_out: Callable[[], str], failed: str) -> FastpathError:
    """The error for a wait (or collective) that raised ``e`` after ``waited``
    seconds under the bound ``bound_s``: ``WatchdogTimeout`` when it lasted its
    bound (gloo raises the same bare RuntimeError for a timeout and for a lost
    peer, torch 2.13, so the clock tells them apart), else ``PeerFailure``: the
    op failed under the wait, a peer died or closed the connection.
    ``timed_out()`` builds the timeout's message; ``failed`` heads the other."""
    if bound_s is not None and waited >= bound_s * 0.95:
        return WatchdogTimeout(timed_out())
    return PeerFailure(f"{failed}: {short_comm_error(str(e)) or type(e).__name__}")


def short_comm_error(text: str) -> str:
    """The gist of a gloo/NCCL error: its first line without the C++ source location
    ("[/.../pair.cc:553] ") and the boilerplate after the first sentence."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    for tail in (". This is typically", ". Check the logs"):
        if tail in line:
            line = line.split(tail, 1)[0]
    return line


@dataclass(frozen=True)
class Failure:
    rank: int
    message: str
    exit_code: int
    kind: str  # one of KINDS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


class RunFailed(FastpathError):
    """A spawned run failed; ``rank``, message and ``exit_code`` are the root cause's,
    ``others`` the ``Failure``s of ranks that failed after it (consequences)."""

    def __init__(self, rank: int | None, message: str, exit_code: int, others: tuple = ()):
        self.rank, self.exit_code, self.others = rank, exit_code, tuple(others)
        super().__init__(message)


def root_cause(failures: list[Failure]) -> RunFailed:
    """The failure to report, given in the order the launcher observed them: the
    earliest own failure or death; only when there is none, the earliest lost peer."""
    first = min(range(len(failures)), key=lambda i: (failures[i].kind == "peer", i))
    f = failures[first]
    others = tuple(x for i, x in enumerate(failures) if i != first)
    return RunFailed(f.rank, f.message, f.exit_code, others)

"""The watchdog: turns a rank that waits too long into an error naming what it waited for.

What it is: ``Watchdog`` is a daemon thread per rank. The runtime tells it what
the rank is doing (``waiting(...)`` before every blocking wait, ``idle()``
after) and registers every posted op it has not yet seen complete. Two layers
stop a hang:

1. On CPU (gloo) every wait is ``work.wait(timeout=bound)``; on expiry the
   runtime raises ``WatchdogTimeout`` with the rank, step, action and peer.
2. The thread is the backstop for waits that take no timeout (collectives,
   CUDA synchronisation, an NCCL kernel that never completes): when the rank
   has been inside one wait for ``bound + grace`` seconds, it reports the same
   kind of message (plus the oldest posted op still incomplete) through
   ``on_fire`` and ends the process with ``os._exit(EXIT_WATCHDOG)``.

The thread also watches the process that started the rank (``parent_pid``):
when it is gone (a launcher killed with SIGKILL), the rank exits within one
poll (``EXIT_ORPHANED``); fastpath.supervise's parent-death signal does the
same at once on Linux.

The errors a rank raises say whose fault a failure is: ``ScheduleFault`` (this
rank's own schedule cannot be executed: a send before its data, a receive never
consumed), ``PeerFailure`` (a communication op failed: a peer died or closed
its connection, a consequence of another rank's failure) and
``WatchdogTimeout`` (a wait exceeded the bound).

What it does not cover: stopping the *other* ranks. The launcher does that
(fastpath.launch kills the remaining ranks once one has failed; torchrun's
agent does the same), and every rank's own watchdog fires anyway once its
peers are gone.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

from verifier.errors import ExecutorFailure

EXIT_WATCHDOG = 4
EXIT_ORPHANED = 5  # the launcher is gone; nobody reads it, but it is a failure


class FastpathError(ExecutorFailure, RuntimeError):
    """Root of the errors a rank raises while running a schedule (below the
    project's root, verifier.errors.PpError)."""


class WatchdogTimeout(FastpathError):
    """A rank waited longer than the bound; the message names rank, step, action, peer."""


class PeerFailure(FastpathError):
    """A communication op failed: a peer died or closed its connection first. A
    consequence of another rank's failure, never reported as the root cause while
    there is another."""


class ScheduleFault(FastpathError):
    """This rank's own schedule cannot be executed as written (a send posted before
    the compute that produces its data, a receive no compute consumes): a fault of
    the schedule, found only with --no-verify. The rank's own failure."""


def describe_wait(rank: int, step: int | str, action: object, what: object, peer: int | None,
                  waited: float) -> str:
    what = str(what)  # the runtime passes ops unformatted; they are formatted here
    if peer is None:
        peer_txt = ""
    elif "RECV" in what or "partial gradient sum" in what and "sending" not in what:
        peer_txt = f" from rank {peer}"
    elif "SEND" in what or "sending" in what:
        peer_txt = f" to rank {peer}"
    else:
        peer_txt = f" with rank {peer}"
    return (
        f"watchdog: rank {rank} stuck at step {step} ({action}): waited {waited:.1f}s "
        f"for {what}{peer_txt}"
    )


class Watchdog(threading.Thread):
    def __init__(self, rank: int, bound_s: float, on_fire: Callable[[str], None] | None = None,
                 grace_s: float = 5.0, poll_s: float = 0.2, parent_pid: int | None = None):
        super().__init__(name=f"fastpath-watchdog-{rank}", daemon=True)
        self.rank = rank
        self.bound_s = float(bound_s)
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.on_fire = on_fire
        self.parent_pid = parent_pid
        self._lock = threading.Lock()
        self._state: tuple | None = None  # (step, action, what, peer, since)
        self._pending: Callable[[], list] | None = None
        self._stop = threading.Event()

    def set_pending_source(self, fn: Callable[[], list]) -> None:
        """``fn()`` -> [(work, step, action, what, peer)] of posted, unfinished ops."""
        self._pending = fn

    def waiting(self, step: int | str, action: object, what: object, peer: int | None) -> None:
        """``what``: a str or an object formatted with str() only if the watchdog fires."""
        with self._lock:
            self._state = (step, action, what, peer, time.monotonic())

    def idle(self) -> None:
        with self._lock:
            self._state = None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:  # pragma: no cover - exercised through subprocesses
        while not self._stop.wait(self.poll_s):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                os._exit(EXIT_ORPHANED)  # the launcher died: nobody will stop this rank
            with self._lock:
                st = self._state
            if st is None:
                continue
            waited = time.monotonic() - st[4]
            if waited < self.bound_s + self.grace_s:
                continue
            msg = describe_wait(self.rank, st[0], st[1], st[2], st[3], waited)
            oldest = self._oldest_incomplete()
            if oldest:
                msg += f"; oldest incomplete op: {oldest}"
            try:
                if self.on_fire is not None:
                    self.on_fire(msg)
            finally:
                os._exit(EXIT_WATCHDOG)

    def _oldest_incomplete(self) -> str:
        if self._pending is None:
            return ""
        try:
            for work, step, action, what, peer in self._pending():
                if not work.is_completed():
                    return f"step {step} ({action}) {what} with rank {peer}"
        except Exception:  # noqa: BLE001 - best effort while dying
            return ""
        return ""

"""One rank of a recorded run: the user's script, unmodified, with the recorder installed.

What it is: ``main(target, ...)`` runs in a process the launcher
(fastpath.record.launch) or torchrun started with the rank's environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). In order:

1. under the launcher: dies with it (``fastpath.supervise.die_with_parent``) and
   starts the control thread, before torch is imported (seconds): the thread
   reads one byte at a time from the control pipe, ``s`` (stop: write a
   ``stop`` record naming the call the rank is blocked in, exit), ``x`` (every
   rank is done: exit) or end of file (the launcher is gone: as ``s``);
2. imports torch, opens the part file, installs the recorder
   (fastpath.record.recorder) and the CUDA redirection;
3. runs the script (``runpy.run_path``, as ``python SCRIPT``) or module
   (``runpy.run_module``, as ``python -m MODULE``) with ``sys.argv`` set;
4. writes an ``end`` record: ``finished``, or ``raised`` with the exception
   text and the user's line it came from;
5. under the launcher, waits for its word before exiting: a rank that finished
   keeps its connections, so a peer still waiting on it stays blocked (what
   NCCL would do) and the watchdog names that call, instead of a "connection
   closed" error.

Under torchrun (``mode="torchrun"``) there is no launcher: a rank's own
watchdog thread stops it once it has been inside one call for ``timeout_s``;
after its script ends the rank waits (up to ``timeout_s``) for every rank's
part to end, and rank 0 merges the parts into the program (a stopped rank 0
waits 5 s for the others' stop records, then merges). SIGTERM is ignored:
torchrun sends it to the other ranks once one has failed, which would end
rank 0 before it merged; each rank stops itself instead.

Exit codes: 0 finished, 5 the script raised, 4 stopped by the watchdog or the
launcher.

What it does not cover: deciding when a run is hung across ranks (the
launcher), checking the program (verifier).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time
import traceback

from fastpath.record.parts import PartWriter, merge, part_path, read_part, write_program
from fastpath.supervise import die_with_parent, is_peer_loss, name_process, short_comm_error

EXIT_RAISED, EXIT_STOPPED = 5, 4
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _Rank:
    """What the control thread needs to see of the main thread."""

    def __init__(self):
        self.writer: PartWriter | None = None
        self.recorder = None
        self.ended = False
        self.code = 0
        self.lock = threading.Lock()
        self.finish = None  # under torchrun: merge the parts (rank 0) before exiting

    def stop(self, code: int) -> None:
        """Write the ``stop`` record (unless the script ended) and exit now (under
        torchrun, rank 0 first merges the parts: ``finish``)."""
        with self.lock:
            if self.writer is not None and not self.ended:
                blocked = self.recorder.inside if self.recorder is not None else None
                self.writer.write({"t": "stop", "blocked": blocked})
        if self.finish is not None:
            self.finish()
        _flush_and_exit(code)


def _flush_and_exit(code: int) -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _control(fd: int, state: _Rank) -> None:
    while True:
        try:
            b = os.read(fd, 1)
        except InterruptedError:
            continue
        except OSError:
            b = b""
        if b == b"x":
            _flush_and_exit(state.code)
        state.stop(EXIT_STOPPED)


def _watch(state: _Rank, timeout_s: float) -> None:
    """torchrun's rank watchdog: stop when inside one call for ``timeout_s``."""
    last, since = None, time.monotonic()
    while True:
        time.sleep(0.2)
        rec = state.recorder
        cur = None if rec is None else (rec.inside, rec.count)
        if cur != last or cur is None or cur[0] is None:
            last, since = cur, time.monotonic()
            continue
        if time.monotonic() - since > timeout_s:
            sys.stderr.write(f"record: rank {rec.rank} stopped: blocked in one call for "
                             f"{timeout_s:g}s\n")
            state.stop(EXIT_STOPPED)


def _user_frame(tb) -> str:
    """`` (at FILE:LINE in FUNCTION)`` of the deepest traceback frame outside torch,
    the recorder and runpy."""
    import torch  # loaded already; its folder marks frames that are not the user's

    torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    found = ""
    for fs in traceback.extract_tb(tb):
        path = os.path.abspath(fs.filename)
        if path.startswith((torch_dir, _HERE)) or fs.filename.startswith("<frozen") \
                or os.path.basename(path) == "runpy.py":
            continue
        rel = os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else fs.filename
        found = f" (at {rel}:{fs.lineno} in {fs.name})"
    return found


def _run_target(target: list[str]) -> tuple[str, str | None, BaseException | None]:
    """Run the script or module; (outcome, error)."""
    try:
        if target[0] == "-m":
            sys.argv = [target[1], *target[2:]]
            runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        else:
            script = target[0]
            sys.argv = list(target)
            sys.path[0] = os.path.dirname(os.path.abspath(script))
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code in (None, 0):
            return "finished", None, None
        if isinstance(e.code, int):
            return "raised", f"SystemExit: exited with code {e.code}", e
        return "raised", f"SystemExit: {e.code}", e
    except BaseException as e:  # noqa: BLE001 - the script's failure is recorded, not ours
        first = short_comm_error(str(e))  # gloo's first line, without its C++ location
        return "raised", f"{type(e).__name__}: {first}{_user_frame(e.__traceback__)}"[:2000], e
    return "finished", None, None


def main(target: list[str], *, parts_dir: str, mode: str = "launcher", ctl_fd: int | None = None,
         parent_pid: int | None = None, timeout_s: float = 60.0, out: str | None = None,
         command: list[str] | None = None) -> int:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    state = _Rank()
    if parent_pid is not None:
        die_with_parent(parent_pid)
    name_process(f"rec-rank{rank}")
    if ctl_fd is not None:
        threading.Thread(target=_control, args=(ctl_fd, state), daemon=True,
                         name="record-control").start()
    elif mode == "torchrun":
        # torchrun ends the other ranks with SIGTERM once one has failed; each rank stops
        # itself instead (its watchdog, --timeout), so that rank 0 can still merge
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        state.finish = lambda: _torchrun_finish(parts_dir, rank, world, 5.0, out,
                                                command or target)
        threading.Thread(target=_watch, args=(state, timeout_s), daemon=True,
                         name="record-watchdog").start()
    # torch loads here, after the control thread is up (it takes seconds)
    from fastpath.record.recorder import Recorder, redirect_cuda
    import torch

    os.makedirs(parts_dir, exist_ok=True)
    writer = PartWriter(part_path(parts_dir, rank))
    rec = Recorder(writer, rank, world, hold_destroy=ctl_fd is not None)
    redirect_cuda()
    rec.install()
    # written last: the launcher's no-progress clock starts when every rank has it
    writer.write({"t": "start", "rank": rank, "world": world, "pid": os.getpid(),
                  "torch": torch.__version__.split("+")[0]})
    with state.lock:
        state.writer, state.recorder = writer, rec
    outcome, error, exc = _run_target(target)
    if mode == "torchrun" and exc is not None and rec.inside is not None and is_peer_loss(exc):
        # under torchrun each rank stops itself; a peer whose watchdog fired first
        # closes the connection this rank was blocked on: the call never returned,
        # so this rank stops as hung in it (its peer's part says why the run ended)
        state.stop(EXIT_STOPPED)
    with state.lock:
        blocked = rec.inside if outcome == "raised" else None
        writer.write({"t": "end", "outcome": outcome, "error": error, "blocked": blocked})
        state.ended = True
        state.code = 0 if outcome == "finished" else EXIT_RAISED
    rec.uninstall()
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (OSError, ValueError):
            pass
    if ctl_fd is not None:
        while True:  # the control thread ends the process on the launcher's word
            time.sleep(3600)
    if mode == "torchrun":
        _torchrun_finish(parts_dir, rank, world, timeout_s + 5, out, command or target)
    _flush_and_exit(state.code)
    return state.code


def _torchrun_finish(parts_dir: str, rank: int, world: int, timeout_s: float, out: str | None,
                     command: list[str]) -> None:
    """Wait (up to ``timeout_s``) until every rank's part has ended; rank 0 then
    writes the program."""
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        parts = [read_part(part_path(parts_dir, r), r) for r in range(world)]
        if all(p.end is not None or p.stop is not None for p in parts):
            break
        time.sleep(0.2)
    if rank == 0 and out:
        write_program(merge(parts_dir, world, command=command, timeout_s=timeout_s), out)
        sys.stdout.write(f"record: program written to {out}\n")

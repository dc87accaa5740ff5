"""What ``fastpath run`` checks before any rank starts: numeric flags, the launch
environment, the output path.

What it is: functions that return nothing or raise ``BadInput`` (a ValueError)
whose message is the one line the CLI prints (exit 2), naming the flag or
environment variable and the value:

- ``check_numbers(args)``: --watchdog-seconds finite in [``MIN_WATCHDOG_S``,
  ``MAX_WATCHDOG_S``] (a shorter bound would round to "no timeout"),
  --threads in 1..``MAX_THREADS``, --nproc >= 1.
- ``launch_env(environ)``: ``None`` for a launch that spawns its own ranks, or
  ``LaunchEnv`` (rank, world size, local rank) for a torchrun-style one: when
  TORCHELASTIC_RUN_ID, RANK, WORLD_SIZE or LOCAL_RANK is set, RANK and
  WORLD_SIZE must both be integers with 0 <= RANK < WORLD_SIZE, LOCAL_RANK
  (default RANK) an integer in [0, WORLD_SIZE), MASTER_ADDR set and
  MASTER_PORT an integer in 1..65535 (torch's env:// rendezvous reads them).
- ``check_size(schedule, args)``: the tensor elements the run will build, estimated
  up front (``estimated_elements``), at most --max-elements (default
  ``DEFAULT_MAX_ELEMENTS``, about 8 GiB of float64), so a --hidden 100000 is refused
  with the reason instead of every rank dying in the allocator.
- ``verify_model(requested, backend)``: the communication model the checker
  verifies under before the run. ``auto`` is the model of the backend that runs
  it (``BACKEND_MODEL``: gloo -> ``gloo``; NCCL, which fastpath initialises
  eagerly so that every op uses the group's communicator -> ``nccl``); a named
  model is accepted only when VERIFIED under it implies termination under the
  backend's model (verifier.semantics.comm.implies), so no run relies on a
  model that does not describe its backend (``eager`` says a send never blocks;
  a gloo or NCCL send waits for its receive).
- ``check_output_path(path, flag)``: the file can be written: its directory
  exists and is writable, and the path is not a directory (verifier.format.guard's
  check) or a special file (a device, a FIFO). A write can still fail later
  (disk full): the caller reports that as exit 2 naming the path too.

What it does not cover: the schedule itself (verifier.format.io validates it; the
checker decides it), sizes of the model (reference.models).
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from typing import Mapping
from verifier.errors import OutputError, PpError
from verifier.format import guard
from verifier.semantics import comm

MIN_WATCHDOG_S = 1e-3  # below a microsecond, timedelta is 0: gloo then waits its default
MAX_WATCHDOG_S = 1e6  # about 11.5 days; timedelta and thread waits stay exact below it
MAX_THREADS = 1024
DEFAULT_MAX_ELEMENTS = 1 << 30  # 8 GiB of float64: refuses the absurd, not a big run


class BadInput(PpError, ValueError):
    """A flag, environment variable or path that cannot be used; the message is the
    one line to print."""


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world: int
    local_rank: int
    elastic: bool  # started by torchrun's agent (TORCHELASTIC_RUN_ID set)

    def __post_init__(self):
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} not in [0, {self.world})")


def check_numbers(args) -> None:
    w = args.watchdog_seconds
    if not (math.isfinite(w) and MIN_WATCHDOG_S <= w <= MAX_WATCHDOG_S):
        raise BadInput(f"--watchdog-seconds must be a finite number of seconds in "
                       f"[{MIN_WATCHDOG_S:g}, {MAX_WATCHDOG_S:.0f}], got {w!r}")
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise BadInput(f"--threads must be in 1..{MAX_THREADS}, got {args.threads}")
    if args.nproc is not None and args.nproc < 1:
        raise BadInput(f"--nproc must be >= 1, got {args.nproc}")


def estimated_elements(model: str, num_layers: int, hidden: int, num_microbatches: int,
                       batch: int, seq: int, num_ranks: int, num_stages: int,
                       check: bool) -> int:
    """A generous estimate of the tensor elements of a run on one machine: every rank
    builds the model up to its last layer and every micro-batch (input and target);
    the micro-batch gradient order keeps each micro-batch's weight gradients until
    the end of the step; activations about 8 x hidden per token per block; --check
    adds reference/'s pipelined and unpipelined run of the whole model."""
    per_block = (12 * hidden * hidden + 13 * hidden) if model == "transformer" else (
        8 * hidden * hidden + 5 * hidden)
    params = num_layers * per_block
    tokens = num_microbatches * batch * seq
    acts = tokens * hidden * 8 * max(num_layers, num_stages)
    total = num_ranks * (params + 2 * tokens * hidden) + params * (num_microbatches + 2) + acts
    if check:
        total += 4 * params + 2 * tokens * hidden + acts
    return total


def check_size(schedule, args) -> None:
    n = (max(schedule.layers) + 1) * args.layers_per_stage if schedule.layers else 0
    need = estimated_elements(args.model, n, args.hidden, schedule.num_microbatches,
                              args.batch, args.seq, schedule.num_ranks, schedule.num_stages,
                              args.check)
    if need > args.max_elements:
        raise BadInput(
            f"the {args.model} model of {n} blocks, hidden {args.hidden}, "
            f"{schedule.num_microbatches} micro-batches of {args.batch} x {args.seq} on "
            f"{schedule.num_ranks} ranks needs about {need} tensor elements, more than "
            f"--max-elements {args.max_elements}; use a smaller --hidden, --batch, --seq or "
            "--layers-per-stage, or raise --max-elements")


_LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def _int_var(environ: Mapping[str, str], name: str, lo: int, hi: int | None, what: str) -> int:
    text = environ[name]
    try:
        v = int(text.strip())
    except ValueError:
        v = None
    if v is None or v < lo or (hi is not None and v >= hi):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise BadInput(f"environment variable {name} must be {what}, got {shown!r}")
    return v


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
    env = os.environ if environ is None else environ
    if not any(k in env for k in _LAUNCH_VARS):
        return None
    for name in ("RANK", "WORLD_SIZE"):
        if name not in env:
            given = ", ".join(k for k in _LAUNCH_VARS if k in env)
            raise BadInput(f"environment variable {name} is not set, but {given} is: a "
                           "torchrun-style launch sets RANK and WORLD_SIZE (unset them "
                           "all to let fastpath spawn its ranks)")
    world = _int_var(env, "WORLD_SIZE", 1, None, "an integer >= 1")
    rank = _int_var(env, "RANK", 0, world, f"an integer in [0, {world}) (WORLD_SIZE={world})")
    local = rank
    if "LOCAL_RANK" in env:
        local = _int_var(env, "LOCAL_RANK", 0, world,
                         f"an integer in [0, {world}) (WORLD_SIZE={world})")
    if not env.get("MASTER_ADDR", "").strip():
        raise BadInput("environment variable MASTER_ADDR is not set (torchrun sets it; "
                       "the env:// rendezvous needs it)")
    if "MASTER_PORT" not in env:
        raise BadInput("environment variable MASTER_PORT is not set (torchrun sets it; "
                       "the env:// rendezvous needs it)")
    _int_var(env, "MASTER_PORT", 1, 65536, "a port number in 1..65535")
    return LaunchEnv(rank, world, local, "TORCHELASTIC_RUN_ID" in env)


def check_output_path(path: str, flag: str) -> None:
    """verifier.format.guard's check (directory exists and is writable, path not a
    directory), and more: an existing path must be a regular file, so /dev/full
    (whose writes fail) or a FIFO (whose writes block) is refused before the run,
    not after it."""

    if not path:
        raise BadInput(f"{flag}: empty path")
    try:
        guard.check_output_path(path, flag)
        st = os.stat(path)
    except OutputError as e:
        raise BadInput(str(e)) from None
    except FileNotFoundError:
        return
    except OSError as e:
        raise BadInput(f"{flag} {guard.printable(path)}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{flag} {guard.printable(path)}: not a regular file (a device, FIFO "
                       "or socket); give a file path")


# the model of each backend as fastpath drives it (see verify_model)
BACKEND_MODEL = {"gloo": comm.GLOO.name, "nccl": comm.NCCL.name}


def verify_model(requested: str, backend: str) -> str:
    """The model to verify under on ``backend``: ``requested``, or the backend's own
    for "auto"; BadInput for a model whose VERIFIED says nothing about the backend."""
    own = BACKEND_MODEL[backend]
    if requested == "auto":
        return own
    if comm.implies(requested, own):
        return requested
    ok = ", ".join(n for n in comm.NAMES if comm.implies(n, own))
    raise BadInput(
        f"--comm-model {requested} does not describe {backend} ({comm.model(own).summary}): "
        f"a schedule VERIFIED under it can hang there; use --comm-model {own} (the default, "
        f"auto) or a stricter one ({ok})")

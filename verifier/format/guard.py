"""Guards against hostile or careless input, shared by every command line.

What it is: the one place that decides what a command refuses *before* it
does any work, so that no input, flag or path reaches an engine it would
crash, hang or exhaust memory in:

- ``Limits``: the largest input each command will read or build (file bytes,
  actions, stages x micro-batches, picture pixels, counterexamples printed),
  each with a flag that raises it (``add_limit_arguments``); a size over a
  limit is refused up front with the reason and the flag in the message.
- ``read_bounded``: reads a file or stream (standard input, /dev/zero, a FIFO)
  up to a byte limit, refusing binary data at its first chunk.
- The schedule gate every engine relies on (``require_well_formed``: property
  1 turned into one error line) is not here but in verifier.check.properties,
  next to the property it applies.
- ``naming``: a context that puts the file name on an error raised after
  loading (an engine's ScheduleError names rank and step but not the file).
- ``check_output_path`` / ``write_output``: an output path is checked before
  work starts (directory exists, not a directory, writable); a failed write
  (/dev/full) is one error line naming the path.
- ``paused_gc``: the cyclic garbage collector paused while a large input is
  loaded and checked.
- ``printable`` / ``bounded``: message hygiene: control characters, lone
  surrogates and newlines escaped, long values cut with a count.

What it does not cover: the schema (verifier.format.schema), the checker's other
properties, executor faults at run time (reference/, fastpath/).
"""

from __future__ import annotations

import argparse
import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from verifier.errors import FlagError, OutputError, OutputFailed  # OutputFailed re-exported
from verifier.ir import Schedule, ScheduleError

MiB = 1 << 20


@contextmanager
def paused_gc():
    """Pause the cyclic garbage collector (restored after).

    Loading and checking allocate many small acyclic objects; the collector's
    passes over them cost 15-25% of a large run and free nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class Limits:
    """The largest input a command reads or builds; every field has a flag."""

    max_bytes: int = 256 * MiB  # bytes read from one schedule file or stdin
    max_actions: int = 5_000_000  # actions of a loaded schedule
    max_cells: int = 2_000_000  # stages x micro-batches (the engines' tables)
    max_pixels: int = 64_000_000  # pixels of a PNG/SVG, characters of a text grid
    max_counterexamples: int = 100  # counterexamples printed by check

    def __post_init__(self) -> None:
        for name in self.__slots__:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise FlagError(f"must be a positive integer, got {v!r}", _flag(name))


DEFAULT = Limits()

_HELP = {
    "max_bytes": "largest schedule file (or standard input) read, in bytes "
                 f"(default {DEFAULT.max_bytes}: 256 MiB)",
    "max_actions": "largest number of actions in a schedule: CSV cells, JSON \"op\" keys "
                   f"(the ops inside OVERLAP and BATCH count), checked before parsing "
                   f"(default {DEFAULT.max_actions})",
    "max_cells": "largest stages x micro-batches of a schedule, the size of the engines' "
                 f"tables (default {DEFAULT.max_cells})",
    "max_pixels": "largest picture: pixels of a PNG/SVG, characters of a text grid "
                  f"(default {DEFAULT.max_pixels})",
    "max_counterexamples": "most counterexamples printed; the rest are counted "
                           f"(default {DEFAULT.max_counterexamples})",
}

LIMITS_DOC = """\
limits (refused up front, exit 2, with the reason and the flag that raises it):
  --max-bytes N            largest file or standard input read (default 256 MiB)
  --max-actions N          largest number of actions (default 5000000)
  --max-cells N            largest stages x micro-batches (default 2000000)"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (also written 1e6 or 1_000_000)."""
    try:
        v = int(text.replace("_", ""))
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {bounded(text)!r}") from None
        if not (f == f and abs(f) != float("inf") and f.is_integer()):
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {bounded(text)!r}") from None
        v = int(f)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_limit_arguments(p: argparse.ArgumentParser, *names: str) -> None:
    """Add ``--max-...`` flags for the named Limits fields (default: all but pixels
    and counterexamples)."""
    for name in names or ("max_bytes", "max_actions", "max_cells"):
        p.add_argument(_flag(name), dest=name, type=positive_int, default=getattr(DEFAULT, name),
                       metavar="N", help=_HELP[name])


def limits_of(args: argparse.Namespace) -> Limits:
    """The Limits a parsed command line asks for (defaults for flags it lacks)."""
    return Limits(**{k: getattr(args, k, getattr(DEFAULT, k)) for k in Limits.__slots__})


# ---------------------------------------------------------------- reading

_FIRST_CHUNK = 64 * 1024


def read_bounded(fp: IO[bytes], limit: int, source: str) -> bytes:
    """At most ``limit`` bytes of ``fp``, else ScheduleError naming ``--max-bytes``.

    The first chunk is checked for NUL bytes at once, so /dev/zero or a binary
    stream is refused after 64 KiB rather than after ``limit`` bytes.
    """
    first = fp.read(min(_FIRST_CHUNK, limit + 1))
    if b"\x00" in first[:4096]:
        return first[:4096]  # the decoder names the binary data and its offset
    parts = [first]
    total = len(first)
    while first and total <= limit:
        first = fp.read(min(4 * MiB, limit + 1 - total))
        parts.append(first)
        total += len(first)
    if total > limit:
        raise ScheduleError(
            f"larger than {limit} bytes, the most this command reads"
            + ("; pass --max-bytes N to raise the limit" if limit != SMALL_FILE_BYTES else ""),
            source)
    return b"".join(parts)


SMALL_FILE_BYTES = 16 * MiB  # a costs or sizes file: a few lines


def read_small_text(path: str | os.PathLike, where: str, limit: int = SMALL_FILE_BYTES) -> str:
    """The UTF-8 text of a small side file (``--costs FILE``, ``--activation-bytes
    FILE``), read at most ``limit`` bytes (/dev/zero, a FIFO: bounded);
    FileNotFoundError is left to the caller, anything else is a ScheduleError
    naming ``where``."""
    try:
        with open(path, "rb") as fp:
            data = read_bounded(fp, limit, where)
    except IsADirectoryError:
        raise ScheduleError("is a directory, expected a file", where) from None
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ScheduleError(f"cannot read: {e.strerror or e}", where) from None
    if b"\x00" in data:
        raise ScheduleError(f"binary data (NUL byte at offset {data.index(0)})", where)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScheduleError(f"not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}",
                            where) from None


def check_size(s: Schedule, limits: Limits, source: str) -> None:
    """Refuse a schedule over ``limits`` (actions, stages x micro-batches)."""
    n = s.num_actions
    if n > limits.max_actions:
        raise ScheduleError(
            f"has {n} actions, more than the limit {limits.max_actions}; "
            "pass --max-actions N to raise it", source)
    cells = max(len(s.stages), 1) * s.num_microbatches
    if cells > limits.max_cells:
        raise ScheduleError(
            f"has {len(s.stages)} stages x {s.num_microbatches} micro-batches = {cells} cells, "
            f"more than the limit {limits.max_cells} (the engines build tables of this size); "
            "pass --max-cells N to raise it", source)


def check_generated_size(num_ranks: int, num_microbatches: int, stages_per_rank: int,
                         limits: Limits) -> None:
    """Refuse a generator call over ``--max-cells`` before anything is built."""
    cells = num_ranks * max(stages_per_rank, 1) * num_microbatches
    if cells > limits.max_cells:
        raise FlagError(
            f"{num_ranks} ranks x {max(stages_per_rank, 1)} stages per rank x {num_microbatches} "
            f"micro-batches = {cells} cells, more than the limit {limits.max_cells}; "
            "pass --max-cells N to raise it", "--ranks/--microbatches")


@contextmanager
def naming(source: str) -> Iterator[None]:
    """Prefix ``source`` to a ScheduleError raised inside that does not name it."""
    try:
        yield
    except ScheduleError as e:
        if e.where is not None and str(e.where).startswith(source):
            raise
        # the same exception (a subclass keeps its type and fields), named
        e.where = f"{source}: {e.where}" if e.where else source
        e.args = (f"{e.where}: {e.detail}",)
        raise


# ---------------------------------------------------------------- output

def check_output_path(path: str | os.PathLike | None, flag: str = "-o") -> None:
    """Refuse, before any work, an output path that cannot be written.

    None and "-" (standard output) pass. A directory, a missing parent
    directory, a parent or an existing file without write permission are
    refused naming the flag and the path. (A full device is found only by
    writing: ``write_output``.)
    """
    if path is None or str(path) == "-":
        return
    where = f"{flag} {printable(str(path))}"
    try:
        _check_output_path(Path(path), where)
    except OSError as e:  # a name too long, a loop of symbolic links, ...
        raise OutputError(f"cannot write: {e.strerror or e}", where) from None


def _check_output_path(p: Path, where: str) -> None:
    if p.is_dir():
        raise OutputError("is a directory, expected a file to write", where)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write: no directory {printable(str(parent))!r}", where)
    if p.exists():
        if not os.access(p, os.W_OK):
            raise OutputError("cannot write: permission denied", where)
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write: directory {printable(str(parent))!r} is not writable", where)


def write_output(path: str | os.PathLike, data: bytes | str, flag: str = "-o") -> None:
    """Write ``data`` to ``path``; any OSError (full device, ...) is an OutputError
    naming the flag and the path. Text is UTF-8 with lone surrogates escaped."""
    if isinstance(data, str):
        data = data.encode("utf-8", "backslashreplace")
    try:
        with open(path, "wb") as fp:
            fp.write(data)
    except OSError as e:
        raise OutputError(f"cannot write: {e.strerror or e}",
                            f"{flag} {printable(str(path))}") from None


# ------------------------------------------------------- message hygiene

def printable(text: str) -> str:
    """``text`` with control characters, lone surrogates and other unprintable
    characters escaped (``\\n``, ``\\x1b``, ``\\ud800``); printable text unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def bounded(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with a count of what was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


def one_line(message: str, limit: int = 2000) -> str:
    """An error message made safe to print as one line of bounded length."""
    return bounded(printable(message.strip()), limit)


class SafeText:
    """A text stream that never fails on a character its encoding cannot take
    (a lone surrogate in a schedule name, a non-UTF-8 file name from argv):
    such text is written with backslash escapes instead. A failed write (not a
    closed pipe, which the command line handles itself) is OutputFailed,
    naming the stream."""

    def __init__(self, stream: IO[str]):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            try:
                return self._stream.write(text)
            except UnicodeEncodeError:
                enc = getattr(self._stream, "encoding", None) or "utf-8"
                safe = text.encode(enc, "backslashreplace").decode(enc, "replace")
                return self._stream.write(safe)
        except BrokenPipeError:
            raise
        except OSError as e:
            name = getattr(self._stream, "name", None)
            where = {"<stdout>": "standard output", "<stderr>": "standard error"}.get(
                name, printable(str(name)) if name else "the output")
            raise OutputFailed(e.errno, f"cannot write to {where}: "
                               f"{e.strerror or e}") from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

"""Memory in the units users budget: byte sizes and activation sizes per stage.

What it is: the parser and printer of byte quantities (``80GiB``, ``512MiB``,
``1.5e9B``, ``2GB``: binary suffixes KiB MiB GiB TiB are powers of 1024,
decimal KB MB GB TB powers of 1000, B bytes; case-insensitive) and of the
activation size of each stage (``ActivationBytes``: the bytes one stage's
activation for one micro-batch occupies, the unit of verifier.semantics.memory), which
turns a peak in activations into a peak in bytes.

Where sizes come from (``parse_activation_bytes``):

- ``SIZE``: every stage the same (``2GiB``; a plain number here is bytes);
- ``S=SIZE,S=SIZE,..``: per stage (``0=1GiB,1=2GiB``), optionally with one
  plain ``SIZE`` for the stages not listed (``2GiB,3=4GiB``);
- a JSON file (path ending in ``.json``): ``{"format": "pp-activation-bytes",
  "stages": {"0": 1073741824, ...}}``, what ``python -m reference
  activations`` writes after measuring the user's model (every key but
  ``stages`` is informative).

A memory limit is bytes only when it carries a byte suffix; a plain number
stays activation units (``--memory-limit 8``). Bytes need sizes: without
them ``memory_limit_of`` raises naming the flag to add.

Not covered: parameter, gradient and optimizer memory; activation sizes that
differ per micro-batch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from verifier.errors import FlagError
from verifier.format.guard import read_small_text
from verifier.ir import Schedule, ScheduleError

_SUFFIX = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_QUANTITY = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*")
FLAG = "--activation-bytes"
ACTIVATION_FORMAT = "pp-activation-bytes"


def parse_bytes(text: str, *, plain_is_bytes: bool = False) -> float | None:
    """Bytes in ``text`` (``80GiB`` -> 85899345920.0); None for a plain number
    unless ``plain_is_bytes``. Raises ValueError for anything else."""
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise ValueError(f"expected a size such as 80GiB, 512MiB or 1.5e9B, got {text!r}")
    num, unit = float(m[1]), m[2].lower()
    if not math.isfinite(num):
        raise ValueError(f"expected a finite size, got {text!r}")
    if unit == "":
        return num if plain_is_bytes else None
    if unit not in _SUFFIX:
        raise ValueError(
            f"unknown unit {m[2]!r} in {text!r}; use B, KiB, MiB, GiB, TiB (1024) or KB, MB, GB, TB (1000)"
        )
    return num * _SUFFIX[unit]


def format_bytes(n: float) -> str:
    """``85899345920`` -> ``80 GiB``; at most 4 significant digits, binary units."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n:.4g} B"


@dataclass(frozen=True)
class ActivationBytes:
    """Bytes of one stage's activation for one micro-batch: ``per_stage`` by
    stage id, ``default`` for the stages not listed (None: every stage must be
    listed). ``source`` names where the sizes came from, for messages."""

    per_stage: Mapping[int, float] = field(default_factory=dict)
    default: float | None = None
    source: str = FLAG

    def for_schedule(self, s: Schedule) -> dict[int, float]:
        """Size of every stage of ``s``; ScheduleError naming a stage without one,
        or a listed stage that ``s`` does not have."""
        ids = [st.id for st in s.stages]
        extra = sorted(set(self.per_stage) - set(ids))
        if extra:
            raise ScheduleError(
                f"gives a size for stage {extra[0]}, which the schedule does not have "
                f"(stages {min(ids)}..{max(ids)})", self.source)
        out: dict[int, float] = {}
        for sid in ids:
            v = self.per_stage.get(sid, self.default)
            if v is None:
                raise ScheduleError(
                    f"gives no size for stage {sid}; list every stage (S=SIZE) or add one "
                    "SIZE for the rest, e.g. 2GiB,3=4GiB", self.source)
            out[sid] = v
        return out


def _size(text: str, where: str) -> float:
    try:
        v = parse_bytes(text, plain_is_bytes=True)
    except ValueError as e:
        raise ScheduleError(str(e), where) from None
    if v is None or v < 0:
        raise ScheduleError(f"expected a size >= 0, got {text!r}", where)
    return v


def parse_activation_bytes(text: str) -> ActivationBytes:
    """``2GiB`` | ``0=1GiB,1=2GiB`` | ``2GiB,3=4GiB`` | ``FILE.json`` (module docstring)."""
    if text.strip().lower().endswith(".json"):
        return load_activation_file(text.strip())
    per: dict[int, float] = {}
    default = None
    for part in text.split(","):
        part = part.strip()
        if "=" in part:
            k, v = (x.strip() for x in part.split("=", 1))
            if not k.isdigit():
                raise ScheduleError(f"expected STAGE=SIZE with a stage id, got {part!r}", FLAG)
            if int(k) in per:
                raise ScheduleError(f"stage {k} is given twice", FLAG)
            per[int(k)] = _size(v, FLAG)
        elif part:
            if default is not None:
                raise ScheduleError(f"more than one size for all stages: {text!r}", FLAG)
            default = _size(part, FLAG)
        else:
            raise ScheduleError(f"empty entry in {text!r}", FLAG)
    return ActivationBytes(per, default)


def load_activation_file(path: str) -> ActivationBytes:
    """The sizes in a ``pp-activation-bytes`` JSON file (``python -m reference activations``)."""
    where = f"{FLAG} {path}"

    try:
        doc = json.loads(read_small_text(path, where))
    except FileNotFoundError:
        raise ScheduleError("no such file", where) from None
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        if isinstance(e, ScheduleError):
            raise
        raise ScheduleError(f"cannot read sizes: {str(e)[:200]}", where) from None
    stages = doc.get("stages") if isinstance(doc, dict) else None
    if not isinstance(stages, dict) or not stages:
        raise ScheduleError(
            f'expected {{"format": "{ACTIVATION_FORMAT}", "stages": {{"0": BYTES, ...}}}}', where)
    per: dict[int, float] = {}
    for k, v in stages.items():
        if not (isinstance(k, str) and k.isdigit()):
            raise ScheduleError(f"stages: key {k!r} is not a stage id", where)
        if isinstance(v, str):
            per[int(k)] = _size(v, f"{where}: stages.{k}")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            per[int(k)] = float(v)
        else:
            raise ScheduleError(f"stages.{k}: expected bytes >= 0, got {v!r}", where)
    return ActivationBytes(per, None, where)


@dataclass(frozen=True)
class MemoryLimit:
    """A parsed ``--memory-limit``: ``value`` in activation units, or in bytes
    when ``in_bytes`` (``text`` as the user wrote it)."""

    value: float
    in_bytes: bool
    text: str


def parse_memory_limit(text: str) -> MemoryLimit:
    """``8`` (activation units) or ``80GiB`` (bytes); ValueError otherwise."""
    b = parse_bytes(text)
    if b is None:
        v = float(text)
        if not v >= 0 or v == math.inf:
            raise ValueError(f"expected a number >= 0 or a size such as 80GiB, got {text!r}")
        return MemoryLimit(int(v) if v.is_integer() else v, False, text)
    if b < 0:
        raise ValueError(f"expected a size >= 0, got {text!r}")
    return MemoryLimit(b, True, text)


def require_sizes(limit: MemoryLimit | None, sizes: ActivationBytes | None) -> None:
    """A limit in bytes needs activation sizes: FlagError naming the flag otherwise."""
    if limit is not None and limit.in_bytes and sizes is None:
        raise FlagError(
            f"{limit.text} is in bytes, but the activation size of each stage is not given; "
            f"add {FLAG} SIZE (every stage) or {FLAG} 0=SIZE,1=SIZE,.. or {FLAG} FILE.json "
            "(measured on your model by `python -m reference activations`), "
            "or give the limit in activations (a plain number)",
            "--memory-limit",
        )

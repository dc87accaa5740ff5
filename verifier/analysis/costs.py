"""The cost model: how long each kind of action takes, for the timeline analysis.

What it is: durations for the computes F (forward), B (full backward), I
(input-gradient backward), W (weight-gradient backward), the overlapped
forward+backward pair FB (DualPipe's F&B: an ``Overlap(F, B)``), FI (an
``Overlap(F, I)``) and ``comm``, the latency of one message (added when a send
and its receive complete). Costs are global, with optional per-stage
overrides. Units are arbitrary (the same unit as the analysis's times).

Where the numbers come from:

- on the command line, ``--costs F=1,B=2,W=1,FB=2.5,comm=0`` (any subset of the
  keys F, B, I, W, FB, FI, comm);
- or a JSON file (``--costs costs.json``)::

      {"F": 1, "B": 2, "W": 1, "FB": 2.5, "comm": 0,
       "stages": {"3": {"F": 2, "B": 4}}}

  ``stages`` maps a stage id to overrides; a stage's table is the global keys
  given, updated by its own, and then completed by the rule below (so a stage
  that overrides only ``B`` gets its own derived ``I``).

Completion rule (keys not given), applied in this order:

1. ``F`` = 1.
2. ``B``: ``I + W`` when both I and W are given, else 2F.
3. ``I`` and ``W``: if one is given the other is ``B`` minus it; if neither,
   ``I = W = B/2`` (the zero-bubble papers' usual assumption).
4. ``FB`` = F + B (no overlap benefit unless told); ``FI`` = FB - W (the
   overlapped pair minus the weight-gradient part), at least max(F, I).
5. ``comm`` = 0.

Checks (each a ``ScheduleError`` naming the key, the value and its source):
every value a finite number; F, B, FB, FI > 0; I, W, comm >= 0;
``B == I + W`` (within 1e-9) when all three are given or derived;
``FB >= max(F, B)`` and ``FI >= max(F, I)`` (an overlapped pair cannot be
faster than either half). An unknown key is an error.

Overlap of two different stages: the pair's duration is the mean of the two
stages' FB (or FI); equal to FB when costs are global.

Not covered: per-micro-batch costs, bandwidth-dependent message sizes, the
duration of posting a communication op (zero).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from verifier.format.guard import printable, read_small_text
from verifier.errors import FlagError
from verifier.ir import ScheduleError

KEYS = ("F", "B", "I", "W", "FB", "FI", "comm")
_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class StageCosts:
    """A complete table of durations (every key present, checked)."""

    F: float = 1.0
    B: float = 2.0
    I: float = 1.0  # noqa: E741
    W: float = 1.0
    FB: float = 3.0
    FI: float = 2.0
    comm: float = 0.0

    def __post_init__(self) -> None:
        for k in KEYS:
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ScheduleError(f"cost {k}={v!r} must be a finite number")
        for k in ("F", "B", "FB", "FI"):
            if getattr(self, k) <= 0:
                raise ScheduleError(f"cost {k}={getattr(self, k)} must be > 0")
        for k in ("I", "W", "comm"):
            if getattr(self, k) < 0:
                raise ScheduleError(f"cost {k}={getattr(self, k)} must be >= 0")
        if abs(self.I + self.W - self.B) > _TOL * max(1.0, self.B):
            raise ScheduleError(
                f"costs B={self.B} must equal I + W = {self.I} + {self.W}"
            )
        if self.FB < max(self.F, self.B) - _TOL:
            raise ScheduleError(
                f"cost FB={self.FB} must be >= max(F, B) = {max(self.F, self.B)}"
            )
        if self.FI < max(self.F, self.I) - _TOL:
            raise ScheduleError(
                f"cost FI={self.FI} must be >= max(F, I) = {max(self.F, self.I)}"
            )

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in KEYS}


def complete(given: Mapping[str, float], where: str = "costs") -> StageCosts:
    """A full StageCosts from some keys, by the completion rule of the module."""
    for k, v in given.items():
        if k not in KEYS:
            raise ScheduleError(
                f"unknown cost key {k!r} (value {v!r}); keys are {', '.join(KEYS)}",
                where,
            )
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ScheduleError(f"cost {k}={v!r} must be a finite number", where)
    g = {k: float(v) for k, v in given.items()}
    F = g.get("F", 1.0)
    if "B" in g:
        B = g["B"]
    elif "I" in g and "W" in g:
        B = g["I"] + g["W"]
    else:
        B = 2.0 * F
    if "I" in g and "W" in g:
        I, W = g["I"], g["W"]  # noqa: E741
    elif "I" in g:
        I, W = g["I"], B - g["I"]  # noqa: E741
    elif "W" in g:
        I, W = B - g["W"], g["W"]  # noqa: E741
    else:
        I = W = B / 2.0  # noqa: E741
    FB = g.get("FB", F + B)
    FI = g.get("FI", max(FB - W, F, I))
    try:
        return StageCosts(F=F, B=B, I=I, W=W, FB=FB, FI=FI, comm=g.get("comm", 0.0))
    except ScheduleError as e:
        derived = ", ".join(f"{k}={v:g}" for k, v in
                            (("F", F), ("B", B), ("I", I), ("W", W), ("FB", FB)) if k not in g)
        extra = f" (derived: {derived})" if derived else ""
        raise ScheduleError(e.detail + extra, where) from None


@dataclass(frozen=True)
class CostModel:
    """Global costs plus per-stage overrides (already completed and checked)."""

    default: StageCosts = field(default_factory=StageCosts)
    per_stage: Mapping[int, StageCosts] = field(default_factory=dict)
    given: Mapping[str, float] = field(default_factory=dict)

    def of(self, stage: int) -> StageCosts:
        return self.per_stage.get(stage, self.default)

    def describe(self) -> str:
        d = self.default
        s = ",".join(f"{k}={getattr(d, k):g}" for k in KEYS)
        if self.per_stage:
            s += f" (+{len(self.per_stage)} stage override(s))"
        return s

    def as_dict(self) -> dict:
        out: dict = dict(self.default.as_dict())
        if self.per_stage:
            out["stages"] = {str(k): v.as_dict() for k, v in sorted(self.per_stage.items())}
        return out


DEFAULT = CostModel()


def scaled(cm: CostModel, factor: float) -> CostModel:
    """The same model with every compute duration times ``factor`` (comm unchanged).

    ``compare`` uses it to run each family on the same model: a stage of a
    route with PP stages on R ranks is R/PP of a one-stage-per-rank stage.
    """
    def sc(c: StageCosts) -> StageCosts:
        return StageCosts(F=c.F * factor, B=c.B * factor, I=c.I * factor, W=c.W * factor,
                          FB=c.FB * factor, FI=c.FI * factor, comm=c.comm)

    if factor == 1:
        return cm
    return CostModel(default=sc(cm.default),
                     per_stage={k: sc(v) for k, v in cm.per_stage.items()},
                     given=dict(cm.given))


def _number(text: str, key: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ScheduleError(f"cost {key}={text!r} is not a number", where) from None
    if not math.isfinite(v):
        raise ScheduleError(f"cost {key}={text!r} must be a finite number", where)
    return v


def parse_kv(text: str, where: str = "--costs") -> CostModel:
    """``F=1,B=2,W=1`` -> CostModel (global costs only); a FlagError naming
    ``where`` (the flag) for text that is no table of costs."""
    try:
        return _parse_kv(text, where)
    except ScheduleError as e:  # the value of a flag: the same words, the flag's type
        raise FlagError(e.detail, e.where) from None


def _parse_kv(text: str, where: str) -> CostModel:
    given: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ScheduleError(f"expected KEY=VALUE, got {part!r}", where)
        k, v = (x.strip() for x in part.split("=", 1))
        if k not in KEYS:
            raise ScheduleError(
                f"unknown cost key {k!r} (value {v!r}); keys are {', '.join(KEYS)}", where
            )
        if k in given:
            raise ScheduleError(f"cost {k} given twice", where)
        given[k] = _number(v, k, where)
    return CostModel(default=complete(given, where), given=given)


def from_dict(doc: object, where: str) -> CostModel:
    """A parsed JSON cost document -> CostModel (see the module docstring)."""
    if not isinstance(doc, dict):
        raise ScheduleError(f"expected a JSON object, got {type(doc).__name__}", where)
    given = {k: v for k, v in doc.items() if k != "stages"}
    default = complete(given, where)
    per_stage: dict[int, StageCosts] = {}
    stages = doc.get("stages", {})
    if not isinstance(stages, dict):
        raise ScheduleError(f"$.stages must be an object, got {stages!r}", where)
    for sk, over in stages.items():
        try:
            sid = int(sk)
        except ValueError:
            raise ScheduleError(f"$.stages key {sk!r} is not a stage id", where) from None
        if not isinstance(over, dict):
            raise ScheduleError(f"$.stages.{sk} must be an object, got {over!r}", where)
        merged = dict(given)
        merged.update(over)
        per_stage[sid] = complete(merged, f"{where}: $.stages.{sk}")
    return CostModel(default=default, per_stage=per_stage, given=given)


def load(spec: str | None) -> CostModel:
    """``--costs`` argument: None (defaults), ``K=V,...``, or a JSON file path."""
    if spec is None or spec.strip() == "":
        return DEFAULT
    if "=" in spec and not Path(spec).exists():
        return parse_kv(spec)
    path = Path(spec)

    where = printable(spec)
    try:
        text = read_small_text(path, where)
    except FileNotFoundError:
        raise ScheduleError(
            "no such cost file (give KEY=VALUE pairs like F=1,B=2 or a JSON file)", where
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError(
            f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", where
        ) from None
    except (RecursionError, ValueError) as e:  # nested too deeply, a 5000-digit number
        raise ScheduleError(f"invalid JSON: {str(e).split(';')[0][:100]}", where) from None
    return from_dict(doc, where)

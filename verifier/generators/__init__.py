"""Schedule generators: every family's schedule as an IR ``Schedule``.

What it is: ``generate(family, num_ranks, num_microbatches, num_chunks=None,
compute_only=False)`` for the families in ``FAMILIES`` (gpipe, 1f1b,
interleaved-1f1b, zb-h1, zbv, dualpipe, dualpipev, interleaved-zb,
looped-bfs), with the placements of design.md section 3. ``family`` may also
be PyTorch's schedule class name (``ScheduleInterleaved1F1B``,
``Interleaved1F1B``, ``zbvzerobubble``, ...: ``ALIASES``, case-insensitive,
with or without the ``Schedule`` prefix; ``resolve_family`` maps a name).
Bad parameters raise ``ScheduleError`` stating the rule and the values.

Communication: ``compute_only=True`` gives compute actions only. Otherwise the
single-direction families go through the shared lowering
(``verifier.semantics.lowering.lower``: sends right after the producing compute,
receives right before the consuming one, one ``Batch(wait=False)`` between two
computes), while dualpipe and dualpipev emit DeepSeek's own communication
(queued P2P ops posted as ``Batch(wait=True)`` right before each compute and
once at the end); see ``verifier.generators.dualpipe``.

The orders and where they come from are documented in
``verifier.generators.pipelines`` (PyTorch pipelining, the papers) and
``verifier.generators.dualpipe`` (DeepSeek's reference code).

What it does not cover: checking the result (the checker does; the tests run a
cheap dependency simulation over a parameter grid), timing and memory
(``verifier.analysis.timeline``).
"""

from __future__ import annotations

from verifier.generators import _common, dualpipe as _dp, pipelines as _pl
from verifier.ir import Schedule, ScheduleError
from verifier.semantics.lowering import lower

FAMILIES: tuple[str, ...] = (
    "gpipe",
    "1f1b",
    "interleaved-1f1b",
    "zb-h1",
    "zbv",
    "dualpipe",
    "dualpipev",
    "interleaved-zb",
    "looped-bfs",
)

# families with --chunks V stages per rank, placed round-robin
CHUNKED_FAMILIES: tuple[str, ...] = ("interleaved-1f1b", "interleaved-zb", "looped-bfs")
DEFAULT_INTERLEAVED_CHUNKS = 2

# PyTorch's names (torch.distributed.pipelining.schedules.get_schedule_class,
# and the classes' own names without "Schedule") -> our family
ALIASES: dict[str, str] = {
    "gpipe": "gpipe",
    "1f1b": "1f1b",
    "interleaved1f1b": "interleaved-1f1b",
    "zbvzerobubble": "zbv",
    "dualpipev": "dualpipev",
    "interleavedzerobubble": "interleaved-zb",
    "loopedbfs": "looped-bfs",
}


def resolve_family(name: str) -> str:
    """Our family for ``name``: one of FAMILIES, or a PyTorch schedule class name
    (case-insensitive, ``Schedule`` prefix optional). Raises ScheduleError."""
    if name in FAMILIES:
        return name
    key = name.lower() if isinstance(name, str) else ""
    if key in FAMILIES:
        return key
    bare = key[len("schedule"):] if key.startswith("schedule") else key
    if bare in ALIASES:
        return ALIASES[bare]
    raise ScheduleError(
        f"unknown schedule family {name!r}; choose one of {', '.join(FAMILIES)}, or "
        "PyTorch's name: GPipe, 1F1B, Interleaved1F1B, InterleavedZeroBubble, "
        "LoopedBFS, ZBVZeroBubble, DualPipeV (Schedule prefix optional)"
    )


def generate(
    family: str,
    num_ranks: int,
    num_microbatches: int,
    num_chunks: int | None = None,
    compute_only: bool = False,
) -> Schedule:
    """The schedule of ``family`` for these parameters (see module docstring)."""
    family = resolve_family(family)
    R, M = num_ranks, num_microbatches
    _common.check_counts(family, R, M)

    if family in ("dualpipe", "dualpipev"):
        _common.check_fixed_chunks(family, num_chunks, 2)
        if family == "dualpipe":
            acts = _dp.dualpipe(R, M, with_comm=not compute_only)
            placement = _common.dualpipe_placement(R, M)
        else:
            acts = _dp.dualpipev(R, M, with_comm=not compute_only)
            placement = _common.v_placement(R, M)
        return _common.build(family, R, M, placement, acts, 2)

    if family in CHUNKED_FAMILIES:
        v = DEFAULT_INTERLEAVED_CHUNKS if num_chunks is None else num_chunks
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ScheduleError(
                f"{family} needs num_chunks >= 1 (stages per rank), got {v!r}"
            )
        make = {"interleaved-1f1b": _pl.interleaved_1f1b,
                "interleaved-zb": _pl.interleaved_zero_bubble,
                "looped-bfs": _pl.looped_bfs}[family]
        acts = make(R, M, v)
        placement = _common.interleaved_placement(R, M, v)
    elif family == "zbv":
        _common.check_fixed_chunks(family, num_chunks, 2)
        v = 2
        acts = _pl.zbv(R, M)
        placement = _common.v_placement(R, M)
    else:
        _common.check_fixed_chunks(family, num_chunks, 1)
        v = 1
        make = {"gpipe": _pl.gpipe, "1f1b": _pl.one_f_one_b, "zb-h1": _pl.zb_h1}[family]
        acts = make(R, M)
        placement = _common.linear_placement(R, M)
    schedule = _common.build(family, R, M, placement, acts, v)
    if compute_only:
        return schedule

    return lower(schedule)


__all__ = ["ALIASES", "CHUNKED_FAMILIES", "DEFAULT_INTERLEAVED_CHUNKS", "FAMILIES", "generate",
           "resolve_family"]

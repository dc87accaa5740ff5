"""Shared pieces of the generators: placements (design.md section 3) and checks.

What it is: the stage/route layouts every family uses, the parameter checks
that raise ``ScheduleError`` naming the rule and the values, and the one place
a generated ``Schedule`` is assembled.

What it does not cover: any ordering of actions (each family's module does).
"""

from __future__ import annotations

from typing import Sequence

from verifier.ir import Action, Route, Schedule, ScheduleError, Stage


def linear_placement(num_ranks: int, num_microbatches: int):
    """One route over stages 0..R-1; stage s on rank s, holding layer s."""
    stages = tuple(Stage(s, s, s) for s in range(num_ranks))
    routes = (Route(tuple(range(num_ranks)), tuple(range(num_microbatches))),)
    return stages, routes


def interleaved_placement(num_ranks: int, num_microbatches: int, num_chunks: int):
    """One route over R*v stages placed round-robin: stage s on rank s % R."""
    n = num_ranks * num_chunks
    stages = tuple(Stage(s, s % num_ranks, s) for s in range(n))
    routes = (Route(tuple(range(n)), tuple(range(num_microbatches))),)
    return stages, routes


def v_placement(num_ranks: int, num_microbatches: int):
    """One route over 2R stages in a V: stage s on rank s (s < R), else 2R-1-s."""
    n = 2 * num_ranks
    stages = tuple(
        Stage(s, s if s < num_ranks else n - 1 - s, s) for s in range(n)
    )
    routes = (Route(tuple(range(n)), tuple(range(num_microbatches))),)
    return stages, routes


def dualpipe_placement(num_ranks: int, num_microbatches: int):
    """Two routes. Route 0: stages 0..R-1 on ranks 0..R-1 (layers 0..R-1),
    micro-batches 0..M/2-1. Route 1: stage R+k on rank R-1-k holding layer k
    (tied with stage k), micro-batches M/2..M-1."""
    half = num_microbatches // 2
    stages = tuple(Stage(s, s, s) for s in range(num_ranks)) + tuple(
        Stage(num_ranks + k, num_ranks - 1 - k, k) for k in range(num_ranks)
    )
    routes = (
        Route(tuple(range(num_ranks)), tuple(range(half))),
        Route(tuple(range(num_ranks, 2 * num_ranks)), tuple(range(half, num_microbatches))),
    )
    return stages, routes


def check_counts(family: str, num_ranks: object, num_microbatches: object) -> None:
    for name, v in (("num_ranks", num_ranks), ("num_microbatches", num_microbatches)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ScheduleError(f"{family} needs an integer {name}, got {v!r}")
        if v < 1:
            raise ScheduleError(f"{family} needs {name} >= 1, got {v}")


def check_fixed_chunks(family: str, num_chunks: int | None, fixed: int) -> None:
    """Families with a fixed number of stages per rank accept only that (or None)."""
    if num_chunks is not None and num_chunks != fixed:
        raise ScheduleError(
            f"{family} has {fixed} stage(s) per rank; num_chunks must be omitted "
            f"or {fixed}, got {num_chunks}"
        )


def build(
    family: str,
    num_ranks: int,
    num_microbatches: int,
    placement,
    actions: Sequence[Sequence[Action]],
    num_chunks: int,
) -> Schedule:
    stages, routes = placement
    return Schedule(
        num_ranks=num_ranks,
        num_microbatches=num_microbatches,
        stages=stages,
        routes=routes,
        actions=tuple(tuple(a) for a in actions),
        name=f"{family} ranks={num_ranks} microbatches={num_microbatches}"
        + (f" chunks={num_chunks}"
           if family in ("interleaved-1f1b", "interleaved-zb", "looped-bfs") else ""),
        family=family,
        params={
            "num_ranks": num_ranks,
            "num_microbatches": num_microbatches,
            "num_chunks": num_chunks,
        },
    )

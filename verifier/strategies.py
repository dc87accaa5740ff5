"""Public Hypothesis strategies for schedules: generated, shuffled, and mutated.

What it is: a small API for property-based tests of anything that consumes a
schedule (the checker, the executors):

- ``generated(*, families=..., min_ranks=, max_ranks=, min_microbatches=,
  max_microbatches=, compute_only=False)``: a schedule of a family from
  ``verifier.generators`` over a parameter range (parameters that a family
  refuses are skipped, never reported as failures);
- ``shuffled(...)``: a generated schedule whose ranks' action lists are
  randomly permuted and whose BATCHes randomly lose or gain their wait point:
  well-formed, usually broken (the random schedules of the checker's tests);
- ``mutants(schedule)`` and ``mutated(...)``: single-action mutants;
  ``all_mutants(schedule)`` enumerates every one deterministically. Kinds
  (``MutationKind``): swap two neighbouring steps, delete a step, duplicate a
  step, change a micro-batch, change a stage, move a step across a BATCH
  (or an op out of one).

Every mutant is a ``Mutant(kind, rank, step, schedule)``; ``describe`` says
what changed. Only this module and the tests import hypothesis (install it
with ``pip install 'ppverify[strategies]'``; without it, importing this module
raises MissingExtra, an ImportError, saying so).

What it does not cover: deciding anything about the schedules (the checker),
schedules that fail the JSON schema (tests of verifier.format.io do that).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Iterator, Sequence

from verifier.extras import require

require("hypothesis", "strategies", "verifier.strategies")

from hypothesis import assume  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from verifier.generators import CHUNKED_FAMILIES, FAMILIES, generate
from verifier.ir import Action, Batch, Comm, Compute, Overlap, Schedule, ScheduleError


class MutationKind(str, Enum):
    SWAP = "swap"
    DELETE = "delete"
    DUPLICATE = "duplicate"
    CHANGE_MB = "change-mb"
    CHANGE_STAGE = "change-stage"
    MOVE_ACROSS_BATCH = "move-across-batch"


@dataclass(frozen=True)
class Mutant:
    kind: MutationKind
    rank: int
    step: int
    schedule: Schedule
    detail: str = ""

    def describe(self) -> str:
        return f"{self.kind.value} at rank {self.rank} step {self.step}" + (
            f": {self.detail}" if self.detail else ""
        )


def _try_generate(family, R, M, chunks, compute_only):
    try:
        return generate(family, R, M, num_chunks=chunks, compute_only=compute_only)
    except ScheduleError:
        return None


@st.composite
def generated(
    draw,
    *,
    families: Sequence[str] = FAMILIES,
    min_ranks: int = 2,
    max_ranks: int = 4,
    min_microbatches: int = 1,
    max_microbatches: int = 8,
    compute_only: bool = False,
) -> Schedule:
    """A generated schedule; parameters a family refuses are filtered out."""
    if not families:
        raise ValueError("families must not be empty")
    if not 1 <= min_ranks <= max_ranks:
        raise ValueError(f"need 1 <= min_ranks <= max_ranks, got {min_ranks}, {max_ranks}")
    if not 1 <= min_microbatches <= max_microbatches:
        raise ValueError(
            f"need 1 <= min_microbatches <= max_microbatches, got {min_microbatches}, {max_microbatches}"
        )
    family = draw(st.sampled_from(list(families)))
    R = draw(st.integers(min_ranks, max_ranks))
    M = draw(st.integers(min_microbatches, max_microbatches))
    if family == "dualpipe":  # DeepSeek's rules: even ranks, even M >= 2R
        R += R % 2
        M = max(M + M % 2, 2 * R)
    elif family == "dualpipev":  # M >= 2R
        M = max(M, 2 * R)
    chunks = draw(st.sampled_from([1, 2, 3])) if family in CHUNKED_FAMILIES else None
    s = _try_generate(family, R, M, chunks, compute_only)
    assume(s is not None)
    return s


@st.composite
def shuffled(draw, *, max_ranks: int = 3, max_microbatches: int = 3, families: Sequence[str] = FAMILIES):
    """A generated schedule with each rank's steps permuted and wait points redrawn."""
    s = draw(generated(families=families, min_ranks=2, max_ranks=max_ranks, max_microbatches=max_microbatches))
    acts = []
    for row in s.actions:
        row = list(draw(st.permutations(list(row))))
        out = []
        for a in row:
            if isinstance(a, Batch) and draw(st.booleans()):
                a = Batch(a.ops, not a.wait)
            out.append(a)
        acts.append(out)
    return s.with_actions(acts, name=f"shuffled {s.name}")


# ---------------------------------------------------------------- mutants


def _with_row(s: Schedule, rank: int, row: list[Action]) -> Schedule:
    acts = [list(r) for r in s.actions]
    acts[rank] = row
    return s.with_actions(acts)


def _retarget(a: Action, mb: int | None = None, stage: int | None = None, which: int = 0) -> Action:
    """``a`` with the ``which``-th op/compute given another mb or stage."""

    def fix(x):
        return replace(x, mb=x.mb if mb is None else mb, stage=x.stage if stage is None else stage)

    if isinstance(a, (Compute, Comm)):
        return fix(a)
    if isinstance(a, Overlap):
        return Overlap(fix(a.f), a.b) if which == 0 else Overlap(a.f, fix(a.b))
    ops = list(a.ops)
    ops[which] = fix(ops[which])
    return Batch(tuple(ops), a.wait)


def _parts(a: Action) -> list:
    if isinstance(a, (Compute, Comm)):
        return [a]
    if isinstance(a, Overlap):
        return [a.f, a.b]
    return list(a.ops)


def all_mutants(s: Schedule) -> Iterator[Mutant]:
    """Every single-action mutant of ``s``, in a fixed order."""
    M = s.num_microbatches
    for r, row in enumerate(s.actions):
        n = len(row)
        local = s.stages_on_rank[r] if r < len(s.stages_on_rank) else ()
        for k, a in enumerate(row):
            if k + 1 < n:
                new = list(row)
                new[k], new[k + 1] = new[k + 1], new[k]
                yield Mutant(MutationKind.SWAP, r, k, _with_row(s, r, new), f"with step {k + 1}")
            yield Mutant(MutationKind.DELETE, r, k, _with_row(s, r, row[:k] + row[k + 1:]), str(a))
            yield Mutant(
                MutationKind.DUPLICATE, r, k, _with_row(s, r, row[:k + 1] + (a,) + row[k + 1:]), str(a)
            )
            for j, part in enumerate(_parts(a)):
                if M > 1:
                    mb = (part.mb + 1) % M
                    new = list(row)
                    new[k] = _retarget(a, mb=mb, which=j)
                    yield Mutant(MutationKind.CHANGE_MB, r, k, _with_row(s, r, new), f"{part} -> mb {mb}")
                others = [x for x in local if x != part.stage]
                if others:
                    new = list(row)
                    new[k] = _retarget(a, stage=others[0], which=j)
                    yield Mutant(
                        MutationKind.CHANGE_STAGE, r, k, _with_row(s, r, new), f"{part} -> stage {others[0]}"
                    )
            if isinstance(a, Batch):
                # an op taken out of the batch, posted on its own before or after it
                for j, op in enumerate(a.ops):
                    rest = tuple(o for i, o in enumerate(a.ops) if i != j)
                    if not rest:
                        continue
                    for before in (True, False):
                        mid = [op, Batch(rest, a.wait)] if before else [Batch(rest, a.wait), op]
                        yield Mutant(
                            MutationKind.MOVE_ACROSS_BATCH, r, k,
                            _with_row(s, r, list(row[:k]) + mid + list(row[k + 1:])),
                            f"{op} out of the BATCH, {'before' if before else 'after'} it",
                        )
                # the step before the batch moved after it
                if k > 0 and not isinstance(row[k - 1], Batch):
                    new = list(row)
                    new[k - 1], new[k] = new[k], new[k - 1]
                    yield Mutant(
                        MutationKind.MOVE_ACROSS_BATCH, r, k - 1, _with_row(s, r, new),
                        f"{row[k - 1]} moved after the BATCH",
                    )


def mutants(s: Schedule):
    """A strategy drawing one single-action mutant of ``s``."""
    lst = list(all_mutants(s))
    if not lst:
        raise ValueError("the schedule has no actions to mutate")
    return st.sampled_from(lst)


@st.composite
def mutated(draw, **generated_kwargs) -> Mutant:
    """A single-action mutant of a generated schedule (keyword args as ``generated``)."""
    s = draw(generated(**generated_kwargs))
    return draw(mutants(s))


__all__ = ["MutationKind", "Mutant", "all_mutants", "generated", "mutants", "mutated", "shuffled"]

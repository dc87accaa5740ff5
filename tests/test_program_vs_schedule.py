"""The program checker held against the schedule checker: a schedule written as
the program a runtime following it issues (``verifier.format.schedule_program``)
terminates under a model exactly when the schedule is deadlock-free under it
(graph engine), on every generated family and on seeded mutants that move one
communication action (600 drawn: 165 compared, 24 of them deadlock somewhere). Two independent implementations of one semantics (the replay of
``verifier.check.program.replay`` shares no code with ``verifier.check.hbgraph``).

Left out, and counted: schedules whose ``dependencies`` fail (no program issues
a wait on a receive it has not posted) and BATCHes without a wait holding a
receive a compute consumes while the batch has other ops (a program's wait on
one op of a coalesced batch waits for the whole batch, as NCCL does; the
schedule model lets the compute start once that one op completed)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from verifier.check.checker import check
from verifier.check.program import check_program
from verifier.errors import ScheduleError
from verifier.format.schedule_program import program_from_schedule
from verifier.generators import FAMILIES, generate
from verifier.ir import Batch, Comm
from verifier.results.check import Status

MODELS = ("nccl", "nccl-pairs", "gloo", "eager")


def _program_terminates(s) -> dict:
    r = check_program(program_from_schedule(s), "all")
    return {m.model: m.terminates for m in r.models}


def _schedule_terminates(s) -> dict | None:
    out = {}
    for m in MODELS:
        r = check(s, comm_model=m, engine="graph")
        if r.result_of("dependencies").status is not Status.HOLDS:
            return None
        out[m] = r.result_of("deadlock-free").status is Status.HOLDS
    return out


def _coalesced_unwaited(s) -> bool:
    return any(isinstance(a, Batch) and not a.wait and len(a.ops) > 1 for acts in s.actions for a in acts)


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_families_agree(family):
    for R, M in ((2, 4), (4, 8)):
        s = generate(family, R, M)
        assert _program_terminates(s) == _schedule_terminates(s) == dict.fromkeys(MODELS, True)


def test_mutants_agree():
    """Move one communication action (a SEND, RECV or BATCH) up to 3 steps on one
    rank: the two checkers agree under every model; where a BATCH without a wait
    holds several ops, the program (a wait covers the whole coalesced batch) can
    only be stricter."""
    rng = random.Random(7)
    compared = deadlocks = coalesced = same = skipped = 0
    for n in range(600):
        fam = FAMILIES[n % len(FAMILIES)]
        R = rng.choice((2, 4))
        s = generate(fam, R, rng.choice((2 * R, 2 * R + 2)))
        r = rng.randrange(s.num_ranks)
        acts = list(s.actions[r])
        comm = [k for k, a in enumerate(acts) if isinstance(a, (Batch, Comm))]
        if not comm:
            continue
        i = rng.choice(comm)
        a = acts[i]
        # a receive moves earlier, a send later (either keeps its data flow); a batch either way
        if isinstance(a, Comm):
            step = rng.randint(1, 6) * (1 if a.kind.value.startswith("SEND") else -1)
        else:
            step = rng.choice((-1, 1)) * rng.randint(1, 6)
        j = max(0, min(len(acts) - 1, i + step))
        acts.insert(j, acts.pop(i))
        m = dataclasses.replace(s, actions=s.actions[:r] + (tuple(acts),) + s.actions[r + 1:])
        want = _schedule_terminates(m)
        if want is None:
            skipped += 1
            continue
        try:
            got = _program_terminates(m)
        except ScheduleError:
            skipped += 1
            continue
        if _coalesced_unwaited(m):
            coalesced += 1
            assert all(want[k] for k in MODELS if got[k]), (fam, r, i, j, got, want)
            same += got == want
        else:
            assert got == want, (fam, r, i, j, got, want)
            compared += 1
        deadlocks += not all(want.values())
    assert compared + same >= 150 and deadlocks >= 20, (compared, coalesced, same, deadlocks, skipped)
    print(f"compared {compared} exactly, {coalesced} with coalesced batches ({same} equal), "
          f"{deadlocks} deadlock somewhere, {skipped} skipped (dependencies fail)")

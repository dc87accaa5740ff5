"""The batch-grouping check (verifier/check/grouping.py) and its re-derivation
by the certificate checker.

- a pair of BATCHes whose ops with each other cross (each holds an op matched
  outside the other) is reported, once, at both places; the certificate
  checker confirms every report and rejects a forged one;
- a grouping that one side refines (the peer posts the same ops as smaller
  units, what PyTorch's own schedules do) is not reported, and a schedule
  without BATCHes has nothing to report;
- the shipped examples: interleaved_1f1b and zbv have crossing groupings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from verifier.check import certificate
from verifier.check.grouping import batch_grouping
from verifier.format.io import load_schedule
from verifier.generators import generate
from verifier.ir import Batch, Comm, CommKind, Schedule
from verifier.results.check import PropertyId, Violation
from verifier.strategies import shuffled

ROOT = Path(__file__).resolve().parents[1]
SF, SB, RF, RB = CommKind.SEND_F, CommKind.SEND_B, CommKind.RECV_F, CommKind.RECV_B


def _flat(s: Schedule) -> Schedule:
    rows = [[op for a in row for op in (a.ops if isinstance(a, Batch) else (a,))] for row in s.actions]
    return s.with_actions(rows, name="flattened")


def test_crossing_batches_are_reported_once():
    base = generate("1f1b", 2, 2)
    r0 = [a for a in base.actions[0] if not isinstance(a, (Comm, Batch))]
    r1 = [a for a in base.actions[1] if not isinstance(a, (Comm, Batch))]
    # rank 0 groups (SEND_F0, SEND_F1), rank 1 groups (RECV_F0, SEND_B0): they cross
    s = base.with_actions([
        [r0[0], r0[1], Batch((Comm(SF, 0, 0), Comm(SF, 0, 1)), False), Comm(RB, 0, 0), Comm(RB, 0, 1)]
        + r0[2:],
        [Batch((Comm(RF, 1, 0),), False)] + [r1[0], r1[1]] + [
            Batch((Comm(RF, 1, 1), Comm(SB, 1, 0)), False)] + r1[2:] + [Comm(SB, 1, 1)],
    ], name="crossing")
    vs = batch_grouping(s)
    assert [v.code for v in vs] == ["batch-grouping"]
    v = vs[0]
    assert v.property is PropertyId.MESSAGE_MATCHING and set(v.locations) == {(0, 2), (1, 3)}
    assert "cross" in v.message and "group these messages differently" in v.message
    assert certificate.check_violation(s, v) == (True, "")
    # the same places on the flattened schedule: nothing crosses there
    forged = Violation(PropertyId.MESSAGE_MATCHING, "batch-grouping", ((0, 2), (1, 0)), v.args)
    assert not certificate.check_violation(s, forged)[0]


def test_a_refined_grouping_is_not_reported():
    # rank 0 sends F0 and receives B0 in one BATCH, rank 1 posts them singly
    base = generate("1f1b", 2, 2)
    assert batch_grouping(_flat(base)) == []
    for fam in ("1f1b", "gpipe", "zb-h1", "dualpipe", "dualpipev"):
        assert batch_grouping(generate(fam, 2, 4)) == [], fam


@pytest.mark.parametrize("name,count", [("interleaved_1f1b", 2), ("zbv", 9), ("1f1b", 0),
                                        ("dualpipe", 0)])
def test_examples(name, count):
    s = load_schedule(str(ROOT / "specs" / "examples" / f"{name}.json"))
    vs = batch_grouping(s)
    assert len(vs) == count
    assert not certificate.check_violations(s, vs)


@given(shuffled(max_ranks=4, max_microbatches=4))
def test_every_report_is_confirmed_and_flat_schedules_have_none(s):
    vs = batch_grouping(s)
    assert not certificate.check_violations(s, vs)
    assert batch_grouping(_flat(s)) == []

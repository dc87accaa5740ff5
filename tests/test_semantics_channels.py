"""The lenient half of the semantics core (verifier.semantics.channels) against
the strict one (verifier.semantics.tables).

On well-formed schedules (every family, generated and shuffled) ``CommIndex``
and ``Tables`` must agree on everything they both state: the numbering of ops
and units, each op's peer, the FIFO partners, the unmatched ops and channel
counts, and the first receive of every (rank, kind, stage, micro-batch). On
schedules that are not well-formed (an action on the wrong rank, a stage on no
route, an empty BATCH) ``Tables`` refuses and ``CommIndex`` still answers, as
the analysis replay and the reference executor need.

Not covered: the replay's timing (tests/test_analysis*.py) and the executor's
runs (tests/test_reference*.py), which read these tables.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, given, settings, strategies as st

from verifier import strategies
from verifier.errors import IllFormed
from verifier.generators import FAMILIES, generate
from verifier.ir import Batch, Comm, CommKind, ScheduleError
from verifier.semantics.channels import CommIndex
from verifier.semantics.lowering import lower_if_compute_only
from verifier.semantics.tables import Tables


def _agree(s) -> None:
    t, ix = Tables(s), CommIndex(s)
    assert ix.bad == []
    assert ix.num_ops == t.num_ops
    assert [(o[0], o[1], o[3]) for o in t.ops] == list(zip(ix.op_rank, ix.op_step, ix.op_comm))
    assert ix.unit_rank == t.unit_rank and ix.unit_ops == t.unit_ops and ix.runits == t.runits
    assert ix.op_unit == t.unit_of_op
    assert ix.op_peer == t.peer == [s.peer_of(c) for c in ix.op_comm]
    assert bytes(ix.op_send) == bytes(t.is_send)
    assert ix.partner == t.partner
    assert ix.unmatched == t.unmatched and ix.counts == t.counts
    # first receives: the same op for every key either states
    strict = {}
    for kind, tab in t.first_recv.items():
        for st in s.stages:
            for m in range(s.num_microbatches):
                i = tab[t.base[st.id] + m]
                if i >= 0:
                    strict[(st.rank, kind, st.id, m)] = i
    assert ix.first_recv == strict


@pytest.mark.parametrize("family", FAMILIES)
def test_agrees_with_tables_on_every_family(family):
    done = 0
    for R, M in ((2, 4), (3, 6), (4, 8)):
        try:
            s = lower_if_compute_only(generate(family, R, M))
        except ScheduleError:
            continue  # the family's own parameter rules
        _agree(s)
        done += 1
    assert done


@settings(max_examples=60, deadline=None)
@given(strategies.shuffled(max_ranks=4, max_microbatches=4))
def test_agrees_with_tables_on_shuffled_schedules(s):
    _agree(lower_if_compute_only(s))


def _oracle(s):
    """FIFO partners and first receives of the schedule as written, from
    ``Schedule.peer_of`` (a test's own derivation)."""
    ops = [(r, a) for r, acts in enumerate(s.actions) for a0 in acts
           for a in ((a0,) if type(a0) is Comm else a0.ops if type(a0) is Batch else ())]
    chans: dict = {}
    first: dict = {}
    for i, (r, c) in enumerate(ops):
        p = s.peer_of(c)
        chans.setdefault((r, p) if c.kind.is_send else (p, r), ([], []))[0 if c.kind.is_send else 1].append(i)
        if not c.kind.is_send:
            first.setdefault((r, c.kind, c.stage, c.mb), i)
    partner = [-1] * len(ops)
    for a, b in chans.values():
        for x, y in zip(a, b):
            partner[x], partner[y] = y, x
    return partner, first


@settings(max_examples=100, deadline=None)
@given(strategies.generated(max_ranks=4, max_microbatches=4), st.data())
def test_answers_where_tables_refuse(s, data):
    """A comm action moved or copied to a random place: on another rank that
    is not well-formed (``Tables`` refuses), yet ``CommIndex`` pairs the ops
    as written and finds the first receives as the oracle does; a copy on its
    own rank (two receives of one key) is well-formed and both agree."""
    s = lower_if_compute_only(s)
    R = s.num_ranks
    comms = [(r, k) for r, acts in enumerate(s.actions) for k, a in enumerate(acts)
             if type(a) in (Comm, Batch)]
    assume(comms)
    r, k = data.draw(st.sampled_from(comms))
    r2 = data.draw(st.integers(0, R - 1))
    acts = [list(a) for a in s.actions]
    a = acts[r][k] if r2 == r or data.draw(st.booleans()) else acts[r].pop(k)
    acts[r2].insert(data.draw(st.integers(0, len(acts[r2]))), a)
    bad = s.with_actions(tuple(map(tuple, acts)))
    ix = CommIndex(bad)
    partner, first = _oracle(bad)
    assert ix.partner == partner and ix.first_recv == first
    assert all(ix.partner[j] == i for i, j in enumerate(ix.partner) if j >= 0)
    if r2 == r:
        _agree(bad)
    else:
        with pytest.raises(IllFormed):
            Tables(bad)


def _one_f1b(R=3, M=4):
    return lower_if_compute_only(generate("1f1b", R, M))


def _find(s, rank, kind):
    for k, a in enumerate(s.actions[rank]):
        for j, op in enumerate(a.ops if type(a) is Batch else (a,) if type(a) is Comm else ()):
            if op.kind is kind:
                return k, j, op
    raise AssertionError("no such op")


def test_an_action_on_the_wrong_rank_is_paired_as_written():
    s = _one_f1b()
    k, j, op = _find(s, 1, CommKind.RECV_F)  # stage 1's first receive, from rank 0
    acts = [list(a) for a in s.actions]
    moved = acts[1].pop(k)
    acts[2].insert(0, moved)  # rank 2 now posts it; its peer is still rank 0
    bad = s.with_actions(tuple(map(tuple, acts)))
    with pytest.raises(IllFormed):
        Tables(bad)
    ix = CommIndex(bad)
    i = ix.op_at(2, 0, j if type(moved) is Batch else None)
    assert ix.op_comm[i] == op and ix.op_rank[i] == 2 and ix.op_peer[i] == 0
    assert ix.first_recv[(2, CommKind.RECV_F, op.stage, op.mb)] == i
    assert ix.first_recv.get((1, CommKind.RECV_F, op.stage, op.mb)) != i
    assert ix.partner[i] == -1  # rank 0 sends nothing to rank 2
    assert ix.counts[(0, 2)] == (0, 1)
    assert (i, 0) in ix.unmatched
    sends, recvs = ix.counts[(0, 1)]
    assert sends == recvs + 1  # the send it was meant for is left over
    assert ix.bad == []
    ix.check()  # nothing to locate: every op has a peer


def test_ops_with_no_peer_are_located():
    s = _one_f1b()
    k, j, op = _find(s, 0, CommKind.SEND_F)
    for new, why in ((dataclasses.replace(op, stage=9), "names a stage that is not on any route"),
                     (Comm(CommKind.RECV_F, 0, 0), "has no peer (its route ends there)"),
                     (dataclasses.replace(op, mb=7), "has micro-batch 7 outside 0..3")):
        acts = [list(a) for a in s.actions]
        a = acts[0][k]
        acts[0][k] = new if type(a) is Comm else Batch(a.ops[:j] + (new,) + a.ops[j + 1:], a.wait)
        ix = CommIndex(s.with_actions(tuple(map(tuple, acts))))
        assert [why] == [w for _, w in ix.bad]
        with pytest.raises(ScheduleError, match=rf"rank 0 step {k}: .*{why.replace('(', '.').replace(')', '.')}; hint"):
            ix.check("; hint")


def test_an_empty_batch_is_a_unit_without_ops():
    s = _one_f1b(2, 2)
    acts = [list(a) for a in s.actions]
    acts[0].insert(0, Batch((), True))
    ix = CommIndex(s.with_actions(tuple(map(tuple, acts))))
    assert ix.unit_at[0][0] == 0 and len(ix.unit_ops[0]) == 0 and ix.unit_rank[0] == 0
    assert ix.op_unit[0] == 1 and ix.num_ops == CommIndex(s).num_ops

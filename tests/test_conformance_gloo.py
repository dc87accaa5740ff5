"""The conformance harness (fastpath.conformance) on real gloo ranks.

Three 2-rank schedules with known outcomes, in ONE spawn: 1F1B as generated
(terminates), 1F1B whose rank 0 waits for a gradient before sending the
forward it needs (hangs under every model), and 1F1B whose ranks each wait
for a send before posting the receive the other's send needs (eager says it
terminates; a gloo send completes only once its receive is posted, so it
hangs). The per-schedule timeout is generous (a terminating one takes
milliseconds) so a loaded machine cannot turn a terminating schedule into a
hang; the whole spawn has a deadline. Run alone with ``pytest -m multiprocess``.
"""

from __future__ import annotations

import time

import pytest

from fastpath.conformance import run_schedules
from verifier.check.checker import PropertyId, Status, check
from verifier.generators import generate
from verifier.ir import Batch, Comm, CommKind

pytestmark = pytest.mark.multiprocess


def _deadlock_free(s, model):
    return check(s, comm_model=model, engine="graph").result_of(PropertyId.DEADLOCK_FREE).status


def _schedules():
    ok = generate("1f1b", 2, 2)
    rows = [list(r) for r in ok.actions]
    # rank 0 first waits for the gradient of micro-batch 0: nothing was sent forward yet
    early = [Batch((Comm(CommKind.RECV_B, 0, 0),), True)] + [
        a for a in rows[0] if not (isinstance(a, Batch) and Comm(CommKind.RECV_B, 0, 0) in a.ops)]
    eager_hang = ok.with_actions([early, rows[1]], name="gradient waited first")
    # every batch holding sends and receives: its sends waited first, then its receives
    split = []
    for row in rows:
        new = []
        for a in row:
            snd = tuple(op for op in a.ops if op.kind.is_send) if isinstance(a, Batch) else ()
            rcv = tuple(op for op in a.ops if not op.kind.is_send) if isinstance(a, Batch) else ()
            new += [Batch(snd, True), Batch(rcv, False)] if snd and rcv else [a]
        split.append(new)
    rendezvous = ok.with_actions(split, name="sends waited before receives")
    return ok, eager_hang, rendezvous


def test_gloo_terminates_and_hangs_as_known():
    ok, eager_hang, rendezvous = _schedules()
    assert _deadlock_free(ok, "nccl") is Status.HOLDS
    assert _deadlock_free(eager_hang, "eager") is Status.FAILS
    assert _deadlock_free(rendezvous, "eager") is Status.HOLDS  # eager misses this hang
    assert _deadlock_free(rendezvous, "nccl") is Status.FAILS
    t = time.monotonic()
    out = run_schedules([ok, eager_hang, rendezvous, ok], 2, timeout_s=8.0, deadline_s=150)
    print(f"4 schedules in {time.monotonic() - t:.1f}s:", *(o.describe() for o in out), sep="\n  ")
    assert out[0].terminated and out[3].terminated  # the group still works after hangs
    assert not out[1].terminated
    r0 = out[1].ranks[0]
    assert not r0.finished and r0.step == 0 and "RECV_B" in r0.waiting_for
    assert not out[2].terminated
    for r in out[2].ranks:  # each rank is stuck waiting for its own send
        assert not r.finished and "SEND" in r.waiting_for, r


def test_bad_rank_count_is_refused():
    with pytest.raises(ValueError, match="3 ranks"):
        run_schedules([generate("1f1b", 3, 3)], 2)


def _corpus_rows(ranks: int, count: int, seed: int):
    """Runnable corpus schedules of ``ranks`` ranks with the checker's gloo
    verdict, about half predicted to hang."""
    from fastpath.conformance_corpus import corpus

    rows, seen = [], set()
    for s in corpus([ranks], count, seed):
        if s.num_ranks != ranks or s.actions in seen:
            continue
        seen.add(s.actions)
        res = check(s, comm_model="gloo", engine="graph")
        st = {p.property: p.status for p in res.properties}
        if st[PropertyId.WELL_FORMED] is not Status.HOLDS or st[PropertyId.DEPENDENCIES] is not Status.HOLDS:
            continue
        rows.append((s, st[PropertyId.DEADLOCK_FREE] is Status.HOLDS))
    hang = [r for r in rows if not r[1]][: count // 2]
    ends = [r for r in rows if r[1]][: count - len(hang)]
    return ends + hang


@pytest.mark.parametrize("ranks,count", [(2, 18), (3, 10)])
def test_gloo_agrees_with_check_comm_model_gloo(ranks, count):
    # the engine (check --comm-model gloo) against real gloo, both directions; a
    # hang the model does not predict is re-run with a long timeout first
    rows = _corpus_rows(ranks, count, seed=7)
    assert len(rows) == count and sum(not ok for _, ok in rows) >= count // 3
    out = run_schedules([s for s, _ in rows], ranks, timeout_s=2.0, deadline_s=200)
    again = [i for i, (o, (_, ok)) in enumerate(zip(out, rows)) if ok and not o.terminated]
    if again:
        for i, o in zip(again, run_schedules([rows[i][0] for i in again], ranks, timeout_s=8.0,
                                             deadline_s=200)):
            out[i] = o
    wrong = [(s.name, ok, o.describe()) for (s, ok), o in zip(rows, out) if o.terminated != ok]
    assert not wrong, wrong

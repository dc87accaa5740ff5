"""Tests of the Z3 engine (verifier/check/z3engine.py) against hand-made schedules,
the generators, and a tiny operational replay written here independently.

The replay (``_Machine``) executes a schedule step by step under the
operational reading of specs/SEMANTICS.md, driven by the model's fields
(verifier.semantics.comm: a unit is active at the head of its stream, or when
posted where the model has none; rendezvous or buffered sends). It is used two ways:
``replay(order)`` checks that the engine's witness order is executable, and
``simulate()`` runs greedily to decide termination, which the engine's
verdict must agree with on mutated schedules.

Not covered here: the checker's verdict and output (tests of verifier.check.checker),
the graph engine.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import given, strategies as st

from verifier.check import z3engine as Z
from verifier.ir import (
    B,
    Batch,
    Comm,
    Compute,
    F,
    I,
    Overlap,
    RECV_B,
    RECV_F,
    Route,
    SEND_B,
    SEND_F,
    Schedule,
    ScheduleError,
    Stage,
    W,
    comms_of,
    computes_of,
)
from verifier.semantics import comm
from verifier.semantics.lowering import lower
from verifier.semantics.memory import peak_activations

try:
    from verifier.generators import FAMILIES, generate
except ImportError:  # pragma: no cover - the generators are another part
    FAMILIES, generate = (), None
try:
    from verifier.check import certificate
except ImportError:  # pragma: no cover - the certificate checker is another part
    certificate = None


# ---------------------------------------------------------------------------
# hand-made schedules
# ---------------------------------------------------------------------------


def linear(num_ranks: int, num_mb: int, actions) -> Schedule:
    stages = tuple(Stage(s, s, s) for s in range(num_ranks))
    routes = (Route(tuple(range(num_ranks)), tuple(range(num_mb))),)
    return Schedule(num_ranks, num_mb, stages, routes, tuple(tuple(a) for a in actions))


def one_f_one_b(num_ranks: int, num_mb: int, split: bool = False) -> Schedule:
    """Compute-only 1F1B (ZB-H1-like with W right after I when ``split``)."""
    acts = []
    for r in range(num_ranks):
        warm = min(num_ranks - 1 - r, num_mb)
        seq = [Compute(F, r, m) for m in range(warm)]

        def back(m):
            return [Compute(I, r, m), Compute(W, r, m)] if split else [Compute(B, r, m)]

        f, b = warm, 0
        while f < num_mb:
            seq.append(Compute(F, r, f))
            f += 1
            seq += back(b)
            b += 1
        while b < num_mb:
            seq += back(b)
            b += 1
        acts.append(seq)
    return linear(num_ranks, num_mb, acts)


def issue_172668() -> Schedule:
    """pytorch/pytorch#172668: plain unbatched P2P that hangs on one NCCL stream."""
    r0 = [
        Compute(F, 0, 0), Comm(SEND_F, 0, 0), Compute(F, 0, 1), Comm(SEND_F, 0, 1),
        Comm(RECV_B, 0, 0), Compute(B, 0, 0), Comm(RECV_B, 0, 1), Compute(B, 0, 1),
    ]
    r1 = [
        Comm(RECV_F, 1, 0), Compute(F, 1, 0), Compute(B, 1, 0), Comm(SEND_B, 1, 0),
        Comm(RECV_F, 1, 1), Compute(F, 1, 1), Compute(B, 1, 1), Comm(SEND_B, 1, 1),
    ]
    return linear(2, 2, [r0, r1])


def gpipe_plain() -> Schedule:
    """2 ranks, 2 micro-batches, all forwards then all backwards, plain ops."""
    r0 = [
        Compute(F, 0, 0), Comm(SEND_F, 0, 0), Compute(F, 0, 1), Comm(SEND_F, 0, 1),
        Comm(RECV_B, 0, 0), Compute(B, 0, 0), Comm(RECV_B, 0, 1), Compute(B, 0, 1),
    ]
    r1 = [
        Comm(RECV_F, 1, 0), Comm(RECV_F, 1, 1), Compute(F, 1, 0), Compute(F, 1, 1),
        Compute(B, 1, 0), Comm(SEND_B, 1, 0), Compute(B, 1, 1), Comm(SEND_B, 1, 1),
    ]
    return linear(2, 2, [r0, r1])


def v_one_rank(*actions) -> Schedule:
    """One rank holding both stages of a V (stage 0 then stage 1), 2 micro-batches."""
    stages = (Stage(0, 0, 0), Stage(1, 0, 1))
    routes = (Route((0, 1), (0, 1)),)
    return Schedule(1, 2, stages, routes, (tuple(actions),))


def c(kind, stage, mb):
    return Compute(kind, stage, mb)


# ---------------------------------------------------------------------------
# the tiny operational replay
# ---------------------------------------------------------------------------


def fifo_pairs(s: Schedule):
    """place -> matched place (FIFO per ordered rank pair), and the payload verdict."""
    sends, recvs = defaultdict(list), defaultdict(list)
    for r, acts in enumerate(s.actions):
        for i, a in enumerate(acts):
            for j, op in enumerate(comms_of(a)):
                peer = s.peer_of(op)
                (sends[(r, peer)] if op.kind.is_send else recvs[(peer, r)]).append((r, i, j, op))
    match, ok = {}, True
    for key in set(sends) | set(recvs):
        ok &= len(sends[key]) == len(recvs[key])
        for x, y in zip(sends[key], recvs[key]):
            match[x[:3]], match[y[:3]] = y[:3], x[:3]
            ok &= s.matching_op(x[3]) == y[3]
    return match, ok


class _Machine:
    def __init__(self, s: Schedule, model: str):
        self.s, self.m = s, comm.model(model)
        self.match, _ = fifo_pairs(s)
        self.pc = [0] * s.num_ranks
        self.waiting = [None] * s.num_ranks
        self.done = [set() for _ in range(s.num_ranks)]  # (kind, stage, mb)
        self.posted, self.completed = set(), set()
        self.received = [set() for _ in range(s.num_ranks)]  # completed recv ops
        self.stream = defaultdict(list)  # (rank, stream key) -> its unit steps, in order
        self.unit_stream = {}  # (rank, step) -> its stream

    def _has(self, r, kinds, stage, mb):
        return any((k, stage, mb) in self.done[r] for k in kinds)

    def ready(self, r: int, i: int) -> bool:
        s = self.s
        if self.pc[r] != i or self.waiting[r] is not None or i >= len(s.actions[r]):
            return False
        a = s.actions[r][i]
        for c in computes_of(a):
            if c.kind is F:
                p = s.prev_stage(c.stage)
                if p is not None and s.rank_of(p) != r:
                    if (RECV_F, c.stage, c.mb) not in self.received[r]:
                        return False
                elif p is not None and not self._has(r, (F,), p, c.mb):
                    return False
            elif c.kind in (B, I):
                if not self._has(r, (F,), c.stage, c.mb):
                    return False
                n = s.next_stage(c.stage)
                if n is not None and s.rank_of(n) != r:
                    if (RECV_B, c.stage, c.mb) not in self.received[r]:
                        return False
                elif n is not None and not self._has(r, (B, I), n, c.mb):
                    return False
            elif not self._has(r, (I,), c.stage, c.mb):
                return False
        for op in comms_of(a):
            if op.kind is SEND_F and not self._has(r, (F,), op.stage, op.mb):
                return False
            if op.kind is SEND_B and not self._has(r, (B, I), op.stage, op.mb):
                return False
        return True

    def execute(self, r: int, i: int) -> None:
        a = self.s.actions[r][i]
        for c in computes_of(a):
            self.done[r].add((c.kind, c.stage, c.mb))
        ops = comms_of(a)
        for j, op in enumerate(ops):
            self.posted.add((r, i, j))
            if op.kind.is_send and not self.m.rendezvous and not self.m.has_streams:
                self.completed.add((r, i, j))
        if ops and self.m.has_streams:
            batched = isinstance(a, Batch)
            key = (r, self.m.stream_of(batched, -2 if batched else self.s.peer_of(ops[0])))
            self.stream[key].append(i)
            self.unit_stream[(r, i)] = key
        if isinstance(a, Batch) and a.wait:
            self.waiting[r] = i
        else:
            self.pc[r] += 1
        self.settle()

    def _complete(self, place):
        self.completed.add(place)
        r, i, j = place
        op = comms_of(self.s.actions[r][i])[j]
        if not op.kind.is_send:
            self.received[r].add((op.kind, op.stage, op.mb))

    def settle(self) -> None:
        changed = True
        while changed:
            changed = False
            for place in sorted(self.posted - self.completed):
                peer = self.match.get(place)
                if peer is None or peer not in self.posted:
                    continue
                active = [self._active(x) for x in (place, peer)]
                if self.m.rendezvous:
                    if all(active):
                        self._complete(place), self._complete(peer)
                        changed = True
                elif active[0] and peer in self.completed:  # a buffered receive
                    self._complete(place)
                    changed = True
            for key, lst in self.stream.items():
                while lst:
                    r, i = key[0], lst[0]
                    n = len(comms_of(self.s.actions[r][i]))
                    if all((r, i, j) in self.completed for j in range(n)):
                        lst.pop(0)
                        changed = True
                    else:
                        break
            for r in range(self.s.num_ranks):
                w = self.waiting[r]
                if w is not None:
                    n = len(comms_of(self.s.actions[r][w]))
                    if all((r, w, j) in self.completed for j in range(n)):
                        self.waiting[r] = None
                        self.pc[r] += 1
                        changed = True

    def _active(self, place) -> bool:
        """Posted, and at the head of its stream where the model has streams."""
        key = self.unit_stream.get(place[:2])
        return key is None or self.stream[key][:1] == [place[1]]

    def terminated(self) -> bool:
        return (
            all(self.pc[r] == len(self.s.actions[r]) for r in range(self.s.num_ranks))
            and self.posted == self.completed
        )


def replay(s: Schedule, model: str, order) -> bool:
    """True when ``order`` executes the whole schedule, each action ready in turn."""
    m = _Machine(s, model)
    m.settle()
    for r, i in order:
        if not m.ready(r, i):
            return False
        m.execute(r, i)
    return m.terminated()


def simulate(s: Schedule, model: str) -> bool:
    """True when the schedule terminates under ``model`` (greedy: the model is monotone)."""
    m = _Machine(s, model)
    progress = True
    while progress:
        progress = False
        for r in range(s.num_ranks):
            while m.ready(r, m.pc[r]):
                m.execute(r, m.pc[r])
                progress = True
    return m.terminated()


def assert_sat_with_valid_witness(s: Schedule, model: str) -> Z.Z3Outcome:
    out = Z.decide(s, model)
    assert out.status == "sat", (out.core, out.reason)
    lowered = lower(s) if s.is_compute_only else s
    assert sorted(out.order) == sorted(
        (r, i) for r in range(lowered.num_ranks) for i in range(len(lowered.actions[r]))
    )
    assert replay(lowered, model, out.order), "witness order does not replay"
    assert min(out.times.values()) == 0
    return out


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", Z.COMM_MODELS)
@pytest.mark.parametrize("num_ranks,num_mb", [(2, 3), (3, 5), (4, 8)])
def test_1f1b_is_sat_with_a_replayable_witness(model, num_ranks, num_mb):
    out = assert_sat_with_valid_witness(one_f_one_b(num_ranks, num_mb), model)
    assert out.stats["num_events"] > 0 and out.stats["rlimit_used"] > 0


def test_issue_172668_deadlocks_under_nccl_with_the_cycle_in_the_core():
    s = issue_172668()
    assert not simulate(s, "nccl") and simulate(s, "eager")
    out = Z.decide(s, "nccl")
    assert out.status == "unsat"
    assert out.failed_properties == ("deadlock-free",)
    text = "\n".join(out.core)
    # the cycle: rank 0's SEND_F(mb 1) waits rank 1's RECV_F(mb 1), queued behind
    # rank 1's SEND_B(mb 0), which waits rank 0's RECV_B(mb 0), queued behind SEND_F(mb 1)
    assert "rank 0 step 3 0SEND_F1 waits rank 1 step 4 1RECV_F1" in text
    assert "rank 1 step 3 1SEND_B0 waits rank 0 step 4 0RECV_B0" in text
    assert "rank 1 step 4 waits rank 1 step 3 on rank 1's comm stream" in text
    assert "rank 0 step 4 waits rank 0 step 3 on rank 0's comm stream" in text
    assert len(out.core) == 6
    assert_core_is_a_closed_cycle(s, "nccl", out.core)
    # hop by hop: each label waits for what the next one's event is
    assert out.core[0].startswith("deadlock-free: rank 0 step 3 0SEND_F1 waits")
    assert out.core[1].startswith("deadlock-free: rank 1 step 4 waits rank 1 step 3")
    assert out.core[2].startswith("program: rank 1 step 3 1SEND_B0 completes")
    assert out.core[3].startswith("deadlock-free: rank 1 step 3 1SEND_B0 waits")
    assert out.core[4].startswith("deadlock-free: rank 0 step 4 waits rank 0 step 3")
    assert out.core[5].startswith("program: rank 0 step 3 0SEND_F1 completes")
    assert_sat_with_valid_witness(s, "eager")


def assert_core_is_a_closed_cycle(s: Schedule, model: str, core) -> None:
    """Each label waits for an event the next label constrains, the last for the first's."""
    groups = Z.encode(s, model).groups
    for k, lab in enumerate(core):
        nxt = core[(k + 1) % len(core)]
        waits_for = {y for _x, y, _c in groups[lab]}
        assert any(x in waits_for for x, _y, _c in groups[nxt]), (lab, nxt)


def test_core_is_minimal_each_label_needed():
    s = issue_172668()
    out = Z.decide(s, "nccl")
    enc = Z.encode(s, "nccl")
    res, _ = Z._check(enc, list(out.core), Z.DEFAULT_RLIMIT, Z.DEFAULT_TIMEOUT_MS)
    assert str(res) == "unsat"
    for k in range(len(out.core)):
        rest = list(out.core[:k] + out.core[k + 1 :])
        res, _ = Z._check(enc, rest, Z.DEFAULT_RLIMIT, Z.DEFAULT_TIMEOUT_MS)
        assert str(res) == "sat", f"label {out.core[k]!r} is not needed"


@pytest.mark.parametrize("model", Z.COMM_MODELS)
def test_plain_gpipe_is_sat(model):
    assert simulate(gpipe_plain(), model)
    assert_sat_with_valid_witness(gpipe_plain(), model)


@pytest.mark.parametrize("model", Z.COMM_MODELS)
def test_mismatched_payload_is_reported_even_without_a_hang(model):
    s = gpipe_plain()
    r1 = list(s.actions[1])
    r1[0], r1[1] = r1[1], r1[0]  # rank 1 posts RECV_F(mb 1) first: FIFO pairs it with mb 0
    s = s.with_actions([s.actions[0], r1])
    assert simulate(s, model) and not fifo_pairs(s)[1]
    out = Z.decide(s, model)
    assert out.status == "unsat" and out.failed_properties == ("message-matching",)
    assert len(out.core) == 1
    pair = "rank 0 step 1 0SEND_F0 pairs with rank 1 step 0 1RECV_F1"
    assert pair in out.core[0]
    assert "payload differs" in out.core[0]


@pytest.mark.parametrize("model", Z.COMM_MODELS)
def test_unmatched_receive_is_in_the_core_not_a_crash(model):
    s = gpipe_plain()
    s = s.with_actions([s.actions[0], s.actions[1] + (Comm(RECV_F, 1, 1),)])
    out = Z.decide(s, model)
    assert out.status == "unsat" and out.failed_properties == ("message-matching",)
    assert "rank 1 step 8 1RECV_F1" in out.core[0]
    assert "no matching send" in out.core[0]


def test_an_ill_formed_schedule_is_a_schedule_error_not_a_crash():
    # the encoding reads the semantics tables, which exist for well-formed
    # schedules only (the checker asks Z3 about no other)
    s = gpipe_plain()
    s = s.with_actions([s.actions[0], s.actions[1] + (Comm(SEND_F, 1, 0), Compute(F, 99, 0))])
    with pytest.raises(ScheduleError, match="well-formed"):
        Z.decide(s, "nccl")


def test_unmatched_send_is_in_the_core():
    s = gpipe_plain()
    s = s.with_actions([s.actions[0] + (Comm(SEND_F, 0, 1),), s.actions[1]])
    out = Z.decide(s, "nccl")
    assert out.status == "unsat" and out.failed_properties == ("message-matching",)
    assert "rank 0 step 8 0SEND_F1" in out.core[0]
    assert "no matching receive" in out.core[0]


@pytest.mark.parametrize("model", Z.COMM_MODELS)
def test_w_before_its_i(model):
    s = one_f_one_b(2, 3, split=True)
    assert_sat_with_valid_witness(s, model)
    r1 = list(s.actions[1])
    k = r1.index(Compute(I, 1, 0))
    assert r1[k + 1] == Compute(W, 1, 0)
    r1[k], r1[k + 1] = r1[k + 1], r1[k]
    bad = s.with_actions([s.actions[0], r1])
    out = Z.decide(bad, model)
    assert out.status == "unsat" and out.failed_properties == ("dependencies",)
    assert len(out.core) == 1
    assert "1W0 after 1I0" in out.core[0]
    assert out.core[0].endswith("(it comes later)")


def test_legal_overlap_is_sat_and_dependent_overlap_is_refuted():
    good = v_one_rank(
        c(F, 0, 0), c(F, 1, 0), c(F, 0, 1), Overlap(c(F, 1, 1), c(B, 1, 0)),
        c(B, 1, 1), c(B, 0, 1), c(B, 0, 0),
    )
    assert simulate(good, "nccl")
    assert_sat_with_valid_witness(good, "nccl")
    bad = v_one_rank(
        c(F, 0, 0), c(F, 0, 1), Overlap(c(F, 1, 0), c(B, 1, 0)),
        c(F, 1, 1), c(B, 1, 1), c(B, 0, 1), c(B, 0, 0),
    )
    assert not simulate(bad, "nccl")
    out = Z.decide(bad, "nccl")
    assert out.status == "unsat" and out.failed_properties == ("overlap-legal",)
    assert len(out.core) == 1 and "the backward depends on the forward" in out.core[0]
    assert out.core[0].startswith("overlap-legal: rank 0 step 2 (")


def test_overlap_of_two_forwards_is_illegal():
    s = v_one_rank(
        c(F, 0, 0), Overlap(c(F, 0, 1), c(F, 1, 0)),
        c(F, 1, 1), c(B, 1, 1), c(B, 1, 0), c(B, 0, 1), c(B, 0, 0),
    )
    out = Z.decide(s, "nccl")
    assert out.status == "unsat" and out.failed_properties == ("overlap-legal",)
    assert "the halves must be a forward and a backward" in out.core[0]


@pytest.mark.parametrize("num_ranks,num_mb", [(2, 4), (4, 6)])
def test_memory_limit_is_tight_at_the_peak(num_ranks, num_mb):
    s = lower(one_f_one_b(num_ranks, num_mb))
    peak = int(max(peak_activations(s)))
    assert Z.decide(s, "nccl", memory_limit=peak).status == "sat"
    out = Z.decide(s, "nccl", memory_limit=peak - 1)
    assert out.status == "unsat" and out.failed_properties == ("memory",)
    assert any("rank 0" in c and f"at most {peak - 1}" in c for c in out.core)


def test_tiny_rlimit_is_unknown_never_sat():
    s = lower(one_f_one_b(4, 8))
    out = Z.decide(s, "nccl", rlimit=2000)
    assert out.status == "unknown" and out.order is None
    assert "rlimit" in out.reason
    assert Z.decide(s, "nccl").status == "sat"


def test_replay_rejects_a_wrong_order():
    s = lower(one_f_one_b(2, 3))
    out = Z.decide(s, "nccl")
    assert not replay(s, "nccl", tuple(reversed(out.order)))
    assert not replay(s, "nccl", out.order[:-1])


def test_encoding_is_difference_logic():
    enc = Z.encode(lower(one_f_one_b(3, 4)), "nccl", memory_limit=3)
    assert all(
        isinstance(x, int) and isinstance(y, int) and isinstance(c, int)
        for g in enc.groups.values()
        for x, y, c in g
    )
    text = Z.smtlib(enc)
    assert text.startswith("(set-logic QF_IDL)")
    assert all(Z.property_of(lab) in Z.PROPERTY_IDS + ("program",) for lab in enc.labels)


def test_fits_budget():
    assert Z.fits_budget(one_f_one_b(4, 8))
    n = Z.estimated_constraints(lower(one_f_one_b(4, 8)))
    assert n > 0
    big = linear(1, 1, [[Compute(F, 0, 0)] * 100_000])
    assert not Z.fits_budget(big)
    assert Z.fits_budget(big, timeout_ms=10**9, rlimit=0)
    # a shorter timeout admits less
    mid = linear(1, 1, [[Compute(F, 0, 0)] * 5_000])
    assert Z.fits_budget(mid) and not Z.fits_budget(mid, timeout_ms=1_000)


def test_bad_comm_model_is_a_value_error():
    with pytest.raises(ValueError, match="comm_model"):
        Z.decide(gpipe_plain(), "mpi")


# ---- generators -----------------------------------------------------------

needs_generators = pytest.mark.skipif(generate is None, reason="verifier.generators absent")


def _gen(family, num_ranks):
    return generate(family, num_ranks, 2 * num_ranks)


@needs_generators
@pytest.mark.parametrize("num_ranks", [2, 4, 8])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_sat_under_nccl(family, num_ranks):
    s = _gen(family, num_ranks)
    out = assert_sat_with_valid_witness(s, "nccl")
    if num_ranks <= 4:
        assert_sat_with_valid_witness(s, "eager")
    assert out.failed_properties == ()
    if certificate is not None:  # the project's independent interpreter agrees
        assert certificate.check_witness(s, "nccl", out.order) == (True, "")


def _mutate(s: Schedule, rng: random.Random) -> Schedule:
    """1-3 local edits: flip a batch's wait, split a batch into plain ops (maybe
    reversed), make a rank's batches single waited ops, post a communication
    action later, swap two nearby communication actions, or swap neighbours."""
    acts = [list(a) for a in s.actions]
    for _ in range(rng.randint(1, 3)):
        r = rng.randrange(s.num_ranks)
        comm_at = [k for k, a in enumerate(acts[r]) if comms_of(a)]
        batches = [k for k in comm_at if isinstance(acts[r][k], Batch)]
        edit = rng.choice(("wait", "split", "swap-comm", "swap", "plain", "delay"))
        if edit == "plain":  # every batch of the rank becomes single-op waited batches
            acts[r] = [
                x
                for a in acts[r]
                for x in ([Batch((op,), True) for op in a.ops] if isinstance(a, Batch) else [a])
            ]
        elif edit == "delay" and comm_at:  # post a communication action 1-4 steps later
            k = rng.choice(comm_at)
            a = acts[r].pop(k)
            acts[r].insert(min(k + rng.randint(1, 4), len(acts[r])), a)
        elif edit == "wait" and batches:
            k = rng.choice(batches)
            acts[r][k] = Batch(acts[r][k].ops, wait=not acts[r][k].wait)
        elif edit == "split" and batches:
            k = rng.choice(batches)
            ops = list(acts[r][k].ops)
            if rng.random() < 0.5:
                ops.reverse()
            acts[r][k : k + 1] = ops
        elif edit == "swap-comm" and len(comm_at) >= 2:
            j = rng.randrange(len(comm_at) - 1)
            a, b = comm_at[j], comm_at[min(j + rng.randint(1, 2), len(comm_at) - 1)]
            acts[r][a], acts[r][b] = acts[r][b], acts[r][a]
        elif len(acts[r]) >= 2:
            k = rng.randrange(len(acts[r]) - 1)
            acts[r][k], acts[r][k + 1] = acts[r][k + 1], acts[r][k]
    return s.with_actions(acts)


@needs_generators
@given(
    family=st.sampled_from([f for f in FAMILIES]),
    num_ranks=st.sampled_from([2, 4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_verdict_agrees_with_the_replay_on_mutated_schedules(family, num_ranks, seed):
    s = _mutate(_gen(family, num_ranks), random.Random(seed))
    for model in Z.COMM_MODELS:
        expected = simulate(s, model) and fifo_pairs(s)[1]
        out = Z.decide(s, model)
        assert out.status == ("sat" if expected else "unsat"), (model, out.core)
        if expected:
            assert replay(s, model, out.order)
        elif out.failed_properties == ("deadlock-free",):
            assert_core_is_a_closed_cycle(s, model, out.core)
        else:  # a static property: one constant-false label names it
            assert len(out.core) == 1
    # the model order (verifier.semantics.comm.implies): sat under a stricter
    # model implies sat under every weaker one
    status = {m: Z.decide(s, m).status for m in Z.COMM_MODELS}
    for a in Z.COMM_MODELS:
        for b in Z.COMM_MODELS:
            if comm.implies(a, b) and status[a] == "sat":
                assert status[b] == "sat", (a, b)


@needs_generators
def test_mutants_tell_the_models_apart():
    # the order test above is vacuous unless the models differ: on seeded
    # mutants each model must refute some schedule the next weaker one proves
    told = set()
    rng = random.Random(12)
    for n in range(600):
        s = _gen(FAMILIES[n % len(FAMILIES)], 2 + 2 * (n % 2))
        if n % 2:  # plain ops to three or more peers: what nccl-pairs orders differently
            s = _unbatched(s, n % 3 == 0)
        s = _mutate(s, rng)
        ok = [simulate(s, m) for m in Z.COMM_MODELS]
        for k in range(len(ok) - 1):
            if not ok[k] and ok[k + 1] and k not in told:
                told.add(k)
                assert Z.decide(s, Z.COMM_MODELS[k]).status == "unsat"
                assert Z.decide(s, Z.COMM_MODELS[k + 1]).status == "sat"
        if len(told) == len(ok) - 1:
            break
    assert told == set(range(len(Z.COMM_MODELS) - 1))


def _unbatched(s: Schedule, wait: bool) -> Schedule:
    """Every BATCH split into its ops, as plain ops or as single-op waited batches."""
    return s.with_actions(
        [
            x
            for a in acts
            for x in (
                [Batch((op,), True) if wait else op for op in a.ops]
                if isinstance(a, Batch)
                else [a]
            )
        ]
        for acts in s.actions
    )


@needs_generators
@pytest.mark.parametrize("wait", [False, True])
@pytest.mark.parametrize("num_ranks", [2, 4])
@pytest.mark.parametrize("family", FAMILIES)
def test_unbatched_families_agree_with_the_replay(family, num_ranks, wait):
    """Splitting DualPipe's batches into single ops deadlocks on one NCCL stream
    (why DeepSeek batches them); the single-direction families survive it."""
    s = _unbatched(_gen(family, num_ranks), wait)
    verdicts = {}
    for model in Z.COMM_MODELS:
        out = Z.decide(s, model)
        verdicts[model] = out.status
        assert out.status == ("sat" if simulate(s, model) else "unsat")
        if out.status == "unsat":
            assert out.failed_properties == ("deadlock-free",)
            assert_core_is_a_closed_cycle(s, model, out.core)
    assert verdicts["eager"] == "sat"
    if family in ("dualpipe", "dualpipev"):
        assert verdicts["nccl"] == "unsat"


@needs_generators
@pytest.mark.parametrize("family", ["zb-h1", "dualpipe", "dualpipev"])
def test_memory_limit_matches_verifier_memory_on_generated_schedules(family):
    s = _gen(family, 4)
    peaks = peak_activations(s)
    peak = int(max(peaks))
    assert Z.decide(s, "nccl", memory_limit=peak).status == "sat"
    out = Z.decide(s, "nccl", memory_limit=peak - 1)
    assert out.status == "unsat" and out.failed_properties == ("memory",)
    at_peak = [r for r, p in enumerate(peaks) if p == peak]
    assert any(f"memory: rank {r} step" in c for r in at_peak for c in out.core)


# ---------------------------------------------------------------------------
# Z3 against the graph engine, through the checker, for every model both take
# ---------------------------------------------------------------------------


def _checker_models():
    # deferred: the checker is the layer above the engines; its list of models
    # grows as the graph engine learns them (each engine reads the model's fields)
    from verifier.check import checker

    return tuple(m for m in checker.COMM_MODELS if m in Z.COMM_MODELS)


def _same_verdicts(s: Schedule) -> None:
    from verifier.check.checker import check  # deferred as in _checker_models

    for m in _checker_models():
        z = check(s, m, engine="z3", validate_certificate=False)
        g = check(s, m, engine="graph", validate_certificate=False)
        assert z.verdict == g.verdict, (m, z.verdict, g.verdict)


def _examples():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "specs" / "examples"
    return sorted(root.glob("*.json")) + sorted((root / "broken").glob("*.json"))


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_z3_and_graph_agree_on_every_example(path):
    from verifier.format.io import load_schedule

    try:
        s = load_schedule(path)
    except ValueError:
        pytest.skip(f"{path.name} is refused by the reader (a bad-input example)")
    _same_verdicts(s)


@needs_generators
@pytest.mark.parametrize("family", FAMILIES)
def test_z3_and_graph_agree_on_every_family(family):
    for num_ranks in (2, 4):
        _same_verdicts(_gen(family, num_ranks))


@given(s=st.deferred(lambda: _shuffled()))
def test_z3_and_graph_agree_on_random_small_schedules(s):
    _same_verdicts(s)


def _shuffled():
    from verifier.strategies import shuffled

    return shuffled(max_ranks=3, max_microbatches=3)

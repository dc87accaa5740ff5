"""Property tests of the checker: three deciders held against each other.

On random (shuffled) schedules and on every single-action mutant of small
generated ones, the graph engine, the Z3 engine and a brute-force oracle
written here (exhaustive exploration of every interleaving of the semantics of
specs/SEMANTICS.md, a third independent statement of it) agree; every
certificate is accepted by verifier.check.certificate; nccl-verified implies
eager-verified.

Not covered: large schedules (tests/test_checker_generated.py), output format
(tests/test_golden.py).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.check import certificate, hbgraph, properties
from verifier.check.checker import PropertyId, Status, Verdict, check
from verifier.generators import generate
from verifier.ir import Batch, Comm, CommKind, ComputeKind, Overlap, Schedule
from verifier.strategies import all_mutants, generated, mutated, shuffled

# ------------------------------------------------------------ the oracle

_SENDS = (CommKind.SEND_F, CommKind.SEND_B)


class Oracle:
    """Every reachable state of one schedule under one model, explored breadth-first.

    A state is (steps begun per rank, completed ops). Transitions: a rank begins
    its next step (if the previous one returned and, for a compute, its inputs
    are there); (nccl) a FIFO-matched send/receive pair completes when both
    units are at the heads of their streams; (eager) a receive completes once
    its send was posted (a send completes when posted).
    """

    def __init__(self, s: Schedule, model: str, max_states: int = 20000):
        self.s, self.model, self.max_states = s, model, max_states
        self.ops = []  # (rank, step, Comm)
        self.unit_ops: dict[tuple[int, int], list[int]] = {}
        for r, acts in enumerate(s.actions):
            for k, a in enumerate(acts):
                ops = [a] if isinstance(a, Comm) else list(a.ops) if isinstance(a, Batch) else []
                for op in ops:
                    self.unit_ops.setdefault((r, k), []).append(len(self.ops))
                    self.ops.append((r, k, op))
        q: dict[tuple[int, int, bool], list[int]] = defaultdict(list)
        for i, (r, _k, op) in enumerate(self.ops):
            towards_next = op.kind in (CommKind.SEND_F, CommKind.RECV_B)
            nb = s.next_stage(op.stage) if towards_next else s.prev_stage(op.stage)
            peer = s.rank_of(nb)
            is_send = op.kind in _SENDS
            q[(r, peer, True) if is_send else (peer, r, False)].append(i)
        self.partner = {}
        for (a, b, is_send), lst in q.items():
            if is_send:
                for x, y in zip(lst, q.get((a, b, False), [])):
                    self.partner[x] = y
                    self.partner[y] = x
        self.units = {r: sorted(k for (rr, k) in self.unit_ops if rr == r) for r in range(s.num_ranks)}

    def _compute_ok(self, pcs, done, r, k) -> bool:
        s = self.s
        a = s.actions[r][k]
        cs = [a.f, a.b] if isinstance(a, Overlap) else [a]
        for c in cs:
            if c.kind is ComputeKind.F:
                p = s.prev_stage(c.stage)
                need = [] if p is None else [("recv", CommKind.RECV_F, c.stage) if s.rank_of(p) != r else ("c", "F", p)]
            elif c.kind is ComputeKind.W:
                need = [("c", "I", c.stage)]
            else:
                n = s.next_stage(c.stage)
                need = [("c", "F", c.stage)]
                if n is not None:
                    need.append(("recv", CommKind.RECV_B, c.stage) if s.rank_of(n) != r else ("c", "BI", n))
            for nd in need:
                if nd[0] == "recv":
                    ids = [i for i, (rr, _kk, op) in enumerate(self.ops)
                           if rr == r and op.kind is nd[1] and op.stage == nd[2] and op.mb == c.mb]
                    if not ids or ids[0] not in done:
                        return False
                else:
                    kinds = {"F": "F", "I": "I", "BI": "BI"}[nd[1]]
                    steps = []
                    for kk, b in enumerate(s.actions[r]):
                        bs = [b.f, b.b] if isinstance(b, Overlap) else [b] if not isinstance(b, (Comm, Batch)) else []
                        for x in bs:
                            if x.stage == nd[2] and x.mb == c.mb and (
                                x.kind.value == kinds or (kinds == "BI" and x.kind in (ComputeKind.B, ComputeKind.I))
                            ):
                                steps.append(kk)
                    if not steps or steps[0] >= pcs[r] or steps[0] == k:
                        return False
        return True

    def _returned(self, pcs, done, r, k) -> bool:
        a = self.s.actions[r][k]
        if isinstance(a, Batch) and a.wait:
            return all(i in done for i in self.unit_ops[(r, k)])
        return True

    def _active(self, pcs, done, r, k) -> bool:
        if pcs[r] <= k:
            return False
        for kk in self.units[r]:
            if kk == k:
                return True
            if not all(i in done for i in self.unit_ops[(r, kk)]):
                return False
        return False

    def successors(self, state):
        pcs, done = state
        for r, acts in enumerate(self.s.actions):
            k = pcs[r]
            if k < len(acts) and (k == 0 or self._returned(pcs, done, r, k - 1)):
                if (r, k) in self.unit_ops or self._compute_ok(pcs, done, r, k):
                    npcs = pcs[:r] + (k + 1,) + pcs[r + 1:]
                    ndone = set(done)
                    if self.model == "eager":
                        for i in self.unit_ops.get((r, k), []):
                            if self.ops[i][2].kind in _SENDS:
                                ndone.add(i)
                    yield (npcs, frozenset(ndone))
        for i, j in self.partner.items():
            if i in done:
                continue
            ri, ki, opi = self.ops[i]
            rj, kj, _ = self.ops[j]
            if self.model == "nccl":
                if opi.kind in _SENDS and self._active(pcs, done, ri, ki) and self._active(pcs, done, rj, kj):
                    yield (pcs, done | {i, j})
            elif opi.kind not in _SENDS and pcs[ri] > ki and pcs[rj] > kj:
                yield (pcs, done | {i})

    def terminal(self, state) -> bool:
        pcs, done = state
        return all(pcs[r] == len(a) for r, a in enumerate(self.s.actions)) and len(done) == len(self.ops)

    def explore(self):
        """(some execution terminates, every maximal execution terminates, states)."""
        start = (tuple(0 for _ in self.s.actions), frozenset())
        seen = {start}
        frontier = [start]
        some = False
        every = True
        while frontier:
            nxt = []
            for stt in frontier:
                succ = list(self.successors(stt))
                if not succ:
                    if self.terminal(stt):
                        some = True
                    else:
                        every = False
                for x in succ:
                    if x not in seen:
                        seen.add(x)
                        nxt.append(x)
                if len(seen) > self.max_states:
                    return None
            frontier = nxt
        return some, every, len(seen)


# ------------------------------------------------------------ helpers


def _deadlock_free_graph(s: Schedule, model: str) -> bool:
    return hbgraph.decide(s, model).witness is not None


def _agree(s: Schedule, with_z3: bool = True) -> int:
    """The three deciders agree on ``s``; certificates are accepted. Returns how
    many models the oracle decided (within its state budget)."""
    decided = 0
    if properties.well_formed(s):
        return 2
    for model in ("nccl", "eager"):
        g = hbgraph.decide_explicit(s, model)
        fast = hbgraph._fast(s, model)  # the implicit-edge fast path decides the same
        assert (fast is not None) == (g.witness is not None), model
        if fast is not None:
            assert fast[1] == g.num_events
            assert certificate.check_witness(s, model, fast[0])[0]
        if g.witness is not None:
            ok, why = certificate.check_witness(s, model, g.witness)
        else:
            ok, why = certificate.check_deadlock(s, model, g.cycle)
        assert ok, f"{model}: certificate rejected: {why}"
        res = Oracle(s, model).explore()
        if res is not None:
            some, every, _n = res
            decided += 1
            assert some == every, f"{model}: the semantics is not confluent here"
            assert some == (g.witness is not None), f"{model}: oracle says terminates={some}, graph the opposite"
        rg = check(s, model, "graph")
        assert not [v for v in rg.violations if v.code == "certificate-rejected"], rg.violations
        if with_z3:
            rz = check(s, model, "z3")
            assert rz.verdict is rg.verdict, (model, rz.verdict, rg.verdict, rz.violations, rg.violations)
            assert rz.verdict is not Verdict.UNKNOWN
        if model == "nccl":
            nccl_ok = g.witness is not None
        elif nccl_ok:
            assert g.witness is not None, "deadlock-free under nccl but not under eager"
    return decided


# ------------------------------------------------------------ tests


def test_oracle_on_pytorch_issue_172668():
    from pathlib import Path

    from verifier.format.io import load_schedule

    s = load_schedule(Path(__file__).parent.parent / "specs/examples/broken/deadlock_pytorch_issue_172668.json")
    assert Oracle(s, "nccl").explore()[:2] == (False, False)
    assert Oracle(s, "eager").explore()[:2] == (True, True)
    _agree(s)


@pytest.mark.parametrize(
    "family,R,M",
    [("1f1b", 2, 3), ("zb-h1", 2, 2), ("dualpipev", 2, 4), ("interleaved-1f1b", 2, 2), ("dualpipe", 2, 4),
     ("zbv", 2, 2), ("gpipe", 3, 2)],
)
def test_every_single_action_mutant(family, R, M):
    s = generate(family, R, M)
    mutants = list(all_mutants(s))
    assert len(mutants) > 20
    refuted = decided = 0
    for m in mutants:
        decided += _agree(m.schedule)
        refuted += check(m.schedule, "nccl", "graph").verdict is Verdict.REFUTED
    assert refuted > len(mutants) // 2  # mutants really break things
    assert decided == 2 * len(mutants)  # the oracle explored every one exhaustively


@given(shuffled(max_ranks=3, max_microbatches=2))
def test_random_schedules(s):
    _agree(s)


@given(mutated(min_ranks=2, max_ranks=3, max_microbatches=4, families=("zbv", "dualpipev", "zb-h1", "1f1b")))
def test_random_mutants(m):
    _agree(m.schedule)


@given(generated(max_ranks=4, max_microbatches=8))
def test_generated_verify_under_both_models(s):
    for model in ("nccl", "eager"):
        r = check(s, model, "graph")
        assert r.verdict is Verdict.VERIFIED, (s.name, model, [v.message for v in r.violations])
        assert r.certificate.accepted


@given(st.data())
def test_nccl_verified_implies_eager_verified(data):
    s = data.draw(shuffled(max_ranks=3, max_microbatches=3))
    if properties.well_formed(s):
        return
    if _deadlock_free_graph(s, "nccl"):
        assert _deadlock_free_graph(s, "eager")
    r = check(s, "nccl", "graph")
    if r.verdict is Verdict.VERIFIED:
        assert check(s, "eager", "graph").verdict is Verdict.VERIFIED
    assert r.result_of(PropertyId.WELL_FORMED).status is Status.HOLDS


"""The graph engine under every communication model, held against a brute-force
simulation of each model written here from specs/SEMANTICS.md, and the order
between the models (deadlock-free under nccl => nccl-pairs => gloo => eager).

The simulation runs a schedule to its fixed point (the semantics is monotone,
so that decides termination): ranks advance while their next step can begin,
and ops complete as the model allows. It states each model by name, on
purpose: it is a second statement of the rules, not a reader of
``verifier.semantics.comm``.

Every witness and cycle of the graph engine is also held against the
independent certificate checker under its model. Not covered: the Z3 engine
(tests/test_z3engine.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.check import certificate, hbgraph, properties
from verifier.check.checker import PropertyId, Status, check
from verifier.format.io import load_schedule
from verifier.generators import generate
from verifier.ir import Batch, Comm, CommKind, ComputeKind, Schedule, comms_of, computes_of
from verifier.semantics.comm import NAMES
from verifier.strategies import generated, mutated, shuffled

_F, _B, _I = ComputeKind.F, ComputeKind.B, ComputeKind.I


# ------------------------------------------------------------ the simulation


def _ops(s: Schedule):
    """(rank, step, sub, op, unit) per op in post order, and the FIFO partner map."""
    ops, q = [], {}
    for r, acts in enumerate(s.actions):
        for k, a in enumerate(acts):
            for j, op in enumerate(comms_of(a)):
                peer = s.peer_of(op)
                key = (r, peer, True) if op.kind.is_send else (peer, r, False)
                q.setdefault(key, []).append(len(ops))
                ops.append((r, k, j, op, peer, isinstance(a, Batch)))
    partner = {}
    for (src, dst, is_send), lst in q.items():
        if is_send:
            for x, y in zip(lst, q.get((src, dst, False), [])):
                partner[x], partner[y] = y, x
    return ops, partner


def simulate(s: Schedule, model: str) -> bool:
    """Whether ``s`` terminates under ``model`` (run to the fixed point)."""
    ops, partner = _ops(s)
    of_step = {}
    for i, o in enumerate(ops):
        of_step.setdefault((o[0], o[1]), []).append(i)
    first_recv = {}
    for i, (r, _k, _j, op, _p, _b) in enumerate(ops):
        if not op.kind.is_send:
            first_recv.setdefault((r, op.kind, op.stage, op.mb), i)
    posted, done = set(), set()
    ran = [set() for _ in s.actions]
    pc = [0] * s.num_ranks

    def stream(i):  # the in-order stream an op's unit is on, None for no stream
        r, _k, _j, _op, peer, batched = ops[i]
        if model == "nccl":
            return (r,)
        if model == "nccl-pairs":
            return (r, "group") if batched else (r, peer)
        return None

    def active(i):
        if i not in posted:
            return False
        key = stream(i)
        if key is None:
            return True
        unit = (ops[i][0], ops[i][1])
        # every earlier unit of its stream has completed
        return all(x in done for x, o in enumerate(ops)
                   if stream(x) == key and (o[0], o[1]) < unit)

    def can_complete(i):
        j = partner.get(i)
        if model == "eager":
            if ops[i][3].kind.is_send:
                return i in posted
            return i in posted and j is not None and j in posted
        return j is not None and active(i) and active(j)

    def input_ready(r, c) -> bool:
        def local(kind, st_):
            return any(x == (kind, st_, c.mb) for x in ran[r])

        def recv(kind):
            i = first_recv.get((r, kind, c.stage, c.mb))
            return i is not None and i in done

        if c.kind is _F:
            p = s.prev_stage(c.stage)
            return p is None or (recv(CommKind.RECV_F) if s.rank_of(p) != r else local("F", p))
        if c.kind in (_B, _I):
            if not local("F", c.stage):
                return False
            n = s.next_stage(c.stage)
            return n is None or (recv(CommKind.RECV_B) if s.rank_of(n) != r else local("BI", n))
        return local("I", c.stage)

    progress = True
    while progress:
        progress = False
        for i in range(len(ops)):
            if i not in done and can_complete(i):
                done.add(i)
                progress = True
        for r, acts in enumerate(s.actions):
            while pc[r] < len(acts):
                k, a = pc[r], acts[pc[r]]
                if k and isinstance(acts[k - 1], Batch) and acts[k - 1].wait:
                    if not all(i in done for i in of_step[(r, k - 1)]):
                        break
                if comms_of(a):
                    posted.update(of_step[(r, k)])
                elif all(input_ready(r, c) for c in computes_of(a)):
                    for c in computes_of(a):
                        ran[r].add((c.kind.value, c.stage, c.mb))
                        if c.kind in (_B, _I):
                            ran[r].add(("BI", c.stage, c.mb))
                else:
                    break
                pc[r] += 1
                progress = True
    last_ok = all(not (acts and isinstance(acts[-1], Batch) and acts[-1].wait)
                  or all(i in done for i in of_step[(r, len(acts) - 1)])
                  for r, acts in enumerate(s.actions))
    return (all(pc[r] == len(acts) for r, acts in enumerate(s.actions)) and last_ok
            and len(done) == len(ops))


# ------------------------------------------------------------ schedules


@st.composite
def regrouped(draw, **kw) -> Schedule:
    """A generated schedule with communication whose comm ops, between two
    computes of a rank, are reordered and regrouped into plain ops and
    BATCHes (waited or not), and whose receives may move one gap earlier."""
    s = draw(generated(min_ranks=2, max_ranks=kw.get("max_ranks", 3),
                       max_microbatches=kw.get("max_microbatches", 3)))
    rows = []
    for acts in s.actions:
        gaps: list[list[Comm]] = [[]]
        comps = []
        for a in acts:
            if comms_of(a):
                gaps[-1].extend(comms_of(a))
            else:
                comps.append(a)
                gaps.append([])
        for g in range(1, len(gaps)):  # receives may be posted one gap earlier
            early = [op for op in gaps[g] if not op.kind.is_send and draw(st.booleans())]
            gaps[g] = [op for op in gaps[g] if op not in early]
            gaps[g - 1].extend(early)
        row = []
        for g, ops in enumerate(gaps):
            ops = list(draw(st.permutations(ops)))
            while ops:
                n = draw(st.integers(1, len(ops)))
                part, ops = ops[:n], ops[n:]
                kind = draw(st.sampled_from(["plain", "batch", "wait"]))
                if kind == "plain":
                    row.extend(part)
                else:
                    row.append(Batch(tuple(part), wait=kind == "wait"))
            if g < len(comps):
                row.append(comps[g])
        rows.append(row)
    return s.with_actions(rows, name=f"regrouped {s.name}")


# ------------------------------------------------------------ checks


def _verdicts(s: Schedule) -> dict[str, bool] | None:
    """Per model: terminates, per the graph engine (None: not well-formed).
    Asserts the fast path, the explicit graph and the simulation agree."""
    if properties.well_formed(s):
        return None
    out = {}
    for model in NAMES:
        g = hbgraph.decide_explicit(s, model)
        fast = hbgraph._fast(s, model)
        assert (fast is not None) == (g.witness is not None), model
        if fast is not None:
            assert fast[1] == g.num_events, model
        if g.witness is not None:
            ok, why = certificate.check_witness(s, model, g.witness)
        else:
            ok, why = certificate.check_deadlock(s, model, g.cycle)
        assert ok, f"{model}: the certificate checker rejects the graph engine's certificate: {why}"
        sim = simulate(s, model)
        assert sim == (g.witness is not None), f"{model}: simulation {sim}, graph engine the opposite"
        out[model] = sim
    # the order: terminating under a model implies it under every weaker one
    got = [out[m] for m in NAMES]
    assert got == sorted(got), f"the model order fails: {dict(zip(NAMES, got))}"
    return out


@given(regrouped())
def test_regrouped_schedules(s):
    _verdicts(s)


@given(shuffled(max_ranks=3, max_microbatches=2))
def test_shuffled_schedules(s):
    _verdicts(s)


@given(mutated(min_ranks=2, max_ranks=3, max_microbatches=3, families=("zbv", "dualpipev", "1f1b", "dualpipe")))
def test_mutants(m):
    _verdicts(m.schedule)


def test_models_tell_apart():
    """A schedule for each gap in the order, so the order is strict and each
    model is exercised where it differs from its neighbours."""
    seen = set()
    for s in _examples():
        v = _verdicts(s)
        if v is not None:
            seen.add(tuple(v[m] for m in NAMES))
    # (nccl, nccl-pairs, gloo, eager): every step of the chain is taken somewhere
    for want in [(False, True, True, True), (False, False, True, True), (False, False, False, True)]:
        assert want in seen, (want, seen)


def _examples():
    root = Path(__file__).parent.parent / "specs/examples"
    for p in sorted(root.rglob("*.json")):
        try:
            yield load_schedule(p)
        except Exception:  # a deliberately broken file the loader refuses
            continue
    yield from _hand_made()


def _hand_made():
    """Three ranks in a line (stage i on rank i), one micro-batch: one schedule
    per gap in the order, (nccl, nccl-pairs, gloo, eager) terminating as named."""
    from verifier.ir import Compute, Route, Stage

    SF, RF, SB, RB = CommKind.SEND_F, CommKind.RECV_F, CommKind.SEND_B, CommKind.RECV_B
    stages = (Stage(0, 0, 0), Stage(1, 1, 1), Stage(2, 2, 2))

    def sched(r1, r0_extra=()):
        r0 = [Compute(_F, 0, 0), Comm(SF, 0, 0), Comm(RB, 0, 0), Compute(_B, 0, 0), *r0_extra]
        r2 = [Comm(RF, 2, 0), Compute(_F, 2, 0), Compute(_B, 2, 0), Comm(SB, 2, 0)]
        return Schedule(3, 1, stages, (Route((0, 1, 2), (0,)),), (tuple(r0), tuple(r1), tuple(r2)))

    f1, b1 = Compute(_F, 1, 0), Compute(_B, 1, 0)
    # (F, T, T, T): rank 1 posts the receive from rank 2 first; on one stream
    # (nccl) it blocks the receive from rank 0, so F(1) never runs; on pair
    # streams the receive from rank 0 is on another stream and the send to
    # rank 2 goes in a BATCH, on the group's stream
    yield sched([Comm(RB, 1, 0), Comm(RF, 1, 0), f1, Batch((Comm(SF, 1, 0),), wait=False), b1, Comm(SB, 1, 0)])
    # (F, F, T, T): the receive from rank 2 before the send to it, both plain:
    # one pair stream orders them (the send waits for the receive, which
    # waits for rank 2's backward, which needs the send); gloo has no stream
    yield sched([Comm(RF, 1, 0), f1, Comm(RB, 1, 0), Comm(SF, 1, 0), b1, Comm(SB, 1, 0)])
    # (F, F, F, T): rank 0 sends once more than rank 1 receives: buffered,
    # the extra send completes when posted; a rendezvous one never does
    yield sched([Comm(RF, 1, 0), f1, Comm(SF, 1, 0), Comm(RB, 1, 0), b1, Comm(SB, 1, 0)],
                r0_extra=(Comm(SF, 0, 0),))


# ------------------------------------------------------------ the checker's table


def test_engine_table_refuses_an_undecided_model(monkeypatch):
    """An engine that does not decide a model gives no verdict under it: --engine
    z3 is a usage error, auto leaves it to the graph engine and says so."""
    from verifier.check import checker
    from verifier.ir import ScheduleError

    monkeypatch.setitem(checker.ENGINE_MODELS, "z3", ("nccl", "eager"))
    s = generate("1f1b", 2, 2)
    for engine in ("z3", "both"):
        with pytest.raises(ScheduleError, match="z3 engine does not decide the gloo model"):
            check(s, "gloo", engine)
    r = check(s, "gloo", "auto")
    assert r.engine == "graph" and "z3 does not encode the gloo model" in r.engine_note
    assert r.result_of(PropertyId.DEADLOCK_FREE).status is Status.HOLDS and r.certificate.accepted
    assert check(s, "nccl", "auto").engine == "z3"


def test_certificate_and_events_are_data():
    from verifier.ir import Batch as B
    from verifier.results.check import Certificate, Event, EventKind

    assert str(Certificate()) == "" and not Certificate()
    assert str(Certificate(True, True)) == "accepted"
    assert str(Certificate(True, False, "step 3 cannot begin")) == "rejected: step 3 cannot begin"
    with pytest.raises(ValueError):
        Certificate(False, True)
    s = load_schedule(Path(__file__).parent.parent / "specs/examples/broken/deadlock_pytorch_issue_172668.json")
    r = check(s, "nccl", "graph")
    events = [e for h in r.cycle.hops for e in (h.waiter, h.target)]
    assert events and all(e.kind is EventKind.NEVER or e.action is not None for e in events)
    for e in events:
        if e.kind is EventKind.OP_DONE:
            assert isinstance(e.action, Comm) and e.text == str(e.action)
        elif e.kind is not EventKind.NEVER:
            assert e.action == s.actions[e.rank][e.step] and e.is_batch is isinstance(e.action, B)
    assert Event(EventKind.NEVER, -1, -1).text == ""

"""Tests of the cost model, the ASAP replay (verifier.analysis.timeline), the chrome trace
and the analyze command.

The replay is held against (1) a separately written fixed-point evaluation of
the same timing equations (Jacobi iteration to the least fixed point), (2) the
certificate checker: the timeline's begin order must be a valid witness, and
the replay deadlocks exactly when the certificate interpreter's maximal
execution does not terminate (on mutated schedules), and (3) hand-made
schedules whose times are worked out by hand.
"""

from __future__ import annotations

import io
import json
import random

import pytest
from hypothesis import given, strategies as st

from verifier.analysis import costs as costs_mod
from verifier.analysis.timeline import analyze
from verifier.cli.app import main
from verifier.analysis.costs import CostModel, StageCosts, complete, parse_kv
from verifier.generators import FAMILIES, generate
from verifier.errors import FlagError
from verifier.format.io import save_schedule
from verifier.ir import (
    B,
    F,
    RECV_B,
    RECV_F,
    SEND_B,
    SEND_F,
    Batch,
    Comm,
    Compute,
    Route,
    Schedule,
    ScheduleError,
    Stage,
    computes_of,
)
from verifier.semantics.lowering import lower
from verifier.render.trace import chrome_trace

SIZES = [(2, 4), (4, 8), (3, 6), (4, 10)]


def _gen(fam, R, M, compute_only=False):
    try:
        return generate(fam, R, M, compute_only=compute_only)
    except ScheduleError:
        return None


# ------------------------------------------------------------------ costs ---
def test_costs_completion_rule():
    c = complete({})
    assert (c.F, c.B, c.I, c.W, c.FB, c.comm) == (1, 2, 1, 1, 3, 0)
    c = complete({"F": 2})
    assert (c.B, c.I, c.W, c.FB) == (4, 2, 2, 6)
    c = complete({"I": 1.5, "W": 0.5})
    assert (c.B, c.FB) == (2, 3)
    c = complete({"B": 2, "W": 0.5})
    assert c.I == 1.5
    c = complete({"B": 3, "I": 1})
    assert c.W == 2
    c = complete({"F": 1, "B": 2, "W": 0.5, "FB": 2.5})
    assert c.FI == 2.0  # FB - W


@pytest.mark.parametrize("text, key", [
    ("F=0", "F"), ("F=-1", "F"), ("B=1,I=2", "W"), ("B=2,I=1,W=2", "B"),
    ("FB=1.5", "FB"), ("F=nan", "F"), ("X=1", "X"), ("comm=-0.1", "comm"),
    ("F=abc", "F"), ("F=1,F=2", "F"), ("F", "F"),
])
def test_bad_costs_name_key_and_value(text, key):
    with pytest.raises(FlagError) as e:  # the value of --costs
        parse_kv(text)
    assert key in str(e.value)


def test_costs_json_file_with_stage_overrides(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"F": 1, "B": 2, "W": 0.5, "stages": {"1": {"B": 4}}}))
    cm = costs_mod.load(str(p))
    assert cm.of(0).B == 2 and cm.of(0).I == 1.5
    assert cm.of(1).B == 4 and cm.of(1).W == 0.5 and cm.of(1).I == 3.5
    p.write_text(json.dumps({"F": 1, "stages": {"x": {}}}))
    with pytest.raises(ScheduleError, match="stage id"):
        costs_mod.load(str(p))
    p.write_text(json.dumps({"F": 1, "stages": {"2": {"W": 9}}}))
    with pytest.raises(ScheduleError, match=r"stages\.2"):
        costs_mod.load(str(p))
    p.write_text("{")
    with pytest.raises(ScheduleError, match="invalid JSON"):
        costs_mod.load(str(p))


def test_per_stage_costs_change_the_timeline():
    s = generate("1f1b", 2, 2)
    base = analyze(s)
    slow = analyze(s, CostModel(default=StageCosts(), per_stage={1: complete({"F": 5})}))
    assert slow.makespan == base.makespan + 2 * 4 + 2 * 8  # stage 1: F 1->5, B 2->10


# ------------------------------------------------- hand-worked timelines ---
def _two_rank(actions0, actions1, M=1):
    return Schedule(
        num_ranks=2, num_microbatches=M,
        stages=(Stage(0, 0, 0), Stage(1, 1, 1)),
        routes=(Route((0, 1), tuple(range(M))),),
        actions=(tuple(actions0), tuple(actions1)),
    )


def test_hand_worked_two_ranks_with_latency():
    s = _two_rank(
        [Compute(F, 0, 0), Comm(SEND_F, 0, 0), Comm(RECV_B, 0, 0), Compute(B, 0, 0)],
        [Comm(RECV_F, 1, 0), Compute(F, 1, 0), Compute(B, 1, 0), Comm(SEND_B, 1, 0)],
    )
    cm = parse_kv("F=1,B=2,comm=0.5")
    for model in ("nccl", "eager"):
        a = analyze(s, cm, model)
        assert not a.deadlocked
        spans = {(c.rank, c.step): (c.start, c.end) for c in a.computes}
        assert spans[(0, 0)] == (0, 1)
        assert spans[(1, 1)] == (1.5, 2.5)
        assert spans[(1, 2)] == (2.5, 4.5)
        assert spans[(0, 3)] == (5.0, 7.0)
        assert a.makespan == 7.0
        assert [r.busy for r in a.ranks] == [3, 3]
        assert [r.bubble for r in a.ranks] == [4, 4]
        labels = [p.label for p in a.critical_path]
        assert labels[0] == "0F0" and labels[-1] == "0B0"
        assert sum(p.what == "message" for p in a.critical_path) == 2


def _crossing():
    """Two routes in opposite directions whose sends cross: nccl-only deadlock."""
    s = Schedule(
        num_ranks=2, num_microbatches=2,
        stages=(Stage(0, 0, 0), Stage(1, 1, 1), Stage(2, 1, 2), Stage(3, 0, 3)),
        routes=(Route((0, 1), (0,)), Route((2, 3), (1,))),
        actions=(
            (Compute(F, 0, 0), Comm(SEND_F, 0, 0), Comm(RECV_F, 3, 1), Compute(F, 3, 1),
             Compute(B, 3, 1), Comm(SEND_B, 3, 1), Comm(RECV_B, 0, 0), Compute(B, 0, 0)),
            (Compute(F, 2, 1), Comm(SEND_F, 2, 1), Comm(RECV_F, 1, 0), Compute(F, 1, 0),
             Compute(B, 1, 0), Comm(SEND_B, 1, 0), Comm(RECV_B, 2, 1), Compute(B, 2, 1)),
        ),
    )
    return s


def test_deadlock_only_under_nccl_is_reported_with_places():
    s = _crossing()
    e = analyze(s, comm_model="eager")
    assert not e.deadlocked and e.makespan == 6
    n = analyze(s, comm_model="nccl")
    assert n.deadlocked and n.stuck
    assert {x.rank for x in n.stuck} == {0, 1}
    text = " ".join(str(x) for x in n.stuck)
    assert "RECV_F" in text and "comm stream" in text


def test_deadlock_under_both_models_blocking_receives_first():
    s = _two_rank(
        [Batch((Comm(RECV_B, 0, 0),), wait=True), Compute(F, 0, 0), Comm(SEND_F, 0, 0),
         Compute(B, 0, 0)],
        [Comm(RECV_F, 1, 0), Compute(F, 1, 0), Compute(B, 1, 0), Comm(SEND_B, 1, 0)],
    )
    for model in ("nccl", "eager"):
        a = analyze(s, comm_model=model)
        assert a.deadlocked
        assert any(x.rank == 0 and x.step == 0 for x in a.stuck)
        assert a.order == ()


# --------------------------------------------- an independent evaluation ---
def fixed_point(s: Schedule, cm: CostModel, model: str):
    """Least fixed point of the timing equations, by Jacobi iteration.

    Written from SEMANTICS.md without looking at the replay's data structures:
    every quantity starts at 0 and is recomputed from the others until nothing
    changes (a monotone system: this converges to the ASAP times).
    """
    R = s.num_ranks
    ops = []  # (rank, step, comm)
    unit_of = {}
    units = [[] for _ in range(R)]
    for r, acts in enumerate(s.actions):
        for k, a in enumerate(acts):
            cs = (a,) if isinstance(a, Comm) else (a.ops if isinstance(a, Batch) else ())
            if isinstance(a, (Comm, Batch)):
                units[r].append(k)
            for c in cs:
                unit_of[len(ops)] = (r, k)
                ops.append((r, k, c))
    sends, recvs = {}, {}
    for i, (r, k, c) in enumerate(ops):
        peer = s.peer_of(c)
        (sends if c.kind.is_send else recvs).setdefault(
            (r, peer) if c.kind.is_send else (peer, r), []).append(i)
    partner = {}
    for ch, lst in sends.items():
        for a_, b_ in zip(lst, recvs.get(ch, [])):
            partner[a_], partner[b_] = b_, a_
    recv_at = {(r, c.kind, c.stage, c.mb): i for i, (r, k, c) in enumerate(ops)
               if not c.kind.is_send}
    made = {}
    for r, acts in enumerate(s.actions):
        for k, a in enumerate(acts):
            for c in computes_of(a):
                made[(c.kind.value, c.stage, c.mb)] = (r, k)
    ret = {(r, k): 0.0 for r in range(R) for k in range(len(s.actions[r]))}
    start = dict(ret)
    done = {i: 0.0 for i in range(len(ops))}
    active = {(r, k): 0.0 for r in range(R) for k in units[r]}
    udone = dict(active)
    for _ in range(10 * (len(ret) + len(ops)) + 10):
        changed = False

        def upd(d, key, v):
            nonlocal changed
            if v != d[key]:
                d[key] = v
                changed = True

        for r in range(R):
            for k, a in enumerate(s.actions[r]):
                prev = ret[(r, k - 1)] if k else 0.0
                if isinstance(a, (Comm, Batch)):
                    upd(start, (r, k), prev)
                    wait = isinstance(a, Batch) and a.wait
                    upd(ret, (r, k), max(prev, udone[(r, k)]) if wait else prev)
                    continue
                t = prev
                for c in computes_of(a):
                    if c.kind is F:
                        p = s.prev_stage(c.stage)
                        if p is not None:
                            if s.rank_of(p) == r:
                                t = max(t, ret[made[("F", p, c.mb)]])
                            else:
                                t = max(t, done[recv_at[(r, RECV_F, c.stage, c.mb)]])
                    elif c.kind.value == "W":
                        t = max(t, ret[made[("I", c.stage, c.mb)]])
                    else:
                        t = max(t, ret[made[("F", c.stage, c.mb)]])
                        n = s.next_stage(c.stage)
                        if n is not None:
                            if s.rank_of(n) == r:
                                key = made.get(("B", n, c.mb)) or made[("I", n, c.mb)]
                                t = max(t, ret[key])
                            else:
                                t = max(t, done[recv_at[(r, RECV_B, c.stage, c.mb)]])
                cs = computes_of(a)
                if len(cs) == 1:
                    d = getattr(cm.of(cs[0].stage), cs[0].kind.value)
                else:
                    key = "FB" if cs[1].kind is B else "FI"
                    d = (getattr(cm.of(cs[0].stage), key) + getattr(cm.of(cs[1].stage), key)) / 2
                upd(start, (r, k), t)
                upd(ret, (r, k), t + d)
        for r in range(R):
            for idx, k in enumerate(units[r]):
                post = ret[(r, k - 1)] if k else 0.0
                if model == "nccl":
                    upd(active, (r, k), max(post, udone[(r, units[r][idx - 1])] if idx else 0.0))
                ids = [i for i, (rr, kk, _) in enumerate(ops) if (rr, kk) == (r, k)]
                for i in ids:
                    j = partner[i]
                    c = ops[i][2]
                    snd = i if c.kind.is_send else j
                    lat = cm.of(ops[snd][2].stage).comm
                    if model == "nccl":
                        upd(done, i, max(active[(r, k)], active[unit_of[j]]) + lat)
                    elif c.kind.is_send:
                        upd(done, i, post)
                    else:
                        sr, sk = unit_of[j]
                        spost = ret[(sr, sk - 1)] if sk else 0.0
                        upd(done, i, max(post, spost + lat))
                upd(udone, (r, k), max([done[i] for i in ids], default=post))
        if not changed:
            break
    else:
        raise AssertionError("no fixed point")
    makespan = max(list(ret.values()) + list(done.values()) + [0.0])
    return start, makespan


@given(
    fam=st.sampled_from(FAMILIES),
    size=st.sampled_from(SIZES),
    model=st.sampled_from(["nccl", "eager"]),
    compute_only=st.booleans(),
    F_=st.sampled_from([0.5, 1.0, 2.0]),
    I_=st.sampled_from([0.5, 1.0, 1.5]),
    W_=st.sampled_from([0.0, 0.25, 1.0]),
    comm=st.sampled_from([0.0, 0.3]),
)
def test_replay_equals_fixed_point_of_the_equations(fam, size, model, compute_only, F_, I_, W_,
                                                    comm):
    s = _gen(fam, *size, compute_only=compute_only)
    if s is None:
        return
    B_ = I_ + W_
    cm = parse_kv(f"F={F_},I={I_},W={W_},FB={max(F_, B_) + 0.1},comm={comm}")
    a = analyze(s, cm, model)
    assert not a.deadlocked, a.stuck[:2]
    lowered = lower(s) if compute_only else s
    start, makespan = fixed_point(lowered, cm, model)
    assert a.makespan == pytest.approx(makespan)
    for c in a.computes:
        assert c.start == pytest.approx(start[(c.rank, c.step)]), (c.rank, c.step)
    # the eager model only relaxes nccl's constraints
    if model == "nccl":
        assert analyze(s, cm, "eager").makespan <= a.makespan + 1e-9


# ------------------------------------------------ the certificate checker ---
@given(fam=st.sampled_from(FAMILIES), size=st.sampled_from(SIZES),
       model=st.sampled_from(["nccl", "eager"]), comm=st.sampled_from([0.0, 0.5]),
       compute_only=st.booleans())
def test_timeline_order_is_a_valid_witness(fam, size, model, comm, compute_only):
    from verifier.check.certificate import check_witness

    s = _gen(fam, *size, compute_only=compute_only)
    if s is None:
        return
    a = analyze(s, parse_kv(f"F=1,B=2,W=0.5,comm={comm}"), model)
    ok, why = check_witness(lower(s) if compute_only else s, model, a.order)
    assert ok, why


def test_checker_witness_and_analysis_agree_on_generated_schedules():
    from verifier.check.certificate import check_witness
    from verifier.check.checker import check

    for fam in FAMILIES:
        s = _gen(fam, 4, 8)
        if s is None:
            continue
        for model in ("nccl", "eager"):
            res = check(s, comm_model=model)
            a = analyze(s, comm_model=model)
            assert (res.witness is not None) == (not a.deadlocked), (fam, model)
            assert check_witness(s, model, a.order)[0]


def test_deadlock_verdict_agrees_with_the_certificate_interpreter_on_mutants():
    from verifier.check.certificate import terminates

    rng = random.Random(7)
    seen = {True: 0, False: 0}
    for _ in range(150):
        fam = rng.choice(FAMILIES)
        s = _gen(fam, rng.choice([2, 3, 4]), rng.choice([4, 6, 8]))
        if s is None:
            continue
        acts = [list(x) for x in s.actions]
        r = rng.randrange(s.num_ranks)
        if len(acts[r]) < 2:
            continue
        i = rng.randrange(len(acts[r]) - 1)
        j = min(len(acts[r]) - 1, i + rng.choice([1, 2, 5]))
        acts[r][i], acts[r][j] = acts[r][j], acts[r][i]
        m = s.with_actions(acts)
        for model in ("nccl", "eager"):
            a = analyze(m, comm_model=model)
            assert a.deadlocked == (not terminates(m, model)), (fam, model, i, j)
            seen[a.deadlocked] += 1
    assert seen[True] > 10 and seen[False] > 10


# ------------------------------------------------------- metrics and path ---
def test_metrics_and_params():
    a = analyze(generate("dualpipe", 4, 8))
    assert [r.param_copies for r in a.ranks] == [2.0] * 4
    assert [r.stages for r in a.ranks] == [2] * 4
    assert analyze(generate("dualpipev", 4, 8)).ranks[0].param_copies == 1.0
    a = analyze(generate("1f1b", 4, 8))
    assert a.bubble_ratio == pytest.approx(sum(r.bubble for r in a.ranks) / (4 * a.makespan))
    for r in a.ranks:
        assert r.busy + r.bubble == pytest.approx(a.makespan)
    # the critical path is a chain in time from 0 to the makespan
    path = a.critical_path
    assert path[0].start == 0 and path[-1].end == a.makespan
    for x, y in zip(path, path[1:]):
        assert x.end <= y.start + 1e-9


# ------------------------------------------------------------ chrome trace ---
@pytest.mark.parametrize("fam", ["1f1b", "zbv", "dualpipe", "dualpipev"])
@pytest.mark.parametrize("model", ["nccl", "eager"])
def test_chrome_trace_is_valid_and_flows_are_paired(fam, model):
    a = analyze(generate(fam, 4, 8), parse_kv("F=1,B=2,W=1,comm=0.25"), model)
    doc = json.loads(json.dumps(chrome_trace(a)))
    ev = doc["traceEvents"]
    starts = [e["id"] for e in ev if e["ph"] == "s"]
    finishes = [e["id"] for e in ev if e["ph"] == "f"]
    assert starts and sorted(starts) == sorted(finishes) == sorted(set(starts))
    assert len(starts) == len(a.messages)
    xs = [e for e in ev if e["ph"] == "X"]
    assert sum(e["cat"] == "compute" for e in xs) == len(a.computes)
    assert sum(e["cat"] == "comm" for e in xs) == 2 * len(a.messages)
    for e in xs:
        assert e["dur"] >= 0 and 0 <= e["pid"] < a.num_ranks
    # slices on one thread never partially overlap
    by_thread = {}
    for e in xs:
        by_thread.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_thread.values():
        spans.sort()
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert s1 >= e0 - 1e-6 or e1 <= e0 + 1e-6
    names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"compute", "comm"} <= names


# --------------------------------------------------------------- the CLI ---
def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def test_analyze_cli_text_json_trace(tmp_path):
    p = tmp_path / "dp.json"
    save_schedule(generate("dualpipe", 8, 20), p)
    rc, out, err = _cli("analyze", str(p), "--costs", "F=1,I=1,W=1,FB=3")
    assert rc == 0, err
    assert "makespan 66" in out and "critical path" in out
    assert len([x for x in out.splitlines() if x.strip().split(" ")[0].isdigit()]) >= 8
    trace = tmp_path / "t.json"
    rc, out, err = _cli("analyze", str(p), "--format", "json", "--timeline",
                        "--chrome-trace", str(trace))
    assert rc == 0
    doc = json.loads(out)
    assert doc["schema"] == "pp-analysis/1" and doc["deadlocked"] is False
    assert set(doc) >= {"makespan", "bubble_ratio", "ranks", "critical_path", "costs", "timeline"}
    assert set(doc["ranks"][0]) == {"rank", "busy", "bubble", "end", "peak_activations",
                                    "stages", "param_copies"}
    assert json.loads(trace.read_text())["traceEvents"]


def test_analyze_cli_deadlock_exit_1_and_bad_costs_exit_2(tmp_path):
    p = tmp_path / "x.json"
    save_schedule(_crossing(), p)
    rc, out, err = _cli("analyze", str(p))
    assert rc == 1 and "DEADLOCK under nccl" in out and "rank 0 step" in out
    rc, out, err = _cli("analyze", str(p), "--comm-model", "eager")
    assert rc == 0
    rc, out, err = _cli("analyze", str(p), "--costs", "F=1,W=-2")
    assert rc == 2 and "W=-2" in err and "Traceback" not in err
    rc, out, err = _cli("analyze", str(tmp_path / "missing.json"))
    assert rc == 2


@pytest.mark.parametrize("bad, what", [
    (Compute(F, 9, 0), "not on any route"),
    (Compute(F, 0, 5), "micro-batch 5"),
    (Comm(RECV_F, 0, 0), "no peer"),
])
def test_malformed_input_is_a_schedule_error_naming_the_place(bad, what):
    s = _two_rank([bad], [Compute(F, 1, 0)])
    with pytest.raises(ScheduleError) as e:
        analyze(s)
    assert what in str(e.value) and "rank 0 step 0" in str(e.value)


def test_chrome_trace_flow_finishes_lie_inside_their_receive_slice():
    for model in ("nccl", "eager"):
        a = analyze(generate("zb-h1", 3, 6), parse_kv("comm=0.5"), model)
        ev = chrome_trace(a)["traceEvents"]
        slices = [e for e in ev if e["ph"] == "X" and e["cat"] == "comm"]
        for f in (e for e in ev if e["ph"] == "f"):
            assert any(x["pid"] == f["pid"] and x["tid"] == f["tid"]
                       and x["ts"] <= f["ts"] <= x["ts"] + x["dur"] for x in slices)
        for s_ in (e for e in ev if e["ph"] == "s"):
            assert any(x["pid"] == s_["pid"] and x["tid"] == s_["tid"] and x["ts"] == s_["ts"]
                       for x in slices)


def test_chrome_trace_slices_are_named_like_the_text_output():
    """Perfetto shows each slice's name: the action as `check`/`analyze` write it."""
    from verifier.analysis.timeline import label_of
    from verifier.ir import op_text

    a = analyze(generate("dualpipev", 4, 8), parse_kv("F=1,B=2,W=1,comm=0.25"), "nccl")
    xs = [e for e in chrome_trace(a)["traceEvents"] if e["ph"] == "X"]
    compute = [e["name"] for e in xs if e["cat"] == "compute"]
    assert compute == [label_of(c.action) for c in a.computes]
    assert "0F0" in compute and any(n.endswith(")OVERLAP_F_B") for n in compute)
    comm = {e["name"] for e in xs if e["cat"] == "comm"}
    for m in a.messages:
        assert f"{op_text(m.send.kind, m.send.stage, m.send.mb)} -> rank {m.dst}" in comm
        assert f"{op_text(m.recv.kind, m.recv.stage, m.recv.mb)} <- rank {m.src}" in comm


# ------------------------------------------ every communication model ---
def _unbatched(s: Schedule) -> Schedule:
    """Every BATCH split into plain ops (what nccl-pairs puts on pair streams)."""
    return s.with_actions([
        [x for a in acts for x in (a.ops if isinstance(a, Batch) else (a,))]
        for acts in s.actions
    ])


def _model_mutants(count: int, seed: int):
    rng = random.Random(seed)
    for n in range(count):
        s = _gen(rng.choice(FAMILIES), rng.choice([2, 3, 4]), rng.choice([4, 6, 8]))
        if s is None:
            continue
        if n % 2:
            s = _unbatched(s)
        acts = [list(x) for x in s.actions]
        for _ in range(rng.randint(1, 3)):  # reorder or re-wait communication only
            r = rng.randrange(s.num_ranks)
            at = [k for k, a in enumerate(acts[r]) if isinstance(a, (Comm, Batch))]
            if len(at) >= 2 and rng.random() < 0.7:
                k = rng.randrange(len(at) - 1)
                i, j = at[k], at[min(len(at) - 1, k + rng.choice([1, 2]))]
                acts[r][i], acts[r][j] = acts[r][j], acts[r][i]
            elif at:
                k = rng.choice(at)
                a = acts[r][k]
                acts[r][k] = Batch(a.ops, not a.wait) if isinstance(a, Batch) else Batch((a,), True)
        yield s.with_actions(acts)


def test_every_model_deadlock_agrees_with_z3_and_the_model_order():
    # the replay reads the model's fields; Z3's encoding reads them too, on
    # its own: where Z3 decides deadlock-freedom (sat, or a core of waits),
    # the replay must say the same, under every model
    from verifier.check import z3engine
    from verifier.semantics import comm

    told, decided = set(), 0
    for s in [_waited_sends()] + list(_model_mutants(100, 3)):
        dead = {m: analyze(s, comm_model=m).deadlocked for m in comm.NAMES}
        for m in comm.NAMES:
            out = z3engine.decide(s, m, minimize_core=False)
            if out.status == "sat" or out.failed_properties == ("deadlock-free",):
                assert dead[m] == (out.status != "sat"), (s.name, m, out.core[:2])
                decided += 1
        for a in comm.NAMES:  # deadlocked under a weaker model: under every stricter one
            for b in comm.NAMES:
                if comm.implies(a, b) and dead[b]:
                    assert dead[a], (a, b)
        told |= {k for k in range(len(comm.NAMES) - 1)
                 if dead[comm.NAMES[k]] and not dead[comm.NAMES[k + 1]]}
    assert decided > 80  # (of 640: the rest fail a static property first)
    assert told == set(range(len(comm.NAMES) - 1)), told


def _waited_sends() -> Schedule:
    """1F1B on 2 ranks, 2 micro-batches, where each rank waits for a send
    before it posts the receive the other's send needs: rendezvous sends
    (gloo and both nccl models) deadlock, buffered ones (eager) do not."""
    return _two_rank(
        [Compute(F, 0, 0), Comm(SEND_F, 0, 0), Compute(F, 0, 1),
         Batch((Comm(SEND_F, 0, 1),), wait=True), Comm(RECV_B, 0, 0), Compute(B, 0, 0),
         Comm(RECV_B, 0, 1), Compute(B, 0, 1)],
        [Comm(RECV_F, 1, 0), Compute(F, 1, 0), Compute(B, 1, 0),
         Batch((Comm(SEND_B, 1, 0),), wait=True), Comm(RECV_F, 1, 1), Compute(F, 1, 1),
         Compute(B, 1, 1), Comm(SEND_B, 1, 1)],
        M=2,
    )


def test_waited_sends_deadlock_under_rendezvous_models_only():
    from verifier.semantics import comm

    s = _waited_sends()
    for m in comm.NAMES:
        a = analyze(s, comm_model=m)
        assert a.deadlocked == comm.model(m).rendezvous, m
        assert a.comm_model == m


def test_unknown_comm_model_lists_the_models():
    with pytest.raises(ValueError, match="nccl-pairs"):
        analyze(generate("1f1b", 2, 2), comm_model="bogus")

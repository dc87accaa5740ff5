"""Unit tests of the checker: each property's counterexamples, the engines'
certificates (and that tampered ones are rejected), verdict plumbing, the CLI's
exit codes and one-line errors.

Not covered here: random and mutated schedules (test_checker_properties.py),
generator grids (test_checker_generated.py), golden output (test_golden.py).
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from verifier.check import certificate, hbgraph
from verifier.check.checker import (
    CheckResult,
    PropertyId,
    Status,
    Verdict,
    Violation,
    WaitCycle,
    check,
)
from verifier.cli.app import main
from verifier.generators import generate
from verifier.ir import (
    B,
    F,
    I,
    RECV_B,
    RECV_F,
    SEND_B,
    SEND_F,
    W,
    Comm,
    Compute,
    Overlap,
    Route,
    Schedule,
    ScheduleError,
    Stage,
)

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "specs" / "examples" / "broken"


def c(kind, stage, mb):
    return Compute(kind, stage, mb)


def m(kind, stage, mb):
    return Comm(kind, stage, mb)


def two_rank(r0, r1, M=1) -> Schedule:
    return Schedule(
        num_ranks=2,
        num_microbatches=M,
        stages=(Stage(0, 0, 0), Stage(1, 1, 1)),
        routes=(Route((0, 1), tuple(range(M))),),
        actions=(tuple(r0), tuple(r1)),
        name="t",
    )


GOOD_R0 = [c(F, 0, 0), m(SEND_F, 0, 0), m(RECV_B, 0, 0), c(B, 0, 0)]
GOOD_R1 = [m(RECV_F, 1, 0), c(F, 1, 0), c(B, 1, 0), m(SEND_B, 1, 0)]


def failing(r: CheckResult) -> set[str]:
    return {p.value for p in r.failed}


def codes(r: CheckResult, pid: str) -> list[str]:
    return [v.code for v in r.result_of(pid).violations]


# ---------------------------------------------------------------- verdicts


def test_minimal_schedule_verifies_with_valid_witness():
    s = two_rank(GOOD_R0, GOOD_R1)
    for model in ("nccl", "eager"):
        for engine in ("graph", "z3", "both", "auto"):
            r = check(s, model, engine)
            assert r.verdict is Verdict.VERIFIED, (model, engine, r.violations)
            assert r.certificate.accepted
            assert sorted(r.witness) == [(0, k) for k in range(4)] + [(1, k) for k in range(4)]
            for rank in (0, 1):  # each rank's steps in program order
                steps = [k for rr, k in r.witness if rr == rank]
                assert steps == sorted(steps)
    assert check(s).comm_model == "nccl"


def test_bad_arguments_raise_schedule_error():
    s = two_rank(GOOD_R0, GOOD_R1)
    with pytest.raises(ScheduleError, match="communication model 'tcp'"):
        check(s, "tcp")
    with pytest.raises(ScheduleError, match="engine 'fast'"):
        check(s, engine="fast")
    with pytest.raises(ScheduleError, match="memory limit"):
        check(s, memory_limit=-1)


def test_enums_are_ordered_and_results_frozen():
    assert Verdict.VERIFIED < Verdict.REFUTED < Verdict.UNKNOWN
    assert [p.value for p in PropertyId] == [
        "well-formed", "exactly-once", "dependencies", "message-matching",
        "deadlock-free", "overlap-legal", "memory",
    ]
    r = check(two_rank(GOOD_R0, GOOD_R1), engine="graph")
    with pytest.raises(Exception):
        r.verdict = Verdict.REFUTED  # type: ignore[misc]
    with pytest.raises(ValueError):
        Violation(PropertyId.MEMORY, "no-such-code", ())


# ---------------------------------------------------------------- properties


def test_well_formed_failures_are_reported_and_stop_the_rest():
    s = two_rank([c(F, 1, 0)] + GOOD_R0[1:], GOOD_R1)
    r = check(s, engine="graph")
    assert r.verdict is Verdict.REFUTED and failing(r) == {"well-formed"}
    assert codes(r, "well-formed") == ["action-rank"]
    assert r.result_of("well-formed").violations[0].locations == ((0, 0),)
    assert r.result_of("deadlock-free").status is Status.NOT_CHECKED
    # ids out of range, a send with no peer, a micro-batch on no route
    s = two_rank([c(F, 7, 0), m(SEND_B, 0, 0), c(F, 0, 3)], GOOD_R1)
    got = codes(check(s, engine="graph"), "well-formed")
    assert got == ["action-stage", "no-peer", "action-mb"]
    bad_routes = replace(two_rank(GOOD_R0, GOOD_R1), routes=(Route((0, 1), (0,)), Route((1,), (0,))))
    got = codes(check(bad_routes, engine="graph"), "well-formed")
    assert "stage-routes" in got and "mb-routes" in got


def test_exactly_once_kinds():
    r = check(two_rank(GOOD_R0 + [c(B, 0, 0)], GOOD_R1), engine="graph")
    assert failing(r) == {"exactly-once"}
    v = r.result_of("exactly-once").violations[0]
    assert v.code == "duplicate" and v.locations == ((0, 3), (0, 4))
    r = check(two_rank(GOOD_R0[:3] + [c(I, 0, 0)], GOOD_R1), engine="graph")
    assert codes(r, "exactly-once") == ["i-without-w"]
    r = check(two_rank(GOOD_R0[:3] + [c(I, 0, 0), c(W, 0, 0), c(B, 0, 0)], GOOD_R1), engine="graph")
    assert "b-and-split" in codes(r, "exactly-once")


def test_dependencies_order_and_missing():
    r = check(two_rank([m(SEND_F, 0, 0), c(F, 0, 0)] + GOOD_R0[2:], GOOD_R1), engine="graph")
    assert failing(r) == {"dependencies"}
    v = r.result_of("dependencies").violations[0]
    assert v.code == "dep-order" and v.locations == ((0, 0), (0, 1))
    ok, why = certificate.check_violation(r.schedule, v)
    assert ok, why
    # W with no I anywhere: a missing producer; it also can never start
    r = check(two_rank(GOOD_R0 + [c(W, 0, 0)], GOOD_R1), engine="graph")
    assert "dep-missing" in codes(r, "dependencies")
    assert "deadlock-free" in failing(r)


def test_message_matching_payload_and_unmatched():
    s = generate("gpipe", 2, 2)
    r = check(s, engine="graph")
    assert r.verdict is Verdict.VERIFIED
    # an extra receive on rank 1 that rank 0 never sends: unmatched; under nccl
    # it never completes (an open chain), under eager it blocks nothing posted
    # after it but never completes either
    acts = [list(a) for a in s.actions]
    acts[1].append(m(RECV_F, 1, 0))
    s2 = s.with_actions(acts)
    for model in ("nccl", "eager"):
        r = check(s2, model, "graph")
        assert "unmatched-recv" in codes(r, "message-matching")
        assert r.result_of("deadlock-free").status is Status.FAILS
        assert r.cycle is not None and not r.cycle.closed
        assert r.cycle.hops[-1].target.kind.value == "never"
        assert r.certificate.accepted
    # an extra send: unmatched; buffered under eager (terminates), hangs under nccl
    acts = [list(a) for a in s.actions]
    acts[0].append(m(SEND_F, 0, 1))
    s3 = s.with_actions(acts)
    assert "unmatched-send" in codes(check(s3, "eager", "graph"), "message-matching")
    assert check(s3, "eager", "graph").result_of("deadlock-free").status is Status.HOLDS
    assert check(s3, "nccl", "graph").result_of("deadlock-free").status is Status.FAILS


def test_overlap_legal_same_microbatch_is_dependent():
    # V placement, rank 0 holds stages 0 and 3: F(3, m) & B(0, m) depend on each other
    s = generate("zbv", 2, 2)
    acts = [list(a) for a in s.actions]
    acts[0].append(Overlap(c(F, 3, 1), c(B, 0, 1)))
    r = check(s.with_actions(acts), engine="graph")
    assert "overlap-dependent" in codes(r, "overlap-legal")


def test_memory_limit():
    s = generate("gpipe", 2, 4)
    r = check(s, engine="graph")
    assert r.result_of("memory").status is Status.HOLDS and r.peaks == (4.0, 4.0)
    r = check(s, engine="graph", memory_limit=3)
    assert failing(r) == {"memory"}
    v = r.result_of("memory").violations[0]
    assert v.arg("peak") == 4 and v.arg("limit") == 3 and v.locations[0][0] == 0
    assert certificate.check_violation(r.schedule, v)[0]
    assert check(s, engine="graph", memory_limit=4).verdict is Verdict.VERIFIED


def test_compute_only_is_lowered_first():
    s = generate("1f1b", 3, 4, compute_only=True)
    r = check(s, engine="graph")
    assert r.lowered and r.verdict is Verdict.VERIFIED
    assert r.schedule.num_actions > s.num_actions


# ---------------------------------------------------------------- certificates


def _issue_172668():
    from verifier.format.io import load_schedule

    return load_schedule(BROKEN / "deadlock_pytorch_issue_172668.json")


def test_deadlock_cycle_is_a_chain_of_waits():
    s = _issue_172668()
    g = hbgraph.decide(s, "nccl")
    assert g.witness is None and g.cycle.closed
    hops = g.cycle.hops
    for a, b in zip(hops, hops[1:]):
        assert b.waiter == a.target
    assert hops[-1].target == hops[0].waiter
    ranks = {h.waiter.rank for h in hops}
    assert ranks == {0, 1}
    assert certificate.check_deadlock(s, "nccl", g.cycle) == (True, "")


def test_tampered_certificates_are_rejected():
    s = _issue_172668()
    g = hbgraph.decide(s, "nccl")
    # a hop dropped: no longer a chain
    ok, why = certificate.check_deadlock(s, "nccl", WaitCycle(g.cycle.hops[1:], True))
    assert not ok
    # the same cycle claimed under eager, where the schedule terminates
    ok, why = certificate.check_deadlock(s, "eager", g.cycle)
    assert not ok and "terminates" in why
    # a witness with two entries of one rank swapped
    w = list(hbgraph.decide(s, "eager").witness)
    assert certificate.check_witness(s, "eager", w)[0]
    i = next(k for k in range(len(w) - 1) if w[k][0] == w[k + 1][0])
    w[i], w[i + 1] = w[i + 1], w[i]
    assert not certificate.check_witness(s, "eager", w)[0]
    # static counterexamples are re-derived; a forged one is rejected
    r = check(two_rank([m(SEND_F, 0, 0), c(F, 0, 0)] + GOOD_R0[2:], GOOD_R1), engine="graph")
    v = r.result_of("dependencies").violations[0]
    assert certificate.check_violation(r.schedule, v)[0]
    forged = replace(v, locations=((0, 0), (0, 3)))
    assert not certificate.check_violation(r.schedule, forged)[0]
    good = check(two_rank(GOOD_R0, GOOD_R1), engine="graph").schedule
    assert not certificate.check_violation(good, v)[0]  # not true of a correct schedule
    # the eager witness does not replay under nccl
    ok, why = certificate.check_witness(s, "nccl", hbgraph.decide(s, "eager").witness)
    assert not ok
    # a truncated witness
    assert not certificate.check_witness(s, "eager", w[:-1])[0]


def test_witness_replays_agree_on_perturbed_witnesses():
    """check_witness accepts in one pass and words rejections step by step:
    the two replays accept exactly the same witnesses."""
    import random

    rnd = random.Random(0)
    for fam, R, M in (("1f1b", 2, 4), ("zb-h1", 3, 6), ("dualpipe", 4, 8), ("dualpipev", 2, 4)):
        s = generate(fam, R, M)
        for model in ("nccl", "eager"):
            w = list(hbgraph.decide(s, model).witness)
            assert certificate._replays(s, model == "nccl", w) and certificate._replay(s, model, w)[0]
            for _ in range(60):
                x = list(w)
                x.insert(rnd.randrange(len(x)), x.pop(rnd.randrange(len(x))))
                assert certificate._replays(s, model == "nccl", x) == certificate._replay(s, model, x)[0]


def test_z3_resource_limit_is_unknown_never_a_pass():
    s = generate("dualpipev", 4, 8)
    r = check(s, engine="z3", z3_rlimit=1)
    assert r.verdict is Verdict.UNKNOWN and r.verdict.exit_code == 3
    assert r.result_of("deadlock-free").status is Status.UNKNOWN
    assert codes(r, "deadlock-free") == ["solver-unknown"]
    # auto does not give Z3 a budget it cannot meet: the graph engine decides
    r = check(s, engine="auto", z3_rlimit=1)
    assert r.verdict is Verdict.VERIFIED and r.engine == "graph"
    # and when Z3 gives up within its budget, auto falls back and says so
    r = check(s, engine="auto", z3_timeout_ms=1)
    assert r.verdict is Verdict.VERIFIED and r.engine == "graph"


def test_engines_agree_on_examples():
    for path in sorted(BROKEN.glob("*.json")) + sorted((ROOT / "specs/examples").glob("*.json")):
        from verifier.format.io import load_schedule

        s = load_schedule(path)
        for model in ("nccl", "eager"):
            r = check(s, model, "both")
            assert r.verdict is not Verdict.UNKNOWN, (path.name, model, r.violations)
            assert not [v for v in r.violations if v.code == "engine-disagree"]


# ---------------------------------------------------------------- CLI


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", *argv], out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    code, out, err = run_cli(str(tmp_path / "nope.json"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "no such file" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "pp-schedule", "version": "1.0", "num_ranks": 0}')
    code, out, err = run_cli(str(bad))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and str(bad) in err
    code, out, err = run_cli(str(BROKEN / "memory_gpipe_over_limit.json"), "--memory-limit", "lots")
    assert code == 2 and err.count("\n") == 1 and "lots" in err
    code, out, err = run_cli(str(BROKEN / "memory_gpipe_over_limit.json"), "--timeout", "0")
    assert code == 2 and "--timeout" in err


def test_cli_exit_codes_and_progress():
    code, out, err = run_cli(str(ROOT / "specs/examples/1f1b.json"), "--progress", "--engine", "graph")
    assert code == 0 and "check: graph engine" in err
    code, out, err = run_cli(str(ROOT / "specs/examples/1f1b.json"))
    assert err == ""  # not a terminal, no --progress: quiet
    code, out, _ = run_cli(str(BROKEN / "deadlock_pytorch_issue_172668.json"))
    assert code == 1
    code, out, _ = run_cli(str(ROOT / "specs/examples/dualpipev.json"), "--engine", "z3", "--rlimit", "1")
    assert code == 3 and out.startswith("UNKNOWN under nccl (engine: z3)")


def test_cli_json_is_stable_and_complete():
    code, out, _ = run_cli(str(BROKEN / "deadlock_pytorch_issue_172668.json"), "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["exit_code"] == 1
    assert set(doc) >= {"format", "version", "verdict", "comm_model", "engine", "schedule",
                        "properties", "counterexamples", "cycle", "memory", "stats"}
    assert set(doc["properties"]) == {p.value for p in PropertyId}
    assert doc["stats"]["seconds"] >= 0
    assert all(h["text"] for h in doc["cycle"]["hops"])


def test_cli_csv_input():
    code, out, _ = run_cli(str(ROOT / "tests/fixtures/dualpipev_4rank_10mb.csv"), "--engine", "graph")
    assert code == 0 and "lowered from compute-only" in out


def test_z3_engine_error_is_unknown_or_falls_back(monkeypatch):
    import verifier.check.z3engine as z3engine

    def broken(*args, **kwargs):
        raise RuntimeError("encoding bug")

    monkeypatch.setattr(z3engine, "decide", broken)
    s = generate("gpipe", 2, 2)
    r = check(s, engine="z3")
    assert r.verdict is Verdict.UNKNOWN and "encoding bug" in r.violations[0].message
    r = check(s, engine="auto")
    assert r.verdict is Verdict.VERIFIED and r.engine == "graph" and "encoding bug" in r.engine_note


def test_fractional_memory_limit_with_z3():
    s = generate("gpipe", 2, 4)  # peak 4 on both ranks
    assert check(s, engine="z3", memory_limit=3.5).verdict is Verdict.REFUTED
    assert check(s, engine="z3", memory_limit=4.5).verdict is Verdict.VERIFIED


def test_auto_refutes_without_z3_and_proves_with_it(monkeypatch):
    """auto: a refutation (a failing static property or a deadlock the graph
    engine finds) is decided by graph and the certificate checker without
    calling Z3; a deadlock-free schedule that fits Z3's budget is still proved
    by Z3."""
    import verifier.check.z3engine as z3engine
    from verifier.format.io import load_schedule

    real = z3engine.decide
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(z3engine, "decide", spy)
    for path in sorted(BROKEN.glob("*.json")):
        s = load_schedule(path)
        lim = json.loads(path.read_text())["params"].get("memory_limit")
        r = check(s, engine="auto", memory_limit=lim)
        assert r.verdict is Verdict.REFUTED, path.name
        assert r.engine == ("none" if path.name.startswith("well_formed") else "graph"), path.name
        if r.cycle is not None:
            assert r.certificate.accepted, path.name
            assert r.result_of("deadlock-free").decided_by == "graph"
    assert calls == []
    # the same deadlock under --engine z3 still gives Z3's minimised core
    r = check(load_schedule(BROKEN / "deadlock_wait_before_send.json"), engine="z3")
    assert r.verdict is Verdict.REFUTED and r.engine == "z3" and r.z3_core and calls == [1]
    r = check(generate("zbv", 2, 4), engine="auto")
    assert r.verdict is Verdict.VERIFIED and r.engine == "z3" and calls == [1, 1]

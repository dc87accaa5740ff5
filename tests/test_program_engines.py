"""The engines of a recorded program held against each other (issue 13 item 3).

- every recorded program of tests/fixtures/programs/ (recordings of the
  scripts of tests/programs/ and tests/runtimes/, see its README): the replay
  and the Z3 engine reach the same answer under every model (terminates, or
  the same blocked state), and the independent certificate checker accepts
  both engines' certificates;
- tampered certificates (a witness with a receive returning before its send
  was posted, a claimed deadlock where a rank can move, a wrong list of what
  never completes, a claim for a program that terminates) are rejected with
  their reason; a rejected certificate makes the verdict UNKNOWN (exit 3);
- random small programs (2-4 ranks; send, recv, isend, irecv, batches, waits,
  second waits, unwaited ops, unmatched ops, barriers): replay, z3 and the
  certificate checker agree, and the generator yields both outcomes;
- ``check --engine z3|both`` on a program: who decided, in text and JSON.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from programs_util import batch, coll, p2p, program, wait
from verifier.check import program as program_check
from verifier.check.certificate.program import check_program_certificate
from verifier.check.program.engines import answer_of
from verifier.check.program import PROGRAM_MODELS, check_program
from verifier.check.program.replay import plan, replay
from verifier.check.z3engine import decide_program
from verifier.cli.app import main
from verifier.format.program import load_program, program_from_dict
from verifier.results.check import Status, Verdict
from verifier.results.program import ProgramCertificate, ProgramProperty

FIXTURES = sorted((Path(__file__).resolve().parent / "fixtures" / "programs").glob("*.json"))


def _engines(p):
    """Per model: (replay outcome, z3 outcome), after asserting they agree and
    that both certificates are accepted."""
    pl = plan(p)
    out = {}
    for name, rules in PROGRAM_MODELS.items():
        o = replay(p, rules, pl)
        z = decide_program(p, name, plan=pl)
        assert z.status == "sat", z.reason
        assert answer_of(z.certificate) == answer_of(o.certificate), (name, o.summary)
        assert o.terminates == z.certificate.terminates
        for who, c in (("replay", o.certificate), ("z3", z.certificate)):
            ok, why = check_program_certificate(p, name, c)
            assert ok, (name, who, why)
        out[name] = (o, z)
    return out


def test_fixtures_are_found():
    assert len(FIXTURES) >= 20, FIXTURES


@pytest.mark.parametrize("path", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_recorded_programs_replay_and_z3_agree(path):
    p = load_program(path)
    res = _engines(p)
    r = check_program(p, "all", engine="both")
    assert r.engine == "both" and r.certificate == "accepted"
    assert r.verdict is not Verdict.UNKNOWN
    assert r.result_of(ProgramProperty.DEADLOCK_FREE).status is (
        Status.HOLDS if all(o.terminates for o, _z in res.values()) else Status.FAILS)


def _fixture(stem: str):
    return load_program(next(f for f in FIXTURES if f.stem == stem))


# Programs that are not well-formed are still decided (deadlock-free is reported
# beside the well-formed failure): the engines and the checker agree there too.
_TWO_GROUPS = [{"id": 0, "ranks": [0, 1, 2]}, {"id": 1, "ranks": [0, 1]}]
ILL_FORMED = {
    "self-send": program([p2p("send", 0, 1), p2p("recv", 0, 2)], [p2p("recv", 0, 3)]),
    "self-isend": program([p2p("isend", 0, 1, handle=0), p2p("recv", 0, 2), wait(0, 3)], []),
    "unknown-handle": program([wait(5, 1), p2p("send", 1, 2)], [p2p("recv", 0, 3)]),
    "wait-before-its-isend": program([wait(0, 1), p2p("isend", 1, 2, handle=0), wait(0, 3)],
                                     [p2p("recv", 0, 4)]),
    "undeclared-group": program([coll("barrier", 1, group=7)], [coll("barrier", 2, group=7)]),
    "collective-of-a-non-member": program([coll("barrier", 1, group=1)], [coll("barrier", 2, group=1)],
                                          [coll("barrier", 3, group=1)], groups=_TWO_GROUPS),
    "p2p-outside-its-group": program([p2p("send", 2, 1, group=1)], [], [p2p("recv", 0, 2, group=1)],
                                     groups=_TWO_GROUPS),
    "hung-recording": program([p2p("send", 1, 1, returned=False)], [], outcomes={1: "hung"}),
}


@pytest.mark.parametrize("name", sorted(ILL_FORMED))
def test_ill_formed_programs_replay_and_z3_agree(name):
    p = program_from_dict(ILL_FORMED[name])
    _engines(p)
    r = check_program(p, "all", engine="both")
    assert r.verdict is Verdict.REFUTED and r.certificate == "accepted"


# ---------------------------------------------------------------- tampering

PINGPONG = program([p2p("send", 1, 1), p2p("recv", 1, 2)], [p2p("recv", 0, 3), p2p("send", 0, 4)])


def test_a_witness_with_a_receive_before_its_send_is_rejected():
    p = program_from_dict(PINGPONG)
    good = replay(p, PROGRAM_MODELS["nccl"]).certificate
    assert check_program_certificate(p, "nccl", good) == (True, "")
    # rank 0 returns from its recv (op 1) before rank 1 has returned from op 0,
    # so rank 1's send (op 1) is not even posted yet
    bad = dataclasses.replace(good, order=((0, 0), (0, 1), (1, 0), (1, 1)))
    ok, why = check_program_certificate(p, "nccl", bad)
    assert not ok and "entry 1: rank 0 op 1" in why and "cannot return yet" in why and "train.py:2" in why
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(good, order=((1, 1),) + good.order[1:]))
    assert not ok and "not the rank's next op" in why
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(good, order=good.order[:-1]))
    assert not ok and "3 entries, the program 4 ops" in why
    ok, why = check_program_certificate(p, "eager", good)
    assert not ok and "for nccl, not eager" in why


def _execution(p, model):
    from verifier.check.program.fast import Fast
    from verifier.check.program.plan import plan

    pl = plan(p)
    o = Fast(p, pl).replay(PROGRAM_MODELS[model], pl.partner, pl.is_send)
    return None if o is None else o.certificate


def test_a_whole_execution_witness_is_judged_event_by_event():
    """The fast replay's witness says when each unit completed; a completion
    claimed before the partner's op is posted, a completion left out, and
    returns out of order are each refused with the op named."""
    p = program_from_dict(PINGPONG)
    good = _execution(p, "nccl")
    assert good.completions is not None and check_program_certificate(p, "nccl", good) == (True, "")
    # every completion claimed before any return: rank 0's recv (op 1) is not
    # even posted before its send (op 0) has returned
    ranks, ops, at = good.completions
    early = (ranks, ops, (0,) * len(at))
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(good, completions=early))
    assert not ok and why.startswith("rank 0 op 1 (`recv` from rank 1") and "train.py:2" in why
    assert "completes before it is active" in why
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(
        good, completions=tuple(col[1:] for col in good.completions)))
    assert not ok and "completes 3 units, the program has 4" in why
    runs = tuple((r, 0, len(program_from_dict(PINGPONG).ranks[r].ops)) for r in (0, 1))
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(good, runs=runs))
    assert not ok and why.startswith("rank ")  # rank 0 returns from both ops before rank 1 from any
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(good, runs=good.runs[:-1]))
    assert not ok and "do not return from every op" in why


def test_no_execution_witness_passes_under_a_model_where_the_program_deadlocks():
    """Soundness of the event-by-event judgement: a witness of a weaker model,
    offered for a model under which the replay deadlocks, is always refused;
    and every witness it accepts after tampering with the returns also passes
    the op-by-op checker (which completes everything as early as it can)."""
    from verifier.check.certificate.program import _Run, _witness, MODELS as CM

    rng = random.Random(29)
    refused = tampered_ok = tampered_no = 0
    for _ in range(300):
        p = program_from_dict(random_program(rng))
        wit = {m: _execution(p, m) for m in PROGRAM_MODELS}
        for m, cert in wit.items():
            if cert is None:
                for other, oc in wit.items():
                    if oc is not None:
                        ok, _why = check_program_certificate(p, m, dataclasses.replace(oc, model=m))
                        assert not ok, (m, other, p)
                        refused += 1
                continue
            runs = list(cert.runs)
            if len(runs) > 2:
                i = rng.randrange(len(runs) - 1)
                runs[i], runs[i + 1] = runs[i + 1], runs[i]
                bad = dataclasses.replace(cert, runs=tuple(runs))
                ok, _why = check_program_certificate(p, m, bad)
                if ok:
                    assert _witness(p, _Run(p, CM[m]), bad) == (True, ""), (m, p)
                    tampered_ok += 1
                else:
                    tampered_no += 1
    assert refused >= 50 and tampered_no >= 20, (refused, tampered_ok, tampered_no)


def test_a_claimed_deadlock_where_a_rank_can_move_is_rejected():
    p = _fixture("torchtitan775_few_microbatches")
    cert = replay(p, PROGRAM_MODELS["nccl"]).certificate
    assert not cert.terminates and check_program_certificate(p, "nccl", cert)[0]
    r = next(r for r, k in enumerate(cert.stops) if k > 0)
    stops = list(cert.stops)
    stops[r] -= 1
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(cert, stops=tuple(stops)))
    assert not ok and f"rank {r} op {stops[r]}" in why and "can move past it" in why
    stops[r] += 2
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(cert, stops=tuple(stops)))
    assert not ok and "never returns from" in why
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(cert, pending=cert.pending[1:]))
    assert not ok and "never completes but not claimed" in why
    waits = tuple((r, ()) for r, _n in cert.waits)
    ok, why = check_program_certificate(p, "nccl", dataclasses.replace(cert, waits=waits))
    assert not ok and "is claimed to wait for []" in why


def test_a_claimed_deadlock_of_a_program_that_terminates_is_rejected():
    p = program_from_dict(PINGPONG)
    ok, why = check_program_certificate(p, "gloo", ProgramCertificate("gloo", False, stops=(1, 1)))
    assert not ok and "terminates under this model" in why
    ok, why = check_program_certificate(p, "tcp", ProgramCertificate("tcp", True))
    assert not ok and "no model 'tcp'" in why


def test_a_rejected_certificate_makes_the_verdict_unknown(monkeypatch, tmp_path):
    """The replay's real certificate, with its last entry moved to the front:
    the check says UNKNOWN, exit 3, with the checker's reason."""
    real = program_check._replays  # each model's outcome (fast replay, or the explaining one)

    def tampered(*args, **kw):
        out = {}
        for m, o in real(*args, **kw).items():
            c = o.certificate
            if c is None:  # implied by the model order, not replayed
                out[m] = o
                continue
            order = c.returns()  # written as an order of returns: the op-by-op checker judges it
            out[m] = dataclasses.replace(o, certificate=dataclasses.replace(
                c, order=order[-1:] + order[:-1], runs=(), completions=None))
        return out

    monkeypatch.setattr(program_check, "_replays", tampered)
    doc = program([p2p("send", 1, 1), p2p("send", 1, 2)], [p2p("recv", 0, 3), p2p("recv", 0, 4)])
    r = check_program(program_from_dict(doc))
    assert r.verdict is Verdict.UNKNOWN and r.certificate.startswith("rejected: replay under nccl: entry 0")
    (tmp_path / "p.json").write_text(json.dumps(doc))
    out = io.StringIO()
    rc = main(["check", str(tmp_path / "p.json")], stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert rc == 3 and text.startswith("UNKNOWN under nccl (engine: replay)")
    assert "why unknown:\n  [deadlock-free] the replay certificate under nccl was rejected: entry 0" in text


# ---------------------------------------------------------------- random programs


def random_program(rng: random.Random) -> dict:
    """2-4 ranks exchanging 1-7 messages, each rank's ends in a random order, each
    end a blocking call, an isend/irecv waited later (or never, or twice) or
    part of a batch (mixed groups in one batch too); sometimes an end dropped
    (unmatched) and barriers, one rank perhaps reaching one barrier fewer."""
    n = rng.randint(2, 4)
    ends: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
    for _ in range(rng.randint(1, 7)):
        src, dst = rng.sample(range(n), 2)
        g = rng.choice([0, 0, 1])  # group 1: a second communicator over the same ranks
        if rng.random() > 0.05:
            ends[src].append(("send", dst, g))
        if rng.random() > 0.05:
            ends[dst].append(("recv", src, g))
    barriers = rng.choice([0, 0, 0, 1, 2])
    line = iter(range(1, 10_000))
    ranks = []
    for r in range(n):
        rng.shuffle(ends[r])
        ops, waits, h = [], [], 0
        i = 0
        while i < len(ends[r]):
            style = rng.choice(["blocking", "async", "batch"])
            take = rng.randint(1, 3) if style == "batch" else 1
            group = ends[r][i:i + take]
            i += take
            if style == "blocking":
                kind, peer, g = group[0]
                ops.append(p2p(kind, peer, next(line), group=g))
                continue
            entries = []
            for kind, peer, g in group:
                entries.append(p2p("i" + kind, peer, next(line), handle=h, top=style == "async", group=g))
                waits.append(h)
                h += 1
            ops.append(entries[0] if style == "async" else batch(next(line), *entries))
            while waits and rng.random() < 0.4:
                ops.append(wait(waits.pop(rng.randrange(len(waits))), next(line)))
        for hh in waits:
            if rng.random() < 0.9:
                ops.append(wait(hh, next(line)))
        if h and rng.random() < 0.1:
            ops.append(wait(rng.randrange(h), next(line)))  # perhaps a second wait
        for _ in range(barriers - (1 if r == 0 and rng.random() < 0.1 else 0)):
            ops.insert(rng.randint(0, len(ops)), coll("barrier", next(line)))
        ranks.append(ops)
    return program(*ranks, groups=[{"id": 0, "ranks": list(range(n)), "name": "default"},
                                   {"id": 1, "ranks": list(range(n)), "name": "pp"}])


@given(st.randoms(use_true_random=False))
def test_random_programs_replay_z3_and_certificates_agree(rng):
    p = program_from_dict(random_program(rng))
    _engines(p)
    r = check_program(p, "all", engine="both")
    assert r.certificate == "accepted" and r.verdict is not Verdict.UNKNOWN


def test_random_programs_seeded_both_outcomes():
    seen = {True: 0, False: 0}
    for seed in range(60):
        res = _engines(program_from_dict(random_program(random.Random(seed))))
        for o, _z in res.values():
            seen[o.terminates] += 1
    assert seen[True] >= 20 and seen[False] >= 20, seen


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize("engine, label", [("auto", "replay"), ("graph", "replay"), ("z3", "z3"),
                                          ("both", "both")])
def test_check_engine_on_a_program(tmp_path, engine, label):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(program([p2p("send", 1, 88)], [p2p("send", 0, 91)])))
    out = io.StringIO()
    rc = main(["check", str(f), "--engine", engine, "--comm-model", "gloo"], stdout=out, stderr=io.StringIO())
    assert rc == 1 and out.getvalue().startswith(f"REFUTED under gloo (engine: {label})")
    out = io.StringIO()
    main(["check", str(f), "--engine", engine, "--format", "json"], stdout=out, stderr=io.StringIO())
    doc = json.loads(out.getvalue())
    assert doc["engine"] == label and doc["certificate"] == "accepted"
    assert ("z3" in doc["stats"]) == (engine in ("z3", "both"))


def test_a_solver_limit_is_unknown_never_a_pass(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(PINGPONG))
    out = io.StringIO()
    rc = main(["check", str(f), "--engine", "z3", "--rlimit", "1"], stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert rc == 3 and text.startswith("UNKNOWN under nccl (engine: z3)"), text
    assert "why unknown:\n  [deadlock-free] under nccl, z3 did not decide: resource limit hit: rlimit 1" in text
    assert check_program(program_from_dict(PINGPONG), engine="z3").verdict is Verdict.VERIFIED

"""The certificate checker's own four models (verifier/check/certificate/machine.py).

- the order of SEMANTICS.md "Communication models": terminating under nccl
  implies under nccl-pairs, which implies under gloo, which implies under
  eager, on every example, generated families, shuffled schedules and
  single-step mutants (hypothesis), and the conformance corpus's mutants;
- each order is strict somewhere (the models are distinct);
- the certificate's gloo agrees with the standalone rule of
  benchmarks/conformance_gloo.py, which agreed with real gloo 1350/1350;
- a witness recorded from a terminating maximal execution is accepted under
  its model, and rejected when an entry is moved before its wait;
- an unknown model is a rejection that names the models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given

from fastpath.conformance_corpus import corpus
from verifier.check import certificate
from verifier.check.checker import PropertyId, Status, check
from verifier.check.certificate import Machine
from verifier.format.io import load_schedule
from verifier.generators import generate
from verifier.ir import Schedule, ScheduleError
from verifier.semantics.lowering import lower
from verifier.strategies import generated, mutated, shuffled

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("nccl", "nccl-pairs", "gloo", "eager")
EXAMPLES = sorted((ROOT / "specs" / "examples").glob("*.json"))


def _outcomes(s: Schedule) -> dict[str, bool]:
    return {m: certificate.terminates(s, m) for m in ORDER}


def _assert_order(s: Schedule) -> dict[str, bool]:
    t = _outcomes(s)
    for a, b in zip(ORDER, ORDER[1:]):
        assert not t[a] or t[b], (s.name, t)
    return t


def _corpus(count: int = 120, seed: int = 0):
    """The standalone gloo rule of benchmarks/conformance_gloo.py (measured
    against real gloo) and a slice of the conformance corpus."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import conformance_gloo  # deferred: a benchmark script, on the path only here
    finally:
        sys.path.pop(0)
    return conformance_gloo, corpus([2, 3, 4], count, seed)[: 3 * count]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_order_on_examples(path):
    s = load_schedule(str(path))
    s = lower(s) if s.is_compute_only else s
    assert all(_assert_order(s).values())  # the examples terminate under every model


@given(generated(min_ranks=2, max_ranks=4, max_microbatches=4))
def test_order_on_generated(s):
    assert all(_assert_order(s).values())


@given(shuffled())
def test_order_on_shuffled(s):
    _assert_order(s)


@given(mutated(min_ranks=2, max_ranks=3, max_microbatches=4))
def test_order_on_mutants(m):
    _assert_order(m.schedule)


def test_order_strict_and_gloo_matches_the_measured_rule():
    mod, schedules = _corpus()
    seen = set()
    disagree = []
    for s in schedules:
        t = _assert_order(s)
        seen.add(tuple(t[m] for m in ORDER))
        if t["gloo"] != mod.gloo_terminates(s):
            disagree.append(s.name)
    assert not disagree, disagree[:5]
    # every model is distinct from the next on this corpus
    assert (False, True, True, True) in seen
    assert (False, False, True, True) in seen
    assert (False, False, False, True) in seen


def _witness_of(s: Schedule, model: str) -> list[tuple[int, int]]:
    m = Machine(s, model)
    order = []
    progress = True
    while progress:
        progress = False
        for r in range(s.num_ranks):
            while m.pc[r] < len(s.actions[r]) and m.can_begin(r)[0]:
                order.append((r, m.pc[r]))
                m.post(r, m.pc[r])
                progress = True
    return order


@pytest.mark.parametrize("model", ORDER)
def test_witnesses_of_maximal_executions(model):
    _mod, schedules = _corpus(40, 2)
    checked = 0
    for s in schedules:
        if not certificate.terminates(s, model):
            continue
        w = _witness_of(s, model)
        assert certificate.check_witness(s, model, w) == (True, ""), s.name
        # the last entry of a rank moved to the front is not a witness
        r, k = next((r, k) for r, k in reversed(w) if k > 0)
        bad = [(r, k)] + [e for e in w if e != (r, k)]
        assert not certificate.check_witness(s, model, bad)[0]
        checked += 1
    assert checked > 10


def test_unknown_model_is_a_rejection_naming_the_models():
    s = load_schedule(str(ROOT / "specs" / "examples" / "1f1b.json"))
    ok, why = certificate.check_witness(s, "mpi", [])
    assert not ok and "nccl-pairs" in why and "gloo" in why
    ok, why = certificate.check_deadlock(s, "mpi", None)
    assert not ok and "eager" in why


# ---- the engines against the certificate checker, per model


def _engine_vs_certificate(s: Schedule) -> None:
    for m in ORDER:
        r = check(s, comm_model=m, engine="graph")
        st = r.result_of(PropertyId.DEADLOCK_FREE).status
        if st is Status.NOT_CHECKED:
            continue
        assert st in (Status.HOLDS, Status.FAILS), (s.name, m, st, r.violations)
        assert r.certificate.accepted, (s.name, m, str(r.certificate))
        assert (st is Status.HOLDS) == certificate.terminates(r.schedule, m), (s.name, m)


@pytest.mark.parametrize("path", EXAMPLES + sorted((ROOT / "specs" / "examples" / "broken").glob("*.json")),
                         ids=lambda p: p.stem)
def test_engine_and_certificate_agree_on_examples(path):
    _engine_vs_certificate(load_schedule(str(path)))


@pytest.mark.parametrize("family", ["gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zbv", "dualpipe",
                                    "dualpipev", "interleaved-zb", "looped-bfs"])
def test_engine_and_certificate_agree_on_families(family):
    for R, M in ((2, 4), (3, 6), (4, 8)):
        try:
            s = generate(family, R, M)
        except ScheduleError:
            continue
        _engine_vs_certificate(s)


@given(shuffled(max_ranks=4, max_microbatches=4))
def test_engine_and_certificate_agree_on_shuffled(s):
    _engine_vs_certificate(s)


@given(mutated(min_ranks=2, max_ranks=3, max_microbatches=4))
def test_engine_and_certificate_agree_on_mutants(m):
    _engine_vs_certificate(m.schedule)


def test_engine_and_certificate_agree_on_the_conformance_corpus():
    _mod, schedules = _corpus(40, 4)
    for s in schedules:
        _engine_vs_certificate(s)

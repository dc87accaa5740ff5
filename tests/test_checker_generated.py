"""Every generator output verifies: DualPipe and DualPipeV at 2..16 ranks under
nccl (DeepSeek runs them on NCCL every day: a refutation would mean the model
or the generator is wrong), and every family over a parameter grid under both
models.

Not covered: broken schedules (test_checker.py, test_checker_properties.py).
"""

from __future__ import annotations

import pytest

from verifier.check.checker import Verdict, check
from verifier.generators import FAMILIES, generate
from verifier.ir import ScheduleError


@pytest.mark.parametrize("family", ["dualpipe", "dualpipev"])
@pytest.mark.parametrize("ranks", [2, 4, 8, 16])
def test_deepseek_schedules_verify_under_nccl(family, ranks):
    for M in (2 * ranks, 2 * ranks + 2, 4 * ranks):
        s = generate(family, ranks, M)
        r = check(s, "nccl", "graph")
        assert r.verdict is Verdict.VERIFIED, [v.message for v in r.violations]
        assert r.certificate.accepted
        assert len(r.witness) == s.num_actions


@pytest.mark.parametrize("family", ["dualpipe", "dualpipev"])
@pytest.mark.parametrize("ranks", [2, 4])
def test_deepseek_schedules_z3(family, ranks):
    r = check(generate(family, ranks, 2 * ranks), "nccl", "z3")
    assert r.verdict is Verdict.VERIFIED and r.certificate.accepted


GRID = [(R, M) for R in (1, 2, 3, 4, 5) for M in (1, 2, 3, 4, 6, 8, 10)]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_verifies_over_a_grid(family):
    checked = 0
    for R, M in GRID:
        for chunks in ((1, 2, 3) if family == "interleaved-1f1b" else (None,)):
            for compute_only in (False, True):
                try:
                    s = generate(family, R, M, num_chunks=chunks, compute_only=compute_only)
                except ScheduleError:
                    continue  # the family's own parameter rules
                for model in ("nccl", "eager"):
                    r = check(s, model, "graph")
                    assert r.verdict is Verdict.VERIFIED, (
                        family, R, M, chunks, compute_only, model, [v.message for v in r.violations])
                    checked += 1
    assert checked >= 8

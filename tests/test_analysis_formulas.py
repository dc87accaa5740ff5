"""The published bubble and memory formulas, reproduced from generated schedules.

The DualPipe README table (with PP the number of pipeline stages of one
micro-batch's route):

    1F1B       bubble (PP-1)(F+B)            activation PP
    ZB1P       bubble (PP-1)(F+B-2W)         activation PP     (our zb-h1)
    DualPipe   bubble (PP/2-1)(F&B+B-3W)     activation PP+1   (PP = ranks)
    DualPipeV  bubble (PP/2-1)(F&B+B-3W)     activation PP+1   (PP = 2 x ranks)

What "bubble" means there, and here: the idle time of a rank, makespan minus
the time the rank computes, an overlapped F&B counted once for its F&B time.
In the README figure (F = I = W = 1, B = 2, F&B = 3) every rank of DualPipe 8 x
20 is idle for 6 = 3 x (3 + 2 - 3) cells; our replay gives 6 on every rank.
The tests compare the formula with the largest per-rank bubble of the ASAP
timeline (for 1F1B and ZB-H1 every rank has the same bubble).

Activation units (verifier.semantics.memory): one stage's activation for one
micro-batch. A DualPipe stage is 1/PP of the model, like a 1F1B stage, so PP+1
and PP compare directly; a DualPipeV stage is 1/PP of the model with PP = 2R
stages on R ranks, so its PP+1 is in units of half a 1F1B-on-R-ranks stage.

Where the formulas hold (found by these tests; see the report):

- 1F1B: for every cost and size tried, under ``eager`` (the shared lowering's
  communication). Under ``nccl`` too, since the shared lowering posts messages
  in the order of an as-soon-as-possible reference execution (an earlier
  lowering that used a round-robin order gave 28, not 21, at 8 ranks).
- ZB-H1: exactly when W <= min(F, I). In general the ASAP bubble is
  (PP-1) * max(F+I-W, F, I), which is the formula when W <= min(F, I).
- DualPipe / DualPipeV: exactly when I = F (with max(F, B) <= F&B <= F+B), as in
  the README figure. With I != F the formula is off in both directions (pinned
  below); DualPipe on R ranks and DualPipeV on R/2 ranks always have the same
  per-rank bubbles (the cut-in-half construction).
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from verifier.analysis.timeline import analyze, published_bubble
from verifier.analysis.costs import parse_kv
from verifier.generators import generate

GENERAL = ["F=1,B=2,W=0.5", "F=1.5,B=2.5,W=1", "F=1,B=2,W=1", "F=2,B=3,W=0.25,comm=0"]
# I = F (the README figure and two others), W < B
DUALPIPE_COSTS = ["F=1,I=1,W=1,FB=3", "F=1,I=1,W=0.5,FB=2", "F=2,I=2,W=0.5,FB=3.5",
                  "F=1,I=1,W=0.25,FB=1.75"]
RANKS = (4, 8, 16)


def _bubbles(s, costs, model):
    a = analyze(s, parse_kv(costs), model)
    assert not a.deadlocked, a.stuck[:2]
    return a, [r.bubble for r in a.ranks]


@pytest.mark.parametrize("R", RANKS)
@pytest.mark.parametrize("mult", [1, 2, 3])
@pytest.mark.parametrize("costs", GENERAL)
def test_1f1b_bubble_is_pp_minus_1_times_f_plus_b(R, mult, costs):
    M = mult * R + (mult - 1)
    for compute_only in (False, True):
        s = generate("1f1b", R, M, compute_only=compute_only)
        a, b = _bubbles(s, costs, "eager")
        c = parse_kv(costs).default
        assert published_bubble("1f1b", R, parse_kv(costs)) == (R - 1) * (c.F + c.B)
        assert b == [pytest.approx((R - 1) * (c.F + c.B))] * R
        assert max(r.peak_activations for r in a.ranks) == min(R, M)
        assert a.ranks[0].peak_activations == min(R, M)


def test_1f1b_formula_under_nccl_at_4_ranks():
    s = generate("1f1b", 4, 12)
    _, b = _bubbles(s, "F=1,B=2,W=0.5", "nccl")
    assert b == [9.0] * 4


@pytest.mark.parametrize("family,R,expected", [
    ("1f1b", 8, 21.0), ("1f1b", 16, 45.0), ("gpipe", 16, 45.0), ("zb-h1", 16, 30.0),
])
def test_single_direction_formulas_under_nccl(family, R, expected):
    """(PP-1)(F+B) for 1F1B/GPipe, (PP-1)(F+B-2W) for ZB-H1, under the strict model too."""
    s = generate(family, R, 2 * R + 4)
    _, b = _bubbles(s, "F=1,B=2,W=0.5", "nccl")
    assert max(b) == expected


@pytest.mark.parametrize("R", RANKS)
@pytest.mark.parametrize("mult", [1, 2, 3])
@pytest.mark.parametrize("costs", GENERAL)
def test_zb_h1_bubble_is_pp_minus_1_times_f_plus_b_minus_2w(R, mult, costs):
    c = parse_kv(costs).default
    assert c.W <= min(c.F, c.I)  # the zero-bubble paper's assumption
    M = mult * R + (mult - 1)
    s = generate("zb-h1", R, M)
    a, b = _bubbles(s, costs, "eager")
    expect = (R - 1) * (c.F + c.B - 2 * c.W)
    assert published_bubble("zb-h1", R, parse_kv(costs)) == pytest.approx(expect)
    assert b == [pytest.approx(expect)] * R
    assert max(r.peak_activations for r in a.ranks) == min(R, M)


@given(F=st.sampled_from([0.5, 1.0, 2.0]), I=st.sampled_from([0.5, 1.0, 1.5, 3.0]),
       W=st.sampled_from([0.25, 1.0, 2.0]), R=st.sampled_from([2, 4, 8]),
       extra=st.integers(0, 5))
def test_zb_h1_general_bubble(F, I, W, R, extra):  # noqa: E741
    """ASAP bubble of ZB-H1 for any costs: (PP-1) * max(F+I-W, F, I)."""
    s = generate("zb-h1", R, R + extra)
    _, b = _bubbles(s, f"F={F},I={I},W={W}", "eager")
    assert b == [pytest.approx((R - 1) * max(F + I - W, F, I))] * R


@pytest.mark.parametrize("R", RANKS)
@pytest.mark.parametrize("extra", [0, 2, 2 * 16])
@pytest.mark.parametrize("costs", DUALPIPE_COSTS)
@pytest.mark.parametrize("model", ["nccl", "eager"])
def test_dualpipe_bubble_when_i_equals_f(R, extra, costs, model):
    M = 2 * R + extra
    cm = parse_kv(costs)
    c = cm.default
    assert c.I == c.F and c.W < c.B
    s = generate("dualpipe", R, M)
    a, b = _bubbles(s, costs, model)
    expect = (R / 2 - 1) * (c.FB + c.B - 3 * c.W)
    assert published_bubble("dualpipe", R, cm) == pytest.approx(expect)
    assert max(b) == pytest.approx(expect)
    if c.FB == c.F + c.B:  # as in the README figure: every rank is idle that long
        assert b == [pytest.approx(expect)] * R
    # activations: PP+1 (PP = R stages of 1/PP of the model each)
    assert max(r.peak_activations for r in a.ranks) == R + 1
    assert all(r.param_copies == 2 for r in a.ranks)


@pytest.mark.parametrize("R", RANKS)
@pytest.mark.parametrize("extra", [0, 3, 2 * 16])
@pytest.mark.parametrize("costs", DUALPIPE_COSTS)
def test_dualpipev_bubble_when_i_equals_f(R, extra, costs):
    M = 2 * R + extra
    cm = parse_kv(costs)
    c = cm.default
    PP = 2 * R
    s = generate("dualpipev", R, M)
    a, b = _bubbles(s, costs, "nccl")
    expect = (PP / 2 - 1) * (c.FB + c.B - 3 * c.W)
    assert published_bubble("dualpipev", R, cm) == pytest.approx(expect)
    assert max(b) == pytest.approx(expect)
    assert max(r.peak_activations for r in a.ranks) == PP + 1


def test_readme_figure_dualpipe_8x20_every_rank_idle_6():
    a, b = _bubbles(generate("dualpipe", 8, 20), "F=1,I=1,W=1,FB=3", "nccl")
    assert b == [6.0] * 8 and a.makespan == 66


@pytest.mark.parametrize("costs, R, measured, formula", [
    # I > F: the formula overestimates
    ("F=1,I=1.5,W=0.5,FB=3", 8, 9.5, 10.5),
    ("F=1,I=1.5,W=0.5,FB=3", 16, 23.5, 24.5),
    # I < F: the formula underestimates
    ("F=1,I=0.5,W=0.25,FB=1.75", 8, 7.25, 5.25),
    ("F=1,I=0.5,W=0.25,FB=1.75", 16, 16.25, 12.25),
])
def test_dualpipe_formula_is_off_when_i_differs_from_f(costs, R, measured, formula):
    cm = parse_kv(costs)
    _, b = _bubbles(generate("dualpipe", R, 2 * R + 4), costs, "nccl")
    assert published_bubble("dualpipe", R, cm) == pytest.approx(formula)
    assert max(b) == pytest.approx(measured)
    assert max(b) != pytest.approx(formula)


@pytest.mark.parametrize("R", [4, 8, 16])
@pytest.mark.parametrize("costs", ["F=1,I=1.5,W=0.5,FB=2.6", "F=1,I=0.6,W=0.3,FB=1.5",
                                   "F=1,I=1,W=1,FB=3"])
def test_dualpipe_and_dualpipev_half_the_ranks_have_equal_bubbles(R, costs):
    """DualPipeV is DualPipe "cut in half": the same bubbles on half the ranks."""
    _, b_dp = _bubbles(generate("dualpipe", R, 4 * R), costs, "nccl")
    _, b_v = _bubbles(generate("dualpipev", R // 2, 4 * R), costs, "nccl")
    assert b_dp[: R // 2] == pytest.approx(b_v)
    assert b_dp == pytest.approx(b_dp[::-1])  # DualPipe is symmetric

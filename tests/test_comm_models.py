"""The communication models as data (verifier.semantics.comm) and the tables
that apply them (verifier.semantics.tables): the registry, the order between
models, and each model's streams on small schedules.

Not covered here: the engines' verdicts per model (tests/test_model_order.py).
"""

from __future__ import annotations

import pytest

from verifier.generators import generate
from verifier.ir import Batch, Comm, CommKind, Compute, ComputeKind, Route, Schedule, Stage
from verifier.semantics import comm
from verifier.semantics.comm import GROUP_STREAM, MODELS, NAMES, CommModel, SendRule, StreamRule
from verifier.semantics.tables import Tables, tables_of, forget


def test_registry_names_and_order():
    assert NAMES == ("nccl", "nccl-pairs", "gloo", "eager")
    assert comm.DEFAULT == "nccl"
    assert all(MODELS[n].name == n for n in NAMES)
    # strictest first: each model implies every later one and none earlier
    for i, a in enumerate(NAMES):
        for j, b in enumerate(NAMES):
            assert comm.implies(a, b) is (i <= j)


def test_rules_as_fields():
    m = MODELS
    assert [m[n].send for n in NAMES] == [SendRule.RENDEZVOUS] * 3 + [SendRule.BUFFERED]
    assert [m[n].stream for n in NAMES] == [StreamRule.RANK, StreamRule.PAIR, StreamRule.NONE, StreamRule.NONE]
    assert m["nccl"].stream_of(True, 3) == m["nccl"].stream_of(False, 3) == 0
    assert m["nccl-pairs"].stream_of(False, 3) == 3 and m["nccl-pairs"].stream_of(True, 3) == GROUP_STREAM
    assert m["gloo"].stream_of(False, 3) is None


def test_bad_model_and_name():
    with pytest.raises(ValueError, match="nccl, nccl-pairs, gloo, eager"):
        comm.model("mpi")
    with pytest.raises(ValueError, match="one lower-case word"):
        CommModel("Two Words", SendRule.BUFFERED, StreamRule.NONE, "", "")
    with pytest.raises(ValueError, match="SendRule"):
        CommModel("x", "buffered", StreamRule.NONE, "", "")  # type: ignore[arg-type]


def _three_ranks() -> Schedule:
    """Rank 1 talks to ranks 0 and 2: plain ops to each and one BATCH."""
    S, RF, SB, RB, F, B = CommKind.SEND_F, CommKind.RECV_F, CommKind.SEND_B, CommKind.RECV_B, ComputeKind.F, ComputeKind.B
    acts = (
        (Compute(F, 0, 0), Comm(S, 0, 0), Comm(RB, 0, 0), Compute(B, 0, 0)),
        (Comm(RF, 1, 0), Compute(F, 1, 0), Comm(S, 1, 0),
         Batch((Comm(RB, 1, 0),), wait=True), Compute(B, 1, 0), Comm(SB, 1, 0)),
        (Comm(RF, 2, 0), Compute(F, 2, 0), Compute(B, 2, 0), Comm(SB, 2, 0)),
    )
    return Schedule(3, 1, tuple(Stage(i, i, i) for i in range(3)), (Route((0, 1, 2), (0,)),), acts)


def test_streams_per_model():
    s = _three_ranks()
    t = Tables(s)
    # units in rank then post order: r0: 0 SEND_F, 1 RECV_B; r1: 2 RECV_F, 3 SEND_F, 4 BATCH, 5 SEND_B; r2: 6, 7
    assert t.unit_rank == [0, 0, 1, 1, 1, 1, 2, 2]
    assert t.peer[:2] == [1, 1] and t.peer[2:6] == [0, 2, 2, 0]
    nccl = t.streams(MODELS["nccl"])
    assert nccl.units == t.runits and nccl.of_unit == t.unit_rank
    pairs = t.streams(MODELS["nccl-pairs"])
    # rank 1: the pair stream to 0 holds units 2 and 5, to 2 unit 3, the group stream the BATCH
    got = {tuple(u) for u in pairs.units}
    assert {(2, 5), (3,), (4,)} <= got and (0, 1) in got and (6, 7) in got
    assert pairs.pos[5] == 1 and pairs.pos[4] == 0
    assert t.streams(MODELS["gloo"]).of_unit is None
    assert t.streams(MODELS["nccl-pairs"]) is pairs  # memoised per rule


def test_tables_memo_is_by_identity():
    s = generate("1f1b", 2, 2)
    t = tables_of(s)
    assert tables_of(s) is t
    s2 = generate("1f1b", 2, 2)
    assert tables_of(s2) is not t
    forget()
    assert tables_of(s2) is not t


def test_second_wait_is_a_field():
    assert [n for n in NAMES if MODELS[n].second_wait_blocks] == ["gloo"]


# the modules that apply a model: they read its fields and never compare its
# name (adding a model is one definition in verifier/semantics/comm.py)
ENGINES = ("verifier/check/hbgraph.py", "verifier/semantics/tables.py", "verifier/check/encoding.py",
           "verifier/check/smt.py", "verifier/check/z3engine.py", "verifier/analysis/replay.py",
           "verifier/check/program/replay.py", "verifier/check/program/fast.py", "verifier/check/checker.py")


def test_engines_never_compare_a_model_name():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for rel in ENGINES:
        path = root / rel
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            for c in ast.walk(node):
                if isinstance(c, ast.Constant) and c.value in NAMES:
                    found.append(f"{rel}:{node.lineno} compares with {c.value!r}")
    assert found == []

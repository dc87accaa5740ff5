"""The schedule model, the JSON format and the lowering pass (the shared foundation)."""

import io
import json

import pytest

from verifier.format.io import dumps_json, load_schedule, parse_json_text, schedule_to_dict
from verifier.ir import (
    B,
    Batch,
    Comm,
    Compute,
    F,
    I,
    Overlap,
    Route,
    Schedule,
    ScheduleError,
    Stage,
    W,
    RECV_B,
    RECV_F,
    SEND_B,
    SEND_F,
)
from verifier.semantics.lowering import lower, strip_communication
from verifier.semantics.memory import peak_activations


def two_rank_1f1b() -> Schedule:
    stages = (Stage(0, 0, 0), Stage(1, 1, 1))
    r0 = (Compute(F, 0, 0), Compute(F, 0, 1), Compute(B, 0, 0), Compute(B, 0, 1))
    r1 = (Compute(F, 1, 0), Compute(B, 1, 0), Compute(F, 1, 1), Compute(B, 1, 1))
    return Schedule(2, 2, stages, (Route((0, 1), (0, 1)),), (r0, r1), name="t")


def dualpipe_shape() -> Schedule:
    """Two routes over two ranks with tied stages (DualPipe's placement)."""
    stages = (Stage(0, 0, 0), Stage(1, 1, 1), Stage(2, 1, 0), Stage(3, 0, 1))
    routes = (Route((0, 1), (0,)), Route((2, 3), (1,)))
    r0 = (Compute(F, 0, 0), Overlap(Compute(F, 3, 1), Compute(I, 0, 0)), Compute(W, 0, 0), Compute(B, 3, 1))
    r1 = (Compute(F, 2, 1), Compute(F, 1, 0), Compute(B, 1, 0), Compute(B, 2, 1))
    return Schedule(2, 2, stages, routes, (r0, r1), family="dualpipe")


def test_route_navigation_and_ties():
    s = dualpipe_shape()
    assert s.next_stage(0) == 1 and s.prev_stage(1) == 0 and s.next_stage(1) is None
    assert s.next_stage(2) == 3 and s.prev_stage(2) is None
    assert s.tied_layers == {0: (0, 2), 1: (1, 3)}
    assert s.stages_on_rank == ((0, 3), (1, 2))
    assert s.peer_of(Comm(SEND_F, 2, 1)) == 0
    assert s.matching_op(Comm(SEND_B, 3, 1)) == Comm(RECV_B, 2, 1)
    assert s.matching_op(Comm(RECV_F, 0, 0)) is None  # first stage: nothing upstream


def test_json_round_trip_is_exact():
    for s in (two_rank_1f1b(), dualpipe_shape(), lower(two_rank_1f1b()), lower(dualpipe_shape())):
        text = dumps_json(s)
        back = parse_json_text(text)
        assert back == s
        assert dumps_json(back) == text
        assert json.loads(text) == schedule_to_dict(s)


def test_lowering_places_sends_after_and_receives_before():
    low = lower(two_rank_1f1b())
    r0, r1 = low.actions
    assert r0[1] == Batch((Comm(SEND_F, 0, 0),), wait=False)
    assert r0[3] == Batch((Comm(SEND_F, 0, 1), Comm(RECV_B, 0, 0)), wait=False)
    assert r1[0] == Batch((Comm(RECV_F, 1, 0),), wait=False)
    # RECV_F(1, 1)'s data (F(0, 1)) is produced before SEND_B(1, 0)'s (B(1, 0)) in the
    # reference execution, so every rank posts it first
    assert r1[3] == Batch((Comm(RECV_F, 1, 1), Comm(SEND_B, 1, 0)), wait=False)
    assert strip_communication(low) == two_rank_1f1b()
    with pytest.raises(ScheduleError, match="already has communication"):
        lower(low)


def test_lowering_skips_same_rank_neighbours():
    # a V: stage 0 on rank 0, stage 1 on rank 0 (the turn), no message between them
    stages = (Stage(0, 0, 0), Stage(1, 0, 1))
    acts = ((Compute(F, 0, 0), Compute(F, 1, 0), Compute(B, 1, 0), Compute(B, 0, 0)),)
    s = Schedule(1, 1, stages, (Route((0, 1), (0,)),), acts)
    assert lower(s) == s


def test_peak_activations_counts_overlap_forward_before_backward():
    s = dualpipe_shape()
    # rank 0: F0 (1), OVERLAP(F3 & I0) -> 2 at once, then 1; W keeps nothing; B3 -> 0
    assert peak_activations(s) == [2.0, 2.0]


def test_construction_rejects_shape_errors():
    with pytest.raises(ScheduleError, match="num_ranks is 3"):
        Schedule(3, 1, (Stage(0, 0, 0),), (Route((0,), (0,)),), ((), ()))


@pytest.mark.parametrize(
    "mutate, where, what",
    [
        (lambda d: d.pop("routes"), "$", "missing required key 'routes'"),
        (lambda d: d.update(version="2.0"), "$.version", "expected '1.0', got '2.0'"),
        (lambda d: d["actions"][1].__setitem__(0, {"op": "F", "stage": 1}), "rank 1 step 0", "missing required key 'mb'"),
        (lambda d: d["actions"][0][2].update(mb=True), "$.actions[0][2].mb", "expected integer, got true"),
        (lambda d: d["stages"][0].update(rank=-4), "$.stages[0].rank", "must be >= 0, got -4"),
        (lambda d: d["actions"][0][1].update(op="BATCH"), "rank 0 step 1", "missing required key 'ops'"),
        (lambda d: d.update(extra=1), "$", "unknown key 'extra'"),
        (lambda d: d["actions"].pop(), "$.actions", "num_ranks is 2"),
    ],
)
def test_bad_documents_name_place_and_value(mutate, where, what):
    d = schedule_to_dict(two_rank_1f1b())
    mutate(d)
    with pytest.raises(ScheduleError) as e:
        parse_json_text(json.dumps(d), "bad.json")
    msg = str(e.value)
    assert msg.startswith("bad.json: ") and where in msg and what in msg and "\n" not in msg


def test_load_schedule_file_errors(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ScheduleError, match="nope.json: no such file"):
        load_schedule(missing)
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\x89PNG\x00\x01")
    with pytest.raises(ScheduleError, match="junk.json: binary data"):
        load_schedule(junk)
    trunc = tmp_path / "t.json"
    trunc.write_text(dumps_json(two_rank_1f1b())[:200])
    with pytest.raises(ScheduleError, match=r"t.json: invalid JSON at line \d+ column \d+"):
        load_schedule(trunc)
    good = tmp_path / "good.json"
    good.write_text(dumps_json(two_rank_1f1b()))
    assert load_schedule(good) == two_rank_1f1b()


def _slow_accepts(doc) -> bool:
    from verifier.format.schema import SchemaViolation, compiled_validator

    try:
        compiled_validator()(doc, lambda: "$")
        return True
    except SchemaViolation:
        return False


def test_generated_validator_agrees_with_the_reporting_one():
    """The hot-path (generated source) and the error-reporting validator give one verdict."""
    import random

    from verifier.generators import generate
    from verifier.format.schema import is_valid

    rng = random.Random(7)
    base = schedule_to_dict(generate("dualpipe", 2, 4))
    junk = [None, True, 1.5, -1, 10**9, "F", "OVERLAP", [], {}, {"op": "F"}, 2.0]
    verdicts = set()
    for _ in range(600):
        d = json.loads(json.dumps(base))
        node, parent, key = d, d, None
        for _ in range(rng.randint(1, 5)):  # walk somewhere into the document
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            k, child = rng.choice(children)
            parent, key = node, k
            if not isinstance(child, (dict, list)) or not child or rng.random() < 0.3:
                break
            node = child
        if isinstance(parent, dict) and rng.random() < 0.2:
            parent.pop(key)
        else:
            parent[key] = rng.choice(junk)
        fast = is_valid(d)
        assert fast == _slow_accepts(d), (fast, d)
        verdicts.add(fast)
    assert verdicts == {True, False}  # both kinds of document were exercised


def _parts(a):
    """An action and every IR object inside it."""
    yield a
    if isinstance(a, Overlap):
        yield a.f
        yield a.b
    elif isinstance(a, Batch):
        yield from a.ops


def test_loader_builds_the_same_objects_as_the_constructors():
    """verifier.format.io builds actions with object.__new__ and the slots' setters
    (ir._field_setters), not the constructors: the objects must be the same in
    every way the rest of the project can see."""
    from verifier.generators import FAMILIES, generate

    hand = dualpipe_shape()
    hand = hand.with_actions(  # a bare Comm action and both kinds of Batch
        [hand.actions[0] + (Comm(SEND_F, 0, 0), Batch((Comm(RECV_B, 0, 0),), wait=True)),
         hand.actions[1] + (Batch((Comm(RECV_F, 1, 0), Comm(SEND_B, 1, 0)), wait=False),)]
    )
    schedules = [hand] + [
        generate(f, 4, 8, compute_only=c) for f in FAMILIES for c in (True, False)
    ]
    for s in schedules:
        back = parse_json_text(dumps_json(s))
        assert back == s
        _assert_same_objects(back.actions, s.actions)


def test_csv_loader_builds_the_same_objects_as_the_constructors():
    """verifier.format.csvio builds plain rows' actions as a slot twin given its class
    (ir._slot_twin), not with the constructors: the same checks as for JSON."""
    from verifier.format.csvio import csv_to_schedule, flatten_batches, schedule_to_csv
    from verifier.generators import generate
    from verifier.semantics.lowering import lower

    for family in ("1f1b", "zbv", "dualpipev"):
        compute_only = generate(family, 4, 8, compute_only=True)
        for s in (compute_only, flatten_batches(lower(compute_only))):
            back = csv_to_schedule(schedule_to_csv(s))
            _assert_same_objects(back.actions, s.actions)


def test_slot_twin_only_for_classes_of_one_layout():
    from dataclasses import dataclass

    from verifier.ir import _slot_twin

    @dataclass(frozen=True, slots=True)
    class Other:
        kind: int
        mb: int
        stage: int

    twin = _slot_twin(Compute, Comm)
    o = twin()
    o.kind, o.stage, o.mb = F, 1, 2
    o.__class__ = Compute
    assert type(o) is Compute and o == Compute(F, 1, 2)
    with pytest.raises(TypeError):
        _slot_twin(Compute, Other)  # other fields (order matters: they are slots)
    with pytest.raises(TypeError):
        _slot_twin(Compute, Batch)
    with pytest.raises(TypeError):
        _slot_twin(Schedule)  # not a frozen slotted dataclass
    with pytest.raises(TypeError):
        o.__class__ = Batch  # CPython checks the layout at every assignment


def _assert_same_objects(back, want) -> None:
    """The actions ``back`` (rank -> actions) are the same objects as ``want``'s
    in every way the rest of the project can see."""
    import copy
    import dataclasses
    import pickle

    assert back == want and hash(back) == hash(want)
    assert type(back) is tuple and all(type(acts) is tuple for acts in back)
    for mine, theirs in zip((a for acts in back for a in acts),
                            (a for acts in want for a in acts)):
        for x, y in zip(_parts(mine), _parts(theirs), strict=True):
            assert type(x) is type(y)
            assert x == y and hash(x) == hash(y) and repr(x) == repr(y) and str(x) == str(y)
            assert dataclasses.astuple(x) == dataclasses.astuple(y)
            for f in dataclasses.fields(x):
                assert type(getattr(x, f.name)) is type(getattr(y, f.name)), f.name
            assert not hasattr(x, "__dict__")
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(x, dataclasses.fields(x)[0].name, None)
            with pytest.raises(dataclasses.FrozenInstanceError):
                delattr(x, dataclasses.fields(x)[-1].name)
            assert dataclasses.replace(x) == x
            assert pickle.loads(pickle.dumps(x)) == x and copy.deepcopy(x) == x


def test_field_setters_only_for_frozen_slotted_dataclasses_without_post_init():
    from dataclasses import dataclass

    from verifier.ir import _field_setters

    @dataclass(slots=True)
    class Mutable:
        a: int

    assert len(_field_setters(Compute)) == 3 and len(_field_setters(Batch)) == 2
    for cls in (Schedule, Mutable, int):  # __post_init__ and no slots; not frozen; no dataclass
        with pytest.raises(TypeError):
            _field_setters(cls)

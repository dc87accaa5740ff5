"""The fast path of reading recorded programs (verifier.format.program_fast)
held against the reference path (schema validator, document checks, builder).

For every document: if the fast path builds a Program, the reference accepts
the document and builds an equal one (same classes, same values); whatever the
fast path does, ``program_from_dict`` accepts and refuses exactly what the
reference does, with the same message. Inputs: well-formed documents with every
op kind and optional key, each of them mutated at every place (a key dropped or
added, each value replaced by each of a palette of JSON values: wrong types,
bounds and one past them, null), and hypothesis combining several mutations.
Also: the fast path is on (schema and IR are the ones it was written for), and
turns itself off when either changes.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from programs_util import batch, coll, p2p, program, wait, where
from verifier.errors import ScheduleError
from verifier.format import program_fast
from verifier.format.program import (
    dumps_program,
    parse_program_text,
    program_from_dict,
    reference_program_from_dict,
)
from verifier.format.schedule_program import program_from_schedule
from verifier.format.schema import load_schema
from verifier.generators import generate


def rich_document() -> dict:
    """Every op kind, every optional key present somewhere and absent elsewhere."""
    entry = p2p("isend", 1, 0, handle=3, payload=("F", 0, 1), top=False)
    entry_where = dict(p2p("irecv", 1, 0, handle=4, shape=(), top=False), where=where(7), returned=False)
    r0 = [
        p2p("send", 1, 1, payload=("B", 2, 3)),
        p2p("isend", 1, 2, handle=0, dtype="float32"),
        wait(0, 3),
        batch(4, entry, entry_where),
        {"op": "is_completed", "handle": 3, "result": False, "where": where(5), "returned": True},
        wait(3, 6, returned=False),
        wait(4, 6),
        {"op": "compute", "kind": "W", "stage": 0, "mb": 7, "where": {"file": "t.py", "line": 8},
         "returned": True},
        dict(coll("all_reduce", 9), shape=[2, 3], dtype="float32"),
        coll("barrier", 10, group=1),
    ]
    r1 = [
        dict(p2p("recv", 0, 1), tag=-5),
        p2p("irecv", 0, 2, handle=0),
        wait(0, 3),
        batch(4, p2p("irecv", 0, 0, handle=1, top=False), p2p("isend", 0, 0, handle=2, top=False)),
        wait(1, 5),
        wait(2, 5),
        {"op": "compute", "kind": "F", "stage": 1, "mb": 0, "where": where(8), "returned": True},
        dict(coll("all_reduce", 9), shape=[2, 3], dtype="float32"),
        coll("barrier", 10, group=1),
    ]
    doc = program(r0, r1, groups=[{"id": 0, "ranks": [0, 1], "name": "world"}, {"id": 1, "ranks": [1, 0]}],
                  outcomes={1: "hung"}, errors={1: "stuck in recv"}, recorded={"command": ["x"], "n": 2})
    doc["name"] = "rich"
    del doc["ranks"][0]["outcome"]
    del doc["ranks"][0]["error"]
    return doc


def documents() -> list[dict]:
    docs = [rich_document(), program([], [wait(0, 1)])]
    for name, ranks, mbs in (("1f1b", 2, 3), ("dualpipev", 4, 8), ("zbv", 2, 4)):
        docs.append(json.loads(dumps_program(program_from_schedule(generate(name, ranks, mbs)))))
    return docs


def outcome(f, doc):
    """What ``f(doc)`` gives: the Program, or the refusal's message."""
    try:
        return f(copy.deepcopy(doc))
    except ScheduleError as e:
        return f"ScheduleError: {e}"


def same_program(a, b) -> bool:
    """Equal, and the same classes all the way down (dataclass equality checks the class at each level)."""
    return a == b and type(a) is type(b)


def agree(doc) -> None:
    ref = outcome(reference_program_from_dict, doc)
    fast = program_fast.build(copy.deepcopy(doc))
    if fast is not None:
        assert not isinstance(ref, str), f"fast path accepted what the reference refuses: {ref}"
        assert same_program(fast, ref)
    got = outcome(program_from_dict, doc)
    assert got == ref if isinstance(ref, str) else same_program(got, ref)


def test_the_fast_path_is_on():
    assert program_fast.schema_fingerprint() == program_fast.SCHEMA_FINGERPRINT, (
        "the program part of the schema changed: update verifier/format/program_fast.py to it, "
        "then SCHEMA_FINGERPRINT")
    assert program_fast.enabled()


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d.get("name", "doc"))
def test_the_fast_path_builds_what_the_reference_builds(doc):
    fast = program_fast.build(copy.deepcopy(doc))
    assert fast is not None  # the common shapes take the fast path
    assert same_program(fast, reference_program_from_dict(copy.deepcopy(doc)))


PALETTE = [None, True, False, 0, 1, -1, 2, 1.0, 0.5, "", "x", "F", "isend", "wait", [], [0], [1, 1], ["a"],
           {}, {"file": "f", "line": 1}, 100_000, 100_001, 10_000_000, 10_000_001, 100_000_000, 100_000_001,
           10**12, 10**12 + 1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, "send", "batch", "finished"]


def places(x, path=()):
    """Every (path, container) below ``x``: the paths of every value in it."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield path + (k,)
            yield from places(v, path + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield path + (i,)
            yield from places(v, path + (i,))


def at(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def mutations(doc):
    """Each single change: a value replaced (palette), a key dropped or added, a list item dropped or doubled."""
    for path in places(doc):
        parent, last = at(doc, path[:-1]), path[-1]
        for value in PALETTE:
            d = copy.deepcopy(doc)
            at(d, path[:-1])[last] = copy.deepcopy(value)
            yield d
        d = copy.deepcopy(doc)
        del at(d, path[:-1])[last]
        yield d
        if isinstance(parent, list):
            d = copy.deepcopy(doc)
            at(d, path[:-1]).insert(last, copy.deepcopy(parent[last]))
            yield d
        if isinstance(at(doc, path), dict):
            for key in ("extra", "where", "handle", "tag", "payload", "function", "returned", "name", "error"):
                d = copy.deepcopy(doc)
                at(d, path)[key] = 1
                yield d


def test_every_single_mutation_of_a_rich_document_agrees():
    n = refused = 0
    for d in mutations(rich_document()):
        agree(d)
        n += 1
        refused += isinstance(outcome(reference_program_from_dict, d), str)
    assert n > 3000 and refused > n // 2  # the mutations reach the refusals


class Str(str):
    pass


class Int(int):
    pass


@pytest.mark.parametrize("path, value", [
    (("ranks", 0, "ops", 2), lambda v: OrderedDict(v)),  # JSON never makes these: the schema's
    (("ranks", 0, "ops", 2, "op"), Str),  # type tests are exact, so the fast path's are too
    (("ranks", 0, "ops", 2, "handle"), Int),
    (("ranks", 0, "ops", 2, "where", "file"), Str),
    (("ranks", 0, "ops", 3, "ops", 0, "peer"), Int),
    (("ranks", 0, "ops", 3, "ops", 0, "shape"), lambda v: [Int(x) for x in v]),
    (("groups",), tuple),
])
def test_python_subclasses_are_refused_like_the_schema_does(path, value):
    doc = rich_document()
    parent = at(doc, path[:-1])
    parent[path[-1]] = value(parent[path[-1]])
    assert program_fast.build(doc) is None
    assert isinstance(outcome(reference_program_from_dict, doc), str)
    agree(doc)


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from([rich_document(), documents()[3]])))
    for _ in range(draw(st.integers(1, 4))):
        paths = list(places(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = at(doc, path[:-1])
        action = draw(st.sampled_from(["set", "drop", "copy-from"]))
        if action == "set":
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(PALETTE)))
        elif action == "drop":
            del parent[path[-1]]
        else:  # a value from elsewhere in the document (right type, wrong place or a repeat)
            parent[path[-1]] = copy.deepcopy(at(doc, draw(st.sampled_from(paths))))
    return doc


@given(mutated())
def test_mutated_documents_agree(doc):
    agree(doc)


def test_a_bad_value_in_a_batch_entry_is_named_as_before():
    doc = rich_document()
    doc["ranks"][0]["ops"][3]["ops"][1]["shape"] = [2, True]
    with pytest.raises(ScheduleError) as e:
        program_from_dict(doc, "run.json")
    assert str(e.value) == ("run.json: $.ranks[0].ops[3].ops[1].shape[1] (rank 0 op 3 (entry 1 of the batch)): "
                            "expected integer, got true")


def test_the_fast_path_turns_itself_off_when_the_schema_or_the_ir_changes():
    root = load_schema()
    root["$defs"]["prog_where"]["properties"]["line"]["maximum"] += 1
    assert program_fast.schema_fingerprint(root) != program_fast.SCHEMA_FINGERPRINT
    root = load_schema()
    root["$defs"]["program"]["description"] = "reworded"
    assert program_fast.schema_fingerprint(root) == program_fast.SCHEMA_FINGERPRINT  # prose is not the format

    @dataclasses.dataclass(frozen=True, slots=True)
    class Where:
        file: str
        line: int
        column: int = 0

    assert program_fast._maker(Where, ("file", "line", "function")) is None
    make = program_fast._maker(Where, ("file", "line", "column"))
    assert make("f", 1, 2) == Where("f", 1, 2) and type(make("f", 1, 2)) is Where


def test_makers_run_post_init():
    with pytest.raises(ValueError, match="P2P op"):
        program_fast._new_p2p("wait", 0, 0, (), "f", program_fast._NOWHERE, True, 0, None, None)


@pytest.mark.parametrize("enabled", [True, False])
def test_parsing_restores_the_collector(enabled):
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        parse_program_text(json.dumps(rich_document()))
        assert gc.isenabled() is enabled
        with pytest.raises(ScheduleError):
            parse_program_text("{")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()

"""The JSON format: specs/schedule.schema.json against our validator (verifier.format.schema).

``jsonschema`` is not a dependency, so instead:

- the schema file is checked against the rules of the JSON Schema 2020-12
  meta-schema for every keyword it uses (a hand-written structural check),
  and against the IR (format name, version, op names, id bounds);
- an independent, naive JSON Schema interpreter written here from the spec
  (tries every oneOf branch, no discriminator, JSON numeric equality) is held
  against ``verifier.format.schema.validate`` on hand-picked valid and invalid
  documents and on random mutations of generated schedules (hypothesis;
  HYPOTHESIS_PROFILE=deep runs 1000): both must give the same verdict, and
  every path our validator reports must exist in the document.

Known, deliberate divergence (asserted below so that it cannot change
silently): JSON Schema counts ``1.0`` as an integer; our validator refuses it
(ids are written as integers).

Not covered: the semantics of a valid document (the checker's properties).
"""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
from hypothesis import given, strategies as st

from verifier.format.csvio import MAX_ID
from verifier.generators import FAMILIES, generate
from verifier.format.io import dumps_json, schedule_to_dict
from verifier.ir import FORMAT_NAME, FORMAT_VERSION, CommKind, ComputeKind
from verifier.program import PROGRAM_VERSION
from verifier.format.schema import SchemaViolation, compiled_validator, load_schema, validate

SCHEMA = load_schema()

# ------------------------------------------------------------ the schema file itself

_TYPES = {"object", "array", "string", "boolean", "integer", "number", "null"}
_ANNOT = {"$schema", "$id", "title", "description", "$defs", "discriminator"}


def _subschemas(node, path="#"):
    """Every schema object in the document, with its JSON pointer."""
    yield path, node
    for key in ("items",):
        if key in node:
            yield from _subschemas(node[key], f"{path}/{key}")
    for key in ("properties", "$defs"):
        for k, sub in node.get(key, {}).items():
            yield from _subschemas(sub, f"{path}/{key}/{k}")
    for i, sub in enumerate(node.get("oneOf", [])):
        yield from _subschemas(sub, f"{path}/oneOf/{i}")


def _resolve(ref: str, root=SCHEMA):
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_schema_follows_the_meta_schema_rules():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    n = 0
    for path, s in _subschemas(SCHEMA):
        n += 1
        assert isinstance(s, dict), path
        if "type" in s:
            assert s["type"] in _TYPES, path
        if "enum" in s:
            assert isinstance(s["enum"], list) and s["enum"], path
            assert len({json.dumps(x) for x in s["enum"]}) == len(s["enum"]), path
        if "required" in s:
            req = s["required"]
            assert isinstance(req, list) and len(set(req)) == len(req), path
            assert all(isinstance(k, str) for k in req), path
            if s.get("additionalProperties") is False:
                assert set(req) <= set(s.get("properties", {})), path
        for kw in ("minimum", "maximum"):
            if kw in s:
                assert isinstance(s[kw], (int, float)) and not isinstance(s[kw], bool), path
        if "minItems" in s:
            assert isinstance(s["minItems"], int) and s["minItems"] >= 0, path
        if "additionalProperties" in s:
            assert isinstance(s["additionalProperties"], (bool, dict)), path
        if "oneOf" in s:
            assert isinstance(s["oneOf"], list) and s["oneOf"], path
        if "$ref" in s:
            assert s["$ref"].startswith("#/"), path
            assert isinstance(_resolve(s["$ref"]), dict), path
        if "discriminator" in s:  # our annotation: each branch fixes the tag
            tags = []
            for b in s["oneOf"]:
                b = _resolve(b["$ref"]) if "$ref" in b else b
                spec = b["properties"][s["discriminator"]]
                tags += spec["enum"] if "enum" in spec else [spec["const"]]
            assert len(tags) == len(set(tags)), path
    assert n > 20
    compiled_validator()  # our compiler accepts every keyword used


def test_schema_agrees_with_the_ir():
    assert SCHEMA["properties"]["format"]["const"] == FORMAT_NAME
    assert SCHEMA["properties"]["version"]["const"] == FORMAT_VERSION
    # the schema's version is the newest document version: schedules are 1.0
    # (this top level), recorded programs 1.1 ($defs/program)
    assert SCHEMA["$id"] == f"{FORMAT_NAME}/{PROGRAM_VERSION}"
    assert SCHEMA["$defs"]["program"]["properties"]["version"]["const"] == PROGRAM_VERSION
    d = SCHEMA["$defs"]
    assert d["compute"]["properties"]["op"]["enum"] == [k.value for k in ComputeKind]
    assert d["comm"]["properties"]["op"]["enum"] == [k.value for k in CommKind]
    assert d["index"]["maximum"] == MAX_ID  # the CSV reader uses the same bound


# ------------------------------------------------------------ an independent interpreter


def _json_equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a == b


def _is_type(v, t: str) -> bool:
    if t == "integer":  # JSON Schema: a number with zero fractional part
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and math.isfinite(v) and v.is_integer())
    return {
        "object": lambda: isinstance(v, dict),
        "array": lambda: isinstance(v, list),
        "string": lambda: isinstance(v, str),
        "boolean": lambda: isinstance(v, bool),
        "number": lambda: isinstance(v, (int, float)) and not isinstance(v, bool),
        "null": lambda: v is None,
    }[t]()


def reference_valid(v, s=SCHEMA, root=SCHEMA) -> bool:
    """JSON Schema 2020-12 semantics for the keywords the schema uses, naively."""
    if "$ref" in s and not reference_valid(v, _resolve(s["$ref"], root), root):
        return False
    if "type" in s and not _is_type(v, s["type"]):
        return False
    if "const" in s and not _json_equal(v, s["const"]):
        return False
    if "enum" in s and not any(_json_equal(v, e) for e in s["enum"]):
        return False
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    if num and "minimum" in s and not v >= s["minimum"]:
        return False
    if num and "maximum" in s and not v <= s["maximum"]:
        return False
    if isinstance(v, list):
        if len(v) < s.get("minItems", 0):
            return False
        if "items" in s and not all(reference_valid(x, s["items"], root) for x in v):
            return False
    if isinstance(v, dict):
        if any(k not in v for k in s.get("required", ())):
            return False
        props = s.get("properties", {})
        for k, x in v.items():
            if k in props:
                if not reference_valid(x, props[k], root):
                    return False
            elif s.get("additionalProperties") is False:
                return False
    if "oneOf" in s and sum(reference_valid(v, b, root) for b in s["oneOf"]) != 1:
        return False
    return True


def ours_valid(doc) -> tuple[bool, str | None]:
    try:
        validate(doc)
        return True, None
    except SchemaViolation as e:
        return False, e.path


_PATH_PART = re.compile(r"\.([A-Za-z_$][\w$]*)|\[(\d+)\]")


def _follow(doc, path: str):
    """The value at one of our reported paths ('$.actions[0][1].stage'); KeyError if absent."""
    assert path.startswith("$")
    node = doc
    rest = path[1:]
    while rest:
        m = _PATH_PART.match(rest)
        assert m, path
        key, idx = m.groups()
        node = node[key] if key is not None else node[int(idx)]
        rest = rest[m.end():]
    return node


# ------------------------------------------------------------ hand-picked documents


def _base() -> dict:
    return schedule_to_dict(generate("dualpipe", 2, 4))  # every action kind but OVERLAP


def _with_overlap() -> dict:
    return schedule_to_dict(generate("dualpipev", 2, 6))


VALID = {
    "dualpipe": _base,
    "dualpipev": _with_overlap,
    "compute-only": lambda: schedule_to_dict(generate("zb-h1", 3, 6, compute_only=True)),
    "extras": lambda: {**_base(), "name": "n", "family": "f", "params": {"any": [1, {}]}},
    "empty rank list": lambda: {**_base(), "actions": [[], []]},
    "max ids": lambda: {**_base(), "num_microbatches": 10_000_000},
}


def _set(path, value):
    def f(d):
        node = d
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return f


def _del(path):
    def f(d):
        node = d
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]
    return f


INVALID = [
    (_set(["format"], "pp-schedule "), "$.format"),
    (_set(["version"], 1.0), "$.version"),
    (_del(["stages"]), "$"),
    (_set(["extra"], 1), "$"),
    (_set(["num_ranks"], -1), "$.num_ranks"),
    (_set(["num_ranks"], 100_001), "$.num_ranks"),
    (_set(["num_microbatches"], None), "$.num_microbatches"),
    (_set(["stages", 0, "layer"], 10_000_001), "$.stages[0].layer"),
    (_set(["stages", 1], []), "$.stages[1]"),
    (_set(["routes"], []), "$.routes"),
    (_set(["routes", 0, "microbatches", 0], "0"), "$.routes[0].microbatches[0]"),
    (_set(["actions", 0, 0], {"op": "OVERLAP"}), "$.actions[0][0]"),
    (_set(["actions", 0, 0], {"op": "BATCH", "ops": [{"op": "F", "stage": 0, "mb": 0}],
                              "wait": False}), "$.actions[0][0].ops[0].op"),
    (_set(["actions", 0, 0], {"op": "F", "stage": 0}), "$.actions[0][0]"),
    (_set(["actions", 0, 0], {"op": 3, "stage": 0, "mb": 0}), "$.actions[0][0].op"),
    (_set(["actions", 1], {}), "$.actions[1]"),
    (_set(["params"], []), "$.params"),
]


@pytest.mark.parametrize("name", sorted(VALID))
def test_hand_picked_valid(name):
    doc = VALID[name]()
    assert ours_valid(doc) == (True, None)
    assert reference_valid(doc)
    json.loads(json.dumps(doc))  # and it is plain JSON


@pytest.mark.parametrize("i", range(len(INVALID)))
def test_hand_picked_invalid(i):
    mutate, where = INVALID[i]
    doc = _base()
    mutate(doc)
    ok, path = ours_valid(doc)
    assert not ok and path == where
    assert not reference_valid(doc)


def test_known_divergence_integral_float():
    doc = _base()
    doc["num_ranks"] = 2.0
    assert reference_valid(doc)  # JSON Schema: 2.0 is an integer
    assert ours_valid(doc) == (False, "$.num_ranks")  # ours: write 2


# ------------------------------------------------------------ random mutations

_DOCS = [schedule_to_dict(generate(f, 2, 4 if f != "interleaved-1f1b" else 4))
         for f in FAMILIES] + [schedule_to_dict(generate("zbv", 2, 3, compute_only=True))]

_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, 1, -1, 10_000_000, 10_000_001, 100_001, 1.5,
                     "", "F", "B", "I", "W", "SEND_F", "RECV_B", "OVERLAP", "BATCH",
                     "pp-schedule", "1.0", [], {}, [0], {"op": "F", "stage": 0, "mb": 0},
                     {"op": "BATCH", "ops": [], "wait": True}]),
    st.integers(-3, 12),
)


def _containers(node, out):
    if isinstance(node, (dict, list)):
        out.append(node)
        for v in node.values() if isinstance(node, dict) else node:
            _containers(v, out)
    return out


@st.composite
def mutated_docs(draw):
    doc = copy.deepcopy(draw(st.sampled_from(_DOCS)))
    for _ in range(draw(st.integers(1, 3))):
        nodes = _containers(doc, [])
        node = draw(st.sampled_from(nodes))
        how = draw(st.sampled_from(["set", "set", "delete", "add"]))
        value = copy.deepcopy(draw(_VALUES))  # never share a mutable value
        if isinstance(node, dict):
            keys = sorted(node)
            if how == "add" or not keys:
                node[draw(st.sampled_from(["op", "mb", "stage", "wait", "x", "f"]))] = value
            elif how == "delete":
                del node[draw(st.sampled_from(keys))]
            else:
                node[draw(st.sampled_from(keys))] = value
        else:
            if how == "add" or not node:
                node.insert(draw(st.integers(0, len(node))), value)
            elif how == "delete":
                del node[draw(st.integers(0, len(node) - 1))]
            else:
                node[draw(st.integers(0, len(node) - 1))] = value
    return doc


@given(mutated_docs())
def test_validator_agrees_with_reference_on_mutations(doc):
    ok, path = ours_valid(doc)
    assert ok == reference_valid(doc), (ok, path)
    if not ok:
        try:
            _follow(doc, path)
        except (KeyError, IndexError, TypeError):
            raise AssertionError(f"reported path {path} is not in the document")


def test_every_generated_schedule_is_valid_both_ways():
    for f in FAMILIES:
        for compute_only in (True, False):
            doc = json.loads(dumps_json(generate(f, 2, 4, compute_only=compute_only)))
            assert ours_valid(doc) == (True, None), f
            assert reference_valid(doc), f


# ------------------------------------------------------------ the compilers' other paths

# The real schema uses only some shapes of each keyword; this one uses the rest
# (open objects, optional keys, untyped range and minItems, int enums, a oneOf
# without discriminator, a tagged union as items and as a property, an inline
# branch), so that the generated validator's shortcuts are held to the reporting
# validator and the naive interpreter on them too.
_OTHER = {
    "type": "object",
    "required": ["a"],
    "additionalProperties": False,
    "properties": {
        "a": {"type": "integer", "minimum": 0},
        "b": {"minimum": 2, "maximum": 5},
        "c": {"enum": [1, "x"]},
        "d": {"type": "array", "items": {"$ref": "#/$defs/tagged"}},
        "e": {"oneOf": [{"type": "integer"}, {"type": "number", "maximum": 3}]},
        "f": {"items": {"type": "string"}, "minItems": 1},
        "g": {"required": ["k"], "properties": {"k": {"const": True}}},
        "h": {"$ref": "#/$defs/tagged"},
        "i": {"type": "number", "minimum": 0.5},
        "j": {"type": "array", "items": {"discriminator": "t", "oneOf": [
            {"type": "object", "required": ["t"], "properties": {"t": {"const": "p"}}}]}},
    },
    "$defs": {
        "tagged": {"discriminator": "t", "oneOf": [
            {"type": "object", "required": ["t"], "additionalProperties": False,
             "properties": {"t": {"const": "p"}, "n": {"type": "integer", "maximum": 9}}},
            {"$ref": "#/$defs/q"},
        ]},
        "q": {"type": "object", "required": ["t", "m"], "additionalProperties": False,
              "properties": {"t": {"enum": ["q", "r"]}, "m": {"type": "boolean"}}},
    },
}

_KEYS = st.sampled_from(list("abcdefghij") + ["t", "n", "m", "k", "z"])
_ATOMS = st.sampled_from([None, True, False, 0, 1, 2, 3, 5, 6, 9, 10, -1, 0.25, 1.5, 2.5, 3.5,
                          "", "x", "p", "q", "r", "s"])
_JSONISH = st.recursive(
    _ATOMS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)
_TAGGED = st.fixed_dictionaries({"t": st.sampled_from(["p", "q", "r", "s", 1])},
                                optional={"n": _JSONISH, "m": _JSONISH, "z": _JSONISH})


def _other_docs():
    value = _JSONISH | _TAGGED | st.lists(_TAGGED, max_size=3)
    a = st.sampled_from([0, 4, 0, 4, 0, 4, -1, "0", 1.5])  # mostly valid: the others get checked
    return st.fixed_dictionaries({}, optional={"a": a}) \
        .flatmap(lambda d: st.dictionaries(_KEYS, value, max_size=2).map(lambda e: {**e, **d}))


@given(_other_docs())
def test_compilers_agree_on_every_keyword_shape(doc):
    from verifier.format.schema import _Compiler, _SourceCompiler

    fast = _SourceCompiler(_OTHER).build()(doc)
    try:
        _Compiler(_OTHER).compile(_OTHER)(doc, lambda: "$")
        reporting = True
    except SchemaViolation:
        reporting = False
    assert fast == reporting == reference_valid(doc, _OTHER, _OTHER), (fast, reporting)


def test_compilers_agree_on_hand_picked_other_documents():
    from verifier.format.schema import _Compiler, _SourceCompiler

    fast = _SourceCompiler(_OTHER).build()
    slow = _Compiler(_OTHER).compile(_OTHER)
    good = [
        {"a": 0},
        {"a": 3, "b": "not a number", "c": 1, "e": 2.5, "f": ["s"], "g": {"k": True, "z": 1},
         "d": [{"t": "p", "n": 9}, {"t": "r", "m": False}], "h": {"t": "q", "m": True},
         "i": 0.5, "j": [{"t": "p", "z": []}]},
        {"a": 1, "b": 2, "f": "not a list", "g": [], "e": 7},
    ]
    bad = [
        {}, {"a": -1}, {"a": 0, "z": 1}, {"a": 0, "b": 6}, {"a": 0, "c": True}, {"a": 0, "c": 2},
        {"a": 0, "e": 2}, {"a": 0, "e": 3.5}, {"a": 0, "f": []}, {"a": 0, "f": [1]},
        {"a": 0, "g": {}}, {"a": 0, "g": {"k": 1}}, {"a": 0, "d": [{"t": "p", "n": 10}]},
        {"a": 0, "d": [{"t": "q"}]}, {"a": 0, "d": [{"t": "p", "m": True}]}, {"a": 0, "d": [[]]},
        {"a": 0, "h": {"t": 1}}, {"a": 0, "h": {"t": "s"}}, {"a": 0, "i": 0.25},
        {"a": 0, "i": True},
        {"a": 0, "j": [{"t": "q"}]}, {"a": 0, "j": [{}]}, {"a": 0, "d": {}}, [],
    ]
    for doc in good + bad:
        verdicts = {fast(doc), reference_valid(doc, _OTHER, _OTHER)}
        try:
            slow(doc, lambda: "$")
            verdicts.add(True)
        except SchemaViolation:
            verdicts.add(False)
        assert verdicts == {doc in good}, doc

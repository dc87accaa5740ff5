"""The fast path of reading a recorded program: one pass over a parsed document
that checks the common well-formed shapes with plain comparisons and builds the
IR as it goes.

``build(doc)`` returns the ``Program`` that the reference path of
``verifier.format.program`` (the schema validator, the document checks, the
builder) builds, or None as soon as anything is not what it knows to be well
formed; the caller then runs the reference path, which accepts the document or
names its fault. The fast path decides no refusal and writes no message: it
must never accept what the reference refuses, and must build the same Program
when it accepts (tests/test_program_load.py holds it to both, on the bad-input
cases and on mutated documents).

Where it saves time: one traversal instead of two (schema, then builder); the
repeated source lines, payloads and shapes built once per file (equal values,
one object); the frozen slotted IR classes built without their ``__init__``,
which goes through ``object.__setattr__`` per field (``_maker``;
``__post_init__`` still runs where a class has one).

It restates the program part of specs/schedule.schema.json (pp-schedule 1.1)
as code. A fingerprint of those definitions, and the field names of the IR
classes, are checked once; if either has changed the fast path turns itself off
(every document takes the reference path) until this module is updated
(tests/test_program_load.py fails meanwhile).

Not covered: messages (the reference path's), schedules (pp-schedule 1.0).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from operator import itemgetter
from typing import Any, Callable

from verifier.errors import PpError
from verifier.format.schema import load_schema
from verifier.program import (
    BatchP2P,
    Collective,
    ComputeOp,
    Group,
    IsCompleted,
    P2P,
    Payload,
    Program,
    RankProgram,
    Wait,
    Where,
)

# sha256 of the canonical JSON (sorted keys, no spaces, no prose) of
# #/$defs/program and every definition it reaches through $ref: the schema this
# module restates (schema_fingerprint()).
SCHEMA_FINGERPRINT = "46fbfe8cdeffb58a0c148ca41dedd479281e0de29e11777a9da1cdc226ba03e9"

# the bounds of the schema's definitions (covered by the fingerprint)
_MAX_RANK = 100_000  # prog_rank, num_ranks
_MAX_INDEX = 10_000_000  # index: group, handle, stage, mb, group id
_MAX_LINE = 100_000_000  # prog_where.line
_MAX_DIM = 1_000_000_000_000  # prog_shape items
_MIN_TAG, _MAX_TAG = -2_147_483_648, 2_147_483_647
_OUTCOMES = frozenset(("finished", "hung", "raised", "killed", "interrupted"))
_COMPUTE_KINDS = frozenset(("F", "B", "I", "W"))
_PAYLOAD_KINDS = frozenset(("F", "B"))


def _program_defs(root: dict) -> dict:
    """``#/$defs/program`` and every definition it reaches, by name."""
    found: dict = {}
    todo = ["program"]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = node = root["$defs"][name]
        stack = [node]
        while stack:
            x = stack.pop()
            if isinstance(x, dict):
                ref = x.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/$defs/"):
                    todo.append(ref[len("#/$defs/"):])
                stack.extend(x.values())
            elif isinstance(x, list):
                stack.extend(x)
    return found


def _without_prose(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _without_prose(v) for k, v in x.items() if k not in ("title", "description")}
    if isinstance(x, list):
        return [_without_prose(v) for v in x]
    return x


def schema_fingerprint(root: dict | None = None) -> str:
    """sha256 of the program definitions of the schema (``root``; default: the
    package's), their prose (title, description) left out."""
    defs = _without_prose(_program_defs(load_schema() if root is None else root))
    text = json.dumps(defs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _maker(cls: type, names: tuple[str, ...]) -> Callable | None:
    """A function taking ``cls``'s fields positionally (in ``names`` order) that
    returns what ``cls(*args)`` returns; None if ``cls``'s fields are no longer
    ``names`` (the fast path then turns itself off).

    For a slotted class (the IR's frozen dataclasses), the instance starts as a
    *twin*: a plain class with the same slots, so the same memory layout, whose
    attributes are set by plain stores; it then becomes a ``cls``
    (``o.__class__ = cls``, which CPython allows only between classes of the
    same layout, checked once here) and ``__post_init__`` runs if ``cls`` has
    one. A frozen dataclass's ``__init__`` instead calls ``object.__setattr__``
    for every field: 2.4x the instructions for a Wait, 5x for a P2P (callgrind,
    10,000 of each). Any other class: ``cls`` itself."""
    if not dataclasses.is_dataclass(cls):
        return None
    fields = dataclasses.fields(cls)
    if (tuple(f.name for f in fields) != names or not all(f.init for f in fields)
            or len(cls.__dataclass_fields__) != len(fields)):  # an InitVar: __init__ takes more
        return None
    slots = cls.__dict__.get("__slots__")
    if slots is None or sorted(slots) != sorted(names):
        return cls
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": tuple(slots)})
    try:
        probe = twin()
        probe.__class__ = cls
    except TypeError:  # not the same layout after all
        return cls
    body = ["    o = _twin()", *(f"    o.{n} = {n}" for n in names), "    o.__class__ = _cls"]
    if hasattr(cls, "__post_init__"):
        body.append("    o.__post_init__()")
    body.append("    return o")
    src = f"def make_{cls.__name__}({', '.join(names)}):\n" + "\n".join(body) + "\n"
    ns: dict[str, Any] = {"_twin": twin, "_cls": cls}
    exec(compile(src, f"<{cls.__name__} maker>", "exec"), ns)
    return ns[f"make_{cls.__name__}"]


_new_where = _maker(Where, ("file", "line", "function"))
_new_payload = _maker(Payload, ("kind", "stage", "mb"))
_new_p2p = _maker(P2P, ("op", "peer", "group", "shape", "dtype", "where", "returned", "tag", "handle", "payload"))
_new_batch = _maker(BatchP2P, ("ops", "where", "returned"))
_new_wait = _maker(Wait, ("handle", "where", "returned"))
_new_is_completed = _maker(IsCompleted, ("handle", "result", "where", "returned"))
_new_collective = _maker(Collective, ("name", "group", "shape", "dtype", "where", "returned"))
_new_compute = _maker(ComputeOp, ("kind", "stage", "mb", "where", "returned"))
_new_group = _maker(Group, ("id", "ranks", "name"))
_new_rank = _maker(RankProgram, ("rank", "ops", "outcome", "error"))
_MAKERS = (_new_where, _new_payload, _new_p2p, _new_batch, _new_wait, _new_is_completed,
           _new_collective, _new_compute, _new_group, _new_rank)


@lru_cache(maxsize=1)
def enabled() -> bool:
    """Whether the fast path runs: the schema and the IR classes are the ones it was written for."""
    return all(m is not None for m in _MAKERS) and schema_fingerprint() == SCHEMA_FINGERPRINT


class _NotFast(PpError):
    """Raised inside the fast path: the document is left to the reference path
    (caught by ``build``, never seen outside; a PpError as every exception of
    the project is, tests/test_errors.py)."""


def build(doc: Any) -> Program | None:
    """The Program of a well-formed document in the common shapes; None for
    anything else (then the reference path decides, and names any fault)."""
    if not enabled():
        return None
    try:
        return _program(doc)
    except (_NotFast, KeyError):  # KeyError: a required key is missing (or, where the
        return None  # number of keys is known, a key is not one of those expected)


def _program(doc: Any) -> Program:
    if type(doc) is not dict:
        raise _NotFast
    fmt, version, kind = doc["format"], doc["version"], doc["kind"]
    num_ranks, groups, ranks = doc["num_ranks"], doc["groups"], doc["ranks"]
    name, named = _optional_name(doc)
    n = 6 + named  # keys present; a null optional value is not counted, so it fails the length test
    recorded = doc.get("recorded")
    if recorded is not None:
        if type(recorded) is not dict:
            raise _NotFast
        recorded = dict(recorded)
        n += 1
    if (len(doc) != n or type(fmt) is not str or fmt != "pp-schedule"
            or type(version) is not str or version != "1.1"
            or type(kind) is not str or kind != "program"
            or type(num_ranks) is not int or not 1 <= num_ranks <= _MAX_RANK
            or type(groups) is not list or not groups
            or type(ranks) is not list or len(ranks) != num_ranks):
        raise _NotFast
    caches: tuple[dict, dict, dict] = ({}, {}, {})  # source lines, payloads, shapes
    built = tuple([_rank_program(i, rp, caches) for i, rp in enumerate(ranks)])
    return Program(num_ranks=num_ranks, groups=_groups(groups), ranks=built, recorded=recorded, name=name)


def _optional_name(d: dict) -> tuple[str, int]:
    """The optional "name" of a document or a group ("" when absent or null) and
    how many keys it adds to the count (a null one adds none)."""
    name = d.get("name")
    if name is None:
        return "", 0
    if type(name) is str:
        return name, 1
    raise _NotFast


def _groups(groups: list) -> tuple:
    out = []
    seen: set[int] = set()
    for g in groups:
        if type(g) is not dict:
            raise _NotFast
        gid, granks = g["id"], g["ranks"]
        gname, named = _optional_name(g)
        n = 2 + named
        if (len(g) != n or type(gid) is not int or not 0 <= gid <= _MAX_INDEX or gid in seen
                or type(granks) is not list or not granks):
            raise _NotFast
        for r in granks:
            if type(r) is not int or not 0 <= r <= _MAX_RANK:
                raise _NotFast
        members = tuple(granks)
        if len(set(members)) != len(members):
            raise _NotFast
        seen.add(gid)
        out.append(_new_group(gid, members, gname))
    return tuple(out)


_WHERE = itemgetter("file", "line")


def _where(w: Any, cache: dict) -> Where:
    """The source line ``w``, one object per distinct value."""
    if type(w) is not dict:
        raise _NotFast
    file, line = _WHERE(w)
    if len(w) == 2:
        function = ""
        key: tuple = (file, line)
    else:
        function = w.get("function")
        if len(w) != 3 or type(function) is not str:
            raise _NotFast
        key = (file, line, function)
    if type(file) is not str or type(line) is not int:
        raise _NotFast
    got = cache.get(key)
    if got is None:  # (a hit equals a key checked below: the line is in range)
        if not 0 <= line <= _MAX_LINE:
            raise _NotFast
        got = cache[key] = _new_where(file, line, function)
    return got


_PAYLOAD = itemgetter("kind", "stage", "mb")


def _payload(p: Any, cache: dict) -> Payload:
    if type(p) is not dict or len(p) != 3:
        raise _NotFast
    key = kind, stage, mb = _PAYLOAD(p)
    if type(kind) is not str or type(stage) is not int or type(mb) is not int:
        raise _NotFast
    got = cache.get(key)
    if got is None:
        if kind not in _PAYLOAD_KINDS or not 0 <= stage <= _MAX_INDEX or not 0 <= mb <= _MAX_INDEX:
            raise _NotFast
        got = cache[key] = _new_payload(kind, stage, mb)
    return got


def _shape(s: Any, cache: dict) -> tuple:
    if type(s) is not list:
        raise _NotFast
    for x in s:
        if type(x) is not int:
            raise _NotFast
    t = tuple(s)
    got = cache.get(t)
    if got is None:
        for x in s:
            if not 0 <= x <= _MAX_DIM:
                raise _NotFast
        got = cache[t] = t
    return got


_NOWHERE = Where("?", 0)  # a batch entry without "where" (the reference builds an equal one)
_ENTRY = itemgetter("op", "peer", "group", "tag", "shape", "dtype", "handle", "payload")


def _entry(d: Any, handles: list, caches: tuple) -> P2P:
    """An entry of a batch; first the shape ``dumps_program`` writes (these 8 keys)."""
    if type(d) is not dict or len(d) != 8:
        return _p2p(d, False, handles, caches)
    op, peer, group, tag, shape, dtype, handle, payload = _ENTRY(d)  # so no other keys
    if (type(op) is not str or (op != "isend" and op != "irecv")
            or type(peer) is not int or not 0 <= peer <= _MAX_RANK
            or type(group) is not int or not 0 <= group <= _MAX_INDEX
            or type(tag) is not int or not _MIN_TAG <= tag <= _MAX_TAG
            or type(dtype) is not str or type(handle) is not int or not 0 <= handle <= _MAX_INDEX):
        raise _NotFast
    handles.append(handle)
    return _new_p2p(op, peer, group, _shape(shape, caches[2]), dtype, _NOWHERE, True, tag, handle,
                    _payload(payload, caches[1]))


def _p2p(d: Any, top: bool, handles: list, caches: tuple) -> P2P:
    """A top-level send/recv/isend/irecv (``top``) or an entry of a batch (isend/irecv), any keys."""
    if type(d) is not dict:
        raise _NotFast
    op, peer, group, shape, dtype = d["op"], d["peer"], d["group"], d["shape"], d["dtype"]
    if type(op) is not str:
        raise _NotFast
    n = 5  # keys present; a null optional value is not counted, so it fails the length test
    if op == "isend" or op == "irecv":
        handle = d["handle"]
        if type(handle) is not int or not 0 <= handle <= _MAX_INDEX:
            raise _NotFast
        handles.append(handle)
        n += 1
    elif top and (op == "send" or op == "recv"):
        handle = None
    else:
        raise _NotFast
    if (type(peer) is not int or not 0 <= peer <= _MAX_RANK
            or type(group) is not int or not 0 <= group <= _MAX_INDEX or type(dtype) is not str):
        raise _NotFast
    w = d.get("where")
    if w is not None:
        where = _where(w, caches[0])
        n += 1
    elif top:
        raise _NotFast
    else:
        where = _NOWHERE
    returned = d.get("returned")
    if returned is None:
        if top:
            raise _NotFast
        returned = True
    elif type(returned) is bool:
        n += 1
    else:
        raise _NotFast
    tag = d.get("tag")
    if tag is None:
        tag = 0
    elif type(tag) is int and _MIN_TAG <= tag <= _MAX_TAG:
        n += 1
    else:
        raise _NotFast
    payload = d.get("payload")
    if payload is not None:
        payload = _payload(payload, caches[1])
        n += 1
    if len(d) != n:
        raise _NotFast
    return _new_p2p(op, peer, group, _shape(shape, caches[2]), dtype, where, returned, tag, handle, payload)


_WAIT = itemgetter("handle", "where", "returned")
_COMPUTE = itemgetter("kind", "stage", "mb", "where", "returned")
_BATCH = itemgetter("ops", "where", "returned")


def _rank_program(i: int, rp: Any, caches: tuple) -> RankProgram:
    if type(rp) is not dict:
        raise _NotFast
    rank, ops = rp["rank"], rp["ops"]
    n = 2
    outcome = rp.get("outcome")
    if outcome is None:
        outcome = "finished"
    elif type(outcome) is str and outcome in _OUTCOMES:
        n += 1
    else:
        raise _NotFast
    error = None
    if "error" in rp:  # any JSON value, kept as its str(); a structure is left to the reference
        error = rp["error"]
        if error is not None and type(error) is not str:
            raise _NotFast
        n += 1
    # rank == i, an int, is in range: i < num_ranks <= the bound
    if len(rp) != n or type(rank) is not int or rank != i or type(ops) is not list:
        raise _NotFast
    wcache = caches[0]
    handles: list[int] = []
    out: list = []
    append = out.append
    max_index = _MAX_INDEX
    for d in ops:
        if type(d) is not dict:
            raise _NotFast
        op = d["op"]
        if type(op) is not str:
            raise _NotFast
        if op == "wait":
            h, w, returned = _WAIT(d)
            if len(d) != 4 or type(h) is not int or not 0 <= h <= max_index or type(returned) is not bool:
                raise _NotFast
            append(_new_wait(h, _where(w, wcache), returned))
        elif op == "compute":
            kind, stage, mb, w, returned = _COMPUTE(d)
            if (len(d) != 6 or type(kind) is not str or kind not in _COMPUTE_KINDS
                    or type(stage) is not int or not 0 <= stage <= max_index
                    or type(mb) is not int or not 0 <= mb <= max_index or type(returned) is not bool):
                raise _NotFast
            append(_new_compute(kind, stage, mb, _where(w, wcache), returned))
        elif op == "batch":
            entries, w, returned = _BATCH(d)
            if len(d) != 4 or type(entries) is not list or not entries or type(returned) is not bool:
                raise _NotFast
            append(_new_batch(tuple([_entry(e, handles, caches) for e in entries]), _where(w, wcache),
                              returned))
        elif op == "isend" or op == "irecv" or op == "send" or op == "recv":
            append(_p2p(d, True, handles, caches))
        elif op == "is_completed":
            append(_is_completed(d, wcache))
        elif op == "collective":
            append(_collective(d, caches))
        else:
            raise _NotFast
    if len(set(handles)) != len(handles):
        raise _NotFast  # a handle issued twice: the reference names both places
    return _new_rank(i, tuple(out), outcome, error)


_IS_COMPLETED = itemgetter("handle", "result", "where", "returned")


def _is_completed(d: dict, wcache: dict) -> IsCompleted:
    h, result, w, returned = _IS_COMPLETED(d)
    if (len(d) != 5 or type(h) is not int or not 0 <= h <= _MAX_INDEX
            or type(result) is not bool or type(returned) is not bool):
        raise _NotFast
    return _new_is_completed(h, result, _where(w, wcache), returned)


_COLLECTIVE = itemgetter("name", "group", "where", "returned")


def _collective(d: dict, caches: tuple) -> Collective:
    cname, group, w, returned = _COLLECTIVE(d)
    n = 5
    shape = d.get("shape")
    if shape is not None:
        shape = _shape(shape, caches[2])
        n += 1
    dtype = d.get("dtype")
    if dtype is not None:
        if type(dtype) is not str:
            raise _NotFast
        n += 1
    if (len(d) != n or type(cname) is not str or type(group) is not int or not 0 <= group <= _MAX_INDEX
            or type(returned) is not bool):
        raise _NotFast
    return _new_collective(cname, group, shape, dtype, _where(w, caches[0]), returned)

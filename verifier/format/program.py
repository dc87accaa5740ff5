"""Reading and writing recorded programs (pp-schedule 1.1, ``"kind": "program"``).

A program document (written by ``python -m verifier record`` / fastpath's
recorder; the format: specs/schedule.schema.json ``#/$defs/program`` and
specs/SEMANTICS.md "Recorded programs") is schema-validated, then checked for
what makes it unusable as a document (rank lists numbered 0..R-1 and as many as
``num_ranks``, group ids unique, a rank's handles unique), then built into
``verifier.program.Program``. Every refusal is one ``ScheduleError`` naming the
file, the JSON path, the rank and op index (``rank 2 op 5``) and the value.
A well-formed document in the common shapes is checked and built in one pass
instead (``verifier.format.program_fast``); anything else takes the path above.

Not covered: whether the program is *correct* (peers in range, waits of known
handles, matching, deadlock: ``verifier.check.program``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from verifier.errors import ScheduleError, SchemaViolation
from verifier.format import program_fast
from verifier.format.guard import DEFAULT as DEFAULT_LIMITS
from verifier.format.guard import Limits, paused_gc
from verifier.format.io import STDIN, detect_format, read_text, schedule_from_text, sniff_format, source_name
from verifier.format.schema import validate_program
from verifier.program import (
    PROGRAM_KIND,
    PROGRAM_VERSION,
    BatchP2P,
    Collective,
    ComputeOp,
    Group,
    IsCompleted,
    P2P,
    Payload,
    Program,
    ProgramOp,
    RankProgram,
    Wait,
    Where,
)

_OP_PATH = re.compile(r"^\$\.ranks\[(\d+)\]\.ops\[(\d+)\](?:\.ops\[(\d+)\])?")


_KIND_PROGRAM = re.compile(r'"kind"\s*:\s*"program"')


def looks_like_program(text: str) -> bool:
    """Whether JSON text is a recorded program: its top-level "kind" is "program"
    (a quick scan first; only a text that has the key is parsed to confirm)."""
    if _KIND_PROGRAM.search(text) is None:
        return False
    try:
        return is_program_document(json.loads(text))
    except (ValueError, RecursionError):
        return False


def is_program_document(doc: Any) -> bool:
    """A parsed JSON document that says it is a recorded program."""
    return type(doc) is dict and doc.get("kind") == PROGRAM_KIND


def _place(source: str, path: str) -> str:
    m = _OP_PATH.match(path)
    if m:
        sub = f" (entry {m.group(3)} of the batch)" if m.group(3) is not None else ""
        return f"{source}: {path} (rank {m.group(1)} op {m.group(2)}{sub})"
    return f"{source}: {path}"


def program_from_dict(doc: Any, source: str = "<input>") -> Program:
    """Validate a parsed program document and build the IR (ScheduleError when unusable).

    The fast path (``verifier.format.program_fast``) builds a well-formed
    document in one pass; anything else takes the reference path below, which
    accepts it or names its fault."""
    built = program_fast.build(doc)
    if built is not None:
        return built
    return reference_program_from_dict(doc, source)


def reference_program_from_dict(doc: Any, source: str = "<input>") -> Program:
    """``program_from_dict`` without the fast path: the schema validator, the
    document checks, then the builder."""
    try:
        validate_program(doc)
    except SchemaViolation as v:
        raise ScheduleError(v.message, _place(source, v.path)) from None
    except RecursionError:
        raise ScheduleError("document nested too deeply", source) from None
    ranks = doc["ranks"]
    if len(ranks) != doc["num_ranks"]:
        raise ScheduleError(f"has {len(ranks)} rank programs but num_ranks is {doc['num_ranks']}",
                            f"{source}: $.ranks")
    for i, rp in enumerate(ranks):
        if rp["rank"] != i:
            raise ScheduleError(f"ranks[{i}] is the program of rank {rp['rank']}; the rank programs "
                                f"must be listed in rank order 0..{len(ranks) - 1}",
                                f"{source}: $.ranks[{i}].rank")
    seen_groups: set[int] = set()
    for i, g in enumerate(doc["groups"]):
        if g["id"] in seen_groups:
            raise ScheduleError(f"group id {g['id']} is declared twice", f"{source}: $.groups[{i}].id")
        seen_groups.add(g["id"])
        if len(set(g["ranks"])) != len(g["ranks"]):
            raise ScheduleError(f"group {g['id']} lists a rank twice: {g['ranks']}",
                                f"{source}: $.groups[{i}].ranks")
    groups = tuple(Group(g["id"], tuple(g["ranks"]), g.get("name", "")) for g in doc["groups"])
    built = tuple(_rank_program(i, rp, source) for i, rp in enumerate(ranks))
    recorded = doc.get("recorded")
    return Program(num_ranks=doc["num_ranks"], groups=groups, ranks=built,
                   recorded=dict(recorded) if recorded is not None else None,
                   name=doc.get("name", ""))


def _where(d: dict | None) -> Where:
    if d is None:
        return Where("?", 0)
    return Where(d["file"], d["line"], d.get("function", ""))


def _p2p(d: dict) -> P2P:
    pay = d.get("payload")
    return P2P(op=d["op"], peer=d["peer"], group=d["group"], shape=tuple(d["shape"]),
               dtype=d["dtype"], where=_where(d.get("where")), returned=d.get("returned", True),
               tag=d.get("tag", 0), handle=d.get("handle"),
               payload=None if pay is None else Payload(pay["kind"], pay["stage"], pay["mb"]))


def _op(d: dict) -> ProgramOp:
    op, where, returned = d["op"], _where(d.get("where")), d.get("returned", True)
    if op in ("send", "recv", "isend", "irecv"):
        return _p2p(d)
    if op == "batch":
        return BatchP2P(tuple(_p2p(x) for x in d["ops"]), where, returned)
    if op == "wait":
        return Wait(d["handle"], where, returned)
    if op == "is_completed":
        return IsCompleted(d["handle"], d["result"], where, returned)
    if op == "collective":
        shape = d.get("shape")
        return Collective(d["name"], d["group"], None if shape is None else tuple(shape),
                          d.get("dtype"), where, returned)
    return ComputeOp(d["kind"], d["stage"], d["mb"], where, returned)  # "compute" (the schema's last branch)


def _rank_program(rank: int, rp: dict, source: str) -> RankProgram:
    ops = tuple(_op(d) for d in rp["ops"])
    handles: dict[int, tuple] = {}  # handle -> (op, batch entry or None) that issued it

    def place(k: int, j: int | None) -> str:
        return f"$.ranks[{rank}].ops[{k}]" + ("" if j is None else f".ops[{j}]") + ".handle"

    for k, op in enumerate(ops):
        t = type(op)
        if t is P2P:
            entries, batch = (op,), False
        elif t is BatchP2P:
            entries, batch = op.ops, True
        else:
            continue
        for j, e in enumerate(entries):
            h = e.handle
            if h is None:
                continue
            if h in handles:
                raise ScheduleError(f"handle {h} is issued twice on rank {rank} "
                                    f"(first at {place(*handles[h])}); handle ids are unique per rank",
                                    _place(source, place(k, j if batch else None)))
            handles[h] = (k, j if batch else None)
    error = rp.get("error")
    return RankProgram(rank=rank, ops=ops, outcome=rp.get("outcome", "finished"),
                       error=None if error is None else str(error))


def parse_program_text(text: str, source: str = "<input>") -> Program:
    """Parse and build a program from JSON text (ScheduleError when unusable)."""
    # the collector paused over parsing too (as for schedules, format.io); the
    # parsed document is freed before it resumes, so its first pass visits
    # only the Program
    with paused_gc():
        return _parse_program_text(text, source)


def _parse_program_text(text: str, source: str) -> Program:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", source) from None
    except (RecursionError, ValueError) as e:
        raise ScheduleError(f"invalid JSON: {str(e).split(';')[0]}", source) from None
    return program_from_dict(doc, source)


def load_program(path: str | Path, *, limits: Limits | None = None) -> Program:
    """Read a program file ("-": standard input); ScheduleError for every bad input."""
    limits = limits or DEFAULT_LIMITS
    text = read_text(path, max_bytes=limits.max_bytes)
    source = source_name(path)
    check_program_size(text, limits, source)
    return parse_program_text(text, source)


def load_document(path: str | Path, fmt: str | None = None, *, limits: Limits | None = None):
    """A file that is a recorded program (``Program``) or a schedule
    (``(Schedule, Origin)``, as ``verifier.format.io.load_schedule_with_origin``),
    read once (standard input too)."""
    limits = limits or DEFAULT_LIMITS
    text = read_text(path, max_bytes=limits.max_bytes)
    if str(path) == STDIN:
        kind = fmt or sniff_format(text)
    else:
        kind = fmt or detect_format(path)
    if kind == "json" and looks_like_program(text):
        source = source_name(path)
        check_program_size(text, limits, source)
        return parse_program_text(text, source)
    return schedule_from_text(text, path, fmt, limits=limits)


def check_program_size(text: str, limits: Limits, source: str) -> None:
    """Refuse, before parsing, a program with more than ``--max-actions`` ops ("op" keys)."""
    n = text.count('"op"')
    if n > limits.max_actions:
        raise ScheduleError(f"has {n} \"op\" keys, more than the limit of {limits.max_actions} "
                            "actions; pass --max-actions N to raise it", source)


# ---------------------------------------------------------------- writing


def _where_dict(w: Where) -> dict:
    d: dict = {"file": w.file, "line": w.line}
    if w.function:
        d["function"] = w.function
    return d


def _p2p_dict(e: P2P, top: bool) -> dict:
    d: dict = {"op": e.op, "peer": e.peer, "group": e.group, "tag": e.tag,
               "shape": list(e.shape), "dtype": e.dtype}
    if e.handle is not None:
        d["handle"] = e.handle
    if e.payload is not None:
        d["payload"] = {"kind": e.payload.kind, "stage": e.payload.stage, "mb": e.payload.mb}
    if top:
        d["where"], d["returned"] = _where_dict(e.where), e.returned
    return d


def op_to_dict(op: ProgramOp) -> dict:
    if isinstance(op, P2P):
        return _p2p_dict(op, True)
    if isinstance(op, BatchP2P):
        d: dict = {"op": "batch", "ops": [_p2p_dict(e, False) for e in op.ops]}
    elif isinstance(op, Wait):
        d = {"op": "wait", "handle": op.handle}
    elif isinstance(op, IsCompleted):
        d = {"op": "is_completed", "handle": op.handle, "result": op.result}
    elif isinstance(op, Collective):
        d = {"op": "collective", "name": op.name, "group": op.group}
        if op.shape is not None:
            d["shape"] = list(op.shape)
        if op.dtype is not None:
            d["dtype"] = op.dtype
    else:
        d = {"op": "compute", "kind": op.kind, "stage": op.stage, "mb": op.mb}
    d["where"], d["returned"] = _where_dict(op.where), op.returned
    return d


def program_to_dict(p: Program) -> dict:
    doc: dict = {"format": "pp-schedule", "version": PROGRAM_VERSION, "kind": PROGRAM_KIND}
    if p.name:
        doc["name"] = p.name
    doc["num_ranks"] = p.num_ranks
    if p.recorded is not None:
        doc["recorded"] = dict(p.recorded)
    doc["groups"] = [{"id": g.id, "ranks": list(g.ranks), **({"name": g.name} if g.name else {})}
                     for g in p.groups]
    doc["ranks"] = [{"rank": rp.rank, "outcome": rp.outcome, "error": rp.error,
                     "ops": [op_to_dict(o) for o in rp.ops]} for rp in p.ranks]
    return doc


def dumps_program(p: Program) -> str:
    """The program as JSON text: one op a line."""
    doc = program_to_dict(p)
    ranks = doc.pop("ranks")
    head = json.dumps(doc)[:-1]
    parts = []
    for rp in ranks:
        ops = ",\n   ".join(json.dumps(o) for o in rp.pop("ops"))
        parts.append(json.dumps(rp)[:-1] + (', "ops": [\n   ' + ops + "\n  ]}" if ops else ', "ops": []}'))
    return head + ', "ranks": [\n  ' + ",\n  ".join(parts) + "\n]}\n"

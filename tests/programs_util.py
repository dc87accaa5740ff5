"""Building recorded programs (pp-schedule 1.1) by hand for the program tests."""

from __future__ import annotations

import json


def where(line: int, file: str = "train.py") -> dict:
    return {"file": file, "line": line, "function": "step"}


def p2p(op: str, peer: int, line: int, handle: int | None = None, shape=(4, 1024), dtype="bfloat16",
        group: int = 0, returned: bool = True, payload=None, top: bool = True) -> dict:
    d = {"op": op, "peer": peer, "group": group, "tag": 0, "shape": list(shape), "dtype": dtype}
    if handle is not None:
        d["handle"] = handle
    if payload is not None:
        d["payload"] = dict(zip(("kind", "stage", "mb"), payload))
    if top:
        d["where"], d["returned"] = where(line), returned
    return d


def batch(line: int, *entries: dict, returned: bool = True) -> dict:
    return {"op": "batch", "ops": list(entries), "where": where(line), "returned": returned}


def wait(handle: int, line: int, returned: bool = True) -> dict:
    return {"op": "wait", "handle": handle, "where": where(line), "returned": returned}


def coll(name: str, line: int, group: int = 0, returned: bool = True) -> dict:
    return {"op": "collective", "name": name, "group": group, "where": where(line), "returned": returned}


def program(*rank_ops: list, groups=None, outcomes=None, errors=None, recorded=None) -> dict:
    n = len(rank_ops)
    doc = {"format": "pp-schedule", "version": "1.1", "kind": "program", "num_ranks": n,
           "groups": groups or [{"id": 0, "ranks": list(range(n)), "name": "default"}],
           "ranks": [{"rank": r, "outcome": (outcomes or {}).get(r, "finished"),
                      "error": (errors or {}).get(r), "ops": list(ops)} for r, ops in enumerate(rank_ops)]}
    if recorded is not None:
        doc["recorded"] = recorded
    return doc


def text(doc: dict) -> str:
    return json.dumps(doc)

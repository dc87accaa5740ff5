"""Per-rank recording files and their merge into a recorded program (pp-schedule 1.1).

What it is: while a recorded script runs, each rank appends one JSON object per
line to its own part file (``rank<R>.jsonl`` in a parts folder), written with one
``os.write`` per line so that a hang, a kill or Ctrl-C loses nothing already
posted. The lines are of two sorts:

- an op, exactly as the program format states it (specs/SEMANTICS.md "Recorded
  programs") but without ``returned``: it has an ``"op"`` key;
- a control record with a ``"t"`` key: ``start`` (rank, world, command, torch
  version), ``group`` (a ``new_group``: id, ranks, name), ``backend`` (what the
  script asked ``init_process_group`` for and what it got), ``end`` (the script
  ended on this rank: outcome ``finished`` or ``raised`` with ``error``; ``blocked``
  is the index of the op an exception left) and ``stop`` (the launcher or the
  rank's own watchdog ended the rank; ``blocked`` is the index of the call it was
  inside, or null).

``PartWriter`` writes one rank's file; ``read_part`` reads one back (a torn last
line, from a kill mid-write, is dropped); ``merge`` builds the program from the
parts and what the launcher saw of each process (``RankEnd``).

``returned`` of an op is true unless it is the op the rank was blocked in (a
``stop`` or ``end`` record names it); when a hung rank left no such record
(it did not answer the launcher's stop), its last op is taken as not returned
if it is a blocking call (send, recv, wait, a collective). A rank killed from
outside leaves no such record and no guess is made: all its ops returned.

What it does not cover: recording itself (fastpath.record.recorder, which needs
torch), launching (fastpath.record.launch), checking (verifier). Imports no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

FORMAT, VERSION, KIND = "pp-schedule", "1.1", "program"
OUTCOMES = ("finished", "hung", "raised", "killed", "interrupted")
# the program's overall outcome: the most telling of its ranks' (the root cause first)
_PRIORITY = ("interrupted", "killed", "raised", "hung", "finished")
BLOCKING = ("send", "recv", "wait", "collective")
_CRASHES = ("SIGABRT", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL")  # a process's own death


def part_path(parts_dir: str, rank: int) -> str:
    return os.path.join(parts_dir, f"rank{rank}.jsonl")


def _not_json(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _line_encoder():
    """``record -> bytes``: compact ASCII JSON and a newline. json's C encoder is
    made once and reused (``JSONEncoder.encode`` builds one per call: half the
    cost of a record on the recorded rank's critical path); the same text."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
        return lambda record: (dumps(record) + "\n").encode()
    enc = make(None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda record: ("".join(enc(record, 0)) + "\n").encode()


class PartWriter:
    """Appends one rank's records to its part file, one ``os.write`` per line."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self._dumps = _line_encoder()

    def write(self, record: dict) -> None:
        os.write(self._fd, self._dumps(record))

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


@dataclass
class Part:
    """One rank's file, read back."""

    rank: int
    ops: list
    groups: list
    start: dict | None
    backend: dict | None
    end: dict | None  # the ``end`` record, if the script ended
    stop: dict | None  # the ``stop`` record, if the rank was ended from outside its script


def read_part(path: str, rank: int) -> Part:
    part = Part(rank, [], [], None, None, None, None)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return part
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # a line torn by a kill mid-write
            continue
        if "op" in rec:
            part.ops.append(rec)
            continue
        kind = rec.get("t")
        if kind == "group":
            part.groups.append(rec)
        elif kind in ("start", "backend", "end", "stop"):
            setattr(part, kind, rec)
    return part


@dataclass(frozen=True)
class RankEnd:
    """What the launcher saw of one rank's process: ``ended_by`` is None (it exited
    by itself), "timeout" (the watchdog stopped it), "interrupt" (Ctrl-C/SIGTERM
    to the launcher), "failure" (stopped after another rank failed) or "signal"
    (killed from outside: ``signal`` names it)."""

    ended_by: str | None = None
    signal: str | None = None


def rank_outcome(part: Part, end: RankEnd) -> tuple[str, str | None]:
    """(outcome, error) of one rank."""
    if part.end is not None and part.end.get("outcome") == "raised":
        return "raised", part.end.get("error")
    if end.ended_by == "signal":
        if end.signal in _CRASHES:
            return "killed", f"died by {end.signal} (a crash)"
        return "killed", f"killed by {end.signal or 'a signal'} from outside"
    if part.end is not None:
        return "finished", None
    if end.ended_by == "interrupt":
        return "interrupted", None
    if end.ended_by in ("timeout", "failure") or (end.ended_by is None and part.stop is not None):
        return "hung", None  # (a stop record alone: the rank's own watchdog, under torchrun)
    if part.start is None:
        return "raised", "the rank exited before its recording started"
    return "raised", "the rank exited without finishing its script"


def _blocked_index(part: Part, outcome: str) -> int | None:
    for rec in (part.stop, part.end):
        if rec is not None and rec.get("blocked") is not None:
            return int(rec["blocked"])
    if outcome == "hung" and part.stop is None and part.ops and part.ops[-1]["op"] in BLOCKING:
        return len(part.ops) - 1
    return None


def _ops_with_returned(part: Part, outcome: str) -> list:
    blocked = _blocked_index(part, outcome)
    out = []
    for i, op in enumerate(part.ops):
        returned = i != blocked
        op = dict(op, returned=returned)
        if op["op"] == "batch":
            op["ops"] = [dict(inner, where=op.get("where"), returned=returned)
                         for inner in op.get("ops", [])]
        out.append(op)
    return out


def _groups(parts: list[Part], num_ranks: int) -> list[dict]:
    groups = {0: {"id": 0, "ranks": list(range(num_ranks)), "name": "default"}}
    for part in parts:
        for g in part.groups:
            groups.setdefault(int(g["id"]), {"id": int(g["id"]), "ranks": list(g["ranks"]),
                                            "name": g.get("name") or f"group{g['id']}"})
    return [groups[k] for k in sorted(groups)]


def merge(parts_dir: str, num_ranks: int, *, command: list[str], timeout_s: float | None,
          ends: list[RankEnd] | None = None) -> dict:
    """The recorded program (a pp-schedule 1.1 ``program`` dict) from the parts folder."""
    parts = [read_part(part_path(parts_dir, r), r) for r in range(num_ranks)]
    ends = ends or [RankEnd() for _ in range(num_ranks)]
    ranks = []
    for part, end in zip(parts, ends):
        outcome, error = rank_outcome(part, end)
        ranks.append({"rank": part.rank, "outcome": outcome, "error": error,
                      "ops": _ops_with_returned(part, outcome)})
    overall = min((r["outcome"] for r in ranks), key=_PRIORITY.index) if ranks else "finished"
    backend = next((p.backend for p in parts if p.backend is not None), None) or {}
    start = next((p.start for p in parts if p.start is not None), None) or {}
    recorded = {
        "command": list(command),
        "backend_requested": backend.get("requested"),
        "backend_used": backend.get("used"),
        "torch": start.get("torch"),
        "timeout_s": timeout_s,
        "outcome": overall,
    }
    return {"format": FORMAT, "version": VERSION, "kind": KIND, "num_ranks": num_ranks,
            "recorded": recorded, "groups": _groups(parts, num_ranks), "ranks": ranks}


def dumps_program(program: dict) -> str:
    """The program as JSON text, one op per line (readable, diffable)."""
    one = json.JSONEncoder(separators=(", ", ": ")).encode
    head = {k: v for k, v in program.items() if k != "ranks"}
    lines = ["{"] + [f" {one(k)}: {one(v)}," for k, v in head.items()] + [' "ranks": [']
    for i, r in enumerate(program["ranks"]):
        meta = ", ".join(f"{one(k)}: {one(v)}" for k, v in r.items() if k != "ops")
        ops = ",\n".join(f"   {one(op)}" for op in r["ops"])
        body = f"\n{ops}\n  " if ops else ""
        end = "," if i + 1 < len(program["ranks"]) else ""
        lines.append(f"  {{{meta}, \"ops\": [{body}]}}{end}")
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


def write_program(program: dict, path: str) -> None:
    """Write ``program`` to ``path`` (atomically: a temporary file renamed over it)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dumps_program(program))
    os.replace(tmp, path)


def count_ops(program: dict) -> dict[str, int]:
    """How many point-to-point ops (batched ones counted one by one), collectives
    and computes the program holds, over all ranks."""
    n = {"p2p": 0, "collective": 0, "compute": 0}
    for r in program["ranks"]:
        for op in r["ops"]:
            kind = op["op"]
            if kind in ("send", "recv", "isend", "irecv"):
                n["p2p"] += 1
            elif kind == "batch":
                n["p2p"] += len(op.get("ops", []))
            elif kind in ("collective", "compute"):
                n[kind] += 1
    return n

"""Reading and writing schedules: the JSON format (pp-schedule 1.0) and the entry
point every command uses to load a file, JSON or PyTorch pipelining CSV.

Every input is schema-validated (verifier.format.schema) before anything else; a bad
input raises ScheduleError with one line naming the file, the JSON path (and
"rank R step S" where the path is inside a rank's actions) and the offending
value. Nothing here decides whether a schedule is *correct*: that is the
checker's job (ids out of range, wrong rank, etc. load fine and are reported as
property failures).

Not covered: the CSV dialect itself (verifier.format.csvio).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import IO, Any

from verifier.ir import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Action,
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    Route,
    Schedule,
    ScheduleError,
    Stage,
    _field_setters,
)
from verifier.program import PROGRAM_KIND
from verifier.format.csvio import csv_to_schedule, schedule_to_csv
from verifier.format.guard import DEFAULT as DEFAULT_LIMITS
from verifier.format.guard import Limits, check_size, paused_gc, printable, read_bounded  # noqa: F401  (paused_gc: re-exported)
from verifier.format.origin import Origin
from verifier.format.schema import SchemaViolation, validate

_ACTION_PATH = re.compile(r"^\$\.actions\[(\d+)\]\[(\d+)\]")
_COMPUTE = {k.value: k for k in ComputeKind}
_COMM = {k.value: k for k in CommKind}


def _where(source: str, path: str) -> str:
    m = _ACTION_PATH.match(path)
    if m:
        return f"{source}: {path} (rank {m.group(1)} step {m.group(2)})"
    return f"{source}: {path}"


# UTF-32 before UTF-16: the UTF-32-LE mark starts with the UTF-16-LE one.
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
    (b"\xfe\xff", "UTF-16-BE"),
)


def _near(text: str, pos: int) -> str:
    """The offending text at ``pos`` of a JSON document, for error messages."""
    snippet = text[pos : pos + 20].split("\n")[0]
    return f"near {snippet!r}" if snippet else "at end of line" if pos < len(text) else "at end of file"


def _decode(data: bytes, source: str) -> str:
    if not data.strip():
        raise ScheduleError("file is empty" if not data else "file has only whitespace", source)
    for bom, enc in _BOMS:
        if data.startswith(bom):
            raise ScheduleError(
                f"text is {enc} (byte-order mark {data[:len(bom)].hex(' ')}); "
                "schedules are UTF-8: re-save the file as UTF-8",
                source,
            )
    if b"\x00" in data[:4096]:
        raise ScheduleError(
            f"binary data, not a schedule (NUL byte at offset {data.index(0)})", source
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScheduleError(
            f"not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}", source
        ) from None


def parse_json_text(text: str, source: str = "<input>") -> Schedule:
    """Parse, validate and build a Schedule from JSON text."""
    with paused_gc():
        return _parse_json_text(text, source)


def _parse_json_text(text: str, source: str) -> Schedule:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError(
            f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg} ({_near(text, e.pos)})",
            source,
        ) from None
    except RecursionError:
        raise ScheduleError("invalid JSON: nested too deeply", source) from None
    except ValueError as e:  # an integer literal over Python's digit limit
        m = re.search(r"[0-9]{1000,}", text)
        if m is None:
            raise ScheduleError(f"invalid JSON: {str(e).split(';')[0]}", source) from None
        line = text.count("\n", 0, m.start()) + 1
        col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
        raise ScheduleError(
            f"invalid JSON at line {line} column {col}: integer literal of "
            f"{len(m.group())} digits ({_near(text, m.start())[:-1]}...'), too large",
            source,
        ) from None
    if text.count(":") != _num_keys(doc):  # a duplicate key, or a ':' inside a string
        _refuse_duplicate_keys(text, source)
    return schedule_from_dict(doc, source)


def _num_keys(doc: Any) -> int:
    """How many object keys ``doc`` holds where a schedule has objects (top
    level, stages, routes, actions and their f/b/ops, params): all of them in a
    schema-valid document, so a count of ':' in the text above it means a
    duplicate key or a ':' in a string (``_refuse_duplicate_keys`` then
    decides). In a document of another shape the count may be off either way;
    the schema then refuses it."""
    if type(doc) is not dict:
        return 0
    n = len(doc)
    for key in ("stages", "routes"):
        v = doc.get(key)
        if type(v) is list:
            n += sum(len(x) for x in v if type(x) is dict)
    params = doc.get("params")
    if type(params) is dict:
        n += _all_keys(params)
    try:  # the shape the schema asks for; any other shape counts 0 here
        for acts in doc.get("actions", ()):
            n += sum(map(len, acts))
            for a in acts:
                ops = a.get("ops")
                if ops is not None:
                    n += sum(map(len, ops))
                elif "f" in a:
                    n += len(a["f"]) + len(a["b"])
    except (TypeError, AttributeError, KeyError):
        pass  # not schema-valid: the slow check or the schema will say what is wrong
    return n


def _all_keys(x: Any) -> int:
    n, todo = 0, [x]
    while todo:
        x = todo.pop()
        if type(x) is dict:
            n += len(x)
            todo.extend(x.values())
        elif type(x) is list:
            todo.extend(x)
    return n


class _Pairs(list):
    """An object's (key, value) pairs as written, for finding a duplicate key."""


def _refuse_duplicate_keys(text: str, source: str) -> None:
    """ScheduleError naming the first key written twice in one object, with its
    JSON path; returns if there is none (the ':' counted was inside a string)."""
    doc = json.loads(text, object_pairs_hook=_Pairs)
    todo: list[tuple[Any, str]] = [(doc, "$")]
    while todo:
        x, path = todo.pop(0)
        if isinstance(x, _Pairs):
            seen: set = set()
            for k, v in x:
                if k in seen:
                    raise ScheduleError(
                        f"duplicate key {_short(k)!r} (JSON keeps only the last; "
                        "write each key once)", _where(source, path))
                seen.add(k)
                todo.append((v, f"{path}.{_short(k)}"))
        elif isinstance(x, list):
            todo.extend((v, f"{path}[{i}]") for i, v in enumerate(x))


def _short(key: str, limit: int = 60) -> str:
    key = printable(key)
    return key if len(key) <= limit else key[:limit] + f"...({len(key) - limit} more characters)"


def schedule_from_dict(doc: Any, source: str = "<input>") -> Schedule:
    """Validate a parsed JSON document against the schema and build the IR."""
    if type(doc) is dict and doc.get("kind") == PROGRAM_KIND:
        raise ScheduleError(
            "is a recorded program (\"kind\": \"program\"), not a schedule: "
            "`python -m verifier check` reads it (verifier.format.program)", source)
    try:
        validate(doc)
    except SchemaViolation as v:
        raise ScheduleError(v.message, _where(source, v.path)) from None
    except RecursionError:
        raise ScheduleError("document nested too deeply", source) from None
    if len(doc["actions"]) != doc["num_ranks"]:
        raise ScheduleError(
            f"has {len(doc['actions'])} rank lists but num_ranks is {doc['num_ranks']}",
            f"{source}: $.actions",
        )
    return Schedule(
        num_ranks=doc["num_ranks"],
        num_microbatches=doc["num_microbatches"],
        stages=tuple(Stage(s["id"], s["rank"], s["layer"]) for s in doc["stages"]),
        routes=tuple(
            Route(tuple(r["stages"]), tuple(r["microbatches"])) for r in doc["routes"]
        ),
        actions=_build_actions(doc["actions"]),
        name=doc.get("name", ""),
        family=doc.get("family", ""),
        params=doc.get("params", {}),
    )


# The loader builds every action object as object.__new__ plus its slots' setters
# (ir._field_setters: the same object as the constructor makes, at half the cost).
_SET_COMPUTE = _field_setters(Compute)  # kind, stage, mb
_SET_COMM = _field_setters(Comm)  # kind, stage, mb
_SET_OVERLAP = _field_setters(Overlap)  # f, b
_SET_BATCH = _field_setters(Batch)  # ops, wait


def _build_actions(ranks: list) -> tuple[tuple[Action, ...], ...]:
    """The IR of a schema-valid ``actions`` array (validated already: no checks here)."""
    new, compute, comm = object.__new__, _COMPUTE, _COMM
    ck, cs, cm = _SET_COMPUTE
    mk, ms, mm = _SET_COMM
    of, ob = _SET_OVERLAP
    bo, bw = _SET_BATCH
    out = []
    for acts in ranks:
        built: list[Action] = []
        add = built.append
        for a in acts:
            op = a["op"]
            k = compute.get(op)
            if k is not None:
                o = new(Compute)
                ck(o, k)
                cs(o, a["stage"])
                cm(o, a["mb"])
            else:
                k = comm.get(op)
                if k is not None:
                    o = new(Comm)
                    mk(o, k)
                    ms(o, a["stage"])
                    mm(o, a["mb"])
                elif op == "OVERLAP":
                    f, b = a["f"], a["b"]
                    x = new(Compute)
                    ck(x, compute[f["op"]])
                    cs(x, f["stage"])
                    cm(x, f["mb"])
                    y = new(Compute)
                    ck(y, compute[b["op"]])
                    cs(y, b["stage"])
                    cm(y, b["mb"])
                    o = new(Overlap)
                    of(o, x)
                    ob(o, y)
                else:  # BATCH (the schema allows nothing else)
                    ops = []
                    for c in a["ops"]:
                        x = new(Comm)
                        mk(x, comm[c["op"]])
                        ms(x, c["stage"])
                        mm(x, c["mb"])
                        ops.append(x)
                    o = new(Batch)
                    bo(o, tuple(ops))
                    bw(o, a["wait"])
            add(o)
        out.append(tuple(built))
    return tuple(out)


def action_to_dict(a: Action) -> dict:
    if isinstance(a, Compute) or isinstance(a, Comm):
        return {"op": a.kind.value, "stage": a.stage, "mb": a.mb}
    if isinstance(a, Overlap):
        return {"op": "OVERLAP", "f": action_to_dict(a.f), "b": action_to_dict(a.b)}
    return {"op": "BATCH", "ops": [action_to_dict(o) for o in a.ops], "wait": a.wait}


def schedule_to_dict(s: Schedule) -> dict:
    out: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
    if s.name:
        out["name"] = s.name
    if s.family:
        out["family"] = s.family
    if s.params:
        out["params"] = dict(s.params)
    out.update(
        num_ranks=s.num_ranks,
        num_microbatches=s.num_microbatches,
        stages=[{"id": x.id, "rank": x.rank, "layer": x.layer} for x in s.stages],
        routes=[
            {"stages": list(r.stages), "microbatches": list(r.microbatches)}
            for r in s.routes
        ],
        actions=[[action_to_dict(a) for a in acts] for acts in s.actions],
    )
    return out


def dumps_json(s: Schedule) -> str:
    """JSON text: readable (one stage, route or action per line) and diff-friendly."""
    d = schedule_to_dict(s)
    c = lambda x: json.dumps(x, separators=(", ", ": "))  # noqa: E731
    lines = ["{"]
    for key, val in d.items():
        if key in ("stages", "routes"):
            body = ",\n".join(f"    {c(x)}" for x in val)
            lines.append(f'  "{key}": [\n{body}\n  ],')
        elif key == "actions":
            ranks = []
            for acts in val:
                body = ",\n".join(f"      {c(a)}" for a in acts)
                ranks.append(f"    [\n{body}\n    ]" if acts else "    []")
            lines.append('  "actions": [\n' + ",\n".join(ranks) + "\n  ]")
        else:
            lines.append(f'  "{key}": {c(val)},')
    return "\n".join(lines) + "\n}\n"


def dump_json(s: Schedule, fp: IO[str]) -> None:
    fp.write(dumps_json(s))


def detect_format(path: str | Path) -> str:
    """'json' or 'csv' from the file extension (default json)."""
    return "csv" if str(path).lower().endswith(".csv") else "json"


STDIN = "-"  # the file name that means standard input


def source_name(path: str | Path) -> str:
    """How messages name ``path``: "<stdin>" for "-", else the path with control
    characters and undecodable bytes escaped (a newline in a name stays one line)."""
    return "<stdin>" if str(path) == STDIN else printable(str(path))


def load_schedule(path: str | Path, fmt: str | None = None, *,
                  limits: Limits | None = None) -> Schedule:
    """Load a schedule file (JSON or PyTorch CSV, by extension unless ``fmt``).

    ``path`` "-" reads standard input (named "<stdin>" in messages); its format
    is ``fmt`` or else sniffed: JSON when the text starts with "{" or "[",
    otherwise CSV. Raises ScheduleError (one line, names the file) for every
    kind of bad input, and for a file over ``limits`` (verifier.format.guard: bytes
    read, actions, stages x micro-batches; the defaults unless given).
    """
    return load_schedule_with_origin(path, fmt, limits=limits)[0]


def load_schedule_with_origin(path: str | Path, fmt: str | None = None, *,
                              limits: Limits | None = None):
    """``load_schedule`` and the ``verifier.format.origin.Origin`` of the file: what
    names the checker's places in the user's coordinates (CSV row and column)."""

    limits = limits or DEFAULT_LIMITS
    text = read_text(path, max_bytes=limits.max_bytes)
    return schedule_from_text(text, path, fmt, limits=limits)


def schedule_from_text(text: str, path: str | Path, fmt: str | None = None, *,
                       limits: Limits | None = None):
    """``load_schedule_with_origin`` on a file's text already read (``path`` names
    it and, without ``fmt``, gives the format by extension; "-" sniffs it)."""
    limits = limits or DEFAULT_LIMITS
    source = source_name(path)
    if str(path) == STDIN:
        fmt = fmt or sniff_format(text)
    else:
        fmt = fmt or detect_format(path)
    check_text_size(text, fmt, limits, source)
    if fmt == "csv":
        s, origin = csv_to_schedule(text, source=source), Origin(source, "csv", csv_text=text)
    else:
        s, origin = parse_json_text(text, source), Origin(source, "json")
    check_size(s, limits, source)
    return s, origin


def check_text_size(text: str, fmt: str, limits: Limits, source: str) -> None:
    """Refuse, before parsing, a text that holds more than ``--max-actions``
    actions: an upper bound counted in one pass (CSV: cells; JSON: "op" keys,
    which OVERLAP and BATCH hold more than one of), so that a file of many
    tiny actions is refused before millions of objects are built."""
    if fmt == "csv":
        n, what = text.count(",") + text.count("\n") + 1, "cells"
    else:
        n, what = text.count('"op"'), '"op" keys'
    if n > limits.max_actions:
        raise ScheduleError(
            f"has {n} {what}, more than the limit of {limits.max_actions} actions; "
            "pass --max-actions N to raise it", source)


def sniff_format(text: str) -> str:
    """'json' when the text starts with "{" or "[" (after blanks), else 'csv'."""
    return "json" if text.lstrip()[:1] in ("{", "[") else "csv"


def read_text(path: str | Path, max_bytes: int | None = None) -> str:
    """The text of a schedule file ("-": standard input), or ScheduleError (missing,
    directory, binary, not UTF-8, more than ``max_bytes``: default 256 MiB).

    Reads are bounded: a special file (/dev/zero, a pipe) is read only up to the
    limit, and binary data is refused at its first chunk."""
    limit = DEFAULT_LIMITS.max_bytes if max_bytes is None else max_bytes
    if str(path) == STDIN:
        import sys

        try:
            data = read_bounded(sys.stdin.buffer, limit, "<stdin>")
        except ScheduleError:
            raise
        except (OSError, ValueError, AttributeError) as e:  # closed or no stdin
            raise ScheduleError(f"cannot read standard input: {e}", "<stdin>") from None
        return _decode(data, "<stdin>")
    source = printable(str(path))
    try:
        with open(path, "rb") as fp:
            data = read_bounded(fp, limit, source)
    except FileNotFoundError:
        raise ScheduleError("no such file", source) from None
    except IsADirectoryError:
        raise ScheduleError("is a directory, expected a schedule file", source) from None
    except OSError as e:
        raise ScheduleError(f"cannot read: {e.strerror}", source) from None
    return _decode(data, source)


def save_schedule(s: Schedule, path: str | Path, fmt: str | None = None) -> None:
    fmt = fmt or detect_format(path)
    if fmt == "csv":
        text = schedule_to_csv(s)
    else:
        text = dumps_json(s)
    Path(path).write_text(text, encoding="utf-8")

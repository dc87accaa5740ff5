"""A small, fast validator for the subset of JSON Schema that specs/schedule.schema.json uses.

The schema file is the single statement of the format; this module compiles it
once into closures and checks parsed JSON against it, reporting the first fault
as a JSON path and the offending value. It supports: type, const, enum,
required, properties, additionalProperties: false, items, minItems, minimum,
maximum, local $ref, and oneOf. A oneOf carrying the annotation
``"discriminator": "op"`` is decided by the value of that property (every branch
fixes it with const or enum), which gives the same verdict as trying each branch
but names the fault precisely and costs one dictionary look-up.

Not covered: any other JSON Schema keyword (the compiler refuses a schema that
uses one, so the schema and the validator cannot drift apart silently).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "specs" / "schedule.schema.json"

_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "discriminator"}
_KNOWN = _ANNOTATIONS | {
    "type", "const", "enum", "required", "properties", "additionalProperties",
    "items", "minItems", "minimum", "maximum", "$ref", "oneOf",
}


class SchemaViolation(Exception):
    """Raised by a compiled validator: ``path`` is a JSON path, ``message`` the fault."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


Validator = Callable[[Any, Callable[[], str]], None]


class _Compiler:
    def __init__(self, root: dict):
        self.root = root
        self.refs: dict[str, list] = {}

    def ref(self, ref: str) -> Validator:
        if not ref.startswith("#/"):
            raise ValueError(f"schema: only local $ref is supported, got {ref!r}")
        if ref not in self.refs:
            cell: list = []
            self.refs[ref] = cell
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node[part]
            cell.append(self.compile(node))
        cell = self.refs[ref]
        return lambda v, p: cell[0](v, p)

    def compile(self, s: dict) -> Validator:
        unknown = set(s) - _KNOWN
        if unknown:
            raise ValueError(f"schema uses unsupported keywords {sorted(unknown)}")
        checks: list[Validator] = []
        if "$ref" in s:
            checks.append(self.ref(s["$ref"]))
        if "type" in s:
            tname = s["type"]
            tcheck = _TYPE_CHECKS[tname]

            def check_type(v, p, tcheck=tcheck, tname=tname):
                if not tcheck(v):
                    raise SchemaViolation(p(), f"expected {tname}, got {_show(v)}")

            checks.append(check_type)
        if "const" in s:
            const = s["const"]

            def check_const(v, p, const=const):
                if v != const or type(v) is not type(const):
                    raise SchemaViolation(p(), f"expected {_show(const)}, got {_show(v)}")

            checks.append(check_const)
        if "enum" in s:
            allowed = tuple(s["enum"])
            shown = ", ".join(str(a) for a in allowed)

            def check_enum(v, p, allowed=allowed, shown=shown):
                if not isinstance(v, (str, int)) or v not in allowed:
                    raise SchemaViolation(p(), f"expected one of {shown}, got {_show(v)}")

            checks.append(check_enum)
        if "minimum" in s or "maximum" in s:
            lo, hi = s.get("minimum"), s.get("maximum")

            def check_range(v, p, lo=lo, hi=hi):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    if lo is not None and v < lo:
                        raise SchemaViolation(p(), f"must be >= {lo}, got {v}")
                    if hi is not None and v > hi:
                        raise SchemaViolation(p(), f"must be <= {hi}, got {v}")

            checks.append(check_range)
        if "minItems" in s:
            n = s["minItems"]

            def check_min_items(v, p, n=n):
                if isinstance(v, list) and len(v) < n:
                    raise SchemaViolation(p(), f"must have at least {n} item(s), got {len(v)}")

            checks.append(check_min_items)
        if "required" in s:
            req = tuple(s["required"])

            def check_required(v, p, req=req):
                if isinstance(v, dict):
                    for k in req:
                        if k not in v:
                            raise SchemaViolation(p(), f"missing required key {k!r}")

            checks.append(check_required)
        if "properties" in s or s.get("additionalProperties") is False:
            props = {k: self.compile(sub) for k, sub in s.get("properties", {}).items()}
            closed = s.get("additionalProperties") is False

            def check_props(v, p, props=props, closed=closed):
                if not isinstance(v, dict):
                    return
                for k, x in v.items():
                    sub = props.get(k)
                    if sub is None:
                        if closed:
                            raise SchemaViolation(
                                p(), f"unknown key {k!r} (allowed: {', '.join(props)})"
                            )
                        continue
                    sub(x, lambda k=k: f"{p()}.{k}")

            checks.append(check_props)
        if "items" in s:
            item = self.compile(s["items"])

            def check_items(v, p, item=item):
                if isinstance(v, list):
                    for i, x in enumerate(v):
                        item(x, lambda i=i: f"{p()}[{i}]")

            checks.append(check_items)
        if "oneOf" in s:
            checks.append(self.one_of(s))
        if len(checks) == 1:
            return checks[0]

        def check_all(v, p, checks=tuple(checks)):
            for c in checks:
                c(v, p)

        return check_all

    def one_of(self, s: dict) -> Validator:
        branches = [self.compile(b) for b in s["oneOf"]]
        key = s.get("discriminator")
        if key is None:

            def check_one_of(v, p, branches=branches):
                ok = 0
                for b in branches:
                    try:
                        b(v, p)
                        ok += 1
                    except SchemaViolation:
                        pass
                if ok != 1:
                    raise SchemaViolation(p(), f"matches {ok} alternatives, expected exactly 1")

            return check_one_of
        table: dict[Any, Validator] = {}
        for raw, compiled in zip(s["oneOf"], branches):
            node = raw
            while "$ref" in node:
                target: Any = self.root
                for part in node["$ref"][2:].split("/"):
                    target = target[part]
                node = target
            spec = node["properties"][key]
            for val in spec["enum"] if "enum" in spec else [spec["const"]]:
                table[val] = compiled
        shown = ", ".join(str(k) for k in table)

        def check_tagged(v, p, table=table, key=key, shown=shown):
            if not isinstance(v, dict):
                raise SchemaViolation(p(), f"expected object, got {_show(v)}")
            if key not in v:
                raise SchemaViolation(p(), f"missing required key {key!r}")
            tag = v[key]
            branch = table.get(tag) if isinstance(tag, str) else None
            if branch is None:
                raise SchemaViolation(f"{p()}.{key}", f"unknown {key} {_show(tag)} (expected one of {shown})")
            branch(v, p)

        return check_tagged


def load_schema() -> dict:
    """The published schema (specs/schedule.schema.json; the project installs editable)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def compiled_validator() -> Validator:
    root = load_schema()
    return _Compiler(root).compile(root)


def validate(doc: Any) -> None:
    """Raise SchemaViolation naming the first place where ``doc`` breaks the schema."""
    compiled_validator()(doc, lambda: "$")

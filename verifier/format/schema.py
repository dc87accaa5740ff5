"""A small, fast validator for the subset of JSON Schema that specs/schedule.schema.json uses.

The schema file is the single statement of the format; this module compiles it
once, twice over: into generated Python source that only answers "valid or
not" (the hot path: a few plain comparisons per action), and into closures
that, run only on a document the first rejected, report the first fault as a
JSON path and the offending value. Tests hold the two to the same verdict. It supports: type, const, enum,
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
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from verifier.errors import SchemaViolation  # re-exported: raised by the validators

# The schema ships inside the package (package data); specs/schedule.schema.json
# is the published copy, kept identical by tests/test_packaging.py.
SCHEMA_PATH = Path(__file__).resolve().parent / "schedule.schema.json"

_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "discriminator"}
_KNOWN = _ANNOTATIONS | {
    "type", "const", "enum", "required", "properties", "additionalProperties",
    "items", "minItems", "minimum", "maximum", "$ref", "oneOf",
}


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


def _value_checks(s: dict) -> list[Validator]:
    """The checks of ``s``'s keywords on a value itself, in the order
    compile runs them: type, const, enum, minimum/maximum, minItems, required."""
    checks: list[Validator] = []
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
            if not isinstance(v, (str, int)) or isinstance(v, bool) or v not in allowed:
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
    return checks


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
        checks += _value_checks(s)
        checks += self.nested_checks(s)
        if len(checks) == 1:
            return checks[0]

        def check_all(v, p, checks=tuple(checks)):
            for c in checks:
                c(v, p)

        return check_all

    def nested_checks(self, s: dict) -> list[Validator]:
        """The checks of ``s``'s keywords on what a value holds: properties,
        items, oneOf (in that order)."""
        checks: list[Validator] = []
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
                                p(), f"unknown key {_show(k)} (allowed: {', '.join(props)})"
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
        return checks

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


class _SourceCompiler:
    """Compiles a schema into the source of one boolean function per node.

    Same keywords and the same meaning as ``_Compiler``; no paths, no messages.
    """

    def __init__(self, root: dict):
        self.root = root
        self.consts: dict[str, Any] = {}
        self.funcs: list[str] = []
        self.by_ref: dict[str, str] = {}

    def const(self, value: Any) -> str:
        name = f"_k{len(self.consts)}"
        self.consts[name] = value
        return name

    def resolve(self, ref: str) -> dict:
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def ref(self, ref: str) -> str:
        if ref not in self.by_ref:
            self.by_ref[ref] = f"_v{len(self.by_ref)}_{ref.rsplit('/', 1)[-1]}"
            self.function(self.by_ref[ref], self.resolve(ref))
        return self.by_ref[ref]

    def check(self, s: dict, x: str) -> str:
        """A boolean expression over variable ``x`` (calls a function for composites)."""
        if set(s) & {"properties", "required", "additionalProperties", "items", "oneOf", "$ref"}:
            if set(s) - _ANNOTATIONS == {"$ref"}:
                target = self.resolve(s["$ref"])
                if not set(target) - _ANNOTATIONS - {"type", "const", "enum", "minimum", "maximum", "minItems"}:
                    return f"({self.leaf(target, x) or 'True'})"  # inline a leaf definition
                return f"{self.ref(s['$ref'])}({x})"
            name = f"_v{len(self.by_ref)}_anon{len(self.funcs)}"
            self.by_ref[name] = name
            self.function(name, s)
            return f"{name}({x})"
        return self.leaf(s, x) or "True"

    def leaf(self, s: dict, x: str) -> str:
        """A boolean expression over the plain variable ``x`` for the scalar keywords."""
        conds = []
        t = s.get("type")
        if t is not None:
            conds.append({
                "object": f"type({x}) is dict", "array": f"type({x}) is list",
                "string": f"type({x}) is str", "boolean": f"type({x}) is bool",
                "integer": f"type({x}) is int", "number": f"type({x}) in (int, float)",
            }[t])
        if "const" in s:
            c = s["const"]
            conds.append(f"(type({x}) is {type(c).__name__} and {x} == {self.const(c)})")
        if "enum" in s:
            k = self.const(frozenset(s["enum"]))
            # an int never equals a str: an all-string enum needs only the str test
            kinds = "is str" if all(type(e) is str for e in s["enum"]) else "in (str, int)"
            conds.append(f"(type({x}) {kinds} and {x} in {k})")
        num = f"type({x}) in (int, float)"
        lo, hi = s.get("minimum"), s.get("maximum")
        if t in ("integer", "number"):  # the type test above guarantees a number
            if lo is not None and hi is not None:
                conds.append(f"({lo!r} <= {x} <= {hi!r})")
            elif lo is not None:
                conds.append(f"({x} >= {lo!r})")
            elif hi is not None:
                conds.append(f"({x} <= {hi!r})")
        else:
            if lo is not None:
                conds.append(f"(not ({num}) or {x} >= {lo!r})")
            if hi is not None:
                conds.append(f"(not ({num}) or {x} <= {hi!r})")
        if "minItems" in s:
            conds.append(f"len({x}) >= {s['minItems']}" if t == "array"
                         else f"(type({x}) is not list or len({x}) >= {s['minItems']})")
        return " and ".join(conds)

    def object_checks(self, s: dict) -> list[str]:
        """Lines checking ``x`` (known to be a dict) against the object keywords."""
        lines: list[str] = []
        props = s.get("properties", {})
        required = list(dict.fromkeys(s.get("required", ())))
        local = {k: f"p{i}" for i, k in enumerate(required)}
        if required:  # fetch each required value once; a missing key is a KeyError
            lines.append("try:")
            lines.extend(f"    {local[k]} = x[{k!r}]" for k in required)
            lines.append("except KeyError: return False")
        if s.get("additionalProperties") is False:
            allowed = self.const(frozenset(props))
            if set(required) <= set(props):
                # every required key is present: exactly that many keys means no others
                lines.append(
                    f"if len(x) != {len(required)} and not {allowed}.issuperset(x): return False"
                )
            else:
                lines.append(f"if not {allowed}.issuperset(x): return False")
        for key, sub in props.items():
            if key in local:
                cond = self.check(sub, local[key])
                if cond != "True":
                    lines.append(f"if not ({cond}): return False")
            else:
                cond = self.check(sub, "v")
                if cond != "True":
                    lines.append(f"if {key!r} in x:")
                    lines.append(f"    v = x[{key!r}]")
                    lines.append(f"    if not ({cond}): return False")
        return lines

    def tagged_table(self, name: str, s: dict) -> str:
        """The constant that maps each tag of a discriminated oneOf to its branch's function."""
        key = s["discriminator"]
        table = {}
        for raw in s["oneOf"]:
            cond = self.check(raw, "x")
            node = raw
            while "$ref" in node:
                node = self.resolve(node["$ref"])
            spec = node["properties"][key]
            m = re.fullmatch(r"(\w+)\(x\)", cond)
            if m:  # the branch is one generated function: dispatch to it directly
                fname = m.group(1)
            else:
                fname = f"{name}_b{len(self.funcs)}"
                self.funcs.append(f"def {fname}(x):\n    return {cond}\n")
            for val in spec["enum"] if "enum" in spec else [spec["const"]]:
                table[val] = fname
        return self.const(table)  # filled with functions after exec

    def function(self, name: str, s: dict) -> None:
        unknown = set(s) - _KNOWN
        if unknown:
            raise ValueError(f"schema uses unsupported keywords {sorted(unknown)}")
        body = []
        t = s.get("type")
        leaf = self.leaf(s, "x")
        if leaf:
            body.append(f"if not ({leaf}): return False")
        if "$ref" in s:
            body.append(f"if not {self.ref(s['$ref'])}(x): return False")
        objectish = set(s) & {"required", "properties", "additionalProperties"}
        obj = self.object_checks(s) if objectish else []
        if obj:
            if t == "object":  # the type test above returned already for anything else
                body.extend(obj)
            else:
                body.append("if type(x) is dict:")
                body.extend("    " + line for line in obj)
        if "items" in s:
            item = s["items"]
            while set(item) - _ANNOTATIONS == {"$ref"}:
                item = self.resolve(item["$ref"])
            if set(item) - _ANNOTATIONS == {"oneOf"} and item.get("discriminator") is not None:
                # a tagged union per item (the actions): dispatch inline, one call per item
                tname = self.tagged_table(name, item)
                loop = [
                    "if type(y) is not dict: return False",
                    f"t = y.get({item['discriminator']!r})",
                    f"f = {tname}.get(t) if type(t) is str else None",
                    "if f is None or not f(y): return False",
                ]
            else:
                cond = self.check(s["items"], "y")
                loop = [f"if not ({cond}): return False"] if cond != "True" else []
            if loop:
                indent = ""
                if t != "array":
                    body.append("if type(x) is list:")
                    indent = "    "
                body.append(f"{indent}for y in x:")
                body.extend(f"{indent}    {line}" for line in loop)
        if "oneOf" in s:
            key = s.get("discriminator")
            if key is None:
                branches = [self.check(b, "x") for b in s["oneOf"]]
                body.append(f"if ({' + '.join(f'bool({b})' for b in branches)}) != 1: return False")
            else:
                tname = self.tagged_table(name, s)
                body.append("if type(x) is not dict: return False")
                body.append(f"t = x.get({key!r})")
                body.append(f"f = {tname}.get(t) if type(t) is str else None")
                body.append("if f is None or not f(x): return False")
        body.append("return True")
        self.funcs.append(f"def {name}(x):\n" + "".join(f"    {b}\n" for b in body))

    def build(self, top_schema: dict | None = None) -> Callable[[Any], bool]:
        top = self.check(self.root if top_schema is None else top_schema, "doc")
        source = "".join(self.funcs) + f"def _validate(doc):\n    return {top}\n"
        namespace: dict[str, Any] = dict(self.consts)
        exec(compile(source, "<schedule.schema.json>", "exec"), namespace)
        for k, v in self.consts.items():  # discriminator tables: names -> functions
            if isinstance(v, dict):
                namespace[k] = {tag: namespace[fname] for tag, fname in v.items()}
        return namespace["_validate"]


def load_schema() -> dict:
    """The schedule schema, read from the package (verifier/schedule.schema.json)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def compiled_validator() -> Validator:
    root = load_schema()
    return _Compiler(root).compile(root)


@lru_cache(maxsize=1)
def fast_validator() -> Callable[[Any], bool]:
    """The schema as one generated boolean function (no messages)."""
    return _SourceCompiler(load_schema()).build()


def is_valid(doc: Any) -> bool:
    return fast_validator()(doc)


def validate(doc: Any) -> None:
    """Raise SchemaViolation naming the first place where ``doc`` breaks the schema."""
    if fast_validator()(doc):
        return
    compiled_validator()(doc, lambda: "$")
    raise SchemaViolation("$", "rejected by the schema")  # the two compilers disagree: a bug


@lru_cache(maxsize=1)
def program_validator() -> Validator:
    """The validator of a recorded program (``#/$defs/program`` of the same schema
    file: pp-schedule 1.1, ``"kind": "program"``)."""
    root = load_schema()
    return _Compiler(root).compile({"$ref": "#/$defs/program"})


@lru_cache(maxsize=1)
def fast_program_validator() -> Callable[[Any], bool]:
    """``#/$defs/program`` as one generated boolean function (no messages)."""
    return _SourceCompiler(load_schema()).build({"$ref": "#/$defs/program"})


def validate_program(doc: Any) -> None:
    """Raise SchemaViolation naming the first place where ``doc`` breaks the
    program schema (the generated check first; the one that names the fault
    only on a document it rejects)."""
    if fast_program_validator()(doc):
        return
    program_validator()(doc, lambda: "$")
    raise SchemaViolation("$", "rejected by the program schema")  # the two compilers disagree: a bug

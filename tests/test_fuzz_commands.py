"""Fuzzing every reading command in-process (issue 11): generated malformed JSON,
malformed CSV and wrong-but-loadable schedules go to check, analyze, show,
convert and reference run; the contract is asserted on each answer.

The contract: the command returns (no exception escapes ``main``), its exit
code is in its documented table (check 0-3; analyze, show 0-2; convert 0/2;
reference run 0-2), and an exit 2 is exactly one line on stderr, "error: ...",
naming the file it read. Under ``--format json`` an exit 2 also prints one
JSON error object on stdout.

Bounded by the hypothesis profile (tests/conftest.py: ``ci`` runs 25 examples
per test, derandomized); each example is a tiny schedule, so the module runs
in seconds.

Not covered: fastpath run (a multi-process launcher: tests/test_fastpath*.py),
hostile flags and output paths (tests/test_hostile.py).
"""

from __future__ import annotations

import io
import json
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.cli.app import main
from verifier.generators import FAMILIES, generate
from verifier.format.io import dumps_json, schedule_to_dict

_counter = itertools.count()

# command -> (argv after the file, documented exit codes)
COMMANDS = {
    "check": (["--engine", "graph"], {0, 1, 2, 3}),
    "check-json": (["--engine", "graph", "--format", "json"], {0, 1, 2, 3}),
    "analyze": ([], {0, 1, 2}),
    "show": ([], {0, 1, 2}),
    "convert": (["-o", "{out}"], {0, 2}),
}

_SMALL = [("1f1b", 2, 2), ("gpipe", 2, 3), ("zb-h1", 2, 2), ("zbv", 2, 4), ("dualpipev", 2, 4),
          ("dualpipe", 2, 4), ("interleaved-1f1b", 2, 4)]
_BASE = {(f, r, m, co): schedule_to_dict(generate(f, r, m, compute_only=co))
         for f, r, m in _SMALL for co in (False, True) if f in FAMILIES}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _run_all(workdir, name: str, data: bytes, commands=COMMANDS) -> None:
    path = workdir / f"{next(_counter)}-{name}"
    path.write_bytes(data)
    for cmd, (extra, allowed) in commands.items():
        argv = [cmd.split("-")[0], str(path),
                *[a.replace("{out}", str(workdir / f"out-{next(_counter)}.json")) for a in extra]]
        out, err = io.StringIO(), io.StringIO()
        rc = main(argv, out, err)  # an exception here fails the test: nothing may escape
        _assert_contract(cmd, argv, rc, out.getvalue(), err.getvalue(), str(path), allowed)
    return path


def _assert_contract(cmd, argv, rc, out, err, source, allowed) -> None:
    assert rc in allowed, (argv, rc, err)
    assert "Traceback" not in err
    if rc == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert source in err, (argv, err)
        assert len(err) <= 2100, len(err)
        if "--format" in argv:
            doc = json.loads(out)
            assert doc["format"] == "pp-error" and doc["exit_code"] == 2


# ------------------------------------------------------------ malformed JSON
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _paths(doc, prefix=()):
    """Every (path, value) in a JSON document."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def malformed_json(draw) -> bytes:
    doc = json.loads(json.dumps(draw(st.sampled_from(list(_BASE.values())))))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        how = draw(st.sampled_from(["replace", "delete", "add", "small-int"]))
        if how == "replace":
            parent[path[-1]] = draw(_json_value)
        elif how == "delete":
            del parent[path[-1]]
        elif how == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(_json_value)
        elif isinstance(parent[path[-1]], int) and not isinstance(parent[path[-1]], bool):
            parent[path[-1]] = draw(st.integers(-2, 12))
    text = json.dumps(doc, allow_nan=True)
    cut = draw(st.sampled_from(["none", "none", "truncate", "dup-key", "bytes"]))
    if cut == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif cut == "dup-key":
        text = text.replace('"version": "1.0"', '"version": "1.0", "version": "1.0"', 1)
    data = text.encode("utf-8", "surrogatepass")
    if cut == "bytes":
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.binary(max_size=4)) + data[pos:]
    return data


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=malformed_json())
def test_malformed_json_to_every_command(workdir, data):
    _run_all(workdir, "s.json", data)


# ------------------------------------------------------------ malformed CSV
_cell = st.one_of(
    st.sampled_from(["0F0", "1F0", "0B0", "1B0", "0I1", "1W1", "0F1", "1F1", "0B1", "1B1",
                     "0SEND_F0", "1RECV_F0", "1SEND_B0", "0RECV_B0", "(0F1;1B0)OVERLAP_F_B",
                     "0UNSHARD", "0RESHARD", "0REDUCE_GRAD", "", " ", "9F9", "0F99999999999",
                     "F", "0X0", "(", ";", '"', "0F0 ", "\t1B0"]),
    st.text(alphabet="0123456789FBIWSENDRCV_();, ", max_size=8),
)


@st.composite
def malformed_csv(draw) -> bytes:
    rows = draw(st.lists(st.lists(_cell, min_size=0, max_size=6), min_size=0, max_size=4))
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    text = sep.join(",".join(r) for r in rows) + draw(st.sampled_from(["", sep]))
    return text.encode("utf-8")


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=malformed_csv())
def test_malformed_csv_to_every_command(workdir, data):
    _run_all(workdir, "s.csv", data)


# ------------------------------------------------------------ wrong but loadable
@st.composite
def wrong_schedule(draw) -> bytes:
    """A schema-valid schedule with ids moved: undeclared stages, ranks that do
    not exist, micro-batches out of range, routes naming anything."""
    doc = json.loads(json.dumps(draw(st.sampled_from(list(_BASE.values())))))
    ids = st.one_of(st.integers(0, 6), st.sampled_from([99, 10_000_000]))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["stage-rank", "stage-id", "route", "route-mb", "action",
                                      "num", "swap", "duplicate", "drop"]))
        if where == "stage-rank":
            draw(st.sampled_from(doc["stages"]))["rank"] = draw(st.integers(0, 100_000))
        elif where == "stage-id":
            draw(st.sampled_from(doc["stages"]))["id"] = draw(ids)
        elif where == "route":
            r = draw(st.sampled_from(doc["routes"]))
            r["stages"] = draw(st.lists(ids, min_size=1, max_size=5))
        elif where == "route-mb":
            r = draw(st.sampled_from(doc["routes"]))
            r["microbatches"] = draw(st.lists(ids, max_size=5))
        elif where == "action":
            acts = [a for a in itertools.chain(*doc["actions"]) if "stage" in a]
            if acts:
                a = draw(st.sampled_from(acts))
                a[draw(st.sampled_from(["stage", "mb"]))] = draw(ids)
        elif where in ("swap", "duplicate", "drop"):  # well-formed, other properties break
            acts = draw(st.sampled_from(doc["actions"]))
            if len(acts) >= 2:
                i, j = draw(st.integers(0, len(acts) - 1)), draw(st.integers(0, len(acts) - 1))
                if where == "swap":
                    acts[i], acts[j] = acts[j], acts[i]
                elif where == "duplicate":
                    acts.insert(j, acts[i])
                else:
                    del acts[i]
        else:
            key = draw(st.sampled_from(["num_microbatches", "num_ranks"]))
            doc[key] = draw(st.integers(1, 8))
            if key == "num_ranks":
                doc["actions"] = (doc["actions"] + [[]] * 8)[: doc[key]]
    return dumps_json_doc(doc)


def dumps_json_doc(doc) -> bytes:
    return json.dumps(doc).encode("utf-8")


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=wrong_schedule())
def test_wrong_but_loadable_schedules_to_every_command(workdir, data):
    commands = dict(COMMANDS, **{"check-auto": ([], {0, 1, 2, 3})})  # z3 on what is well-formed
    path = _run_all(workdir, "w.json", data, commands)
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    from reference.cli import main as ref_main

    out, err = io.StringIO(), io.StringIO()
    argv = ["run", str(path), "--hidden", "4", "--batch", "1", "--seq", "1"]
    rc = ref_main(argv, out, err)
    _assert_contract("reference", argv, rc, out.getvalue(), err.getvalue(), str(path), {0, 1, 2})


def test_the_base_schedules_pass_every_command(workdir):
    """The unmutated schedules the fuzzers start from: every command succeeds."""
    for (fam, r, m, co), doc in _BASE.items():
        path = workdir / f"base-{fam}-{co}.json"
        path.write_text(dumps_json(generate(fam, r, m, compute_only=co)))
        for cmd in ("check", "analyze", "show"):
            out, err = io.StringIO(), io.StringIO()
            assert main([cmd, str(path)], out, err) == 0, (fam, cmd, err.getvalue())

"""The recorder's torch-free parts, and its command line's bad input (no rank is started).

- fastpath.record.parts: per-rank files merged into a program that the
  program reader accepts; outcomes, ``returned``, groups, a torn last line;
- fastpath.record.launch.summarize: the one-line messages and exit codes;
- ``python -m verifier record`` / ``-m verifier.record``: a missing script, a
  file that is not Python, bad flags, torch missing: one line, exit 2, no
  traceback, nothing started.

The runs themselves (real gloo ranks) are in tests/test_record_runs.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from fastpath.record import hooks
from fastpath.record.launch import check_target, summarize
from fastpath.record.parts import (PartWriter, RankEnd, count_ops, dumps_program, merge,
                                   part_path, read_part)
from verifier.cli.app import main as verifier_main
from verifier.errors import InputError
from verifier.format.program import program_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _where(line):
    return {"file": "train.py", "line": line, "function": "step"}


def _write(parts, rank, records):
    w = PartWriter(part_path(parts, rank))
    for r in records:
        w.write(r)
    w.close()


def _start(rank):
    return {"t": "start", "rank": rank, "world": 2, "pid": 1, "torch": "2.13.0"}


def _send(peer, line, kind="send", handle=None):
    op = {"op": kind, "peer": peer, "group": 0, "tag": 0, "shape": [2, 4], "dtype": "float32",
          "where": _where(line)}
    if handle is not None:
        op["handle"] = handle
    return op


def test_merge_of_a_hung_run_marks_the_blocked_calls(tmp_path):
    parts = str(tmp_path)
    _write(parts, 0, [_start(0), {"t": "backend", "requested": "nccl", "used": "gloo"},
                      _send(1, 10), {"t": "stop", "blocked": 0}])
    _write(parts, 1, [_start(1), _send(0, 10), {"t": "stop", "blocked": 0}])
    prog = merge(parts, 2, command=["train.py"], timeout_s=5.0,
                 ends=[RankEnd("timeout"), RankEnd("timeout")])
    assert prog["recorded"]["outcome"] == "hung"
    assert prog["recorded"]["backend_requested"] == "nccl"
    assert prog["recorded"]["backend_used"] == "gloo"
    assert [r["outcome"] for r in prog["ranks"]] == ["hung", "hung"]
    assert [op["returned"] for r in prog["ranks"] for op in r["ops"]] == [False, False]
    program_from_dict(json.loads(dumps_program(prog)), "<merged>")  # the reader accepts it
    code, message = summarize(prog, "out.json", ["train.py"], None)
    assert code == 5
    assert "rank 0 in send to rank 1 at train.py:10" in message
    assert "partial program written to out.json" in message


def test_merge_outcomes_and_root_cause(tmp_path):
    parts = str(tmp_path)
    _write(parts, 0, [_start(0), _send(1, 3),
                      {"t": "end", "outcome": "raised", "error": "ValueError: no (at train.py:4 in f)",
                       "blocked": None}])
    _write(parts, 1, [_start(1), {"op": "batch", "where": _where(7),
                                  "ops": [_send(0, 7, "irecv", 0) | {"where": None}]},
                      {"op": "wait", "handle": 0, "where": _where(8)}, {"t": "stop", "blocked": 1}])
    prog = merge(parts, 2, command=["train.py"], timeout_s=5.0,
                 ends=[RankEnd(), RankEnd("failure")])
    assert prog["recorded"]["outcome"] == "raised"
    r0, r1 = prog["ranks"]
    assert (r0["outcome"], r0["error"]) == ("raised", "ValueError: no (at train.py:4 in f)")
    assert r1["outcome"] == "hung"
    batch = r1["ops"][0]
    assert batch["returned"] and batch["ops"][0]["where"] == _where(7)
    assert r1["ops"][1]["returned"] is False
    assert count_ops(prog) == {"p2p": 2, "collective": 0, "compute": 0}
    program_from_dict(json.loads(dumps_program(prog)), "<merged>")
    code, message = summarize(prog, "o.json", ["train.py"], None)
    assert (code, message) == (5, "rank 0 raised ValueError: no (at train.py:4 in f); "
                                  "partial program written to o.json")


def test_killed_rank_and_torn_line(tmp_path):
    parts = str(tmp_path)
    _write(parts, 0, [_start(0), _send(1, 3), {"t": "end", "outcome": "finished", "error": None,
                                                "blocked": None}])
    _write(parts, 1, [_start(1), {"t": "group", "id": 1, "ranks": [0, 1], "name": "pp"}])
    with open(part_path(parts, 1), "a") as f:
        f.write('{"op": "recv", "peer": 0, "gro')  # a kill in the middle of a write
    assert read_part(part_path(parts, 1), 1).ops == []
    prog = merge(parts, 2, command=["t.py"], timeout_s=1.0,
                 ends=[RankEnd(), RankEnd("signal", "SIGKILL")])
    assert prog["recorded"]["outcome"] == "killed"
    assert prog["ranks"][1]["error"] == "killed by SIGKILL from outside"
    assert prog["groups"][1] == {"id": 1, "ranks": [0, 1], "name": "pp"}
    assert summarize(prog, "o.json", ["t.py"], None)[1].startswith(
        "rank 1 was killed by SIGKILL from outside")


def test_a_crash_is_not_called_a_kill_from_outside(tmp_path):
    parts = str(tmp_path)
    _write(parts, 0, [_start(0), _send(1, 3)])
    _write(parts, 1, [_start(1)])
    prog = merge(parts, 2, command=["t.py"], timeout_s=1.0,
                 ends=[RankEnd("failure"), RankEnd("signal", "SIGABRT")])
    assert prog["ranks"][1]["error"] == "died by SIGABRT (a crash)"
    assert summarize(prog, "o.json", ["t.py"], None)[1] == (
        "rank 1 died by SIGABRT (a crash); partial program written to o.json")


def test_no_point_to_point_call_is_bad_input(tmp_path):
    parts = str(tmp_path)
    for r in range(2):
        _write(parts, r, [_start(r), {"op": "collective", "name": "barrier", "group": 0,
                                      "where": _where(2)},
                          {"t": "end", "outcome": "finished", "error": None, "blocked": None}])
    prog = merge(parts, 2, command=["t.py"], timeout_s=1.0)
    code, message = summarize(prog, "o.json", ["t.py"], None)
    assert code == 2 and "t.py made no point-to-point call" in message
    assert summarize(prog, "o.json", ["t.py"], 130) == (
        130, "interrupted; partial program written to o.json")


def test_hooks_are_free_without_a_recording():
    assert hooks.ACTIVE is None
    hooks.compute("F", 0, 1)
    with hooks.payload("B", 2, 3):
        pass
    with pytest.raises(ValueError, match="kind must be one of"):
        hooks._checked("X", 0, 0)


@pytest.mark.parametrize("content, expected", [
    (None, "script not found"),
    ("#!/bin/sh\necho hi\n", "is not a Python script: invalid syntax at line 2"),
    (b"\x00\x01binary", "is not a Python script"),
])
def test_check_target(tmp_path, content, expected):
    path = tmp_path / "s.py"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=expected):
        check_target([str(path)])


def test_check_target_modules():
    check_target(["-m", "json.tool"])
    with pytest.raises(InputError, match="no module named 'no_such_mod_xyz'"):
        check_target(["-m", "no_such_mod_xyz"])


def _cli(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "verifier", "record", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv, expected", [
    (["--nproc", "2", "--", "missing.py"], "error: script not found: missing.py"),
    (["--nproc", "2", "--", "notpy.sh"], "error: notpy.sh is not a Python script"),
    (["--nproc", "0", "--", "ok.py"], "error: --nproc: must be at least 1, got 0"),
    (["--nproc", "2", "--timeout", "0", "--", "ok.py"], "error: --timeout: must be a positive"),
    (["--nproc", "2"], "error: SCRIPT: no script given"),
    (["--nproc", "2", "-m"], "error: -m: needs a module name"),
    (["--nproc", "2", "-m", "no_such_mod_xyz"], "error: -m: no module named 'no_such_mod_xyz'"),
    (["--nproc", "2", "--comm-model", "gloo", "--", "ok.py"], "error: --comm-model: only applies"),
    (["--nproc", "2", "--engine", "z3", "--", "ok.py"], "error: --engine: only applies"),
    (["--nproc", "2", "-o", "no/such/dir/p.json", "--", "ok.py"], "error: --output: folder"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, argv, expected):
    (tmp_path / "notpy.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "ok.py").write_text("print('hi')\n")
    r = _cli(*argv, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(expected), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "program.json").exists()  # nothing ran


def test_help_documents_every_flag_and_exit_code():
    out = io.StringIO()
    assert verifier_main(["record", "--help"], out, io.StringIO()) == 0
    text = out.getvalue()
    for flag in ("--nproc", "--timeout", "--output", "--check", "--comm-model", "--engine", "-m MODULE",
                 "torchrun --nproc-per-node"):
        assert flag in text
    for code in ("0 ", "1 ", "2 ", "3 ", "5 ", "130"):
        assert f"\n  {code}" in text


def test_without_torch_names_the_extra(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    script = tmp_path / "ok.py"
    script.write_text("print('hi')\n")
    err = io.StringIO()
    code = verifier_main(["record", "--nproc", "2", "-o", str(tmp_path / "p.json"), "--",
                          str(script)], io.StringIO(), err)
    assert code == 2
    assert err.getvalue().strip() == ("error: record needs torch, which is not installed: "
                                      "pip install 'ppverify[torch]'")
    from verifier import record as torchrun_entry

    assert torchrun_entry.main([str(script)]) == 2


def test_torchrun_entry_bad_command_line(capsys):
    from verifier import record as torchrun_entry

    assert torchrun_entry.main([]) == 2
    assert "no script given" in capsys.readouterr().err
    assert torchrun_entry.main(["--timeout", "-1", "x.py"]) == 2
    assert "--timeout: must be a positive number" in capsys.readouterr().err

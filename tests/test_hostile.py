"""Hostile input to every command (issue 11): one test per class of fault found,
and a table of hostile flags and output paths for every command.

The contract asserted everywhere: the exit code is in the documented table
(0-3, 5, 130), nothing escapes as an exception, a bad input is exit 2 with
exactly one line on stderr naming the file or flag, the place and the value,
and nothing unbounded is attempted (each case here finishes in well under a
second; an unbounded read or allocation would run for minutes or die).

Not covered: fastpath run (tests/test_fastpath*.py), the fuzzing of every
reading command (tests/test_fuzz_commands.py).
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from verifier.errors import FlagError
from verifier.cli.app import main
from verifier.generators import generate
from verifier.check.properties import require_well_formed
from verifier.format.guard import Limits, printable
from verifier.format.io import dumps_json, load_schedule, schedule_to_dict
from verifier.ir import ScheduleError

EXITS = {0, 1, 2, 3, 5, 130}


def run(argv, stdin: bytes | None = None, strict: bool = False, monkeypatch=None):
    """(rc, stdout, stderr) of ``python -m verifier ARGV`` in-process.

    ``strict``: stdout/stderr are UTF-8 text streams that refuse what UTF-8
    cannot encode (as a real terminal's do), not StringIO."""
    if strict:
        ob, eb = io.BytesIO(), io.BytesIO()
        out = io.TextIOWrapper(ob, encoding="utf-8", errors="strict", write_through=True)
        err = io.TextIOWrapper(eb, encoding="utf-8", errors="strict", write_through=True)
    else:
        out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(_Stream(stdin))))
    rc = main([str(a) for a in argv], out, err)
    if strict:
        return rc, ob.getvalue().decode(), eb.getvalue().decode()
    return rc, out.getvalue(), err.getvalue()


class _Stream(io.RawIOBase):
    """A readable stream: ``data`` then (if data ends in b"...") that last byte forever."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self):
        return True

    def readinto(self, b):
        n = len(b)
        if self.data.endswith(b"..."):
            body, fill = self.data[:-3], self.data[-4:-3]
            chunk = (body[self.pos:] + fill * n)[:n]
        else:
            chunk = self.data[self.pos:self.pos + n]
        b[:len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def one_line(rc, err, *needles):
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


def _doc(family="1f1b", r=2, m=2, compute_only=False) -> dict:
    return schedule_to_dict(generate(family, r, m, compute_only=compute_only))


def _write(tmp_path: Path, name: str, doc) -> str:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


# ------------------------------------------------- 1. loads, names what is not
def _undeclared(tmp_path):
    d = _doc()
    d["actions"][0][0]["stage"] = 99
    co = _doc(compute_only=True)
    co["actions"][1][0]["stage"] = 99
    route = _doc()
    route["routes"][0]["stages"] = [0, 99]
    rank = _doc()
    rank["stages"][1]["rank"] = 5
    return {
        "action": (_write(tmp_path, "action.json", d), "stage 99"),
        "compute_only": (_write(tmp_path, "co.json", co), "stage 99"),
        "route": (_write(tmp_path, "route.json", route), "stage 99"),
        "rank": (_write(tmp_path, "rank.json", rank), "rank 5"),
    }


def test_undeclared_ids_are_well_formed_refuted_by_check(tmp_path):
    for case, (path, value) in _undeclared(tmp_path).items():
        rc, out, err = run(["check", path, "--format", "json"])
        assert rc == 1, (case, err)
        doc = json.loads(out)
        assert doc["properties"]["well-formed"]["status"] == "fails", case
        assert any(value in v["message"] for v in doc["counterexamples"]), (case, doc)


@pytest.mark.parametrize("command", ["analyze", "show"])
def test_undeclared_ids_are_refused_by_the_engines(tmp_path, command):
    for case, (path, value) in _undeclared(tmp_path).items():
        rc, out, err = run([command, path])
        one_line(rc, err, path, "not well-formed", value)
        assert "DEADLOCK" not in out  # a stage on rank 5 is not a deadlock


def test_require_well_formed_is_the_one_gate(tmp_path):
    for case, (path, value) in _undeclared(tmp_path).items():
        s = load_schedule(path)
        with pytest.raises(ScheduleError) as e:
            require_well_formed(s, path, "fastpath run")
        assert path in str(e.value) and value in str(e.value) and "fastpath run" in str(e.value)
    require_well_formed(generate("dualpipev", 4, 8), "ok.json")  # passes


def test_reference_run_refuses_undeclared_ids(tmp_path):
    pytest.importorskip("torch")
    from reference.cli import main as ref_main

    for case, (path, value) in _undeclared(tmp_path).items():
        for force in ([], ["--force"]):
            out, err = io.StringIO(), io.StringIO()
            rc = ref_main(["run", path, *force], out, err)
            one_line(rc, err.getvalue(), path, value)


# ------------------------------------------------- 2. every exit-2 names the file
def test_out_of_range_microbatch_names_the_file(tmp_path):
    d = _doc()
    d["actions"][0][0]["mb"] = 50
    path = _write(tmp_path, "mb50.json", d)
    for command in ("analyze", "show"):
        rc, out, err = run([command, path])
        one_line(rc, err, path, "micro-batch 50", "rank 0 step 0")


def test_reference_force_on_a_routing_loop_names_the_file(tmp_path):
    pytest.importorskip("torch")
    from reference.cli import main as ref_main

    d = _doc()
    d["routes"][0]["stages"] = [0, 1, 0]
    path = _write(tmp_path, "loop.json", d)
    out, err = io.StringIO(), io.StringIO()
    rc = ref_main(["run", path, "--force"], out, err)
    one_line(rc, err.getvalue(), path, "stage 0")


# ------------------------------------------------- 3. text that cannot be printed
def test_lone_surrogate_name_is_printed_escaped(tmp_path):
    d = _doc()
    d["name"] = "bad \ud800 name"
    path = tmp_path / "surrogate.json"
    path.write_text(json.dumps(d))  # ensure_ascii: the file holds \ud800
    for argv in (["check", path], ["check", path, "--verbose"], ["analyze", path],
                 ["show", path], ["check", path, "--format", "json"],
                 ["analyze", path, "--format", "json"], ["show", path, "-o", tmp_path / "p.svg"],
                 ["show", path, "-o", tmp_path / "p.txt"], ["show", path, "-o", tmp_path / "p.png"]):
        rc, out, err = run(argv, strict=True)
        assert rc == 0, (argv, err)
        if "-o" not in argv:
            assert "\\ud800" in out, argv


def test_file_name_with_newline_and_bad_bytes_is_escaped(tmp_path):
    rc, out, err = run(["check", str(tmp_path / "a\nb.json")], strict=True)
    one_line(rc, err, "a\\nb.json", "no such file")
    bad = os.fsdecode(b"x\xff.json")  # an undecodable byte from argv (surrogateescape)
    rc, out, err = run(["check", str(tmp_path / bad)], strict=True)
    one_line(rc, err, "no such file")


# ------------------------------------------------- 4. unbounded reads and sizes
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_after_one_chunk():
    for command in ("check", "analyze", "show"):
        rc, out, err = run([command, "/dev/zero"])
        one_line(rc, err, "/dev/zero", "binary data")


def test_endless_stdin_is_bounded(monkeypatch):
    rc, out, err = run(["check", "-"], stdin=b"\x00...", monkeypatch=monkeypatch)
    one_line(rc, err, "<stdin>", "binary data")
    rc, out, err = run(["check", "-", "--max-bytes", "100000"], stdin=b"{ ...",
                       monkeypatch=monkeypatch)
    one_line(rc, err, "<stdin>", "larger than 100000 bytes", "--max-bytes")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_side_files_are_read_bounded(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    rc, out, err = run(["analyze", EX, "--costs", str(zero)])
    one_line(rc, err, str(zero), "binary data")
    rc, out, err = run(["analyze", EX, "--activation-bytes", str(zero)])
    one_line(rc, err, "--activation-bytes", "binary data")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000)
    rc, out, err = run(["analyze", EX, "--costs", str(deep)])
    one_line(rc, err, str(deep), "invalid JSON")


def test_file_over_max_bytes(tmp_path):
    path = _write(tmp_path, "s.json", dumps_json(generate("1f1b", 2, 4)))
    for command in ("check", "analyze", "show"):
        rc, out, err = run([command, path, "--max-bytes", "100"])
        one_line(rc, err, path, "larger than 100 bytes", "--max-bytes")
    rc, out, err = run(["convert", path, "-o", str(tmp_path / "x.csv"), "--max-bytes", "100"])
    one_line(rc, err, path, "--max-bytes")


def test_huge_declared_size_is_refused_up_front(tmp_path):
    d = _doc()
    d["num_microbatches"] = 10**7  # schema-valid: 2.5 KB asking for 2 x 10**7 cells
    path = _write(tmp_path, "bigm.json", d)
    for command in ("check", "analyze", "show"):
        rc, out, err = run([command, path])
        one_line(rc, err, path, "10000000 micro-batches", "--max-cells")
    rc, out, err = run(["check", str(tmp_path / "bigm.json"), "--max-actions", "5"])
    one_line(rc, err, "actions", "--max-actions")


def test_many_tiny_actions_are_refused_before_parsing(tmp_path):
    csv = tmp_path / "many.csv"
    csv.write_text(",".join(["0F0"] * 50) + "\n")
    rc, out, err = run(["check", str(csv), "--max-actions", "20"])
    one_line(rc, err, str(csv), "51 cells", "--max-actions")
    rc, out, err = run(["convert", str(csv), "-o", str(tmp_path / "x.json"), "--max-actions", "20"])
    one_line(rc, err, str(csv), "--max-actions")
    js = _write(tmp_path, "ops.json", _doc())
    rc, out, err = run(["analyze", js, "--max-actions", "3"])
    one_line(rc, err, js, '"op" keys', "--max-actions")


def test_generate_and_compare_refuse_huge_sizes_up_front():
    rc, out, err = run(["generate", "1f1b", "--ranks", "100000", "--microbatches", "100000"])
    one_line(rc, err, "10000000000 cells", "--max-cells")
    assert out == ""
    rc, out, err = run(["compare", "--ranks", "100000", "--microbatches", "100000"])
    one_line(rc, err, "cells", "--max-cells")


def test_counterexamples_are_capped_and_counted(tmp_path):
    d = _doc()
    d["num_microbatches"] = 500  # 498 micro-batches on no route: 498 counterexamples
    path = _write(tmp_path, "many.json", d)
    rc, out, err = run(["check", path])
    assert rc == 1
    assert out.count("[well-formed]") == 100
    assert "... and 398 more counterexamples (--max-counterexamples N prints more)" in out
    rc, out, err = run(["check", path, "--format", "json", "--max-counterexamples", "7"])
    doc = json.loads(out)
    assert len(doc["counterexamples"]) == 7
    assert doc["counterexamples_total"] == 498 and doc["counterexamples_omitted"] == 491
    wf = doc["properties"]["well-formed"]
    assert len(wf["violations"]) == 7 and wf["violations_omitted"] == 491


def test_limits_validate_themselves():
    with pytest.raises(FlagError, match="--max-bytes"):
        Limits(max_bytes=0)


# ------------------------------------------------- 5, 6. hostile flags and paths
EX = "specs/examples/1f1b.json"
ROOT = Path(__file__).resolve().parent.parent

# (argv, substrings of the one error line); every row must exit 2
HOSTILE_FLAGS = [
    (["show", EX, "--dt", "1e-9"], ("--dt", "--max-pixels")),
    (["show", EX, "--dt", "0"], ("--dt", "> 0")),
    (["show", EX, "--dt", "nan"], ("--dt",)),
    (["show", EX, "--dt", "inf"], ("--dt",)),
    (["show", EX, "--costs", "F=1,B=1e9,W=0"], ("text grid", "--max-pixels")),
    (["show", EX, "--costs", "F=1e-300,B=1e300"], ("--max-pixels",)),
    (["show", EX, "--costs", "F=1e-300,B=1e300", "-o", "{tmp}/p.png"], ("picture", "--max-pixels")),
    (["show", EX, "--scale", "1000", "-o", "{tmp}/p.png", "--max-pixels", "1000"], ("--max-pixels",)),
    (["show", EX, "--scale", "-1", "-o", "{tmp}/p.png"], ("--scale",)),
    (["show", EX, "--scale", "inf"], ("--scale",)),
    (["show", EX, "-o", "{tmp}/p.gif"], ("p.gif", "unknown picture format")),
    (["show", EX, "--max-pixels", "0"], ("--max-pixels",)),
    (["analyze", EX, "--costs", "F=-1"], ("F",)),
    (["analyze", EX, "--costs", "F=nan"], ("F",)),
    (["analyze", EX, "--costs", "F=1e999"], ("F",)),
    (["analyze", EX, "--costs", "F=1e307,B=1e307", "--format", "json"], ("costs", "overflow")),
    (["show", EX, "--costs", "F=1e307,B=1e307"], ("costs", "overflow")),
    (["compare", "--ranks", "4", "--microbatches", "8", "--costs", "F=1e307,B=1e307"], ("overflow",)),
    (["analyze", EX, "--chrome-trace", "{tmp}/" + "a" * 300 + ".json"], ("--chrome-trace", "too long")),
    (["check", "{tmp}/" + "a" * 300 + ".json"], ("too long",)),
    (["check", EX, "--timeout", "inf"], ("--timeout", "inf")),
    (["check", EX, "--timeout", "1e7"], ("--timeout", "1e7")),
    (["check", EX, "--timeout", "nan"], ("--timeout",)),
    (["check", EX, "--timeout", "0"], ("--timeout",)),
    (["check", EX, "--rlimit", "4294967296", "--engine", "z3"], ("--rlimit", "4294967296")),
    (["check", EX, "--rlimit", "0"], ("--rlimit",)),
    (["check", EX, "--memory-limit", "inf"], ("--memory-limit",)),
    (["check", EX, "--max-counterexamples", "-3"], ("--max-counterexamples",)),
    (["check", EX, "--max-bytes", "1e400"], ("--max-bytes",)),
    (["check", EX, "--format", "xml"], ("--format",)),
    (["generate", "1f1b", "--ranks", "0", "--microbatches", "4"], ("0",)),
    (["generate", "1f1b", "--ranks", "-5", "--microbatches", "4"], ("-5",)),
    (["generate", "1f1b", "--ranks", "4", "--microbatches", "99999999999999999999"], ("--max-cells",)),
    (["generate", "interleaved-1f1b", "--ranks", "4", "--microbatches", "8", "--chunks", "0"], ("0",)),
    (["compare", "--ranks", "0", "--microbatches", "4"], ("--ranks",)),
    (["compare", "--ranks", "4", "--microbatches", "8", "--chunks", "-1"], ("--chunks",)),
    (["compare", "--ranks", "4", "--microbatches", "8", "--families", "nope"], ("nope",)),
    (["compare", "--ranks", "4", "--microbatches", "8", "-o", "{tmp}/c.gif"], ("c.gif",)),
    (["synthesize", "--ranks", "100000", "--microbatches", "100000"], ("--max-cells",)),
    (["synthesize", "--ranks", "2", "--microbatches", "2", "--rlimit", "4294967296"], ("--rlimit",)),
    (["synthesize", "--ranks", "2", "--microbatches", "2", "-o", "/nodir/x.json"], ("-o /nodir/x.json",)),
    # output paths: missing directory, a directory, a full device
    (["analyze", EX, "--chrome-trace", "/nodir/x.json"], ("--chrome-trace /nodir/x.json", "no directory")),
    (["analyze", EX, "--chrome-trace", "{tmp}"], ("--chrome-trace", "is a directory")),
    (["show", EX, "-o", "/nodir/x.png"], ("-o /nodir/x.png",)),
    (["show", EX, "-o", "{tmp}/d.svg"], ("d.svg", "is a directory")),
    (["convert", EX, "-o", "/nodir/x.json"], ("/nodir/x.json",)),
    (["convert", EX, "-o", "{tmp}"], ("is a directory",)),
    (["generate", "1f1b", "--ranks", "2", "--microbatches", "2", "-o", "/nodir/x.json"], ("-o /nodir/x.json",)),
    (["generate", "1f1b", "--ranks", "2", "--microbatches", "2", "-o", "{tmp}"], ("is a directory",)),
    (["compare", "--ranks", "2", "--microbatches", "4", "-o", "/nodir/x.svg"], ("-o /nodir/x.svg",)),
    (["compare", "--ranks", "2", "--microbatches", "4", "-o", "{tmp}/d.svg"], ("is a directory",)),
]
if Path("/dev/full").exists():
    HOSTILE_FLAGS += [
        (["analyze", EX, "--chrome-trace", "/dev/full"], ("--chrome-trace /dev/full", "No space")),
        (["convert", EX, "-o", "/dev/full", "--compute-only"], ("-o /dev/full", "No space")),
        (["generate", "1f1b", "--ranks", "2", "--microbatches", "2", "-o", "/dev/full"], ("/dev/full",)),
    ]


@pytest.mark.parametrize("argv,needles", HOSTILE_FLAGS, ids=lambda x: " ".join(x)[:60]
                         if isinstance(x, list) else "")
def test_hostile_flags_and_paths(argv, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "d.svg").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc, out, err = run(argv)
    one_line(rc, err, *needles)
    # an output path was checked before any work: nothing written, no temp files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.svg"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_directory_is_refused_before_work(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for argv in (["analyze", EX, "--chrome-trace", ro / "t.json"], ["show", EX, "-o", ro / "p.svg"],
                     ["convert", EX, "-o", ro / "x.json"],
                     ["generate", "1f1b", "--ranks", "2", "--microbatches", "2", "-o", ro / "g.json"]):
            rc, out, err = run(argv)
            one_line(rc, err, str(ro), "not writable")
    finally:
        ro.chmod(0o700)


def test_reference_hostile_flags(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from reference.cli import main as ref_main

    monkeypatch.chdir(ROOT)
    for argv, needle in (
        (["run", EX, "--hidden", "100000"], "--max-elements"),
        (["run", EX, "--batch", "100000000", "--seq", "100000000"], "--max-elements"),
        (["run", EX, "--layers-per-stage", "100000000"], "--max-elements"),
        (["run", EX, "--seed", "99999999999999999999999"], "--seed"),
        (["run", EX, "--seed", "-1"], "--seed"),
        (["run", EX, "--max-bytes", "10"], "--max-bytes"),
        (["run", "/nodir/x.json"], "no such file"),
    ):
        out, err = io.StringIO(), io.StringIO()
        rc = ref_main(argv, out, err)
        one_line(rc, err.getvalue(), needle)


# ------------------------------------------------- 9. JSON hygiene
def test_duplicate_keys_are_an_error_naming_key_and_path(tmp_path):
    text = dumps_json(generate("1f1b", 2, 2))
    top = text.replace('"version": "1.0",', '"version": "1.0", "version": "1.0",', 1)
    nested = text.replace('"op": "F", "stage": 0, "mb": 0}',
                          '"op": "F", "stage": 0, "mb": 0, "mb": 1}', 1)
    for name, doc, needles in (("top.json", top, ("duplicate key 'version'", "$:")),
                               ("nested.json", nested,
                                ("duplicate key 'mb'", "$.actions[0][0]", "rank 0 step 0"))):
        path = _write(tmp_path, name, doc)
        rc, out, err = run(["check", path])
        one_line(rc, err, path, *needles)
    # a ':' inside a string is not a duplicate
    d = _doc()
    d["name"] = "a: b: c"
    rc, out, err = run(["check", _write(tmp_path, "colon.json", d)])
    assert rc == 0, err


def test_huge_unknown_key_gives_a_bounded_message(tmp_path):
    d = _doc()
    d["k" * 1_000_000] = 1
    path = _write(tmp_path, "bigkey.json", d)
    rc, out, err = run(["check", path])
    one_line(rc, err, path, "unknown key 'kkkk")
    assert len(err) < 500


def test_json_errors_under_format_json(tmp_path):
    path = _write(tmp_path, "broken.json", '{"format": "pp-schedule", "version": ')
    for argv in (["check", path, "--format", "json"], ["analyze", path, "--format", "json"],
                 ["check", path, "--format=json", "--timeout", "inf"],
                 ["compare", "--ranks", "0", "--microbatches", "4", "--format", "json"]):
        rc, out, err = run(argv)
        one_line(rc, err)
        assert out.count("\n") == 1, out
        doc = json.loads(out)
        assert doc["format"] == "pp-error" and doc["exit_code"] == 2
        assert doc["error"]["message"] == err[len("error: "):].rstrip("\n")
        assert doc["error"]["kind"] in ("bad-input", "usage")
    # text mode: nothing on stdout
    rc, out, err = run(["check", path])
    assert rc == 2 and out == ""


def test_printable_escapes_only_what_it_must():
    assert printable("dualpipe v.json") == "dualpipe v.json"
    assert printable("é.json") == "é.json"
    assert printable("a\nb\x1b\ud800") == "a\\nb\\x1b\\ud800"


def test_verbose_grid_is_bounded(monkeypatch):
    import verifier.cli.check_text as check_text

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(check_text, "GRID_MAX_CELLS", 5)
    rc, out, err = run(["check", EX, "--verbose", "--engine", "graph"])
    assert rc == 0, err
    assert "grid omitted:" in out and "more than 5 cells" in out


class _FullDisk(io.StringIO):
    name = "<stdout>"

    def write(self, text):
        raise OSError(28, "No space left on device")


_DUALPIPE = str(Path(__file__).resolve().parents[1] / "specs" / "examples" / "dualpipe.json")


@pytest.mark.parametrize("argv", [
    ["check", _DUALPIPE],
    ["check", _DUALPIPE, "--format", "json"],
    ["generate", "1f1b", "--ranks", "2", "--microbatches", "2"],
    ["check", "--help"],
])
def test_output_that_cannot_be_written_is_one_line_exit_2(argv):
    """A full disk under standard output (in-process: every write fails)."""
    err = io.StringIO()
    rc = main(argv, _FullDisk(), err)
    assert rc == 2
    assert err.getvalue() == "error: cannot write to standard output: No space left on device\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_dev_full_is_one_line_exit_2():
    """The whole process: the output is buffered, so the failure surfaces at
    the final flush (verifier/__main__.py), which answers it the same way."""
    import subprocess

    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "verifier", "check", _DUALPIPE], stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2, p.stderr
    assert p.stderr == "error: cannot write to standard output: No space left on device\n"

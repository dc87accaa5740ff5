"""The bad-input corpus (tests/bad_inputs/): every malformed file gives one clean line.

For each file the real CLI (``verifier.cli.app.main``; a few also as a real
``python -m verifier`` process) runs ``convert`` on it, JSON to CSV and CSV to
JSON, and ``verifier.format.io.load_schedule`` loads it directly. Asserted: exit 2,
nothing on stdout, exactly one line on stderr, no traceback, no output file
left behind, and the message names the file, the place (JSON path with rank
and step, CSV row/rank and column, or line and column) and the offending
value, as listed in EXPECTED below.

Fuzzing (hypothesis) then feeds random CSV text, edited JSON text and random
bytes to the readers: each either loads or raises ScheduleError with one line.

The ``tocsv_*`` files are valid schedules that the CSV form cannot express:
they load, and only the conversion to CSV is refused.

Not covered: schedules that load but are *wrong* (the checker's properties).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from verifier.cli.app import main
from verifier.format.io import load_schedule
from verifier.ir import ScheduleError

CORPUS = Path(__file__).parent / "bad_inputs"
ROOT = Path(__file__).resolve().parent.parent

# file -> substrings the one-line message must contain (place and value)
EXPECTED: dict[str, tuple[str, ...]] = {
    # --- not a schedule at all
    "empty.json": ("file is empty",),
    "whitespace_only.json": ("file has only whitespace",),
    "empty.csv": ("file is empty",),
    "directory.json": ("is a directory",),
    "binary_junk.json": ("binary data", "NUL byte at offset 0"),
    "binary.csv": ("binary data", "NUL byte at offset 4"),
    "utf16.json": ("UTF-16-LE", "byte-order mark ff fe"),
    "utf16.csv": ("UTF-16-LE", "byte-order mark ff fe"),
    "latin1.json": ("not UTF-8", "byte 0xe9 at offset 62"),
    # --- broken JSON syntax
    "truncated.json": ("line 38 column 1", "at end of file"),
    "trailing_comma.json": ("line 18 column 2", "near '],'"),
    "deeply_nested.json": ("nested too deeply",),
    "huge_int_literal.json": ("line 6 column 22", "5000 digits", "'99999"),
    "nan.json": ("$.num_ranks", "got NaN"),
    "infinite_float.json": ("$.num_microbatches", "got Infinity"),
    # --- schema: shape, types, ranges
    "not_an_object.json": ("$:", "expected object, got [1, 2]"),
    "null_document.json": ("$:", "got null"),
    "missing_routes.json": ("$:", "missing required key 'routes'"),
    "wrong_format.json": ("$.format", "got 'pp-sched'"),
    "wrong_version.json": ("$.version", "expected '1.0', got '2.0'"),
    "num_ranks_string.json": ("$.num_ranks", "expected integer, got '2'"),
    "zero_ranks.json": ("$.num_ranks", "must be >= 1, got 0"),
    "stage_id_bool.json": ("$.stages[1].id", "got true"),
    "negative_stage.json": ("$.actions[0][1].stage", "rank 0 step 1", "got -1"),
    "huge_microbatch.json": ("$.actions[1][2].mb", "rank 1 step 2", "got 1000000000000"),
    "float_stage.json": ("$.actions[1][3].stage", "rank 1 step 3", "got 1.5"),
    "unknown_op.json": ("$.actions[1][0].op", "rank 1 step 0", "'FWD'"),
    "missing_mb.json": ("$.actions[0][2]", "rank 0 step 2", "missing required key 'mb'"),
    "extra_key.json": ("$.actions[0][0]", "rank 0 step 0", "unknown key 'micro'"),
    "empty_rank_list.json": ("$.actions", "at least 1 item", "got 0"),
    "ranks_mismatch.json": ("$.actions", "2 rank lists", "num_ranks is 3"),
    "overlap_with_comm.json": ("$.actions[0][2].f.op", "rank 0 step 2", "'SEND_F'"),
    "batch_empty_ops.json": ("$.actions[1][1].ops", "rank 1 step 1", "got 0"),
    "batch_wait_string.json": ("$.actions[1][1].wait", "rank 1 step 1", "got 'yes'"),
    "route_no_stages.json": ("$.routes[0].stages", "got 0"),
    "name_not_string.json": ("$.name", "got 5"),
    "action_not_object.json": ("$.actions[1][2]", "rank 1 step 2", "got '1F1'"),
    # --- valid JSON, but no CSV form (only `convert ... -o x.csv` refuses)
    "tocsv_two_routes.json": ("cannot convert to CSV", "has 2 routes"),
    "tocsv_tied_layers.json": ("cannot convert to CSV", "stage 1 holds layer 0"),
    "tocsv_batch.json": ("rank 0 step 1", "BATCH of 1 op", "--flatten-batches"),
    "tocsv_wrong_rank.json": ("rank 0 step 4", "1W0", "placed on rank 1"),
    # --- PyTorch CSV
    "garbage.csv": ("row 1 (rank 0) column 1", "'hello'"),
    "unknown_action.csv": ("row 1 (rank 0) column 2", "'X'", "'0X0'"),
    "legacy_bw.csv": ("row 1 (rank 0) column 2", "'BW'", "'0BW0'"),
    "lowercase_action.csv": ("row 1 (rank 0) column 2", "'0f1'"),
    "fsdp_in_overlap.csv": ("row 1 (rank 0) column 3", "UNSHARD", "'(0B0;0UNSHARD)OVERLAP_F_B'"),
    "bad_microbatch.csv": ("row 1 (rank 0) column 2", "'0F-1'"),
    "missing_microbatch.csv": ("row 2 (rank 1) column 1", "'1F'", "no micro-batch id"),
    "huge_microbatch.csv": ("row 1 (rank 0) column 2", "micro-batch id 99999999999"),
    "huge_digits.csv": ("row 1 (rank 0) column 2", "stage id 11111111111111111111..."),
    "stage_gap.csv": ("stage(s) 1 appear in no action",),
    "overlap_three.csv": ("row 2 (rank 1) column 1", "'(1F1;1B0;1W0)OVERLAP_F_B'", "3 sub-action"),
    "overlap_two_forwards.csv": ("row 1 (rank 0) column 1", "'(0F1;1F0)OVERLAP_F_B'"),
    "overlap_unclosed.csv": ("row 1 (rank 0) column 2", "'(0F1;1B0OVERLAP_F_B'"),
    "unclosed_quote.csv": ("line 1", "malformed CSV", "'0F0,\"1F0'"),
    "only_commas.csv": ("no actions", "2 row(s)"),
}

FILES = sorted(p.name for p in CORPUS.iterdir())


def test_corpus_is_complete():
    assert len(FILES) >= 30
    assert set(FILES) == set(EXPECTED), "every corpus file needs an EXPECTED entry"
    assert (CORPUS / "directory.json").is_dir()


def _out_path(name: str, tmp_path: Path) -> Path:
    return tmp_path / ("out.json" if name.endswith(".csv") else "out.csv")


def _check_line(err: str, path: Path, name: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith(f"error: {path}"), err
    for part in EXPECTED[name]:
        assert part in err, f"{name}: {part!r} not in {err!r}"


@pytest.mark.parametrize("name", FILES)
def test_cli_convert_refuses_with_one_located_line(name, tmp_path):
    path = CORPUS / name
    out_file = _out_path(name, tmp_path)
    out, err = io.StringIO(), io.StringIO()
    rc = main(["convert", str(path), "-o", str(out_file)], out, err)
    assert rc == 2
    assert out.getvalue() == ""
    _check_line(err.getvalue(), path, name)
    assert list(tmp_path.iterdir()) == [], "a refused conversion must leave no output"


@pytest.mark.parametrize("name", FILES)
def test_load_schedule_raises_one_located_line(name):
    path = CORPUS / name
    if name.startswith("tocsv_"):
        s = load_schedule(path)  # valid: only CSV output is refused
        assert s.num_ranks >= 1
        return
    with pytest.raises(ScheduleError) as e:
        load_schedule(path)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    _check_line(f"error: {msg}\n", path, name)


@pytest.mark.parametrize(
    "name", ["truncated.json", "unknown_op.json", "fsdp_in_overlap.csv",
             "binary_junk.json", "directory.json", "tocsv_two_routes.json"]
)
def test_real_process(name, tmp_path):
    path = CORPUS / name
    proc = subprocess.run(
        [sys.executable, "-m", "verifier", "convert", str(path), "-o",
         str(_out_path(name, tmp_path))],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    _check_line(proc.stderr, path, name)


def test_missing_file_and_usage(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    missing = tmp_path / "nope.json"
    assert main(["convert", str(missing), "-o", str(tmp_path / "x.csv")], out, err) == 2
    assert err.getvalue() == f"error: {missing}: no such file\n"
    out, err = io.StringIO(), io.StringIO()
    assert main(["convert", str(missing), "-o", "x", "--to", "yaml"], out, err) == 2
    assert err.getvalue().count("\n") == 1 and "yaml" in err.getvalue()


# ------------------------------------------------------------ fuzzing: never a traceback

from hypothesis import given, strategies as st  # noqa: E402

from verifier.format.csvio import csv_to_schedule  # noqa: E402
from verifier.format.io import parse_json_text  # noqa: E402

_CSV_ALPHABET = "0123456789FBIWSENDRCV_OLAPUH(;), \"\n\r\t"
_CSV_TOKENS = st.sampled_from(
    ["0F0", "1B0", "2I1", "0W1", "0SEND_F0", "1RECV_F0", "1SEND_B0", "0RECV_B0",
     "(0F1;1B0)OVERLAP_F_B", "0UNSHARD", ",", ",", "\n", "\r\n", "", "(", ")", ";", "\"",
     "99999999999", "-1", " "]
)


def _one_line_or_schedule(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ScheduleError as e:
        assert "\n" not in str(e) and "Traceback" not in str(e)
        return None


@given(st.one_of(st.text(alphabet=_CSV_ALPHABET, max_size=80),
                 st.lists(_CSV_TOKENS, max_size=30).map("".join)))
def test_csv_reader_never_raises_anything_else(text):
    for drop in (False, True):
        s = _one_line_or_schedule(csv_to_schedule, text, "fuzz.csv", drop_fsdp=drop)
        if s is not None:
            assert s.num_ranks >= 1 and s.num_stages >= 1


_VALID_JSON = (CORPUS.parent / "bad_inputs" / "tocsv_batch.json").read_text()


@given(st.lists(st.tuples(st.integers(0, len(_VALID_JSON)), st.integers(0, 3),
                          st.sampled_from(['"', "{", "}", "[", "]", ",", ":", "1", "-",
                                           "null", "\\", "e9", "\u00e9", ""])),
                min_size=1, max_size=4))
def test_json_reader_never_raises_anything_else(edits):
    text = _VALID_JSON
    for pos, cut, ins in edits:
        text = text[:pos] + ins + text[pos + cut:]
    _one_line_or_schedule(parse_json_text, text, "fuzz.json")


@given(st.binary(max_size=200), st.sampled_from([".json", ".csv"]))
def test_load_schedule_on_random_bytes(tmp_path_factory, data, ext):
    path = tmp_path_factory.mktemp("fuzz") / f"f{ext}"
    path.write_bytes(data)
    try:
        load_schedule(path)
    except ScheduleError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))


def test_shared_cli_body_maps_errors_interrupts_and_pipes():
    """verifier, reference and fastpath share verifier.cli.app.run_cli: a listed error is one
    line and its exit code, Ctrl-C is 130 without a traceback, a closed pipe is quiet,
    and an unlisted exception (a bug) is not swallowed."""
    import argparse
    import io

    from verifier.cli.app import RaisingParser, help_to, run_cli
    from verifier.ir import ScheduleError

    def build(out):
        p = RaisingParser(prog="x")
        p.add_argument("command", nargs="?")
        help_to(out, p)
        return p

    def call(exc):
        def run(args, out, err):
            raise exc
        out, err = io.StringIO(), io.StringIO()
        return run_cli(build, run, ["go"], out, err, on_broken_pipe=7), err.getvalue()

    assert call(ScheduleError("bad value 3", "f.json")) == (2, "error: f.json: bad value 3\n")
    assert call(KeyboardInterrupt()) == (130, "interrupted\n")
    assert call(BrokenPipeError()) == (7, "")
    with pytest.raises(ZeroDivisionError):
        call(ZeroDivisionError())
    out, err = io.StringIO(), io.StringIO()
    assert run_cli(build, lambda *a: 0, [], out, err) == 2  # no command: help, exit 2
    assert "usage: x" in out.getvalue()
    assert isinstance(build(out), argparse.ArgumentParser)


def _stdin_cli(args: list[str], data: bytes):
    return subprocess.run([sys.executable, "-m", "verifier", *args], input=data, cwd=ROOT,
                          capture_output=True, timeout=120)


def test_stdin_dash_reads_json_and_sniffs_csv(tmp_path):
    """FILE "-" reads standard input: JSON, or CSV (sniffed); messages name <stdin>."""
    js = (ROOT / "specs/examples/zbv.json").read_bytes()
    p = _stdin_cli(["check", "-"], js)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().splitlines()[1].startswith("schedule: zbv ranks=4")
    csv = tmp_path / "z.csv"
    assert main(["convert", str(ROOT / "specs/examples/zbv.json"), "--compute-only", "-o",
                 str(csv)], io.StringIO(), io.StringIO()) == 0
    p = _stdin_cli(["check", "-"], csv.read_bytes())
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().splitlines()[1] == (
        "schedule: <stdin>, 4 ranks, 8 micro-batches, 324 steps, lowered from compute-only")
    out = tmp_path / "back.json"
    p = _stdin_cli(["convert", "-", "-o", str(out)], csv.read_bytes())
    assert p.returncode == 0, p.stderr
    assert load_schedule(out).actions == load_schedule(csv).actions
    p = _stdin_cli(["analyze", "-", "--format", "json"], js)
    assert p.returncode == 0 and b'"makespan"' in p.stdout, p.stderr


@pytest.mark.parametrize("data,message", [
    (b"", "error: <stdin>: file is empty"),
    (b'{"format": "pp-schedule",', "error: <stdin>: invalid JSON at line 1 column 26"),
    (b"\x00\x01junk", "error: <stdin>: binary data"),
])
def test_stdin_bad_input_is_located(data, message):
    p = _stdin_cli(["check", "-"], data)
    assert p.returncode == 2
    err = p.stderr.decode()
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err

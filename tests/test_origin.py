"""Counterexamples in the user's coordinates (verifier.format.origin, check's output).

A counterexample on a PyTorch CSV names the CSV row, column and cell as
written; on a compute-only schedule that was lowered first it also names the
lowered step, and a send/receive inserted by the lowering points at the
compute it was inserted for. Each test reads the CSV text independently of
verifier.format.origin (``csv.reader``) and holds every place ``check`` names to it.

Not covered: the wording of the messages (tests/golden).
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest

from verifier.cli.app import main
from verifier.format.csvio import csv_to_schedule, schedule_to_csv
from verifier.generators import generate
from verifier.format.io import load_schedule
from verifier.ir import Batch, Comm, CommKind, Compute, ComputeKind, Overlap, computes_of
from verifier.semantics.lowering import lower, lower_with_map
from verifier.format.origin import Origin

EXAMPLES = Path(__file__).resolve().parent.parent / "specs" / "examples"


def _check(path: Path, *extra: str) -> tuple[int, dict, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["check", str(path), "--format", "json", *extra], out, err)
    text_out = io.StringIO()
    main(["check", str(path), *extra], text_out, io.StringIO())
    return rc, json.loads(out.getvalue()), text_out.getvalue()


def _grid(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text, newline=""))]


def _with_idle_cells(text: str, seed: int) -> str:
    """The CSV with idle (empty) cells inserted at random places of each row."""
    rnd = random.Random(seed)
    rows = []
    for line in text.splitlines():
        cells = line.split(",") if line else []
        for _ in range(rnd.randint(0, 3)):
            cells.insert(rnd.randint(0, len(cells)), "")
        rows.append(",".join(cells))
    return "\n".join(rows) + "\n"


def _places(doc: dict):
    for v in doc["counterexamples"]:
        yield from v["user_locations"]
    if doc["cycle"]:
        for h in doc["cycle"]["hops"]:
            for e in (h["waiter"], h["target"]):
                if "user_place" in e:
                    yield e["user_place"]


BROKEN_CSV = [
    "deadlock_pytorch_issue_172668.json",
    "dependencies_send_before_compute.json",
    "message_matching_swapped_sends.json",
    "exactly_once_double_w.json",
]


@pytest.mark.parametrize("name", BROKEN_CSV)
@pytest.mark.parametrize("seed", [0, 1])
def test_csv_counterexample_names_row_column_and_cell(name, seed, tmp_path):
    s = load_schedule(EXAMPLES / "broken" / name)
    text = _with_idle_cells(schedule_to_csv(s, flatten_batches=True), seed)
    path = tmp_path / "s.csv"
    path.write_text(text)
    rc, doc, out = _check(path, "--engine", "graph")
    assert rc == 1 and doc["schedule"]["input_form"] == "csv"
    checked = csv_to_schedule(text)
    grid = _grid(text)
    seen = 0
    for p in _places(doc):
        assert "lowered_step" not in p  # compute_comms: checked as written
        r, col = p["row"] - 1, p["column"] - 1
        assert r == p["rank"]
        assert grid[r][col] == p["cell"]  # the cell as written, where it is written
        assert p["cell"] == str(checked.actions[p["rank"]][p["step"]])
        assert f"CSV row {p['row']}, column {p['column']}: `{p['cell']}`" in out
        seen += 1
    assert seen >= 1
    assert " step " not in "".join(v["user_message"] for v in doc["counterexamples"]).replace(
        "lowered step", "")


def _cause_ok(op: Comm, c: Compute) -> bool:
    """``op`` is a send of what ``c`` produces or a receive of what ``c`` consumes."""
    if op.stage != c.stage or op.mb != c.mb:
        return False
    if op.kind is CommKind.SEND_F or op.kind is CommKind.RECV_F:
        return c.kind is ComputeKind.F
    return c.kind in (ComputeKind.B, ComputeKind.I)


def _assert_lowered_place(p: dict, user, lowered, grid=None) -> None:
    r, k = p["rank"], p["lowered_step"]
    a = lowered.actions[r][k]
    orig = user.actions[r][p["step"]]
    if grid is not None:
        assert grid[p["row"] - 1][p["column"] - 1] == p["cell"] == str(orig)
    if p["inserted"]:
        assert isinstance(a, Batch)
        ops = a.ops if p.get("lowered_sub") is None else (a.ops[p["lowered_sub"]],)
        causes = [p["step"]] + [x["step"] for x in p.get("also", ())]
        for i in causes:  # every compute named caused one of the ops, and the reverse
            assert any(_cause_ok(op, c) for op in ops for c in computes_of(user.actions[r][i]))
        for op in ops:
            assert any(_cause_ok(op, c) for i in causes for c in computes_of(user.actions[r][i]))
        if grid is not None:
            for x in p.get("also", ()):
                assert grid[r][x["column"] - 1] == x["cell"] == str(user.actions[r][x["step"]])
    else:
        assert a == orig


def test_lowered_csv_names_user_cell_and_lowered_step(tmp_path):
    # rank 1 runs micro-batch 1 first: a deadlock once lowered (idle cell at column 3)
    text = "0F0,0B0,,0F1,0B1\n1F1,1B1,1F0,1B0\n"
    path = tmp_path / "dl.csv"
    path.write_text(text)
    rc, doc, out = _check(path)
    assert rc == 1 and doc["schedule"]["lowered"]
    user = csv_to_schedule(text)
    lowered = lower(user)
    grid = _grid(text)
    places = list(_places(doc))
    assert any(p["inserted"] for p in places) and any(not p["inserted"] for p in places)
    for p in places:
        _assert_lowered_place(p, user, lowered, grid)
    # the text output: the cell, its place and the lowered step, as the issue asks
    assert "rank 0 (CSV row 1, column 2: `0B0`; lowered step 2)" in out
    assert "rank 0 (CSV row 1, column 4: `0F1`; lowered step 3)" in out
    assert "inserted for CSV row 2, column 1: `1F1`" in out


@pytest.mark.parametrize("fam", ["1f1b", "zbv", "interleaved-1f1b", "dualpipev"])
def test_lowering_map_points_at_the_user_step(fam):
    s = generate(fam, 4, 8, compute_only=True)
    low, steps = lower_with_map(s)
    assert low == lower(s)
    for r, acts in enumerate(low.actions):
        assert len(steps[r]) == len(acts)
        for k, a in enumerate(acts):
            if isinstance(a, Batch):
                assert len(steps[r][k]) == len(a.ops)
                for op, i in zip(a.ops, steps[r][k]):
                    assert any(_cause_ok(op, c) for c in computes_of(s.actions[r][i]))
            else:
                assert a == s.actions[r][steps[r][k]]


def test_compute_only_json_names_the_original_step(tmp_path):
    s = generate("1f1b", 2, 2, compute_only=True)
    acts = [list(x) for x in s.actions]
    acts[1][0], acts[1][2] = acts[1][2], acts[1][0]  # rank 1 starts with F of mb 1
    from verifier.format.io import dumps_json

    path = tmp_path / "s.json"
    path.write_text(dumps_json(s.with_actions(acts)))
    rc, doc, out = _check(path)
    assert rc == 1 and doc["schedule"]["lowered"] and doc["schedule"]["input_form"] == "json"
    user = load_schedule(path)
    lowered = lower(user)
    places = list(_places(doc))
    assert places
    for p in places:
        assert "row" not in p
        _assert_lowered_place(p, user, lowered)
    p = next(p for p in places if not p["inserted"])
    assert f"rank {p['rank']} step {p['step']} (lowered step {p['lowered_step']})" in out


def test_stage_on_two_rows_is_well_formed_refuted_naming_both_cells(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("0F0,1F0\n1B0\n")
    rc, doc, out = _check(path)
    assert rc == 1
    assert doc["properties"]["well-formed"]["status"] == "fails"
    (v,) = doc["counterexamples"]
    assert v["code"] == "action-rank"
    assert "CSV row 2, column 1: `1B0`" in v["user_message"]
    assert "CSV row 1, column 2: `1F0` places stage 1 on rank 0" in v["user_message"]
    assert v["user_locations"][0]["cell"] == "1B0"
    assert "CSV row 2, column 1: `1B0`" in out and "CSV row 1, column 2: `1F0`" in out
    # the same stage on two rows of a compute_comms CSV
    path.write_text("0F0,0SEND_F0,,1B0\n1RECV_F0,1F0\n")
    rc, doc, _ = _check(path)
    assert rc == 1 and doc["properties"]["well-formed"]["status"] == "fails"
    # the first cell of stage 1 (rows in order, then columns) places it on rank 0
    msgs = [v["user_message"] for v in doc["counterexamples"] if v["code"] == "action-rank"]
    assert ("rank 1 (CSV row 2, column 2: `1F0`) 1F0: stage 1 is held by rank 0, not rank 1 "
            "(CSV row 1, column 4: `1B0` places stage 1 on rank 0)") in msgs


def test_origin_names_places_only_when_it_must():
    o = Origin("x.json", "json")
    assert o.trivial and o.rewrite("at rank 1 step 2.1") == "at rank 1 step 2.1"
    o = Origin("x.csv", "csv", csv_text=" 0F0 ,,0UNSHARD,0F1\n")
    assert o.place(0, 1).text() == "rank 0 (CSV row 1, column 4: `0F1`)"
    assert o.place(0, 0).cell == "0F0"  # stripped, as the reader reads it
    assert o.stage_place(0) == "CSV row 1, column 1: `0F0`"
    assert o.stage_place(3) is None


def test_fsdp_cells_are_counted_as_columns_not_steps(tmp_path):
    # PyTorch's FSDP cells are no-ops of the schedule: the columns still count
    path = tmp_path / "f.csv"
    path.write_text("0UNSHARD,0F0,0SEND_F0,0RESHARD,0B0\n1UNSHARD,1RECV_F0,1F0,1B0,,1SEND_B0\n")
    rc, doc, out = _check(path)
    assert rc == 1  # 0B0 never receives its gradient: no 0RECV_B0
    grid = _grid(path.read_text())
    places = list(_places(doc))
    assert places
    for p in places:
        assert grid[p["row"] - 1][p["column"] - 1] == p["cell"]
    assert "CSV row 1, column 5: `0B0`" in out


def test_analyze_deadlock_names_user_cells(tmp_path):
    path = tmp_path / "dl.csv"
    path.write_text("0F0,0B0,,0F1,0B1\n1F1,1B1,1F0,1B0\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["analyze", str(path)], out, err) == 1
    text = out.getvalue()
    assert "rank 0 (CSV row 1, column 2: `0B0`; lowered step 2): 0B0 waits for" in text
    assert "rank 1 (CSV row 2, column 1: `1F1`; lowered step 1): 1F1 waits for" in text
    assert " step " not in text.replace("lowered step", "")


def test_reference_run_names_user_cells(tmp_path):
    pytest.importorskip("torch")
    from reference.cli import main as ref_main

    path = tmp_path / "dl.csv"
    path.write_text("0F0,0B0,,0F1,0B1\n1F1,1B1,1F0,1B0\n")
    out = io.StringIO()
    assert ref_main(["run", str(path), "--force"], out, io.StringIO()) == 1
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("RESULT: FAULT blocked at rank 0 (CSV row 1, column 2: `0B0`; lowered step 2): ")
    assert "rank 1 (CSV row 2, column 1: `1F1`; lowered step 1): 1F1 waits for 1RECV_F1" in last
    out = io.StringIO()
    assert ref_main(["run", str(path), "--format", "json"], out, io.StringIO()) == 1
    fault = json.loads(out.getvalue())["fault"]
    assert fault["kind"] == "refuted" and "CSV row 1, column 2: `0B0`" in fault["user_message"]
    assert "CSV row" not in fault["message"]  # the checked schedule's own places stay there

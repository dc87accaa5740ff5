"""`check --comm-model all` (verifier/cli/check_models.py, specs/check-output.md).

- one row per model, strictest first, each that model's own decision (the
  row's report is a full check under it);
- a deadlock under some models says where it still terminates, in words a
  user acts on, and prints the cycle of each model that deadlocks;
- exit codes: 0 all terminate, 1 some model refutes, 3 when rows break the
  order of the models (an engine fault), 2 for an unknown model (with the list);
- --engine z3 on an instance over Z3's budget: the graph engine decides each
  model and the rows say so;
- the JSON rows; the NCCL grouping warning.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from verifier.check import z3budget
from verifier.check.checker import check
from verifier.cli import check_models
from verifier.cli.app import main
from verifier.cli.check_models import ModelRow, advice, exit_code, order_faults
from verifier.format.io import load_schedule, save_schedule
from verifier.generators import generate
from verifier.ir import Batch

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "specs" / "examples"
NAMES = ("nccl", "nccl-pairs", "gloo", "eager")


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", *map(str, argv)], out, err)
    return code, out.getvalue(), err.getvalue()


def _rendezvous_only(tmp_path) -> Path:
    """1F1B whose batches holding sends and receives wait for their sends
    first: eager terminates, every rendezvous model deadlocks."""
    s = generate("1f1b", 2, 2)
    rows = []
    for row in s.actions:
        new = []
        for a in row:
            snd = tuple(op for op in a.ops if op.kind.is_send) if isinstance(a, Batch) else ()
            rcv = tuple(op for op in a.ops if not op.kind.is_send) if isinstance(a, Batch) else ()
            new += [Batch(snd, True), Batch(rcv, False)] if snd and rcv else [a]
        rows.append(new)
    p = tmp_path / "rendezvous.json"
    save_schedule(s.with_actions(rows, name="sends waited before receives"), str(p))
    return p


def test_every_model_terminates_on_an_example():
    code, out, _ = _cli(EX / "1f1b.json", "--comm-model", "all")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("deadlock-free under every model")
    rows = lines[1:5]
    assert [r.split()[0] for r in rows] == list(NAMES)
    assert all(r.split()[1] == "terminates" for r in rows)
    assert "summary: terminates under nccl, nccl-pairs, gloo, eager" in out
    assert "VERIFIED under nccl" in out  # the full report under the strictest model


def test_a_deadlock_names_where_it_still_terminates(tmp_path):
    code, out, _ = _cli(_rendezvous_only(tmp_path), "--comm-model", "all")
    assert code == 1
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()[1:5]}
    assert rows == {"nccl": "deadlocks", "nccl-pairs": "deadlocks", "gloo": "deadlocks",
                    "eager": "terminates"}
    assert ("summary: deadlocks under nccl, nccl-pairs, gloo, terminates under eager: tests with "
            "small tensors will pass and NCCL at production message sizes") in out
    for m in ("nccl", "nccl-pairs", "gloo"):
        assert f"cycle of waits under {m}:" in out
    assert "cycle of waits under eager" not in out


def test_json_rows(tmp_path):
    code, out, _ = _cli(_rendezvous_only(tmp_path), "--comm-model", "all", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["exit_code"] == 1 and doc["comm_model"] == "all"
    assert [r["comm_model"] for r in doc["models"]] == list(NAMES)
    for r in doc["models"]:
        assert r["report"]["comm_model"] == r["comm_model"]
        assert r["terminates"] is (r["comm_model"] == "eager")
        assert (r["report"]["cycle"] is None) == r["terminates"]
    assert doc["summary"].startswith("deadlocks under nccl, nccl-pairs, gloo")
    assert doc["order_faults"] == []


def test_unknown_model_is_exit_2_with_the_list():
    code, out, err = _cli(EX / "1f1b.json", "--comm-model", "mpi")
    assert code == 2
    text = out + err
    for m in (*NAMES, "all"):
        assert m in text


def test_z3_over_its_budget_uses_the_graph_engine(monkeypatch):
    monkeypatch.setattr(z3budget, "fits_budget", lambda *a, **k: False)
    code, out, _ = _cli(EX / "gpipe.json", "--comm-model", "all", "--engine", "z3")
    assert code == 0
    for ln in out.splitlines()[1:5]:
        assert "decided by graph" in ln and "too large for Z3's budget" in ln, ln


def test_rows_breaking_the_order_are_an_engine_fault(tmp_path):
    s = load_schedule(str(_rendezvous_only(tmp_path)))
    ok, dead = check(s, comm_model="eager"), check(s, comm_model="nccl")
    rows = [ModelRow("nccl", ok, ""), ModelRow("nccl-pairs", dead, ""), ModelRow("gloo", dead, ""),
            ModelRow("eager", dead, "")]
    assert order_faults(rows) and exit_code(rows) == 3
    good = [ModelRow(m, check(s, comm_model=m), "") for m in NAMES]
    assert order_faults(good) == [] and exit_code(good) == 1
    assert "not decided" not in advice(good)


def test_grouping_warning_is_not_a_verdict():
    code, out, _ = _cli(EX / "zbv.json", "--comm-model", "all")
    assert code == 0
    assert "NCCL grouping: 9 pair(s)" in out and "not part of any verdict" in out
    code, out, _ = _cli(EX / "zbv.json")
    assert code == 0 and "batch-grouping" not in out  # single-model output unchanged


@pytest.mark.parametrize("name", ["dualpipe", "interleaved_1f1b", "zb_h1"])
def test_all_on_examples(name):
    rows = check_models.check_all(load_schedule(str(EX / f"{name}.json")))
    assert [r.model for r in rows] == list(NAMES)
    assert all(r.terminates for r in rows)

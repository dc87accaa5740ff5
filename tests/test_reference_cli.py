"""``python -m reference run``: output lines, JSON, exit codes 0 / 1 / 2."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import reference.cli as cli
from verifier.generators import generate
from verifier.format.io import save_schedule
from verifier.ir import Batch, Comm, CommKind

ROOT = Path(__file__).resolve().parents[1]


def _main(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref_cli")
    good = d / "dualpipe.json"
    save_schedule(generate("dualpipe", 4, 8), good)
    co = d / "zbh1_compute_only.json"
    save_schedule(generate("zb-h1", 2, 4, compute_only=True), co)
    # swap the micro-batches of rank 1's first two RECV_F: refuted, and a fault when forced
    s = generate("1f1b", 2, 4)
    acts = [list(a) for a in s.actions]
    pos = [(i, j) for i, a in enumerate(acts[1]) if isinstance(a, Batch)
           for j, op in enumerate(a.ops) if op.kind is CommKind.RECV_F][:2]
    ops = {ij: acts[1][ij[0]].ops[ij[1]] for ij in pos}
    for (i, j), other in zip(pos, reversed(pos)):
        b = acts[1][i]
        new = list(b.ops)
        new[j] = Comm(CommKind.RECV_F, ops[(i, j)].stage, ops[other].mb)
        acts[1][i] = Batch(tuple(new), b.wait)
    bad = d / "swapped.json"
    save_schedule(s.with_actions(acts), bad)
    broken = d / "broken.json"
    broken.write_text('{"format": "pp-schedule", "version": "1.0", "num_ranks": ')
    return {"good": str(good), "co": str(co), "bad": str(bad), "broken": str(broken)}


def test_text_output_match(files):
    rc, out, err = _main("run", files["good"], "--model", "transformer", "--hidden", "8")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("schedule: ") and "4 tied layers" in lines[0]
    assert sum(1 for x in lines if x.startswith("loss mb ")) == 8
    assert all(x.endswith("bitwise") for x in lines if x.startswith(("loss mb", "grad ")))
    assert sum(1 for x in lines if x.startswith("grad layer")) == 4 * 12
    assert lines[-1] == "RESULT: MATCH bitwise (48 parameters, 8 losses)"


def test_json_output_and_options(files):
    rc, out, _ = _main(
        "run", files["co"], "--format", "json", "--layers-per-stage", "2", "--dtype", "float32",
        "--loss-reduction", "mean", "--seed", "3", "--batch", "1", "--seq", "2",
    )
    assert rc == 0
    doc = json.loads(out)
    assert doc["result"] == "match" and doc["bitwise"] is True and doc["fault"] is None
    assert doc["model"]["num_layers"] == 4 and doc["model"]["dtype"] == "float32"
    assert [x["mb"] for x in doc["losses"]] == [0, 1, 2, 3]
    assert len(doc["params"]) == 4 * 4


def test_refuted_and_forced_fault(files):
    rc, out, _ = _main("run", files["bad"])
    assert rc == 1
    assert out.splitlines()[-1].startswith("RESULT: REFUTED by the checker:")
    assert "message-matching" in out
    rc, out, _ = _main("run", files["bad"], "--force")
    assert rc == 1
    last = out.splitlines()[-1]
    assert last.startswith("RESULT: FAULT message-mismatch at rank 1 step ")
    assert "expects [F stage 0->1 mb 1]" in last and "carries [F stage 0->1 mb 0]" in last
    rc, out, _ = _main("run", files["bad"], "--force", "--format", "json")
    doc = json.loads(out)
    assert doc["result"] == "fault" and doc["fault"]["kind"] == "message-mismatch"
    assert doc["fault"]["rank"] == 1


def test_gradient_mismatch_exit_1(files, monkeypatch):
    import reference.baseline as baseline  # reference.cli imports it when it runs

    real = baseline.run_baseline

    def skewed(*a, **kw):
        b = real(*a, **kw)
        g = dict(b.grads)
        g["layer1.fc2.bias"] = g["layer1.fc2.bias"] + 1e-3
        return dataclasses.replace(b, grads=g)

    monkeypatch.setattr(baseline, "run_baseline", skewed)
    rc, out, _ = _main("run", files["good"])
    assert rc == 1
    assert "grad layer1.fc2.bias: max_abs 1.000e-03" in out and "MISMATCH" in out
    assert out.splitlines()[-1].startswith("RESULT: MISMATCH (rtol 1e-10 atol 1e-12): 1 parameter(s) [layer1.fc2.bias]")


def test_bad_input_exit_2_one_line(files, tmp_path):
    for argv in (
        ["run", files["broken"]],
        ["run", str(tmp_path / "missing.json")],
        ["run", files["good"], "--model", "resnet"],
        ["run", files["good"], "--hidden", "0"],
        ["run"],
        ["frobnicate"],
    ):
        rc, out, err = _main(*argv)
        assert rc == 2, argv
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    rc, out, err = _main()
    assert rc == 2 and "run" in out


def test_help_documents_exit_codes():
    rc, out, _ = _main("run", "--help")
    assert rc == 0
    for word in ("exit codes", "RESULT: MATCH bitwise", "--layers-per-stage", "--force",
                 "--format", "float64 rtol 1e-10", "witness"):
        assert word in out


def test_module_entry_point(files):
    p = subprocess.run(
        [sys.executable, "-m", "reference", "run", files["good"], "--hidden", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1].startswith("RESULT: MATCH bitwise")

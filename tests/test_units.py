"""Memory in bytes: verifier.format.units, check/analyze --activation-bytes, and the
reference executor's measurement (reference/activations.py).

Peaks in bytes are held against a count written here from the schedule's own
actions (program order, F adds its stage's size, B or I frees it), not against
verifier.semantics.memory.

Not covered: whether the measured bytes match a GPU allocator's (they count
autograd's saved tensors; see reference/activations.py).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from verifier.check.checker import check
from verifier.cli.app import main
from verifier.generators import generate
from verifier.format.io import dumps_json
from verifier.ir import ComputeKind, ScheduleError, computes_of
from verifier.format.units import (
    ActivationBytes,
    format_bytes,
    parse_activation_bytes,
    parse_bytes,
    parse_memory_limit,
)

GiB, MiB = 2**30, 2**20


@pytest.mark.parametrize("text,value", [
    ("80GiB", 80 * GiB), ("512MiB", 512 * MiB), ("1.5e9B", 1.5e9), ("2GB", 2e9),
    ("3 kib", 3072), ("0.5TiB", 2**39), ("7B", 7),
])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_plain_numbers_stay_activation_units():
    assert parse_bytes("8") is None and parse_bytes("1.5e9") is None
    lim = parse_memory_limit("8")
    assert (lim.value, lim.in_bytes) == (8, False)
    lim = parse_memory_limit("80GiB")
    assert (lim.value, lim.in_bytes) == (80 * GiB, True)
    for bad in ("8XB", "-1", "GiB", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_memory_limit(bad)
    assert format_bytes(80 * GiB) == "80 GiB" and format_bytes(1536) == "1.5 KiB"


def test_activation_bytes_specs():
    s = generate("1f1b", 4, 8)
    assert parse_activation_bytes("2GiB").for_schedule(s) == {i: 2 * GiB for i in range(4)}
    assert parse_activation_bytes("1e6").for_schedule(s) == {i: 1e6 for i in range(4)}  # bytes here
    sizes = parse_activation_bytes("1GiB,3=4GiB").for_schedule(s)
    assert sizes == {0: GiB, 1: GiB, 2: GiB, 3: 4 * GiB}
    with pytest.raises(ScheduleError, match="no size for stage 1"):
        parse_activation_bytes("0=1GiB").for_schedule(s)
    with pytest.raises(ScheduleError, match="stage 9, which the schedule does not have"):
        parse_activation_bytes("1GiB,9=1GiB").for_schedule(s)
    for bad in ("x=1GiB", "1GiB,2GiB", "0=1GiB,0=2GiB", "0=-1", "1GiB,,"):
        with pytest.raises(ScheduleError):
            parse_activation_bytes(bad)


def _peak_bytes(s, sizes):
    peaks = []
    for acts in s.actions:
        live = peak = 0.0
        for a in acts:
            cs = computes_of(a)
            live += sum(sizes[c.stage] for c in cs if c.kind is ComputeKind.F)
            peak = max(peak, live)
            live -= sum(sizes[c.stage] for c in cs if c.kind in (ComputeKind.B, ComputeKind.I))
        peaks.append(peak)
    return peaks


@pytest.mark.parametrize("fam", ["1f1b", "zbv", "dualpipe", "dualpipev"])
@pytest.mark.parametrize("engine", ["graph", "z3"])
def test_check_in_bytes(fam, engine):
    s = generate(fam, 4, 8)
    sizes = {st.id: (st.id + 1) * MiB for st in s.stages}  # every stage its own size
    want = _peak_bytes(s, sizes)
    r = check(s, engine=engine, activation_bytes=sizes)
    assert list(r.peaks) == want and r.verdict.value == "VERIFIED"
    lim = max(want) - 1
    r = check(s, engine=engine, memory_limit=lim, activation_bytes=sizes)
    assert r.verdict.value == "REFUTED" and r.failed == (r.failed[0],)
    viols = r.result_of("memory").violations
    assert {v.locations[0][0] for v in viols} == {i for i, p in enumerate(want) if p > lim}
    assert all(v.code == "memory-bytes" and "over the limit" in v.message for v in viols)
    assert check(s, engine=engine, memory_limit=max(want), activation_bytes=sizes).verdict.value == "VERIFIED"


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def test_cli_bytes(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(dumps_json(generate("1f1b", 4, 8)))  # peaks 4 3 2 1 activations
    rc, out, err = _cli("check", str(path), "--memory-limit", "7GiB", "--activation-bytes", "2GiB")
    assert rc == 1 and "8 GiB of activations live at rank 0 step" in out and "over the limit 7 GiB" in out
    rc, out, _ = _cli("check", str(path), "--memory-limit", "8GiB", "--activation-bytes", "2GiB")
    assert rc == 0 and "peak activation memory per rank: 8 GiB, 6 GiB, 4 GiB, 2 GiB (limit 8 GiB)" in out
    rc, out, _ = _cli("check", str(path), "--memory-limit", "8GiB", "--activation-bytes",
                      "0=2GiB,1=2GiB,2=2GiB,3=2GiB", "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["memory"]["unit"] == "bytes" and doc["memory"]["peaks"][0] == 8 * GiB
    assert doc["memory"]["activation_bytes"]["3"] == 2 * GiB
    # bytes without sizes: exit 2, one line naming the flag to add
    rc, out, err = _cli("check", str(path), "--memory-limit", "80GiB")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "--activation-bytes" in err
    rc, _, err = _cli("check", str(path), "--memory-limit", "8", "--activation-bytes", "2GiB")
    assert rc == 2 and "in activations" in err
    # plain numbers stay activation units
    rc, out, _ = _cli("check", str(path), "--memory-limit", "3")
    assert rc == 1 and "4 activations live at rank 0" in out
    # a sizes file, as reference activations writes it
    f = tmp_path / "sizes.json"
    f.write_text(json.dumps({"format": "pp-activation-bytes", "stages": {str(i): GiB for i in range(4)}}))
    rc, out, _ = _cli("check", str(path), "--memory-limit", "4GiB", "--activation-bytes", str(f))
    assert rc == 0
    rc, _, err = _cli("check", str(path), "--memory-limit", "4GiB", "--activation-bytes",
                      str(tmp_path / "missing.json"))
    assert rc == 2 and "no such file" in err


def test_analyze_reports_bytes(tmp_path):
    path = tmp_path / "s.json"
    s = generate("zbv", 2, 4)
    path.write_text(dumps_json(s))
    sizes = {0: MiB, 1: 2 * MiB, 2: 3 * MiB, 3: 4 * MiB}
    spec = ",".join(f"{k}={v}" for k, v in sizes.items())
    rc, out, _ = _cli("analyze", str(path), "--activation-bytes", spec, "--format", "json")
    doc = json.loads(out)
    assert rc == 0
    assert [r["peak_activation_bytes"] for r in doc["ranks"]] == _peak_bytes(s, sizes)
    rc, out, _ = _cli("analyze", str(path), "--activation-bytes", spec)
    assert rc == 0 and "peak mem" in out and format_bytes(_peak_bytes(s, sizes)[0]) in out
    rc, _, err = _cli("analyze", str(path), "--activation-bytes", "0=1MiB")
    assert rc == 2 and "no size for stage 1" in err


def test_reference_measures_saved_activations(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    from reference.activations import measure_activation_bytes
    from reference.cli import main as ref_main

    s = generate("1f1b", 2, 2)
    H, b, seq = 8, 3, 5
    torch.manual_seed(0)
    layers = [nn.Linear(H, H).double(), nn.ReLU(), nn.Linear(H, H).double()]
    mb = (torch.randn(b, seq, H, dtype=torch.float64), torch.randn(b, seq, H, dtype=torch.float64))
    one = b * seq * H * 8  # one (b, seq, H) float64 tensor
    got = measure_activation_bytes(s, layers, mb, stage_layers={0: [0, 1], 1: [2]})
    # stage 0: Linear saves its input, ReLU its output; stage 1: Linear its
    # input, the loss (output - target) once more; parameters are not counted
    assert got == {0: 2 * one, 1: 2 * one}
    out = tmp_path / "a.json"
    assert ref_main(["activations", str(Path(__file__).parent.parent / "specs/examples/1f1b.json"),
                     "-o", str(out)], io.StringIO(), io.StringIO()) == 0
    sizes = parse_activation_bytes(str(out))
    assert isinstance(sizes, ActivationBytes) and set(sizes.per_stage) == {0, 1, 2, 3}
    assert all(v > 0 for v in sizes.per_stage.values())

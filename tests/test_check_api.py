"""``verifier.check(x, comm_model=...)`` (issue 13 item 4): one entry point for a
Schedule, a path (JSON, CSV, program), a document, a PyTorch pipeline_order and
a PyTorch schedule object, read duck-typed (verifier never imports torch)."""

from __future__ import annotations

import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

from programs_util import p2p, program
from verifier import check
from verifier.check.api import action_cell, order_to_schedule
from verifier.errors import ScheduleError
from verifier.format.io import dumps_json, schedule_to_dict
from verifier.generators import generate
from verifier.results.check import Verdict
from verifier.results.program import ProgramCheckResult

ROOT = Path(__file__).resolve().parent.parent


def test_every_kind_of_input(tmp_path):
    s = generate("zbv", 2, 4)
    assert check(s).verdict is Verdict.VERIFIED
    assert check(schedule_to_dict(s), comm_model="eager").verdict is Verdict.VERIFIED
    f = tmp_path / "s.json"
    f.write_text(dumps_json(s))
    assert check(str(f), engine="graph").verdict is Verdict.VERIFIED
    assert check(f).comm_model == "nccl"
    bad = program([p2p("send", 1, 88)], [p2p("send", 0, 91)])
    r = check(bad, comm_model="gloo")
    assert isinstance(r, ProgramCheckResult) and r.verdict is Verdict.REFUTED
    (tmp_path / "p.json").write_text(__import__("json").dumps(bad))
    assert check(tmp_path / "p.json", comm_model="eager").verdict is Verdict.REFUTED  # unmatched sends
    assert check(ROOT / "specs/examples/broken/deadlock_pytorch_issue_172668.json").verdict is Verdict.REFUTED


def test_bad_arguments():
    with pytest.raises(TypeError, match="verifier.check takes"):
        check(3.5)
    with pytest.raises(ScheduleError, match="schedule options"):
        check(program([p2p("send", 1, 1)], [p2p("recv", 0, 2)]), memory_limit=3)
    with pytest.raises(ScheduleError, match="unknown engine"):
        check(program([p2p("send", 1, 1)], [p2p("recv", 0, 2)]), engine="smt")


def test_a_program_takes_an_engine():
    ok = program([p2p("send", 1, 1)], [p2p("recv", 0, 2)])
    for engine, label in (("auto", "replay"), ("graph", "replay"), ("z3", "z3"), ("both", "both")):
        r = check(ok, engine=engine)
        assert (r.verdict, r.engine, r.certificate) == (Verdict.VERIFIED, label, "accepted"), engine
    r = check(program([p2p("send", 1, 1)], [p2p("send", 0, 2)]), comm_model="nccl", engine="z3")
    assert r.verdict is Verdict.REFUTED and r.engine == "z3" and r.certificate == "accepted"
    with pytest.raises(ScheduleError, match="lowering"):
        check(generate("1f1b", 2, 2), lowering="megatron")


class _Act(tuple):
    """A stand-in for torch's _Action: the fields verifier reads, nothing else."""

    stage_index = property(lambda self: self[0])
    computation_type = property(lambda self: types.SimpleNamespace(value=self[1]))
    microbatch_index = property(lambda self: self[2])
    sub_actions = property(lambda self: self[3] if len(self) > 3 else None)


def test_pipeline_order_read_duck_typed():
    order = {0: [_Act((0, "F", 0)), None, _Act((0, "B", 0))],
             1: [_Act((1, "F", 0)), _Act((1, "B", 0))]}
    assert [action_cell(a) for a in order[0]] == ["0F0", "", "0B0"]
    assert action_cell(_Act((0, "OVERLAP_F_B", None, (_Act((1, "F", 2)), _Act((0, "B", 1)))))) == "(1F2;0B1)OVERLAP_F_B"
    s = order_to_schedule(order)
    assert s.num_ranks == 2 and s.num_microbatches == 1
    assert check(order).verdict is Verdict.VERIFIED


def _torch_schedule(cls, R: int, M: int, v: int):
    """A PyTorch schedule object for rank 0 on stand-in stages (nothing runs)."""
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    if cls in (sch.ScheduleGPipe, sch.Schedule1F1B):
        return cls(types.SimpleNamespace(num_stages=R, group_size=R, group_rank=0, stage_index=0,
                                         is_first=True, is_last=False), M)
    v_shape = cls in (sch.ScheduleZBVZeroBubble, sch.ScheduleDualPipeV)
    stages = [types.SimpleNamespace(
        num_stages=R * v, group_size=R, group_rank=0, stage_index=(0, 2 * R - 1)[k] if v_shape else k * R,
        is_first=k == 0, is_last=False, stage_index_to_group_rank=None, submod=None) for k in range(v)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(stages, M)


@pytest.mark.parametrize("name", ["ScheduleGPipe", "ScheduleInterleaved1F1B", "ScheduleLoopedBFS",
                                  "ScheduleInterleavedZeroBubble", "ScheduleZBVZeroBubble", "ScheduleDualPipeV"])
def test_pytorch_schedule_objects(name):
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    cls = getattr(sch, name)
    obj = _torch_schedule(cls, 4, 8, 1 if name == "ScheduleGPipe" else 2)
    for model in ("nccl", "eager"):
        assert check(obj, comm_model=model, engine="graph").verdict is Verdict.VERIFIED, model
    if getattr(obj, "pipeline_order_with_comms", None):  # PyTorch's own lowering (_add_send_recv)
        r = check(obj, lowering="torch", engine="graph")
        assert r.verdict is Verdict.VERIFIED and not r.lowered


def test_pytorch_1f1b_order_is_refuted_where_torch_numbers_it_off_by_one():
    """torch 2.13's Schedule1F1B._get_pipeline_order numbers the last rank's
    forwards from 1 (its runtime does not use that order): the API says so."""
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    r = check(_torch_schedule(sch.Schedule1F1B, 4, 8, 1), engine="graph")
    assert r.verdict is Verdict.REFUTED
    assert any("micro-batch 8" in v.message for v in r.violations)


def test_the_api_does_not_import_torch():
    code = ("import sys; from verifier import check; from verifier.generators import generate; "
            "check(generate('1f1b', 2, 2)); assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_bare_import_verifier_then_check():
    # `import verifier; verifier.check(...)` is the README's spelling: it must
    # work in a fresh process where nothing imported verifier.check yet
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import sys, verifier; assert 'verifier.check' not in sys.modules; "
            f"print(verifier.check({str(root / 'specs/examples/1f1b.json')!r}).verdict.name)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "VERIFIED"

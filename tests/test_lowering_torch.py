"""verifier.semantics.lowering_torch against torch's own ``_add_send_recv``: for
every schedule class torch 2.13 ships, at several sizes, the restated rule
places every send and receive where torch does; and the CLI's ``--lowering``."""

import json
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

from verifier.check.api import order_to_schedule
from verifier.errors import ScheduleError
from verifier.generators import generate
from verifier.ir import Compute, ComputeKind, Schedule, Stage, Route
from verifier.semantics.lowering_torch import torch_lower

sch = pytest.importorskip("torch.distributed.pipelining.schedules")
ROOT = Path(__file__).resolve().parent.parent

SINGLE = ("ScheduleGPipe", "Schedule1F1B")
MULTI = ("ScheduleInterleaved1F1B", "ScheduleLoopedBFS", "ScheduleInterleavedZeroBubble",
         "ScheduleZBVZeroBubble", "ScheduleDualPipeV")


def _order(name: str, R: int, M: int):
    """(pipeline_order, stage -> rank) of a torch schedule object for rank 0 on
    stand-in stages (nothing runs)."""
    cls = getattr(sch, name)
    if name in SINGLE:
        obj = cls(types.SimpleNamespace(num_stages=R, group_size=R, group_rank=0, stage_index=0,
                                        is_first=True, is_last=False), M)
        return obj.pipeline_order if hasattr(obj, "pipeline_order") else obj._get_pipeline_order(), \
            (lambda s: s)
    v_shape = name in ("ScheduleZBVZeroBubble", "ScheduleDualPipeV")
    stages = [types.SimpleNamespace(
        num_stages=2 * R, group_size=R, group_rank=0, stage_index=(0, 2 * R - 1)[k] if v_shape else k * R,
        is_first=k == 0, is_last=False, stage_index_to_group_rank=None, submod=None) for k in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = cls(stages, M)
    return obj.pipeline_order, (lambda s: obj.stage_index_to_group_rank[s])


@pytest.mark.parametrize("name", SINGLE + MULTI)
@pytest.mark.parametrize("R,M", [(2, 4), (2, 6), (3, 6), (4, 8), (4, 12)])
def test_restated_rule_places_every_op_where_torch_does(name, R, M):
    order, to_rank = _order(name, R, M)
    if name == "Schedule1F1B":
        # torch 2.13's Schedule1F1B order numbers the last rank's forwards from 1
        # (test_check_api holds that it is refuted); torch's rule cannot lower it
        assert any((a.microbatch_index or 0) >= M for acts in order.values() for a in acts if a)
        with pytest.raises(AssertionError, match="Malformed"):
            sch._add_send_recv({r: [a for a in acts if a] for r, acts in order.items()}, to_rank, R)
        with pytest.raises(ScheduleError, match="Malformed"):
            torch_lower(order_to_schedule(order))
        return
    num_stages = 1 + max(a.stage_index for acts in order.values() for a in acts if a is not None)
    compute = {r: [a for a in acts if a is not None] for r, acts in order.items()}
    theirs = sch._add_send_recv({r: list(a) for r, a in compute.items()}, to_rank, num_stages)
    ours = torch_lower(order_to_schedule(compute))
    expected = order_to_schedule(theirs)
    assert ours.actions == expected.actions
    assert sum(len(a) for a in ours.actions) > sum(len(a) for a in compute.values())  # it did add ops


def test_a_schedule_torch_cannot_lower_is_named():
    """Rank 0 runs B(0,0) before F(0,0)'s gradient can ever come back: torch raises
    'Malformed compute schedule'; the restated rule says so, naming each rank's step."""
    F, B = ComputeKind.F, ComputeKind.B
    s = Schedule(num_ranks=2, num_microbatches=1, stages=(Stage(0, 0, 0), Stage(1, 1, 1)),
                 routes=(Route((0, 1), (0,)),),
                 actions=((Compute(B, 0, 0), Compute(F, 0, 0)), (Compute(F, 1, 0), Compute(B, 1, 0))))
    with pytest.raises(ScheduleError, match=r"Malformed compute schedule.*rank 0 step 0 0B0; rank 1 step 0 1F0"):
        torch_lower(s)


def test_refuses_what_torch_does_not_lower():
    with pytest.raises(ScheduleError, match="already places its communication"):
        torch_lower(generate("1f1b", 2, 2))
    with pytest.raises(ScheduleError, match="2 routes"):
        torch_lower(generate("dualpipe", 2, 4).with_actions(
            [[a for a in acts if type(a).__name__ in ("Compute", "Overlap")]
             for acts in generate("dualpipe", 2, 4).actions]))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "verifier", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_lowering_flag(tmp_path):
    """``check --lowering torch`` proves what torch's runtime will post for a
    compute-only CSV; the JSON says which lowering; bad uses exit 2 in one line."""
    csv = tmp_path / "zbv.csv"
    r = _cli("convert", str(ROOT / "specs/examples/zbv.json"), "-o", str(csv), "--compute-only")
    if r.returncode != 0:
        pytest.fail(r.stderr)
    r = _cli("check", str(csv), "--lowering", "torch", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verdict"] == "VERIFIED" and doc["schedule"]["lowering"] == "torch"
    r = _cli("check", str(csv), "--lowering", "torch")
    assert "lowered from compute-only by PyTorch's rule" in r.stdout.splitlines()[1]
    r = _cli("check", str(ROOT / "specs/examples/1f1b.json"), "--lowering", "torch")
    assert r.returncode == 2 and "already places its communication" in r.stderr
    assert "Traceback" not in r.stderr


def test_api_lowering_on_a_path_and_a_schedule(tmp_path):
    """``verifier.check(x, lowering="torch")`` on a CSV path and on a Schedule:
    the result says which lowering, and the ops are torch's plain sends/receives."""
    import verifier
    from verifier.ir import Batch, Comm
    from verifier.semantics.lowering import strip_communication

    s = strip_communication(generate("zbv", 4, 8))
    r = verifier.check(s, lowering="torch", engine="graph")
    assert r.verdict.exit_code == 0 and r.lowered and r.lowering == "torch"
    assert not any(isinstance(a, Batch) for acts in r.schedule.actions for a in acts)
    assert any(isinstance(a, Comm) for acts in r.schedule.actions for a in acts)
    mine = verifier.check(s, engine="graph")
    assert mine.lowering == "ppverify" and mine.schedule.actions != r.schedule.actions
    with pytest.raises(ScheduleError, match="lowering must be"):
        verifier.check(s, lowering="megatron")

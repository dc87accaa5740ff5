"""Recording real scripts on real gloo ranks (issue 13 items 1, 6 and 8).

- every kind of call is recorded with its peer, group, shape, dtype, handle and
  the script's own line; an "nccl" script with ``.cuda()`` runs on gloo and the
  program says so; torch.distributed.pipelining's stages are computes;
- the reported hangs (tests/programs/, each with its fixed version): ``record
  --check`` REFUTES each bug, naming the script's lines, and VERIFIES each fix;
- a rank that raises, a rank killed from outside, Ctrl-C, a script without a
  point-to-point call: one line, the documented exit code, the partial program
  kept, no process left behind;
- ``torchrun -m verifier.record`` and the Python API ``fastpath.record.recording``.

Each run starts 2-4 Python processes that import torch: seconds each on a
loaded machine; the hung cases wait for --timeout on top.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.multiprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = os.path.join(ROOT, "tests", "programs")
TIMEOUT = "8"  # --timeout: seconds without progress before a run counts as hung


def _record(out, target, nproc=2, *extra, cwd=PROGRAMS, timeout=240):
    cmd = [sys.executable, "-m", "verifier", "record", "--nproc", str(nproc), "--timeout",
           TIMEOUT, "-o", str(out), *extra, "--", *target]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _left_behind(marker: str) -> list[str]:
    """Processes whose command line names ``marker`` (this test's own paths)."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines()[1:] if marker in line and "ps -eo" not in line]


def _assert_no_orphans(marker: str) -> None:
    t_end = time.monotonic() + 5
    while _left_behind(marker) and time.monotonic() < t_end:
        time.sleep(0.2)
    assert _left_behind(marker) == []


def _one_line_error(r) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith(("error:", "interrupted"))]
    assert len(errors) == 1, r.stderr
    return errors[0]


EVERY_CALL = '''\
import torch
import torch.distributed as dist
from fastpath.record import compute, payload

dist.init_process_group("nccl")               # line 5: runs on gloo
rank = dist.get_rank()
peer = 1 - rank
t = torch.zeros(3, 5).cuda()                  # stays on the CPU
pp = dist.new_group([0, 1], group_desc="pp")
if rank == 0:
    with payload("F", 0, 1):
        dist.send(t, 1)                        # line 12
    h = dist.irecv(torch.zeros(2, dtype=torch.bfloat16), 1, group=pp)
    h.wait()
else:
    with payload("F", 0, 1):
        dist.recv(t, 0)
    h = dist.isend(torch.ones(2, dtype=torch.bfloat16), 0, group=pp)
    for _ in range(3):
        h.is_completed()                       # the same answer: written once
    h.wait()
compute("F", rank, 0)
ops = [dist.P2POp(dist.isend, t, peer), dist.P2POp(dist.irecv, torch.zeros(3, 5), peer)]
for w in dist.batch_isend_irecv(ops):
    w.wait()
dist.all_reduce(t, group=pp)
dist.all_gather_object([None, None], rank)
dist.barrier()
dist.destroy_process_group()
'''


def test_records_every_kind_of_call(tmp_path):
    (tmp_path / "every.py").write_text(EVERY_CALL)
    out = tmp_path / "p.json"
    r = _record(out, ["every.py"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("recorded 2 ranks: 8 point-to-point ops, 6 collectives, "
                               "2 computes; program written to")
    prog = json.loads(out.read_text())
    assert prog["recorded"]["backend_requested"] == "nccl"
    assert prog["recorded"]["backend_used"] == "gloo"
    assert prog["recorded"]["outcome"] == "finished"
    assert prog["groups"] == [{"id": 0, "ranks": [0, 1], "name": "default"},
                              {"id": 1, "ranks": [0, 1], "name": "pp"}]
    r0, r1 = (p["ops"] for p in prog["ranks"])
    assert [o["op"] for o in r0] == ["send", "irecv", "wait", "compute", "batch", "wait", "wait",
                                     "collective", "collective", "collective"]
    send = r0[0]
    assert send == {"op": "send", "peer": 1, "group": 0, "tag": 0, "shape": [3, 5],
                    "dtype": "float32", "payload": {"kind": "F", "stage": 0, "mb": 1},
                    "where": {"file": "every.py", "line": 12, "function": "<module>"},
                    "returned": True}
    assert r0[1]["group"] == 1 and r0[1]["dtype"] == "bfloat16" and r0[1]["handle"] == 0
    assert r0[2] == {"op": "wait", "handle": 0, "where": {"file": "every.py", "line": 14,
                                                          "function": "<module>"},
                     "returned": True}
    assert r0[3]["kind"] == "F" and r0[3]["stage"] == 0
    assert [(o["op"], o["handle"]) for o in r0[4]["ops"]] == [("isend", 1), ("irecv", 2)]
    assert [(o["name"], o["group"]) for o in r0[7:]] == [
        ("all_reduce", 1), ("all_gather_object", 0), ("barrier", 0)]
    assert "shape" not in r0[9]
    assert [o["op"] for o in r1[:4]] == ["recv", "isend", "is_completed", "wait"]
    assert r1[2]["handle"] == 0 and r1[2]["result"] in (True, False)


def _line_of(script: str, text: str) -> int:
    with open(os.path.join(PROGRAMS, script)) as f:
        for i, line in enumerate(f, 1):
            if text in line:
                return i
    raise AssertionError(f"{text!r} not in {script}")


# (bug script, ranks, a line of its cycle, fixed script)
REGRESSIONS = [
    ("pt172668_deferred_recv.py", 2, "dist.send(act, peer)", "pt172668_fixed.py"),
    ("megatron5100_shape_exchange.py", 4, "w.wait()", "megatron5100_fixed.py"),
    ("megatron5240_pair_order.py", 4, "w.wait()", "megatron5240_fixed.py"),
    ("nccl1279_grouping.py", 3, "w.wait()", "nccl1279_fixed.py"),
    ("torchtitan775_few_microbatches.py", 4, "w.wait()", "torchtitan775_fixed.py"),
]


@pytest.mark.parametrize("bug, nproc, line_text, fixed", REGRESSIONS,
                         ids=[b.split("_")[0] for b, *_ in REGRESSIONS])
def test_reported_hangs_are_refuted_and_their_fixes_verified(tmp_path, bug, nproc, line_text,
                                                             fixed):
    r = _record(tmp_path / "bug.json", [bug], nproc, "--check")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REFUTED" in r.stdout
    assert f"{bug}:{_line_of(bug, line_text)}" in r.stdout  # the cycle in the script's lines
    r = _record(tmp_path / "fixed.json", [fixed], nproc, "--check", "--comm-model", "all",
                "--engine", "both")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VERIFIED under all (engine: both)" in r.stdout  # replay and z3 agree
    _assert_no_orphans(str(tmp_path))


RAISES = '''\
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
def layout(n):
    if 4 % n:
        raise ValueError(f"4 stages do not divide over {n} ranks")
if rank == 0:
    dist.send(torch.zeros(2), 1)
else:
    layout(3)
'''


CUDA_SCRIPT = '''\
import torch
import torch.distributed as dist

dist.init_process_group("nccl")
rank = dist.get_rank()
torch.cuda.set_device(rank)
x = torch.zeros(4, 8, dtype=torch.bfloat16, device="cuda")
y = torch.empty(4, 8, dtype=torch.bfloat16, device=torch.device("cuda", rank))
z = torch.tensor([1.0, 2.0], device=torch.cuda.current_device())
assert x.device.type == y.device.type == z.device.type == "cpu"
if rank == 0:
    dist.send(x, 1)
else:
    dist.recv(y, 0)
dist.destroy_process_group()
'''


def test_tensors_made_on_cuda_by_factories_stay_on_the_cpu(tmp_path):
    """A script written for GPUs makes its buffers with ``device="cuda"``: without
    CUDA the recorder makes them on the CPU, and the run is recorded."""
    (tmp_path / "gpu.py").write_text(CUDA_SCRIPT)
    out = tmp_path / "p.json"
    r = _record(out, ["gpu.py"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r0, r1 = (p["ops"] for p in json.loads(out.read_text())["ranks"])
    assert [o["op"] for o in r0] == ["send"] and [o["op"] for o in r1] == ["recv"]
    assert r0[0]["shape"] == r1[0]["shape"] == [4, 8]


def test_a_rank_that_raises(tmp_path):
    (tmp_path / "raises.py").write_text(RAISES)
    out = tmp_path / "p.json"
    r = _record(out, ["raises.py"], cwd=tmp_path)
    assert r.returncode == 5
    assert _one_line_error(r) == (
        f"error: rank 1 raised ValueError: 4 stages do not divide over 3 ranks (at raises.py:6 "
        f"in layout); partial program written to {out}")
    prog = json.loads(out.read_text())
    assert [x["outcome"] for x in prog["ranks"]] == ["hung", "raised"]
    assert prog["ranks"][0]["ops"][0]["returned"] is False  # its send was never received
    _assert_no_orphans(str(tmp_path))


LOOP = '''\
import time, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.zeros(2)
while True:
    if rank == 0:
        dist.send(t, 1); dist.recv(t, 1)
    else:
        dist.recv(t, 0); dist.send(t, 0)
    time.sleep(0.01)
'''


def _start_loop(tmp_path):
    (tmp_path / "loop.py").write_text(LOOP)
    out = tmp_path / "p.json"
    cmd = [sys.executable, "-m", "verifier", "record", "--nproc", "2", "--timeout", "60", "-o",
           str(out), "--", "loop.py"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    part = tmp_path / "p.json.parts" / "rank1.jsonl"
    t_end = time.monotonic() + 120
    while time.monotonic() < t_end:
        if part.exists() and part.read_text().count('"op"') >= 10:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the ranks did not start")
    return proc, out, json.loads(part.read_text().splitlines()[0])["pid"]


def test_a_rank_killed_from_outside(tmp_path):
    proc, out, pid = _start_loop(tmp_path)
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 5, stderr
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert _one_line_error(r) == (f"error: rank 1 was killed by SIGKILL from outside; partial "
                                  f"program written to {out}")
    prog = json.loads(out.read_text())
    assert prog["recorded"]["outcome"] == "killed"
    assert len(prog["ranks"][1]["ops"]) >= 10
    _assert_no_orphans(str(tmp_path))


def test_ctrl_c(tmp_path):
    proc, out, _ = _start_loop(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert _one_line_error(r) == f"interrupted; partial program written to {out}"
    prog = json.loads(out.read_text())
    assert prog["recorded"]["outcome"] == "interrupted"
    assert all(len(x["ops"]) >= 10 for x in prog["ranks"])
    _assert_no_orphans(str(tmp_path))


def test_a_script_without_point_to_point_calls(tmp_path):
    out = tmp_path / "p.json"
    r = _record(out, ["no_p2p.py"], 2, "--check")
    assert r.returncode == 2
    assert _one_line_error(r).startswith("error: no_p2p.py made no point-to-point call")
    assert json.loads(out.read_text())["ranks"][0]["ops"][0]["name"] == "barrier"


PIPELINING = '''\
import torch, torch.distributed as dist
from torch.distributed.pipelining import PipelineStage, Schedule1F1B
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
stage = PipelineStage(torch.nn.Linear(8, 8), rank, world, torch.device("cpu"))
schedule = Schedule1F1B(stage, n_microbatches=4, loss_fn=lambda out, tgt: out.sum())
if rank == 0:
    schedule.step(torch.randn(8, 8))
else:
    schedule.step(target=torch.zeros(8, 8), losses=[])
dist.destroy_process_group()
'''


def test_pipelining_stages_are_computes_with_payloads(tmp_path):
    (tmp_path / "pipe.py").write_text(PIPELINING)
    out = tmp_path / "p.json"
    r = _record(out, ["pipe.py"], 2, "--check", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    prog = json.loads(out.read_text())
    for rank in prog["ranks"]:
        computes = [(o["kind"], o["stage"], o["mb"]) for o in rank["ops"] if o["op"] == "compute"]
        s = rank["rank"]
        assert sorted(computes) == sorted([("F", s, m) for m in range(4)] +
                                          [("B", s, m) for m in range(4)])
        assert all(o["where"]["file"] == "pipe.py" for o in rank["ops"])
    ops0 = prog["ranks"][0]["ops"]
    flat = [o for op in ops0 for o in (op["ops"] if op["op"] == "batch" else [op])]
    sends = [o for o in flat if o["op"] == "isend" and o["shape"] == [2, 8]]  # activations
    assert [o.get("payload") for o in sends] == [{"kind": "F", "stage": 0, "mb": m}
                                                 for m in range(4)]
    recvs = [o for o in flat if o["op"] == "irecv" and o["shape"] == [2, 8]]  # gradients
    assert [o.get("payload") for o in recvs] == [{"kind": "B", "stage": 1, "mb": m}
                                                 for m in range(4)]


DUALPIPE = '''\
import torch, torch.distributed as dist
torch.cuda.current_device = lambda: "cpu"       # DualPipe asserts its modules are on CUDA
import dualpipe.comm as comm
comm.build_from_tensor_shapes = lambda: [torch.empty(s, dtype=comm.TENSOR_DTYPE, requires_grad=True)
                                         for s in comm.TENSOR_SHAPES]   # CPU receive buffers
from dualpipe import DualPipe
dist.init_process_group("gloo")
R, r = dist.get_world_size(), dist.get_rank()
torch.manual_seed(0)
M = 4                                            # 2 micro-batches a direction, 4 rows each
comm.set_p2p_tensor_shapes([(4, 4)])
comm.set_p2p_tensor_dtype(torch.float32)
pipe = DualPipe((torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)))
x = torch.randn(8, 4) if r in (0, R - 1) else None
pipe.step(x, num_chunks=M, criterion=lambda y, t: ((y - t) ** 2).mean(), labels=(x,),
          return_outputs=False)
dist.destroy_process_group()
'''


def test_dualpipe_stages_are_computes_with_payloads(tmp_path):
    pytest.importorskip("dualpipe")
    (tmp_path / "dp.py").write_text(DUALPIPE)
    out = tmp_path / "p.json"
    r = _record(out, ["dp.py"], 2, "--check", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "message-matching  holds" in r.stdout
    prog = json.loads(out.read_text())
    for rank in prog["ranks"]:
        s0, s1 = rank["rank"], 3 - rank["rank"]  # route 0 stage r, route 1 stage 2R-1-r
        computes = [(o["kind"], o["stage"], o["mb"]) for o in rank["ops"] if o["op"] == "compute"]
        assert sorted(c for c in computes if c[0] == "F") == sorted(
            [("F", s, m) for s in (s0, s1) for m in range(2)])
        assert {c[1] for c in computes} == {s0, s1}
        assert sum(c[0] in ("B", "I") for c in computes) == 4
        assert [c for c in computes if c[0] == "W"] == [("W", c[1], c[2]) for c in computes
                                                         if c[0] == "I"]
        entries = [o for op in rank["ops"] if op["op"] == "batch" for o in op["ops"]]
        assert entries and all("payload" in o for o in entries)


def test_torchrun_entry(tmp_path):
    out = tmp_path / "p.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "verifier.record", "--timeout", TIMEOUT, "-o", str(out), "pt172668_fixed.py"]
    r = subprocess.run(cmd, cwd=PROGRAMS, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    prog = json.loads(out.read_text())
    assert prog["recorded"]["outcome"] == "finished"
    assert [len(x["ops"]) for x in prog["ranks"]] == [3, 3]  # a batch and two waits each


def test_torchrun_entry_on_a_hang(tmp_path):
    """Each rank stops itself after --timeout inside one call; rank 0 still merges."""
    out = tmp_path / "p.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "verifier.record", "--timeout", "5", "-o", str(out), "pt172668_deferred_recv.py"]
    r = subprocess.run(cmd, cwd=PROGRAMS, capture_output=True, text=True, timeout=240)
    assert r.returncode != 0
    assert out.exists(), r.stderr[-3000:]
    prog = json.loads(out.read_text())
    assert prog["recorded"]["outcome"] == "hung", (prog["ranks"], r.stderr[-3000:])
    assert [[op["returned"] for op in x["ops"]] for x in prog["ranks"]] == [[False], [False]]


API = '''\
import sys, torch, torch.distributed as dist
from fastpath.record import recording
dist.init_process_group("gloo")
with recording(sys.argv[1]):
    rank = dist.get_rank()
    t = torch.zeros(2)
    if rank == 0:
        dist.send(t, 1)
    else:
        dist.recv(t, 0)
dist.destroy_process_group()
'''


def test_python_api_for_an_own_launcher(tmp_path):
    from fastpath.record import merge_parts
    from fastpath.record.launch import free_port

    (tmp_path / "api.py").write_text(API)
    parts = tmp_path / "parts"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, "api.py", str(parts)], cwd=tmp_path,
                              env=dict(env, RANK=str(r)), stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    prog = merge_parts(str(parts), 2, str(tmp_path / "p.json"), command=["api.py"])
    assert [x["outcome"] for x in prog["ranks"]] == ["finished", "finished"]
    assert [x["ops"][0]["op"] for x in prog["ranks"]] == ["send", "recv"]
    assert prog["ranks"][0]["ops"][0]["where"]["line"] == 8

"""fastpath on real ranks (gloo, CPU): every family differentially equal to reference/.

Each test spawns ONE process group and runs several schedules in it (start-up
paid once); every spawn has a hard deadline, and every wait a watchdog, so
nothing here can hang. Run alone with ``pytest -m multiprocess``.

Every configuration is first asserted VERIFIED by the checker (graph engine)
under the strict nccl model, or under gloo (the model of the backend these ranks
run) where it changes the communication only gloo allows, so nothing here runs
unverified.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastpath.check import differential, merge, reference_run, verify
from fastpath.launch import Job, RunFailed, spawn
from fastpath.plan import build_plan, peak_receive_buffers, prepare_schedule
from fastpath.watchdog import EXIT_WATCHDOG
from verifier.generators import generate
from verifier.format.io import load_schedule, schedule_to_dict
from verifier.ir import Batch, CommKind, Compute, ComputeKind

pytestmark = pytest.mark.multiprocess
ROOT = Path(__file__).resolve().parents[1]


def _jobs(configs, **kw):
    out = []
    for fam, R, M, model in configs:
        s = prepare_schedule(generate(fam, R, M))
        out.append((fam, R, M, model, s, Job(schedule_to_dict(s), model=model, **kw)))
    return out


def _check_all(jobs, results, expect_bitwise=True, reuse=True):
    lines = []
    for (fam, R, M, model, s, job), jr in zip(jobs, results):
        cmp = differential(merge(jr), reference_run(s, job))
        lines.append(f"{fam} R={R} M={M} {model} {job.grad_order} {job.split}: max_abs={cmp.max_abs:.3e} "
                     f"bitwise={cmp.bitwise}")
        assert not cmp.missing and not cmp.extra, (fam, cmp.missing, cmp.extra)
        assert len(cmp.losses) == M
        if expect_bitwise:
            assert cmp.bitwise, (fam, R, M, [p for p in cmp.params if not p.bitwise][:3])
        else:
            assert cmp.matches, (fam, R, M, cmp.mismatched)
        # something was actually computed
        assert any(float(g.abs().max()) > 0 for g in merge(jr).grads.values())
        # receive buffers: allocated up front to the plan's peak, never more, reused
        plans = [build_plan(s, r) for r in range(R)]
        for rr, plan in zip(jr.ranks, plans):
            assert rr.num_buffers == peak_receive_buffers(plan) <= plan.num_recvs
        if M >= 6 and reuse:
            assert sum(r.num_buffers for r in jr.ranks) < sum(p.num_recvs for p in plans)
    print("\n".join(lines))


# (family, ranks, micro-batches, model), comm model the checker verifies it under
TWO_RANKS = [
    ("gpipe", 2, 4, "mlp"),
    ("1f1b", 2, 4, "mlp"),
    ("1f1b", 2, 6, "mlp"),
    ("interleaved-1f1b", 2, 2, "mlp"),
    ("interleaved-1f1b", 2, 4, "mlp"),
    ("zb-h1", 2, 4, "mlp"),
    ("zb-h1", 2, 6, "mlp"),
    ("zbv", 2, 2, "mlp"),
    ("zbv", 2, 4, "mlp"),
    ("dualpipe", 2, 4, "mlp"),
    ("dualpipe", 2, 6, "mlp"),
    ("dualpipev", 2, 4, "mlp"),
    ("dualpipev", 2, 6, "mlp"),
]


def _assert_verified(jobs, model):
    for fam, R, M, _, s, _ in jobs:
        v = verify(s, model)
        assert v.verdict == "VERIFIED", (fam, R, M, model, v.lines[:2])


def test_every_family_two_ranks_mlp_bitwise():
    jobs = _jobs(TWO_RANKS)
    _assert_verified(jobs, "nccl")
    # plus the fast gradient order (running sums + all-reduce) and a mean loss
    extra = _jobs([("dualpipe", 2, 4, "mlp"), ("zb-h1", 2, 4, "mlp")], grad_order="running",
                  loss_reduction="mean")
    # the graph I/W split (PyTorch pipelining's helpers) on the split families
    graph = _jobs([("zb-h1", 2, 4, "mlp"), ("zbv", 2, 4, "mlp"), ("dualpipev", 2, 4, "mlp"),
                   ("dualpipe", 2, 4, "mlp")], split="graph")
    # PyTorch pipelining's own artifacts (CSV, with and without its communication)
    csvs = []
    for name in ("zb1p_2rank_2stagep_comms.csv", "zb1p_2rank_2stagep_compute.csv"):
        s = prepare_schedule(load_schedule(ROOT / "tests" / "fixtures" / name))
        assert verify(s, "nccl").verdict == "VERIFIED"
        csvs.append((name, 2, s.num_microbatches, "mlp", s, Job(schedule_to_dict(s))))
    # dualpipev as bench_fastpath runs it against ScheduleDualPipeV: its compute order
    # lowered by fastpath (not DeepSeek's waited batches), bitwise in micro-batch order
    # and, in the benchmark's running order, equal to reference/ within rounding
    s = prepare_schedule(generate("dualpipev", 2, 8, compute_only=True))
    assert verify(s, "nccl").verdict == "VERIFIED"
    lowered = [("dualpipev-lowered", 2, 8, "mlp", s, Job(schedule_to_dict(s), split="graph"))]
    extra.append(("dualpipev-lowered", 2, 8, "mlp", s,
                  Job(schedule_to_dict(s), split="graph", grad_order="running")))
    # receives posted ahead (fastpath.plan.prepost_receives), alone and with every
    # send waited right after posting (waited_sends): verified under gloo, the
    # model of the backend these ranks run
    from fastpath.plan import prepost_receives, waited_sends

    early = []
    for fam, look in (("dualpipev", None), ("zbv", 1), ("1f1b", None)):
        s = prepost_receives(prepare_schedule(generate(fam, 2, 6, compute_only=True)), look)
        for name, t in ((f"{fam}-prepost-{look}", s),
                        (f"{fam}-prepost-{look}-waited-sends", waited_sends(s))):
            assert verify(t, "gloo").verdict == "VERIFIED", name
            early.append((name, 2, 6, "mlp", t, Job(schedule_to_dict(t))))
    # the cooldown split (fastpath.plan.split_cooldown) as the benchmark runs it, both
    # I/W splits: bitwise equal to reference/ running the same schedule
    from fastpath.plan import split_cooldown

    for fam, split in (("1f1b", "autograd"), ("1f1b", "graph"), ("dualpipev", "graph")):
        t = waited_sends(prepost_receives(
            split_cooldown(prepare_schedule(generate(fam, 2, 6, compute_only=True))), None))
        assert any(isinstance(a, Compute) and a.kind is ComputeKind.I
                   for acts in t.actions for a in acts)
        assert verify(t, "gloo").verdict == "VERIFIED"
        early.append((f"{fam}-split-cooldown-{split}", 2, 6, "mlp", t,
                      Job(schedule_to_dict(t), split=split)))
    # DeepSeek's DualPipe with its waited batches, receives posted up front: each
    # waited batch then waits for sends whose receives are posted (gloo only)
    t = prepost_receives(prepare_schedule(generate("dualpipe", 2, 6)), None)
    assert verify(t, "gloo").verdict == "VERIFIED" and verify(t, "nccl").verdict == "REFUTED"
    early.append(("dualpipe-deepseek-prepost", 2, 6, "mlp", t, Job(schedule_to_dict(t))))
    jobs = jobs + graph + csvs + lowered
    t = time.monotonic()
    res = spawn([j[-1] for j in jobs + early + extra], 2, watchdog_s=60, deadline_s=150)
    n = len(jobs) + len(early)
    print(f"spawned 2 ranks, {n + len(extra)} schedules in {time.monotonic() - t:.1f}s")
    _check_all(jobs, res[: len(jobs)], expect_bitwise=True)
    # every receive posted up front holds its own buffer: no reuse expected there
    _check_all(early, res[len(jobs):n], expect_bitwise=True, reuse=False)
    _check_all(extra, res[n:], expect_bitwise=False)


def test_sends_through_the_comm_thread_bitwise():
    """Sends that are not waited right away are posted by the comm thread
    (fastpath.p2p._CommThread); a waited batch's sends are posted inline, after the
    thread has posted every send handed to it before (FIFO matching per peer).
    Bitwise equal to reference/ either way, with messages larger than a socket
    buffer (64 KiB) too."""
    from fastpath.plan import prepost_receives

    size = dict(hidden=128, batch=4, seq=16)  # float64: 64 KiB per message
    lowered = prepost_receives(prepare_schedule(generate("1f1b", 2, 6, compute_only=True)),
                               None)
    # every other send-only batch waited: inline sends after threaded ones, same peer
    mixed, sends_only, waited = [], 0, 0
    for acts in lowered.actions:
        new = []
        for a in acts:
            if isinstance(a, Batch) and all(o.kind.is_send for o in a.ops):
                sends_only += 1
                if sends_only % 2 == 0:
                    a = Batch(a.ops, True)
                    waited += 1
            new.append(a)
        mixed.append(new)
    mixed = lowered.with_actions(mixed)
    assert waited >= 4
    zbv = prepost_receives(prepare_schedule(generate("zbv", 2, 4, compute_only=True)), 1)
    jobs = [(name, 2, M, "mlp", s, Job(schedule_to_dict(s), **size))
            for name, M, s in (("1f1b-prepost", 6, lowered), ("1f1b-mixed", 6, mixed),
                               ("zbv-prepost-1", 4, zbv))]
    _assert_verified(jobs, "gloo")
    res = spawn([j[-1] for j in jobs], 2, watchdog_s=60, deadline_s=150)
    _check_all(jobs, res, expect_bitwise=True, reuse=False)
    for (name, _, _, _, sched, _), jr in zip(jobs, res):
        threaded = sum(r.sends_handed_over for r in jr.ranks)
        sends = sum(build_plan(sched, r).num_sends for r in range(2))
        assert 0 < threaded, name
        assert (threaded < sends) if name == "1f1b-mixed" else (threaded == sends), name


FOUR_RANKS = [
    ("1f1b", 4, 4, "mlp"),
    ("interleaved-1f1b", 4, 4, "mlp"),
    ("zb-h1", 4, 6, "mlp"),
    ("zbv", 4, 4, "mlp"),
    ("dualpipe", 4, 8, "mlp"),
    ("dualpipev", 4, 8, "mlp"),
]


def test_subset_four_ranks_mlp_bitwise():
    jobs = _jobs(FOUR_RANKS, threads=1)
    _assert_verified(jobs, "nccl")
    t = time.monotonic()
    res = spawn([j[-1] for j in jobs], 4, watchdog_s=60, deadline_s=150)
    print(f"spawned 4 ranks, {len(jobs)} schedules in {time.monotonic() - t:.1f}s")
    _check_all(jobs, res)


def test_transformer_two_families_two_layers_per_stage():
    jobs = _jobs([("dualpipe", 2, 4, "transformer"), ("zb-h1", 2, 4, "transformer")],
                 layers_per_stage=2)
    f32 = _jobs([("dualpipev", 2, 4, "transformer")], dtype="float32")
    res = spawn([j[-1] for j in jobs + f32], 2, watchdog_s=60, deadline_s=120)
    _check_all(jobs, res[:2], expect_bitwise=True)
    _check_all(f32, res[2:], expect_bitwise=False)
    assert next(iter(res[2].ranks[0].grads.values())).dtype == torch.float32


def _broken_schedule():
    """1f1b, 2 ranks, 2 micro-batches, with rank 0's SEND_F(stage 0, mb 1) removed
    (and rank 0's backward of mb 1, so rank 0 itself finishes): rank 1's
    RECV_F(stage 1, mb 1) never gets its send."""
    s = prepare_schedule(generate("1f1b", 2, 2))
    acts = []
    for a in s.actions[0]:
        if isinstance(a, Batch):
            ops = tuple(o for o in a.ops if not (o.kind is CommKind.SEND_F and o.mb == 1)
                        and not (o.kind is CommKind.RECV_B and o.mb == 1))
            if ops:
                acts.append(Batch(ops, a.wait))
        elif a == Compute(ComputeKind.B, 0, 1):
            continue
        else:
            acts.append(a)
    return s.with_actions([acts, list(s.actions[1])])


def test_watchdog_names_rank_step_action_and_peer():
    s = _broken_schedule()
    assert verify(s, "nccl").verdict == "REFUTED"  # the checker would have refused it
    bound = 3.0
    t = time.monotonic()
    with pytest.raises(RunFailed) as ei:
        spawn([Job(schedule_to_dict(s))], 2, watchdog_s=bound, deadline_s=60)
    took = time.monotonic() - t
    msg = str(ei.value)
    print(msg, f"({took:.1f}s)")
    assert ei.value.exit_code == EXIT_WATCHDOG
    assert ei.value.rank == 1
    step = next(i for i, a in enumerate(s.actions[1]) if a == Compute(ComputeKind.F, 1, 1))
    assert f"rank 1 stuck at step {step} (1F1)" in msg
    assert "1RECV_F1" in msg and "from rank 0" in msg
    assert took < bound + 30


def _cli(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("comm", ["as-scheduled", "wait-batches", "prepost-wait-sends",
                                  "split-cooldown"])
def test_cli_check_and_trace_equal_schedule(tmp_path, comm):
    from fastpath.plan import blocking_batches, prepost_receives, split_cooldown, waited_sends
    from verifier.cli.app import main as verifier_main
    from verifier.format.io import save_schedule

    f = tmp_path / "dp.json"
    # DualPipe's batches are all waited already; 1F1B's lowered batches are not
    save_schedule(generate("dualpipe", 2, 4) if comm == "as-scheduled" else
                  generate("1f1b", 2, 4,
                           compute_only=comm in ("prepost-wait-sends", "split-cooldown")), f)
    out = tmp_path / "trace.json"
    flags = {"as-scheduled": [], "wait-batches": ["--wait-batches"],
             "prepost-wait-sends": ["--prepost-receives", "all", "--wait-sends"],
             "split-cooldown": ["--split-cooldown", "--prepost-receives", "all",
                                "--wait-sends"]}[comm]
    p = _cli("-m", "fastpath", "run", str(f), "--nproc", "2", "--check", "--trace", str(out),
             "--watchdog-seconds", "60", *flags)
    print(p.stdout, p.stderr)
    assert p.returncode == 0
    assert "check: MATCH bitwise" in p.stdout
    assert "verify=VERIFIED(gloo)" in p.stdout  # the model of the backend that ran it
    assert p.stdout.count("\nparam layer") >= 8
    tr = load_schedule(out)
    ran = prepare_schedule(load_schedule(f))
    if comm == "wait-batches":  # every BATCH waited: that schedule is the one verified and run
        ran = blocking_batches(ran)
        assert ran.actions != prepare_schedule(load_schedule(f)).actions
    elif comm == "prepost-wait-sends":  # early receives, waited sends: verified under gloo only
        ran = waited_sends(prepost_receives(ran, None))
        assert any(isinstance(a, Batch) and a.wait for acts in ran.actions for a in acts)
    elif comm == "split-cooldown":  # the last stage's last B ran as I, send, W
        ran = waited_sends(prepost_receives(split_cooldown(ran), None))
        assert [str(a) for a in ran.actions[1][-3:]] == ["1I3", "BATCH+wait[1SEND_B3]", "1W3"]
    assert tr.actions == ran.actions  # what ran is what was scheduled, in order
    times = tr.params["trace"]["times"]
    assert [len(t) for t in times] == [len(a) for a in ran.actions]
    for per_rank in times:
        starts = [x[0] for x in per_rank]
        assert starts == sorted(starts) and all(e >= s for s, e, _ in per_rank)
    import io

    model = ["--comm-model", "gloo"]  # the trace is checked under the model it ran under
    buf = io.StringIO()
    assert verifier_main(["check", str(out), *model], buf, io.StringIO()) == 0, buf.getvalue()
    buf = io.StringIO()
    assert verifier_main(["analyze", str(out), *model], buf, io.StringIO()) == 0
    assert "makespan" in buf.getvalue()


def test_torchrun_launch(tmp_path):
    from verifier.format.io import save_schedule

    f = tmp_path / "zb.json"
    save_schedule(generate("zb-h1", 2, 4), f)
    p = _cli("-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
             str(__import__("fastpath.launch", fromlist=["free_port"]).free_port()),
             "-m", "fastpath", "run", str(f), "--check", "--watchdog-seconds", "60")
    print(p.stdout[-3000:], p.stderr[-3000:])
    assert p.returncode == 0
    assert "check: MATCH bitwise" in p.stdout


def test_cli_no_verify_on_broken_schedule_exits_4(tmp_path):
    from verifier.format.io import save_schedule

    f = tmp_path / "broken.json"
    save_schedule(_broken_schedule(), f)
    p = _cli("-m", "fastpath", "run", str(f), "--watchdog-seconds", "2")
    assert p.returncode == 1 and "REFUTED" in p.stderr  # refused without --no-verify
    t = time.monotonic()
    p = _cli("-m", "fastpath", "run", str(f), "--no-verify", "--watchdog-seconds", "2")
    print(p.stderr, f"({time.monotonic() - t:.1f}s)")
    assert p.returncode == EXIT_WATCHDOG
    assert "rank 1 stuck at step" in p.stderr and "from rank 0" in p.stderr
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------- idle ranks, faults
def test_idle_rank_runs_ends_cleanly_and_matches_reference(tmp_path):
    """A rank with no actions (a blank CSV line): runs, ends with the others, and the
    run is bitwise equal to reference/; the trace keeps the empty rank and verifies."""
    f = tmp_path / "idle.csv"
    f.write_text("0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n\n")
    s = load_schedule(f)
    assert s.num_ranks == 3 and s.actions[2] == ()
    out = tmp_path / "trace.json"
    p = _cli("-m", "fastpath", "run", str(f), "--check", "--trace", str(out),
             "--watchdog-seconds", "60")
    print(p.stdout, p.stderr)
    assert p.returncode == 0, p.stderr
    assert "check: MATCH bitwise" in p.stdout and "rank 2: busy=0.000000 s" in p.stdout
    tr = load_schedule(out)
    assert tr.actions[2] == () and tr.actions[:2] == prepare_schedule(s).actions[:2]


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, name) of every live (not zombie) process, from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/comm") as fh:
                comm = fh.read().strip()
        except OSError:
            continue
        if rest[0] != "Z":
            out[int(d)] = (int(rest[1]), comm)
    return out


def _descendants(pid: int) -> dict[int, str]:
    table = _proc_table()
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for p, (pp, comm) in table.items():
            if pp == parent and p not in found:
                found[p] = comm
                todo.append(p)
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def _sockets(pid: int) -> int:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    n = 0
    for fd in fds:
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def _start_long_run(tmp_path, nproc: int, watchdog_s: int = 20):
    """``fastpath run`` of a 1F1B schedule with a million iterations (it never ends on
    its own); returns the process and {rank: pid} once every rank is computing: it
    holds sockets to the store and its peers (its process group is up) and has used
    CPU time since (conditions, not a fixed sleep that assumes a speed)."""
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs /proc to find the ranks")
    from verifier.format.io import save_schedule

    f = tmp_path / "long.json"
    save_schedule(generate("1f1b", nproc, 2 * nproc), f)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        env.pop(k, None)
    p = subprocess.Popen([sys.executable, "-m", "fastpath", "run", str(f), "--iterations",
                          "1000000", "--threads", "1", "--watchdog-seconds", str(watchdog_s)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    t_end = time.monotonic() + 180
    ranks: dict[int, int] = {}
    while len(ranks) < nproc and time.monotonic() < t_end and p.poll() is None:
        ranks = {int(c[len("fp-rank"):]): pid for pid, c in _descendants(p.pid).items()
                 if c.startswith("fp-rank")}
        time.sleep(0.1)
    if len(ranks) < nproc:
        p.kill()
        pytest.fail(f"the ranks did not start: {ranks} {p.communicate()[1][-2000:]}")
    while time.monotonic() < t_end and p.poll() is None and not all(
            _sockets(pid) >= nproc for pid in ranks.values()):
        time.sleep(0.1)
    base = {r: _cpu_seconds(pid) for r, pid in ranks.items()}
    while time.monotonic() < t_end and p.poll() is None and not all(
            _cpu_seconds(pid) - base[r] > 0.5 for r, pid in ranks.items()):
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()
    return p, ranks


def _assert_all_gone(pids, within_s: float) -> float:
    t0 = time.monotonic()
    left = dict(pids)
    while left and time.monotonic() - t0 < within_s:
        table = _proc_table()
        left = {p: c for p, c in left.items() if p in table}
        time.sleep(0.05)
    assert not left, f"still running {time.monotonic() - t0:.1f}s later: {left}"
    return time.monotonic() - t0


def test_kill_9_of_a_running_rank_is_the_cause_and_its_peers_losses_consequences():
    """In process, to kill rank 1 of 3 exactly when every rank's group is up: the
    root cause is its death, by signal; the survivors' lost connections follow as
    'peer' failures; every rank process is gone afterwards."""
    s = prepare_schedule(generate("1f1b", 3, 6))
    pids: list[int] = []
    ready: set[int] = set()

    def on_event(kind, value):
        if kind == "pids":
            pids.extend(value)
        elif kind == "ready":
            ready.add(value)
            if len(ready) == 3:
                os.kill(pids[1], signal.SIGKILL)

    t = time.monotonic()
    with pytest.raises(RunFailed) as ei:
        spawn([Job(schedule_to_dict(s), iterations=1_000_000, threads=1)], 3, watchdog_s=30,
              deadline_s=240, on_event=on_event)
    e = ei.value
    print(f"{time.monotonic() - t:.1f}s", e, *e.others, sep="\n  ")
    assert (e.rank, str(e), e.exit_code) == (1, "rank 1 died (SIGKILL)", 5)
    assert e.others and all(f.kind == "peer" and f.rank != 1 for f in e.others)
    assert all("Traceback" not in f.message for f in e.others)
    _assert_all_gone({p: "rank" for p in pids}, 10)


def test_kill_9_of_a_rank_names_the_rank_that_died(tmp_path):
    p, ranks = _start_long_run(tmp_path, 3)
    family = _descendants(p.pid)
    try:
        os.kill(ranks[1], signal.SIGKILL)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    print(err)
    lines = err.splitlines()
    assert p.returncode == 5
    # the first error (torch may have warned before it) names the rank that died
    first = next(i for i, x in enumerate(lines) if x.startswith("error: "))
    assert lines[first] == "error: rank 1 died (SIGKILL)"
    # the survivors' lost connections (if they got to report before being stopped)
    # come after it, as consequences, one line each
    after = lines[first + 1:]
    assert all(x.startswith("  consequence: rank ") for x in after)
    assert not any(x.startswith("  consequence: rank 1 ") for x in after)
    assert "Traceback" not in err
    _assert_all_gone(family, 30)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                      (signal.SIGKILL, -signal.SIGKILL)])
def test_a_signalled_launcher_leaves_nothing_running(tmp_path, sig, code):
    """SIGTERM/SIGINT: forwarded to the ranks, which are reaped before the launcher
    exits with 143/130. SIGKILL: the ranks die with it (parent-death signal, or the
    watchdog's parent poll within the watchdog interval), and so does the
    multiprocessing resource tracker once they are gone."""
    watchdog_s = 20
    p, ranks = _start_long_run(tmp_path, 2, watchdog_s)
    family = _descendants(p.pid)
    assert set(ranks.values()) <= set(family)
    assert any("resource_tracker" in _cmdline(pid) for pid in family), family
    try:
        os.kill(p.pid, sig)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    print(err)
    assert p.returncode == code
    assert "Traceback" not in err
    if sig == signal.SIGTERM:
        assert err.endswith("\ninterrupted: terminated by SIGTERM; every rank stopped\n") \
            or err == "interrupted: terminated by SIGTERM; every rank stopped\n"
    elif sig == signal.SIGINT:
        assert err.endswith("\ninterrupted\n") or err == "interrupted\n"
    took = _assert_all_gone(family, watchdog_s)
    print(f"every rank and the resource tracker gone {took:.2f}s after the launcher exited")


def test_ctrl_c_to_the_whole_group_while_ranks_start_is_the_launchers(tmp_path):
    """A terminal's Ctrl-C reaches every process of the foreground group, ranks still
    importing torch included (they are named before they import it): a rank dies
    by it at once (SIGINT's default action), none prints a KeyboardInterrupt
    traceback, and the launcher reaps them all and exits 130."""
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs /proc to find the ranks")
    from verifier.format.io import save_schedule

    f = tmp_path / "s.json"
    save_schedule(generate("1f1b", 2, 4), f)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        env.pop(k, None)
    p = subprocess.Popen([sys.executable, "-m", "fastpath", "run", str(f), "--iterations",
                          "1000000", "--watchdog-seconds", "20"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        t_end = time.monotonic() + 120
        family: dict[int, str] = {}
        while time.monotonic() < t_end and p.poll() is None and \
                sum(c.startswith("fp-rank") for c in family.values()) < 2:
            family = _descendants(p.pid)
            time.sleep(0.02)
        assert p.poll() is None, p.communicate()
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    print(err)
    assert p.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.splitlines()[-1] == "interrupted"
    _assert_all_gone(family, 20)

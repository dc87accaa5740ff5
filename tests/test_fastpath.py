"""fastpath without process groups: plans, CLI input handling, trace, comparison, watchdog.

The multi-process runs are in test_fastpath_multiprocess.py (marked), the CUDA
ones in test_fastpath_gpu.py (skip without CUDA).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastpath.check import comparison_lines, differential, merge, reference_run
from fastpath.cli import main
from fastpath.launch import Job, JobResult
from fastpath.plan import build_plan, prepare_schedule, stage_layers, tied_groups
from fastpath.p2p import _Pool
from fastpath.runtime import RankResult, StepTime
from fastpath.trace import measured_idle, trace_schedule
from reference.models import stage_layer_map
from verifier.generators import generate
from verifier.format.io import save_schedule, schedule_to_dict
from verifier.ir import (
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    ScheduleError,
    comms_of,
    computes_of,
)

ROOT = Path(__file__).resolve().parents[1]


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- plan
@pytest.mark.parametrize("family,R,M", [("1f1b", 2, 4), ("dualpipe", 4, 8), ("zb-h1", 4, 4),
                                        ("dualpipev", 2, 4), ("interleaved-1f1b", 2, 2)])
def test_plan_peers_and_frees(family, R, M):
    s = prepare_schedule(generate(family, R, M))
    plans = [build_plan(s, r) for r in range(R)]
    assert sum(p.num_sends for p in plans) == sum(p.num_recvs for p in plans) > 0
    for p in plans:
        for (step, sub), peer in p.peers.items():
            a = s.actions[p.rank][step]
            op = a.ops[sub] if isinstance(a, Batch) else a
            assert peer == s.peer_of(op) != p.rank
        # every (stage, mb) of this rank is freed exactly at its B or W step
        for (st, m), step in p.free_after.items():
            a = s.actions[p.rank][step]
            kinds = {c.kind for c in ([a.f, a.b] if hasattr(a, "f") else [a])
                     if getattr(c, "stage", None) == st and getattr(c, "mb", None) == m}
            assert kinds & {ComputeKind.B, ComputeKind.W}
        assert len(p.free_after) == sum(
            len(s.routes[s.route_of_stage(st)].microbatches) for st in p.stages)


def test_tied_groups_dualpipe_four_ranks():
    s = generate("dualpipe", 4, 8)
    assert tied_groups(s) == tied_groups(s)
    got = {g.ranks: g.layers for g in tied_groups(s)}
    assert got == {(0, 3): (0, 3), (1, 2): (1, 2)}
    assert tied_groups(generate("1f1b", 2, 2)) == ()


def test_stage_layers_match_reference_map():
    s = generate("dualpipev", 2, 4)
    ref = stage_layer_map(s, 3)
    for st in s.stage_by_id:
        assert stage_layers(s, st, 3) == ref[st]


def test_plan_rejects_op_on_wrong_rank():
    s = prepare_schedule(generate("1f1b", 2, 2))
    bad = s.with_actions([list(s.actions[0]) + [Comm(CommKind.SEND_F, 1, 0)],
                          list(s.actions[1])])
    with pytest.raises(ScheduleError, match="rank 0 step"):
        build_plan(bad, 0)
    nopeer = s.with_actions([list(s.actions[0]) + [Comm(CommKind.RECV_F, 0, 0)],
                             list(s.actions[1])])
    with pytest.raises(ScheduleError, match="no peer"):
        build_plan(nopeer, 0)


def test_pool_reuses_buffers():
    pool = _Pool(torch.float64, torch.device("cpu"))
    a = pool.take((2, 3))
    pool.give(a)
    b = pool.take((2, 3))
    assert b is a and pool.allocated == 1
    c = pool.take((2, 3))
    assert c is not a and pool.allocated == 2


# ---------------------------------------------------------------- CLI input
def test_help_documents_flags_and_exit_codes():
    code, out, _ = _run(["run", "--help"])
    assert code == 0
    for flag in ("--nproc", "--backend", "--model", "--layers-per-stage", "--dtype", "--seed",
                 "--check", "--trace", "--watchdog-seconds", "--no-verify", "--comm-model",
                 "--grad-order", "--loss-reduction", "--iterations", "--warmup", "--threads",
                 "--split", "--max-elements", "--max-bytes", "--max-actions", "--max-cells"):
        assert flag in out, flag
    for code_line in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130 ", "143 "):
        assert f"\n  {code_line}" in out, code_line
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        assert var in out, var


@pytest.mark.parametrize("argv,needle", [
    (["run"], "file"),
    (["run", "/nonexistent/x.json"], "no such file"),
    (["run", "FILE", "--nproc", "3"], "--nproc is 3"),
    (["run", "FILE", "--layers-per-stage", "0"], "--layers-per-stage must be >= 1"),
    (["run", "FILE", "--watchdog-seconds", "0"], "--watchdog-seconds must be a finite"),
    (["run", "FILE", "--model", "cnn"], "invalid choice"),
    # numbers at the edges: refused before any rank starts, naming flag and value
    (["run", "FILE", "--watchdog-seconds", "inf"], "--watchdog-seconds must be a finite "
                                                   "number of seconds in [0.001, 1000000], got inf"),
    (["run", "FILE", "--watchdog-seconds", "1e-9"], "got 1e-09"),  # timedelta(0): no bound
    (["run", "FILE", "--watchdog-seconds", "nan"], "got nan"),
    (["run", "FILE", "--watchdog-seconds", "-3"], "got -3.0"),
    (["run", "FILE", "--watchdog-seconds", "1e300"], "got 1e+300"),
    (["run", "FILE", "--threads", "-1"], "--threads must be in 1..1024, got -1"),
    (["run", "FILE", "--threads", "0"], "--threads must be in 1..1024, got 0"),
    (["run", "FILE", "--threads", "100000"], "got 100000"),
    (["run", "FILE", "--nproc", "0"], "--nproc must be >= 1, got 0"),
    (["run", "FILE", "--nproc", "-2"], "--nproc must be >= 1, got -2"),
    (["run", "FILE", "--nproc", "x"], "invalid int value: 'x'"),
    # output paths: refused before the job starts
    (["run", "FILE", "--trace", "/nonexistent-dir/t.json"],
     "--trace /nonexistent-dir/t.json: cannot write: no directory '/nonexistent-dir'"),
    (["run", "FILE", "--trace", "TMPDIR"], ": is a directory"),
    (["run", "FILE", "--trace", "/dev/full"], "--trace /dev/full: not a regular file"),
    (["run", "FILE", "--trace", "FILE/x.json"], "cannot write: no directory"),
    (["run", "FILE", "--trace", "x" * 5000], "--trace xxx"),  # a name too long to stat
    (["run", "FILE", "--max-actions", "3"], "more than the limit of 3 actions"),
    (["run", "FILE", "--max-bytes", "10"], "larger than 10 bytes"),
    (["run", "FILE", "--trace", ""], "--trace: empty path"),
])
def test_bad_input_exit_2(tmp_path, argv, needle):
    f = tmp_path / "s.json"
    save_schedule(generate("1f1b", 2, 2), f)
    subst = {"FILE": str(f), "TMPDIR": str(tmp_path), "FILE/x.json": f"{f}/x.json"}
    argv = [subst.get(a, a) for a in argv]
    code, out, err = _run(argv)
    assert code == 2, (out, err)
    assert needle in err
    assert "Traceback" not in err and err.count("\n") == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_nccl_without_cuda_is_bad_input(tmp_path):
    f = tmp_path / "s.json"
    save_schedule(generate("1f1b", 2, 2), f)
    code, _, err = _run(["run", str(f), "--backend", "nccl"])
    assert code == 2 and "needs CUDA" in err


def _broken(tmp_path):
    s = prepare_schedule(generate("1f1b", 2, 2))
    acts0 = [a for a in s.actions[0]
             if not (isinstance(a, Batch) and any(o.kind is CommKind.SEND_F and o.mb == 1
                                                  for o in a.ops))]
    f = tmp_path / "broken.json"
    save_schedule(s.with_actions([acts0, list(s.actions[1])]), f)
    return f


def test_refuted_schedule_is_refused_with_counterexample(tmp_path):
    code, out, err = _run(["run", str(_broken(tmp_path))])
    assert code == 1
    assert "REFUTED" in err and "not running it" in err
    assert "rank 1 step" in err  # located counterexample
    assert out == ""  # nothing ran


def test_fastpath_never_imports_z3():
    code = (
        "import sys, fastpath.cli, fastpath.launch, fastpath.runtime, fastpath.trace\n"
        "from fastpath.check import verify\n"
        "from fastpath.plan import prepare_schedule\n"
        "from verifier.generators import generate\n"
        "assert verify(prepare_schedule(generate('dualpipe', 2, 4))).verdict == 'VERIFIED'\n"
        "assert 'z3' not in sys.modules, 'z3 imported'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- trace / idle
def _fake_result(s):
    ranks = []
    for r, acts in enumerate(s.actions):
        tl = [StepTime(10.0 + k, 10.5 + k, 0.25 if isinstance(a, Compute) else 0.0)
              for k, a in enumerate(acts)]
        ranks.append(RankResult(r, timeline=tl, executed=list(acts)))
    return JobResult(ranks, [[1.0] * s.num_ranks])


def test_trace_schedule_keeps_actions_and_times():
    s = prepare_schedule(generate("zb-h1", 2, 4))
    jr = _fake_result(s)
    tr = trace_schedule(s, jr)
    assert tr.actions == s.actions
    times = tr.params["trace"]["times"]
    assert times[0][0] == [0.0, 0.5, 0.25]
    assert [len(t) for t in times] == [len(a) for a in s.actions]
    # round trip through the format
    from verifier.format.io import schedule_from_dict

    back = schedule_from_dict(schedule_to_dict(tr))
    assert back.actions == s.actions and back.params["trace"]["times"] == times


def test_measured_idle_is_makespan_minus_compute():
    s = prepare_schedule(generate("1f1b", 2, 2))
    jr = _fake_result(s)
    span = max(len(a) for a in s.actions) - 1 + 0.5
    for r, (busy, idle) in enumerate(measured_idle(jr, s)):
        n_comp = sum(isinstance(a, Compute) for a in s.actions[r])
        assert busy == pytest.approx(0.25 * n_comp)
        assert idle == pytest.approx(span - busy)


# ---------------------------------------------------------------- differential
def test_differential_detects_a_one_ulp_difference():
    s = prepare_schedule(generate("1f1b", 2, 2))
    job = Job(schedule_to_dict(s))
    ref = reference_run(s, job)
    ranks = [RankResult(0, losses={0: ref.losses[0], 1: ref.losses[1]},
                        grads={n: g.clone() for n, g in ref.grads.items()})]
    same = differential(merge(JobResult(ranks)), ref)
    assert same.bitwise and same.matches
    name = sorted(ref.grads)[0]
    g = ranks[0].grads[name]
    g.view(-1)[0] = torch.nextafter(g.view(-1)[0], torch.tensor(float("inf"), dtype=g.dtype))
    diff = differential(merge(JobResult(ranks)), ref)
    assert not diff.bitwise and diff.matches  # 1 ulp: within tolerance, not bitwise
    g.view(-1)[0] += 1e-3
    bad = differential(merge(JobResult(ranks)), ref)
    assert not bad.matches and name in bad.mismatched
    assert any(line.startswith(f"param {name} ") and "ok=no" in line
               for line in comparison_lines(bad))


# ---------------------------------------------------------------- watchdog thread
def test_watchdog_thread_ends_a_blocked_process_with_exit_4():
    code = (
        "import time\n"
        "from fastpath.watchdog import Watchdog\n"
        "w = Watchdog(3, 0.3, on_fire=lambda m: print(m, flush=True), grace_s=0.2, poll_s=0.05)\n"
        "w.start()\n"
        "w.waiting(7, 'F(stage 1, mb 2)', 'the tied all-reduce', 2)\n"
        "time.sleep(20)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 4
    assert "rank 3 stuck at step 7 (F(stage 1, mb 2))" in p.stdout
    assert "with rank 2" in p.stdout


# ---------------------------------------------------------------- one rank, no group
def test_one_rank_runner_with_overlap_matches_reference_bitwise():
    """The step loop itself (OVERLAP, local hand-offs, I/W) with no process group."""
    from fastpath.runtime import RankRunner
    from reference.models import loss_fn, make_layers, make_microbatches
    from verifier.ir import Overlap, Route, Schedule, Stage

    F, B, I, W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W  # noqa: E741
    c = Compute
    acts = [c(F, 0, 0), c(F, 1, 0), c(F, 0, 1), Overlap(c(F, 1, 1), c(I, 1, 0)),
            c(W, 1, 0), c(B, 0, 0), c(B, 1, 1), c(I, 0, 1), c(W, 0, 1)]
    s = Schedule(num_ranks=1, num_microbatches=2, stages=(Stage(0, 0, 0), Stage(1, 0, 1)),
                 routes=(Route((0, 1), (0, 1)),), actions=(tuple(acts),), name="v1")
    layers = dict(enumerate(make_layers("transformer", 2)))
    runner = RankRunner(build_plan(s, 0), stage_layer_map(s, 1), layers,
                        make_microbatches("transformer", 2), loss_fn,
                        device=torch.device("cpu"))
    res = runner.run()
    assert [len(runner.state), len(runner.wstate)] == [0, 0]  # everything freed
    job = Job(schedule_to_dict(s), model="transformer", threads=torch.get_num_threads())
    cmp = differential(merge(JobResult([res])), reference_run(s, job))
    assert cmp.bitwise, cmp.mismatched


def test_blocking_batches_only_sets_wait_and_stays_verified():
    from fastpath.check import verify
    from fastpath.plan import blocking_batches

    s = prepare_schedule(generate("1f1b", 4, 8))
    t = blocking_batches(s)
    assert verify(t, "nccl").verdict == "VERIFIED"
    for a, b in zip((x for acts in s.actions for x in acts), (x for acts in t.actions for x in acts)):
        if isinstance(a, Batch):
            assert b == Batch(a.ops, True) and not a.wait
        else:
            assert a == b


@pytest.mark.parametrize("family", ["1f1b", "zbv", "interleaved-1f1b", "dualpipev"])
def test_blocking_batches_needed_next_waits_exactly_the_batches_consumed_next(family):
    from fastpath.check import verify
    from fastpath.plan import blocking_batches, consumer_key, recv_key

    s = prepare_schedule(generate(family, 2, 8, compute_only=True))
    t = blocking_batches(s, only_needed_next=True)
    assert verify(t, "nccl").verdict == "VERIFIED"
    waited = kept = 0
    for acts, new in zip(s.actions, t.actions):
        for i, (a, b) in enumerate(zip(acts, new)):
            if not isinstance(a, Batch):
                assert a == b
                continue
            nxt = next((x for x in acts[i + 1:] if not isinstance(x, (Batch, Comm))), None)
            needs = {consumer_key(c) for c in getattr(nxt, "computes", (nxt,))} if nxt else set()
            hit = any(not op.kind.is_send and recv_key(op) in needs for op in a.ops)
            assert b == Batch(a.ops, a.wait or hit)
            waited += hit and not a.wait
            kept += not (a.wait or hit)
    assert waited > 0 and (kept > 0 or family == "1f1b")


FAMILIES_2 = ("1f1b", "zbv", "dualpipe", "dualpipev", "zb-h1", "interleaved-1f1b")


@pytest.mark.parametrize("family", FAMILIES_2)
def test_waited_sends_with_early_receives_is_what_only_the_gloo_model_verifies(family):
    """fastpath.plan.waited_sends turns exactly the send-only actions into waited
    batches (same ops, same order). With every receive posted up front it is the
    communication bench_fastpath runs on gloo: VERIFIED under gloo, REFUTED under
    nccl (early receives reorder the rank's stream). eager VERIFIES it too, but
    eager is not gloo's model: it would also verify a waited send whose receive
    is posted only after a wait on the peer (below), which hangs on gloo."""
    from fastpath.check import verify
    from fastpath.plan import prepost_receives, waited_sends

    s = prepost_receives(prepare_schedule(generate(family, 2, 6, compute_only=True)), None)
    t = waited_sends(s)
    changed = 0
    for acts, new in zip(s.actions, t.actions):
        assert len(acts) == len(new)
        for a, b in zip(acts, new):
            ops = (a,) if isinstance(a, Comm) else a.ops if isinstance(a, Batch) else ()
            if ops and all(op.kind.is_send for op in ops):
                assert b == Batch(tuple(ops), True)
                changed += a != b
            else:
                assert a == b
    assert changed > 0 and waited_sends(t) == t
    assert verify(t, "gloo").verdict == "VERIFIED"
    assert verify(t, "nccl").verdict == "REFUTED"


@pytest.mark.parametrize("family,R", [("1f1b", 2), ("1f1b", 4), ("gpipe", 3), ("zb-h1", 4),
                                      ("interleaved-1f1b", 2), ("dualpipe", 4), ("zbv", 2),
                                      ("dualpipev", 2)])
def test_split_cooldown_splits_exactly_the_backwards_after_the_last_forward(family, R):
    """fastpath.plan.split_cooldown: every plain B after the rank's last forward whose
    input gradient goes to another rank becomes I, and its W follows the action
    that sends that gradient; everything else stays, in order. The result is still
    VERIFIED under both gloo and nccl, with receives posted early under gloo."""
    from fastpath.check import verify
    from fastpath.plan import prepost_receives, split_cooldown

    s = prepare_schedule(generate(family, R, 8, compute_only=True))
    t = split_cooldown(s)
    split = 0
    for r, (acts, new) in enumerate(zip(s.actions, t.actions)):
        last_f = max(i for i, a in enumerate(acts)
                     if any(c.kind is ComputeKind.F for c in computes_of(a)))
        cooldown = {(a.stage, a.mb) for i, a in enumerate(acts)
                    if i > last_f and isinstance(a, Compute) and a.kind is ComputeKind.B
                    and s.prev_stage(a.stage) is not None
                    and s.rank_of(s.prev_stage(a.stage)) != r}
        split += len(cooldown)

        def was_split(a, kind):
            return isinstance(a, Compute) and a.kind is kind and (a.stage, a.mb) in cooldown

        assert sum(was_split(a, ComputeKind.I) for a in new) == len(cooldown)
        # without the new W's, and each new I read as B, it is the rank's old order
        back = [Compute(ComputeKind.B, a.stage, a.mb) if was_split(a, ComputeKind.I) else a
                for a in new if not was_split(a, ComputeKind.W)]
        assert back == list(acts), (family, r)
        for k, a in enumerate(new):
            if was_split(a, ComputeKind.W):
                # right after the action sending its gradient (other W's between)
                j = k - 1
                while was_split(new[j], ComputeKind.W):
                    j -= 1
                assert any(op.kind is CommKind.SEND_B and (op.stage, op.mb) == (a.stage, a.mb)
                           for op in comms_of(new[j])), (family, r, k)
    # zbv and zb-h1 run no whole B after their last forward: nothing to split
    assert (split > 0) == (family not in ("zbv", "zb-h1")), family
    assert split_cooldown(t) == t  # the I's are not split again
    assert verify(t, "nccl").verdict == "VERIFIED"
    assert verify(prepost_receives(t), "gloo").verdict == "VERIFIED"


def test_split_cooldown_leaves_a_stage_fed_by_its_own_rank_whole():
    """The V shape's turn (stage R-1 and R on one rank) passes its gradient inside
    the rank: nothing to send early, so that B stays whole."""
    from fastpath.plan import split_cooldown

    s = prepare_schedule(generate("dualpipev", 2, 8, compute_only=True))
    t = split_cooldown(s)
    whole = []
    for r, (old, acts) in enumerate(zip(s.actions, t.actions)):
        for a in acts:
            if isinstance(a, Compute) and a.kind is ComputeKind.I and a not in old:
                prev = s.prev_stage(a.stage)
                assert prev is not None and s.rank_of(prev) != r
        last_f = max(i for i, a in enumerate(acts)
                     if any(c.kind is ComputeKind.F for c in computes_of(a)))
        whole += [str(a) for a in acts[last_f + 1:] if isinstance(a, Compute)
                  and a.kind is ComputeKind.B]
    assert whole == ["2B6"]  # after rank 1's last forward, fed by stage 1 on rank 1


def test_on_gloo_fastpath_verifies_under_gloo_and_never_takes_eagers_word(tmp_path):
    """Each rank waits for its sends before posting the receive the other's send
    needs: a gloo send completes only with its receive, so this hangs on real gloo
    (tests/test_conformance_gloo.py runs it), yet eager VERIFIES it. fastpath run
    on gloo verifies under gloo by default (REFUTED: exit 1, no rank started) and
    refuses --comm-model eager before anything runs (exit 2, one line)."""
    from fastpath.check import verify

    ok = generate("1f1b", 2, 2)
    split = []
    for row in ok.actions:
        new = []
        for a in row:
            snd = tuple(op for op in a.ops if op.kind.is_send) if isinstance(a, Batch) else ()
            rcv = tuple(op for op in a.ops if not op.kind.is_send) if isinstance(a, Batch) else ()
            new += [Batch(snd, True), Batch(rcv, False)] if snd and rcv else [a]
        split.append(new)
    hangs = ok.with_actions(split)
    assert verify(hangs, "eager").verdict == "VERIFIED"
    assert verify(hangs, "gloo").verdict == "REFUTED"
    f = tmp_path / "hangs.json"
    save_schedule(hangs, f)
    code, out, err = _run(["run", str(f), "--backend", "gloo"])
    assert code == 1 and "(graph engine, gloo model) says REFUTED" in err, err
    code, out, err = _run(["run", str(f), "--backend", "gloo", "--comm-model", "eager"])
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --comm-model eager does not describe gloo") and \
        "nccl, nccl-pairs, gloo" in err
    for model in ("nccl", "nccl-pairs"):  # stricter models than gloo's: their VERIFIED holds
        code, out, err = _run(["run", str(f), "--backend", "gloo", "--comm-model", model])
        assert code == 1 and f"{model} model) says REFUTED" in err, err


def test_verify_model_is_the_backends_or_a_stricter_one():
    from fastpath.preflight import BadInput, verify_model

    assert verify_model("auto", "gloo") == "gloo" and verify_model("auto", "nccl") == "nccl"
    assert verify_model("nccl", "gloo") == "nccl" and verify_model("nccl", "nccl") == "nccl"
    for requested, backend in (("eager", "gloo"), ("eager", "nccl"), ("gloo", "nccl"),
                               ("nccl-pairs", "nccl")):
        with pytest.raises(BadInput, match=f"--comm-model {requested} does not describe"):
            verify_model(requested, backend)


def _recv_order(acts):
    """The rank's receives in posting order, as (kind, stage, mb)."""
    out = []
    for a in acts:
        if isinstance(a, (Batch, Comm)):
            ops = a.ops if isinstance(a, Batch) else (a,)
            out += [(op.kind, op.stage, op.mb) for op in ops if not op.kind.is_send]
    return out


def _posted_before(acts):
    """Receive (kind, stage, mb) -> how many computes of the rank precede its posting."""
    out, computes = {}, 0
    for a in acts:
        if isinstance(a, (Compute, Overlap)):
            computes += 1
        elif isinstance(a, (Batch, Comm)):
            for op in (a.ops if isinstance(a, Batch) else (a,)):
                if not op.kind.is_send:
                    out[(op.kind, op.stage, op.mb)] = computes
    return out


@pytest.mark.parametrize("family,R,M", [("1f1b", 2, 6), ("zbv", 2, 4), ("dualpipev", 2, 6),
                                        ("interleaved-1f1b", 4, 8), ("zb-h1", 4, 8),
                                        ("gpipe", 4, 4), ("dualpipe", 4, 8)])
def test_prepost_receives_moves_receives_earlier_keeping_their_order(family, R, M):
    from fastpath.check import verify
    from fastpath.plan import prepost_receives

    s = prepare_schedule(generate(family, R, M, compute_only=True))
    assert prepost_receives(s, 0) == s
    for look in (1, 2, None):
        t = prepost_receives(s, look)
        assert verify(t, "gloo").verdict == "VERIFIED", (family, look)
        for acts, new in zip(s.actions, t.actions):
            # same computes in the same order, same sends in the same order
            assert [a for a in acts if isinstance(a, (Compute, Overlap))] == \
                [a for a in new if isinstance(a, (Compute, Overlap))]
            sends = [op for a in acts if isinstance(a, (Batch, Comm))
                     for op in (a.ops if isinstance(a, Batch) else (a,)) if op.kind.is_send]
            assert sends == [op for a in new if isinstance(a, (Batch, Comm))
                             for op in (a.ops if isinstance(a, Batch) else (a,))
                             if op.kind.is_send]
            # receives: same order (so FIFO per peer is unchanged), each posted `look`
            # computes before the compute it preceded (or at the start); all: before
            # compute 0, or before compute 1 when no receive preceded compute 0
            assert _recv_order(acts) == _recv_order(new)
            before = _posted_before(acts)
            start = 0 if 0 in before.values() else 1
            assert _posted_before(new) == {
                k: min(j, start) if look is None else max(0, j - look)
                for k, j in before.items()}
            assert not any(isinstance(a, Batch) and a.wait for a in new)
    if family != "gpipe":  # GPipe's lowering already posts its receives up front
        assert prepost_receives(s, None) != s


@pytest.mark.parametrize("family,R,M", [("dualpipe", 2, 8), ("dualpipev", 4, 8),
                                        ("dualpipe", 4, 16)])
def test_prepost_receives_with_waited_batches_only_gloo_verifies(family, R, M):
    """DeepSeek's communication waits every batch, sends included. Receives posted
    early leave each waited batch its sends, still waited (an emptied one is
    dropped; its receives are waited by their consumers): gloo VERIFIES it, nccl
    refutes it (the early receives reorder each rank's stream)."""
    from fastpath.check import verify
    from fastpath.plan import prepost_receives

    s = prepare_schedule(generate(family, R, M))
    for look in (None, 1):
        t = prepost_receives(s, look)
        assert verify(t, "gloo").verdict == "VERIFIED", look
        assert verify(t, "nccl").verdict == "REFUTED", look
        for acts, new in zip(s.actions, t.actions):
            assert _recv_order(acts) == _recv_order(new)
            waited = [op for a in acts if isinstance(a, Batch) and a.wait
                      for op in a.ops if op.kind.is_send]
            assert waited == [op for a in new if isinstance(a, Batch) and a.wait
                              for op in a.ops if op.kind.is_send]  # every waited send still waited
    with pytest.raises(ValueError, match=">= 0"):
        prepost_receives(prepare_schedule(generate("1f1b", 2, 4, compute_only=True)), -1)


def test_cli_prepost_receives_refusals(tmp_path):
    f = tmp_path / "dpv.json"
    save_schedule(generate("dualpipev", 2, 4, compute_only=True), f)
    code, out, err = _run(["run", str(f), "--prepost-receives", "all", "--comm-model", "nccl"])
    assert code == 1 and "says REFUTED" in err and "--comm-model gloo" in err
    code, out, err = _run(["run", str(ROOT / "specs/examples/dualpipe.json"),
                           "--prepost-receives", "1", "--comm-model", "nccl"])
    assert code == 1 and "nccl model) says REFUTED" in err
    code, out, err = _run(["run", str(f), "--prepost-receives", "-2"])
    assert code == 2 and "expected a number >= 0 or 'all'" in err


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_fastpath",
                                                  ROOT / "benchmarks" / "bench_fastpath.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_runs_each_family_as_its_compute_order_with_fastpaths_communication():
    """bench_fastpath gives fastpath and the baseline the same compute order per rank
    and lets each add its own communication: fastpath's is the lowered compute order
    with every receive posted up front (same computes, same sends and receives, no
    waited batch), verified under gloo (the model of the backend it runs on); with
    --prepost 0 the lowering as it is (nccl-verified); --batches sends waits every
    send; --comm deepseek gives dualpipe/dualpipev DeepSeek's batches."""
    from fastpath.check import verify
    from fastpath.plan import prepost_receives, split_cooldown, waited_sends

    bench = _bench_module()
    for fam in ("1f1b", "zbv", "dualpipe", "dualpipev"):
        lowered = prepare_schedule(generate(fam, 2, 8, compute_only=True))
        assert bench._schedule(fam, 2, 8, prepost=0) == lowered
        assert verify(lowered, "nccl").verdict == "VERIFIED"
        own = bench._schedule(fam, 2, 8, prepost=None)
        assert own == prepost_receives(lowered, None)
        assert verify(own, "gloo").verdict == "VERIFIED"
        sends = bench._schedule(fam, 2, 8, blocking="sends", prepost=None)
        assert sends == waited_sends(own) != own
        assert verify(sends, "gloo").verdict == "VERIFIED"
        # the benchmark's default: the cooldown split, then early receives, waited sends
        default = bench._schedule(fam, 2, 8, blocking="sends", prepost=None, cooldown=True)
        assert default == waited_sends(prepost_receives(split_cooldown(lowered), None))
        assert verify(default, "gloo").verdict == "VERIFIED"
        if fam not in ("dualpipe", "dualpipev"):
            continue
        deepseek = bench._schedule(fam, 2, 8, comm="deepseek", prepost=None)
        assert deepseek == prepost_receives(prepare_schedule(generate(fam, 2, 8)), None)
        assert verify(deepseek, "gloo").verdict == "VERIFIED"
        assert any(a.wait for acts in deepseek.actions for a in acts if isinstance(a, Batch))
        for r in range(2):
            comp = [a for a in own.actions[r] if not isinstance(a, (Batch, Comm))]
            assert comp == [a for a in deepseek.actions[r] if not isinstance(a, (Batch, Comm))]
            p, q = build_plan(own, r), build_plan(deepseek, r)
            assert (p.num_sends, p.num_recvs) == (q.num_sends, q.num_recvs)
            assert all(not a.wait for a in own.actions[r] if isinstance(a, Batch))


def test_predicted_bubble_uses_the_model_and_refuses_a_deadlocked_replay():
    """Receives posted ahead deadlock the nccl replay: no prediction (not a partial
    one); under eager, the model they are verified under, there is one."""
    from fastpath.plan import prepost_receives
    from fastpath.trace import predicted_bubble

    s = prepost_receives(prepare_schedule(generate("1f1b", 2, 4, compute_only=True)))
    ranks = []
    for r, acts in enumerate(s.actions):
        rr = RankResult(r)
        rr.timeline = [StepTime(i, i + (1.0 if isinstance(a, Compute) else 0.0))
                       for i, a in enumerate(acts)]
        ranks.append(rr)
    jr = JobResult(ranks)
    assert predicted_bubble(s, jr, "nccl") is None
    makespan, bubbles = predicted_bubble(s, jr, "eager")
    assert makespan > 0 and len(bubbles) == 2 and all(b >= 0 for b in bubbles)
    assert max(bubbles) > 0  # 1F1B on 2 ranks has a bubble


# ---------------------------------------------------------------- hostile environment
_LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                "MASTER_PORT")


@pytest.mark.parametrize("env,needle", [
    ({"RANK": "abc", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
     "environment variable RANK must be an integer in [0, 2) (WORLD_SIZE=2), got 'abc'"),
    ({"RANK": "0", "WORLD_SIZE": "x", "LOCAL_RANK": "0"},
     "environment variable WORLD_SIZE must be an integer >= 1, got 'x'"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be an integer >= 1, got '0'"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK must be an integer in [0, 2)"),
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "got '-1'"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "garbage"}, "LOCAL_RANK must be"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "7"}, "LOCAL_RANK must be"),
    ({"RANK": "0"}, "environment variable WORLD_SIZE is not set, but RANK is"),
    ({"LOCAL_RANK": "0"}, "environment variable RANK is not set, but LOCAL_RANK is"),
    ({"TORCHELASTIC_RUN_ID": "x"}, "RANK is not set, but TORCHELASTIC_RUN_ID is"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR is not set"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT is not set"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "http"},
     "MASTER_PORT must be a port number in 1..65535, got 'http'"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "70000"}, "'70000'"),
    ({"RANK": "0", "WORLD_SIZE": "3", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
     "the schedule has 2 ranks, WORLD_SIZE is 3"),
    ({"RANK": "9" * 5000, "WORLD_SIZE": "2"}, "got '9999999999"),  # shown shortened
])
def test_garbage_launch_environment_is_exit_2_naming_the_variable(tmp_path, monkeypatch, env,
                                                                  needle):
    f = tmp_path / "s.json"
    save_schedule(generate("1f1b", 2, 2), f)
    for k in _LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, out, err = _run(["run", str(f), "--watchdog-seconds", "5"])
    assert code == 2, (out, err)
    assert needle in err
    assert "Traceback" not in err and err.count("\n") == 1 and len(err) < 400, err


def test_nproc_that_disagrees_with_world_size_is_exit_2(tmp_path, monkeypatch):
    f = tmp_path / "s.json"
    save_schedule(generate("1f1b", 2, 2), f)
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    code, out, err = _run(["run", str(f), "--nproc", "3"])
    assert code == 2 and "--nproc is 3 but WORLD_SIZE is 2" in err


def test_launch_env_reads_a_torchrun_environment():
    from fastpath.preflight import LaunchEnv, launch_env

    assert launch_env({}) is None
    assert launch_env({"PATH": "/bin"}) is None
    env = {"RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert launch_env(env) == LaunchEnv(1, 4, 1, False)  # LOCAL_RANK defaults to RANK
    env.update(LOCAL_RANK="0", TORCHELASTIC_RUN_ID="abc")
    assert launch_env(env) == LaunchEnv(1, 4, 0, True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_trace_into_a_read_only_directory_is_refused(tmp_path):
    f = tmp_path / "s.json"
    save_schedule(generate("1f1b", 2, 2), f)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, out, err = _run(["run", str(f), "--trace", str(ro / "t.json")])
    finally:
        ro.chmod(0o755)
    assert code == 2 and "is not writable" in err


def test_a_trace_write_that_fails_is_exit_2_naming_the_path(tmp_path, monkeypatch):
    """The path was fine when checked, then its directory vanished during the run: the
    write fails at the end, exit 2 naming the path (not a traceback)."""
    import shutil

    import fastpath.launch

    f = tmp_path / "s.json"
    save_schedule(generate("1f1b", 2, 2), f)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    trace = out_dir / "t.json"
    s = prepare_schedule(generate("1f1b", 2, 2))

    def fake_spawn(jobs, nproc, **kw):
        shutil.rmtree(out_dir)
        return [_fake_result(s)]

    monkeypatch.setattr(fastpath.launch, "spawn", fake_spawn)
    code, out, err = _run(["run", str(f), "--trace", str(trace)])
    assert code == 2, (out, err)
    assert err.startswith(f"error: --trace {trace}: cannot write it: ") and "Traceback" not in err
    assert err.count("\n") == 1


# ---------------------------------------------------------------- faults: whose fault
def test_root_cause_is_the_first_own_failure_or_death_never_a_lost_peer():
    """The launcher names the rank that failed first on its own or died, even when a
    peer's "connection closed" (a consequence) arrives before it, as it can on gloo."""
    from fastpath.launch import EXIT_RANK_FAILED, Failure, is_peer_loss, root_cause
    from fastpath.watchdog import EXIT_WATCHDOG, PeerFailure, ScheduleFault

    lost = RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:57041")
    assert is_peer_loss(lost) and not is_peer_loss(ValueError("shape mismatch"))
    assert is_peer_loss(PeerFailure("x")) and not is_peer_loss(ScheduleFault("x"))
    stuck = Failure(1, "watchdog: rank 1 stuck at step 3", EXIT_WATCHDOG, "own")
    peer = Failure(0, f"rank 0 lost a peer: {lost}", EXIT_RANK_FAILED, "peer")
    e = root_cause([peer, stuck])
    assert (e.rank, e.exit_code, str(e)) == (1, EXIT_WATCHDOG, stuck.message)
    assert e.others == (peer,)
    own = Failure(2, "rank 2 failed: ValueError: shape mismatch", EXIT_RANK_FAILED, "own")
    assert root_cause([peer, own, stuck]).rank == 2  # earliest own failure
    death = Failure(3, "rank 3 died (SIGKILL)", EXIT_RANK_FAILED, "death")
    assert root_cause([peer, death, own]).rank == 3  # a death counts like an own failure
    assert root_cause([peer]).rank == 0  # only consequences: still reported
    with pytest.raises(ValueError, match="kind must be one of"):
        Failure(0, "x", 5, "mystery")


def test_failures_say_whose_fault_they_are():
    from fastpath.launch import _failure_of
    from fastpath.watchdog import PeerFailure, ScheduleFault, WatchdogTimeout

    f = _failure_of(2, ScheduleFault("rank 2 step 4 (SEND_F(stage 2, mb 0)): posted before"))
    assert (f.kind, f.exit_code) == ("own", 5)
    f = _failure_of(1, WatchdogTimeout("watchdog: rank 1 stuck"))
    assert (f.kind, f.exit_code) == ("own", 4)
    assert _failure_of(1, PeerFailure("rank 1 step 3: lost")).kind == "peer"
    gloo = RuntimeError("[/x/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                        "[127.0.0.1]:4242. This is typically caused by a remote worker "
                        "crashing. Check the logs of the remote worker. GLHF!")
    f = _failure_of(0, gloo)  # a lost peer outside a wait fastpath names (a barrier)
    assert f.kind == "peer"
    assert f.message == "rank 0 lost a peer: Connection closed by peer [127.0.0.1]:4242"
    try:
        raise KeyError(99)
    except KeyError as e:  # a bug: its own failure, with where it happened
        f = _failure_of(3, e)
    assert f.kind == "own" and f.message.startswith("rank 3 failed: KeyError: 99")
    assert "Traceback" in f.message


class _FakeProc:
    def __init__(self, exitcode=None):
        self.exitcode = exitcode


class _FakeQueue:
    def __init__(self, items=()):
        self.items = list(items)

    def get(self, timeout=None):
        return self.get_nowait()

    def get_nowait(self):
        import queue

        if not self.items:
            raise queue.Empty
        return self.items.pop(0)


def test_the_launcher_names_the_rank_that_died_not_the_ranks_that_lost_it():
    """Rank 2 is SIGKILLed: its exit is seen in the same round as rank 1's "connection
    closed" message; the death is the cause, the message a consequence. A rank that
    exits non-zero with its message is not a silent death."""
    from fastpath.launch import EXIT_RANK_FAILED, Failure, _Watch, root_cause

    procs = [_FakeProc(), _FakeProc(), _FakeProc(-9)]
    lost = Failure(1, "rank 1 step 7 (B(stage 1, mb 0)): ... Connection closed by peer",
                   EXIT_RANK_FAILED, "peer")
    w = _Watch(procs)
    w.observe(_FakeQueue([("ready", 0), ("error", lost)]), 0.0)
    assert [(f.rank, f.kind) for f in w.failures] == [(2, "death"), (1, "peer")]
    assert w.ready == [0]
    e = root_cause(w.failures)
    assert (e.rank, str(e), e.exit_code) == (2, "rank 2 died (SIGKILL)", EXIT_RANK_FAILED)
    # rank 1 then exits with code 5: it reported, so no second entry for it
    procs[1].exitcode = 5
    w.observe(_FakeQueue(), 0.0)
    assert len(w.failures) == 2
    # a rank that exits with a code and its message in the same round
    procs = [_FakeProc(5), _FakeProc()]
    own = Failure(0, "rank 0 failed: ValueError: x", EXIT_RANK_FAILED, "own")
    w = _Watch(procs)
    w.observe(_FakeQueue([("error", own)]), 0.0)
    assert w.failures == [own]
    # exits without a word: named by its code (4 stays the watchdog's code)
    w = _Watch([_FakeProc(4), _FakeProc(3), _FakeProc(0)])
    w.observe(_FakeQueue(), 0.0)
    assert [(f.message, f.exit_code) for f in w.failures] == [
        ("rank 0 exited with code 4 and no message", 4),
        ("rank 1 exited with code 3 and no message", EXIT_RANK_FAILED)]


def test_short_comm_error_keeps_the_gist():
    from fastpath.supervise import describe_exit, short_comm_error

    text = ("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
            "[127.0.0.1]:55190: Connection reset by peer. This is typically caused by a "
            "remote worker hanging.\nmore")
    assert short_comm_error(text) == "Read error [127.0.0.1]:55190: Connection reset by peer"
    assert short_comm_error("") == ""
    assert describe_exit(2, -9) == "rank 2 died (SIGKILL)"
    assert describe_exit(0, -11) == "rank 0 died (SIGSEGV)"
    assert describe_exit(1, 3) == "rank 1 exited with code 3 and no message"


def test_a_rank_whose_launcher_vanishes_exits_by_the_watchdogs_parent_poll():
    """The fallback of the parent-death signal: the watchdog thread sees its parent pid
    gone and ends the process. A middle process starts the 'rank' (no prctl here) and
    is SIGKILLed; the rank must be gone within a few polls."""
    import signal
    import time

    rank = (
        "import os, sys, time\n"
        "from fastpath.watchdog import Watchdog\n"
        "Watchdog(0, 60, poll_s=0.05, parent_pid=os.getppid()).start()\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(120)\n"
    )
    middle = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {rank!r}], stdout=sys.stdout)\n"
        "time.sleep(120)\n"
    )
    mid = subprocess.Popen([sys.executable, "-c", middle], cwd=ROOT, stdout=subprocess.PIPE,
                           text=True)
    try:
        pid = int(mid.stdout.readline())  # the rank is up, its watchdog started
        mid.kill()
        mid.wait(timeout=30)
        t_end = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < t_end:
            time.sleep(0.05)
        assert not _alive(pid), "the orphaned rank is still running"
    finally:
        mid.kill()
        if "pid" in locals() and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (not a zombie awaiting its reaper) by /proc, else by signal 0."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


# ---------------------------------------------------------------- names that do not exist
def _mutated(tmp_path, name, mutate, compute_only=False):
    import json

    d = schedule_to_dict(generate("1f1b", 2, 2, compute_only=compute_only))
    mutate(d)
    f = tmp_path / name
    f.write_text(json.dumps(d))
    return f


@pytest.mark.parametrize("name,mutate,compute_only,needle", [
    ("action.json", lambda d: d["actions"][0].__setitem__(0, {"op": "F", "stage": 99, "mb": 0}),
     False, "rank 0 step 0 99F0: stage 99 is not declared"),
    # compute-only: lowered before the checker runs (it raised KeyError: 99 there)
    ("lowered.json", lambda d: d["actions"][0].__setitem__(1, {"op": "F", "stage": 99, "mb": 1}),
     True, "stage 99 is not declared"),
    ("route.json", lambda d: d["routes"][0].__setitem__("stages", [0, 99]), False,
     "route 0 names stage 99, which is not declared (and 1 more)"),
    ("rank.json", lambda d: d["stages"][1].__setitem__("rank", 5), True,
     "stage 1 is placed on rank 5, outside 0..1"),
])
@pytest.mark.parametrize("no_verify", [False, True])
def test_a_schedule_naming_what_does_not_exist_is_refused_before_running(
        tmp_path, name, mutate, compute_only, needle, no_verify):
    f = _mutated(tmp_path, name, mutate, compute_only)
    code, out, err = _run(["run", str(f), *(["--no-verify"] if no_verify else [])])
    assert code == 2, (out, err)
    assert err.startswith(f"error: {f}: not well-formed: ") and needle in err
    assert "fastpath run needs a well-formed schedule" in err
    assert "Traceback" not in err and err.count("\n") == 1


# ---------------------------------------------------------------- sizes refused up front
@pytest.mark.parametrize("argv,needle", [
    (["--hidden", "100000"], "the mlp model of 2 blocks, hidden 100000, 2 micro-batches of "
                             "2 x 4 on 2 ranks needs about "),
    (["--layers-per-stage", "1000000"], "model of 2000000 blocks"),
    (["--batch", "100000", "--seq", "100000"], "micro-batches of 100000 x 100000"),
    (["--max-elements", "1000"], "more than --max-elements 1000"),
])
def test_a_run_too_big_to_build_is_refused_naming_the_flag(tmp_path, argv, needle):
    f = tmp_path / "s.json"
    save_schedule(generate("1f1b", 2, 2), f)
    code, out, err = _run(["run", str(f), *argv])
    assert code == 2, (out, err)
    assert err.startswith(f"error: {f}: ") and needle in err and "raise --max-elements" in err
    assert err.count("\n") == 1


def test_the_size_estimate_counts_the_real_parameters():
    """Its per-block count is exactly the test models' parameter count, and the estimate
    covers every rank building the whole model and all micro-batches, at the least."""
    from fastpath.preflight import estimated_elements
    from reference.models import make_layers

    for model in ("mlp", "transformer"):
        for h in (4, 16, 33):
            real = sum(p.numel() for p in make_layers(model, 1, hidden=h)[0].parameters())
            est = estimated_elements(model, 1, h, 1, 1, 1, 1, 1, False)
            assert est >= real + 2 * h
            n, R, M, b, t = 6, 3, 4, 2, 5
            big = estimated_elements(model, n, h, M, b, t, R, 6, False)
            assert big >= R * (n * real + 2 * M * b * t * h) + M * n * real
            assert estimated_elements(model, n, h, M, b, t, R, 6, True) > big


def test_a_rank_arms_parent_death_and_default_signals_before_importing_torch():
    """supervise.rank_process runs first in a spawned rank: by the time the rank's body
    is unpickled (which imports torch, seconds), the parent-death signal is armed,
    SIGINT/SIGTERM have their default action and the process is named; and nothing
    on that path has imported torch yet."""
    import pickle
    import signal as sig

    body = ("import ctypes, signal, sys\n"
            "v = ctypes.c_int(0)\n"
            "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0)\n"  # PR_GET_PDEATHSIG
            "print(v.value, signal.getsignal(signal.SIGINT) == signal.SIG_DFL,\n"
            "      signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,\n"
            "      open('/proc/self/comm').read().strip(), 'torch' in sys.modules)\n")
    payload = pickle.dumps((exec, (body,)))
    code = ("import os, sys\n"
            "from fastpath.supervise import rank_process\n"
            f"rank_process(3, os.getppid(), {payload!r})\n")
    if not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux's")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(int(sig.SIGKILL)), "True", "True", "fp-rank3", "False"]


def test_a_failed_wait_is_a_timeout_by_the_clock_else_a_peer_and_local_faults_are_the_schedules():
    """fastpath.p2p: whose fault a failure is follows from types and the clock, never
    from the backend's text (gloo raises one bare RuntimeError for both a timeout and
    a lost peer); a fault of the rank's own schedule is raised before any wait."""
    import datetime
    import time

    from fastpath.p2p import P2P
    from fastpath.supervise import wait_failure
    from fastpath.watchdog import PeerFailure, ScheduleFault, WatchdogTimeout
    from verifier.ir import Comm, CommKind

    class Work:
        def __init__(self, sleep, text):
            self.sleep, self.text = sleep, text

        def wait(self, timeout=None):
            time.sleep(self.sleep)
            raise RuntimeError(self.text)

    class Rank(P2P):
        rank, cuda, watchdog = 3, False, None
        timeout = datetime.timedelta(seconds=0.2)

    r = Rank()
    r._reset_p2p()
    # the wait lasted its bound: a timeout, whatever the text says
    with pytest.raises(WatchdogTimeout, match="rank 3 stuck at step 5"):
        r._wait(Work(0.2, "Connection closed by peer"), 5, "3F1", "RECV_F", 2)
    # it failed early: the op failed under it (a peer), even if the text says "timed out"
    with pytest.raises(PeerFailure, match=r"rank 3 step 5 \(3F1\): RECV_F with rank 2 failed: "
                                          r"Timed out"):
        r._wait(Work(0.0, "[pair.cc:1] Timed out waiting"), 5, "3F1", "RECV_F", 2)
    assert isinstance(wait_failure(RuntimeError("x"), 9.9, 10.0, timed_out=lambda: "t",
                                   failed="f"), WatchdogTimeout)
    assert isinstance(wait_failure(RuntimeError("x"), 9.9, None, timed_out=lambda: "t",
                                   failed="f"), PeerFailure)  # no bound (CUDA): never a timeout
    # the rank's own schedule: a compute whose receive was never posted, a send before its data
    with pytest.raises(ScheduleFault, match="no receive for it was posted"):
        r._take_recv(("F", 1, 0), 4, "1F0")
    with pytest.raises(ScheduleFault, match="posted before its data exist"):
        r._send_tensor(4, "SEND", Comm(CommKind.SEND_F, 1, 0))
    src = (ROOT / "fastpath" / "runtime.py").read_text() + (ROOT / "fastpath" / "p2p.py").read_text()
    assert "imed out" not in src

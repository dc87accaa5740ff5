"""fastpath on CUDA: streams, events, OVERLAP on two streams, NCCL. Skips without CUDA.

They need CUDA (``-m gpu`` selects them; benchmarks/gpu_check.sh runs them with
fastpath's CUDA checks on a GPU machine). What they check:

- one process, one rank, a hand-written V schedule whose every compute runs on
  the GPU with an OVERLAP pair (forward on the side stream, backward on the
  compute stream): gradients and losses equal the reference executor's (CPU,
  float64) within reference.baseline's tolerance;
- the receive-buffer pool hands a buffer back only behind its release event;
- two ranks over NCCL (needs 2 GPUs): DualPipe and ZB-H1 equal the reference
  within tolerance.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_two = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices"
)


def _one_rank_v_schedule():
    from verifier.ir import Compute, ComputeKind, Overlap, Route, Schedule, Stage

    F, B = ComputeKind.F, ComputeKind.B
    c = Compute
    acts = [c(F, 0, 0), c(F, 1, 0), c(F, 0, 1),
            Overlap(c(F, 1, 1), c(B, 1, 0)),
            c(B, 0, 0), c(B, 1, 1), c(B, 0, 1)]
    return Schedule(num_ranks=1, num_microbatches=2,
                    stages=(Stage(0, 0, 0), Stage(1, 0, 1)),
                    routes=(Route((0, 1), (0, 1)),), actions=(tuple(acts),), name="v1")


@needs_cuda
def test_one_rank_overlap_on_two_streams_matches_reference():
    from fastpath.check import differential, merge, reference_run
    from fastpath.launch import Job, JobResult
    from fastpath.plan import build_plan
    from fastpath.runtime import RankRunner
    from reference.models import loss_fn, make_layers, make_microbatches, stage_layer_map
    from verifier.format.io import schedule_to_dict

    s = _one_rank_v_schedule()
    dev = torch.device("cuda", 0)
    layers = {i: m.to(dev) for i, m in enumerate(make_layers("mlp", 2))}
    runner = RankRunner(build_plan(s, 0), stage_layer_map(s, 1), layers,
                        make_microbatches("mlp", 2), loss_fn, device=dev)
    assert runner.cuda and runner.side_stream != runner.compute_stream
    res = runner.run()
    res.grads = {n: g.cpu() for n, g in res.grads.items()}
    res.losses = {m: v.cpu() for m, v in res.losses.items()}
    cmp = differential(merge(JobResult([res])), reference_run(s, Job(schedule_to_dict(s))))
    print(f"max_abs={cmp.max_abs:.3e} bitwise={cmp.bitwise}")
    assert cmp.matches and not cmp.missing


@needs_cuda
def test_pool_waits_for_release_event():
    from fastpath.p2p import _Pool

    dev = torch.device("cuda", 0)
    pool = _Pool(torch.float32, dev)
    buf = pool.take((1024,))
    side = torch.cuda.Stream(dev)
    buf.fill_(1.0)
    ev = torch.cuda.Event()
    ev.record(torch.cuda.current_stream(dev))
    pool.give(buf, ev)
    again = pool.take((1024,), side)
    assert again is buf
    with torch.cuda.stream(side):
        again.add_(1.0)
    torch.cuda.synchronize()
    assert float(again[0]) == 2.0


@needs_two
@pytest.mark.multiprocess
def test_nccl_two_ranks_match_reference():
    from fastpath.check import differential, merge, reference_run
    from fastpath.launch import Job, spawn
    from fastpath.plan import prepare_schedule
    from verifier.generators import generate
    from verifier.format.io import schedule_to_dict

    scheds = [prepare_schedule(generate(f, 2, 4)) for f in ("dualpipe", "zb-h1")]
    jobs = [Job(schedule_to_dict(s), dtype="float64") for s in scheds]
    res = spawn(jobs, 2, backend="nccl", watchdog_s=60, deadline_s=180)
    for s, job, jr in zip(scheds, jobs, res):
        cmp = differential(merge(jr), reference_run(s, job))
        print(s.family, f"max_abs={cmp.max_abs:.3e}")
        assert cmp.matches, cmp.mismatched

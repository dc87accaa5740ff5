"""Benchmark: checking a DualPipeV program against PyTorch's own schedule simulator.

What it measures (issue 13 item 7, second part), in one run:

- ``check_program`` (well-formed, message-matching, collective-order, and the
  deadlock replay under every model: nccl, nccl-pairs, gloo, eager) of
  DualPipeV at ``--ranks`` x ``--microbatches`` (default 16 x 64) as a program:
  the schedule written as the calls a runtime following it issues
  (``verifier.format.schedule_program.program_from_schedule``: an isend/irecv per
  op with handle and payload, a batch_isend_irecv per BATCH, waits), the same
  shape and size as a recording of that run. Also with reading the JSON file
  (``load_program``) included.
- ``torch.distributed.pipelining.schedules._simulate_comms_compute`` on the same
  action lists (``bench_check.to_pytorch``), which decides one model (eager
  progress) and no property.

Ratios printed: check (every model, as ``check`` prints it; and the nccl model
alone, ``every_model=False``, one model like PyTorch's; and every model without
validating the replay's certificate, ``validate_certificate=False``, to show
what the second opinion costs) / PyTorch, and (load + check) / PyTorch, wall
and CPU, best of ``--repeat``. Target: <= 1.0. Run:
``python benchmarks/bench_program.py [--ranks 16 --microbatches 64] [--repeat 5]``.

What it does not cover: a program recorded from a real 16-rank run (the
recorder is exercised by tests/test_record_runtimes.py at 2 and 4 ranks);
the recorder's own overhead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_check import best, to_pytorch  # noqa: E402
from verifier.check.program import check_program  # noqa: E402
from verifier.format.program import dumps_program, load_program  # noqa: E402
from verifier.format.schedule_program import program_from_schedule  # noqa: E402
from verifier.generators import generate  # noqa: E402
from verifier.results.check import Verdict  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=16)
    ap.add_argument("--microbatches", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    from torch.distributed.pipelining.schedules import _simulate_comms_compute

    s = generate("dualpipev", args.ranks, args.microbatches)
    p = program_from_schedule(s)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dualpipev-program.json"
        path.write_text(dumps_program(p))
        t_check = best(lambda: check_program(p, "nccl"), args.repeat)
        t_one = best(lambda: check_program(p, "nccl", every_model=False), args.repeat)
        t_nocert = best(lambda: check_program(p, "nccl", validate_certificate=False), args.repeat)
        t_load_check = best(lambda: check_program(load_program(path), "nccl"), args.repeat)
        size = path.stat().st_size
    r = t_check[2]
    assert r.verdict is Verdict.VERIFIED, [v.message for v in r.violations]
    order = to_pytorch(s)
    rank_of = {st.id: st.rank for st in s.stages}
    t_pt = best(lambda: _simulate_comms_compute({k: list(v) for k, v in order.items()},
                                                rank_of.__getitem__, s.num_stages), args.repeat)
    print(f"DualPipeV {args.ranks} ranks x {args.microbatches} micro-batches as a program: "
          f"{p.num_ops} ops, file {size / 1e6:.1f} MB; PyTorch lists: "
          f"{sum(len(v) for v in order.values())} actions")
    print(f"  check_program (4 properties, replay under {len(r.models)} models): "
          f"{t_check[0]:.3f} s wall, {t_check[1]:.3f} s CPU")
    print(f"  check_program, the nccl model only (every_model=False): "
          f"{t_one[0]:.3f} s wall, {t_one[1]:.3f} s CPU")
    print(f"  check_program without validating the certificate (validate_certificate=False): "
          f"{t_nocert[0]:.3f} s wall, {t_nocert[1]:.3f} s CPU")
    print(f"  load_program + check_program: {t_load_check[0]:.3f} s wall, {t_load_check[1]:.3f} s CPU")
    print(f"  PyTorch _simulate_comms_compute: {t_pt[0]:.3f} s wall, {t_pt[1]:.3f} s CPU")
    print(f"ratio check / PyTorch: {t_check[0] / t_pt[0]:.2f}x wall, {t_check[1] / t_pt[1]:.2f}x CPU "
          "(target <= 1.0)")
    print(f"ratio check (nccl only) / PyTorch: {t_one[0] / t_pt[0]:.2f}x wall, "
          f"{t_one[1] / t_pt[1]:.2f}x CPU (target <= 1.0: one model each)")
    print(f"ratio check without certificate validation / PyTorch: {t_nocert[0] / t_pt[0]:.2f}x wall, "
          f"{t_nocert[1] / t_pt[1]:.2f}x CPU")
    print(f"ratio load+check / PyTorch: {t_load_check[0] / t_pt[0]:.2f}x wall, "
          f"{t_load_check[1] / t_pt[1]:.2f}x CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())

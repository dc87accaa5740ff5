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
  progress) and no property; and, for the path from a file, PyTorch reading
  the same lists from its CSV (as its ``_load_csv``) before simulating.

Ratios printed: check (as ``check`` prints it: the nccl verdict, its certificate
validated, every other model's outcome; the nccl model alone,
``every_model=False``, one model like PyTorch's; ``--comm-model all``, every
model replayed and certified; and without validating the replay's
certificate, ``validate_certificate=False``, to show what the second opinion
costs) / PyTorch, and (load + check) / PyTorch, wall and CPU. Every run checks
a new Program object (nothing cached from an earlier run); the variants are
interleaved round by round (the order rotated each round), best of ``--repeat``
rounds. Target: <= 1.0. Run:
``python benchmarks/bench_program.py [--ranks 16 --microbatches 64] [--repeat 21]``.

What it does not cover: a program recorded from a real 16-rank run (the
recorder is exercised by tests/test_record_runtimes.py at 2 and 4 ranks);
the recorder's own overhead.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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


def _fresh(p):
    """The same program as a new object: nothing computed on an earlier run
    (``Program.columns``, built on first use) is reused."""
    return dataclasses.replace(p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=16)
    ap.add_argument("--microbatches", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args(argv)
    from torch.distributed.pipelining.schedules import _Action, _simulate_comms_compute

    s = generate("dualpipev", args.ranks, args.microbatches)
    p = program_from_schedule(s)
    order = to_pytorch(s)
    rank_of = {st.id: st.rank for st in s.stages}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dualpipev-program.json"
        path.write_text(dumps_program(p))
        size = path.stat().st_size
        csv_path = Path(d) / "dualpipev.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            for r in sorted(order):
                w.writerow([str(a) for a in order[r]])
        csv_size = csv_path.stat().st_size

        def pytorch_file():  # PyTorch's own reading of its CSV (as its _load_csv), then the simulator
            with open(csv_path, newline="") as f:
                lists = {r: [_Action.from_str(c) for c in row] for r, row in enumerate(csv.reader(f))}
            _simulate_comms_compute(lists, rank_of.__getitem__, s.num_stages)

        pt_run = lambda: _simulate_comms_compute({k: list(v) for k, v in order.items()},  # noqa: E731
                                                 rank_of.__getitem__, s.num_stages)
        # Three groups, each with its own PyTorch baseline. Within a group every
        # round times each variant once (a slow spell of the machine hits all of
        # them) in an order rotated each round (the first run after another
        # variant's allocations is slower: about 3 ms on ours right after
        # PyTorch's); best of the rounds. Groups apart, so the large loads and
        # --comm-model all runs do not disturb the headline pair.
        groups = [
            {"pt": pt_run, "check": lambda: check_program(_fresh(p), "nccl"),
             "one": lambda: check_program(_fresh(p), "nccl", every_model=False)},
            {"pt": pt_run, "all": lambda: check_program(_fresh(p), "all"),
             "nocert": lambda: check_program(_fresh(p), "nccl", validate_certificate=False)},
            {"pt": pt_run, "pt_file": pytorch_file, "load": lambda: check_program(load_program(path), "nccl")},
        ]
        t: dict = {}
        base: dict = {}  # variant -> the PyTorch figure of its group
        for runs in groups:
            g = {k: [float("inf"), float("inf"), None] for k in runs}
            names = list(runs)
            for i in range(args.repeat):
                for k in names[i % len(names):] + names[:i % len(names)]:
                    w, c, out = best(runs[k], 1)
                    g[k] = [min(g[k][0], w), min(g[k][1], c), out]
            for k in names:
                if k != "pt":
                    t[k], base[k] = g[k], g["pt"]
            t.setdefault("pt", g["pt"])
    r = t["check"][2]
    assert r.verdict is Verdict.VERIFIED, [v.message for v in r.violations]
    assert r.certificate == "accepted", r.certificate
    pt = t["pt"]
    print(f"DualPipeV {args.ranks} ranks x {args.microbatches} micro-batches as a program: "
          f"{p.num_ops} ops, file {size / 1e6:.1f} MB; PyTorch lists: "
          f"{sum(len(v) for v in order.values())} actions")
    rows = [("check", "check_program, nccl (4 properties; every model's outcome, certificate validated)"),
            ("one", "check_program, the nccl model only (every_model=False)"),
            ("all", "check_program --comm-model all (every model replayed, 4 certificates)"),
            ("nocert", "check_program without validating the certificate"),
            ("load", "load_program + check_program")]
    print(f"  PyTorch _simulate_comms_compute: {pt[0]:.4f} s wall, {pt[1]:.4f} s CPU (each ratio uses the "
          "figure measured beside it)")
    for k, what in rows:
        print(f"  {what}: {t[k][0]:.4f} s wall, {t[k][1]:.4f} s CPU")
    pf = t["pt_file"]
    print(f"  PyTorch from its CSV (csv.reader + _Action.from_str per cell) + simulator: "
          f"{pf[0]:.4f} s wall, {pf[1]:.4f} s CPU")
    for k, what in rows:
        target = " (target <= 1.0)" if k in ("check", "one") else ""
        b = base[k]
        print(f"ratio {k} / PyTorch: {t[k][0] / b[0]:.2f}x wall, {t[k][1] / b[1]:.2f}x CPU{target}")
    print(f"ratio load / PyTorch from its CSV: {t['load'][0] / pf[0]:.2f}x wall, {t['load'][1] / pf[1]:.2f}x CPU "
          f"(each from its own file: program {size / 1e6:.1f} MB of JSON, CSV {csv_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the checker against PyTorch's own schedule simulator, and loading
against json.loads; optionally the Z3 engine's proof times.

What it measures (one run prints every number and the ratios):

1. ``check`` (all seven properties, the nccl model, ``--engine auto``, which
   at this size is the graph engine plus the independent certificate checker)
   of DualPipeV at 32 ranks x 256 micro-batches with communication, against
   ``torch.distributed.pipelining.schedules._simulate_comms_compute`` on the
   same action lists (ours converted to PyTorch ``_Action`` lists: an OVERLAP
   becomes its F then its B, a BATCH its sends then its receives, since
   PyTorch has neither). PyTorch's simulator checks one thing (the eager model's
   progress) and none of the properties; ours checks all of them under the
   stricter model. Target ratio: <= 1.0.
2. ``verifier.format.io.load_schedule`` (parse + schema validation + IR) against
   ``json.loads`` of the same file. Target ratio: <= 3.
3. the whole process ``python -m verifier check FILE.csv`` on PyTorch's own CSV
   dump of the same DualPipeV lists, against PyTorch reading that file
   (``_Action.from_str`` per cell) plus ``_simulate_comms_compute``, in
   process (``bench_csv``; in ``--repeat`` rounds, each PyTorch's run then
   ours, the median of the rounds' ratios printed). Target ratio: <= 1.0
   (``--no-csv`` skips it).
4. whole ``check`` processes on refuted schedules of up to 2,000 steps, the
   default engine against ``--engine z3``. Bound: <= 0.5 s
   (``--no-refuted`` skips it).
5. with ``--z3``: the Z3 engine's proof of DualPipe at 16 ranks x 64
   micro-batches (target <= 5 s); with ``--z3-scan``: the largest DualPipe
   instance Z3 proves within 60 s (sizes doubling).

Times are the best of ``--repeat`` runs, wall clock (``time.perf_counter``)
and CPU (``time.process_time``; steadier on a shared machine). Run:
``python benchmarks/bench_check.py [--ranks 32 --microbatches 256] [--z3] [--z3-scan]``.
Whole-process times are taken with ``resource.getrusage(RUSAGE_CHILDREN)``
(CPU) and ``time.perf_counter`` around ``subprocess.run`` (wall).

What it does not cover: the executors (bench_reference.py, bench_fastpath.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.check.checker import Verdict, check  # noqa: E402
from verifier.generators import generate  # noqa: E402
from verifier.format.io import dumps_json, load_schedule  # noqa: E402
from verifier.ir import Batch, Comm, Compute, Overlap, Schedule  # noqa: E402


def best(fn, repeat: int, setup=None) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result); ``setup()`` (untimed)
    makes each run's argument."""
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        arg = setup() if setup else None
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(arg) if setup else fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def to_pytorch(s: Schedule, flatten_only: bool = False):
    """Our action lists as PyTorch pipelining ``_Action`` lists (rank -> list);
    a BATCH's ops in their order with ``flatten_only``, else sends first."""
    from torch.distributed.pipelining.schedules import _Action
    from torch.distributed.pipelining.schedules import _ComputationType as CT

    def conv(a) -> list:
        if isinstance(a, (Compute, Comm)):
            return [_Action(a.stage, CT(a.kind.value), a.mb)]
        if isinstance(a, Overlap):
            return conv(a.f) + conv(a.b)
        assert isinstance(a, Batch)
        ops = a.ops if flatten_only else sorted(a.ops, key=lambda o: not o.kind.is_send)  # sends first
        return [x for o in ops for x in conv(o)]

    return {r: [x for a in acts for x in conv(a)] for r, acts in enumerate(s.actions)}


def bench_check(ranks: int, microbatches: int, repeat: int) -> dict:
    from torch.distributed.pipelining.schedules import _simulate_comms_compute

    s = generate("dualpipev", ranks, microbatches)
    text = dumps_json(s)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dualpipev.json"
        path.write_text(text)
        t_json = best(lambda: json.loads(path.read_text()), repeat)
        t_load = best(lambda: load_schedule(path), repeat)
    # a fresh Schedule object for every run: nothing cached from the previous one
    fresh = lambda: s.with_actions(s.actions)  # noqa: E731
    t_check = best(lambda x: check(x, "nccl", "auto"), repeat, fresh)
    r = t_check[2]
    assert r.verdict is Verdict.VERIFIED and r.certificate.accepted, r.violations
    t_nocert = best(lambda x: check(x, "nccl", "graph", validate_certificate=False), repeat, fresh)
    order = to_pytorch(s)
    rank_of = {st.id: st.rank for st in s.stages}
    n_pt = sum(len(v) for v in order.values())
    t_pt = best(
        lambda: _simulate_comms_compute({k: list(v) for k, v in order.items()}, rank_of.__getitem__, s.num_stages),
        repeat,
    )
    print(f"DualPipeV {ranks} ranks x {microbatches} micro-batches: {s.num_actions} steps, "
          f"{r.stats.num_ops} comm ops, {r.stats.num_events} events; PyTorch lists: {n_pt} actions")
    print(f"  check (auto -> {r.engine}, 7 properties, nccl, certificate {r.certificate}): "
          f"{t_check[0]:.3f} s wall, {t_check[1]:.3f} s CPU")
    print(f"    of which engine {r.stats.engine_seconds:.3f} s, certificate {r.stats.certificate_seconds:.3f} s")
    print(f"  check without certificate validation: {t_nocert[0]:.3f} s wall, {t_nocert[1]:.3f} s CPU")
    print(f"  PyTorch _simulate_comms_compute:      {t_pt[0]:.3f} s wall, {t_pt[1]:.3f} s CPU")
    print(f"  load_schedule: {t_load[0]:.3f} s wall ({t_load[1]:.3f} CPU); json.loads: "
          f"{t_json[0]:.3f} s wall ({t_json[1]:.3f} CPU); file {len(text) / 1e6:.1f} MB")
    out = {
        "check_vs_pytorch_wall": t_check[0] / t_pt[0],
        "check_vs_pytorch_cpu": t_check[1] / t_pt[1],
        "check_nocert_vs_pytorch_cpu": t_nocert[1] / t_pt[1],
        "load_vs_json_wall": t_load[0] / t_json[0],
        "load_vs_json_cpu": t_load[1] / t_json[1],
    }
    print("ratios (target: check <= 1.0x PyTorch, load <= 3x json.loads):")
    print(f"  check / PyTorch simulator:            {out['check_vs_pytorch_wall']:.2f}x wall, "
          f"{out['check_vs_pytorch_cpu']:.2f}x CPU")
    print(f"  check (no certificate) / PyTorch:     {out['check_nocert_vs_pytorch_cpu']:.2f}x CPU")
    print(f"  load_schedule / json.loads:           {out['load_vs_json_wall']:.2f}x wall, "
          f"{out['load_vs_json_cpu']:.2f}x CPU")
    return out


def _process(argv: list[str], repeat: int) -> tuple[float, float, int]:
    """(best wall, best CPU, exit code) of ``python -m verifier ARGV`` as a whole
    process: interpreter start, imports, reading the file, checking, output."""
    import os
    import resource
    import subprocess

    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    wall = cpu = float("inf")
    code = -1
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "verifier", *argv], cwd=root, env=env,
                              stdout=subprocess.DEVNULL).returncode
        w = time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = min(wall, w)
        cpu = min(cpu, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return wall, cpu, code


def bench_csv(ranks: int, microbatches: int, repeat: int) -> dict:
    """The whole ``check FILE.csv`` process against PyTorch's own reading of the
    same file (``csv.reader`` + ``_Action.from_str`` per cell, as its
    ``_load_csv``) plus ``_simulate_comms_compute``, timed inside one process
    after ``import torch`` (which is not counted: PyTorch's side gets no start-up
    cost at all). The file is what PyTorch's ``_dump_csv`` writes (csv.writer,
    one row per rank, ``str(_Action)`` cells) for compute_comms lists that
    PyTorch can simulate: DualPipeV's compute order lowered by
    ``verifier.semantics.lowering`` (receives placed so that every rank posts its
    messages in one global order), every BATCH written as its ops and every
    OVERLAP as its F then its B (PyTorch's simulator has neither). They verify
    under both models; ``check`` is timed with its defaults (nccl, auto) and
    with ``--comm-model eager`` (the model of PyTorch's simulator).
    Target: <= 1.0x."""
    import csv

    from torch.distributed.pipelining.schedules import _Action, _simulate_comms_compute

    from verifier.semantics.lowering import lower

    s = lower(generate("dualpipev", ranks, microbatches, compute_only=True))
    order = to_pytorch(s, flatten_only=True)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"dualpipev_{ranks}x{microbatches}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            for r in sorted(order):
                w.writerow(order[r])

        def pytorch():
            with open(path, newline="") as f:
                lists = {r: [_Action.from_str(c) for c in row] for r, row in enumerate(csv.reader(f))}
            rank_of: dict[int, int] = {}
            for r, acts in lists.items():
                for a in acts:
                    if a is not None:
                        rank_of.setdefault(a.stage_index, r)
            _simulate_comms_compute(lists, rank_of.__getitem__, len(rank_of))

        # in rounds, PyTorch then ours, so that each ratio compares runs taken
        # under the same load; the median of the rounds' ratios is reported
        rounds = []
        for _ in range(repeat):
            pt = best(pytorch, 1)
            nccl = _process(["check", str(path)], 1)
            eager = _process(["check", str(path), "--comm-model", "eager"], 1)
            rounds.append((pt, nccl, eager))
        size = path.stat().st_size
    t_pt, t_nccl, t_eager = ((min(x[i][0] for x in rounds), min(x[i][1] for x in rounds),
                              rounds[-1][i][2]) for i in range(3))
    n = sum(len(v) for v in order.values())
    print(f"PyTorch CSV of DualPipeV {ranks} ranks x {microbatches} micro-batches: {n} cells, "
          f"{size / 1e6:.1f} MB; {repeat} rounds (best times, median of the rounds' ratios)")
    print(f"  check FILE.csv (nccl: exit {t_nccl[2]}), whole process:         "
          f"{t_nccl[0]:.3f} s wall, {t_nccl[1]:.3f} s CPU")
    print(f"  check FILE.csv --comm-model eager (exit {t_eager[2]}), whole process: "
          f"{t_eager[0]:.3f} s wall, {t_eager[1]:.3f} s CPU")
    print(f"  PyTorch from_str parse + _simulate_comms_compute, in process: "
          f"{t_pt[0]:.3f} s wall, {t_pt[1]:.3f} s CPU")
    assert t_nccl[2] == 0 and t_eager[2] == 0, (t_nccl[2], t_eager[2])

    def median_ratio(i: int, j: int) -> float:
        r = sorted(x[i][j] / x[0][j] for x in rounds)
        return r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2

    return {
        "csv_nccl_vs_pytorch_wall": median_ratio(1, 0),
        "csv_nccl_vs_pytorch_cpu": median_ratio(1, 1),
        "csv_eager_vs_pytorch_wall": median_ratio(2, 0),
        "csv_eager_vs_pytorch_cpu": median_ratio(2, 1),
    }


def refuted_cases() -> list[tuple[str, Schedule]]:
    """Small refuted schedules a user meets: generated ones with every BATCH
    flattened (as a CSV holds them) and one receive moved 3 steps earlier (the
    ZBV one also refutes dependencies), each a deadlock under nccl."""
    from verifier.format.csvio import flatten_batches

    def moved(s: Schedule, rank: int, step: int, by: int) -> Schedule:
        row = list(s.actions[rank])
        row.insert(step + by, row.pop(step))
        return s.with_actions([row if r == rank else a for r, a in enumerate(s.actions)])

    return [
        ("zbv 4x8, RECV_F moved 3 earlier", moved(flatten_batches(generate("zbv", 4, 8)), 1, 29, -3)),
        ("dualpipev 8x16, RECV_B moved 3 earlier",
         moved(flatten_batches(generate("dualpipev", 8, 16)), 6, 169, -3)),
    ]


def bench_refuted(repeat: int) -> dict:
    """Whole ``check FILE`` processes on refuted schedules of up to 2,000 steps:
    the default engine (auto: the graph engine's deadlock, confirmed by the
    certificate checker) against ``--engine z3`` (Z3's minimised unsat core).
    Bound: auto <= 0.5 s wall."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for i, (what, s) in enumerate(refuted_cases()):
            path = Path(d) / f"refuted{i}.json"
            path.write_text(dumps_json(s))
            auto = _process(["check", str(path)], repeat)
            z3 = _process(["check", str(path), "--engine", "z3"], repeat)
            assert auto[2] == 1 and z3[2] == 1, (auto[2], z3[2])
            print(f"refuted {what} ({s.num_actions} steps), whole process: auto {auto[0]:.3f} s wall "
                  f"({auto[1]:.3f} CPU), --engine z3 {z3[0]:.3f} s wall ({z3[1]:.3f} CPU); "
                  f"auto / z3 {auto[0] / z3[0]:.2f}x (bound: auto <= 0.5 s)")
            out[f"refuted{i}_auto_wall"] = auto[0]
    return out


def bench_z3(scan: bool) -> None:
    try:
        from verifier.check import z3engine
    except ImportError:
        print("z3: verifier.check.z3engine is not installed; skipped")
        return
    s = generate("dualpipe", 16, 64)
    w0 = time.perf_counter()
    o = z3engine.decide(s, "nccl", timeout_ms=120_000)
    dt = time.perf_counter() - w0
    print(f"z3: DualPipe 16 ranks x 64 micro-batches: {o.status} in {dt:.2f} s (target <= 5 s) "
          f"{dict(o.stats)}")
    if not scan:
        return
    largest = None
    sizes = ((8, 32), (16, 64), (16, 128), (32, 64), (32, 128), (32, 256), (64, 128), (64, 256), (64, 512))
    for ranks, mbs in sizes:  # growing; stop at the first one not proved within 60 s
        s = generate("dualpipe", ranks, mbs)
        w0 = time.perf_counter()
        o = z3engine.decide(s, "nccl", timeout_ms=60_000)
        dt = time.perf_counter() - w0
        print(f"  dualpipe {ranks}x{mbs} ({s.num_actions} steps): {o.status} in {dt:.2f} s")
        if o.status != "sat" or dt > 60:
            break
        largest = (ranks, mbs, s.num_actions, round(dt, 2))
    print(f"z3: largest DualPipe proved within 60 s (ranks, micro-batches, steps, seconds): {largest}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=32)
    p.add_argument("--microbatches", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--z3", action="store_true", help="also time the Z3 proof of DualPipe 16x64")
    p.add_argument("--z3-scan", action="store_true", help="also find the largest DualPipe Z3 proves in 60 s")
    p.add_argument("--no-csv", action="store_true", help="skip the PyTorch CSV case")
    p.add_argument("--no-refuted", action="store_true", help="skip the refuted small schedules")
    a = p.parse_args(argv)
    out = bench_check(a.ranks, a.microbatches, a.repeat)
    if not a.no_csv:
        out.update(bench_csv(a.ranks, a.microbatches, a.repeat))
        print("ratios (target: check of the CSV, a whole process, <= 1.0x PyTorch's parse + simulator):")
        print(f"  JSON check / PyTorch simulator (both in process): {out['check_vs_pytorch_wall']:.2f}x wall, "
              f"{out['check_vs_pytorch_cpu']:.2f}x CPU")
        print(f"  CSV check (nccl) / PyTorch parse + simulator:     {out['csv_nccl_vs_pytorch_wall']:.2f}x wall, "
              f"{out['csv_nccl_vs_pytorch_cpu']:.2f}x CPU")
        print(f"  CSV check (eager) / PyTorch parse + simulator:    {out['csv_eager_vs_pytorch_wall']:.2f}x wall, "
              f"{out['csv_eager_vs_pytorch_cpu']:.2f}x CPU")
    if not a.no_refuted:
        bench_refuted(a.repeat)
    if a.z3 or a.z3_scan:
        bench_z3(a.z3_scan)
    return 0


if __name__ == "__main__":
    sys.exit(main())

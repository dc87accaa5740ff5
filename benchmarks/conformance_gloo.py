"""Conformance on a real runtime: what gloo (or NCCL) does against `check --comm-model M`.

What it does (one run prints everything):

1. builds a corpus (``fastpath.conformance_corpus``): every generator family at
   ``--ranks`` (default 2,3,4) with M = R and 2R micro-batches, plus seeded
   mutants that move receives, split and merge batches, toggle waits, swap
   sends, wait every batch of a rank, and single-step mutants of
   ``verifier.strategies``; duplicates are dropped, and so are schedules that
   fail ``well-formed`` or ``dependencies`` (a compute whose receive is posted
   after it cannot be written with torch.distributed at all; counted);
2. decides ``deadlock-free`` of each under every model with the checker
   (``verifier.check.checker.check``, what ``check --comm-model M --engine E``
   runs, certificate validation included; ``--engine graph`` by default);
3. keeps the generated schedules and an even share of three classes (verified
   under nccl, refuted only under nccl, refuted under eager) up to ``--count``;
4. runs each on the runtime (``fastpath.conformance.run_schedules``, one spawn
   of R ranks per rank count, ``--timeout`` seconds per schedule; a hung one
   that the compared model says terminates is run again with
   ``--confirm-timeout`` to rule out a slow machine);
5. prints the agreement matrix and, for every model (and, on gloo, the
   standalone rule ``gloo_terminates`` first measured here), how often it agrees
   with the runtime in both directions, the disagreements listed.

``--backend nccl`` runs on CUDA devices, one rank per device (rank counts
above the device count are skipped, saying so), tensors of ``--elements``
float32 (default 32Mi: 128 MiB, above the size NCCL buffers), with
``--eager-init`` (``init_process_group(device_id=...)``: compared against
``nccl``) or without (lazy: compared against ``nccl-pairs``).

The standalone rule is a simulator in this script on purpose: it shares no
code with the checker's models (``verifier.semantics.comm``), so its
agreement with gloo is evidence about the rule, not about the checker.

Exit status: 0 when the compared model (``--expect``; default gloo on gloo,
nccl with --eager-init, nccl-pairs without) agrees on every schedule, 1 if
not, 2 on bad arguments.

Run: ``python benchmarks/conformance_gloo.py [--count 450] [--seed 0]
[--ranks 2,3,4] [--timeout 1.0] [--backend gloo|nccl] [--eager-init]``.
Needs torch and hypothesis (``.[test]``). What it does not cover: payloads,
timing, NCCL communicator creation order (every communicator is created
before the schedules run).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastpath.conformance_corpus import corpus  # noqa: E402
from fastpath.plan import compute_inputs, consumer_key, recv_key  # noqa: E402
from verifier.check.checker import PropertyId, Status, check  # noqa: E402
from verifier.semantics.comm import NAMES  # noqa: E402
from verifier.ir import (  # noqa: E402
    Batch, Compute, ComputeKind, Schedule, comms_of, computes_of)

CLASSES = ("verified-nccl", "refuted-nccl-only", "refuted-eager")


# ---- the candidate gloo rule ---------------------------------------------------

def gloo_terminates(s: Schedule) -> bool:
    """The candidate ``gloo`` model, run to its fixed point.

    Ops are matched FIFO per ordered rank pair (as every model). A ``BATCH`` is
    its ops posted in order (batch_isend_irecv on gloo). A send and its
    matched receive complete together once both are posted (rendezvous, no
    stream: nothing else orders them); an unmatched op never completes. The
    host blocks only where the program waits: a compute on its consumed
    receive (the rank's first receive of it, posted before), a waited BATCH on
    all its ops, and the end of the program on every op the rank posted."""
    R = s.num_ranks
    sends: dict[tuple[int, int], list] = {}
    recvs: dict[tuple[int, int], list] = {}
    for r, row in enumerate(s.actions):
        for step, a in enumerate(row):
            for sub, op in enumerate(comms_of(a)):
                peer = s.peer_of(op)
                (sends if op.kind.is_send else recvs).setdefault(
                    (r, peer) if op.kind.is_send else (peer, r), []).append((r, step, sub))
    partner = {}
    for key, ss in sends.items():
        for x, y in zip(ss, recvs.get(key, [])):
            partner[x], partner[y] = y, x
    posted: set = set()

    def done(o):
        return o in posted and partner.get(o) in posted

    pc = [0] * R
    first_recv: list[dict] = [{} for _ in range(R)]
    ran: list[set] = [set() for _ in range(R)]
    progress = True
    while progress:
        progress = False
        for r, row in enumerate(s.actions):
            while pc[r] < len(row):
                step, a = pc[r], row[pc[r]]
                ops = [(r, step, k) for k in range(len(comms_of(a)))]
                if ops:
                    for o, op in zip(ops, comms_of(a)):
                        if o not in posted:
                            posted.add(o)
                            progress = True
                            if not op.kind.is_send:
                                first_recv[r].setdefault(recv_key(op), o)
                    if isinstance(a, Batch) and a.wait and not all(done(o) for o in ops):
                        break
                elif not all(_ready(s, r, c, ran[r], first_recv[r], done) for c in computes_of(a)):
                    break
                else:
                    for c in computes_of(a):
                        ran[r].add((c.kind.value, c.stage, c.mb))
                        if c.kind in (ComputeKind.B, ComputeKind.I):
                            ran[r].add(("BI", c.stage, c.mb))
                pc[r] += 1
                progress = True
    return all(pc[r] == len(row) for r, row in enumerate(s.actions)) and all(done(o) for o in posted)


def _ready(s, r, c: Compute, ran, first_recv, done) -> bool:
    need, remote = compute_inputs(s, r, c)
    if any(k not in ran for k in need):
        return False
    if remote:
        o = first_recv.get(consumer_key(c))
        return o is not None and done(o)
    return True


# ---- a probe: a second wait() on a completed gloo handle ----------------------

def _probe_rank(rank, port, q):  # pragma: no cover - child
    import datetime
    import os

    import torch
    import torch.distributed as dist
    store = dist.TCPStore("127.0.0.1", port, 2, rank == 0, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    t = torch.zeros(1)
    w = dist.isend(t, 1) if rank == 0 else dist.irecv(t, 0)
    w.wait()
    first = w.is_completed()
    t0 = time.monotonic()
    try:
        w.wait(datetime.timedelta(seconds=2))
        res = f"second wait returned after {time.monotonic() - t0:.3f} s"
    except RuntimeError as e:
        res = f"second wait still blocked after {time.monotonic() - t0:.1f} s ({str(e).splitlines()[0][-70:]})"
    q.put((rank, f"{'isend' if rank == 0 else 'irecv'}: first wait returned, is_completed()={first}; {res}"))
    store.set(f"bye{rank}", "1")
    store.wait(["bye0", "bye1"])
    os._exit(0)


def probe_second_wait() -> list[str]:
    import torch.multiprocessing as mp

    # deferred: fastpath.conformance imports torch; only this probe and the runs need it
    from fastpath.conformance import _free_port
    ctx = mp.get_context("spawn")
    q, port = ctx.Queue(), _free_port()
    ps = [ctx.Process(target=_probe_rank, args=(r, port, q), daemon=True) for r in range(2)]
    for p in ps:
        p.start()
    out = sorted(q.get(timeout=120) for _ in ps)
    for p in ps:
        p.join(10)
    return [m for _, m in out]


# ---- the run -------------------------------------------------------------------

def decide(s: Schedule, engine: str) -> tuple[dict[str, bool | None], bool]:
    """deadlock-free under every model (None: not decided), and whether the
    schedule is runnable (well-formed and dependencies hold)."""
    out: dict[str, bool | None] = {}
    runnable = True
    for m in NAMES:
        res = check(s, comm_model=m, engine=engine)
        st = {p.property: p.status for p in res.properties}
        runnable = st[PropertyId.WELL_FORMED] is Status.HOLDS and st[PropertyId.DEPENDENCIES] is Status.HOLDS
        if not runnable:
            return out, False
        df = st.get(PropertyId.DEADLOCK_FREE)
        out[m] = {Status.HOLDS: True, Status.FAILS: False}.get(df)
    return out, runnable


def _arguments(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=450, help="schedules in the corpus (default 450)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranks", default="2,3,4", help="rank counts, comma-separated (default 2,3,4)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per schedule before it counts as hung (default 1 on gloo, 3 on nccl)")
    ap.add_argument("--confirm-timeout", type=float, default=4.0,
                    help="seconds for re-running a hung schedule the compared model says terminates")
    ap.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    ap.add_argument("--eager-init", action="store_true",
                    help="nccl: init_process_group(device_id=...) (all P2P on the group's communicator)")
    ap.add_argument("--elements", type=int, default=None,
                    help="float32 elements per message (default 1 on gloo, 32Mi on nccl)")
    ap.add_argument("--expect", choices=NAMES, default=None,
                    help="the model that must agree (default: gloo; nccl with --eager-init; nccl-pairs)")
    ap.add_argument("--engine", choices=("graph", "auto", "z3", "both"), default="graph",
                    help="the checker's engine for every model (default graph)")
    ap.add_argument("--max-list", type=int, default=20, help="disagreements listed per rule")
    ap.add_argument("--probe-second-wait", action="store_true",
                    help="only probe what a second wait() on a completed gloo isend/irecv handle does")
    args = ap.parse_args(argv)
    gloo = args.backend == "gloo"
    args.timeout = args.timeout or (1.0 if gloo else 3.0)
    args.elements = args.elements or (1 if gloo else 32 << 20)
    args.expect = args.expect or ("gloo" if gloo else "nccl" if args.eager_init else "nccl-pairs")
    try:
        args.ranks = [int(x) for x in args.ranks.split(",")]
    except ValueError:
        ap.error(f"--ranks: expected comma-separated integers, got {args.ranks!r}")
    return args


def pick(rows: list[dict], count: int, seed: int) -> list[dict]:
    """The generated schedules, then an even share of each class up to ``count``."""
    rnd = random.Random(seed + 1)
    base = [r for r in rows if "|" not in r["s"].name]
    rest = [r for r in rows if "|" in r["s"].name]
    rnd.shuffle(rest)
    by_cls = {c: [r for r in rest if r["cls"] == c] for c in CLASSES}
    picked = list(base)
    while len(picked) < count and any(by_cls.values()):
        for c in CLASSES:
            if by_cls[c] and len(picked) < count:
                picked.append(by_cls[c].pop())
    return picked


def build(args) -> list[dict]:
    seen, rows, skipped = set(), [], Counter()
    for s in corpus(args.ranks, args.count, args.seed):
        key = (s.num_ranks, s.actions)
        if key in seen:
            continue
        seen.add(key)
        models, runnable = decide(s, args.engine)
        if not runnable:
            skipped["fails well-formed or dependencies"] += 1
            continue
        cls = CLASSES[0] if models["nccl"] else CLASSES[1] if models["eager"] else CLASSES[2]
        rows.append(dict(s=s, models=models, cls=cls))
    rows = pick(rows, args.count, args.seed)
    print(f"corpus: {len(rows)} schedules ({sum('|' not in r['s'].name for r in rows)} generated), "
          f"ranks {args.ranks}, seed {args.seed}; dropped: {dict(skipped) or 'none'}")
    return rows


def run_all(rows, args, timeout: float, only=None) -> None:
    """Run ``rows`` (or those ``only`` keeps) on the runtime, per rank count; sets row["run"]."""
    # deferred: fastpath.conformance imports torch, which --probe-second-wait and the rest don't need first
    import torch

    from fastpath.conformance import run_schedules
    for R in args.ranks:
        mine = [r for r in rows if r["s"].num_ranks == R and (only is None or only(r))]
        if not mine:
            continue
        if args.backend == "nccl" and torch.cuda.device_count() < R:
            print(f"skipped: {len(mine)} schedules of {R} ranks need {R} GPUs (one rank per GPU), "
                  f"this machine has {torch.cuda.device_count()}")
            for r in mine:
                r["run"] = None
            continue
        outs = run_schedules([r["s"] for r in mine], R, timeout_s=timeout, backend=args.backend,
                             elements=args.elements, eager_init=args.eager_init)
        for r, out in zip(mine, outs):
            if "run" not in r or r["run"] is None or out.terminated:
                r["run"] = out


def main(argv=None) -> int:
    args = _arguments(argv)
    if args.probe_second_wait:
        print(*probe_second_wait(), sep="\n")
        return 0
    t0 = time.monotonic()
    rows = build(args)
    t_check = time.monotonic() - t0
    t1 = time.monotonic()
    run_all(rows, args, args.timeout)
    t_run = time.monotonic() - t1
    rows = [r for r in rows if r.get("run") is not None]
    if not rows:
        print(f"SKIPPED: no schedule could run on this machine's {args.backend} (see above)")
        return 0
    if args.backend == "gloo":
        for r in rows:
            r["sim"] = gloo_terminates(r["s"])
    exp = args.expect
    confirm = [r for r in rows if not r["run"].terminated and r["models"][exp]]
    t2 = time.monotonic()
    if confirm:
        ids = {id(r) for r in confirm}
        run_all(confirm, args, args.confirm_timeout, only=lambda r: id(r) in ids)
    flipped = sum(r["run"].terminated for r in confirm)
    term = [r["run"].seconds for r in rows if r["run"].terminated]
    print(f"checker ({len(NAMES)} models, engine {args.engine}) {t_check:.1f} s; {args.backend} runs "
          f"{t_run:.1f} s (timeout {args.timeout} s, {args.elements} elements"
          f"{', eager init' if args.eager_init else ''}); {len(confirm)} hung ones re-run with "
          f"{args.confirm_timeout} s in {time.monotonic() - t2:.1f} s, {flipped} terminated then; "
          f"slowest terminating {max(term, default=0) * 1e3:.1f} ms, median "
          f"{sorted(term)[len(term) // 2] * 1e3 if term else 0:.1f} ms")
    return report(rows, args)


def report(rows, args) -> int:
    """Print the matrix and every rule's agreement; 0 when ``args.expect`` agrees on all."""
    rt = args.backend
    print(f"\nagreement matrix (schedule class by checker x what {rt} did)")
    print(f"  {'class':<34} {'n':>4} {'terminated':>11} {'hung':>5}")
    for c in CLASSES:
        rs = [r for r in rows if r["cls"] == c]
        t = sum(r["run"].terminated for r in rs)
        print(f"  {c:<34} {len(rs):>4} {t:>11} {len(rs) - t:>5}")
    n_hung = sum(not r["run"].terminated for r in rows)
    print(f"  total {len(rows)}: {len(rows) - n_hung} terminated, {n_hung} hung")
    print(f"\nrules against {rt} (both directions)")
    print(f"  {'rule':<34} {'agree':>6} {'says ends, hung':>16} {'says hangs, ended':>18} {'undecided':>10}")
    rules = [(f"check --comm-model {m}", (lambda r, m=m: r["models"][m])) for m in NAMES]
    if rt == "gloo":
        rules.append(("standalone gloo rule (sim)", lambda r: r["sim"]))
    bad_expected = []
    for name, pred in rules:
        a = [r for r in rows if pred(r) and not r["run"].terminated]
        b = [r for r in rows if pred(r) is False and r["run"].terminated]
        u = [r for r in rows if pred(r) is None]
        print(f"  {name:<34} {len(rows) - len(a) - len(b) - len(u):>6} {len(a):>16} {len(b):>18} {len(u):>10}")
        if name == f"check --comm-model {args.expect}":
            bad_expected = a + b + u
    if bad_expected:
        print(f"\ndisagreements of check --comm-model {args.expect} ({len(bad_expected)}, "
              f"first {args.max_list}):")
        for r in bad_expected[:args.max_list]:
            print(f"  [{r['cls']}] {r['s'].name}: {rt} {r['run'].describe()}")
    ok = not bad_expected and rows
    print(f"\ncheck --comm-model {args.expect} against {rt}: {'100% agreement' if ok else 'DISAGREES'} on {len(rows)} "
          f"schedules ({n_hung} hung)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Conformance on real gloo: what gloo does against the eager and nccl models and a candidate gloo rule.

What it does (one run prints everything):

1. builds a corpus: every generator family at ``--ranks`` (default 2,3,4) with
   M = R and M = 2R micro-batches (lowered: the IR's own action lists), plus
   seeded random mutants of them that move a receive earlier or later, split
   and merge batches, toggle waits, swap two sends, wait every batch of a rank,
   and single-step mutants of ``verifier.strategies.all_mutants`` (swap a step
   with the next, move a step across a BATCH), up to ``--count`` schedules;
   duplicates are dropped, and so are schedules that fail ``well-formed`` or
   ``dependencies`` (a compute whose receive is posted after it cannot be
   written with torch.distributed at all; counted and printed);
2. decides ``deadlock-free`` of each under ``--comm-model eager`` and
   ``nccl`` (``verifier.check.checker.check``, graph engine, in process);
3. runs each on real gloo (``fastpath.conformance.run_schedules``: one spawn of
   R ranks per rank count, every schedule in turn, ``--timeout`` seconds per
   schedule; a hung one that a model predicts terminates is run again alone
   with ``--confirm-timeout`` to rule out a slow machine);
4. prints the agreement matrix (schedule class x gloo outcome) and, for each
   rule, how often it agrees with gloo in both directions: ``eager``,
   ``nccl``, the issue's reading ("hangs iff it hangs under eager, or under
   nccl with a waited batch holding a send") and the candidate ``gloo`` rule
   simulated here (``gloo_terminates``), with every disagreement listed.

The candidate rule is a standalone simulator in this script on purpose: it
shares no code with the checker's models (``verifier.semantics.comm``), so
its agreement with gloo is evidence about the rule, not about the checker.

Run: ``python benchmarks/conformance_gloo.py [--count 450] [--seed 0]
[--ranks 2,3,4] [--timeout 1.0]``. Needs torch and hypothesis (``.[test]``).
What it does not cover: NCCL (needs GPUs), payload checks, timing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastpath.conformance import run_schedules  # noqa: E402
from fastpath.plan import compute_inputs, consumer_key, recv_key  # noqa: E402
from verifier.check.checker import PropertyId, Status, check  # noqa: E402
from verifier.generators import FAMILIES, generate  # noqa: E402
from verifier.ir import (  # noqa: E402
    Batch, Comm, Compute, ComputeKind, Schedule, ScheduleError, comms_of, computes_of)

CLASSES = ("verified-nccl", "refuted-nccl-only", "refuted-eager")


# ---- corpus ------------------------------------------------------------------

def base_schedules(ranks: list[int]) -> list[Schedule]:
    out = []
    for R in ranks:
        for fam in FAMILIES:
            for M in sorted({R, 2 * R}):
                try:
                    s = generate(fam, R, M)  # lowered, or DualPipe's own communication
                except ScheduleError:
                    continue
                out.append(s.with_actions(s.actions, name=f"{fam} R={R} M={M}"))
    return out


def _comm_steps(row, pred=lambda op: True):
    return [i for i, a in enumerate(row) if any(pred(op) for op in comms_of(a))]


def _move_op(row, rnd, send: bool, waited: bool = False):
    idx = _comm_steps(row, lambda op: op.kind.is_send == send)
    if not idx:
        return None
    i = rnd.choice(idx)
    a = row[i]
    op = rnd.choice([op for op in comms_of(a) if op.kind.is_send == send])
    rest = tuple(o for o in comms_of(a) if o != op)
    new = list(row[:i]) + ([Batch(rest, a.wait)] if isinstance(a, Batch) and rest else []) + list(row[i + 1:])
    d = rnd.choice([1, 2, 3, 5] if send else [-6, -4, -3, -2, -1, 1, 2, 3])
    j = min(max(0, i + d), len(new))
    new.insert(j, Batch((op,), True) if waited else op)
    return new, f"{op} moved {d:+d}{' and waited' if waited else ''}"


def _move_recv(row, rnd):
    return _move_op(row, rnd, send=False)


def _move_recv_waited(row, rnd):
    return _move_op(row, rnd, send=False, waited=True)


def _move_send(row, rnd):
    return _move_op(row, rnd, send=True, waited=rnd.random() < 0.5)


def _split(row, rnd):
    idx = [i for i, a in enumerate(row) if isinstance(a, Batch) and len(a.ops) > 1]
    if not idx:
        return None
    i = rnd.choice(idx)
    a = row[i]
    k = rnd.randrange(1, len(a.ops))
    return list(row[:i]) + [Batch(a.ops[:k], a.wait), Batch(a.ops[k:], a.wait)] + list(row[i + 1:]), \
        f"step {i} split"


def _merge(row, rnd):
    idx = [i for i in range(len(row) - 1) if comms_of(row[i]) and comms_of(row[i + 1])]
    if not idx:  # merge across one compute: the second batch moves up
        idx = [i for i in range(len(row) - 2) if comms_of(row[i]) and comms_of(row[i + 2])]
        if not idx:
            return None
        i = rnd.choice(idx)
        row = list(row[:i + 1]) + [row[i + 2], row[i + 1]] + list(row[i + 3:])
    else:
        i = rnd.choice(idx)
    a, b = row[i], row[i + 1]
    wait = any(isinstance(x, Batch) and x.wait for x in (a, b))
    return list(row[:i]) + [Batch(comms_of(a) + comms_of(b), wait)] + list(row[i + 2:]), f"steps {i},{i + 1} merged"


def _toggle_wait(row, rnd):
    idx = _comm_steps(row)
    if not idx:
        return None
    i = rnd.choice(idx)
    a = row[i]
    new = Batch(a.ops, not a.wait) if isinstance(a, Batch) else Batch((a,), True)
    return list(row[:i]) + [new] + list(row[i + 1:]), f"step {i} wait toggled"


def _swap_sends(row, rnd):
    flat = [(i, k) for i, a in enumerate(row) for k, op in enumerate(comms_of(a)) if op.kind.is_send]
    pairs = [(x, y) for n, x in enumerate(flat) for y in flat[n + 1:n + 3]]
    if not pairs:
        return None
    (i, k), (j, m) = rnd.choice(pairs)
    row = list(row)

    def put(idx, sub, op):
        a = row[idx]
        row[idx] = op if isinstance(a, Comm) else Batch(a.ops[:sub] + (op,) + a.ops[sub + 1:], a.wait)

    x, y = comms_of(row[i])[k], comms_of(row[j])[m]
    put(i, k, y)
    put(j, m, x)
    return row, f"{x} and {y} swapped"


def _wait_all(row, rnd):
    if not any(isinstance(a, Batch) and not a.wait for a in row):
        return None
    return [Batch(a.ops, True) if isinstance(a, Batch) else a for a in row], "every batch waited"


def _sends_first_waited(row, rnd):
    """Every batch holding sends and receives split: its sends as a waited batch, then its
    receives (DualPipe's "wait for the sends" done one step early)."""
    out, n = [], 0
    for a in row:
        ops = comms_of(a)
        snd = tuple(op for op in ops if op.kind.is_send)
        rcv = tuple(op for op in ops if not op.kind.is_send)
        if isinstance(a, Batch) and snd and rcv:
            out += [Batch(snd, True), Batch(rcv, a.wait)]
            n += 1
        else:
            out.append(a)
    return (out, "sends waited before receives") if n else None


MUTATORS = (_sends_first_waited, _move_recv, _move_recv_waited, _move_send, _split, _merge, _toggle_wait, _toggle_wait, _swap_sends, _wait_all)


def random_mutant(s: Schedule, rnd: random.Random) -> Schedule | None:
    rows = [list(r) for r in s.actions]
    what = []
    if rnd.random() < 0.25:  # the same pattern on every rank: mutual waits
        for r in range(s.num_ranks):
            got = _sends_first_waited(rows[r], rnd)
            if got is not None:
                rows[r] = got[0]
        what.append("all ranks: sends waited before receives")
    for _ in range(rnd.choice([1, 1, 2, 3])):
        r = rnd.randrange(s.num_ranks)
        got = rnd.choice(MUTATORS)(rows[r], rnd)
        if got is None:
            continue
        rows[r] = got[0]
        what.append(f"r{r}: {got[1]}")
    if not what:
        return None
    return s.with_actions(rows, name=f"{s.name} | {'; '.join(what)}")


def strategy_mutants(s: Schedule, rnd: random.Random, k: int) -> list[Schedule]:
    from verifier.strategies import MutationKind, all_mutants
    ms = [m for m in all_mutants(s) if m.kind in (MutationKind.SWAP, MutationKind.MOVE_ACROSS_BATCH)]
    return [m.schedule.with_actions(m.schedule.actions, name=f"{s.name} | {m.describe()}")
            for m in rnd.sample(ms, min(k, len(ms)))]


def corpus(ranks: list[int], count: int, seed: int) -> list[Schedule]:
    rnd = random.Random(seed)
    bases = base_schedules(ranks)
    out = list(bases)
    for b in bases:
        out += strategy_mutants(b, rnd, 2)
    tries = 0
    while len(out) < 8 * count and tries < 50 * count:
        tries += 1
        m = random_mutant(rnd.choice(bases), rnd)
        if m is not None:
            out.append(m)
    return out


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


def issue_rule_terminates(s: Schedule, eager_ok: bool, nccl_ok: bool) -> bool:
    """The issue's reading: hangs iff eager hangs, or nccl hangs and a waited batch holds a send."""
    sends_waited = any(isinstance(a, Batch) and a.wait and any(op.kind.is_send for op in a.ops)
                       for row in s.actions for a in row)
    return eager_ok and (nccl_ok or not sends_waited)


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

def deadlock_free(s: Schedule, model: str) -> tuple[bool, bool]:
    """(deadlock-free holds under ``model``, schedule is runnable: well-formed and dependencies)."""
    res = check(s, comm_model=model, engine="graph")
    st = {p.property: p.status for p in res.properties}
    runnable = st[PropertyId.WELL_FORMED] is Status.HOLDS and st[PropertyId.DEPENDENCIES] is Status.HOLDS
    return st.get(PropertyId.DEADLOCK_FREE) is Status.HOLDS, runnable


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=450, help="schedules in the corpus (default 450)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranks", default="2,3,4", help="rank counts, comma-separated (default 2,3,4)")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds per schedule before it counts as hung")
    ap.add_argument("--confirm-timeout", type=float, default=4.0,
                    help="seconds for re-running a hung schedule some rule says terminates")
    ap.add_argument("--confirm-all", action="store_true",
                    help="re-run every hung schedule that any rule (eager, the issue's reading, the "
                         "candidate) says terminates; default: only those the candidate says terminate")
    ap.add_argument("--max-list", type=int, default=20, help="disagreements listed per rule")
    ap.add_argument("--probe-second-wait", action="store_true",
                    help="only probe what a second wait() on a completed gloo isend/irecv handle does")
    args = ap.parse_args(argv)
    if args.probe_second_wait:
        print(*probe_second_wait(), sep="\n")
        return 0
    ranks = [int(x) for x in args.ranks.split(",")]

    t0 = time.monotonic()
    seen, rows, skipped = set(), [], Counter()
    for s in corpus(ranks, args.count, args.seed):
        key = (s.num_ranks, s.actions)
        if key in seen:
            continue
        seen.add(key)
        eager_ok, runnable = deadlock_free(s, "eager")
        if not runnable:
            skipped["fails well-formed or dependencies"] += 1
            continue
        nccl_ok, _ = deadlock_free(s, "nccl")
        cls = CLASSES[0] if nccl_ok else CLASSES[1] if eager_ok else CLASSES[2]
        rows.append(dict(s=s, eager=eager_ok, nccl=nccl_ok, cls=cls))
    # keep the base schedules, then an even share of each class up to --count
    rnd = random.Random(args.seed + 1)
    base = [r for r in rows if "|" not in r["s"].name]
    rest = [r for r in rows if "|" in r["s"].name]
    rnd.shuffle(rest)
    by_cls = {c: [r for r in rest if r["cls"] == c] for c in CLASSES}
    picked = list(base)
    while len(picked) < args.count and any(by_cls.values()):
        for c in CLASSES:
            if by_cls[c] and len(picked) < args.count:
                picked.append(by_cls[c].pop())
    rows = picked
    t_check = time.monotonic() - t0
    print(f"corpus: {len(rows)} schedules ({len(base)} generated, {len(rows) - len(base)} mutants), "
          f"ranks {ranks}, seed {args.seed}; dropped: {dict(skipped) or 'none'}; "
          f"checker (eager+nccl, graph) {t_check:.1f} s")

    t1 = time.monotonic()
    for R in ranks:
        mine = [r for r in rows if r["s"].num_ranks == R]
        if not mine:
            continue
        for r, out in zip(mine, run_schedules([r["s"] for r in mine], R, timeout_s=args.timeout)):
            r["gloo"] = out
    t_run = time.monotonic() - t1
    for r in rows:
        r["sim"] = gloo_terminates(r["s"])
        r["issue"] = issue_rule_terminates(r["s"], r["eager"], r["nccl"])
    confirm = [r for r in rows if not r["gloo"].terminated
               and (r["sim"] or (args.confirm_all and (r["issue"] or r["eager"])))]
    flipped = 0
    t2 = time.monotonic()
    for R in ranks:
        mine = [r for r in confirm if r["s"].num_ranks == R]
        if mine:
            for r, out in zip(mine, run_schedules([r["s"] for r in mine], R, timeout_s=args.confirm_timeout)):
                if out.terminated:
                    flipped += 1
                    r["gloo"] = out
    t_confirm = time.monotonic() - t2
    term = [r["gloo"].seconds for r in rows if r["gloo"].terminated]
    print(f"gloo runs: {t_run:.1f} s (timeout {args.timeout} s); {len(confirm)} hung ones re-run with "
          f"{args.confirm_timeout} s in {t_confirm:.1f} s, {flipped} terminated then; slowest terminating "
          f"schedule {max(term, default=0) * 1e3:.1f} ms, median "
          f"{sorted(term)[len(term) // 2] * 1e3 if term else 0:.1f} ms")
    report(rows, args.max_list)
    return 0


def report(rows, max_list: int) -> None:
    print("\nagreement matrix (schedule class by checker x what gloo did)")
    print(f"  {'class':<34} {'n':>4} {'terminated':>11} {'hung':>5}")
    for c in CLASSES:
        for sub, pred in (("", lambda r: True),
                          ("  with a waited batch holding a send", lambda r: _sends_waited(r["s"])),
                          ("  without", lambda r: not _sends_waited(r["s"]))):
            if sub and c != "refuted-nccl-only":
                continue
            rs = [r for r in rows if r["cls"] == c and pred(r)]
            t = sum(r["gloo"].terminated for r in rs)
            print(f"  {c if not sub else sub:<34} {len(rs):>4} {t:>11} {len(rs) - t:>5}")
    n_hung = sum(not r["gloo"].terminated for r in rows)
    print(f"  total {len(rows)}: {len(rows) - n_hung} terminated, {n_hung} hung")
    print("\nrules against gloo (both directions)")
    print(f"  {'rule':<22} {'agree':>6} {'says ends, hung':>16} {'says hangs, ended':>18}")
    for name, key in (("eager", "eager"), ("nccl", "nccl"), ("issue's reading", "issue"),
                      ("candidate gloo (sim)", "sim")):
        a = [r for r in rows if r[key] and not r["gloo"].terminated]
        b = [r for r in rows if not r[key] and r["gloo"].terminated]
        print(f"  {name:<22} {len(rows) - len(a) - len(b):>6} {len(a):>16} {len(b):>18}")
    for name, key in (("issue's reading", "issue"), ("candidate gloo (sim)", "sim")):
        bad = [r for r in rows if r[key] != r["gloo"].terminated]
        if bad:
            print(f"\ndisagreements of {name} ({len(bad)}, first {max_list}):")
            for r in bad[:max_list]:
                print(f"  [{r['cls']}] {r['s'].name}: gloo {r['gloo'].describe()}")


def _sends_waited(s: Schedule) -> bool:
    return any(isinstance(a, Batch) and a.wait and any(op.kind.is_send for op in a.ops)
               for row in s.actions for a in row)


if __name__ == "__main__":
    sys.exit(main())

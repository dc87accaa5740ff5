"""The conformance corpus: generated families at a few rank counts and seeded
mutants of them, for running on real runtimes (fastpath.conformance) against
the models (benchmarks/conformance_gloo.py, tests/test_conformance_gloo.py).

What it is: ``base_schedules`` (every family of ``verifier.generators`` at each
rank count, M = R and 2R where the generator takes them) and ``corpus`` (those,
two ``verifier.strategies`` single-step mutants of each, and seeded random
mutants: move a receive earlier or later, optionally as its own waited batch;
move a send later; split a batch; merge two comm steps; toggle a wait; swap
two sends; wait every batch of a rank; "sends waited before receives" on one
or every rank). Pure IR, no torch.

What it does not cover: filtering (a mutant may fail well-formed or
dependencies; callers drop those with the checker), running anything.
"""

from __future__ import annotations

import random

from verifier.generators import FAMILIES, generate
from verifier.ir import Batch, Comm, Schedule, ScheduleError, comms_of

def base_schedules(ranks: list[int]) -> list[Schedule]:
    """Every family at each rank count, M = R and 2R where the generator takes them."""
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
    """1-3 seeded mutations of ``s`` (a quarter of the time first "sends waited
    before receives" on every rank); None when no mutator applied."""
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
    """``k`` single-step mutants of ``s`` from ``verifier.strategies.all_mutants``
    (swap a step with the next, move a step across a BATCH)."""
    # deferred: verifier.strategies imports hypothesis, a test-only dependency
    from verifier.strategies import MutationKind, all_mutants
    ms = [m for m in all_mutants(s) if m.kind in (MutationKind.SWAP, MutationKind.MOVE_ACROSS_BATCH)]
    return [m.schedule.with_actions(m.schedule.actions, name=f"{s.name} | {m.describe()}")
            for m in rnd.sample(ms, min(k, len(ms)))]


def corpus(ranks: list[int], count: int, seed: int) -> list[Schedule]:
    """The base schedules, 2 strategy mutants of each, then seeded random
    mutants up to 8 x ``count`` candidates (callers filter and pick)."""
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



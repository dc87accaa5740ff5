"""The certificate checker's one-pass witness replay for ``eager`` and ``nccl``.

What it is: ``replays`` reads each action only when its witness entry comes,
learning ops, units, FIFO pairs and first receives as the witness posts them
(the fast path of ``check_witness``; a witness it rejects is replayed again by
``machine.Machine``, which says why). Written from specs/SEMANTICS.md, like
the rest of this package, sharing nothing with the engines.

What it does not cover: ``gloo`` and ``nccl-pairs`` (their witnesses are
replayed by ``machine.Machine`` alone), saying why a witness is rejected.
"""

from __future__ import annotations

from verifier.ir import Batch, Comm, CommKind, ComputeKind, Overlap, Schedule


def _tables(s: Schedule) -> tuple:
    """Per stage: where its F's input comes from (None: the first stage, True: a
    receive, else the previous stage's key base ``p * M``: a compute on this
    rank), likewise its B/I's gradient, and the channel each kind of its ops
    takes: (sends, receives) of an ordered rank pair, op ids posted so far (a
    well-formed schedule posts a stage's ops on the stage's rank)."""
    M = s.num_microbatches
    rank = {st.id: st.rank for st in s.stages}
    nxt: dict[int, int | None] = {}
    prv: dict[int, int | None] = {}
    for route in s.routes:
        st = route.stages
        for k, sid in enumerate(st):
            nxt[sid] = st[k + 1] if k + 1 < len(st) else None
            prv[sid] = st[k - 1] if k > 0 else None
    f_src: dict = {}
    b_src: dict = {}
    for sid, r in rank.items():
        p, n = prv.get(sid), nxt.get(sid)
        f_src[sid] = None if p is None else (True if rank[p] != r else p * M)
        b_src[sid] = None if n is None else (True if rank[n] != r else n * M)
    chans: dict = {}

    def chan(src, dst):
        c = chans.get((src, dst))
        if c is None:
            c = chans[(src, dst)] = ([], [])
        return c

    sf_ch, sb_ch, rf_ch, rb_ch = {}, {}, {}, {}
    for sid, r in rank.items():
        n, p = nxt.get(sid), prv.get(sid)
        if n is not None:
            sf_ch[sid] = chan(r, rank[n])
            rb_ch[sid] = chan(rank[n], r)
        if p is not None:
            sb_ch[sid] = chan(r, rank[p])
            rf_ch[sid] = chan(rank[p], r)
    return f_src, b_src, sf_ch, sb_ch, rf_ch, rb_ch


def replays(s: Schedule, nccl: bool, witness) -> bool:
    """Whether every entry of ``witness`` can begin where it stands and every op
    has completed after the last (``len(witness)`` is the number of steps).

    Everything is learnt as the replay goes, in the order the witness posts
    and runs things: ops and comm units get ids as they are posted, the k-th
    send from src to dst is paired with the k-th receive there as soon as both
    are posted (FIFO by position), and "the first receive (compute) of a kind
    on the rank" is the first one posted (run) so far: one that comes later in
    the rank's program has not happened when the compute's entry comes.

    nccl, by units: a unit is at the head of its rank's stream once the unit
    posted before it has completed; a pair completes when both its units are
    at their heads (at the later of the two moments: when the second op is
    posted, or when the second unit reaches its head), and a unit completes
    with its last pair. The route tables are read per stage, which in a
    well-formed schedule is per rank (a stage's ops and computes are all on
    the stage's rank).
    """
    # one unrolled loop on purpose: the certificate's share of the check time
    # that benchmarks/bench_check.py measures (check/PyTorch ratio)
    R = s.num_ranks
    actions = s.actions
    M = s.num_microbatches
    pc = [0] * R
    # (stage, mb) written stage * M + mb. A well-formed schedule runs and
    # posts a stage's computes and ops on the stage's rank only, so "on the
    # rank" below is "anywhere": the (stage, mb) whose F, B or I, I has run
    # so far, and the first RECV_F / RECV_B of a (stage, mb) posted so far (op id)
    ran_f: set = set()
    ran_bi: set = set()
    ran_i: set = set()
    recv_f: dict = {}
    recv_b: dict = {}
    f_src, b_src, sf_ch, sb_ch, rf_ch, rb_ch = _tables(s)
    # per op id (ids in post order): its unit, and its FIFO partner's op id
    # (-1: none posted yet) or DONE once the op has completed
    DONE = -2
    part: list = []
    opu: list = []
    # per unit id (in post order): ops not yet complete, first op id, the
    # rank's next unit (-1: none posted yet), whether at the head of its stream
    left: list = []
    first: list = []
    unext: list = []
    act: list = []
    last = [-1] * R  # per rank, its last unit posted
    waitu = [-1] * R  # per rank, the unit of its last step if that is a BATCH with wait
    SF, SB, RF = CommKind.SEND_F, CommKind.SEND_B, CommKind.RECV_F
    Fk, Bk, Ik = ComputeKind.F, ComputeKind.B, ComputeKind.I
    nops = 0
    stack: list = []  # nccl: units that reached the head of their stream, to look at
    for r, k in witness:
        if not 0 <= r < R or pc[r] != k:
            return False
        acts = actions[r]
        if k >= len(acts):
            return False
        u = waitu[r]
        if u >= 0:
            if left[u]:
                return False
            waitu[r] = -1
        pc[r] = k + 1
        a = acts[k]
        tp = type(a)
        if tp is Batch:
            ops = a.ops
        elif tp is Comm:
            ops = (a,)
        else:
            # a compute: every input there (SEMANTICS.md "Programs")
            halves = (a.f, a.b) if tp is Overlap else (a,)
            for c in halves:
                kind = c.kind
                st = c.stage
                mb = c.mb
                if kind is Fk:
                    x = f_src[st]
                    if x is None:
                        continue
                    if x is True:
                        i = recv_f.get(st * M + mb)
                        if i is None or part[i] != DONE:
                            return False
                    elif x + mb not in ran_f:
                        return False
                elif kind is Bk or kind is Ik:
                    if st * M + mb not in ran_f:
                        return False
                    x = b_src[st]
                    if x is None:
                        continue
                    if x is True:
                        i = recv_b.get(st * M + mb)
                        if i is None or part[i] != DONE:
                            return False
                    elif x + mb not in ran_bi:
                        return False
                elif st * M + mb not in ran_i:
                    return False
            for c in halves:  # it runs (and finishes) here
                kind = c.kind
                if kind is Fk:
                    ran_f.add(c.stage * M + c.mb)
                elif kind is Bk:
                    ran_bi.add(c.stage * M + c.mb)
                elif kind is Ik:
                    ran_bi.add(c.stage * M + c.mb)
                    ran_i.add(c.stage * M + c.mb)
            continue
        # a comm unit is posted
        u = len(left)
        p = last[r]
        active = nccl and (p < 0 or not left[p])
        if p >= 0:
            unext[p] = u
        last[r] = u
        n_left = len(ops)
        left.append(n_left)
        first.append(nops)
        unext.append(-1)
        act.append(active)
        if tp is Batch and a.wait:
            waitu[r] = u
        for op in ops:
            i = nops
            nops += 1
            opu.append(u)
            kind = op.kind
            if kind is SF:
                mine, theirs = sf_ch[op.stage]
            elif kind is RF:
                theirs, mine = rf_ch[op.stage]
                d = recv_f
                key = op.stage * M + op.mb
                if key not in d:
                    d[key] = i
            elif kind is SB:
                mine, theirs = sb_ch[op.stage]
            else:
                theirs, mine = rb_ch[op.stage]
                d = recv_b
                key = op.stage * M + op.mb
                if key not in d:
                    d[key] = i
            n = len(mine)
            mine.append(i)
            if n < len(theirs):  # FIFO: the n-th send and the n-th receive pair
                j = theirs[n]
                v = opu[j]
                if nccl:
                    if active and act[v]:
                        part.append(DONE)
                        part[j] = DONE
                        n_left -= 1
                        left[v] -= 1
                        if not left[v] and unext[v] >= 0:
                            stack.append(unext[v])
                    else:
                        part.append(j)
                        part[j] = i
                else:  # eager: a send completes when posted, a receive once its send is
                    part.append(DONE)
                    if part[j] != DONE:
                        part[j] = DONE
                        left[v] -= 1
                    n_left -= 1
            elif nccl or not (kind is SF or kind is SB):
                part.append(-1)
            else:
                part.append(DONE)
                n_left -= 1
        left[u] = n_left
        # nccl: the units that reach the head of their stream: their pairs
        # whose other unit is there too complete, and so on
        while stack:
            w = stack.pop()
            act[w] = True
            i0 = first[w]
            m = left[w]
            for i in range(i0, i0 + m):
                j = part[i]
                if j >= 0:
                    v = opu[j]
                    if act[v]:
                        part[i] = part[j] = DONE
                        m -= 1
                        left[v] -= 1
                        if not left[v] and unext[v] >= 0:
                            stack.append(unext[v])
            left[w] = m
            if not m and unext[w] >= 0:
                stack.append(unext[w])
    return not any(left)

"""The independent certificate checker: a small interpreter of specs/SEMANTICS.md.

What it is: a second, separately written statement of the semantics that
validates what an engine claims, sharing no code with the engines (only the IR
and the result data types):

- ``check_witness``: replays a witness order (every (rank, step) once, in the
  order steps begin) under a comm model, completing communication as soon as
  the model allows between entries; accepts it if every step could begin where
  it stands and everything completed at the end.
- ``check_deadlock``: runs the schedule to its maximal execution (everything
  enabled runs; the semantics is monotone, so this decides termination) and
  accepts a cycle of waits only if the schedule does not terminate, every event
  of the cycle never happened, and every hop is a genuine wait of the
  semantics (recomputed here) that closes into a cycle or ends at an unmatched
  op.
- ``check_violation``: re-derives a static counterexample (a violated pair of
  dependencies, a FIFO mismatch, a duplicate, a memory peak) from the schedule.

Returns (ok, reason) pairs; it never raises on a wrong certificate.

What it does not cover: well-formedness (the interpreter assumes a well-formed
schedule, as the engines do) and finding counterexamples itself.
"""

from __future__ import annotations

from verifier.ir import Batch, Comm, CommKind, ComputeKind, Overlap, Schedule, op_text
from verifier.results.check import Event, EventKind, PropertyId, Violation, WaitCycle

_SENDS = (CommKind.SEND_F, CommKind.SEND_B)


class _Machine:
    """The state of one execution under one comm model."""

    def __init__(self, s: Schedule, model: str):
        self.s, self.model = s, model
        self.n = s.num_ranks
        # the route tables, read straight from the IR's placement
        self.rank = {st.id: st.rank for st in s.stages}
        self.nxt: dict[int, int | None] = {}
        self.prv: dict[int, int | None] = {}
        for route in s.routes:
            for k, sid in enumerate(route.stages):
                self.nxt[sid] = route.stages[k + 1] if k + 1 < len(route.stages) else None
                self.prv[sid] = route.stages[k - 1] if k > 0 else None
        self.pc = [0] * self.n  # next step to begin, per rank
        # one pass over the programs: ops (id -> (rank, step, sub, Comm)), units
        # (per rank: (step, [op ids])), the FIFO queues per (src, dst) written
        # afresh, and first occurrences ("which event a compute waits for")
        ops: list[tuple[int, int, int | None, Comm]] = []
        self.ops = ops
        self.units: list[list[tuple[int, list[int]]]] = [[] for _ in range(self.n)]
        self.unit_of_step: list[dict[int, int]] = [dict() for _ in range(self.n)]
        self.first_recv: list[dict[tuple, int]] = [dict() for _ in range(self.n)]
        self.first_comp: list[dict[tuple, int]] = [dict() for _ in range(self.n)]
        # op id -> the rank posting it and the index of its unit there
        self.op_rank: list[int] = []
        self.op_unit: list[int] = []
        queues: dict[int, tuple[list[int], list[int]]] = {}  # src * n + dst -> (sends, receives)
        nxt, prv, rank, n = self.nxt, self.prv, self.rank, self.n
        SF, SB, RF = CommKind.SEND_F, CommKind.SEND_B, CommKind.RECV_F
        op_rank, op_unit = self.op_rank, self.op_unit
        for r, acts in enumerate(s.actions):
            units_r, uos, frecv, fcomp = self.units[r], self.unit_of_step[r], self.first_recv[r], self.first_comp[r]
            for k, a in enumerate(acts):
                tp = type(a)
                if tp is Comm:
                    lst = ((None, a),)
                elif tp is Batch:
                    lst = enumerate(a.ops)
                else:
                    for c in ((a.f, a.b) if tp is Overlap else (a,)):
                        fcomp.setdefault((c.kind, c.stage, c.mb), k)
                    continue
                u = len(units_r)
                ids = []
                for sub, op in lst:
                    i = len(ops)
                    ids.append(i)
                    ops.append((r, k, sub, op))
                    op_rank.append(r)
                    op_unit.append(u)
                    kind = op.kind
                    if kind is SF or kind is SB:
                        q = r * n + rank[nxt[op.stage] if kind is SF else prv[op.stage]]
                        side = 0
                    else:
                        frecv.setdefault((kind, op.stage, op.mb), i)
                        q = rank[prv[op.stage] if kind is RF else nxt[op.stage]] * n + r
                        side = 1
                    pair = queues.get(q)
                    if pair is None:
                        pair = queues[q] = ([], [])
                    pair[side].append(i)
                uos[k] = u
                units_r.append((k, ids))
        self.partner: list[int | None] = [None] * len(ops)
        partner = self.partner
        for snd, rcv in queues.values():
            for a, b in zip(snd, rcv):
                partner[a] = b
                partner[b] = a
        self.done = [False] * len(self.ops)
        # nccl: index of the first unit not yet complete (a rank's units
        # complete in post order, so unit u of rank r is complete iff head[r] > u)
        self.head = [0] * self.n

    @property
    def op_at(self) -> dict[tuple, int]:
        """(rank, step, sub) -> op id (built on first use: only cycles need it)."""
        if not hasattr(self, "_op_at"):
            self._op_at = {(r, k, sub): i for i, (r, k, sub, _op) in enumerate(self.ops)}
        return self._op_at

    # ---- events
    def posted(self, r: int, k: int) -> bool:
        return self.pc[r] > k

    def unit_active(self, r: int, u: int) -> bool:
        return u == self.head[r] and self.posted(r, self.units[r][u][0])

    def step_returned(self, r: int, k: int) -> bool:
        if self.pc[r] <= k:
            return False
        a = self.s.actions[r][k]
        if type(a) is Batch and a.wait:
            u = self.unit_of_step[r][k]
            if self.model == "nccl":
                return self.head[r] > u
            return all(self.done[i] for i in self.units[r][u][1])
        return True

    # ---- communication progress
    def settle(self, r: int) -> None:
        """Complete everything the model allows after rank ``r`` posted (nccl):
        the units at the heads of the streams, as long as their ops' partners'
        units are active too."""
        if self.model == "eager":
            return
        work = [r]
        head, units, done, partner = self.head, self.units, self.done, self.partner
        pc, op_rank, op_unit = self.pc, self.op_rank, self.op_unit
        while work:
            r = work.pop()
            units_r = units[r]
            u = head[r]
            while u < len(units_r):
                k, ids = units_r[u]
                if pc[r] <= k:
                    break
                complete = True
                for i in ids:
                    if done[i]:
                        continue
                    j = partner[i]
                    if j is not None:
                        pr, pu = op_rank[j], op_unit[j]
                        if head[pr] == pu and pc[pr] > units[pr][pu][0]:  # partner unit active
                            done[i] = done[j] = True
                            work.append(pr)
                            continue
                    complete = False
                if not complete:
                    break
                u += 1
                head[r] = u

    def post(self, r: int, k: int) -> None:
        self.pc[r] = k + 1
        u = self.unit_of_step[r].get(k)
        if u is None:
            return
        if self.model == "eager":
            for i in self.units[r][u][1]:
                op = self.ops[i][3]
                j = self.partner[i]
                if op.kind in _SENDS:
                    self.done[i] = True
                    if j is not None and self.posted(self.ops[j][0], self.ops[j][1]):
                        self.done[j] = True
                elif j is not None and self.posted(self.ops[j][0], self.ops[j][1]):
                    self.done[i] = True
        else:
            self.settle(r)

    # ---- what a compute waits for (written from SEMANTICS.md "Programs")
    def inputs(self, r: int, k: int) -> list[tuple]:
        """('op', op id) | ('step', step) | ('never', text) for each input of step k."""
        a = self.s.actions[r][k]
        tp = type(a)
        cs = (a.f, a.b) if tp is Overlap else ((a,) if tp is not Comm and tp is not Batch else ())
        out = []
        rank = self.rank
        for c in cs:
            want: list[tuple] = []
            if c.kind is ComputeKind.F:
                p = self.prv[c.stage]
                if p is not None:
                    want.append(("recv", CommKind.RECV_F, c.stage, c.mb) if rank[p] != r else ("comp", (ComputeKind.F,), p, c.mb))
            elif c.kind in (ComputeKind.B, ComputeKind.I):
                want.append(("comp", (ComputeKind.F,), c.stage, c.mb))
                nx = self.nxt[c.stage]
                if nx is not None:
                    if rank[nx] != r:
                        want.append(("recv", CommKind.RECV_B, c.stage, c.mb))
                    else:
                        want.append(("comp", (ComputeKind.B, ComputeKind.I), nx, c.mb))
            else:
                want.append(("comp", (ComputeKind.I,), c.stage, c.mb))
            for w in want:
                out.append(self._find(r, w))
        return out

    def _find(self, r: int, w: tuple) -> tuple:
        if w[0] == "recv":
            i = self.first_recv[r].get((w[1], w[2], w[3]))
            if i is not None:
                return ("op", i)
            return ("never", op_text(w[1], w[2], w[3]))
        steps = [self.first_comp[r].get((kind, w[2], w[3])) for kind in w[1]]
        steps = [x for x in steps if x is not None]
        if steps:
            return ("step", min(steps))
        return ("never", " or ".join(op_text(x, w[2], w[3]) for x in w[1]))

    def input_ready(self, r: int, inp: tuple) -> bool:
        if inp[0] == "op":
            return self.done[inp[1]]
        if inp[0] == "step":
            return self.posted(r, inp[1])  # a compute finishes when it begins
        return False

    def can_begin(self, r: int) -> tuple[bool, str]:
        k = self.pc[r]
        if k >= len(self.s.actions[r]):
            return False, f"rank {r} has no step {k}"
        if k > 0 and not self.step_returned(r, k - 1):
            return False, f"rank {r} step {k - 1} has not returned"
        a = self.s.actions[r][k]
        if type(a) is not Comm and type(a) is not Batch:
            for inp in self.inputs(r, k):
                if not self.input_ready(r, inp):
                    what = inp[1] if inp[0] == "never" else (
                        f"op {self.ops[inp[1]][3]} at rank {r} step {self.ops[inp[1]][1]}" if inp[0] == "op" else f"rank {r} step {inp[1]}")
                    return False, f"rank {r} step {k} {a} waits for {what}"
        return True, ""

    def terminated(self) -> bool:
        return all(self.pc[r] == len(self.s.actions[r]) for r in range(self.n)) and all(self.done)


def check_witness(s: Schedule, comm_model: str, witness) -> tuple[bool, str]:
    """Replay ``witness`` under ``comm_model`` (SEMANTICS.md "Witness").

    The replay runs in one pass that reads each action only when its entry
    comes (``_replays``); a witness it rejects is replayed again step by step
    through ``_Machine.can_begin``, which says why.
    """
    if len(witness) != s.num_actions:
        return False, f"witness has {len(witness)} entries, the schedule {s.num_actions} steps"
    if _replays(s, comm_model == "nccl", witness):
        return True, ""
    ok, why = _replay(s, comm_model, witness)
    return False, why if not ok else "the one-pass replay rejects what the step-by-step replay accepts"


def _replays(s: Schedule, nccl: bool, witness) -> bool:
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
    R = s.num_ranks
    actions = s.actions
    M = s.num_microbatches
    rank = {st.id: st.rank for st in s.stages}
    nxt: dict[int, int | None] = {}
    prv: dict[int, int | None] = {}
    for route in s.routes:
        st = route.stages
        for k, sid in enumerate(st):
            nxt[sid] = st[k + 1] if k + 1 < len(st) else None
            prv[sid] = st[k - 1] if k > 0 else None
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
    # per stage, where its F's input comes from (None: the first stage, True: a
    # receive, else the previous stage's key base: a compute on this rank), and
    # likewise its B/I's gradient (None: the last stage, else the next stage)
    f_src: dict = {}
    b_src: dict = {}
    for sid, r in rank.items():
        p, n = prv.get(sid), nxt.get(sid)
        f_src[sid] = None if p is None else (True if rank[p] != r else p * M)
        b_src[sid] = None if n is None else (True if rank[n] != r else n * M)
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
    # the channel of each ordered rank pair: (sends, receives) posted so far
    # (op ids); per stage, the channel each kind of op of the stage takes (a
    # well-formed schedule posts a stage's ops on the stage's rank)
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


def _replay(s: Schedule, comm_model: str, witness) -> tuple[bool, str]:
    """The witness replayed step by step on a ``_Machine``: (ok, why not)."""
    m = _Machine(s, comm_model)
    R = s.num_ranks
    for pos, (r, k) in enumerate(witness):
        if not 0 <= r < R or m.pc[r] != k:
            return False, f"entry {pos}: rank {r} step {k} is not the rank's next step"
        ok, why = m.can_begin(r)
        if not ok:
            return False, f"entry {pos}: {why}"
        m.post(r, k)
    if not m.terminated():
        left = [i for i, d in enumerate(m.done) if not d]
        r, k, sub, op = m.ops[left[0]]
        return False, f"after the last entry {len(left)} op(s) never complete, first {op} at rank {r} step {k}"
    return True, ""


def run_to_fixpoint(s: Schedule, comm_model: str) -> _Machine:
    """The maximal execution: run every step that can begin until none can."""
    m = _Machine(s, comm_model)
    progress = True
    while progress:
        progress = False
        for r in range(s.num_ranks):
            while m.pc[r] < len(s.actions[r]) and m.can_begin(r)[0]:
                m.post(r, m.pc[r])
                progress = True
    return m


def terminates(s: Schedule, comm_model: str) -> bool:
    return run_to_fixpoint(s, comm_model).terminated()


# ---- cycle of waits


def _key(m: _Machine, e: Event) -> tuple:
    return (e.kind, e.rank, e.step, e.sub)


def _happened(m: _Machine, e: Event) -> bool:
    kd = e.kind
    if kd is EventKind.NEVER:
        return False
    if kd is EventKind.BEGIN:
        return m.posted(e.rank, e.step)
    if kd is EventKind.RETURN:
        return m.step_returned(e.rank, e.step)
    u = m.unit_of_step[e.rank].get(e.step)
    if u is None:
        return True  # not an event of this schedule; rejected elsewhere
    if kd is EventKind.ACTIVE:
        return m.head[e.rank] > u or m.unit_active(e.rank, u)
    if kd is EventKind.UNIT_DONE:
        return all(m.done[i] for i in m.units[e.rank][u][1])
    i = m.op_at.get((e.rank, e.step, e.sub))
    return i is None or m.done[i]


def _done_key(m: _Machine, i: int) -> tuple:
    """The event at which op i is complete (SEMANTICS.md; see checker.WaitCycle)."""
    r, k, sub, op = m.ops[i]
    j = m.partner[i]
    if m.model == "eager":
        if op.kind in _SENDS:
            return (EventKind.BEGIN, r, k, None)
        return (EventKind.OP_DONE, r, k, sub)
    if j is None or op.kind in _SENDS:
        return (EventKind.OP_DONE, r, k, sub)
    pr, pk, psub, _ = m.ops[j]
    return (EventKind.OP_DONE, pr, pk, psub)


def _waits(m: _Machine, e: Event) -> set[tuple]:
    """Every event ``e`` directly waits for, recomputed from the semantics."""
    s = m.s
    r, k = e.rank, e.step
    out: set[tuple] = set()
    never = (EventKind.NEVER, -1, -1, None)
    if not (0 <= r < s.num_ranks and 0 <= k < len(s.actions[r])):
        return out
    a = s.actions[r][k]
    u = m.unit_of_step[r].get(k)
    if e.kind is EventKind.BEGIN:
        if k > 0:
            prev = s.actions[r][k - 1]
            out.add((EventKind.RETURN if isinstance(prev, Batch) and prev.wait else EventKind.BEGIN, r, k - 1, None))
        if u is None:
            for inp in m.inputs(r, k):
                if inp[0] == "op":
                    out.add(_done_key(m, inp[1]))
                elif inp[0] == "step":
                    out.add((EventKind.BEGIN, r, inp[1], None))
                else:
                    out.add(never)
    elif e.kind is EventKind.RETURN:
        out.add((EventKind.BEGIN, r, k, None))
        if u is not None:
            if m.model == "nccl":
                out.add((EventKind.UNIT_DONE, r, k, None))
            else:
                out.update(_done_key(m, i) for i in m.units[r][u][1])
    elif u is not None and m.model == "nccl" and e.kind is EventKind.ACTIVE:
        out.add((EventKind.BEGIN, r, k, None))
        if u > 0:
            out.add((EventKind.UNIT_DONE, r, m.units[r][u - 1][0], None))
    elif u is not None and m.model == "nccl" and e.kind is EventKind.UNIT_DONE:
        out.update(_done_key(m, i) for i in m.units[r][u][1])
    elif e.kind is EventKind.OP_DONE:
        i = m.op_at.get((r, k, e.sub))
        if i is None:
            return out
        j = m.partner[i]
        if m.model == "nccl":
            out.add((EventKind.ACTIVE, r, k, None))
            if j is None:
                out.add(never)
            else:
                out.add((EventKind.ACTIVE, m.ops[j][0], m.ops[j][1], None))
        else:
            out.add((EventKind.BEGIN, r, k, None))
            if j is None:
                out.add(never)
            else:
                out.add((EventKind.BEGIN, m.ops[j][0], m.ops[j][1], None))
    return out


def check_deadlock(s: Schedule, comm_model: str, cycle: WaitCycle | None) -> tuple[bool, str]:
    """Validate a cycle of waits (SEMANTICS.md "Witness and counterexample")."""
    if cycle is None or not cycle.hops:
        return False, "no hops"
    m = run_to_fixpoint(s, comm_model)
    if m.terminated():
        return False, "the schedule terminates: there is no deadlock"
    hops = cycle.hops
    for n, h in enumerate(hops):
        if n > 0 and _key(m, hops[n - 1].target) != _key(m, h.waiter):
            return False, f"hop {n} does not start where hop {n - 1} ends"
        if _key(m, h.target) not in _waits(m, h.waiter):
            return False, (
                f"hop {n}: {h.waiter.kind.value} of rank {h.waiter.rank} step {h.waiter.step} "
                f"does not wait for {h.target.kind.value} of rank {h.target.rank} step {h.target.step}"
            )
        if _happened(m, h.waiter):
            return False, f"hop {n}: {h.waiter.kind.value} of rank {h.waiter.rank} step {h.waiter.step} does happen"
    last = hops[-1].target
    if cycle.closed:
        if _key(m, last) != _key(m, hops[0].waiter):
            return False, "the cycle does not close"
    elif last.kind is not EventKind.NEVER:
        return False, "an open chain must end at an op that never completes"
    return True, ""


# ---- static counterexamples


def _texts(a) -> list[str]:
    """Each compute or op of an action, as the IR writes it."""
    if isinstance(a, Overlap):
        return [str(a.f), str(a.b)]
    if isinstance(a, Batch):
        return [str(o) for o in a.ops]
    return [str(a)]


def _has(a, needed: str) -> bool:
    # properties words a needed value as one op, or "2B5 or 2I5"
    return any(x in needed.split(" or ") for x in _texts(a))


def check_violation(s: Schedule, v: Violation, machine: "_Machine | None" = None) -> tuple[bool, str]:
    """Re-derive one static counterexample from the schedule (``machine``: a
    ``_Machine`` of ``s`` to reuse across violations)."""
    p = v.property
    if p is PropertyId.DEPENDENCIES:
        r, k = v.locations[0]
        needed = v.arg("needed")
        earlier = [kk for kk in range(k) if _has(s.actions[r][kk], needed)]
        if earlier:
            return False, f"{needed} is at rank {r} step {earlier[0]}, before step {k}"
        if v.code == "dep-order":
            r2, k2 = v.locations[1]
            if r2 != r or not _has(s.actions[r][k2], needed):
                return False, f"rank {r2} step {k2} does not hold {needed}"
        elif any(_has(a, needed) for a in s.actions[r]):
            return False, f"rank {r} does hold {needed}"
        return True, ""
    if p is PropertyId.EXACTLY_ONCE and v.code == "duplicate":
        want = op_text(v.arg('kind'), v.arg('stage'), v.arg('mb'))
        found = [(r, k) for r, acts in enumerate(s.actions) for k, a in enumerate(acts) for x in _texts(a) if x == want]
        ok = len(found) == v.arg("count") and set(found) == set(v.locations)
        return ok, "" if ok else f"{want} runs at {found}"
    if p is PropertyId.MESSAGE_MATCHING:
        m = machine or _Machine(s, "eager")
        if v.code == "payload":
            (r1, k1), (r2, k2) = v.locations
            for i, (r, k, _sub, op) in enumerate(m.ops):
                j = m.partner[i]
                if r == r1 and k == k1 and op.kind in _SENDS and j is not None:
                    rr, kk, _, rop = m.ops[j]
                    if (rr, kk) == (r2, k2) and _expected(s, op) != rop:
                        return True, ""
            return False, "no FIFO pair with different payloads at these places"
        if v.code in ("unmatched-send", "unmatched-recv"):
            (r1, k1), = v.locations
            for i, (r, k, _sub, _op) in enumerate(m.ops):
                if (r, k) == (r1, k1) and m.partner[i] is None:
                    return True, ""
            return False, "the op has a FIFO partner"
    if p is PropertyId.MEMORY:
        (r, k), = v.locations
        sizes = dict(v.arg("stage_bytes") or ())  # memory-bytes: the rank's stages' sizes
        live = peak = 0
        for a in s.actions[r]:
            cs = (a.f, a.b) if isinstance(a, Overlap) else ((a,) if not isinstance(a, (Comm, Batch)) else ())
            live += sum(sizes.get(c.stage, 1) for c in cs if c.kind is ComputeKind.F)
            peak = max(peak, live)
            live -= sum(sizes.get(c.stage, 1) for c in cs if c.kind in (ComputeKind.B, ComputeKind.I))
        limit = v.arg("limit")
        return (peak > limit, "" if peak > limit else f"peak {peak} is within {limit}")
    if p is PropertyId.OVERLAP_LEGAL:
        (r, k), = v.locations
        a = s.actions[r][k]
        if not isinstance(a, Overlap):
            return False, f"rank {r} step {k} is not an OVERLAP"
        legal = a.f.kind is ComputeKind.F and a.b.kind in (ComputeKind.B, ComputeKind.I) and a.f.mb != a.b.mb
        return (not legal, "" if not legal else "the OVERLAP is legal")
    return True, "not re-derived"


def check_violations(s: Schedule, violations) -> list[tuple[Violation, str]]:
    """The violations whose re-derivation fails, with why (empty: all confirmed)."""
    bad = []
    machine = None
    for v in violations[:200]:  # a bounded sample keeps huge failure lists cheap
        if v.property is PropertyId.MESSAGE_MATCHING and machine is None:
            machine = _Machine(s, "eager")
        ok, why = check_violation(s, v, machine)
        if not ok:
            bad.append((v, why))
    return bad


def _expected(s: Schedule, op: Comm) -> Comm:
    if op.kind is CommKind.SEND_F:
        return Comm(CommKind.RECV_F, s.next_stage(op.stage), op.mb)
    return Comm(CommKind.RECV_B, s.prev_stage(op.stage), op.mb)

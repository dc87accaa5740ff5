"""The certificate checker's interpreter: one execution of a schedule under one
communication model, written from specs/SEMANTICS.md ("Programs", "Messages",
"Communication models"), sharing nothing with the engines.

What it is: ``Machine`` numbers the ops and comm units of the programs, pairs
sends and receives FIFO per ordered rank pair, and advances one rank step by
step (``can_begin`` / ``post``), completing communication as soon as the model
allows. The models are stated here on their own (``MODELS``): whether a send
is buffered, and which units share an in-order stream.

What it does not cover: well-formedness (a well-formed schedule is assumed),
choosing the order of steps (``replay`` and ``run_to_fixpoint`` in the
package's ``__init__``), events of a cycle (``cycles``).
"""

from __future__ import annotations

from verifier.ir import Batch, Comm, CommKind, ComputeKind, Overlap, Schedule, op_text

SENDS = (CommKind.SEND_F, CommKind.SEND_B)

# The models of SEMANTICS.md "Communication models", as this checker reads
# them: (buffered sends, stream rule). Stream rule None: no stream (every
# unit is active once posted); "rank": one stream per rank; "pair": a plain op
# on the stream of its (rank, peer) pair, a BATCH on the rank's group stream.
MODELS: dict[str, tuple[bool, str | None]] = {
    "nccl": (False, "rank"),
    "nccl-pairs": (False, "pair"),
    "gloo": (False, None),
    "eager": (True, None),
}
_GROUP = -1  # the stream key of a BATCH under "pair" (peers are ranks >= 0)


class Machine:
    """The state of one execution of ``s`` under ``model``.

    Units have global ids in program order (rank by rank). Every unit lies on
    one stream (a list of units in post order); a stream's ``head`` is the
    index of its first unit not yet complete, so a unit is complete iff the
    head has passed it and active iff it is posted and at the head. Without a
    stream rule every unit is a stream of its own.
    """

    def __init__(self, s: Schedule, model: str):
        if model not in MODELS:
            raise ValueError(f"the certificate checker has no model {model!r}")
        self.s, self.model = s, model
        self.buffered, rule = MODELS[model]
        self.n = s.num_ranks
        self.rank = {st.id: st.rank for st in s.stages}
        self.nxt: dict[int, int | None] = {}
        self.prv: dict[int, int | None] = {}
        for route in s.routes:
            for k, sid in enumerate(route.stages):
                self.nxt[sid] = route.stages[k + 1] if k + 1 < len(route.stages) else None
                self.prv[sid] = route.stages[k - 1] if k > 0 else None
        self.pc = [0] * self.n  # next step to begin, per rank
        self.ops: list[tuple[int, int, int | None, Comm]] = []  # (rank, step, sub, op)
        self.op_unit: list[int] = []
        self.units: list[tuple[int, int, list[int]]] = []  # (rank, step, op ids)
        self.unit_of_step: list[dict[int, int]] = [dict() for _ in range(self.n)]
        self.first_recv: list[dict[tuple, int]] = [dict() for _ in range(self.n)]
        self.first_comp: list[dict[tuple, int]] = [dict() for _ in range(self.n)]
        self._number(rule)
        self.done = [False] * len(self.ops)
        self.head = [0] * len(self.streams)

    def peer(self, r: int, op: Comm) -> int:
        """The rank at the other end of ``op`` posted on a stage of rank ``r``."""
        k = op.kind
        if k is CommKind.SEND_F or k is CommKind.RECV_B:
            return self.rank[self.nxt[op.stage]]
        return self.rank[self.prv[op.stage]]

    def _number(self, rule: str | None) -> None:
        queues: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
        self.ustream: list[int] = []
        self.upos: list[int] = []
        sid_of: dict[tuple, int] = {}
        self.streams: list[list[int]] = []
        for r, acts in enumerate(self.s.actions):
            for k, a in enumerate(acts):
                if isinstance(a, (Comm, Batch)):
                    self._add_unit(r, k, a, queues)
                    g = len(self.units) - 1
                    first_peer = self.peer(r, a) if isinstance(a, Comm) else _GROUP
                    key = ((r, "unit", g) if rule is None else (r,) if rule == "rank"
                           else (r, first_peer))
                    if key not in sid_of:
                        sid_of[key] = len(self.streams)
                        self.streams.append([])
                    sid = sid_of[key]
                    self.ustream.append(sid)
                    self.upos.append(len(self.streams[sid]))
                    self.streams[sid].append(g)
                    continue
                for c in ((a.f, a.b) if isinstance(a, Overlap) else (a,)):
                    self.first_comp[r].setdefault((c.kind, c.stage, c.mb), k)
        self.partner: list[int | None] = [None] * len(self.ops)
        for snd, rcv in queues.values():
            for i, j in zip(snd, rcv):
                self.partner[i] = j
                self.partner[j] = i
        self.op_at = {(r, k, sub): i for i, (r, k, sub, _op) in enumerate(self.ops)}

    def _add_unit(self, r: int, k: int, a, queues) -> None:
        g = len(self.units)
        ids = []
        for sub, op in (((None, a),) if isinstance(a, Comm) else enumerate(a.ops)):
            i = len(self.ops)
            ids.append(i)
            self.ops.append((r, k, sub, op))
            self.op_unit.append(g)
            p = self.peer(r, op)
            if op.kind in SENDS:
                q, side = (r, p), 0
            else:
                self.first_recv[r].setdefault((op.kind, op.stage, op.mb), i)
                q, side = (p, r), 1
            queues.setdefault(q, ([], []))[side].append(i)
        self.unit_of_step[r][k] = g
        self.units.append((r, k, ids))

    # ---- events
    def posted(self, r: int, k: int) -> bool:
        return self.pc[r] > k

    def active(self, g: int) -> bool:
        r, k, _ids = self.units[g]
        return self.pc[r] > k and self.head[self.ustream[g]] == self.upos[g]

    def unit_done(self, g: int) -> bool:
        if self.buffered:
            return all(self.done[i] for i in self.units[g][2])
        return self.head[self.ustream[g]] > self.upos[g]

    def stream_prev(self, g: int) -> int | None:
        """The unit before ``g`` on its stream (None: ``g`` is the first)."""
        pos = self.upos[g]
        return self.streams[self.ustream[g]][pos - 1] if pos > 0 else None

    def step_returned(self, r: int, k: int) -> bool:
        if self.pc[r] <= k:
            return False
        a = self.s.actions[r][k]
        if type(a) is Batch and a.wait:
            return self.unit_done(self.unit_of_step[r][k])
        return True

    # ---- communication progress
    def post(self, r: int, k: int) -> None:
        self.pc[r] = k + 1
        g = self.unit_of_step[r].get(k)
        if g is None:
            return
        if self.buffered:
            self._post_buffered(g)
        else:
            self._progress([g])

    def _post_buffered(self, g: int) -> None:
        """eager: a send completes when posted; a receive once its send is."""
        for i in self.units[g][2]:
            j = self.partner[i]
            partner_posted = j is not None and self.posted(self.ops[j][0], self.ops[j][1])
            if self.ops[i][3].kind in SENDS:
                self.done[i] = True
                if partner_posted:
                    self.done[j] = True
            elif partner_posted:
                self.done[i] = True

    def _progress(self, work: list[int]) -> None:
        """Rendezvous: complete every pair whose two units are active, and move
        the heads of streams past completed units, until nothing changes."""
        done, partner, op_unit = self.done, self.partner, self.op_unit
        while work:
            g = work.pop()
            if not self.active(g):
                continue
            complete = True
            for i in self.units[g][2]:
                if done[i]:
                    continue
                j = partner[i]
                if j is not None and self.active(op_unit[j]):
                    done[i] = done[j] = True
                    work.append(op_unit[j])
                else:
                    complete = False
            if complete:
                sid = self.ustream[g]
                self.head[sid] += 1
                if self.head[sid] < len(self.streams[sid]):
                    work.append(self.streams[sid][self.head[sid]])

    # ---- what a compute waits for (SEMANTICS.md "Programs")
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
                    want.append(("recv", CommKind.RECV_F, c.stage, c.mb) if rank[p] != r
                                else ("comp", (ComputeKind.F,), p, c.mb))
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
            out.extend(self._find(r, w) for w in want)
        return out

    def _find(self, r: int, w: tuple) -> tuple:
        if w[0] == "recv":
            i = self.first_recv[r].get((w[1], w[2], w[3]))
            return ("op", i) if i is not None else ("never", op_text(w[1], w[2], w[3]))
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
                        f"op {self.ops[inp[1]][3]} at rank {r} step {self.ops[inp[1]][1]}"
                        if inp[0] == "op" else f"rank {r} step {inp[1]}")
                    return False, f"rank {r} step {k} {a} waits for {what}"
        return True, ""

    def terminated(self) -> bool:
        return (all(self.pc[r] == len(self.s.actions[r]) for r in range(self.n))
                and all(self.done))

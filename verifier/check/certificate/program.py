"""The independent checker of program certificates: a second reading of
specs/SEMANTICS.md "Recorded programs", written apart from the engines.

What it is: ``check_program_certificate(program, model, cert)`` judges what an
engine (the replay or the Z3 engine) claims about a recorded program under one
communication model (``ProgramCertificate``, verifier.results.program):

- a witness with completions (``terminates``, the replay's): a whole execution,
  judged event by event by ``verifier.check.certificate.program_witness``.
- a witness (``terminates``): the ranks return from their ops in ``order``; a
  rank posts its next op as soon as it returns from the previous one; between
  entries every request and unit completes as soon as the model allows. It is
  accepted when every entry is the rank's next op and the op can return where
  it stands, and after the last entry every rank is at its end and every unit
  posted has completed.
- a deadlock: where each rank stops, what never completes, what each blocked
  rank waits for. The checker runs its own maximal execution (every rank
  returns from whatever it can, repeated until nothing changes: the semantics
  is monotone, so this is every execution's limit) and accepts the claim only
  if it is exactly that state and that state is not termination.

It re-implements every model from the page's text (``MODELS``: send rule,
stream rule, second wait) and the FIFO matching per (group, src, dst); it
imports, of this project, only the program's data types
(``verifier.program``) and the certificate's (``verifier.results.program``),
never the replay, the encoding or the semantics core. Returns (ok, reason)
and never raises on a wrong certificate.

What it does not cover: the static properties (well-formed, message-matching,
collective-order), finding anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.check.certificate.program_witness import check_execution
from verifier.program import P2P, BatchP2P, Collective, Program, Wait, op_phrase
from verifier.results.program import ProgramCertificate


@dataclass(frozen=True)
class _Model:
    rendezvous: bool  # a send completes with its receive (else: once its unit is active)
    streams: str  # "rank" | "pair" | "none"
    second_wait_blocks: bool  # a second wait on one handle never returns


# SEMANTICS.md "Communication models" and "Recorded programs", read again here
MODELS = {
    "nccl": _Model(True, "rank", False),
    "nccl-pairs": _Model(True, "pair", False),
    "gloo": _Model(True, "none", True),
    "eager": _Model(False, "none", False),
}


# what an op is to the execution (``_Run.kind``): nothing to post or wait for, an
# isend/irecv/batch (posted, returns at once), a blocking send/recv, a collective, a wait
NONE, POSTS, BLOCKS, COLLECTIVE, WAITS = 0, 1, 2, 3, 4


class _Run:
    """One execution of the program under a model, driven op return by op return."""

    def __init__(self, p: Program, m: _Model):
        self.p, self.m = p, m
        self.pc = [0] * p.num_ranks
        self.waited: list[set] = [set() for _ in range(p.num_ranks)]
        self.partner: dict = {}
        self.wait_item: dict = {}  # (rank, op) of a wait -> the item its handle names
        self.coll_no: dict = {}  # (rank, op) of a collective -> its number on the group
        self.coll_at: dict = {}  # (group, number, rank) -> (rank, op)
        self.kind: list = []  # per rank, per op: NONE, POSTS, BLOCKS, COLLECTIVE or WAITS
        self.items: dict = {}  # (rank, op) of a P2P or batch -> [(item, entry)]
        self.sends: set = set()  # the items that are sends
        self.left: dict = {}  # unit -> how many of its items have not completed
        self._static()
        self.posted: set = set()
        self.active: set = set()
        self.unit_done: set = set()
        self.item_done: set = set()
        self.streams: dict = {}
        self.place: dict = {}  # unit -> its position on its stream
        self.key: dict = {}  # unit -> its stream
        self.work: list = []
        for r in range(p.num_ranks):
            self._reach(r)

    def _static(self) -> None:
        """What each op is, its items, FIFO partners per (group, src, dst), what
        each wait names, collective numbers."""
        sends: dict = {}
        recvs: dict = {}
        all_items, left, send_items, wait_item = self.items, self.left, self.sends, self.wait_item
        for r, rp in enumerate(self.p.ranks):
            handles: dict = {}
            count: dict = {}
            kinds = [NONE] * len(rp.ops)
            self.kind.append(kinds)
            for k, op in enumerate(rp.ops):
                t = type(op)  # the program's op classes have no subclasses
                if t is P2P or t is BatchP2P:
                    if t is P2P:
                        items = [((r, k, None), op)]
                        kinds[k] = BLOCKS if op.op in ("send", "recv") else POSTS
                    else:
                        items = [((r, k, j), e) for j, e in enumerate(op.ops)]
                        kinds[k] = POSTS
                    all_items[(r, k)] = items
                    left[(r, k)] = len(items)
                    for item, e in items:
                        if e.handle is not None and e.handle not in handles:
                            handles[e.handle] = item
                        if e.op in ("send", "isend"):
                            send_items.add(item)
                            key = (e.group, r, e.peer)
                            got = sends.get(key)
                            if got is None:
                                sends[key] = [item]
                            else:
                                got.append(item)
                        else:
                            key = (e.group, e.peer, r)
                            got = recvs.get(key)
                            if got is None:
                                recvs[key] = [item]
                            else:
                                got.append(item)
                elif t is Wait:
                    kinds[k] = WAITS
                    wait_item[(r, k)] = handles.get(op.handle)
                elif t is Collective:
                    kinds[k] = COLLECTIVE
                    n = count.get(op.group, 0)
                    count[op.group] = n + 1
                    self.coll_no[(r, k)] = n
                    self.coll_at[(op.group, n, r)] = (r, k)
        for key, ss in sends.items():
            for a, b in zip(ss, recvs.get(key, [])):
                self.partner[a], self.partner[b] = b, a

    def items_of(self, r: int, k: int):
        return self.items.get((r, k), ())

    def entry(self, item):
        r, k, j = item
        op = self.p.ranks[r].ops[k]
        return op if j is None else op.ops[j]

    # ---------------------------------------------------------------- units
    def stream(self, r: int, k: int):
        op = self.p.ranks[r].ops[k]
        if self.m.streams == "none":
            return None
        if self.m.streams == "rank":
            return (r,)
        if isinstance(op, P2P):
            return (r, op.group, op.peer)
        group = op.group if isinstance(op, Collective) else op.ops[0].group if op.ops else -1
        return (r, group, "group")

    def post(self, r: int, k: int) -> None:
        u = (r, k)
        self.posted.add(u)
        key = self.key[u] = self.stream(r, k)
        if key is None:
            self.activate(u)
        else:
            queue = self.streams.setdefault(key, [])
            self.place[u] = len(queue)
            queue.append(u)
            if len(queue) == 1 or queue[-2] in self.unit_done:
                self.activate(u)
        self.settle()

    def activate(self, u) -> None:
        self.active.add(u)
        self.work.append(u)

    def settle(self) -> None:
        """Complete everything the model allows, as soon as it allows it."""
        while self.work:
            u = self.work.pop()
            r, k = u
            if self.kind[r][k] == COLLECTIVE:
                self.try_collective(r, k)
                continue
            items = self.items_of(r, k)
            if not items:
                self.finish(u)
            partner, done, rendezvous = self.partner, self.item_done, self.m.rendezvous
            for item, _e in items:
                other = partner.get(item)
                if item not in done:  # self.try_item(item), its unit being active
                    if not rendezvous and item in self.sends:
                        self.complete(item)
                    elif other is not None:
                        if rendezvous:
                            if other[:2] in self.active:
                                self.complete(item)
                                self.complete(other)
                        elif other in done:
                            self.complete(item)
                if other is not None:
                    self.try_item(other)

    def try_item(self, item) -> None:
        if item in self.item_done or item[:2] not in self.active:
            return
        other = self.partner.get(item)
        if not self.m.rendezvous and item in self.sends:
            self.complete(item)
        elif other is None:
            return
        elif self.m.rendezvous and other[:2] in self.active:
            self.complete(item)
            self.complete(other)
        elif not self.m.rendezvous and other in self.item_done:
            self.complete(item)

    def complete(self, item) -> None:
        if item in self.item_done:
            return
        self.item_done.add(item)
        u = item[:2]
        self.left[u] -= 1
        if not self.left[u]:  # every item of the unit has completed
            self.finish(u)

    def try_collective(self, r: int, k: int) -> None:
        group = self.p.ranks[r].ops[k].group
        n = self.coll_no[(r, k)]
        g = next((g for g in self.p.groups if g.id == group), None)
        if g is None:
            return
        units = [self.coll_at.get((group, n, m)) for m in g.ranks]
        if all(u is not None and u in self.active for u in units):
            for u in units:
                self.finish(u)

    def finish(self, u) -> None:
        if u in self.unit_done:
            return
        self.unit_done.add(u)
        key = self.key[u]
        if key is not None:
            queue = self.streams[key]
            i = self.place[u]
            if i + 1 < len(queue):
                self.activate(queue[i + 1])

    # ---------------------------------------------------------------- ranks
    def _reach(self, r: int) -> None:
        """Rank r is at its next op: a point-to-point call, a batch or a collective is posted."""
        k = self.pc[r]
        kinds = self.kind[r]
        if k < len(kinds) and kinds[k] in (POSTS, BLOCKS, COLLECTIVE):
            self.post(r, k)

    def why_not(self, r: int) -> str:
        """Why rank r cannot return from its current op now ("" if it can)."""
        k = self.pc[r]
        c = self.kind[r][k]
        if c == BLOCKS or c == COLLECTIVE:
            return "" if (r, k) in self.unit_done else "its call has not completed"
        item = self.wait_item.get((r, k)) if c == WAITS else None
        if item is None:
            return ""
        op = self.p.ranks[r].ops[k]
        if op.handle in self.waited[r] and self.m.second_wait_blocks:
            return f"a second wait on handle {op.handle} never returns under this model"
        if self.m.streams != "none":
            return "" if item[:2] in self.unit_done else f"the unit of handle {op.handle} has not completed"
        return "" if item in self.item_done else f"the op of handle {op.handle} has not completed"

    def step(self, r: int) -> None:
        k = self.pc[r]
        if self.kind[r][k] == WAITS and self.wait_item.get((r, k)) is not None:
            self.waited[r].add(self.p.ranks[r].ops[k].handle)
        self.pc[r] = k + 1
        self._reach(r)

    def run_all(self) -> None:
        """The maximal execution: every rank returns from whatever it can, until nothing moves."""
        moved = True
        while moved:
            moved = False
            for r, rp in enumerate(self.p.ranks):
                while self.pc[r] < len(rp.ops) and not self.why_not(r):
                    self.step(r)
                    moved = True

    def finished(self) -> bool:
        return (all(self.pc[r] == len(rp.ops) for r, rp in enumerate(self.p.ranks))
                and self.posted <= self.unit_done)

    def pending(self) -> set:
        out = set()
        for r, k in self.posted:
            items = self.items_of(r, k)
            if items:
                out |= {i for i, _e in items if i not in self.item_done}
            elif (r, k) not in self.unit_done:
                out.add((r, k, None))
        return out


def _where(p: Program, r: int, k: int) -> str:
    op = p.ranks[r].ops[k]
    return f"rank {r} op {k} ({op_phrase(op)} at {op.where})"


def check_program_certificate(p: Program, model: str, cert: ProgramCertificate | None) -> tuple[bool, str]:
    """(accepted, why not) for ``cert`` under ``model`` (see the module docstring)."""
    if model not in MODELS:
        return False, f"the program certificate checker has no model {model!r} (it knows {', '.join(MODELS)})"
    if cert is None:
        return False, f"no certificate under {model}"
    if cert.model != model:
        return False, f"the certificate is for {cert.model}, not {model}"
    m = MODELS[model]
    try:
        if cert.terminates and cert.completions is not None:
            got = check_execution(p, m.rendezvous, m.streams, m.second_wait_blocks, cert)
            if got is not None:
                return got
        run = _Run(p, m)
        return _witness(p, run, cert) if cert.terminates else _deadlock(p, run, cert)
    except (IndexError, KeyError, TypeError, ValueError, AttributeError) as e:  # a malformed claim
        return False, f"malformed certificate: {type(e).__name__}: {e}"


def _witness(p: Program, run: _Run, cert: ProgramCertificate) -> tuple[bool, str]:
    order = cert.returns()
    if len(order) != p.num_ops:
        return False, f"the witness has {len(order)} entries, the program {p.num_ops} ops"
    pc, kind, unit_done, item_done, n = run.pc, run.kind, run.unit_done, run.item_done, p.num_ranks
    wait_item, waited, second, streams = run.wait_item, run.waited, run.m.second_wait_blocks, run.m.streams != "none"
    for i, (r, k) in enumerate(order):
        if not 0 <= r < n or pc[r] != k:
            return False, f"entry {i}: rank {r} op {k} is not the rank's next op"
        kr = kind[r]
        c = kr[k]
        # run.why_not(r) and run.step(r), spelled out; why_not words a refusal
        if c == WAITS:
            item = wait_item.get((r, k))
            if item is not None:
                h = p.ranks[r].ops[k].handle
                if (second and h in waited[r]) or not (item[:2] in unit_done if streams else item in item_done):
                    return False, f"entry {i}: {_where(p, r, k)} cannot return yet: {run.why_not(r)}"
                waited[r].add(h)
        elif (c == BLOCKS or c == COLLECTIVE) and (r, k) not in unit_done:
            return False, f"entry {i}: {_where(p, r, k)} cannot return yet: {run.why_not(r)}"
        pc[r] = k = k + 1
        if k < len(kr) and kr[k] != NONE and kr[k] != WAITS:
            run.post(r, k)
    if not run.finished():
        left = sorted(run.pending())
        return False, f"after the last entry {len(left)} request(s) never complete, first {left[:1]}"
    return True, ""


def _deadlock(p: Program, run: _Run, cert: ProgramCertificate) -> tuple[bool, str]:
    run.run_all()
    if run.finished():
        return False, "the program terminates under this model: there is no deadlock"
    if len(cert.stops) != p.num_ranks:
        return False, f"the certificate names where {len(cert.stops)} ranks stop, the program has {p.num_ranks}"
    for r, (claimed, real) in enumerate(zip(cert.stops, run.pc)):
        if claimed < real:
            return False, f"{_where(p, r, claimed)} is claimed blocked but the rank can move past it"
        if claimed > real:
            return False, f"rank {r} is claimed past op {real} but never returns from {_where(p, r, real)}"
    pending = run.pending()
    claimed = set(cert.pending)
    if claimed != pending:
        extra, missing = sorted(claimed - pending, key=str), sorted(pending - claimed, key=str)
        return False, (f"what never completes differs: claimed but completes or never posted {extra[:3]}, "
                       f"never completes but not claimed {missing[:3]}")
    blocked = {r for r, rp in enumerate(p.ranks) if run.pc[r] < len(rp.ops)}
    if sorted(r for r, _n in cert.waits) != sorted(blocked):
        return False, f"the blocked ranks are {sorted(blocked)}, the certificate says {sorted(r for r, _ in cert.waits)}"
    for r, need in cert.waits:
        real = _needs(run, r)
        if set(need) != real:
            return False, (f"{_where(p, r, run.pc[r])} is claimed to wait for {sorted(need, key=str)}, "
                           f"but waits for {sorted(real, key=str)}")
    return True, ""


def _needs(run: _Run, r: int) -> set:
    """What the op rank r is blocked in waits for and never gets (empty: a second wait)."""
    k = run.pc[r]
    op = run.p.ranks[r].ops[k]
    if isinstance(op, Wait):
        item = run.wait_item[(r, k)]
        if "second wait" in run.why_not(r):
            return set()
        if run.m.streams == "none":
            return {item}
        return {i for i, _e in run.items_of(*item[:2]) if i not in run.item_done}
    items = run.items_of(r, k)
    if not items:
        return {(r, k, None)}
    return {i for i, _e in items if i not in run.item_done}

"""The Z3 engine's statement of a program's deadlock freedom, as data and SMT-LIB text (no z3).

What it is: ``encode_program(program, model)`` states specs/SEMANTICS.md
"Recorded programs" under one communication model as events, each with an
integer time ``t`` and a Boolean ``h`` ("it happens"), and the events it needs:

- ``ret r.k``: rank r returns from op k; it needs ``ret r.k-1``, its own post
  (a point-to-point call, a batch, a collective), for a blocking ``send`` /
  ``recv`` / collective the completion of its unit, for a ``wait`` the
  completion of the op of its handle (under a model with streams: of that
  op's whole unit). A second wait on a handle never returns where the model
  says so (gloo).
- ``post r.k``: the unit is posted once the rank returned from op k-1.
- ``active r.k``: posted, and (streams) the previous unit of its stream is done.
  The stream is the model's: one per rank; per (group, peer) for an unbatched
  op and per group for a batch or a collective; or none.
- ``req``: a request completes: rendezvous, a send and its FIFO partner
  (per group, src, dst) complete together (one event) once both units are
  active; buffered, a send once its unit is active, a receive once its unit
  and its partner's are. Without a partner it never happens (a buffered send
  excepted).
- ``done r.k``: a unit completes with all its requests; a collective's unit
  with its instance ``coll g.n`` (the n-th collective of every member of g,
  all active); a rank outside g, a missing group or member: never.

Every event needs its needs to have happened strictly earlier (``h_e => h_p and
t_e >= t_p + 1``), and every event whose needs all happen does happen
(maximality). The needs are conjunctive and the semantics monotone, so the
happening events of any model are exactly the replay's maximal execution: the
program is deadlock-free iff every ``h`` is true. ``smtlib_terminates`` states
that alone (every event happens: a pure difference system, asked first, as it
is z3's faster question); ``read_outcome`` turns z3's
values into a ``ProgramCertificate`` (the returns in time order, or where the
ranks stop): the same certificate the replay gives, for the same checker.

What it does not cover: solving (``verifier.check.z3engine.decide_program``),
the static properties (``verifier.check.program``), schedules
(``verifier.check.encoding``).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.check.program.cert import blocked_certificate, witness_certificate
from verifier.check.program.plan import Plan, plan
from verifier.program import P2P, BatchP2P, Collective, Program, Wait
from verifier.results.program import ProgramCertificate
from verifier.semantics.comm import GROUP_STREAM, CommModel, SendRule, StreamRule, model as model_of


@dataclass(frozen=True)
class ProgramEncoding:
    """Events (``names``), what each needs (``needs[e]``: event ids), the events
    that can never happen (``never``: id -> why), and where to read the answer:
    ``ret[r][k]``, ``post``/``done`` per (rank, op) of a unit, ``req[q]``."""

    model: str
    names: tuple[str, ...]
    needs: tuple[tuple[int, ...], ...]
    never: dict
    ret: tuple[tuple[int, ...], ...]
    post: dict
    done: dict
    req: tuple[int, ...]
    program: Program
    plan: Plan
    streams: bool
    second_wait_blocks: bool

    @property
    def num_constraints(self) -> int:
        return sum(len(n) for n in self.needs) + len(self.never) + len(self.names)


class _Builder:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.needs: list[list[int]] = []
        self.never: dict = {}

    def event(self, name: str) -> int:
        self.names.append(name)
        self.needs.append([])
        return len(self.names) - 1

    def need(self, e: int, p: int) -> None:
        self.needs[e].append(p)


def _stream(m: CommModel, r: int, op) -> object:
    if m.stream is StreamRule.NONE:
        return None
    if m.stream is StreamRule.RANK:
        return (r,)
    if isinstance(op, P2P):
        return (r, op.group, op.peer)
    group = op.group if isinstance(op, Collective) else op.ops[0].group if op.ops else -1
    return (r, group, GROUP_STREAM)


def encode_program(p: Program, model: str | CommModel, pl: Plan | None = None) -> ProgramEncoding:
    """The events and needs of ``p`` under ``model`` (see the module docstring)."""
    m = model_of(model)
    pl = pl or plan(p)
    b = _Builder()
    post: dict = {}
    active: dict = {}
    done: dict = {}
    ret: list[tuple[int, ...]] = []
    last_on: dict = {}
    for r, rp in enumerate(p.ranks):
        row: list[int] = []
        for k, op in enumerate(rp.ops):
            e = b.event(f"ret {r}.{k}")
            if k:
                b.need(e, row[-1])
            if isinstance(op, (P2P, BatchP2P, Collective)):
                post[(r, k)] = u = b.event(f"post {r}.{k}")
                if k:
                    b.need(u, row[-1])
                b.need(e, u)
                active[(r, k)] = a = b.event(f"active {r}.{k}")
                done[(r, k)] = b.event(f"done {r}.{k}")
                b.need(a, u)
                key = _stream(m, r, op)
                if key is not None:
                    if key in last_on:
                        b.need(a, done[last_on[key]])
                    last_on[key] = (r, k)
            row.append(e)
        ret.append(tuple(row))
    req = _requests(b, m, pl, active, done)
    _collectives(b, p, pl, active, done)
    _returns(b, p, pl, m, ret, done, req)
    return ProgramEncoding(m.name, tuple(b.names), tuple(tuple(n) for n in b.needs), dict(b.never),
                           tuple(ret), post, done, tuple(req), p, pl, m.has_streams, m.second_wait_blocks)


def _requests(b: _Builder, m: CommModel, pl: Plan, active: dict, done: dict) -> list[int]:
    """One completion event per request (one per matched pair under rendezvous);
    a unit of requests is done once they all are."""
    buffered = m.send is SendRule.BUFFERED
    req: list[int] = [-1] * len(pl.req_op)
    for q, (r, k, _sub) in enumerate(pl.req_place):
        mate = pl.partner[q]
        if req[q] < 0:
            req[q] = b.event(f"req {r}.{k}" + ("" if _sub is None else f".{_sub}"))
            if not buffered and mate >= 0:
                req[mate] = req[q]
        c = req[q]
        b.need(c, active[(r, k)])
        if mate >= 0 and not (buffered and pl.is_send[q]):
            b.need(c, active[pl.req_place[mate][:2]])
        if mate < 0 and not (buffered and pl.is_send[q]):
            b.never[c] = "it has no FIFO partner"
    for (r, k), d in done.items():
        reqs = pl.step_reqs[r][k]
        b.need(d, active[(r, k)])
        for q in reqs:
            b.need(d, req[q])
    return req


def _collectives(b: _Builder, p: Program, pl: Plan, active: dict, done: dict) -> None:
    """The n-th collective of group g completes every member's unit at once."""
    inst: dict = {}
    for r, rows in enumerate(pl.coll_index):
        for k, gk in enumerate(rows):
            if gk is None:
                continue
            if gk not in inst:
                inst[gk] = x = b.event(f"coll {gk[0]}.{gk[1]}")
                g = p.group(gk[0])
                if g is None:
                    b.never[x] = f"group {gk[0]} is not declared"
                else:
                    for member in g.ranks:
                        ks = pl.colls.get((gk[0], member), [])
                        if gk[1] < len(ks):
                            b.need(x, active[(member, ks[gk[1]])])
                        else:
                            b.never[x] = f"rank {member} never reaches it"
            b.need(done[(r, k)], inst[gk])
            g = p.group(gk[0])
            if g is not None and r not in g.ranks:
                b.never[done[(r, k)]] = f"rank {r} is not a member of group {gk[0]}"


def _returns(b: _Builder, p: Program, pl: Plan, m: CommModel, ret, done: dict, req: list[int]) -> None:
    """What a return waits for beyond program order and its own post."""
    for r, rp in enumerate(p.ranks):
        waited: set = set()
        for k, op in enumerate(rp.ops):
            if (type(op) is P2P and op.blocking) or type(op) is Collective:
                b.need(ret[r][k], done[(r, k)])
            elif type(op) is Wait and pl.wait_req[r][k] >= 0:
                q = pl.wait_req[r][k]
                if op.handle in waited and m.second_wait_blocks:
                    b.never[ret[r][k]] = f"a second wait on handle {op.handle} never returns under {m.name}"
                elif m.has_streams:
                    b.need(ret[r][k], done[pl.req_place[q][:2]])
                else:
                    b.need(ret[r][k], req[q])
                waited.add(op.handle)


def smtlib_terminates(enc: ProgramEncoding) -> str:
    """Termination alone as SMT-LIB 2 text: every event happens, strictly after
    what it needs (``t<i>`` only; call it only when ``enc.never`` is empty). A
    pure difference system, handed to z3 sink first (the last event's needs
    first), which keeps its propagation near-linear (measured, DualPipeV 16x64
    as a program: 2.0 s against 10 s for ``smtlib_program``)."""
    out = ["(set-logic QF_IDL)"]
    out += [f"(declare-const t{i} Int)" for i in range(len(enc.names))]
    for i in range(len(enc.needs) - 1, -1, -1):
        out += [f"(assert (>= (- t{i} t{j}) 1))" for j in enc.needs[i]]
    return "\n".join(out)


def smtlib_program(enc: ProgramEncoding) -> str:
    """The system as SMT-LIB 2 text: ``t<i>`` (Int) and ``h<i>`` (Bool) per event."""
    out = ["(set-logic QF_IDL)"]
    for i in range(len(enc.names)):
        out.append(f"(declare-const t{i} Int)")
        out.append(f"(declare-const h{i} Bool)")
    for i, needs in enumerate(enc.needs):
        if i in enc.never:
            out.append(f"(assert (not h{i}))")
        for j in needs:  # happening needs the need to happen strictly earlier
            out.append(f"(assert (=> h{i} (and h{j} (>= (- t{i} t{j}) 1))))")
        if i not in enc.never:  # maximality: an event whose needs all happen, happens
            body = f"(and {' '.join(f'h{j}' for j in needs)})" if len(needs) > 1 else \
                f"h{needs[0]}" if needs else "true"
            out.append(f"(assert (=> {body} h{i}))")
    return "\n".join(out)


def read_outcome(enc: ProgramEncoding, happens: list[bool], times: list[int]) -> ProgramCertificate:
    """The answer in z3's values: the returns in time order, or where the ranks stop."""
    p, pl = enc.program, enc.plan
    if all(happens):
        order = sorted((times[e], r, k) for r, row in enumerate(enc.ret) for k, e in enumerate(row))
        return witness_certificate(enc.model, [(r, k) for _t, r, k in order])
    pcs = [next((k for k, e in enumerate(row) if not happens[e]), len(row)) for row in enc.ret]
    return blocked_certificate(
        p, pl, enc.model, enc.streams, enc.second_wait_blocks, pcs,
        lambda r, k: (r, k) in enc.post and happens[enc.post[(r, k)]], lambda q: happens[enc.req[q]],
        lambda r, k: happens[enc.done[(r, k)]])

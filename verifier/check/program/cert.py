"""The certificate an engine gives for a program under one model, from its final state.

Both program engines (the replay, ``verifier.check.program.replay``, and the Z3
engine, ``verifier.check.program.encoding`` solved by ``verifier.check.z3engine``)
end in the same kind of state: how far each rank got, which ops were posted
and which requests and units completed. ``blocked_certificate`` turns that
state into a ``ProgramCertificate`` of a deadlock (where each rank stops,
what never completes, what each blocked rank waits for);
``witness_certificate`` wraps an order of returns. Neither decides anything:
the certificate checker (``verifier.check.certificate.program``) judges them.

What it does not cover: running either engine, checking certificates.
"""

from __future__ import annotations

from typing import Callable, Sequence

from verifier.program import P2P, Collective, Program, Wait
from verifier.results.program import ProgramCertificate


def witness_certificate(model: str, order: Sequence[tuple[int, int]]) -> ProgramCertificate:
    return ProgramCertificate(model, True, order=tuple(order))


def _second_wait(p: Program, pl, rank: int, k: int) -> bool:
    """The wait at op k names a handle an earlier (returned) wait of the rank named."""
    ops = p.ranks[rank].ops
    return any(type(ops[j]) is Wait and pl.wait_req[rank][j] >= 0 and ops[j].handle == ops[k].handle
               for j in range(k))


def blocked_certificate(p: Program, pl, model: str, streams: bool, second_wait_blocks: bool,
                        pcs: Sequence[int], posted: Callable[[int, int], bool],
                        req_done: Callable[[int], bool],
                        unit_done: Callable[[int, int], bool]) -> ProgramCertificate:
    """The deadlock certificate of a final state: ``pcs[r]`` the op rank r stops at,
    ``posted(r, k)`` whether op k of rank r was posted, ``req_done(q)`` whether
    request q completed, ``unit_done(r, k)`` whether the unit op k posted completed.
    ``pl`` is the program's ``verifier.check.program.plan.Plan`` (read, not imported:
    the replay builds its certificate here)."""
    pending = []
    for r, rp in enumerate(p.ranks):
        for k in range(len(rp.ops)):
            if not posted(r, k):
                continue
            reqs = pl.step_reqs[r][k]
            if reqs:
                pending += [pl.req_place[q] for q in reqs if not req_done(q)]
            elif not unit_done(r, k):
                pending.append((r, k, None))
    waits = []
    for r, rp in enumerate(p.ranks):
        k = pcs[r]
        if k >= len(rp.ops):
            continue
        op = rp.ops[k]
        if (type(op) is P2P and op.blocking) or type(op) is Collective:
            reqs = pl.step_reqs[r][k]
            need = [pl.req_place[q] for q in reqs if not req_done(q)] if reqs else [(r, k, None)]
        elif type(op) is Wait and pl.wait_req[r][k] >= 0:
            q = pl.wait_req[r][k]
            if second_wait_blocks and _second_wait(p, pl, r, k):
                need = []
            elif streams:
                rr, kk, _ = pl.req_place[q]
                need = [pl.req_place[x] for x in pl.step_reqs[rr][kk] if not req_done(x)]
            else:
                need = [pl.req_place[q]]
        else:
            need = []
        waits.append((r, tuple(need)))
    return ProgramCertificate(model, False, stops=tuple(pcs), pending=tuple(pending), waits=tuple(waits))

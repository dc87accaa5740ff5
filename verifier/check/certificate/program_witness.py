"""The independent checker's judgement of a whole-execution witness, array by array.

A witness with ``completions`` (``ProgramCertificate``: the runs of returns and,
for every unit, when it completed) is an execution written out: every op's
return and every unit's completion in one sequence. ``check_execution`` gives
each event its place in that sequence and accepts the witness when every
event comes after what the model says it needs (specs/SEMANTICS.md "Program
certificates"):

- a unit (a P2P op, a batch, a collective) is *active* once it is posted (its
  rank returned from the op before it; op 0 at the start) and, under a model
  with streams, the unit before it on its stream completed;
- a unit completes after it is active and, for each of its requests, after the
  FIFO partner's unit is active (a rendezvous; under buffered sends a send
  needs nothing more, a receive its send's unit active); a collective after
  every member's unit of that instance is active;
- a blocking call or collective returns after its unit completed; a wait after
  the unit of its handle completed (with streams) or its request did (without
  streams: its unit and, for a rendezvous or a receive, the partner's unit
  active); a second wait on a handle never returns where the model says so;
- every op returns once, each rank's in order, and every unit completes.

An execution that exists terminates; the semantics is monotone, so then every
execution does. The check re-derives what it needs from the program's data
(``Program.columns``) on its own: FIFO partners per (group, src, dst), the
streams, what each handle names, the collectives' instances; it imports
nothing of the engines. Returns None when the program holds something this
form does not cover (an empty batch, a collective on a group the program does
not declare): the caller then replays the witness op by op.

What it does not cover: witnesses without completions, deadlock certificates
(``verifier.check.certificate.program``).
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from verifier.program import BATCH, BLOCKS, COLLECTIVE, POSTS, WAIT, Program, op_phrase
from verifier.results.program import ProgramCertificate


def _partners(group, src, dst, send) -> np.ndarray:
    """FIFO partners: the i-th send and the i-th receive of one (group, src, dst) pair up."""
    n = len(group)
    at = np.arange(n)
    lo = [int(x.min()) if n else 0 for x in (group, src, dst)]
    span = [int(x.max()) - m + 1 if n else 1 for x, m in zip((group, src, dst), lo)]
    if n and span[0] * span[1] * span[2] * 2 < 1 << 62:  # (group, src, dst, direction) packed in one key
        key = (((group - lo[0]) * span[1] + (src - lo[1])) * span[2] + (dst - lo[2])) * 2 + send
        o = np.argsort(key, kind="stable")
    else:
        o = np.lexsort((at, send, dst, src, group))
    g, s, d, f = group[o], src[o], dst[o], send[o]
    chan_starts = np.ones(n, dtype=bool)
    chan_starts[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1]) | (d[1:] != d[:-1])
    side_starts = chan_starts.copy()
    side_starts[1:] |= f[1:] != f[:-1]
    nth = at - np.maximum.accumulate(np.where(side_starts, at, 0))
    chan = np.cumsum(chan_starts)
    o2 = np.lexsort((f, nth, chan))
    c2, n2, f2 = chan[o2], nth[o2], f[o2]
    pair = (c2[1:] == c2[:-1]) & (n2[1:] == n2[:-1]) & f2[1:] & ~f2[:-1]
    i = np.flatnonzero(pair)
    partner = np.full(n, -1, dtype=np.int64)
    a, b = o[o2[i]], o[o2[i + 1]]
    partner[a], partner[b] = b, a
    return partner


def _first_item(rank_i, handle_i, g_i, rank_w, handle_w, g_w) -> np.ndarray:
    """Per wait, the first item its rank issued with that handle before it (-1: none)."""
    ni, nw = len(rank_i), len(rank_w)
    if not nw:
        return np.zeros(0, dtype=np.int64)
    r = np.concatenate([rank_i, rank_w])
    h = np.concatenate([handle_i, handle_w])
    is_wait = np.r_[np.zeros(ni, dtype=bool), np.ones(nw, dtype=bool)]
    span = int(h.max()) + 1 if len(h) else 1
    if 0 <= int(h.min()) and (int(r.max()) + 1) * span < 1 << 61:  # one packed key, sorted stably
        o = np.argsort((r * span + h) * 2 + is_wait, kind="stable")
    else:
        o = np.lexsort((np.arange(ni + nw), is_wait, h, r))
    rs, hs = r[o], h[o]
    start = np.ones(ni + nw, dtype=bool)
    start[1:] = (rs[1:] != rs[:-1]) | (hs[1:] != hs[:-1])
    head = o[np.maximum.accumulate(np.where(start, np.arange(ni + nw), 0))]
    item = np.where(head < ni, head, -1)  # the key's first element, when it is an item
    got = np.empty(nw, dtype=np.int64)
    got[o[is_wait[o]] - ni] = item[is_wait[o]]
    ok = got >= 0
    got[ok] = np.where(g_i[got[ok]] < g_w[ok], got[ok], -1)
    return got


def check_execution(p: Program, rendezvous: bool, streams: str, second_wait_blocks: bool,
                    cert: ProgramCertificate) -> tuple[bool, str] | None:
    """(accepted, why not) for a witness with completions (see the module
    docstring); None when the program holds what this form does not cover."""
    c = p.columns
    code, off, n = c.code, c.off, len(c.code)
    nr = p.num_ranks
    is_unit = (code >= POSTS) & (code <= COLLECTIVE)
    uop = np.flatnonzero(is_unit)
    per_unit = np.bincount(np.searchsorted(uop, c.e_op), minlength=len(uop)) if len(c.e_op) else \
        np.zeros(len(uop), dtype=np.int64)
    declared = {g.id: g.ranks for g in p.groups}
    if np.any((code[uop] == BATCH) & (per_unit == 0)) or any(
            int(g) not in declared for g in c.group[code == COLLECTIVE].tolist()):
        return None
    # ---- the sequence: every return and every completion has a place
    runs = np.fromiter(chain.from_iterable(cert.runs), dtype=np.int64).reshape(-1, 3)
    rr, ra, rb = runs[:, 0], runs[:, 1], runs[:, 2]
    if np.any((rr < 0) | (rr >= nr)) or np.any(ra > rb):
        return False, "a run names no rank of the program or ends before it starts"
    lens = np.diff(off)
    o = np.argsort(rr, kind="stable")
    so, sa, sb = rr[o], ra[o], rb[o]
    first = np.ones(len(o), dtype=bool)
    first[1:] = so[1:] != so[:-1]
    last = np.ones(len(o), dtype=bool)
    last[:-1] = so[1:] != so[:-1]
    chained = np.where(first, sa == 0, sa == np.r_[0, sb[:-1]])
    covered = np.zeros(nr, dtype=bool)
    covered[so[last]] = sb[last] == lens[so[last]]
    if not np.all(chained) or not np.all(covered | (lens == 0)) or int((rb - ra).sum()) != n:
        return False, f"the witness's runs do not return from every op of every rank once, in order ({n} ops)"
    L = rb - ra
    S = np.cumsum(L) - L
    ret = np.empty(n, dtype=np.int64)
    ret[np.repeat(off[rr] + ra - S, L) + np.arange(n)] = np.arange(n)
    cr, ck, cp = (np.array(col, dtype=np.int64).reshape(-1) for col in cert.completions)
    if not len(cr) == len(ck) == len(cp):
        return False, "the witness's completion columns differ in length"
    if len(cr) != len(uop) or np.any((cr < 0) | (cr >= nr)) or np.any((ck < 0) | (ck >= lens[cr])):
        return False, f"the witness completes {len(cr)} units, the program has {len(uop)}"
    cg = off[cr] + ck
    unit_at = np.full(n, -1, dtype=np.int64)
    unit_at[uop] = np.arange(len(uop))
    cu = unit_at[cg]
    if np.any(cu < 0) or not np.all(np.bincount(cu, minlength=len(uop)) == 1):
        return False, "the witness's completions do not name every unit (P2P, batch, collective op) once"
    if np.any(np.diff(cp) < 0) or (len(cp) and (cp[0] < 0 or cp[-1] > n)):
        return False, "the witness's completions are not in the order of the returns"
    done = np.empty(len(uop), dtype=np.int64)
    done[cu] = cp + np.arange(len(cp))
    seq = ret + np.searchsorted(cp, ret, side="right")
    return _judge(p, c, uop, unit_at, seq, done, rendezvous, streams, second_wait_blocks, declared)


def _judge(p, c, uop, unit_at, seq, done, rendezvous, streams, second_wait_blocks, declared):
    code, off, rank = c.code, c.off, c.rank
    nu = len(uop)
    urank = rank[uop]
    k0 = uop == off[urank]
    posted = np.where(k0, -1, seq[np.maximum(uop - 1, 0)])
    prev = np.full(nu, -1, dtype=np.int64)
    e_unit = unit_at[c.e_op]
    if streams == "rank":
        same = np.zeros(nu, dtype=bool)
        same[1:] = urank[1:] == urank[:-1]
        prev[same] = np.flatnonzero(same) - 1
    elif streams == "pair" and len(e_unit):
        head = np.searchsorted(e_unit, np.arange(nu))  # a unit's first entry
        ucode = code[uop]
        plain = (ucode == POSTS) | (ucode == BLOCKS)
        grp = np.where(ucode == COLLECTIVE, c.group[uop], c.e_group[np.minimum(head, len(e_unit) - 1)])
        peer = np.where(plain, c.e_peer[np.minimum(head, len(e_unit) - 1)], -1)
        o = np.lexsort((np.arange(nu), plain, peer, grp, urank))
        same = (urank[o][1:] == urank[o][:-1]) & (grp[o][1:] == grp[o][:-1]) & \
            (peer[o][1:] == peer[o][:-1]) & (plain[o][1:] == plain[o][:-1])
        prev[o[1:][same]] = o[:-1][same]
    active = np.maximum(posted, np.where(prev >= 0, done[np.maximum(prev, 0)], -1))
    bad = np.flatnonzero(done <= active)
    if len(bad):
        return _refuse(p, c, uop[bad[0]], "its unit completes before it is active")
    send = c.e_send
    rk = rank[c.e_op]
    partner = _partners(c.e_group, np.where(send, rk, c.e_peer), np.where(send, c.e_peer, rk), send)
    needs = rendezvous | ~send
    lone = np.flatnonzero((partner < 0) & needs)
    if len(lone):
        return _refuse(p, c, int(c.e_op[lone[0]]), f"entry {max(int(c.e_sub[lone[0]]), 0)} has no FIFO partner "
                       "and never completes")
    late = np.flatnonzero(needs & (done[e_unit] <= active[e_unit[partner]]))
    if len(late):
        return _refuse(p, c, int(c.e_op[late[0]]), "its unit completes before its partner's unit is active")
    why = _collectives(p, c, uop, unit_at, done, active, declared)
    if why:
        return why
    blocking = np.flatnonzero((code[uop] == BLOCKS) | (code[uop] == COLLECTIVE))
    early = blocking[seq[uop[blocking]] <= done[blocking]]
    if len(early):
        return _refuse(p, c, int(uop[early[0]]), "it returns before its unit completes")
    return _waits(p, c, seq, done, active, e_unit, partner, needs, streams, second_wait_blocks)


def _collectives(p, c, uop, unit_at, done, active, declared):
    cix = np.flatnonzero(c.code == COLLECTIVE).tolist()
    at: dict = {}
    count: dict = {}
    for g in cix:
        r, grp = int(c.rank[g]), int(c.group[g])
        i = count.get((grp, r), 0)
        count[(grp, r)] = i + 1
        at[(grp, i, r)] = int(unit_at[g])
    for (grp, i, r), u in at.items():
        if r not in declared[grp]:
            return _refuse(p, c, int(uop[u]), f"group {grp} does not hold rank {r}")
        for m in declared[grp]:
            v = at.get((grp, i, m))
            if v is None:
                return _refuse(p, c, int(uop[u]), f"rank {m} never reaches this collective")
            if done[u] <= active[v]:
                return _refuse(p, c, int(uop[u]), f"it completes before rank {m} reaches it")
    return None


def _waits(p, c, seq, done, active, e_unit, partner, needs, streams, second_wait_blocks):
    code = c.code
    wg = np.flatnonzero(code == WAIT)
    ig = c.e_op
    named = np.flatnonzero(c.e_handle >= 0)
    item = _first_item(c.rank[ig[named]], c.e_handle[named], ig[named], c.rank[wg], c.handle[wg], wg)
    item = np.where(item >= 0, named[np.maximum(item, 0)], -1) if len(named) else np.full(len(wg), -1)
    has = item >= 0
    wg, item = wg[has], item[has]
    if second_wait_blocks and len(item):
        o = np.argsort(item, kind="stable")
        again = np.flatnonzero(item[o][1:] == item[o][:-1])
        if len(again):
            return _refuse(p, c, int(wg[o][again[0] + 1]), "a second wait on its handle never returns "
                           "under this model")
    u = e_unit[item]
    if streams != "none":
        early = np.flatnonzero(seq[wg] <= done[u])
    else:
        m = e_unit[partner[item]]
        early = np.flatnonzero((seq[wg] <= active[u]) | (needs[item] & (seq[wg] <= active[m])))
    if len(early):
        return _refuse(p, c, int(wg[early[0]]), "the op of its handle has not completed")
    return True, ""


def _refuse(p, c, g: int, why: str) -> tuple[bool, str]:
    r = int(c.rank[g])
    k = g - int(c.off[r])
    op = p.ranks[r].ops[k]
    return False, f"rank {r} op {k} ({op_phrase(op)} at {op.where}): {why}"

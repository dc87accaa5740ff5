"""What the analysis replay reports once it has run: the ``Analysis`` (metrics,
spans, messages, the order), the critical path followed back from the last
event, and, for a deadlock, where each rank is stuck and what it waits for.

What it is: functions of a finished ``verifier.analysis.replay.Replay`` (read,
never changed). Not covered: the timing itself (verifier.analysis.replay), the
metrics' definitions (verifier.analysis.timeline).
"""

from __future__ import annotations

from verifier.ir import Batch, loc, op_text
from verifier.results.analysis import (
    Analysis,
    ComputeSpan,
    Message,
    PathItem,
    RankMetrics,
    Stuck,
    label_of,
)
from verifier.semantics.comm import GROUP_STREAM, StreamRule
from verifier.semantics.memory import peak_activations

PREV = -1  # cause of a step: the previous step of the same rank
NONE = -2  # cause of a step: time zero


def result(rp) -> Analysis:
    """The ``Analysis`` of a finished replay ``rp``."""
    s, R = rp.s, rp.R
    ev, OD = rp.ev_time, rp.OD
    nops = len(rp.op_comm)
    spans = []
    for r, acts in enumerate(s.actions):
        deps_r, start_r, ret_r = rp.step_deps[r], rp.start[r], rp.ret[r]
        for k in range(min(rp.pc[r], len(acts))):
            if deps_r[k] is not None:
                spans.append(ComputeSpan(r, k, acts[k], start_r[k], ret_r[k]))
    finished = all(rp.pc[r] >= len(s.actions[r]) for r in range(R))
    incomplete = any(ev[OD + i] is None for i in range(nops))
    deadlocked = not finished or incomplete
    stuck = _stuck(rp) if deadlocked else ()
    makespan, last, rank_end = _ends(rp)
    busy = [0.0] * R
    for x in spans:
        busy[x.rank] += x.end - x.start
    peaks = peak_activations(s)
    share = len(s.layers) / R if s.layers else 1.0
    ranks = tuple(
        RankMetrics(
            rank=r, busy=busy[r], bubble=makespan - busy[r], end=rank_end[r],
            peak_activations=peaks[r], stages=len(s.stages_on_rank[r]),
            param_copies=len({s.layer_of(x) for x in s.stages_on_rank[r]}) / share,
        )
        for r in range(R)
    )
    total_bubble = sum(x.bubble for x in ranks)
    ratio = total_bubble / (R * makespan) if makespan > 0 else 0.0
    path = _critical_path(rp, last) if not deadlocked and last else ()
    order = () if deadlocked else tuple(
        (r, k) for _, r, k in sorted(rp.begins, key=lambda x: x[0]))
    return Analysis(
        name=s.name, family=s.family, num_ranks=R, num_microbatches=s.num_microbatches,
        comm_model=rp.comm_model, costs=rp.costs.as_dict(), deadlocked=deadlocked,
        stuck=stuck, makespan=makespan, ranks=ranks, bubble_ratio=ratio,
        critical_path=path, computes=tuple(spans), messages=_messages(rp), order=order,
    )


def _ends(rp):
    """The makespan, its last event, and when each rank's last event happens."""
    ev, OD = rp.ev_time, rp.OD
    rank_end = [0.0] * rp.R
    makespan, last = 0.0, None
    for r in range(rp.R):
        ret_r = rp.ret[r]
        for k in range(rp.pc[r]):
            v = ret_r[k]
            if v > rank_end[r]:
                rank_end[r] = v
            if v > makespan:
                makespan, last = v, ("step", r, k)
    for i in range(len(rp.op_comm)):
        d = ev[OD + i]
        if d is not None:
            rr = rp.op_rank[i]
            if d > rank_end[rr]:
                rank_end[rr] = d
            if d > makespan:
                makespan, last = d, ("op", i)
    return makespan, last, rank_end


def _messages(rp) -> tuple[Message, ...]:
    """Every delivered message: when it could start (both sides active under a
    rendezvous model, the send active otherwise) and when it arrived."""
    ev, OD = rp.ev_time, rp.OD
    act = rp.u_active if rp.model.has_streams else rp.u_post
    out = []
    for i in range(len(rp.op_comm)):
        j = rp.op_peer[i]
        if not rp.op_send[i] or j < 0 or ev[OD + j] is None:
            continue
        ui, uj = rp.op_unit[i], rp.op_unit[j]
        st = max(act[ui], act[uj]) if rp.model.rendezvous else act[ui]
        out.append(Message(
            id=len(out), src=rp.op_rank[i], dst=rp.op_rank[j],
            send_step=rp.op_step[i], send=rp.op_comm[i], recv_step=rp.op_step[j],
            recv=rp.op_comm[j], send_post=rp.u_post[ui], recv_post=rp.u_post[uj],
            start=st, end=ev[OD + j], latency=rp.op_lat[i]))
    return tuple(out)


# --------------------------------------------------------- critical path
def _critical_path(rp, last) -> tuple[PathItem, ...]:
    """Follow each event's latest input back from the last event."""
    s = rp.s
    items: list[PathItem] = []
    node = last
    guard = 4 * (s.num_actions + len(rp.op_comm)) + 10
    while node is not None and guard > 0:
        guard -= 1
        tag = node[0]
        if tag == "step":
            _, r, k = node
            if rp.step_deps[r][k] is not None:
                items.append(PathItem("compute", r, k, label_of(s.actions[r][k]),
                                      rp.start[r][k], rp.ret[r][k]))
            c = rp.cause[r][k]
            node = None if c == NONE else ("step", r, k - 1) if c == PREV else _node_of_event(rp, c)
        elif tag == "op":
            items.append(_message_item(rp, node[1]))
            node = _node_of_cause(rp.op_cause[node[1]])
        elif tag == "unitdone":
            u = node[1]
            node = ("op", max(rp.u_ops[u], key=lambda j: rp.ev_time[rp.OD + j]))
        elif tag == "active":
            u = node[1]
            c = rp.u_acause[u]
            if c == -1:
                k = rp.u_step[u]
                node = ("step", rp.u_rank[u], k - 1) if k else None
            else:
                node = ("unitdone", c - rp.UD)
        else:  # begin of a unit: the step before it
            u = node[1]
            k = rp.u_step[u]
            node = ("step", rp.u_rank[u], k - 1) if k else None
    items.reverse()
    out: list[PathItem] = []
    for it in items:
        prev = out[-1] if out else None
        if prev is None or (prev.label, prev.rank, prev.step) != (it.label, it.rank, it.step):
            out.append(it)
    return tuple(out)


def _message_item(rp, i: int) -> PathItem:
    j = rp.op_peer[i]
    snd, rcv = (i, j) if rp.op_send[i] else (j, i)
    cause = rp.op_cause[i]
    return PathItem(
        "message", rp.op_rank[rcv], rp.op_step[rcv],
        f"message {rp.op_comm[snd]} -> {rp.op_comm[rcv]}: "
        f"{loc(rp.op_rank[snd], rp.op_step[snd])} -> "
        f"{loc(rp.op_rank[rcv], rp.op_step[rcv])}",
        _cause_time(rp, cause), rp.ev_time[rp.OD + i])


def _node_of_event(rp, e: int):
    if e < rp.OD:
        r, k = rp.ev_src[e]
        return ("step", r, k)
    if e < rp.UD:
        return ("op", e - rp.OD)
    return ("unitdone", e - rp.UD)


def _node_of_cause(cause):
    tag, x = cause
    if tag == "op":
        return ("op", x)
    if tag == "active":
        return ("active", x)
    return ("begin", x)


def _cause_time(rp, cause) -> float:
    tag, x = cause
    if tag == "op":
        return rp.ev_time[rp.OD + x]
    if tag == "active":
        return rp.u_active[x]
    return rp.u_post[x]


# ------------------------------------------------------------------ stuck
def _stuck(rp) -> tuple[Stuck, ...]:
    s = rp.s
    out: list[Stuck] = []
    for r in range(rp.R):
        k = rp.pc[r]
        if k < len(s.actions[r]):
            out.append(Stuck(r, k, str(s.actions[r][k]), _why_step(rp, r, k)))
    ev, OD = rp.ev_time, rp.OD
    for q, units in enumerate(rp.stream_units):
        if rp.sptr[q] < len(units):
            u = units[rp.sptr[q]]
            r = rp.u_rank[u]
            if rp.u_post[u] is None or rp.pc[r] == rp.u_step[u]:
                continue  # not posted, or the program's own entry says it
            for op in rp.u_ops[u]:
                if ev[OD + op] is None:
                    out.append(Stuck(r, rp.u_step[u],
                                     f"{_stream_words(rp, u)}: {rp.op_comm[op]}", _why_op(rp, op)))
                    break
    seen = {(x.rank, x.step) for x in out}
    for op in range(len(rp.op_comm)):
        if (ev[OD + op] is None and rp.op_peer[op] < 0
                and rp.u_post[rp.op_unit[op]] is not None
                and (rp.op_rank[op], rp.op_step[op]) not in seen):
            out.append(Stuck(rp.op_rank[op], rp.op_step[op], str(rp.op_comm[op]),
                             _why_op(rp, op)))
    return tuple(out)


def _stream_words(rp, u: int) -> str:
    """The stream unit u waits on, in words ("comm stream" under one per rank)."""
    if rp.model.stream is StreamRule.RANK:
        return "comm stream"
    first = rp.u_ops[u][0]
    batched = isinstance(rp.s.actions[rp.u_rank[u]][rp.u_step[u]], Batch)
    key = rp.model.stream_of(batched, rp.s.peer_of(rp.op_comm[first]))
    return "group stream" if key == GROUP_STREAM else f"stream with rank {key}"


def _why_op(rp, op: int) -> str:
    c = rp.op_comm[op]
    j = rp.op_peer[op]
    if j < 0:
        peer = rp.s.peer_of(c)
        want = rp.s.matching_op(c)
        return (f"rank {peer} to post its matching op (expected {want}); FIFO order "
                f"leaves it unmatched")
    pu = rp.op_unit[j]
    pr = rp.u_rank[pu]
    where = f"its peer {rp.op_comm[j]} ({loc(pr, rp.op_step[j])})"
    if rp.u_post[pu] is None:
        return where + f", which rank {pr} has not posted (its program is blocked)"
    if rp.model.has_streams and rp.u_active[pu] is None:
        return (where + f", queued on rank {pr}'s {_stream_words(rp, pu)} behind a unit "
                "that cannot complete")
    return where


def _why_step(rp, r: int, k: int) -> str:
    deps = rp.step_deps[r][k]
    ev = rp.ev_time
    if deps is not None:
        for e in deps:
            if ev[e] is not None:
                continue
            if e == rp.NEVER:
                return "a receive that rank {} never posts".format(r)
            if e >= rp.OD:
                op = e - rp.OD
                c = rp.op_comm[op]
                if rp.op_step[op] > k:
                    return f"{c}, which rank {r} posts only later, at step {rp.op_step[op]}"
                return (f"{c} ({loc(r, rp.op_step[op])}) to complete: waits for "
                        + _why_op(rp, op))
            kinds = (("F",), ("B", "I"), ("I",))[e // rp.SM]
            idx = e % rp.SM
            st = rp.s.stages[idx // rp.s.num_microbatches].id
            mb = idx % rp.s.num_microbatches
            return (" or ".join(op_text(x, st, mb) for x in kinds)
                    + ", which never finishes")
        return "its inputs"
    u = rp.unit_at[r][k]
    for op in rp.u_ops[u]:
        if ev[rp.OD + op] is None:
            return f"{rp.op_comm[op]} to complete: waits for " + _why_op(rp, op)
    return "its batch to complete"

"""Chrome trace (Trace Event Format) of an analysed timeline.

What it is: ``chrome_trace(analysis)`` -> a JSON-ready dict that Perfetto
(ui.perfetto.dev) and chrome://tracing open. One process per rank ("rank R"),
with a ``compute`` thread (one complete event "X" per compute action) and
``comm`` threads (each message's send on the sender and its receive on the
receiver, from the moment the transfer can start to its completion;
overlapping waits are spread over ``comm``,
``comm 2``, ... so that slices on one thread never partially overlap). A flow
arrow (``"s"`` at the start of the send slice, ``"f"`` with ``"bp": "e"``
inside the receive slice, same ``id``) joins every matched send to its
receive. Slices are named as the text output names actions, in the
project's one notation (``verifier.ir.action_text``): ``3F7``, an OVERLAP
``(3F7;4B1)OVERLAP_F_B``, ``3SEND_F7 -> rank 4``, ``4RECV_F7 <- rank 3``.

Time: one cost unit is shown as 1 ms (``ts``/``dur`` are in microseconds).

Not covered: counters (memory over time), deadlocked timelines beyond what
completed before the replay got stuck.
"""

from __future__ import annotations

import json
from pathlib import Path

from verifier.analysis.timeline import Analysis, label_of
from verifier.ir import op_text
from verifier.semantics.comm import MODELS

US_PER_UNIT = 1000.0
_COMPUTE_TID = 0


def chrome_trace(a: Analysis) -> dict:
    ev: list[dict] = []
    for r in range(a.num_ranks):
        ev.append({"ph": "M", "name": "process_name", "pid": r, "tid": 0,
                   "args": {"name": f"rank {r}"}})
        ev.append({"ph": "M", "name": "process_sort_index", "pid": r, "tid": 0,
                   "args": {"sort_index": r}})
        ev.append({"ph": "M", "name": "thread_name", "pid": r, "tid": _COMPUTE_TID,
                   "args": {"name": "compute"}})
    for c in a.computes:
        ev.append({
            "ph": "X", "pid": c.rank, "tid": _COMPUTE_TID,
            "name": label_of(c.action),
            "cat": "compute",
            "ts": c.start * US_PER_UNIT, "dur": (c.end - c.start) * US_PER_UNIT,
            "args": {"action": label_of(c.action), "step": c.step},
        })
    # comm slices, lane-assigned per rank so that slices never partially overlap
    slices: list[tuple[int, float, float, str, dict, int, str]] = []
    # rendezvous sends (nccl, nccl-pairs, gloo): both ends run together;
    # buffered (eager): the send is the transfer itself, the receive waits from its post
    rendezvous = MODELS[a.comm_model].rendezvous
    for m in a.messages:
        name = op_text(m.send.kind, m.send.stage, m.send.mb)
        send_end = m.end if rendezvous else min(m.start + m.latency, m.end)
        slices.append((m.src, m.start, send_end, f"{name} -> rank {m.dst}",
                       {"step": m.send_step, "posted": m.send_post * US_PER_UNIT}, m.id, "s"))
        rstart = m.start if rendezvous else min(m.recv_post, m.end)
        slices.append((m.dst, rstart, m.end,
                       f"{op_text(m.recv.kind, m.recv.stage, m.recv.mb)} <- rank {m.src}",
                       {"step": m.recv_step, "posted": m.recv_post * US_PER_UNIT}, m.id, "f"))
    msg_start = {m.id: m.start for m in a.messages}
    slices.sort(key=lambda x: (x[0], x[1], -(x[2] - x[1])))
    lanes: dict[int, list[float]] = {}
    named: set[tuple[int, int]] = set()
    for rank, start, end, name, args, mid, ph in slices:
        ends = lanes.setdefault(rank, [])
        for lane, last in enumerate(ends):
            if last <= start:
                break
        else:
            lane = len(ends)
            ends.append(start)
        ends[lane] = end
        tid = 1 + lane
        if (rank, tid) not in named:
            named.add((rank, tid))
            ev.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid,
                       "args": {"name": "comm" if lane == 0 else f"comm {lane + 1}"}})
        ts, dur = start * US_PER_UNIT, (end - start) * US_PER_UNIT
        ev.append({"ph": "X", "pid": rank, "tid": tid, "name": name, "cat": "comm",
                   "ts": ts, "dur": dur, "args": args})
        # the finish binds inside the receive slice: where the data can first
        # flow (both ends active under nccl; the later post under eager)
        fts = ts if ph == "s" else max(ts, msg_start[mid] * US_PER_UNIT)
        flow = {"ph": ph, "pid": rank, "tid": tid, "name": "message", "cat": "message",
                "id": mid, "ts": fts}
        if ph == "f":
            flow["bp"] = "e"
        ev.append(flow)
    return {
        "traceEvents": ev,
        "displayTimeUnit": "ms",
        "otherData": {
            "schedule": a.name,
            "family": a.family,
            "comm_model": a.comm_model,
            "makespan_units": a.makespan,
            "us_per_unit": US_PER_UNIT,
            "deadlocked": a.deadlocked,
        },
    }


def write_chrome_trace(a: Analysis, path: str | Path) -> None:
    Path(path).write_text(json.dumps(chrome_trace(a)), encoding="utf-8")

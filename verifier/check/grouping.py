"""The batch-grouping check: ops between two ranks grouped differently on the
two sides (specs/SEMANTICS.md "Communication models").

What it is: ``batch_grouping`` pairs every send with its receive (FIFO per
ordered rank pair, as "Messages" says) and, for each comm unit (a plain op or
a ``BATCH``), compares its ops with one peer against the ops of the partner's
unit with this rank: the partners of the one must be exactly the other. NCCL
leaves a different grouping undefined (NVIDIA/nccl#1279, #2130: asymmetric
``batch_isend_irecv`` hangs), so each such pair of units is one violation of
``message-matching``, code ``batch-grouping``; gloo and eager would give these
schedules a verdict, NCCL does not.

What it does not cover: unmatched ops (``unmatched-send`` / ``unmatched-recv``
report them; they are left out here), payloads (``payload``), which model the
user runs (the check is static and holds for every model, as
message-matching does).
"""

from __future__ import annotations

from verifier.ir import Batch, Comm, CommKind, Schedule, loc
from verifier.results.check import PropertyId, Violation

_SENDS = (CommKind.SEND_F, CommKind.SEND_B)


def _ops(s: Schedule):
    """(rank, step, op, peer) of every op, in program order, and per op its
    FIFO partner's index (None: unmatched)."""
    ops: list[tuple[int, int, Comm, int]] = []
    queues: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for r, acts in enumerate(s.actions):
        for k, a in enumerate(acts):
            for op in (a.ops if isinstance(a, Batch) else (a,) if isinstance(a, Comm) else ()):
                peer = s.peer_of(op)
                i = len(ops)
                ops.append((r, k, op, peer))
                if op.kind in _SENDS:
                    queues.setdefault((r, peer), ([], []))[0].append(i)
                else:
                    queues.setdefault((peer, r), ([], []))[1].append(i)
    partner: list[int | None] = [None] * len(ops)
    for snd, rcv in queues.values():
        for i, j in zip(snd, rcv):
            partner[i], partner[j] = j, i
    return ops, partner


def batch_grouping(s: Schedule) -> list[Violation]:
    """One ``batch-grouping`` violation per pair of units whose ops with each
    other are grouped differently on the two ranks."""
    ops, partner = _ops(s)
    group: dict[tuple[int, int, int], set[int]] = {}  # (rank, step, peer) -> op indices
    for i, (r, k, _op, peer) in enumerate(ops):
        group.setdefault((r, k, peer), set()).add(i)
    out: list[Violation] = []
    seen: set[tuple] = set()
    for key, mine in group.items():
        r, k, peer = key
        matched = {partner[i] for i in mine if partner[i] is not None}
        for j in sorted(matched):
            pr, pk = ops[j][0], ops[j][1]
            pair = tuple(sorted(((r, k), (pr, pk))))
            if pair in seen:
                continue
            theirs = group[(pr, pk, r)]
            if not (_splits(mine, theirs, partner) and _splits(theirs, mine, partner)):
                continue
            seen.add(pair)
            out.append(_violation(s, ops, mine, theirs, (r, k), (pr, pk)))
    out.sort(key=lambda v: v.locations)
    return out


def _splits(unit: set[int], other: set[int], partner) -> bool:
    """Whether some matched op of ``unit`` has its partner outside ``other``."""
    return any(partner[i] is not None and partner[i] not in other for i in unit)


def _texts(ops, idx) -> str:
    return " ".join(str(ops[i][2]) for i in sorted(idx))


def _violation(s, ops, mine, theirs, at, other) -> Violation:
    (r, k), (pr, pk) = sorted((at, other))
    a, b = (mine, theirs) if (r, k) == at else (theirs, mine)
    return Violation(
        PropertyId.MESSAGE_MATCHING, "batch-grouping", ((r, k), (pr, pk)),
        (("at", loc(r, k)), ("ops", _texts(ops, a)), ("other_at", loc(pr, pk)),
         ("other_ops", _texts(ops, b)), ("rank", r), ("peer", pr)))

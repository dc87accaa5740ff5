"""Regenerate specs/examples: one valid schedule per family, and the broken ones.

Run from anywhere: ``python specs/examples/regenerate.py`` (``--check`` only
compares, exit 1 when a file would change). The valid examples come from
``verifier.generators`` at a small size; the broken ones are built by hand
below, each from a short valid schedule with one deliberate fault, and say what
is wrong in ``params.broken`` (JSON has no comments). Each breaks exactly one
property under the default model (nccl); ``params.memory_limit`` is the limit
a memory example is meant to be checked with (``--memory-limit``).

What it does not cover: checking them (tests/test_golden.py runs the real CLI
on every file here).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from verifier.generators import generate  # noqa: E402
from verifier.format.io import dumps_json  # noqa: E402
from verifier.ir import (  # noqa: E402
    B,
    F,
    I,
    RECV_B,
    RECV_F,
    SEND_B,
    SEND_F,
    W,
    Batch,
    Comm,
    Compute,
    Overlap,
    Route,
    Schedule,
    Stage,
)

VALID = [
    # (file, family, ranks, micro-batches, chunks, compute_only)
    ("gpipe.json", "gpipe", 4, 4, None, False),
    ("1f1b.json", "1f1b", 4, 8, None, False),
    ("1f1b_compute_only.json", "1f1b", 4, 8, None, True),
    ("interleaved_1f1b.json", "interleaved-1f1b", 4, 8, 2, False),
    ("zb_h1.json", "zb-h1", 4, 8, None, False),
    ("zbv.json", "zbv", 4, 8, None, False),
    ("dualpipe.json", "dualpipe", 4, 8, None, False),
    ("dualpipev.json", "dualpipev", 4, 8, None, False),
]


def _two_rank(actions, name: str, broken: str, num_microbatches: int = 2, **params) -> Schedule:
    """Stage 0 on rank 0, stage 1 on rank 1, one route."""
    return Schedule(
        num_ranks=2,
        num_microbatches=num_microbatches,
        stages=(Stage(0, 0, 0), Stage(1, 1, 1)),
        routes=(Route((0, 1), tuple(range(num_microbatches))),),
        actions=tuple(tuple(a) for a in actions),
        name=name,
        family="",
        params={"broken": broken, **params},
    )


def _c(kind, stage, mb):
    return Compute(kind, stage, mb)


def _m(kind, stage, mb):
    return Comm(kind, stage, mb)


def _gpipe2(swap_sends: bool = False):
    """GPipe on 2 ranks, 2 micro-batches, plain (unbatched) P2P ops."""
    r0 = [_c(F, 0, 0), _c(F, 0, 1)]
    sends = [_m(SEND_F, 0, 0), _m(SEND_F, 0, 1)]
    r0 += list(reversed(sends)) if swap_sends else sends
    r0 += [_m(RECV_B, 0, 0), _c(B, 0, 0), _m(RECV_B, 0, 1), _c(B, 0, 1)]
    r1 = [
        _m(RECV_F, 1, 0), _c(F, 1, 0), _m(RECV_F, 1, 1), _c(F, 1, 1),
        _c(B, 1, 0), _m(SEND_B, 1, 0), _c(B, 1, 1), _m(SEND_B, 1, 1),
    ]
    return [r0, r1]


def broken() -> dict[str, Schedule]:
    out: dict[str, Schedule] = {}

    # well-formed: an action on a rank that does not hold its stage
    acts = _gpipe2()
    acts[0][0] = _c(F, 1, 0)
    out["well_formed_wrong_rank.json"] = _two_rank(
        acts, "F on the wrong rank",
        "well-formed: rank 0 step 0 runs F(stage 1, mb 0) but stage 1 is held by rank 1",
    )

    # exactly-once: a W run twice (doubles the weight gradient)
    z = generate("zb-h1", 2, 2)
    acts = [list(a) for a in z.actions]
    acts[0].append(_c(W, 0, 1))
    out["exactly_once_double_w.json"] = z.with_actions(
        acts, name="zb-h1 with W(stage 0, mb 1) run twice", family="",
        params={"broken": "exactly-once: rank 0 runs W(stage 0, mb 1) twice (a doubled weight gradient)"},
    )

    # dependencies: a send posted before the forward that produces its data
    acts = _gpipe2()
    acts[0] = [_m(SEND_F, 0, 0), _c(F, 0, 0)] + acts[0][1:2] + [acts[0][3]] + acts[0][4:]
    out["dependencies_send_before_compute.json"] = _two_rank(
        acts, "SEND_F before its F",
        "dependencies: rank 0 posts SEND_F(stage 0, mb 0) at step 0, before F(stage 0, mb 0) "
        "at step 1 has produced the data (a stale buffer is sent; nothing hangs)",
    )

    # message-matching: two sends in swapped order pair the wrong tensors
    out["message_matching_swapped_sends.json"] = _two_rank(
        _gpipe2(swap_sends=True), "sends in swapped order",
        "message-matching: rank 0 sends mb 1 before mb 0 while rank 1 receives mb 0 first: "
        "FIFO pairs SEND_F(stage 0, mb 1) with RECV_F(stage 1, mb 0); nothing hangs, the "
        "wrong activations are used",
    )

    # deadlock-free: pytorch/pytorch issue 172668 (plain P2P ops, deadlocks on NCCL)
    r0 = [
        _c(F, 0, 0), _m(SEND_F, 0, 0), _c(F, 0, 1), _m(SEND_F, 0, 1),
        _m(RECV_B, 0, 0), _c(B, 0, 0), _m(RECV_B, 0, 1), _c(B, 0, 1),
    ]
    r1 = [
        _m(RECV_F, 1, 0), _c(F, 1, 0), _c(B, 1, 0), _m(SEND_B, 1, 0),
        _m(RECV_F, 1, 1), _c(F, 1, 1), _c(B, 1, 1), _m(SEND_B, 1, 1),
    ]
    out["deadlock_pytorch_issue_172668.json"] = _two_rank(
        [r0, r1], "pytorch/pytorch issue 172668",
        "deadlock-free (nccl): rank 0's SEND_F(stage 0, mb 1) sits on its comm stream before "
        "RECV_B(stage 0, mb 0), rank 1's SEND_B(stage 1, mb 0) before RECV_F(stage 1, mb 1): "
        "each send waits for a receive queued behind the other send. Verifies under eager",
    )

    # deadlock-free under both models: each rank blocks on a receive first
    r0 = [_c(F, 0, 0), Batch((_m(RECV_B, 0, 0),), wait=True), _m(SEND_F, 0, 0), _c(B, 0, 0)]
    r1 = [Batch((_m(RECV_F, 1, 0),), wait=True), _c(F, 1, 0), _c(B, 1, 0), _m(SEND_B, 1, 0)]
    out["deadlock_wait_before_send.json"] = _two_rank(
        [r0, r1], "both ranks wait on a receive first",
        "deadlock-free (nccl and eager): rank 0 waits for RECV_B(stage 0, mb 0) before posting "
        "SEND_F(stage 0, mb 0), which rank 1 waits for before it can compute the gradient",
        num_microbatches=1,
    )

    # overlap-legal: an OVERLAP whose backward half is a W
    acts = [
        [_c(F, 0, 0), _m(SEND_F, 0, 0), _m(RECV_B, 0, 0), _c(I, 0, 0),
         Overlap(_c(F, 0, 1), _c(W, 0, 0)), _m(SEND_F, 0, 1), _m(RECV_B, 0, 1), _c(B, 0, 1)],
        [_m(RECV_F, 1, 0), _c(F, 1, 0), _c(B, 1, 0), _m(SEND_B, 1, 0),
         _m(RECV_F, 1, 1), _c(F, 1, 1), _c(B, 1, 1), _m(SEND_B, 1, 1)],
    ]
    out["overlap_legal_w_half.json"] = _two_rank(
        acts, "OVERLAP with a W half",
        "overlap-legal: rank 0 step 4 overlaps F(stage 0, mb 1) with W(stage 0, mb 0); the "
        "second half of an OVERLAP must be a backward (B or I)",
    )

    # memory: GPipe keeps every micro-batch's activation live
    g = generate("gpipe", 2, 4)
    out["memory_gpipe_over_limit.json"] = g.with_actions(
        g.actions, name="gpipe 2 ranks 4 micro-batches, limit 2", family="gpipe",
        params={"broken": "memory: GPipe holds 4 activations on rank 0 (check with --memory-limit 2)",
                "memory_limit": 2},
    )
    return out


def files() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for fname, family, R, M, v, co in VALID:
        out[HERE / fname] = dumps_json(generate(family, R, M, num_chunks=v, compute_only=co))
    for fname, s in broken().items():
        out[HERE / "broken" / fname] = dumps_json(s)
    return out


def main(argv: list[str]) -> int:
    only_check = "--check" in argv
    stale = []
    for path, text in files().items():
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            stale.append(path)
            if not only_check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    for p in stale:
        print(f"{'stale' if only_check else 'wrote'} {p.relative_to(HERE.parent.parent)}")
    return 1 if (only_check and stale) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Generators: validity over a grid, fidelity to PyTorch and DeepSeek, the CLI.

- every family, compute-only, over a parameter grid: exactly-once, actions only
  on the owning rank, and a small dependency simulation that runs the per-rank
  orders with cross-rank data dependencies and must finish;
- compute orders against PyTorch pipelining's own order functions
  (``_get_pipeline_order`` / ``_calculate_single_rank_operations``);
- dualpipe / dualpipev compute orders against a second, separately written
  implementation of DeepSeek's 8 step() phases (below), ranks 2, 4, 8;
- the PyTorch artifact dualpipev_4rank_10mb.csv;
- DeepSeek-style communication: Batch(wait=True) before computes, FIFO message
  matching on every rank pair and no deadlock when every batch blocks;
- parameter errors and the ``generate`` command.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict, deque
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from verifier.generators import FAMILIES, generate
from verifier.ir import (
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    Schedule,
    ScheduleError,
    computes_of,
)

FIXTURES = Path(__file__).parent / "fixtures"

F, B, I, W = ComputeKind.F, ComputeKind.B, ComputeKind.I, ComputeKind.W  # noqa: E741


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def grid():
    """(family, ranks, microbatches, chunks) the generators must serve."""
    out = []
    for R in (1, 2, 3, 4, 5, 8):
        for M in (1, 2, 3, 4, 7, 8, 12, 16):
            for fam in ("gpipe", "1f1b", "zb-h1", "zbv"):
                out.append((fam, R, M, None))
            for v in (1, 2, 3):
                rounds = max(1, M // R)
                if M % rounds == 0:
                    out.append(("interleaved-1f1b", R, M, v))
    for R in (2, 4, 6, 8):
        for M in (2 * R, 2 * R + 2, 3 * R + R % 4, 4 * R + 6):
            if M % 2 == 0:
                out.append(("dualpipe", R, M, None))
    for R in (1, 2, 3, 4, 8):
        for M in (2 * R, 2 * R + 1, 3 * R + 1, 5 * R):
            out.append(("dualpipev", R, M, None))
    return out


def check_exactly_once_and_owner(s: Schedule) -> None:
    seen: dict[tuple[int, int], list[ComputeKind]] = defaultdict(list)
    for r, step, c in s.iter_computes():
        assert s.rank_of(c.stage) == r, f"rank {r} step {step}: {c} is not on this rank"
        seen[(c.stage, c.mb)].append(c.kind)
    expected = {
        (st, m) for route in s.routes for st in route.stages for m in route.microbatches
    }
    assert set(seen) == expected, f"missing {sorted(expected - set(seen))[:5]}, extra {sorted(set(seen) - expected)[:5]}"
    for key, kinds in seen.items():
        kinds = sorted(k.value for k in kinds)
        assert kinds in (["B", "F"], ["F", "I", "W"]), f"stage/mb {key}: {kinds}"


def simulate(s: Schedule) -> None:
    """Run every rank's compute order, each compute waiting for its data.

    F(s, m) needs F(prev(s), m); B/I(s, m) needs F(s, m) and the backward of
    next(s) (or nothing more at the last stage); W(s, m) needs I(s, m). Both
    halves of an Overlap must be ready before it starts (so neither may depend
    on the other). Fails, naming each rank's blocked action, if it gets stuck.
    """
    done: set[tuple[str, int, int]] = set()

    def key(c: Compute):
        return ("F" if c.kind is F else "W" if c.kind is W else "B", c.stage, c.mb)

    def ready(c: Compute) -> bool:
        if c.kind is F:
            p = s.prev_stage(c.stage)
            return p is None or ("F", p, c.mb) in done
        if c.kind is W:
            return ("B", c.stage, c.mb) in done
        n = s.next_stage(c.stage)
        return ("F", c.stage, c.mb) in done and (n is None or ("B", n, c.mb) in done)

    progs = [[a for a in acts if computes_of(a)] for acts in s.actions]
    pos = [0] * s.num_ranks
    progressed = True
    while progressed:
        progressed = False
        for r, prog in enumerate(progs):
            while pos[r] < len(prog):
                cs = computes_of(prog[pos[r]])
                if not all(ready(c) for c in cs):
                    break
                for c in cs:
                    done.add(key(c))
                pos[r] += 1
                progressed = True
    stuck = {r: str(progs[r][pos[r]]) for r in range(s.num_ranks) if pos[r] < len(progs[r])}
    assert not stuck, f"{s.name}: dependency deadlock, blocked at {stuck}"


def pt_str(c: Compute) -> str:
    return f"{c.stage}{c.kind.value}{c.mb}"


def pt_row(actions) -> list[str]:
    """Our compute actions as PyTorch pipelining action strings."""
    row = []
    for a in actions:
        if isinstance(a, Overlap):
            row.append(f"({pt_str(a.f)};{pt_str(a.b)})OVERLAP_F_B")
        elif isinstance(a, Compute):
            row.append(pt_str(a))
    return row


# --------------------------------------------------------------------------
# validity over the grid
# --------------------------------------------------------------------------


@pytest.mark.parametrize("family,R,M,v", grid())
def test_valid_compute_only(family, R, M, v):
    s = generate(family, R, M, num_chunks=v, compute_only=True)
    assert s.is_compute_only and s.family == family
    check_exactly_once_and_owner(s)
    simulate(s)


def test_families_listed():
    assert FAMILIES == ("gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zbv", "dualpipe", "dualpipev",
                        "interleaved-zb", "looped-bfs")


def test_placements():
    s = generate("dualpipe", 4, 8, compute_only=True)
    assert [(st.id, st.rank, st.layer) for st in s.stages] == [
        (0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 3, 0), (5, 2, 1), (6, 1, 2), (7, 0, 3)
    ]
    assert s.routes[0].stages == (0, 1, 2, 3) and s.routes[0].microbatches == (0, 1, 2, 3)
    assert s.routes[1].stages == (4, 5, 6, 7) and s.routes[1].microbatches == (4, 5, 6, 7)
    assert s.tied_layers == {0: (0, 4), 1: (1, 5), 2: (2, 6), 3: (3, 7)}
    v = generate("dualpipev", 3, 6, compute_only=True)
    assert [st.rank for st in v.stages] == [0, 1, 2, 2, 1, 0]
    assert [st.layer for st in v.stages] == list(range(6))
    il = generate("interleaved-1f1b", 3, 6, num_chunks=2, compute_only=True)
    assert [st.rank for st in il.stages] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("R,M", [(2, 4), (4, 8), (4, 10), (8, 16), (8, 48)])
def test_peak_activations(R, M):
    """1F1B's R-r, ZB-H1 equal to 1F1B, DualPipe R+1 chunks on every rank
    (the README's PP+1), DualPipeV 2R+1 half-size chunks."""
    from verifier.semantics.memory import peak_activations

    def peaks(fam):
        return peak_activations(generate(fam, R, M, compute_only=True))

    assert peaks("1f1b") == [float(min(R - r, M)) for r in range(R)]
    assert peaks("zb-h1") == peaks("1f1b")
    assert peaks("dualpipe") == [R + 1.0] * R
    assert peaks("dualpipev") == [2 * R + 1.0] * R


# --------------------------------------------------------------------------
# PyTorch pipelining's compute orders
# --------------------------------------------------------------------------


def _bare(cls, **attrs):
    obj = object.__new__(cls)
    for k, val in attrs.items():
        setattr(obj, k, val)
    return obj


def _pt_compute_row(actions) -> list[str]:
    return [
        str(a) for a in actions
        if a is not None and a.computation_type.value in ("F", "B", "I", "W", "OVERLAP_F_B")
    ]


@pytest.mark.parametrize("R,M", [(1, 3), (2, 2), (2, 5), (3, 3), (4, 4), (4, 9), (8, 8), (8, 20)])
def test_gpipe_1f1b_match_pytorch(R, M):
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    for fam, cls in (("gpipe", sch.ScheduleGPipe), ("1f1b", sch.Schedule1F1B)):
        order = _bare(cls, _num_stages=R, _n_microbatches=M)._get_pipeline_order()
        ours = generate(fam, R, M, compute_only=True)
        for r in range(R):
            if fam == "1f1b" and r == R - 1:
                # PyTorch's _get_pipeline_order numbers the last rank's forwards
                # from 1 (off by one when there is no warm-up); its runtime runs
                # F0 B0 F1 B1 ..., as we do.
                assert pt_row(ours.actions[r]) == [
                    x for m in range(M) for x in (f"{r}F{m}", f"{r}B{m}")
                ]
                continue
            assert pt_row(ours.actions[r]) == _pt_compute_row(order[r]), (fam, r)


@pytest.mark.parametrize("R,M,v", [(2, 4, 2), (4, 8, 2), (4, 12, 3), (4, 10, 2), (4, 3, 2), (3, 9, 4), (8, 16, 2)])
def test_interleaved_matches_pytorch(R, M, v):
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    rounds = max(1, M // R)
    obj = _bare(
        sch.ScheduleInterleaved1F1B, pp_group_size=R, n_local_stages=v,
        _n_microbatches=M, number_of_rounds=rounds, microbatches_per_round=M // rounds,
    )
    ours = generate("interleaved-1f1b", R, M, num_chunks=v, compute_only=True)
    for r in range(R):
        assert pt_row(ours.actions[r]) == _pt_compute_row(obj._calculate_single_rank_operations(r))


@pytest.mark.parametrize("R,M", [(2, 2), (2, 6), (4, 4), (4, 8), (4, 12), (8, 16), (8, 5)])
def test_zbh1_matches_pytorch_zb1p(R, M):
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    rounds = max(1, M // R)
    obj = _bare(
        sch.ScheduleInterleavedZeroBubble, pp_group_size=R, n_local_stages=1,
        _n_microbatches=M, number_of_rounds=rounds, microbatches_per_round=M // rounds,
    )
    ours = generate("zb-h1", R, M, compute_only=True)
    for r in range(R):
        assert pt_row(ours.actions[r]) == _pt_compute_row(obj._calculate_single_rank_operations(r))


@pytest.mark.parametrize("R,M", [(1, 1), (2, 1), (2, 3), (2, 8), (4, 2), (4, 7), (4, 8), (4, 16), (8, 24)])
def test_zbv_matches_pytorch(R, M):
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    obj = _bare(sch.ScheduleZBVZeroBubble, pp_group_size=R, num_stages=2 * R, _n_microbatches=M)
    ours = generate("zbv", R, M, compute_only=True)
    for r in range(R):
        assert pt_row(ours.actions[r]) == _pt_compute_row(obj._calculate_single_rank_operations(r))


@pytest.mark.parametrize("R,M", [(1, 2), (2, 4), (2, 5), (4, 8), (4, 10), (8, 16), (8, 21)])
def test_dualpipev_matches_pytorch(R, M):
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    obj = _bare(sch.ScheduleDualPipeV, pp_group_size=R, _n_microbatches=M)
    ours = generate("dualpipev", R, M, compute_only=True)
    for r in range(R):
        assert pt_row(ours.actions[r]) == _pt_compute_row(obj._calculate_single_rank_operations(r))


def _pytorch_multi(cls, R: int, M: int, v: int):
    """A PyTorch multi-stage schedule object for rank 0, built by its real
    constructor on stand-in stages carrying only what it reads; its
    ``pipeline_order`` has every rank's order (nothing runs)."""
    import types
    import warnings

    stages = [types.SimpleNamespace(
        num_stages=R * v, group_size=R, group_rank=0, stage_index=k * R, is_first=k == 0,
        is_last=k == v - 1 and R == 1, stage_index_to_group_rank=None, submod=None)
        for k in range(v)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(stages, M)


@pytest.mark.parametrize("R,M,v", [(1, 1, 1), (2, 2, 1), (2, 4, 2), (4, 8, 2), (4, 12, 3),
                                   (4, 10, 2), (4, 3, 2), (3, 9, 4), (8, 16, 2), (4, 4, 1)])
def test_interleaved_zb_matches_pytorch(R, M, v):
    """Compute order == ScheduleInterleavedZeroBubble's pipeline_order (after its
    _add_bubbles_to_actions, which only inserts idle slots), rank by rank."""
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    order = _pytorch_multi(sch.ScheduleInterleavedZeroBubble, R, M, v).pipeline_order
    ours = generate("interleaved-zb", R, M, num_chunks=v, compute_only=True)
    assert ours.family == "interleaved-zb" and ours.num_stages == R * v
    for r in range(R):
        assert pt_row(ours.actions[r]) == _pt_compute_row(order[r]), r
    if v == 1:  # ZB1P with one stage per rank is our zb-h1
        assert ours.actions == generate("zb-h1", R, M, compute_only=True).actions


@pytest.mark.parametrize("R,M,v", [(1, 1, 1), (2, 2, 1), (2, 4, 2), (4, 8, 2), (4, 3, 3),
                                   (3, 7, 4), (8, 16, 2)])
def test_looped_bfs_matches_pytorch(R, M, v):
    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    order = _pytorch_multi(sch.ScheduleLoopedBFS, R, M, v).pipeline_order
    ours = generate("looped-bfs", R, M, num_chunks=v, compute_only=True)
    for r in range(R):
        assert pt_row(ours.actions[r]) == _pt_compute_row(order[r]), r


def test_pytorch_class_names_are_aliases():
    """Every name torch's get_schedule_class knows for a family we generate,
    with or without 'Schedule', any case, gives that family."""
    from verifier.generators import ALIASES, resolve_family

    sch = pytest.importorskip("torch.distributed.pipelining.schedules")
    want = {"GPipe": "gpipe", "1F1B": "1f1b", "Interleaved1F1B": "interleaved-1f1b",
            "ZBVZeroBubble": "zbv", "DualPipeV": "dualpipev",
            "InterleavedZeroBubble": "interleaved-zb", "LoopedBFS": "looped-bfs"}
    for name, fam in want.items():
        cls = sch.get_schedule_class(name)  # torch knows the name
        assert cls.__name__ == "Schedule" + name
        for spelling in (name, name.lower(), name.upper(), cls.__name__, cls.__name__.lower()):
            assert resolve_family(spelling) == fam, spelling
    assert sorted(ALIASES) == sorted(n.lower() for n in want)
    for fam in FAMILIES:
        assert resolve_family(fam) == fam and resolve_family(fam.upper()) == fam
    with pytest.raises(ScheduleError, match="unknown schedule family 'PipelineScheduleMulti'"):
        resolve_family("PipelineScheduleMulti")
    a = generate("ScheduleInterleaved1F1B", 4, 8, num_chunks=2, compute_only=True)
    assert a == generate("interleaved-1f1b", 4, 8, num_chunks=2, compute_only=True)


def test_generate_cli_accepts_pytorch_names(tmp_path):
    from verifier.cli.app import main

    for name, fam in (("ScheduleLoopedBFS", "looped-bfs"), ("interleavedzerobubble", "interleaved-zb"),
                      ("DualPipeV", "dualpipev"), ("schedule1f1b", "1f1b")):
        out, err = io.StringIO(), io.StringIO()
        assert main(["generate", name, "--ranks", "2", "--microbatches", "4"], out, err) == 0, err
        assert json.loads(out.getvalue())["family"] == fam
    out, err = io.StringIO(), io.StringIO()
    assert main(["generate", "Zero", "--ranks", "2", "--microbatches", "4"], out, err) == 2
    assert err.getvalue().count("\n") == 1 and "unknown schedule family 'Zero'" in err.getvalue()


def test_dualpipev_pytorch_artifact():
    """PyTorch's test artifact dualpipev_4rank_10mb.csv, byte for byte."""
    expected = (FIXTURES / "dualpipev_4rank_10mb.csv").read_text()
    s = generate("dualpipev", 4, 10, compute_only=True)
    ours = "".join(",".join(pt_row(acts)) + "\n" for acts in s.actions)
    assert ours == expected
    try:
        from verifier.format.csvio import schedule_to_csv
    except ImportError:
        return
    # line endings aside (Python's csv module writes \r\n), the same text
    assert schedule_to_csv(s, compute_only=True).splitlines() == expected.splitlines()


# --------------------------------------------------------------------------
# DeepSeek's phases, written a second time, plainly
# --------------------------------------------------------------------------


def deepseek_phase_program(n: int, h: int, chunks: int, turn: bool) -> list[tuple]:
    """The 8 phases of DeepSeek's step() as tokens over local chunks 0 and 1.

    DualPipe: n = R/2, h = min(r, R-1-r), chunks = M/2, turn = middle rank.
    DualPipeV: n = R, h = r, chunks = M, turn = last rank.
    Tokens: ("F", c), ("B", c), ("I", c), ("W",), ("FB", cf, cb).
    """
    prog: list[tuple] = []
    prog += [("F", 0)] * (2 * (n - h - 1))                       # 1: nF0
    prog += [("F", 0), ("F", 1)] * (h + 1)                       # 2: nF0F1
    prog += [("I", 1), ("W",), ("F", 1)] * (n - h - 1)           # 3: nB1W1F1
    main = chunks - 2 * n + h + 1                                # 4: nF0B1F1B0
    for i in range(main):
        prog += [("F", 0), ("B", 1)] if (i == 0 and turn) else [("FB", 0, 1)]
        prog.append(("FB", 1, 0))
    prog += [("B", 1), ("FB", 1, 0)] * (n - h - 1)               # 5: nB1F1B0
    k = h + 1                                                    # 6: nB1B0
    for i in range(k):
        # zero bubble from the middle: B1 switches at i == k//2 for odd h,
        # B0 at i == k//2 for even h (so B1 switches one step later)
        z1 = i > k // 2 or (i == k // 2 and h % 2 == 1)
        z0 = i >= k // 2
        prog += [("I" if z1 else "B", 1), ("I" if z0 else "B", 0)]
    prog += [("W",), ("I", 0)] * (n - h - 1)                     # 7: nWB0
    prog += [("W",)] * (h + 1)                                   # 8: nW
    return prog


def expand(prog, stage_of, mb0) -> list:
    """Tokens -> computes with per-chunk counters and a FIFO of pending Ws."""
    nf, nb = [0, 0], [0, 0]
    pending: deque = deque()
    out = []

    def fwd(c):
        nf[c] += 1
        return Compute(F, stage_of[c], mb0[c] + nf[c] - 1)

    def bwd(c, kind):
        nb[c] += 1
        comp = Compute(kind, stage_of[c], mb0[c] + nb[c] - 1)
        if kind is I:
            pending.append(comp)
        return comp

    for t in prog:
        if t[0] == "F":
            out.append(fwd(t[1]))
        elif t[0] in ("B", "I"):
            out.append(bwd(t[1], ComputeKind(t[0])))
        elif t[0] == "W":
            i = pending.popleft()
            out.append(Compute(W, i.stage, i.mb))
        else:
            out.append(Overlap(fwd(t[1]), bwd(t[2], B)))
    assert not pending
    return out


def independent_dualpipe(R: int, M: int, v: bool) -> list[list]:
    out = []
    for r in range(R):
        if v:
            prog = deepseek_phase_program(R, r, M, r == R - 1)
            out.append(expand(prog, (r, 2 * R - 1 - r), (0, 0)))
        else:
            prog = deepseek_phase_program(R // 2, min(r, R - 1 - r), M // 2, r in (R // 2 - 1, R // 2))
            down, up = (r, 0), (2 * R - 1 - r, M // 2)  # (stage, first micro-batch)
            first, second = (down, up) if r < R // 2 else (up, down)
            out.append(expand(prog, (first[0], second[0]), (first[1], second[1])))
    return out


@pytest.mark.parametrize("R", [2, 4, 8])
@pytest.mark.parametrize("family", ["dualpipe", "dualpipev"])
def test_dualpipe_orders_match_independent_phases(family, R):
    for M in (2 * R, 2 * R + 6):
        s = generate(family, R, M, compute_only=True)
        want = independent_dualpipe(R, M, family == "dualpipev")
        for r in range(R):
            assert list(s.actions[r]) == want[r], (family, R, M, r)


# --------------------------------------------------------------------------
# communication
# --------------------------------------------------------------------------


def run_blocking_batches(s: Schedule) -> None:
    """Every Batch blocks until all of its ops complete; an op completes when
    its FIFO partner (k-th send a->b with k-th receive on b from a) is posted.
    Checks the payloads of matched pairs and that the run ends with nothing
    unmatched."""
    chan_send: dict = defaultdict(list)  # (src, dst) -> [(op, rank, step)]
    chan_recv: dict = defaultdict(list)
    index_of: dict = {}
    for r, acts in enumerate(s.actions):
        for step, a in enumerate(acts):
            for op in (a.ops if isinstance(a, Batch) else ((a,) if isinstance(a, Comm) else ())):
                peer = s.peer_of(op)
                assert peer is not None and peer != r, f"rank {r} step {step}: {op} has no remote peer"
                ch = (r, peer) if op.kind.is_send else (peer, r)
                lst = chan_send[ch] if op.kind.is_send else chan_recv[ch]
                index_of[(r, step, op)] = (ch, op.kind.is_send, len(lst))
                lst.append((op, r, step))
    for ch in set(chan_send) | set(chan_recv):
        sends, recvs = chan_send[ch], chan_recv[ch]
        assert len(sends) == len(recvs), f"channel {ch}: {len(sends)} sends, {len(recvs)} receives"
        for (so, _, _), (ro, _, _) in zip(sends, recvs):
            assert s.matching_op(so) == ro, f"channel {ch}: {so} matched with {ro}"
    posted: set = set()
    pos = [0] * s.num_ranks
    progressed = True
    while progressed:
        progressed = False
        for r, acts in enumerate(s.actions):
            while pos[r] < len(acts):
                a = acts[pos[r]]
                if isinstance(a, Batch):
                    posted.add((r, pos[r]))
                    ok = True
                    for op in a.ops:
                        ch, is_send, k = index_of[(r, pos[r], op)]
                        _, pr, pstep = (chan_recv if is_send else chan_send)[ch][k]
                        ok &= (pr, pstep) in posted
                    if not ok:
                        break
                pos[r] += 1
                progressed = True
    stuck = {r: str(s.actions[r][pos[r]]) for r in range(s.num_ranks) if pos[r] < len(s.actions[r])}
    assert not stuck, f"{s.name}: blocked at {stuck}"


@pytest.mark.parametrize("family,R,M", [
    ("dualpipe", 2, 4), ("dualpipe", 4, 8), ("dualpipe", 4, 14), ("dualpipe", 8, 20),
    ("dualpipev", 1, 2), ("dualpipev", 2, 5), ("dualpipev", 4, 10), ("dualpipev", 8, 19),
])
def test_deepseek_communication(family, R, M):
    s = generate(family, R, M)
    plain = generate(family, R, M, compute_only=True)
    # same computes; every batch waits and sits right before a compute, or ends the list
    assert [list(filter(computes_of, acts)) for acts in s.actions] == [list(a) for a in plain.actions]
    for acts in s.actions:
        for i, a in enumerate(acts):
            if isinstance(a, Batch):
                assert a.wait and a.ops
                assert i == len(acts) - 1 or computes_of(acts[i + 1])
            else:
                assert not isinstance(a, Comm)
    run_blocking_batches(s)


def run_nccl_model(s: Schedule) -> None:
    """design.md's `nccl` model, simply: each rank's batches run one at a time in
    post order on its communication stream (a batch starts once posted and all
    earlier ones completed); a send and its FIFO-matched receive complete
    together, once both their batches have started; a batch completes when all
    its ops have. A compute waits for the receives it consumes; a wait=True
    batch blocks its rank until it completes. A send must be posted after the
    compute that produces its data."""
    ops_of: dict = {}  # (rank, step) -> [op keys]
    partner: dict = {}
    chans: dict = defaultdict(lambda: ([], []))
    recv_at: dict = {}
    for r, acts in enumerate(s.actions):
        for step, a in enumerate(acts):
            if not isinstance(a, Batch):
                continue
            ops_of[(r, step)] = []
            for j, op in enumerate(a.ops):
                k = (r, step, j)
                ops_of[(r, step)].append(k)
                peer = s.peer_of(op)
                ch = (r, peer) if op.kind.is_send else (peer, r)
                chans[ch][0 if op.kind.is_send else 1].append(k)
                if not op.kind.is_send:
                    recv_at[(r, op.kind, op.stage, op.mb)] = (r, step)
    for sends, recvs in chans.values():
        assert len(sends) == len(recvs)
        for a, b in zip(sends, recvs):
            partner[a], partner[b] = b, a
    batches = [[i for i, a in enumerate(acts) if isinstance(a, Batch)] for acts in s.actions]
    head = [0] * s.num_ranks
    pos = [0] * s.num_ranks
    done: set = set()  # computes run, as ("F"|"B"|"W", stage, mb)
    op_done: set = set()
    complete: set = set()

    def running(r, step):
        return head[r] < len(batches[r]) and batches[r][head[r]] == step and step <= pos[r]

    progressed = True
    while progressed:
        progressed = False
        for r, acts in enumerate(s.actions):
            while pos[r] < len(acts):
                a = acts[pos[r]]
                if isinstance(a, Batch):
                    for op in a.ops:
                        if op.kind.is_send:
                            need = ("F" if op.kind is CommKind.SEND_F else "B", op.stage, op.mb)
                            assert need in done, f"rank {r} step {pos[r]}: {op} posted before its data"
                    if a.wait and (r, pos[r]) not in complete:
                        break
                else:
                    ok = True
                    for c in computes_of(a):
                        if c.kind is not W:
                            kind = CommKind.RECV_F if c.kind is F else CommKind.RECV_B
                            at = recv_at.get((r, kind, c.stage, c.mb))
                            ok &= at is None or at in complete
                    if not ok:
                        break
                    for c in computes_of(a):
                        done.add(("F" if c.kind is F else "W" if c.kind is W else "B", c.stage, c.mb))
                pos[r] += 1
                progressed = True
        for r in range(s.num_ranks):
            if head[r] >= len(batches[r]) or not running(r, batches[r][head[r]]):
                continue
            step = batches[r][head[r]]
            for k in ops_of[(r, step)]:
                pr, pstep, _ = partner[k]
                if running(pr, pstep):
                    op_done.add(k)
                    op_done.add(partner[k])
        for r in range(s.num_ranks):
            while head[r] < len(batches[r]) and running(r, batches[r][head[r]]) and all(
                k in op_done for k in ops_of[(r, batches[r][head[r]])]
            ):
                complete.add((r, batches[r][head[r]]))
                head[r] += 1
                progressed = True
    stuck = {r: str(s.actions[r][pos[r]]) for r in range(s.num_ranks) if pos[r] < len(s.actions[r])}
    assert not stuck, f"{s.name}: nccl model deadlock, blocked at {stuck}"


@pytest.mark.parametrize("family,R,M,v", [x for x in grid() if x[1] <= 4 and x[2] >= 2])
def test_nccl_model_no_deadlock(family, R, M, v):
    run_nccl_model(generate(family, R, M, num_chunks=v))


@pytest.mark.parametrize("family", ["gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zbv"])
def test_other_families_use_shared_lowering(family):
    from verifier.semantics.lowering import lower

    plain = generate(family, 4, 8, compute_only=True)
    assert generate(family, 4, 8) == lower(plain)


# --------------------------------------------------------------------------
# parameter errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (("dualpipe", 3, 6), "dualpipe needs an even number of ranks, got 3"),
    (("dualpipe", 4, 7), "dualpipe needs num_microbatches >= 2*num_ranks and even, got num_microbatches=7 with num_ranks=4"),
    (("dualpipe", 4, 6), "dualpipe needs num_microbatches >= 2*num_ranks and even, got num_microbatches=6 with num_ranks=4"),
    (("dualpipev", 4, 7), "dualpipev needs num_microbatches >= 2*num_ranks, got num_microbatches=7 with num_ranks=4"),
    (("1f1b", 0, 4), "1f1b needs num_ranks >= 1, got 0"),
    (("zbv", 2, 0), "zbv needs num_microbatches >= 1, got 0"),
    (("pipedream", 2, 4), "unknown schedule family 'pipedream'"),
    (("interleaved-1f1b", 2, 5), "multiple of the number of rounds max(1, num_microbatches // num_ranks) = 2, got num_microbatches=5 with num_ranks=2"),
])
def test_bad_parameters(args, message):
    with pytest.raises(ScheduleError) as e:
        generate(*args)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("family,chunks", [("1f1b", 2), ("dualpipe", 3), ("zbv", 1), ("interleaved-1f1b", 0)])
def test_bad_chunks(family, chunks):
    with pytest.raises(ScheduleError, match=f"got {chunks}"):
        generate(family, 4, 8, num_chunks=chunks)


# --------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------


def _cli(argv):
    from verifier.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    rc = main(argv, out, err)
    return rc, out.getvalue(), err.getvalue()


def test_cli_generate_stdout_roundtrip():
    from verifier.format.io import parse_json_text

    rc, out, err = _cli(["generate", "dualpipe", "--ranks", "4", "--microbatches", "10"])
    assert rc == 0 and err == ""
    json.loads(out)
    assert parse_json_text(out) == generate("dualpipe", 4, 10)


def test_cli_generate_to_file(tmp_path):
    from verifier.format.io import load_schedule

    path = tmp_path / "s.json"
    rc, out, err = _cli(["generate", "interleaved-1f1b", "--ranks", "2", "--microbatches", "4",
                         "--chunks", "3", "--compute-only", "-o", str(path)])
    assert (rc, out, err) == (0, "", "")
    assert load_schedule(path) == generate("interleaved-1f1b", 2, 4, num_chunks=3, compute_only=True)


@pytest.mark.parametrize("argv,needle", [
    (["generate", "dualpipe", "--ranks", "3", "--microbatches", "6"], "even number of ranks, got 3"),
    (["generate", "dualpipev", "--ranks", "4", "--microbatches", "5"], "num_microbatches=5"),
    (["generate", "nope", "--ranks", "4", "--microbatches", "5"], "nope"),
    (["generate", "1f1b", "--ranks", "x", "--microbatches", "5"], "x"),
])
def test_cli_generate_bad_params(argv, needle):
    rc, out, err = _cli(argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


# --------------------------------------------------------------------------
# any parameters: a valid schedule or a ScheduleError naming the values
# --------------------------------------------------------------------------


@given(
    family=st.sampled_from(FAMILIES),
    R=st.integers(min_value=1, max_value=8),
    M=st.integers(min_value=1, max_value=40),
    v=st.one_of(st.none(), st.integers(min_value=1, max_value=4)),
)
def test_any_parameters(family, R, M, v):
    try:
        s = generate(family, R, M, num_chunks=v, compute_only=True)
    except ScheduleError as e:
        assert str(R) in str(e) or str(M) in str(e) or str(v) in str(e)
        return
    check_exactly_once_and_owner(s)
    simulate(s)

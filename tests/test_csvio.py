"""PyTorch pipelining CSV interop (verifier.format.csvio, `convert`) and format round trips.

Covers: PyTorch's own artifacts read, inferred and written back byte for byte;
our CSV cells parsed by PyTorch's ``_Action.from_str`` and our inferred
placement agreeing with PyTorch's ``_validate_schedule``; JSON -> CSV -> JSON
and JSON -> JSON round trips (hypothesis) over every generator and over small
random schedules; the refusals for what CSV cannot express; the `convert` CLI.

Not covered: the bad-input corpus (tests/test_bad_input.py).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, strategies as st

from verifier.cli.app import main
from verifier.format.csvio import (
    PARAMS_KEY,
    csv_to_schedule,
    flatten_batches,
    fsdp_cells,
    schedule_to_csv,
)
from verifier.generators import FAMILIES, generate
from verifier.format.io import dumps_json, load_schedule, parse_json_text
from verifier.ir import (
    Batch,
    Comm,
    CommKind,
    Compute,
    ComputeKind,
    Overlap,
    Route,
    Schedule,
    ScheduleError,
    Stage,
)
from verifier.semantics.lowering import strip_communication

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent
# PyTorch's artifacts (pytorch/pytorch test/distributed/pipelining/artifacts)
ARTIFACTS = {
    "dualpipev_4rank_10mb.csv": (4, 8, 10, {0: 0, 1: 1, 2: 2, 3: 3, 4: 3, 5: 2, 6: 1, 7: 0}),
    "zb1p_2rank_2stagep_compute.csv": (2, 4, 8, {0: 0, 1: 1, 2: 0, 3: 1}),
    "zb1p_2rank_2stagep_comms.csv": (2, 4, 8, {0: 0, 1: 1, 2: 0, 3: 1}),
}


def core(s: Schedule):
    """Everything a CSV can express (name, family and other params are not)."""
    idle = s.params.get(PARAMS_KEY) if s.params else None
    return (
        s.num_ranks,
        s.num_microbatches,
        tuple(sorted(s.stages, key=lambda x: x.id)),
        s.routes,
        s.actions,
        idle,
    )


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = main([str(a) for a in argv], out, err)
    return rc, out.getvalue(), err.getvalue()


# ------------------------------------------------------------ PyTorch artifacts


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_artifact_csv_json_csv_is_identical_text(name):
    text = (FIXTURES / name).read_text()
    ranks, stages, mbs, placement = ARTIFACTS[name]
    s = csv_to_schedule(text, source=name)
    assert (s.num_ranks, s.num_stages, s.num_microbatches) == (ranks, stages, mbs)
    assert {st.id: st.rank for st in s.stages} == placement
    assert all(st.layer == st.id for st in s.stages)
    assert s.routes == (Route(tuple(range(stages)), tuple(range(mbs))),)
    back = parse_json_text(dumps_json(s))
    assert schedule_to_csv(back) == text


def test_artifact_details():
    s = load_schedule(FIXTURES / "dualpipev_4rank_10mb.csv")
    assert s.actions[0][17] == Overlap(Compute(ComputeKind.F, 0, 7), Compute(ComputeKind.B, 7, 3))
    s = load_schedule(FIXTURES / "zb1p_2rank_2stagep_compute.csv")
    assert s.is_compute_only
    assert s.params[PARAMS_KEY] == {"form": "compute_only", "idle": {"0": [3], "1": [0]}}
    assert s.actions[1][0] == Compute(ComputeKind.F, 1, 0)
    s = load_schedule(FIXTURES / "zb1p_2rank_2stagep_comms.csv")
    assert not s.is_compute_only and s.params == {}
    assert s.actions[0][1] == Comm(CommKind.SEND_F, 0, 0)
    assert s.actions[1][0] == Comm(CommKind.RECV_F, 1, 0)
    # without idle cells in the other form, the compute_only skeleton of the
    # comms artifact is the compute artifact minus its idle slots
    comp = load_schedule(FIXTURES / "zb1p_2rank_2stagep_compute.csv")
    skel = strip_communication(s)
    assert [[c for c in r if c.kind is ComputeKind.F] for r in skel.actions] == [
        [c for c in r if c.kind is ComputeKind.F] for r in comp.actions
    ]


def test_crlf_is_kept_and_whitespace_accepted():
    text = (FIXTURES / "zb1p_2rank_2stagep_comms.csv").read_text()
    crlf = text.replace("\n", "\r\n")
    s = csv_to_schedule(crlf)
    assert s.actions == csv_to_schedule(text).actions
    assert s.params[PARAMS_KEY] == {"form": "compute_comms", "newline": "\r\n"}
    assert schedule_to_csv(parse_json_text(dumps_json(s))) == crlf
    s2 = csv_to_schedule(" 0F0 , 1F0\n")
    assert s2.actions == ((Compute(ComputeKind.F, 0, 0), Compute(ComputeKind.F, 1, 0)),)


# ------------------------------------------------------------ agreement with PyTorch


def _torch():
    return pytest.importorskip("torch.distributed.pipelining.schedules")


def _our_csvs():
    for name in sorted(ARTIFACTS):
        yield name, (FIXTURES / name).read_text()
    for fam in FAMILIES:
        if fam == "dualpipe":
            continue
        for R, M in ((2, 4), (4, 8)):
            yield f"{fam}-{R}-{M}-compute", schedule_to_csv(generate(fam, R, M, compute_only=True))
            yield f"{fam}-{R}-{M}-comms", schedule_to_csv(
                generate(fam, R, M), flatten_batches=True
            )


def test_pytorch_parses_every_cell_as_we_do():
    sched = _torch()
    n = 0
    for name, text in _our_csvs():
        ours = csv_to_schedule(text, source=name)
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert len(rows) == ours.num_ranks
        for rank, row in enumerate(rows):
            theirs = [sched._Action.from_str(c) for c in row]
            theirs = [a for a in theirs if a is not None]
            assert len(theirs) == len(ours.actions[rank]), name
            for a, b in zip(theirs, ours.actions[rank]):
                n += 1
                if isinstance(b, Overlap):
                    assert a.computation_type.value == "OVERLAP_F_B"
                    got = [(x.stage_index, x.computation_type.value, x.microbatch_index)
                           for x in a.sub_actions]
                    assert got == [(b.f.stage, b.f.kind.value, b.f.mb),
                                   (b.b.stage, b.b.kind.value, b.b.mb)]
                else:
                    assert (a.stage_index, a.computation_type.value, a.microbatch_index) == (
                        b.stage, b.kind.value, b.mb), name
        # PyTorch's own writer (csv.writer over _Action) gives our text
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            [[sched._Action.from_str(c) for c in row] for row in rows]
        )
        assert buf.getvalue() == text, name
    assert n > 1000


def test_pytorch_infers_the_same_placement():
    sched = _torch()
    for name, text in _our_csvs():
        ours = csv_to_schedule(text, source=name)
        if not ours.is_compute_only:
            continue
        rows = list(csv.reader(io.StringIO(text, newline="")))
        actions = {r: [sched._Action.from_str(c) for c in row] for r, row in enumerate(rows)}
        mapping = sched._validate_schedule(
            actions, ours.num_ranks, ours.num_stages, ours.num_microbatches
        )
        assert mapping == {st.id: st.rank for st in ours.stages}, name


def _pytorch_dumps():
    """CSV text written by PyTorch's own schedule classes (``_dump_csv``, both forms).

    The schedules are built on stand-in stage objects carrying only what the
    constructors read (indices, sizes); nothing runs.
    """
    import types
    import warnings

    sched = _torch()
    out = []
    classes = [
        (sched.ScheduleInterleaved1F1B, False), (sched.ScheduleLoopedBFS, False),
        (sched.ScheduleInterleavedZeroBubble, False), (sched.ScheduleZBVZeroBubble, True),
        (sched.ScheduleDualPipeV, True),
    ]
    for cls, v in classes:
        for R, M in ((2, 4), (4, 8), (4, 12)):
            n = 2 * R
            idx = [0, n - 1] if v else [0, R]  # the stages of rank 0
            stages = [types.SimpleNamespace(
                num_stages=n, group_size=R, group_rank=0, stage_index=i, is_first=i == 0,
                is_last=i == n - 1, stage_index_to_group_rank=None, submod=None) for i in idx]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                schedule = cls(stages, M)
            for form in ("compute_only", "compute_comms"):
                buf = io.StringIO()
                # what _dump_csv does, into memory
                rows = (schedule.pipeline_order if form == "compute_only"
                        else schedule.pipeline_order_with_comms)
                w = csv.writer(buf)
                for rank in rows:
                    w.writerow(rows[rank])
                out.append((f"{cls.__name__}-{R}-{M}-{form}", form, buf.getvalue(),
                            dict(schedule.stage_index_to_group_rank)))
    return out


def test_pytorch_dumps_read_and_written_back():
    fsdp = ("UNSHARD", "RESHARD", "REDUCE_GRAD")
    dumps = _pytorch_dumps()
    assert len(dumps) == 30
    for name, form, text, placement in dumps:
        assert text.endswith("\r\n"), name  # csv.writer's default
        s = csv_to_schedule(text, source=name)  # FSDP cells and all
        assert schedule_to_csv(parse_json_text(dumps_json(s))) == text, name
        n_fsdp = sum(c.endswith(fsdp) for c in text.replace("\r\n", ",").split(","))
        assert fsdp_cells(s) == n_fsdp, name
        if form == "compute_comms":
            assert n_fsdp > 0, name  # PyTorch's runtime adds UNSHARD/RESHARD to every dump
            d = csv_to_schedule(text, source=name, drop_fsdp=True)
            kept = "".join(
                ",".join(c for c in line.split(",") if not c.endswith(fsdp)) + "\r\n"
                for line in text.split("\r\n")[:-1]
            )
            assert not s.is_compute_only and fsdp_cells(d) == 0
            assert schedule_to_csv(d) == kept, name
            assert d.actions == s.actions, name  # the FSDP cells are no actions
        assert {st.id: st.rank for st in s.stages} == placement, name


def test_every_pytorch_dump_checks_directly(tmp_path):
    """`check` on PyTorch's own dumps, FSDP cells included: a verdict (never exit 2),
    the same as with the FSDP cells dropped, and a note saying they were no-ops."""
    from verifier.check.checker import check

    for name, form, text, _ in _pytorch_dumps():
        path = tmp_path / f"{name}.csv"
        path.write_text(text, newline="")
        rc, out, err = run_cli(["check", path, "--engine", "graph", "--comm-model", "eager"])
        assert rc == 0, (name, out, err)
        n = fsdp_cells(csv_to_schedule(text))
        notes = [line for line in out.splitlines() if line.startswith("note: ")]
        if n:
            assert notes == [f"note: {n} PyTorch FSDP cells (UNSHARD, RESHARD, REDUCE_GRAD) "
                             "read as no-ops: data-parallel collectives that move nothing "
                             "between pipeline ranks; not checked"], (name, out)
        else:
            assert notes == [], name
        if form == "compute_comms":
            for model in ("nccl", "eager"):
                a = check(csv_to_schedule(text), comm_model=model, engine="graph")
                b = check(csv_to_schedule(text, drop_fsdp=True), comm_model=model, engine="graph")
                assert a.verdict == b.verdict, (name, model)
    zbv = tmp_path / "ScheduleZBVZeroBubble-2-4-compute_comms.csv"
    rc, out, err = run_cli(["check", zbv, "--format", "json", "--engine", "graph"])
    doc = json.loads(out)
    n = fsdp_cells(load_schedule(zbv))
    assert n > 0 and doc["notes"] == [
        f"{n} PyTorch FSDP cells (UNSHARD, RESHARD, REDUCE_GRAD) read as no-ops: "
        "data-parallel collectives that move nothing between pipeline ranks; not checked"]


def test_schedule_1f1b_dump_checks_directly(tmp_path):
    """PyTorch's Schedule1F1B puts REDUCE_GRAD into its compute-only order, and
    (torch 2.13) numbers the last rank's forwards from 1: its dump checks
    directly and is REFUTED with that place named, not refused as bad input."""
    import types

    sched = _torch()
    for R, M in ((2, 4), (4, 8)):
        stage = types.SimpleNamespace(num_stages=R, group_size=R, group_rank=0,
                                      stage_index=0, is_first=True, is_last=R == 1)
        order = sched.Schedule1F1B(stage, M).pipeline_order
        buf = io.StringIO()
        w = csv.writer(buf)
        for rank in order:
            w.writerow(order[rank])
        text = buf.getvalue()
        assert "REDUCE_GRAD" in text
        path = tmp_path / f"1f1b-{R}-{M}.csv"
        path.write_text(text, newline="")
        rc, out, err = run_cli(["check", path])
        assert err == "" and f"note: {R} PyTorch FSDP cells" in out
        s = csv_to_schedule(text)
        assert schedule_to_csv(s) == text
        last = order[R - 1]
        if str(last[0]) == f"{R - 1}F0":  # a fixed torch: the dump is a correct 1F1B
            assert rc == 0 and out.startswith("VERIFIED"), out
        else:  # torch 2.13: the last rank runs F of micro-batches 1..M, never 0
            assert str(last[0]) == f"{R - 1}F1"
            assert rc == 1 and out.startswith("REFUTED"), out
            assert f"[exactly-once] {R - 1}F0 never runs" in out, out


# ------------------------------------------------------------ generators round trip


def _gen_params():
    @st.composite
    def draw(d):
        fam = d(st.sampled_from(FAMILIES))
        if fam == "dualpipe":
            R = d(st.sampled_from([2, 4, 6]))
            M = 2 * d(st.integers(R, 2 * R))
        else:
            R = d(st.integers(1, 6))
            M = d(st.integers(1, 16))
        chunks = d(st.sampled_from([None, 2, 3])) if fam == "interleaved-1f1b" else None
        return fam, R, M, chunks, d(st.booleans())

    return draw()


def _generate(fam, R, M, chunks, compute_only):
    try:
        return generate(fam, R, M, num_chunks=chunks, compute_only=compute_only)
    except ScheduleError:
        assume(False)


@given(_gen_params())
def test_generators_json_round_trip(p):
    s = _generate(*p)
    back = parse_json_text(dumps_json(s))
    assert back == s
    assert dumps_json(back) == dumps_json(s)


@given(_gen_params())
def test_generators_json_csv_json_round_trip(p):
    s = _generate(*p)
    fam, compute_only = p[0], p[4]
    if fam == "dualpipe":
        with pytest.raises(ScheduleError, match="has 2 routes"):
            schedule_to_csv(s, flatten_batches=True)
        return
    if any(isinstance(a, Batch) for row in s.actions for a in row):
        with pytest.raises(ScheduleError, match="BATCH .* --flatten-batches"):
            schedule_to_csv(s)
        s = flatten_batches(s)
    text = schedule_to_csv(s)
    back = csv_to_schedule(text)
    assert core(back) == core(s)
    assert back.is_compute_only == s.is_compute_only
    assert schedule_to_csv(parse_json_text(dumps_json(back))) == text


@pytest.mark.parametrize("fam", FAMILIES)
def test_generator_grid_csv(fam):
    """Deterministic grid beside the hypothesis test: every family, both forms."""
    for R in (1, 2, 3, 4):
        for M in (2 * R, 2 * R + 2):
            for compute_only in (True, False):
                try:
                    s = generate(fam, R, M, compute_only=compute_only)
                except ScheduleError:
                    continue
                if fam == "dualpipe":
                    with pytest.raises(ScheduleError, match="2 routes"):
                        schedule_to_csv(s, flatten_batches=True)
                    continue
                s = flatten_batches(s)
                text = schedule_to_csv(s)
                assert core(csv_to_schedule(text)) == core(s), (fam, R, M, compute_only)
                # compute_only form of a schedule with comms = its skeleton
                skel = csv_to_schedule(schedule_to_csv(s, compute_only=True))
                assert skel.actions == strip_communication(s).actions


# ------------------------------------------------------------ random schedules


@st.composite
def random_schedules(draw, *, csv_expressible=True, max_ranks=4, max_stages=6, max_mbs=5):
    """Small schedules, not necessarily correct, with every action kind.

    ``csv_expressible``: one route 0..S-1, layer = id, every stage and the last
    micro-batch in some action, every action on its stage's rank, no batches.
    Otherwise also several routes, tied layers, batches, names and params.
    """
    R = draw(st.integers(1, max_ranks))
    S = draw(st.integers(1, max_stages))
    M = draw(st.integers(1, max_mbs))
    place = [draw(st.integers(0, R - 1)) for _ in range(S)]
    if csv_expressible:
        layers = list(range(S))
        routes = (Route(tuple(range(S)), tuple(range(M))),)
    else:
        layers = [draw(st.integers(0, S)) for _ in range(S)]
        cut = draw(st.integers(1, S))
        order = draw(st.permutations(range(S)))
        if cut < S and M > 1:
            mcut = draw(st.integers(1, M - 1))
            routes = (Route(tuple(order[:cut]), tuple(range(mcut))),
                      Route(tuple(order[cut:]), tuple(range(mcut, M))))
        else:
            routes = (Route(tuple(order), tuple(range(M))),)
    stages = tuple(Stage(s, place[s], layers[s]) for s in range(S))
    mb = st.integers(0, M - 1)
    actions: list[list] = [[] for _ in range(R)]
    for s in range(S):  # every stage appears
        actions[place[s]].append(Compute(ComputeKind.F, s, M - 1))
    for r in range(R):
        local = [s for s in range(S) if place[s] == r]
        if not local:
            continue
        n = draw(st.integers(0, 8))
        for _ in range(n):
            kind = draw(st.sampled_from(["c", "c", "m", "o", "b"]))
            s = draw(st.sampled_from(local))
            if kind == "c":
                a = Compute(draw(st.sampled_from(list(ComputeKind))), s, draw(mb))
            elif kind == "m":
                a = Comm(draw(st.sampled_from(list(CommKind))), s, draw(mb))
            elif kind == "o":
                a = Overlap(Compute(ComputeKind.F, s, draw(mb)),
                            Compute(draw(st.sampled_from([ComputeKind.B, ComputeKind.I])),
                                    draw(st.sampled_from(local)), draw(mb)))
            else:
                ops = tuple(Comm(draw(st.sampled_from(list(CommKind))), s, draw(mb))
                            for _ in range(draw(st.integers(1, 3))))
                a = Batch(ops, draw(st.booleans())) if not csv_expressible else ops[0]
            actions[r].insert(draw(st.integers(0, len(actions[r]))), a)
    params: dict = {}
    if csv_expressible and draw(st.booleans()):
        idle = {}
        for r in range(R):
            k = draw(st.integers(0, 2))
            if k:
                n = len(actions[r])
                cols = sorted(draw(st.lists(st.integers(0, n + k - 1), min_size=k,
                                            max_size=k, unique=True)))
                idle[str(r)] = cols
        if idle:
            form = "compute_only" if not any(
                isinstance(a, Comm) for row in actions for a in row) else "compute_comms"
            params = {PARAMS_KEY: {"form": form, "idle": idle}}
    elif not csv_expressible:
        params = draw(st.sampled_from([{}, {"num_chunks": 2}, {"note": "x", "n": [1, 2]}]))
    name = "" if csv_expressible else draw(st.sampled_from(["", "s", "with \"quote\""]))
    return Schedule(R, M, stages, routes, tuple(tuple(a) for a in actions),
                    name=name, family=name, params=params)


@given(random_schedules(csv_expressible=False))
def test_random_json_round_trip(s):
    back = parse_json_text(dumps_json(s))
    assert back == s


@given(random_schedules())
def test_random_json_csv_json_round_trip(s):
    text = schedule_to_csv(s)
    back = csv_to_schedule(text)
    assert core(back) == core(s)
    assert schedule_to_csv(back) == text
    assert schedule_to_csv(parse_json_text(dumps_json(back))) == text


@given(random_schedules(csv_expressible=False))
def test_random_csv_write_refuses_or_round_trips(s):
    """Any schedule: either refused with ScheduleError or read back equal."""
    try:
        text = schedule_to_csv(s, flatten_batches=True)
    except ScheduleError as e:
        assert "\n" not in str(e)
        return
    assert core(csv_to_schedule(text)) == core(flatten_batches(s))


# ------------------------------------------------------------ refusals


def small(**kw) -> Schedule:
    base = dict(
        num_ranks=2,
        num_microbatches=1,
        stages=(Stage(0, 0, 0), Stage(1, 1, 1)),
        routes=(Route((0, 1), (0,)),),
        actions=((Compute(ComputeKind.F, 0, 0), Compute(ComputeKind.B, 0, 0)),
                 (Compute(ComputeKind.F, 1, 0), Compute(ComputeKind.B, 1, 0))),
    )
    base.update(kw)
    return Schedule(**base)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(routes=(Route((0,), (0,)), Route((1,), (0,)))), "has 2 routes"),
        (dict(stages=(Stage(0, 0, 0), Stage(1, 1, 0))), "stage 1 holds layer 0"),
        (dict(routes=(Route((1, 0), (0,)),)), r"route visits stages \[1, 0\]"),
        (dict(num_microbatches=2, routes=(Route((0, 1), (1, 0)),)), "micro-batches"),
        (dict(num_microbatches=2, routes=(Route((0, 1), (0, 1)),)),
         "largest micro-batch id in any action is 0 but num_microbatches is 2"),
        (dict(stages=(Stage(0, 0, 0), Stage(2, 1, 2)), routes=(Route((0, 2), (0,)),)),
         r"stage ids \[0, 2\]"),
        (dict(actions=((Compute(ComputeKind.F, 0, 0), Compute(ComputeKind.F, 1, 0)), ())),
         "rank 0 step 1: .*stage 1 is placed on rank 1"),
        (dict(actions=((Compute(ComputeKind.F, 0, 0),), ())), "stage 1 has no action"),
        (dict(actions=((Batch((Comm(CommKind.SEND_F, 0, 0),), True),
                        Compute(ComputeKind.F, 0, 0)), (Compute(ComputeKind.F, 1, 0),))),
         "rank 0 step 0: a BATCH of 1 op.*wait=true.*`convert --flatten-batches`.*"
         "`convert --compute-only`"),
        (dict(params={PARAMS_KEY: {"form": "compute_only", "idle": {"0": [9]}}}),
         "idle cell at column 9 of rank 0"),
        (dict(params={PARAMS_KEY: "junk"}), "params.pytorch_csv must be"),
    ],
)
def test_write_refusals_name_what_and_why(kw, match):
    with pytest.raises(ScheduleError, match=match) as e:
        schedule_to_csv(small(**kw), source="x.json")
    assert str(e.value).startswith("x.json")
    assert "\n" not in str(e.value)


def test_flatten_batches_writes_ops_in_order():
    s = small(actions=((Compute(ComputeKind.F, 0, 0),
                        Batch((Comm(CommKind.SEND_F, 0, 0), Comm(CommKind.RECV_B, 0, 0)), True),
                        Compute(ComputeKind.B, 0, 0)),
                       (Comm(CommKind.RECV_F, 1, 0), Compute(ComputeKind.F, 1, 0),
                        Compute(ComputeKind.B, 1, 0), Comm(CommKind.SEND_B, 1, 0))))
    assert schedule_to_csv(s, flatten_batches=True) == (
        "0F0,0SEND_F0,0RECV_B0,0B0\n1RECV_F0,1F0,1B0,1SEND_B0\n"
    )
    assert schedule_to_csv(s, compute_only=True) == "0F0,0B0\n1F0,1B0\n"


def test_lone_idle_cell_and_empty_rank_survive():
    text = '0F0\n""\n\n1F0\n'
    s = csv_to_schedule(text)
    assert s.num_ranks == 4 and s.rank_of(1) == 3
    assert s.params[PARAMS_KEY]["idle"] == {"1": [0]}
    assert schedule_to_csv(s) == text


@pytest.mark.parametrize(
    "text, match",
    [
        ("0F0,(0F1;1UNSHARD)OVERLAP_F_B\n",
         r"row 1 \(rank 0\) column 2: UNSHARD \(FSDP parameter unshard\) inside"),
        ("0F0,0BW0\n", r"column 2: unknown action type 'BW' in '0BW0'"),
        ("0F0,(0F1;1B0;1W0)OVERLAP_F_B\n", "has 3 sub-action"),
        ("(0F1;1F0)OVERLAP_F_B\n", "must pair one forward"),
        ("(0F1;1B0)FOO\n", "unsupported grouped action type 'FOO'"),
        ("0F\n", "has no micro-batch id"),
        ("0F99999999\n", "micro-batch id 99999999 .* out of range"),
        ("0F0,2F0\n", r"stage\(s\) 1 appear in no action"),
        (",,\n", "no actions"),
        ("\n\n", "no rows"),
        ('0F0,"1F0\n', "malformed CSV|cannot parse"),
    ],
)
def test_read_errors_are_located(text, match):
    with pytest.raises(ScheduleError, match=match) as e:
        csv_to_schedule(text, source="in.csv")
    assert str(e.value).startswith("in.csv")
    assert "\n" not in str(e.value)


def test_overlap_written_forward_first():
    s = csv_to_schedule("(1B0;0F1)OVERLAP_F_B,0F0,1F0\n")
    assert s.actions[0][0] == Overlap(Compute(ComputeKind.F, 0, 1), Compute(ComputeKind.B, 1, 0))
    assert schedule_to_csv(s).startswith("(0F1;1B0)OVERLAP_F_B,")


# ------------------------------------------------------------ the convert command


def test_convert_cli_round_trip(tmp_path):
    src = FIXTURES / "dualpipev_4rank_10mb.csv"
    j = tmp_path / "s.json"
    c = tmp_path / "s.csv"
    rc, out, err = run_cli(["convert", src, "-o", j])
    assert (rc, err) == (0, "")
    assert out == (f"wrote {j}: json compute-only, 4 ranks, 8 stages, 10 micro-batches, "
                   "141 actions\n")
    rc, out, err = run_cli(["convert", j, "-o", c])
    assert (rc, err) == (0, "")
    assert c.read_text() == src.read_text()
    rc, out, err = run_cli(["convert", j, "-o", "-"])  # '-' and JSON input: CSV
    assert (rc, out, err) == (0, src.read_text(), "")
    rc, out, err = run_cli(["convert", src, "-o", "-", "--to", "json"])
    assert rc == 0 and parse_json_text(out).actions == load_schedule(src).actions


def test_convert_cli_refusals_and_flags(tmp_path):
    j = tmp_path / "dp.json"
    j.write_text(dumps_json(generate("dualpipe", 4, 8)))
    rc, out, err = run_cli(["convert", j, "-o", tmp_path / "dp.csv"])
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {j}: cannot convert to CSV: has 2 routes")
    assert not (tmp_path / "dp.csv").exists()

    v = tmp_path / "dv.json"
    v.write_text(dumps_json(generate("dualpipev", 4, 8)))
    rc, out, err = run_cli(["convert", v, "-o", tmp_path / "dv.csv"])
    assert rc == 2 and "--flatten-batches" in err and f"{v}: rank 0 step" in err
    assert "REFUTED under nccl (deadlock-free fails)" in err and err.count("\n") == 1
    rc, out, err = run_cli(["convert", v, "-o", tmp_path / "dv.csv", "--flatten-batches"])
    assert rc == 0 and "compute_comms" in out
    rc, out, err = run_cli(["convert", v, "-o", tmp_path / "dvc.csv", "--compute-only"])
    assert rc == 0 and "compute_only" in out
    assert load_schedule(tmp_path / "dvc.csv").actions == strip_communication(
        generate("dualpipev", 4, 8)).actions
    rc, out, err = run_cli(["convert", v, "-o", tmp_path / "c.json", "--compute-only"])
    assert rc == 0 and load_schedule(tmp_path / "c.json") == strip_communication(
        generate("dualpipev", 4, 8))
    # --from overrides the extension
    t = tmp_path / "sched.txt"
    t.write_text((FIXTURES / "zb1p_2rank_2stagep_compute.csv").read_text())
    rc, out, err = run_cli(["convert", t, "--from", "csv", "-o", tmp_path / "z.json"])
    assert rc == 0, err
    # unwritable output
    rc, out, err = run_cli(["convert", v, "-o", tmp_path / "nodir" / "x.json"])
    assert rc == 2 and "cannot write" in err and err.count("\n") == 1
    rc, out, err = run_cli(["convert", v, "-o", tmp_path])
    assert rc == 2 and "is a directory" in err


def test_convert_fsdp_kept_or_dropped(tmp_path):
    text = ("0UNSHARD,0F0,0SEND_F0,0RECV_B0,0B0,0REDUCE_GRAD,0RESHARD\r\n"
            "1UNSHARD,1RECV_F0,1F0,,1B0,1SEND_B0,1RESHARD\r\n")
    src = tmp_path / "pt.csv"
    src.write_text(text, newline="")
    rc, out, err = run_cli(["convert", src, "-o", tmp_path / "k.json"])
    assert rc == 0, err
    assert out.endswith(", 8 actions, 5 UNSHARD/RESHARD/REDUCE_GRAD kept as no-ops\n"), out
    k = load_schedule(tmp_path / "k.json")
    assert k.params[PARAMS_KEY]["fsdp"] == {
        "0": [[0, "0UNSHARD"], [5, "0REDUCE_GRAD"], [6, "0RESHARD"]],
        "1": [[0, "1UNSHARD"], [6, "1RESHARD"]]}
    rc, out, err = run_cli(["convert", tmp_path / "k.json", "-o", "-"])
    assert (rc, out, err) == (0, text, "")  # byte for byte back
    rc, out, err = run_cli(["check", src])
    assert rc == 0 and "note: 5 PyTorch FSDP cells" in out
    src.write_text(text.replace(",,", ","), newline="")
    rc, out, err = run_cli(["convert", src, "-o", tmp_path / "a.json", "--drop-fsdp"])
    assert rc == 0, err
    assert out.endswith(", 8 actions, 5 UNSHARD/RESHARD/REDUCE_GRAD dropped\n"), out
    s = load_schedule(tmp_path / "a.json")
    assert s.num_actions == 8 and s.rank_of(1) == 1
    rc, out, err = run_cli(["convert", tmp_path / "a.json", "-o", "-"])
    assert out == "0F0,0SEND_F0,0RECV_B0,0B0\r\n1RECV_F0,1F0,1B0,1SEND_B0\r\n"


def test_real_process_round_trip(tmp_path):
    src = FIXTURES / "dualpipev_4rank_10mb.csv"
    for args in ([src, "-o", tmp_path / "a.json"], [tmp_path / "a.json", "-o", tmp_path / "b.csv"]):
        proc = subprocess.run([sys.executable, "-m", "verifier", "convert", *map(str, args)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert proc.stdout.startswith("wrote ")
    assert (tmp_path / "b.csv").read_bytes() == src.read_bytes()


def test_convert_help_documents_every_flag_and_exit_code():
    rc, out, err = run_cli(["convert", "--help"])
    assert rc == 0 and err == ""
    from verifier.cli.app import build_parser

    sub = build_parser(io.StringIO())._subparsers._group_actions[0].choices["convert"]
    flags = [o for a in sub._actions for o in a.option_strings]
    assert len(flags) >= 8
    for flag in flags + ["--drop-fsdp", "--flatten-batches", "IN"]:
        assert flag in out, flag
    for a in sub._actions:
        assert a.help, a.option_strings  # every flag is explained
    assert "exit codes:" in out
    assert "  0  converted" in out and "  2  bad input" in out
    rc, out, err = run_cli(["convert"])
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1


def test_stage_on_two_rows_reads_as_written():
    """A stage run on two rows loads (placed by its first cell); check's
    well-formed property refutes it (tests/test_origin.py names both cells)."""
    s = csv_to_schedule("0F0,1F0\n1B0\n")
    assert s.rank_of(1) == 0
    assert s.actions[1] == (Compute(ComputeKind.B, 1, 0),)


# ------------------------------------------------------------ JSON -> CSV of generated schedules


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("dualpipe", "dualpipev")])
def test_convert_every_generated_schedule_with_communication(family, tmp_path):
    """Batches written op by op only where the flattened schedule still verifies (nccl)."""
    for R, M in ((2, 4), (4, 8)):
        j = tmp_path / f"{family}.json"
        c = tmp_path / f"{family}.csv"
        rc, out, err = run_cli(["generate", family, "--ranks", R, "--microbatches", M, "-o", j])
        assert rc == 0, err
        rc, out, err = run_cli(["convert", j, "-o", c])
        assert rc == 0 and err == "", err
        line, note = out.splitlines()
        assert line.startswith(f"wrote {c}: csv compute_comms") and line.endswith(" actions")
        assert note.startswith("note: ") and "checks VERIFIED under nccl" in note
        rc, out, err = run_cli(["check", c])
        assert rc == 0 and out.startswith("VERIFIED under nccl"), out + err
        # generate -o FILE.csv writes the same, the note on stderr
        g = tmp_path / "g.csv"
        rc, out, err = run_cli(["generate", family, "--ranks", R, "--microbatches", M, "-o", g])
        assert (rc, out) == (0, "") and err.startswith("note: "), err
        assert g.read_text() == c.read_text()


def test_single_op_batches_written_as_their_op_with_a_note(tmp_path):
    sf, rb = Comm(CommKind.SEND_F, 0, 0), Comm(CommKind.RECV_B, 0, 0)
    rf, sb = Comm(CommKind.RECV_F, 1, 0), Comm(CommKind.SEND_B, 1, 0)
    F0, B0 = Compute(ComputeKind.F, 0, 0), Compute(ComputeKind.B, 0, 0)
    F1, B1 = Compute(ComputeKind.F, 1, 0), Compute(ComputeKind.B, 1, 0)
    s = small(actions=((F0, Batch((sf,), False), Batch((rb,), False), B0),
                       (Batch((rf,), False), F1, B1, Batch((sb,), False))))
    assert schedule_to_csv(s) == "0F0,0SEND_F0,0RECV_B0,0B0\n1RECV_F0,1F0,1B0,1SEND_B0\n"
    with pytest.raises(ScheduleError, match="rank 0 step 1: a BATCH of 1 op"):
        schedule_to_csv(s, flatten_batches=False)
    j = tmp_path / "s.json"
    j.write_text(dumps_json(s))
    rc, out, err = run_cli(["convert", j, "-o", tmp_path / "s.csv"])
    assert rc == 0, err
    assert out.splitlines()[1] == (
        "note: 4 BATCHes of one op without a wait written as their op (the same meaning: "
        "PyTorch posts each communication cell as a batch of its own)")
    rc, out, err = run_cli(["convert", j, "-o", "-"])  # notes to stderr with -o -
    assert rc == 0 and out.startswith("0F0,") and err.startswith("note: 4 BATCHes")


def test_generate_refusal_names_flags_generate_has(tmp_path):
    rc, out, err = run_cli(["generate", "dualpipev", "--ranks", 2, "--microbatches", 4,
                            "-o", tmp_path / "v.csv"])
    assert rc == 2 and err.count("\n") == 1
    from verifier.cli.app import build_parser

    gen = build_parser(io.StringIO())._subparsers._group_actions[0].choices["generate"]
    flags = {o for a in gen._actions for o in a.option_strings}
    named = set(re.findall(r"--[a-z][a-z-]+", err))
    assert named and named <= flags, named - flags
    rc, out, err = run_cli(["generate", "dualpipev", "--ranks", 2, "--microbatches", 4,
                            "--flatten-batches", "-o", tmp_path / "v.csv"])
    assert rc == 0 and err.startswith("note: ")
    rc, out, err = run_cli(["generate", "dualpipev", "--ranks", 2, "--microbatches", 4,
                            "--compute-only", "-o", tmp_path / "v.csv"])
    assert (rc, err) == (0, "")


def _parsers():
    """Every option string of every command line of the project."""
    from fastpath.cli import build_parser as fastpath_parser
    from fastpath.record.__main__ import build_parser as record_parser
    from reference.cli import build_parser as reference_parser
    from verifier.cli.app import build_parser

    flags: set[str] = set()
    todo = [p(io.StringIO()) for p in (build_parser, reference_parser, fastpath_parser,
                                       record_parser)]
    while todo:
        p = todo.pop()
        for a in p._actions:
            flags.update(a.option_strings)
            if hasattr(a, "choices") and isinstance(a.choices, dict):
                todo.extend(a.choices.values())
    return flags


def test_every_flag_named_in_the_sources_exists():
    """A flag a message (or help text) names is a flag of one of the command lines,
    or of the two outside tools the text says it belongs to."""
    flags = _parsers()
    bench = (ROOT / "benchmarks" / "bench_fastpath.py").read_text()  # help names its flags
    outside = {"--nproc-per-node"} | set(re.findall(r'add_argument\(\s*"(--[a-z-]+)"', bench))
    bad = []
    for pkg in ("verifier", "reference", "fastpath"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text())
            docs = {id(n.body[0].value) for n in ast.walk(tree)
                    if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                    and n.body and isinstance(n.body[0], ast.Expr)
                    and isinstance(n.body[0].value, ast.Constant)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and id(node) not in docs:
                    for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", node.value):
                        if flag not in flags and flag not in outside:
                            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {flag}")
    assert not bad, bad


def _read_cell_by_cell(text: str, monkeypatch, **kw):
    """csv_to_schedule with its one-pass reading of plain rows switched off:
    every cell through the cell-by-cell loop (the statement of the dialect),
    and every row through csv.reader (no splitting of lines)."""
    import verifier.format.csv_read as csv_read

    with monkeypatch.context() as m:
        m.setattr(csv_read, "_PLAIN_ROW", re.compile(r"(?!)"))
        m.setattr(csv_read, "_plain_lines", lambda text: None)
        try:
            return csv_read.csv_to_schedule(text, **kw)
        except ScheduleError as e:
            return str(e)


@pytest.mark.parametrize("text", [
    "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n",
    "0F0,0SEND_F0,0RECV_B0,0B0\n1RECV_F0,1F0,1B0,1SEND_B0\n",
    "0F0, 0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n",  # a blank before a cell
    "0F0,,0B0\r\n1F0,1B0\r\n",  # an idle cell, CRLF
    '0F0,"0B0,1F0"\n1F0,1B0\n',  # a quoted cell holding a comma
    "0F0,0B0\n1F0,1B0,0F1\n",  # a stage on two rows
    "0F0,0B0\n1F00,1B00\n",  # leading zeros
    "0F0,0B0\n1F12345678,1B0\n",  # an id over MAX_ID
    "0F0,0B0\n1F1234567,1B0\n",  # a large id under it
    "0F0,0UNSHARD,0B0\n1F0,1B0\n",  # an FSDP cell
    "(0F1;0B0)OVERLAP_F_B,0F0\n1F0,1B0\n",
    "0F0,0X0\n1F0,1B0\n",  # an unknown kind
    "0F0,0B0\n\n1F0,1B0\n",  # an empty row
    "0F0,0B0\r\n\r\n1F0,1B0",  # an empty CRLF row, no final line ending
    "0F0,0B0\r1F0,1B0\r",  # lone carriage returns end rows too
    "0F0,0B0\r\n1F0,1B0\n",  # mixed line endings
    "0F0,0B0\n1F0,1B0\n\n",  # an empty last row
    "0F0,0B0\n1F0,1B0\n \n",  # a blank last row
])
def test_plain_rows_read_as_the_cell_by_cell_loop_reads_them(text, monkeypatch):
    """csv_to_schedule reads a row of plain cells in one pass; that must make
    exactly what the cell-by-cell loop makes (or fail with its error)."""
    try:
        fast = csv_to_schedule(text)
    except ScheduleError as e:
        fast = str(e)
    assert fast == _read_cell_by_cell(text, monkeypatch)


def test_plain_lines_are_the_rows_csv_reader_reads():
    """Text without quotes is split into lines, not read by csv.reader: the
    lines' comma-separated pieces must be the reader's rows wherever that
    shortcut is taken (random texts over the characters that matter)."""
    import csv
    import io
    import random

    from verifier.format.csv_read import _plain_lines

    rnd = random.Random(10)
    pieces = ["0F1", "1", "F", ",", " ", "\t", "\n", "\r\n", "\r", "\x0c", "\x1c", "\x85", "\u2028", '"']
    taken = 0
    for _ in range(4000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12)))
        lines = _plain_lines(text)
        if lines is None:
            continue
        taken += 1
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
        assert [line.split(",") if line else [] for line in lines] == rows, repr(text)
    assert taken > 1000


@pytest.mark.parametrize("family", ["1f1b", "zbv", "dualpipev", "interleaved-1f1b"])
def test_generated_csv_read_as_the_cell_by_cell_loop_reads_it(family, monkeypatch):
    from verifier.semantics.lowering import lower

    compute_only = generate(family, 4, 8, compute_only=True)
    lowered = flatten_batches(lower(compute_only))
    for text in (schedule_to_csv(lowered), schedule_to_csv(compute_only)):
        fast = csv_to_schedule(text)
        assert fast == _read_cell_by_cell(text, monkeypatch)
        assert [[str(a) for a in row] for row in fast.actions] == [row.split(",") for row in text.splitlines()]

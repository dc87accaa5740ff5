"""Real runtimes, recorded and checked (issue 13 item 5).

Each case runs one training step of a real pipeline runtime on gloo/CPU with a
tiny model under the recorder (``fastpath.record``: one process per rank, a
watchdog), then checks the recorded program under every communication model
(``verifier.check.program``). The scripts are tests/runtimes/*.py; each lists
the CUDA-only calls it patches (and only those). Each program is decided by
the replay and by Z3 (``engine="both"``), every certificate checked.

- torch.distributed.pipelining: every schedule class torch 2.13 ships, and a
  compute-only CSV run by ``_PipelineScheduleRuntime`` (torch adds its sends);
- DeepSeek's DualPipe (PyPI ``dualpipe``; DualPipeV is not in PyPI 1.0.0:
  skipped, saying so);
- megatron-core's forward_backward_pipelining_without_interleaving and
  _with_interleaving, batch_p2p_comm on and off: its forward and backward
  steps recorded as computes (fastpath.record.megatron), its messages with
  payloads.

What each asserts: the run finished, and the verdict per model is the one
stated in EXPECTED (measured on torch 2.13 CPU, gloo), so a
change in the runtime, the recorder or the checker shows here. Interleaved
megatron with batch_p2p_comm at pipeline size 2 is refuted: its batches pair
gradients with activations (``_payloads_swapped``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
if importlib.util.find_spec("fastpath.record") is None:  # pragma: no cover - until the recorder lands
    pytest.skip("fastpath.record (the recorder, issue 13 item 1) is not in this checkout",
                allow_module_level=True)

from fastpath.record.launch import record  # noqa: E402
from verifier.check.program import check_program  # noqa: E402
from verifier.format.program import load_program  # noqa: E402
from verifier.program import P2P, BatchP2P, ComputeOp  # noqa: E402
from verifier.results.check import Verdict  # noqa: E402
from verifier.results.program import ProgramProperty  # noqa: E402

pytestmark = pytest.mark.multiprocess

RUNTIMES = Path(__file__).resolve().parent / "runtimes"
ALL = {"nccl": True, "nccl-pairs": True, "gloo": True, "eager": True}
TORCH_CLASSES = ("GPipe", "1F1B", "Interleaved1F1B", "LoopedBFS", "InterleavedZeroBubble",
                 "ZBVZeroBubble", "DualPipeV")


def _record(tmp_path, target: list[str], nproc: int):
    out = str(tmp_path / "program.json")
    r = record([str(RUNTIMES / target[0]), *target[1:]], nproc=nproc, timeout_s=60, out=out)
    assert r.exit_code == 0, r.message
    p = load_program(out)
    assert p.outcome == "finished"
    # both engines under every model: the replay and Z3 must agree (else UNKNOWN)
    # and the certificate checker must accept every answer
    r = check_program(p, "all", engine="both")
    assert r.certificate == "accepted" and r.verdict is not Verdict.UNKNOWN, r.violations
    return r


def _terminates(result) -> dict:
    return {m.model: m.terminates for m in result.models}


@pytest.mark.parametrize("name", TORCH_CLASSES)
def test_torch_pipelining_schedule(tmp_path, name):
    r = _record(tmp_path, ["torch_pipelining.py", "--schedule", name], 2)
    assert _terminates(r) == ALL, [m.summary for m in r.models]
    assert r.verdict is Verdict.VERIFIED, [v.message for v in r.violations]
    if name == "1F1B":  # the check can fail on a real recording: rank 1's calls in reverse
        import dataclasses

        p = r.program
        flipped = dataclasses.replace(p.ranks[1], ops=tuple(reversed(p.ranks[1].ops)))
        bad = check_program(dataclasses.replace(p, ranks=(p.ranks[0], flipped)), "all")
        assert bad.verdict is Verdict.REFUTED and not any(_terminates(bad).values())


def test_torch_pipelining_custom_csv(tmp_path):
    from verifier.format.csvio import schedule_to_csv
    from verifier.generators import generate

    csv = tmp_path / "zbh1.csv"
    csv.write_text(schedule_to_csv(generate("zb-h1", 2, 4, compute_only=True)))
    r = _record(tmp_path, ["torch_pipelining.py", "--csv", str(csv), "--placement", "single"], 2)
    assert _terminates(r) == ALL
    assert r.verdict is Verdict.VERIFIED


def test_deepseek_dualpipe(tmp_path):
    pytest.importorskip("dualpipe")
    r = _record(tmp_path, ["dualpipe_step.py", "--microbatches", "4"], 2)
    assert _terminates(r) == ALL
    assert r.verdict is Verdict.VERIFIED


def test_deepseek_dualpipev(tmp_path):
    pytest.importorskip("dualpipe")
    if importlib.util.find_spec("dualpipe.dualpipev") is None:
        pytest.skip("the installed dualpipe package has no DualPipeV (PyPI dualpipe 1.0.0 does not ship it)")
    r = _record(tmp_path, ["dualpipe_step.py", "--v", "--microbatches", "4"], 2)
    assert _terminates(r) == ALL


@pytest.mark.parametrize("interleaved", [False, True], ids=["1f1b", "interleaved"])
@pytest.mark.parametrize("batch_p2p", [False, True], ids=["unbatched", "batched"])
def test_megatron_core(tmp_path, interleaved, batch_p2p):
    pytest.importorskip("megatron.core")
    flags = (["--interleaved"] if interleaved else []) + (["--batch-p2p"] if batch_p2p else [])
    r = _record(tmp_path, ["megatron_pp.py", *flags], 2)
    assert r.verdict in (Verdict.VERIFIED, Verdict.REFUTED)
    assert _terminates(r)["eager"] and _terminates(r)["gloo"]  # it did terminate on gloo
    _megatron_computes(r.program, interleaved)
    EXPECTED_MEGATRON[(interleaved, batch_p2p)](r)


def test_megatron_core_interleaved_4_ranks(tmp_path):
    """At pipeline size 4 the previous and the next rank differ: interleaved with
    batch_p2p_comm matches every payload (8 micro-batches, megatron's groups of 4)."""
    pytest.importorskip("megatron.core")
    r = _record(tmp_path, ["megatron_pp.py", "--interleaved", "--batch-p2p",
                           "--microbatches", "8"], 4)
    _all_terminate(r)
    for rank in r.program.ranks:
        got = _computes(rank)
        assert len(got) == 2 * 8 * 2 and got[0] == ("F", rank.rank, 0), got
        assert sorted(got) == sorted((k, s, mb) for k in "FB" for s in (rank.rank, rank.rank + 4)
                                     for mb in range(8))
        msgs = _p2ps(rank)
        assert msgs and all(e.payload is not None for e in msgs)


def _computes(rank) -> list:
    return [(o.kind, o.stage, o.mb) for o in rank.ops if isinstance(o, ComputeOp)]


def _p2ps(rank) -> list:
    return [e for o in rank.ops for e in (o.ops if isinstance(o, BatchP2P) else (o,))
            if isinstance(e, P2P)]


# megatron_pp.py runs 4 micro-batches on 2 ranks; interleaved: 2 model chunks a rank,
# stage = chunk * 2 + rank. The first computes of each rank, in order (measured):
MEGATRON_FIRST = {
    False: {0: [("F", 0, 0), ("F", 0, 1), ("B", 0, 0), ("F", 0, 2)],
            1: [("F", 1, 0), ("B", 1, 0), ("F", 1, 1), ("B", 1, 1)]},
    True: {0: [("F", 0, 0), ("F", 0, 1), ("F", 2, 0), ("F", 2, 1), ("F", 0, 2), ("B", 2, 0)],
           1: [("F", 1, 0), ("F", 1, 1), ("F", 3, 0), ("B", 3, 0), ("F", 3, 1), ("B", 3, 1)]},
}


def _megatron_computes(p, interleaved: bool) -> None:
    """Every forward_step and backward_step is a compute with megatron's stage and
    micro-batch, and every message megatron posts carries its payload."""
    for rank in p.ranks:
        got = _computes(rank)
        stages = [rank.rank, rank.rank + 2] if interleaved else [rank.rank]
        assert len(got) == 2 * 4 * len(stages), got
        assert got[:len(MEGATRON_FIRST[interleaved][rank.rank])] == \
            MEGATRON_FIRST[interleaved][rank.rank], got
        for s in stages:  # each micro-batch once forward, then once backward, in order
            for kind in "FB":
                assert [mb for k, st, mb in got if k == kind and st == s] == [0, 1, 2, 3], got
            assert all(got.index(("F", s, mb)) < got.index(("B", s, mb)) for mb in range(4))
        msgs = _p2ps(rank)
        assert len(msgs) == (24 if interleaved else 8)
        assert all(e.payload is not None for e in msgs), [e for e in msgs if e.payload is None]


def _all_terminate(r):
    assert _terminates(r) == ALL, [m.summary for m in r.models]
    assert r.verdict is Verdict.VERIFIED, [v.message for v in r.violations]


def _payloads_swapped(r):
    """Interleaved with batch_p2p_comm at pipeline size 2: the previous and the next
    rank are one peer, and send_forward_backward_recv_forward_backward posts
    [send B to prev, recv F from prev, send F to next, recv B from next] in one
    batch on both ranks, so FIFO matching pairs each gradient with an activation
    receive (Megatron-LM#750, #1450; measured here on gloo: the weight gradients
    differ from the unbatched run's, which equal a single-process reference). It
    terminates under every model; message-matching fails on the swapped pairs."""
    assert _terminates(r) == ALL, [m.summary for m in r.models]
    assert r.verdict is Verdict.REFUTED
    p = r.program
    assert len(r.violations) == 8
    for v in r.violations:
        assert v.property is ProgramProperty.MESSAGE_MATCHING and v.code == "payload", v.message
        (a, b) = v.places
        ea = p.ranks[a.rank].ops[a.op].ops[a.sub]
        eb = p.ranks[b.rank].ops[b.op].ops[b.sub]
        assert {ea.op, eb.op} == {"isend", "irecv"}
        assert {ea.payload.kind, eb.payload.kind} == {"F", "B"}, v.message
        assert "p2p_communication.py" in a.where.file and a.where.function == "_batched_p2p_ops"


EXPECTED_MEGATRON = {
    (False, False): _all_terminate,
    (False, True): _all_terminate,
    (True, False): _all_terminate,
    (True, True): _payloads_swapped,
}


def test_a_hung_run_is_recorded_checked_and_explained(tmp_path):
    out = str(tmp_path / "hung.json")
    r = record([str(RUNTIMES / "crossed_sends.py")], nproc=2, timeout_s=5, out=out)
    assert r.exit_code == 5, r.message  # the watchdog ended a hung run
    p = load_program(out)
    assert p.outcome == "hung"
    res = check_program(p, "gloo", engine="both")
    assert res.verdict is Verdict.REFUTED and res.certificate == "accepted"
    assert _terminates(res) == {"nccl": False, "nccl-pairs": False, "gloo": False, "eager": True}
    o = res.outcome("gloo")
    assert o.closed and "crossed_sends.py:" in o.summary and "`send` to rank" in o.summary
    assert any("the replay blocks at exactly the calls the run hung in" in n and "gloo" in n
               for n in res.notes), res.notes


def test_scripts_list_their_patches():
    for script in ("megatron_pp.py", "dualpipe_step.py"):
        text = (RUNTIMES / script).read_text()
        assert "PATCHES = (" in text, script
    assert sys.executable

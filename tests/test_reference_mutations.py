"""Wrong schedules never pass the reference executor silently.

Hand-made mutations (swapped receive micro-batches, a duplicated W, a dropped B
or W) are refuted by the checker, refused by ``run_pipeline`` with the
checker's counterexample, and, when forced to run "as far as it goes", stop
with a located error naming the rank, the step and (for messages) both tags.
A hypothesis property holds the checker and the executor against each other on
random mutants: the checker verifies a mutant (eager model) exactly when the
forced run completes, and then its gradients equal the baseline bitwise.
Where a wrong input would give wrong numbers without any schedule fault (wrong
micro-batch data, a tied copy left out), the comparison reports the mismatch.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

from reference.baseline import compare, run_baseline
from reference.executor import (
    BlockedError,
    DependencyError,
    ExactlyOnceError,
    ExecutionError,
    MessageMismatchError,
    RefutedScheduleError,
    run_pipeline,
)
from reference.models import make_layers, make_microbatches, num_model_layers
from verifier.check.checker import check
from verifier.generators import generate
from verifier.format.io import load_schedule
from verifier.ir import Batch, Comm, CommKind, Compute, ComputeKind, Overlap


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(s, model="mlp", hidden=4):
    layers = make_layers(model, num_model_layers(s, 1), hidden=hidden)
    return layers, make_microbatches(model, s.num_microbatches, hidden=hidden)


def _failed(s):
    res = check(s, comm_model="eager", engine="graph")
    return str(res.verdict), {str(p) for p in res.failed}


def _find_ops(s, rank, pred):
    """(step, sub) of comm ops on rank matching pred; sub None for a plain Comm."""
    out = []
    for i, a in enumerate(s.actions[rank]):
        if isinstance(a, Comm) and pred(a):
            out.append((i, None))
        elif isinstance(a, Batch):
            out.extend((i, j) for j, op in enumerate(a.ops) if pred(op))
    return out


def _replace_op(acts, step, sub, new):
    a = acts[step]
    if sub is None:
        acts[step] = new
    else:
        ops = list(a.ops)
        ops[sub] = new
        acts[step] = Batch(tuple(ops), a.wait)


def _op_at(s, rank, step, sub):
    a = s.actions[rank][step]
    return a if sub is None else a.ops[sub]


def _swap_recv_mbs(s, rank, kind):
    recvs = _find_ops(s, rank, lambda op: op.kind is kind)
    # the first two receives of one stage (so the swap stays on one route)
    stage = _op_at(s, rank, *recvs[0]).stage
    (i1, j1), (i2, j2) = [ij for ij in recvs if _op_at(s, rank, *ij).stage == stage][:2]
    o1, o2 = _op_at(s, rank, i1, j1), _op_at(s, rank, i2, j2)
    acts = [list(a) for a in s.actions]
    _replace_op(acts[rank], i1, j1, dataclasses.replace(o1, mb=o2.mb))
    _replace_op(acts[rank], i2, j2, dataclasses.replace(o2, mb=o1.mb))
    return s.with_actions(acts), (i1, i2)


@pytest.mark.parametrize(
    "fam,rank,kind",
    [
        ("1f1b", 1, CommKind.RECV_F),
        ("1f1b", 0, CommKind.RECV_B),
        ("dualpipe", 1, CommKind.RECV_F),
        ("dualpipe", 2, CommKind.RECV_B),
    ],
)
def test_swapped_receive_microbatches_fail_loudly(fam, rank, kind):
    s0 = generate(fam, 4, 8)
    s, steps = _swap_recv_mbs(s0, rank, kind)
    verdict, failed = _failed(s)
    assert verdict == "REFUTED" and "message-matching" in failed
    layers, mbs = _setup(s)
    with pytest.raises(RefutedScheduleError, match="message-matching"):
        run_pipeline(s, layers, mbs)
    with pytest.raises(ExecutionError) as e:
        run_pipeline(s, layers, mbs, force=True)
    err = e.value
    print(f"{fam}: {type(err).__name__}: {err}")
    assert isinstance(err, (MessageMismatchError, DependencyError))
    assert err.rank is not None and err.step is not None
    if isinstance(err, MessageMismatchError):
        # both tags named: expected and carried
        assert str(err).count(" mb ") >= 2 and "carries [" in str(err) and "expects [" in str(err)


def _insert_after(s, rank, step, action):
    acts = [list(a) for a in s.actions]
    acts[rank].insert(step + 1, action)
    return s.with_actions(acts)


def _delete(s, rank, step):
    acts = [list(a) for a in s.actions]
    del acts[rank][step]
    return s.with_actions(acts)


def _first(s, rank, pred):
    return next(i for i, a in enumerate(s.actions[rank]) if pred(a))


@pytest.mark.parametrize("fam", ["zb-h1", "dualpipe", "dualpipev"])
def test_duplicated_w_fails_loudly(fam):
    s0 = generate(fam, 4, 8)
    rank = 1
    i = _first(s0, rank, lambda a: isinstance(a, Compute) and a.kind is ComputeKind.W)
    s = _insert_after(s0, rank, i, s0.actions[rank][i])
    verdict, failed = _failed(s)
    assert verdict == "REFUTED" and "exactly-once" in failed
    layers, mbs = _setup(s)
    with pytest.raises(RefutedScheduleError, match="exactly-once"):
        run_pipeline(s, layers, mbs)
    with pytest.raises(ExactlyOnceError, match=r"runs a second time \(first at rank 1 step") as e:
        run_pipeline(s, layers, mbs, force=True)
    assert (e.value.rank, e.value.step) == (rank, i + 1)


@pytest.mark.parametrize("fam,rank", [("1f1b", 0), ("1f1b", 2), ("gpipe", 1), ("dualpipe", 3)])
def test_dropped_b_fails_loudly(fam, rank):
    s0 = generate(fam, 4, 8)
    i = _first(
        s0,
        rank,
        lambda a: (isinstance(a, Compute) and a.kind is ComputeKind.B)
        or (isinstance(a, Overlap) and a.b.kind is ComputeKind.B),
    )
    a = s0.actions[rank][i]
    if isinstance(a, Overlap):  # drop the backward half, keep the forward
        acts = [list(x) for x in s0.actions]
        acts[rank][i] = a.f
        s = s0.with_actions(acts)
    else:
        s = _delete(s0, rank, i)
    verdict, failed = _failed(s)
    assert verdict == "REFUTED" and "exactly-once" in failed
    layers, mbs = _setup(s)
    with pytest.raises(RefutedScheduleError):
        run_pipeline(s, layers, mbs)
    with pytest.raises(ExecutionError) as e:
        run_pipeline(s, layers, mbs, force=True)
    print(f"{fam} rank {rank}: {type(e.value).__name__}: {e.value}")
    assert isinstance(e.value, (DependencyError, ExactlyOnceError, BlockedError, MessageMismatchError))
    # the error names the op in PyTorch's notation (stage, kind, micro-batch)
    assert re.search(r"\b[0-9]+(F|B|I|W|SEND_F|RECV_F|SEND_B|RECV_B)[0-9]+\b", str(e.value))


def test_dropped_w_and_w_before_i():
    s0 = generate("zb-h1", 2, 4)
    i = _first(s0, 1, lambda a: isinstance(a, Compute) and a.kind is ComputeKind.W)
    w = s0.actions[1][i]
    layers, mbs = _setup(s0)
    with pytest.raises(ExactlyOnceError, match=f"{w.stage}I{w.mb} at .*has no {w.stage}W{w.mb}"):
        run_pipeline(_delete(s0, 1, i), layers, mbs, force=True)
    # the W moved to the front of its rank: located dependency error
    acts = [list(a) for a in s0.actions]
    del acts[1][i]
    acts[1].insert(0, w)
    with pytest.raises(DependencyError, match=f"needs {w.stage}I{w.mb}") as e:
        run_pipeline(s0.with_actions(acts), layers, mbs, force=True)
    assert (e.value.rank, e.value.step) == (1, 0)


def test_unmatched_receive_blocks_with_location():
    s0 = generate("1f1b", 2, 4)
    # delete the last SEND_B of rank 1: rank 0's last RECV_B never completes
    sends = _find_ops(s0, 1, lambda op: op.kind is CommKind.SEND_B)
    i, j = sends[-1]
    acts = [list(a) for a in s0.actions]
    a = acts[1][i]
    if j is None or len(a.ops) == 1:
        del acts[1][i]
    else:
        acts[1][i] = Batch(tuple(o for k, o in enumerate(a.ops) if k != j), a.wait)
    s = s0.with_actions(acts)
    layers, mbs = _setup(s)
    with pytest.raises(ExecutionError) as e:
        run_pipeline(s, layers, mbs, force=True)
    print(f"{type(e.value).__name__}: {e.value}")
    assert isinstance(e.value, (BlockedError, DependencyError))
    assert "rank 0" in str(e.value)


def test_bad_given_order_is_refused():
    s = generate("1f1b", 2, 4)
    layers, mbs = _setup(s)
    order = [(1, k) for k in range(len(s.actions[1]))] + [(0, k) for k in range(len(s.actions[0]))]
    with pytest.raises(ExecutionError, match="not executable"):
        run_pipeline(s, layers, mbs, order=order)
    with pytest.raises(ExecutionError, match="is at step"):
        run_pipeline(s, layers, mbs, order=[(0, 1)])


# ------------------------------------------------------------ silent faults


def test_comparison_reports_what_no_schedule_fault_shows():
    s = generate("dualpipe", 4, 8)
    layers, mbs = _setup(s, "transformer")
    base = run_baseline(layers, mbs)
    # micro-batch data swapped (e.g. a data loader bug): runs fine, numbers differ
    swapped = [mbs[1], mbs[0]] + list(mbs[2:])
    res = run_pipeline(s, layers, swapped)
    c = compare(res, base)
    assert not c.matches and not c.bitwise
    assert any(not torch.equal(torch.tensor(x.pipeline), torch.tensor(x.baseline)) for x in c.losses[:2])
    # a tied layer whose mirrored copy is not summed in (one copy's gradient only)
    res = run_pipeline(s, layers, mbs)
    copies = res.copy_grads()
    name = "layer0.fc1.weight"
    one_copy = dataclasses.replace(res, grads={**res.grads, name: copies[(s.rank_of(0), name)]})
    c = compare(one_copy, base)
    assert c.mismatched == (name,)
    row = next(p for p in c.params if p.name == name)
    print(f"unsummed tied copy: {name} max abs {row.max_abs:.3e} max rel {row.max_rel:.3e}")
    assert row.max_abs > 1e-6


# ------------------------------------------------------------ random mutants


def _mutate(s, data):
    rank = data.draw(st.integers(0, s.num_ranks - 1))
    acts = [list(a) for a in s.actions]
    prog = acts[rank]
    n = len(prog)
    how = data.draw(st.sampled_from(["swap", "drop", "dup", "mb", "move"]))
    i = data.draw(st.integers(0, n - 1))
    if how == "swap":
        j = data.draw(st.integers(0, n - 1))
        prog[i], prog[j] = prog[j], prog[i]
    elif how == "drop":
        del prog[i]
    elif how == "dup":
        prog.insert(data.draw(st.integers(0, n)), prog[i])
    elif how == "move":
        a = prog.pop(i)
        prog.insert(data.draw(st.integers(0, n - 1)), a)
    else:  # change the micro-batch of one compute or comm op to another of its route
        a = prog[i]
        route = s.routes[s.route_of_stage(_some_stage(a))]
        mb = data.draw(st.sampled_from(route.microbatches))
        prog[i] = _with_mb(a, data.draw(st.integers(0, 7)), mb)
    return s.with_actions(acts), f"{how} rank {rank} step {i}"


def _some_stage(a):
    if isinstance(a, (Compute, Comm)):
        return a.stage
    if isinstance(a, Overlap):
        return a.f.stage
    return a.ops[0].stage


def _with_mb(a, k, mb):
    if isinstance(a, (Compute, Comm)):
        return dataclasses.replace(a, mb=mb)
    if isinstance(a, Overlap):
        return dataclasses.replace(a, f=dataclasses.replace(a.f, mb=mb)) if k % 2 else \
            dataclasses.replace(a, b=dataclasses.replace(a.b, mb=mb))
    ops = list(a.ops)
    ops[k % len(ops)] = dataclasses.replace(ops[k % len(ops)], mb=mb)
    return Batch(tuple(ops), a.wait)


_BASES = {
    (fam, r, m): generate(fam, r, m)
    for fam, r, m in [("1f1b", 2, 4), ("zb-h1", 3, 4), ("interleaved-1f1b", 2, 4),
                      ("dualpipe", 2, 4), ("dualpipev", 2, 4)]
}
_DATA = {}


def _data(s):
    key = (num_model_layers(s, 1), s.num_microbatches)
    if key not in _DATA:
        _DATA[key] = _setup(s, hidden=3)
    return _DATA[key]


@given(st.sampled_from(sorted(_BASES)), st.data())
def test_checker_and_executor_agree_on_random_mutants(base_key, data):
    s, what = _mutate(_BASES[base_key], data)
    layers, mbs = _data(s)
    verdict, failed = _failed(s)
    try:
        res = run_pipeline(s, layers, mbs, force=True)
        ran = True
    except ExecutionError as e:
        ran = False
        err = e
    if verdict == "VERIFIED":
        assert ran, f"{base_key} {what}: checker VERIFIED but the executor failed: {err}"
        c = compare(res, run_baseline(layers, mbs))
        assert c.bitwise, f"{base_key} {what}: VERIFIED mutant gives other gradients"
        assert all(torch.equal(a, b) for a, b in zip(
            run_pipeline(s, layers, mbs).losses, res.losses))
    else:
        assert not ran, (
            f"{base_key} {what}: checker says {verdict} ({sorted(failed)}) but the "
            "executor ran it to the end"
        )
        assert isinstance(err, ExecutionError) and str(err)


# ------------------------------------------------------------ spec examples

_EXAMPLES = Path(__file__).resolve().parents[1] / "specs" / "examples"


@pytest.mark.parametrize(
    "path", sorted(_EXAMPLES.glob("*.json")) + sorted(_EXAMPLES.glob("broken/*.json")),
    ids=lambda p: p.name,
)
def test_spec_examples_checker_and_executor_agree(path):
    """Valid examples match the baseline bitwise; a broken one the checker
    refutes under the eager model never runs to the end, even forced (the
    nccl-only deadlocks and the memory example do run: eager semantics, no limit)."""
    s = load_schedule(path)
    layers, mbs = _setup(s, hidden=3)
    verdict, failed = _failed(s)
    try:
        res = run_pipeline(s, layers, mbs, force=True)
    except ExecutionError as e:
        assert verdict == "REFUTED", f"{path.name}: checker {verdict} but the executor failed: {e}"
        assert path.parent.name == "broken"
        print(f"{path.name}: {sorted(failed)} -> {type(e).__name__}: {e}")
        return
    assert verdict == "VERIFIED", f"{path.name}: checker refutes {sorted(failed)}, executor ran it"
    assert compare(res, run_baseline(layers, mbs)).bitwise

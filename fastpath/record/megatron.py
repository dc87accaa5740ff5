"""megatron-core's pipeline schedules (PyPI ``megatron-core``), made visible to the recorder.

What it is: ``patch_module(recorder, schedules)``, called once the script imports
``megatron.core.pipeline_parallel.schedules`` (fastpath.record.pipelining's
``PatchOnImport``: only scripts that import it pay). Inside
``forward_backward_pipelining_without_interleaving`` and
``forward_backward_pipelining_with_interleaving`` (both wrapped, so that the
state of one call is dropped when it returns):

- every ``forward_step`` is a compute F of (stage, micro-batch): the micro-batch
  is its ``current_microbatch`` argument, the stage its ``vp_stage`` (model
  chunk, 0 when absent) times the pipeline size plus the pipeline rank, which is
  megatron's layout of virtual stages (non-interleaved: stage = pipeline rank);
- every ``backward_step`` is a compute B of the forward whose output it is given:
  megatron passes it the output ``forward_step`` returned, taken from the front
  of the model chunk's first-in-first-out list (``output_tensors[chunk].pop(0)``
  in ``backward_step_helper_preprocess``; ``output_tensors.pop(0)`` without
  interleaving), so that output object names the (stage, micro-batch);
- the point-to-point ops megatron posts (``p2p_communication._p2p_ops`` and
  ``_batched_p2p_ops``, whose four tensors have fixed roles) carry payloads
  named by their producer. A send names what it sends: the output of the
  forward F/(stage, mb), or the input gradient of the backward B/(stage, mb),
  that returned that tensor. A receive names what this rank's schedule will
  consume it as: megatron appends each received tensor to the model chunk's
  first-in-first-out list, and runs the forwards in the order of
  ``get_schedule_table`` (virtual micro-batch k: micro-batch and chunk of row k)
  and the backwards in the same rows with the chunk reversed
  (``get_model_chunk_id(k, forward=False)``); so the n-th forward receive of the
  rank is the input of the n-th forward in that order that is not the very first
  stage, F/(stage - 1, mb), and the n-th backward receive is the output gradient
  of the n-th backward that is not the very last stage, B/(stage + 1, mb)
  (without interleaving the table is micro-batches 0..M-1 on one chunk). When
  the step later consumes a received tensor (``forward_step``'s input,
  ``backward_step``'s output gradient) for another (stage, micro-batch) than its
  receive named, a line on stderr says so.

What it does not cover: ``forward_backward_no_pipelining`` and the combined
1F1B path (``overlap_moe_expert_parallel_comm``), whose steps are not recorded;
the shape exchange of ``variable_seq_lengths`` (its messages carry no payload);
``use_ring_exchange_p2p``; several tensors per message (encoder-decoder shapes:
each receive takes the next expected payload); other megatron versions'
private functions (one that is absent is left alone).
"""

from __future__ import annotations

import functools
import inspect
import sys
import weakref

MODULE = "megatron.core.pipeline_parallel.schedules"
P2P_MODULE = "megatron.core.pipeline_parallel.p2p_communication"
ENTRIES = {"forward_backward_pipelining_without_interleaving": False,
           "forward_backward_pipelining_with_interleaving": True}
# p2p_communication's posting functions: argument -> (direction, is a send)
_ROLES = (("tensor_send_next", "F", True), ("tensor_send_prev", "B", True),
          ("tensor_recv_prev", "F", False), ("tensor_recv_next", "B", False))


def _tensors(x) -> list:
    """The tensors of a forward output / input gradient (a tensor, or a list of them)."""
    if isinstance(x, (list, tuple)):
        return [t for t in x if t is not None and hasattr(t, "shape")]
    return [] if x is None or not hasattr(x, "shape") else [x]


class _Step:
    """What one call of a schedule function knows: its layout, the forwards whose
    backward is to come, the payloads of tensors to send and of receives."""

    def __init__(self, rank: int, size: int, chunks: int, table):
        self.rank, self.size, self.chunks = rank, size, chunks
        self.last = chunks * size - 1
        self.outputs: dict = {}  # id(forward output) -> (output, stage, mb)
        self.sending: dict = {}  # id(tensor) -> (weakref, payload)
        self.received: dict = {}  # id(receive buffer) -> (weakref, payload)
        fwd, bwd = [], []
        for mb, chunk in table:
            s = chunk * size + rank
            if s > 0:
                fwd.append({"kind": "F", "stage": s - 1, "mb": int(mb)})
            s = (chunks - 1 - chunk) * size + rank
            if s < self.last:
                bwd.append({"kind": "B", "stage": s + 1, "mb": int(mb)})
        self.expect = {"F": iter(fwd), "B": iter(bwd)}
        self.counted: dict[int, int] = {}  # stage -> forwards seen (no current_microbatch)

    def stage(self, vp_stage) -> int:
        return (int(vp_stage) if vp_stage is not None else 0) * self.size + self.rank

    def will_send(self, out, kind: str, stage: int, mb: int) -> None:
        for t in _tensors(out):
            self.sending[id(t)] = (weakref.ref(t), {"kind": kind, "stage": stage, "mb": mb})

    def consumed(self, x, kind: str, stage: int, mb: int) -> None:
        """Say so on stderr when a received tensor is consumed other than its receive named."""
        for t in _tensors(x):
            got = self.received.pop(id(t), None)
            if got is None or got[0]() is not t or got[1] is None:
                continue
            want = {"kind": kind, "stage": stage, "mb": mb}
            if got[1] != want:
                print(f"ppverify record: megatron consumed the receive recorded as {got[1]} "
                      f"as {want} on pipeline rank {self.rank}", file=sys.stderr)


def _step_of(module, kwargs: dict, interleaved: bool) -> _Step:
    """The layout of a schedule call, found as the schedule finds it."""
    model = kwargs.get("model")
    first = model[0] if isinstance(model, list) else model
    comm, pgs = kwargs.get("p2p_communicator"), kwargs.get("pg_collection")
    if comm is not None:
        group = comm.pp_group
    elif pgs is not None:
        group = pgs.pp
    else:
        group = module.parallel_state.get_pipeline_model_parallel_group()
    m = int(kwargs["num_microbatches"])
    if interleaved:
        config = module.get_model_config(first)
        table = module.get_schedule_table(m, len(model), config.microbatch_group_size_per_vp_stage)
        chunks = len(model)
    else:
        table, chunks = [(mb, 0) for mb in range(m)], 1
    return _Step(group.rank(), group.size(), chunks, table)


def patch_module(rec, module) -> None:
    state = {"step": None}
    for name, interleaved in ENTRIES.items():
        if hasattr(module, name):
            rec._patch(module, name, _entry(state, module, getattr(module, name), interleaved))
    if hasattr(module, "forward_step"):
        rec._patch(module, "forward_step", _forward(rec, state, module.forward_step))
    if hasattr(module, "backward_step"):
        rec._patch(module, "backward_step", _backward(rec, state, module.backward_step))
    p2p = sys.modules.get(P2P_MODULE)  # schedules imports it
    for name in ("_p2p_ops", "_batched_p2p_ops"):
        if p2p is not None and hasattr(p2p, name):
            rec._patch(p2p, name, _posting(rec, state, getattr(p2p, name)))


def _entry(state: dict, module, orig, interleaved: bool):
    @functools.wraps(orig)
    def wrapper(*args, **kwargs):
        outer = state["step"]
        state["step"] = _step_of(module, kwargs, interleaved) if "num_microbatches" in kwargs \
            else None
        try:
            return orig(*args, **kwargs)
        finally:
            state["step"] = outer

    return wrapper


def _forward(rec, state: dict, orig):
    names = list(inspect.signature(orig).parameters)
    i_in, i_mb, i_vp = (names.index(n) for n in ("input_tensor", "current_microbatch", "vp_stage"))

    def arg(args, kwargs, i, name):
        return args[i] if len(args) > i else kwargs.get(name)

    @functools.wraps(orig)
    def wrapper(*args, **kwargs):
        step = state["step"]
        if step is None:
            return orig(*args, **kwargs)
        stage = step.stage(arg(args, kwargs, i_vp, "vp_stage"))
        mb = arg(args, kwargs, i_mb, "current_microbatch")
        if mb is None:  # megatron's schedules pass it; else the stage's forwards in order
            mb = step.counted.get(stage, 0)
        mb = int(mb)
        step.counted[stage] = mb + 1
        step.consumed(arg(args, kwargs, i_in, "input_tensor"), "F", stage - 1, mb)
        rec.compute({"kind": "F", "stage": stage, "mb": mb})
        res = orig(*args, **kwargs)
        out = res[0] if isinstance(res, tuple) else res
        step.outputs[id(out)] = (out, stage, mb)
        if stage < step.last:
            step.will_send(out, "F", stage, mb)
        return res

    return wrapper


def _backward(rec, state: dict, orig):
    @functools.wraps(orig)
    def wrapper(input_tensor, output_tensor, output_tensor_grad, *args, **kwargs):
        step = state["step"]
        known = None if step is None else step.outputs.pop(id(output_tensor), None)
        if known is None or known[0] is not output_tensor:
            return orig(input_tensor, output_tensor, output_tensor_grad, *args, **kwargs)
        _, stage, mb = known
        step.consumed(output_tensor_grad, "B", stage + 1, mb)
        rec.compute({"kind": "B", "stage": stage, "mb": mb})
        grad = orig(input_tensor, output_tensor, output_tensor_grad, *args, **kwargs)
        if stage > 0:
            step.will_send(grad, "B", stage, mb)
        return grad

    return wrapper


def _posting(rec, state: dict, orig):
    """``_p2p_ops`` / ``_batched_p2p_ops``: each tensor's payload, handed to the
    recorder's per-tensor table (read when the op on that tensor is posted)."""

    @functools.wraps(orig)
    def wrapper(*args, **kwargs):
        step = state["step"]
        if step is None or args:
            return orig(*args, **kwargs)
        posted = []
        for name, kind, is_send in _ROLES:
            t = kwargs.get(name)
            if t is None:
                continue
            if is_send:
                got = step.sending.pop(id(t), None)
                payload = got[1] if got is not None and got[0]() is t else None
            else:
                payload = next(step.expect[kind], None)
                step.received[id(t)] = (weakref.ref(t), payload)
            if payload is not None:
                rec._tensor_payload[id(t)] = (weakref.ref(t), payload)
                posted.append(id(t))
        try:
            return orig(*args, **kwargs)
        finally:
            for key in posted:  # an op the recorder did not see leaves nothing behind
                rec._tensor_payload.pop(key, None)

    return wrapper

"""torch.distributed.pipelining's stages, made visible to the recorder.

What it is: ``patch(recorder, stage_class)`` wraps the methods of
``_PipelineStageBase`` that every schedule of torch.distributed.pipelining
calls: ``forward_one_chunk`` (a compute op F of ``stage_index`` on the chunk),
``backward_one_chunk`` (B, or I when ``full_backward=False``) and
``backward_weight_one_chunk`` (W); and ``get_fwd_recv_ops`` /
``get_fwd_send_ops`` / ``get_bwd_recv_ops`` / ``get_bwd_send_ops``, whose
``P2POp``s then carry the payload they move, named by its producer: a forward
send of stage s is F/s, a forward receive F/(s-1), a backward send B/s, a
backward receive B/(s+1) (stages of a pipeline are numbered along the chain,
looped and V schedules included).

The recorder calls ``patch`` at once when the stage module is loaded already,
else ``PatchOnImport`` (a meta-path finder) calls it right after the script
imports it: loading torch.distributed.pipelining costs seconds, which only
scripts that use it should pay.

What it does not cover: private methods of other torch versions (a method that
is absent is left alone), other runtimes (fastpath.record.hooks is theirs).
"""

from __future__ import annotations

import functools
import importlib.abc
import sys

STAGE_MODULE = "torch.distributed.pipelining.stage"


class PatchOnImport(importlib.abc.MetaPathFinder):
    """A meta-path finder that calls ``then(module)`` once the module ``name`` has loaded."""

    def __init__(self, name: str, then):
        self.name, self.then = name, then

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)  # let the others find it; we only wrap its loading
        try:
            from importlib.util import find_spec

            spec = find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader, then, unhook = spec.loader, self.then, self.unhook

        class _Loader(importlib.abc.Loader):
            def __getattr__(self, attr):  # get_source, get_filename...: the real loader's
                return getattr(loader, attr)

            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                unhook()
                then(module)

        spec.loader = _Loader()
        return spec

    def unhook(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def patch_module(rec, module) -> None:
    patch(rec, module._PipelineStageBase)


_PAYLOAD_OF = {  # method -> (kind, stage offset from the stage's own index)
    "get_fwd_send_ops": ("F", 0),
    "get_fwd_recv_ops": ("F", -1),
    "get_bwd_send_ops": ("B", 0),
    "get_bwd_recv_ops": ("B", 1),
}


def patch(rec, cls) -> None:
    for name, (kind, offset) in _PAYLOAD_OF.items():
        if hasattr(cls, name):
            rec._patch(cls, name, _with_payload(rec, getattr(cls, name), kind, offset))
    if hasattr(cls, "forward_one_chunk"):
        rec._patch(cls, "forward_one_chunk", _computing(rec, cls.forward_one_chunk, "F"))
    if hasattr(cls, "backward_one_chunk"):
        rec._patch(cls, "backward_one_chunk", _computing(rec, cls.backward_one_chunk, "B"))
    if hasattr(cls, "backward_weight_one_chunk"):
        rec._patch(cls, "backward_weight_one_chunk",
                   _computing(rec, cls.backward_weight_one_chunk, "W"))


def _with_payload(rec, orig, kind: str, offset: int):
    @functools.wraps(orig)
    def wrapper(stage, chunk_id, *args, **kwargs):
        saved = rec.payload
        rec.payload = {"kind": kind, "stage": int(stage.stage_index) + offset, "mb": int(chunk_id)}
        try:
            return orig(stage, chunk_id, *args, **kwargs)
        finally:
            rec.payload = saved

    return wrapper


def _computing(rec, orig, kind: str):
    @functools.wraps(orig)
    def wrapper(stage, chunk_id, *args, **kwargs):
        k = kind
        if kind == "B":
            full = kwargs.get("full_backward", args[1] if len(args) > 1 else True)
            k = "B" if full else "I"
        rec.compute({"kind": k, "stage": int(stage.stage_index), "mb": int(chunk_id)})
        return orig(stage, chunk_id, *args, **kwargs)

    return wrapper

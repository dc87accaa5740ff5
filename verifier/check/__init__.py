"""The checker: per-property passes (``properties``), the happens-before graph
engine (``hbgraph``), the Z3 engine (``encoding`` and ``smt`` build the
constraint system as data and text, ``z3engine`` solves it: the only module here
that imports z3), the independent certificate checker (``certificate``, which shares
nothing with the others but ``verifier.ir`` and the result types) and the
orchestration that chooses the engine (``checker``)."""

import sys as _sys
import types as _types


class _CheckPackage(_types.ModuleType):
    """This package, callable: ``from verifier import check; check(x, comm_model=...)``
    is ``verifier.check.api.check_any`` (a schedule, a program, a path, a PyTorch
    pipeline_order or schedule object)."""

    def __call__(self, x, comm_model: str = "nccl", **kwargs):
        # verifier.check.api imports the engines of this package, which import
        # this package first: the API is loaded on the first call, not here
        from verifier.check.api import check_any  # deferred: api imports this package's modules

        return check_any(x, comm_model=comm_model, **kwargs)


_sys.modules[__name__].__class__ = _CheckPackage

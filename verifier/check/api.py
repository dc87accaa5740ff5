"""``verifier.check(x, comm_model=...)``: one entry point for everything that can be checked.

What it is: ``check_any`` takes

- a ``verifier.ir.Schedule`` (``verifier.check.checker.check``);
- a recorded ``verifier.program.Program`` or a parsed program document
  (``verifier.check.program.check_program``);
- a path (``str`` or ``os.PathLike``): a pp-schedule JSON, a PyTorch CSV (by
  extension) or a recorded program (``"kind": "program"``);
- a parsed pp-schedule document (``dict`` with ``"format"``);
- a PyTorch ``pipeline_order`` (``dict`` rank -> list of ``_Action`` or None);
- a ``torch.distributed.pipelining`` schedule object (``PipelineScheduleMulti`` or
  ``PipelineScheduleSingle``): its ``pipeline_order``; with ``lowering="torch"``
  its ``pipeline_order_with_comms`` (PyTorch's own send/receive placement,
  ``_add_send_recv``) instead of this project's lowering. For every other
  compute-only input ``lowering="torch"`` places them by the same rule, restated
  in ``verifier.semantics.lowering_torch``.

and returns the result object the CLI prints (``CheckResult`` for a schedule,
``ProgramCheckResult`` for a program; both have ``verdict`` and
``verdict.exit_code``). Actions are read duck-typed, never by importing torch:
an action has ``stage_index``, ``computation_type`` (its ``value`` or ``str()``
is PyTorch's short name: F, B, I, W, SEND_F, ..., OVERLAP_F_B),
``microbatch_index`` and, for an overlap, ``sub_actions``; they are written in
PyTorch's CSV notation and read by ``verifier.format.csvio`` (the same reading
as a ``_dump_csv`` file, FSDP cells included).

What it does not cover: running anything; other objects (TypeError names what
is accepted).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from verifier.check.checker import check
from verifier.check.program import check_program
from verifier.errors import ScheduleError
from verifier.format.csvio import csv_to_schedule
from verifier.format.io import schedule_from_dict
from verifier.format.program import is_program_document, load_document, program_from_dict
from verifier.ir import Schedule
from verifier.program import Program
from verifier.semantics.lowering_torch import LOWERINGS

ACCEPTED = ("a Schedule, a recorded Program, a path (JSON, CSV or program), a pp-schedule or "
            "program document (dict), a PyTorch pipeline_order dict, or a PipelineSchedule object")


def action_cell(a: Any) -> str:
    """One PyTorch action (duck-typed ``_Action``) in the CSV notation; None -> ""."""
    if a is None:
        return ""
    ct = a.computation_type
    name = getattr(ct, "value", None) or str(ct)
    subs = getattr(a, "sub_actions", None)
    if subs:
        return "(" + ";".join(action_cell(s) for s in subs) + ")" + name
    mb = a.microbatch_index
    return f"{a.stage_index}{name}{'' if mb is None else mb}"


def order_to_schedule(order: Mapping[int, Any], source: str = "<pipeline_order>") -> Schedule:
    """A PyTorch ``pipeline_order`` (rank -> actions) as a Schedule, read as its CSV is."""
    try:
        ranks = sorted(int(r) for r in order)
    except (TypeError, ValueError):
        raise ScheduleError("pipeline_order's keys must be ranks (integers)", source) from None
    if not ranks:
        raise ScheduleError("pipeline_order is empty", source)
    if ranks[0] < 0:
        raise ScheduleError(f"pipeline_order has rank {ranks[0]}", source)
    rows = []
    for r in range(ranks[-1] + 1):
        acts = order.get(r, ())
        if acts is None:
            acts = ()
        try:
            rows.append(",".join(action_cell(a) for a in acts))
        except AttributeError as e:
            raise ScheduleError(f"rank {r}: not a pipelining action ({e})", source) from None
    return csv_to_schedule("\n".join(rows) + "\n", source=source)


def _schedule_object_order(x: Any, lowering: str) -> Mapping[int, Any]:
    if lowering == "torch":
        order = getattr(x, "pipeline_order_with_comms", None)
        if not order:
            raise ScheduleError(
                f"{type(x).__name__} has no pipeline_order_with_comms (PyTorch lowers only "
                "PipelineScheduleMulti schedules that use the runtime's own send/recv placement); "
                "use lowering='ppverify'", "lowering")
        return order
    order = getattr(x, "pipeline_order", None)
    if order is None:
        build = getattr(x, "_get_pipeline_order", None)
        order = build() if callable(build) else None
    if not order:
        raise ScheduleError(f"{type(x).__name__} has no pipeline_order to check", "pipeline_order")
    return order


def _looks_like_order(x: Mapping) -> bool:
    return bool(x) and all(isinstance(k, int) for k in x) and "format" not in x


def check_any(x: Any, comm_model: str = "nccl", *, lowering: str = "ppverify", **kwargs):
    """Check ``x`` (see the module docstring for what it may be) under ``comm_model``.

    ``kwargs`` go to ``verifier.check.checker.check`` for schedules (engine,
    memory_limit, activation_bytes, z3_timeout_ms, ...); a program takes
    ``engine``, ``z3_timeout_ms``, ``z3_rlimit`` and ``validate_certificate``.
    Raises ScheduleError (a ValueError) for bad input, TypeError for an object
    of another kind."""
    if lowering not in LOWERINGS:
        raise ScheduleError(f"lowering must be 'ppverify' or 'torch', got {lowering!r}", "lowering")
    if lowering != "ppverify":
        kwargs = dict(kwargs, lowering=lowering)  # a program refuses it (``_program``)
    if isinstance(x, Program):
        return _program(x, comm_model, kwargs)
    if isinstance(x, Schedule):
        return check(x, comm_model=comm_model, **kwargs)
    if isinstance(x, (str, os.PathLike)):
        loaded = load_document(x)
        if isinstance(loaded, Program):
            return _program(loaded, comm_model, kwargs)
        return check(loaded[0], comm_model=comm_model, **kwargs)
    if isinstance(x, Mapping):
        if is_program_document(x):
            return _program(program_from_dict(dict(x)), comm_model, kwargs)
        if _looks_like_order(x):
            return check(order_to_schedule(x), comm_model=comm_model, **kwargs)
        return check(schedule_from_dict(dict(x)), comm_model=comm_model, **kwargs)
    if hasattr(x, "pipeline_order") or hasattr(x, "_get_pipeline_order"):
        # torch's own lowered order, when asked for, already has its communication
        kwargs.pop("lowering", None)
        return check(order_to_schedule(_schedule_object_order(x, lowering),
                                       source=f"<{type(x).__name__}>"),
                     comm_model=comm_model, **kwargs)
    raise TypeError(f"verifier.check takes {ACCEPTED}; got {type(x).__name__}")


# the keyword arguments a recorded program takes (verifier.check.program.check_program)
PROGRAM_OPTIONS = ("engine", "z3_timeout_ms", "z3_rlimit", "validate_certificate")


def _program(p: Program, comm_model: str, kwargs: dict):
    other = sorted(k for k in kwargs if k not in PROGRAM_OPTIONS)
    if other:
        raise ScheduleError(f"a recorded program takes no {', '.join(other)} "
                            "(those are schedule options)", "check")
    return check_program(p, comm_model=comm_model, **kwargs)

"""The text output of `python -m verifier check` (specs/check-output.md).

What it is: ``render_text`` (the verdict, one line a property, counterexamples
with the cycle of waits hop by hop, ``--verbose``'s stats and grid) and the
sentences it is built of (``hop_text``, ``user_message``), shared with the JSON
output (``verifier.cli.check_json``).

What it does not cover: deciding anything, the JSON document, the per-model
table of ``--comm-model all`` (``verifier.cli.check_models``).
"""

from __future__ import annotations

from verifier.check.checker import CheckResult, Event, EventKind, PropertyId, Status, Violation
from verifier.format import guard
from verifier.format.csvio import fsdp_note
from verifier.format.origin import Origin
from verifier.format.units import format_bytes
from verifier.ir import Batch, Comm, action_text, loc


def _at(e: Event) -> str:
    return f"{loc(e.rank, e.step)} {e.text}"


def _msg(e: Event) -> str:
    """An op-done event: the op, and its matched partner when it has one."""
    here = f"{e.text} at {loc(e.rank, e.step, e.sub)}"
    if e.peer is None:
        return here
    pr, pk, psub = e.peer
    return f"{here} with its matched {e.peer_text} at {loc(pr, pk, psub)}"


def _is_comm(e: Event) -> bool:
    return isinstance(e.action, (Comm, Batch))


def hop_text(h, merge: bool = False) -> str | None:
    """One hop of a cycle of waits as a sentence; None when ``merge`` folds it
    into the next one (a plain op's unit completing is that op completing; a
    wait-BATCH returning is it completing)."""
    w, t = h.waiter, h.target
    K = EventKind
    if w.kind is K.BEGIN:
        if t.kind in (K.BEGIN, K.RETURN) and t.rank == w.rank and t.step == w.step - 1:
            what = "return" if t.kind is K.RETURN else ("be posted" if _is_comm(t) else "run")
            return f"{_at(w)} comes after {_at(t)}, which must {what} first"
        if t.kind is K.BEGIN:
            return f"{_at(w)} needs {_at(t)} to run first"
        if t.kind is K.OP_DONE:
            return f"{_at(w)} needs its input, the message {_msg(t)}, to complete first"
        if t.kind is K.NEVER:
            return f"{_at(w)} needs an input that rank {w.rank} never receives or computes"
    if w.kind is K.RETURN:
        if merge and t.kind is K.UNIT_DONE:
            return None
        return f"{_at(w)} returns only once its ops complete"
    if w.kind is K.ACTIVE:
        if t.kind is K.BEGIN:
            return f"{_at(w)} enters rank {w.rank}'s comm stream only once rank {w.rank} posts it"
        if t.kind is K.UNIT_DONE:
            return (f"{_at(w)} is queued on rank {w.rank}'s comm stream behind {_at(t)}, "
                    "which must complete first")
    if w.kind is K.UNIT_DONE and t.kind is K.OP_DONE:
        if merge and not w.is_batch:
            return None
        return f"{_at(w)} completes only once its op {_msg(t)} does"
    if w.kind is K.OP_DONE:
        if t.kind is K.NEVER:
            return (f"{w.text} at {loc(w.rank, w.step, w.sub)} has no matched partner "
                    "(FIFO on its rank pair), so it never completes")
        if t.kind is K.ACTIVE:
            return (f"{_msg(w)} complete together, once both head their ranks' comm streams: "
                    f"{_at(t)} must get there first")
        if t.kind is K.BEGIN:
            return f"{_msg(w)} completes only once rank {t.rank} posts {t.text} at {loc(t.rank, t.step)}"
    return f"{w.kind.value} of {_at(w)} waits for {t.kind.value} of {_at(t)}"


def hop_lines(result: CheckResult, origin: Origin | None = None) -> list[str]:
    """The cycle of waits for the text output, one line a hop (internal hops
    merged), places in the user's coordinates when ``origin`` is given."""
    if result.cycle is None:
        return []
    lines = [hop_text(h, merge=True) for h in result.cycle.hops]
    return [x if origin is None else origin.rewrite(x) for x in lines if x is not None]


def user_message(v: Violation, origin: Origin | None) -> str:
    """A violation's message with its places in the user's coordinates; a stage
    on the wrong rank of a CSV also names the cell that placed the stage."""
    if origin is None:
        return v.message
    msg = origin.rewrite(v.message)
    if v.code == "action-rank":
        placed = origin.stage_place(v.arg("stage"))
        if placed is not None:
            msg += f" ({placed} places stage {v.arg('stage')} on rank {v.arg('owner')})"
    return msg


def _status_text(st: Status) -> str:
    return "FAILS" if st is Status.FAILS else st.value


def _detail(result: CheckResult, pid: PropertyId) -> str:
    pr = result.result_of(pid)
    if pr.status is Status.NOT_CHECKED:
        return "(well-formed fails)"
    if pr.status is Status.UNKNOWN:
        return "see \"why unknown\" below"
    if pr.status is Status.FAILS:
        n = len(pr.violations)
        return f"{n} counterexample{'s' if n != 1 else ''}"
    if pid is PropertyId.DEADLOCK_FREE:
        cert = f"; certificate {result.certificate}" if result.certificate else ""
        return f"witness order of {result.stats.num_actions} steps (decided by {pr.decided_by}{cert})"
    if pid is PropertyId.MEMORY and result.activation_bytes is not None:
        pk = ", ".join(format_bytes(x) for x in result.peaks)
        lim = "no limit given" if result.memory_limit is None else f"limit {format_bytes(result.memory_limit)}"
        return f"peak activation memory per rank: {pk} ({lim})"
    if pid is PropertyId.MEMORY:
        pk = " ".join(_num(x) for x in result.peaks)
        lim = "no limit given" if result.memory_limit is None else f"limit {_num(result.memory_limit)}"
        return f"peak activations per rank: {pk} ({lim})"
    return ""


def input_notes(schedule) -> list[str]:
    """What reading the input did that the verdict does not show (text: "note:"
    lines; JSON: "notes"): PyTorch FSDP cells read as no-ops."""

    note = fsdp_note(schedule)
    return [note] if note else []


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_UNKNOWN_CODES = ("solver-unknown", "engine-disagree", "certificate-rejected")


def render_text(result: CheckResult, verbose: bool = False, with_witness: bool = False,
                source: str = "", origin: Origin | None = None,
                max_counterexamples: int | None = None) -> str:
    """The text output; ``origin`` (the input file's ``verifier.format.origin.Origin``)
    writes counterexample places in the user's coordinates (CSV row and column,
    the user's step of a lowered schedule); at most ``max_counterexamples``
    counterexamples are listed, the rest counted."""
    s = result.schedule
    out = [f"{result.verdict.value} under {result.comm_model} (engine: {result.engine})"]
    name = guard.printable(s.name or s.family or source or "(unnamed)")
    low = ", lowered from compute-only" if result.lowered else ""
    if result.lowering == "torch":
        low += " by PyTorch's rule (_add_send_recv)"
    out.append(
        f"schedule: {name}, {s.num_ranks} ranks, {s.num_microbatches} micro-batches, "
        f"{s.num_actions} steps{low}"
    )
    if result.engine_note:
        out.append(f"note: {result.engine_note}")
    out.extend(f"note: {n}" for n in input_notes(s))
    width = max(len(p.value) for p in PropertyId)
    for pr in result.properties:
        line = f"  {pr.property.value:<{width}}  {_status_text(pr.status):<11}  {_detail(result, pr.property)}"
        out.append(line.rstrip())
    viols = [v for v in result.violations if v.code not in _UNKNOWN_CODES]
    why = [v for v in result.violations if v.code in _UNKNOWN_CODES]
    if why:
        out.append("why unknown:")
        out.extend(f"  [{v.property.value}] {v.message}" for v in why)
    left_out = 0
    if max_counterexamples is not None and len(viols) > max_counterexamples:
        left_out = len(viols) - max_counterexamples
        viols = viols[:max_counterexamples]
    if viols:
        out.append("counterexamples:")
        for v in viols:
            out.append(f"  [{v.property.value}] {user_message(v, origin)}")
            if v.property is PropertyId.DEADLOCK_FREE and v.code in ("deadlock", "stuck"):
                lines = hop_lines(result, origin)
                for i, text in enumerate(lines, 1):
                    out.append(f"    {i}. {text}")
                if result.cycle is not None and result.cycle.closed:
                    out.append(f"    (and hop 1 again: a cycle of {len(lines)} waits)")
        if left_out:
            out.append(f"  ... and {left_out} more counterexample{'s' if left_out != 1 else ''} "
                       "(--max-counterexamples N prints more)")
    if result.z3_core and verbose:
        out.append("z3 unsat core:")
        out.extend(f"  {c}" for c in result.z3_core)
    if with_witness and result.witness is not None:
        out.append("witness: " + " ".join(f"{r}:{k}" for r, k in result.witness))
    if verbose:
        st = result.stats
        out.append(
            f"stats: {st.seconds:.3f} s total, engine {st.engine_seconds:.3f} s, certificate "
            f"{st.certificate_seconds:.3f} s, {st.num_actions} steps, {st.num_ops} comm ops, "
            f"{st.num_events} events"
        )
        out.extend(grid(result))
    return "\n".join(out) + "\n"


def _short(a) -> str:
    """A grid cell: the one notation (``action_text``), a BATCH as ``[op op]``
    (``]w``: with wait) to keep the columns narrow."""
    if isinstance(a, Batch):
        return "[" + " ".join(action_text(o) for o in a.ops) + ("]w" if a.wait else "]")
    return action_text(a)


GRID_MAX_CELLS = 1_000_000  # --verbose's grid: steps x ranks printed at most


def grid(result: CheckResult) -> list[str]:
    """Step x rank grid: one row a step, one column a rank; '*' marks a counterexample
    step. Omitted (one line says so) past GRID_MAX_CELLS steps x ranks."""
    s = result.schedule
    depth = max((len(a) for a in s.actions), default=0)
    if depth * s.num_ranks > GRID_MAX_CELLS:
        return [f"grid omitted: {depth} steps x {s.num_ranks} ranks is more than "
                f"{GRID_MAX_CELLS} cells"]
    marked = {tuple(x) for v in result.violations for x in v.locations}
    if result.cycle is not None:
        for h in result.cycle.hops:
            for e in (h.waiter, h.target):
                if e.kind is not EventKind.NEVER:
                    marked.add((e.rank, e.step))
    cells = [
        [("*" if (r, k) in marked else " ") + _short(a) for k, a in enumerate(acts)]
        for r, acts in enumerate(s.actions)
    ]
    depth = max((len(c) for c in cells), default=0)
    widths = [max([len(f"rank {r}")] + [len(x) for x in cells[r]]) for r in range(s.num_ranks)]
    head = "step  " + "  ".join(f"{'rank ' + str(r):<{widths[r]}}" for r in range(s.num_ranks))
    lines = ["grid (* = named by a counterexample; [..] = BATCH, [..]w = BATCH with wait):", head.rstrip()]
    for k in range(depth):
        row = "  ".join(
            f"{cells[r][k] if k < len(cells[r]) else '':<{widths[r]}}" for r in range(s.num_ranks)
        )
        lines.append(f"{k:<4}  {row}".rstrip())
    return lines

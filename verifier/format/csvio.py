"""PyTorch pipelining CSV <-> Schedule: read and write the dialect of
``torch.distributed.pipelining.schedules`` (``_dump_csv`` / ``_load_csv``).

The dialect (learnt from PyTorch's ``_Action.__repr__`` / ``_Action.from_str``
and the artifacts in test/distributed/pipelining/artifacts):

- one row per rank, row r = rank r's ordered actions; a cell is one action,
  an empty cell is an idle slot (PyTorch writes ``None`` as an empty cell);
- a cell is ``<stage><TYPE><micro-batch>``: ``2F0``, ``7I3``, ``1W5``,
  ``3B2`` (full backward), ``0SEND_F1``, ``2RECV_F1``, ``1SEND_B0``,
  ``3RECV_B4``; or ``(<F-cell>;<B-or-I-cell>)OVERLAP_F_B`` for an overlapped
  pair (DualPipeV's F&B). Comm ops name the *local* stage, as in our IR;
- two forms: ``compute_only`` (F, B, I, W, OVERLAP_F_B only) and
  ``compute_comms`` (the same plus SEND_F / RECV_F / SEND_B / RECV_B).
  Reading decides the form from the cells: any comm cell makes it
  compute_comms.

What a CSV does not carry, and how reading infers it (as PyTorch does):

- num_ranks = the number of rows (a blank line is a rank with no actions);
- stages = 0 .. S-1 with S = 1 + the largest stage id in any cell; every stage
  must occur in some cell, and its rank is the row of the first cell that runs
  it (rows in order, then columns). A stage run on two rows is read as
  written: its cells on the other row are actions on a rank that does not hold
  their stage, which ``check`` reports as ``well-formed`` REFUTED naming both
  cells (``verifier.format.origin``);
- layer of stage s = s (no tied stages);
- one route through stages 0, 1, .., S-1 taken by every micro-batch;
- num_microbatches = 1 + the largest micro-batch id in any cell;
- name, family and params are empty, except that the layout is kept in
  ``params["pytorch_csv"] = {"form": ..., "idle": {"<rank>": [column, ..]},
  "newline": "\\r\\n"}`` (idle cells as 0-based column indices; ``newline``
  only when every line ends with CRLF, as ``csv.writer`` in PyTorch's
  ``_dump_csv`` writes), so that writing the schedule back in the same form
  reproduces the file byte for byte.

PyTorch's runtime puts UNSHARD / RESHARD / REDUCE_GRAD (FSDP's parameter
all-gather and free, and the data-parallel gradient reduction) into every
compute_comms dump. They move nothing between pipeline ranks, so they are read
as no-ops: no action of the schedule, but kept with their place in
``params["pytorch_csv"]["fsdp"] = {"<rank>": [[column, "0UNSHARD"], ..]}`` so
that writing back reproduces the file, and ``fsdp_note(schedule)`` says how
many there were (``check`` prints it). ``drop_fsdp=True`` (``convert
--drop-fsdp``) drops them without a trace. Inside an OVERLAP_F_B they are
refused.

Writing is the inverse and refuses, with one line naming what and why, every
schedule whose reading-back would differ: more than one route (two-direction
DualPipe), a route other than 0..S-1 or micro-batches other than 0..M-1, a
stage whose layer is not its id (tied stages), a stage or the last micro-batch
absent from every action, an action on a rank that does not hold its stage.
A ``Batch`` has no CSV form (PyTorch's runtime posts each communication cell
as its own ``batch_isend_irecv``, not waited): a BATCH of one op without a wait
means exactly that, and is written as its op (``flatten_batches=None``, the
default; ``trivial_batches(schedule)`` counts them). Any other batch is refused
unless ``flatten_batches=True``, which writes each batch's ops one by one in
order; that loses the grouping (under the ``nccl`` model a group is one unit,
separate ops are separate units) and a batch's wait point. An overlap is
written forward first. Output rows end with ``\\n`` (the form of the
artifacts in PyTorch's repository) unless ``newline`` says CRLF; reading
accepts both.

Not covered: modelling PyTorch's FSDP and gradient-reduction actions (read
as no-ops, see above); PyTorch's own lowering passes (``_add_send_recv`` etc.) are not
reproduced here (``verifier.semantics.lowering`` is ours).
"""

from __future__ import annotations

import csv
import io
import re
from typing import Iterable

from verifier.ir import (
    _slot_twin,
    Action,
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
from verifier.format.guard import paused_gc

PARAMS_KEY = "pytorch_csv"
COMPUTE_ONLY, COMPUTE_COMMS = "compute_only", "compute_comms"
MAX_ID = 10_000_000  # the same bound as the JSON schema's index

_CELL = re.compile(r"([0-9]+)([A-Z_]+)([0-9]*)")
_OVERLAP = re.compile(r"\(([^()]*)\)([A-Z_]*)")
_FAST = re.compile(r"([0-9]{1,9})(F|B|I|W|SEND_F|RECV_F|SEND_B|RECV_B)([0-9]{1,9})")
# A row whose cells are all plain actions with ids below MAX_ID (at most 7
# digits), joined by commas: read in one pass (``_read_plain_row``).
_PLAIN = r"[0-9]{1,7}(?:F|B|I|W|SEND_F|RECV_F|SEND_B|RECV_B)[0-9]{1,7}"
_PLAIN_ROW = re.compile(rf"{_PLAIN}(?:,{_PLAIN})*")
_PLAIN_CELL = re.compile(r"([0-9]+)([A-Z_]+)([0-9]+)")
_COMPUTE = {k.value: k for k in ComputeKind}
_COMM = {k.value: k for k in CommKind}
_MAKE = {**{v: (Compute, k) for v, k in _COMPUTE.items()}, **{v: (Comm, k) for v, k in _COMM.items()}}
# Compute and Comm built as a plain object with their slots, then given their
# class: the same object as cls(kind, stage, mb) at a quarter of the cost (ir._slot_twin)
_TWIN = _slot_twin(Compute, Comm)
_UNSUPPORTED = {
    "UNSHARD": "FSDP parameter unshard",
    "RESHARD": "FSDP parameter reshard",
    "REDUCE_GRAD": "gradient reduction",
}
FSDP_KINDS = frozenset(_UNSUPPORTED)  # cells that are no action of the schedule
_EXPECTED = "F, B, I, W, SEND_F, RECV_F, SEND_B, RECV_B or (F;B)OVERLAP_F_B"


def _show(cell: str) -> str:
    return repr(cell if len(cell) <= 60 else cell[:57] + "...")


class _Reader:
    """Parses one CSV text; every error names source, row (rank) and column."""

    def __init__(self, source: str):
        self.source = source
        self.stage_at: dict[int, tuple[int, int]] = {}  # stage -> (rank, column)
        self.max_mb = -1
        self.has_comm = False
        self.drop_fsdp = False

    def where(self, rank: int, col: int) -> str:
        return f"{self.source}: row {rank + 1} (rank {rank}) column {col + 1}"

    def fail(self, rank: int, col: int, msg: str) -> ScheduleError:
        return ScheduleError(msg, self.where(rank, col))

    def ids(self, rank: int, col: int, cell: str, stage: str, mb: str, kind: str):
        if mb == "":
            raise self.fail(rank, col, f"action {_show(cell)} has no micro-batch id after {kind}")
        if len(stage) > 9 or len(mb) > 9:  # also keeps int() off huge digit strings
            big, what = (stage, "stage") if len(stage) > 9 else (mb, "micro-batch")
            raise self.fail(
                rank, col,
                f"{what} id {big if len(big) <= 20 else big[:20] + '...'} in {_show(cell)} "
                f"is out of range (at most {MAX_ID})",
            )
        s, m = int(stage), int(mb)
        if s > MAX_ID:
            raise self.fail(rank, col, f"stage id {s} in {_show(cell)} is out of range (at most {MAX_ID})")
        if m > MAX_ID:
            raise self.fail(rank, col, f"micro-batch id {m} in {_show(cell)} is out of range (at most {MAX_ID})")
        return s, m

    def place(self, rank: int, col: int, cell: str, stage: int) -> None:
        # the first cell that runs a stage places it; a cell of it on another
        # row stays on that row, and the checker's well-formed property
        # reports it (an action on a rank that does not hold its stage)
        self.stage_at.setdefault(stage, (rank, col))

    def simple(self, rank: int, col: int, cell: str, whole: str) -> Compute | Comm | None:
        m = _CELL.fullmatch(cell)
        if m is None:
            raise self.fail(
                rank, col,
                f"cannot parse action {_show(whole)}; expected <stage><type><micro-batch> "
                f"such as '2F0', with type one of {_EXPECTED}",
            )
        stage, kind, mb = m.groups()
        if kind in _UNSUPPORTED:
            if whole == cell:  # a no-op of the pipeline (module docstring)
                return None
            raise self.fail(
                rank, col,
                f"{kind} ({_UNSUPPORTED[kind]}) inside {_show(whole)}; an OVERLAP_F_B "
                "pairs a forward with a backward (B or I); write the FSDP action in a "
                "cell of its own",
            )
        if kind == "OVERLAP_F_B":
            raise self.fail(
                rank, col,
                f"OVERLAP_F_B in {_show(whole)} must be written (<F>;<B or I>)OVERLAP_F_B",
            )
        if kind in _COMPUTE:
            s, b = self.ids(rank, col, whole, stage, mb, kind)
            self.place(rank, col, whole, s)
            self.max_mb = max(self.max_mb, b)
            return Compute(_COMPUTE[kind], s, b)
        if kind in _COMM:
            s, b = self.ids(rank, col, whole, stage, mb, kind)
            self.place(rank, col, whole, s)
            self.max_mb = max(self.max_mb, b)
            self.has_comm = True
            return Comm(_COMM[kind], s, b)
        hint = " (PyTorch's old name 'BW' is now 'B')" if kind == "BW" else ""
        raise self.fail(
            rank, col,
            f"unknown action type {kind!r} in {_show(whole)}{hint}; expected {_EXPECTED}",
        )

    def cell(self, rank: int, col: int, cell: str) -> Action | None:
        if cell.startswith("("):
            m = _OVERLAP.fullmatch(cell)
            if m is None:
                raise self.fail(
                    rank, col,
                    f"cannot parse {_show(cell)}; an overlap is (<F>;<B or I>)OVERLAP_F_B",
                )
            inner, kind = m.groups()
            if kind in _UNSUPPORTED or kind != "OVERLAP_F_B":
                raise self.fail(
                    rank, col,
                    f"unsupported grouped action type {kind!r} in {_show(cell)}; only "
                    f"(<F>;<B or I>)OVERLAP_F_B is modelled",
                )
            parts = [p.strip() for p in inner.split(";")]
            if len(parts) != 2:
                raise self.fail(
                    rank, col,
                    f"OVERLAP_F_B {_show(cell)} has {len(parts)} sub-action(s); "
                    f"it must have exactly two, a forward and a backward (B or I)",
                )
            subs = [self.simple(rank, col, p, cell) for p in parts]  # never None here
            fs = [c for c in subs if isinstance(c, Compute) and c.kind is ComputeKind.F]
            bs = [
                c for c in subs
                if isinstance(c, Compute) and c.kind in (ComputeKind.B, ComputeKind.I)
            ]
            if len(fs) != 1 or len(bs) != 1:
                raise self.fail(
                    rank, col,
                    f"OVERLAP_F_B {_show(cell)} must pair one forward (F) with one "
                    f"backward (B or I)",
                )
            return Overlap(fs[0], bs[0])
        return self.simple(rank, col, cell, cell)


def _rows(text: str, source: str) -> list[list[str]]:
    if not text.strip():
        raise ScheduleError("no rows; a PyTorch schedule CSV has one row of actions per rank", source)
    if "\x00" in text:
        raise ScheduleError(f"binary data, not a CSV (NUL byte at offset {text.index(chr(0))})", source)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        return [row for row in reader]
    except csv.Error as e:
        lines = text.splitlines()
        n = reader.line_num
        near = f" in {_show(lines[n - 1])}" if 0 < n <= len(lines) else ""
        raise ScheduleError(f"malformed CSV: {e}{near}", f"{source}: line {n}") from None


def _plain_lines(text: str) -> list[str] | None:
    """The lines of ``text`` when ``csv.reader`` would read each line as its
    comma-separated pieces (an empty line as no cells): text with no quote
    character and no carriage return but in a CRLF line ending (and rows to
    read: else None, and ``_rows`` words what is wrong). Skips the reader's
    list per row (bench_check.py, the CSV case)."""
    if '"' in text or "\x00" in text or not text.strip():
        return None
    cr = text.count("\r")
    if cr:
        if cr != text.count("\r\n"):
            return None
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()  # the last line's newline ends it; no row follows
    return lines


def _read_plain_row(rank: int, cells: list[tuple[str, str, str]],
                    stage_at: dict[int, tuple[int, int]],
                    ints: dict[str, int]) -> tuple[tuple[Action, ...], int, bool]:
    """The actions of a row of plain cells (``(stage, kind, mb)`` digit and
    kind strings, ids below MAX_ID): what the cell-by-cell loop of
    ``csv_to_schedule`` makes of them, in one pass. ``ints``: digit strings
    already converted (ids repeat across a file). Returns (actions, largest
    micro-batch id, whether any is communication)."""
    new, build, acts = _TWIN, _MAKE, []
    append = acts.append
    max_mb, has_comm = -1, False
    for col, (st, kind, mb) in enumerate(cells):
        # a subscript, not .get: no method call (bench_check.py, the CSV case)
        try:
            s = ints[st]
        except KeyError:
            s = ints[st] = int(st)
        try:
            b = ints[mb]
        except KeyError:
            b = ints[mb] = int(mb)
        if s not in stage_at:  # the first cell that runs a stage places it
            stage_at[s] = (rank, col)
        if b > max_mb:
            max_mb = b
        cls, k = build[kind]
        a = new()
        a.kind = k
        a.stage = s
        a.mb = b
        a.__class__ = cls
        append(a)
        if cls is Comm:
            has_comm = True
    return tuple(acts), max_mb, has_comm


def csv_to_schedule(
    text: str, source: str = "<input>", *, drop_fsdp: bool = False
) -> Schedule:
    """Parse PyTorch pipelining CSV text (either form) into a Schedule.

    What is inferred is stated in the module docstring. Raises ScheduleError
    (one line: source, row/rank and column, the offending cell) on bad input.
    PyTorch's UNSHARD / RESHARD / REDUCE_GRAD cells are no-ops of the
    pipeline, kept in params (module docstring); ``drop_fsdp`` drops them
    without keeping them.
    """

    with paused_gc():
        return _csv_to_schedule(text, source, drop_fsdp)


def _csv_to_schedule(text: str, source: str, drop_fsdp: bool) -> Schedule:
    lines = _plain_lines(text)
    rows: list = _rows(text, source) if lines is None else lines
    rd = _Reader(source)
    rd.drop_fsdp = drop_fsdp
    actions: list[tuple[Action, ...]] = []
    idle: dict[str, list[int]] = {}
    fsdp: dict[str, list[list]] = {}
    # Fast path for the common plain cell; anything else (and every error)
    # goes through _Reader.cell, which is the one statement of the dialect.
    fast, stage_at, make = _FAST.fullmatch, rd.stage_at, _MAKE
    max_mb, has_comm = -1, False
    plain_row, plain_cells, ints = _PLAIN_ROW.fullmatch, _PLAIN_CELL.findall, {}
    for rank in range(len(rows)):
        row = rows[rank]
        if lines is None:
            line = ",".join(row)
        else:  # a line of text: its cells are its comma-separated pieces
            line, row = row, None
        if line:
            if plain_row(line) is not None:
                cells = plain_cells(line)
                # no cell held a comma of its own (a line's cells hold none)
                if row is None or len(cells) == len(row):
                    acts_, mb_, comm_ = _read_plain_row(rank, cells, stage_at, ints)
                    actions.append(acts_)
                    max_mb = max(max_mb, mb_)
                    has_comm = has_comm or comm_
                    continue
        if row is None:
            row = line.split(",") if line else []
        acts: list[Action] = []
        n_idle = 0  # idle and kept FSDP cells so far: not actions, but columns
        for col, raw in enumerate(row):
            m = fast(raw)
            if m is not None:
                s, kind, b = int(m[1]), m[2], int(m[3])
                at = stage_at.get(s)
                if s <= MAX_ID and b <= MAX_ID and (at is None or at[0] == rank):
                    if at is None:
                        stage_at[s] = (rank, col)
                    if b > max_mb:
                        max_mb = b
                    cls, k = make[kind]
                    if cls is Comm:
                        has_comm = True
                    acts.append(cls(k, s, b))
                    continue
            cell = raw.strip()
            if not cell:  # the index it will have when written back
                idle.setdefault(str(rank), []).append(len(acts) + n_idle)
                n_idle += 1
                continue
            a = rd.cell(rank, col, cell)
            if a is not None:
                acts.append(a)
            elif not drop_fsdp:  # an FSDP cell: a no-op, kept with its column
                fsdp.setdefault(str(rank), []).append([len(acts) + n_idle, cell])
                n_idle += 1
        actions.append(tuple(acts))
    rd.max_mb = max(rd.max_mb, max_mb)
    rd.has_comm = rd.has_comm or has_comm
    if not rd.stage_at:
        raise ScheduleError(
            f"no actions in any of its {len(rows)} row(s); nothing to infer stages "
            "and micro-batches from",
            source,
        )
    num_stages = max(rd.stage_at) + 1
    missing = [s for s in range(num_stages) if s not in rd.stage_at]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise ScheduleError(
            f"stage(s) {shown} appear in no action, but stage {num_stages - 1} does; "
            f"a CSV places each of stages 0..{num_stages - 1} on the rank whose row "
            "runs it, so every stage must occur",
            source,
        )
    num_mb = rd.max_mb + 1
    params: dict = {}
    crlf = text.count("\r\n")
    if idle or fsdp or (crlf and crlf == text.count("\n")):
        meta: dict = {"form": COMPUTE_COMMS if rd.has_comm else COMPUTE_ONLY}
        if idle:
            meta["idle"] = idle
        if fsdp:
            meta["fsdp"] = fsdp
        if crlf and crlf == text.count("\n"):
            meta["newline"] = "\r\n"
        params[PARAMS_KEY] = meta
    return Schedule(
        num_ranks=len(rows),
        num_microbatches=num_mb,
        stages=tuple(Stage(s, rd.stage_at[s][0], s) for s in range(num_stages)),
        routes=(Route(tuple(range(num_stages)), tuple(range(num_mb))),),
        actions=tuple(actions),
        params=params,
    )


# ---------------------------------------------------------------- writing


def _cell(a: Compute | Comm) -> str:
    return f"{a.stage}{a.kind.value}{a.mb}"


def check_expressible(s: Schedule, where: str | None) -> None:
    """Raise ScheduleError where the CSV form cannot express ``s``'s layout
    (routes, stage ids, layers, placement); actions are checked on writing."""
    if len(s.routes) != 1:
        raise ScheduleError(
            f"has {len(s.routes)} routes; a PyTorch CSV has a single route through "
            "stages 0..S-1, so a two-direction schedule (DualPipe) has no CSV form "
            "(keep it in JSON, or use DualPipeV)",
            where,
        )
    ids = sorted(st.id for st in s.stages)
    n = len(ids)
    if ids != list(range(n)):
        raise ScheduleError(
            f"stage ids {ids[:8]}{'...' if n > 8 else ''} are not 0..{n - 1}; "
            "a PyTorch CSV numbers stages 0..S-1",
            where,
        )
    route = s.routes[0]
    if route.stages != tuple(range(n)):
        raise ScheduleError(
            f"route visits stages {list(route.stages)[:8]}{'...' if len(route.stages) > 8 else ''}, "
            f"not 0..{n - 1} in order; a PyTorch CSV route is always 0, 1, .., S-1",
            where,
        )
    if route.microbatches != tuple(range(s.num_microbatches)):
        raise ScheduleError(
            f"route carries micro-batches {list(route.microbatches)[:8]}"
            f"{'...' if len(route.microbatches) > 8 else ''}, not 0..{s.num_microbatches - 1}; "
            "a PyTorch CSV routes every micro-batch 0..M-1",
            where,
        )
    for st in s.stages:
        if st.layer != st.id:
            raise ScheduleError(
                f"stage {st.id} holds layer {st.layer}; a PyTorch CSV has no layers "
                "(stage s holds layer s), so tied or renumbered layers have no CSV form",
                where,
            )
        if not 0 <= st.rank < s.num_ranks:
            raise ScheduleError(
                f"stage {st.id} is placed on rank {st.rank}, outside 0..{s.num_ranks - 1}",
                where,
            )


def _flat_ops(a: Action) -> Iterable[Compute | Comm]:
    if isinstance(a, Overlap):
        return (a.f, a.b)
    if isinstance(a, Batch):
        return a.ops
    return (a,)


def _layout(s: Schedule, form: str, src: str | None) -> tuple[dict[int, list[tuple[int, str]]], str]:
    """(non-action cells per rank as (column, text), line ending) recorded in
    params when the CSV was read: idle cells ("") and FSDP no-ops."""
    meta = s.params.get(PARAMS_KEY)
    if meta is None:
        return {}, "\n"
    bad = ScheduleError(
        f"params.{PARAMS_KEY} must be {{\"form\": \"compute_only\"|\"compute_comms\", "
        f"\"idle\": {{\"<rank>\": [column, ...]}}, \"fsdp\": {{\"<rank>\": [[column, cell], ...]}}, "
        f"\"newline\": \"\\n\"|\"\\r\\n\"}}, "
        f"got {str(meta)[:60]!r}",
        src,
    )
    if not isinstance(meta, dict) or meta.get("form") not in (COMPUTE_ONLY, COMPUTE_COMMS):
        raise bad
    newline = meta.get("newline", "\n")
    if newline not in ("\n", "\r\n"):
        raise bad
    if meta["form"] != form:
        return {}, newline
    idle, fsdp = meta.get("idle", {}), meta.get("fsdp", {})
    if not isinstance(idle, dict) or not isinstance(fsdp, dict):
        raise bad

    def column(c) -> bool:
        return isinstance(c, int) and not isinstance(c, bool) and c >= 0

    def fsdp_cell(x) -> bool:
        if not (isinstance(x, list) and len(x) == 2 and column(x[0]) and isinstance(x[1], str)):
            return False
        m = _CELL.fullmatch(x[1])
        return m is not None and m[2] in FSDP_KINDS

    out: dict[int, list[tuple[int, str]]] = {}
    for table, ok, cell_of in ((idle, column, lambda c: (c, "")),
                               (fsdp, fsdp_cell, lambda x: (x[0], x[1]))):
        for k, cols in table.items():
            if not (isinstance(k, str) and k.isdigit() and int(k) < s.num_ranks):
                raise bad
            if not isinstance(cols, list) or not all(ok(c) for c in cols):
                raise bad
            out.setdefault(int(k), []).extend(cell_of(c) for c in cols)
    for cells in out.values():
        cells.sort(key=lambda c: c[0])
    return out, newline


def schedule_to_csv(
    schedule: Schedule,
    compute_only: bool | None = None,
    *,
    flatten_batches: bool | None = None,
    source: str | None = None,
) -> str:
    """PyTorch pipelining CSV text for ``schedule``.

    ``compute_only``: True writes the computes only (communication dropped);
    False writes every action (compute_comms form); None (default) picks
    compute_only exactly when the schedule has no communication.
    ``flatten_batches``: True writes every Batch's ops one by one (see the
    module docstring for what that loses); None (default) writes a BATCH of
    one op without a wait as its op (the same meaning) and refuses any other;
    False refuses every Batch.
    ``source`` names the schedule in error messages (default: its name).
    Raises ScheduleError naming what the CSV form cannot express.
    """
    s = schedule
    src = source if source is not None else (s.name or None)
    at = (lambda r, i: f"{src}: rank {r} step {i}") if src else (lambda r, i: f"rank {r} step {i}")
    check_expressible(s, src)
    if compute_only is None:
        compute_only = s.is_compute_only
    form = COMPUTE_ONLY if compute_only else COMPUTE_COMMS
    rank_of = {st.id: st.rank for st in s.stages}
    seen_stages: set[int] = set()
    max_mb = -1
    lines: list[str] = []
    idle, newline = _layout(s, form, src)
    for rank, acts in enumerate(s.actions):
        cells: list[str] = []
        for step, a in enumerate(acts):
            tp = type(a)
            if tp is Compute or (tp is Comm and not compute_only):  # fast path
                st = a.stage
                if rank_of.get(st) == rank:
                    seen_stages.add(st)
                    if a.mb > max_mb:
                        max_mb = a.mb
                    cells.append(f"{st}{a.kind.value}{a.mb}")
                    continue
            if isinstance(a, (Comm, Batch)) and compute_only:
                continue
            if isinstance(a, Batch) and not (
                flatten_batches or (flatten_batches is None and _trivial(a))
            ):
                raise ScheduleError(
                    f"a BATCH of {len(a.ops)} op(s) (wait={str(a.wait).lower()}) has no "
                    "PyTorch CSV form (PyTorch posts each communication cell as a batch of "
                    "its own, not waited); `convert --flatten-batches` writes its ops one "
                    "by one (the grouping and wait point are lost: check the CSV), "
                    "`convert --compute-only` the computes only (PyTorch's runtime then "
                    "adds its own communication)",
                    at(rank, step),
                )
            for op in _flat_ops(a):
                if op.stage not in rank_of or rank_of[op.stage] != rank:
                    placed = (
                        f"placed on rank {rank_of[op.stage]}"
                        if op.stage in rank_of else "not a stage of the schedule"
                    )
                    raise ScheduleError(
                        f"{op} is on rank {rank} but stage {op.stage} is {placed}; a CSV "
                        "infers placement from the row an action is on, so this cannot "
                        "be written",
                        at(rank, step),
                    )
                seen_stages.add(op.stage)
                max_mb = max(max_mb, op.mb)
            if isinstance(a, Overlap):
                cells.append(f"({_cell(a.f)};{_cell(a.b)})OVERLAP_F_B")
            else:
                cells.extend(_cell(op) for op in _flat_ops(a))
        for col, text in idle.get(rank, ()):
            if col > len(cells):
                what = "an idle cell" if not text else repr(text)
                raise ScheduleError(
                    f"params.{PARAMS_KEY} puts {what} at column {col} of rank "
                    f"{rank}, beyond its {len(cells)} action(s)",
                    src,
                )
            cells.insert(col, text)
        # csv.writer quotes a lone empty field so the row is not read as empty
        lines.append('""' if cells == [""] else ",".join(cells))
    missing = sorted(set(range(len(s.stages))) - seen_stages)
    if missing:
        raise ScheduleError(
            f"stage {missing[0]} has no action{' in compute-only form' if compute_only else ''}; "
            "a CSV infers each stage's rank from its actions, so it cannot be written",
            src,
        )
    if max_mb != s.num_microbatches - 1:
        raise ScheduleError(
            f"the largest micro-batch id in any action is {max_mb} but num_microbatches "
            f"is {s.num_microbatches}; a CSV infers num_microbatches from the largest id",
            src,
        )
    return "".join(line + newline for line in lines)


def _trivial(a: Batch) -> bool:
    """A BATCH of one op without a wait: the same meaning as the op alone."""
    return len(a.ops) == 1 and not a.wait


def trivial_batches(schedule: Schedule) -> tuple[int, int]:
    """(BATCHes of one op without a wait, all BATCHes) in ``schedule``."""
    n = total = 0
    for acts in schedule.actions:
        for a in acts:
            if isinstance(a, Batch):
                total += 1
                n += _trivial(a)
    return n, total


def fsdp_cells(schedule: Schedule) -> int:
    """How many PyTorch FSDP cells (UNSHARD, RESHARD, REDUCE_GRAD) reading kept as no-ops."""
    meta = schedule.params.get(PARAMS_KEY)
    fsdp = meta.get("fsdp") if isinstance(meta, dict) else None
    if not isinstance(fsdp, dict):
        return 0
    return sum(len(v) for v in fsdp.values() if isinstance(v, list))


def fsdp_note(schedule: Schedule) -> str | None:
    """The line ``check`` prints for a CSV with FSDP cells, or None without any."""
    n = fsdp_cells(schedule)
    if not n:
        return None
    return (f"{n} PyTorch FSDP cell{'s' if n != 1 else ''} (UNSHARD, RESHARD, REDUCE_GRAD) "
            "read as no-ops: data-parallel collectives that move nothing between "
            "pipeline ranks; not checked")


def flatten_batches(schedule: Schedule) -> Schedule:
    """The schedule with every Batch replaced by its ops in order (loses grouping/wait)."""
    out = []
    for acts in schedule.actions:
        row: list[Action] = []
        for a in acts:
            row.extend(a.ops if isinstance(a, Batch) else (a,))
        out.append(row)
    return schedule.with_actions(out)

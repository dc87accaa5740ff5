"""Reading the PyTorch pipelining CSV dialect into a Schedule.

What it is: ``csv_to_schedule`` (the dialect and what reading infers are
stated in ``verifier.format.csvio``'s docstring) and ``fsdp_cells`` /
``fsdp_note``, which report the FSDP no-op cells reading kept. A cell-by-cell
reader (``_Reader``) is the one statement of the cell syntax and words every
error; rows whose cells are all plain actions are read in one pass beside it
(bench_check.py, the CSV case), and tests/test_csvio.py holds the two to the
same answers.

Not covered: writing (``verifier.format.csv_write``).
"""

from __future__ import annotations

import csv
import io
import re

from verifier.format.csv_dialect import (
    CELL,
    COMM_KINDS,
    COMPUTE_COMMS,
    COMPUTE_KINDS,
    COMPUTE_ONLY,
    EXPECTED,
    FSDP_WORDS,
    MAX_ID,
    PARAMS_KEY,
    show_cell,
)
from verifier.format.guard import paused_gc
from verifier.ir import (
    _slot_twin,
    Action,
    Comm,
    Compute,
    ComputeKind,
    Overlap,
    Route,
    Schedule,
    ScheduleError,
    Stage,
)

_OVERLAP = re.compile(r"\(([^()]*)\)([A-Z_]*)")
_FAST = re.compile(r"([0-9]{1,9})(F|B|I|W|SEND_F|RECV_F|SEND_B|RECV_B)([0-9]{1,9})")
# A row whose cells are all plain actions with ids below MAX_ID (at most 7
# digits), joined by commas: read in one pass (``_read_plain_row``).
_PLAIN = r"[0-9]{1,7}(?:F|B|I|W|SEND_F|RECV_F|SEND_B|RECV_B)[0-9]{1,7}"
_PLAIN_ROW = re.compile(rf"{_PLAIN}(?:,{_PLAIN})*")
_PLAIN_CELL = re.compile(r"([0-9]+)([A-Z_]+)([0-9]+)")
_MAKE = {**{v: (Compute, k) for v, k in COMPUTE_KINDS.items()},
         **{v: (Comm, k) for v, k in COMM_KINDS.items()}}
# Compute and Comm built as a plain object with their slots, then given their
# class: the same object as cls(kind, stage, mb) at a quarter of the cost (ir._slot_twin)
_TWIN = _slot_twin(Compute, Comm)


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
            raise self.fail(rank, col, f"action {show_cell(cell)} has no micro-batch id after {kind}")
        if len(stage) > 9 or len(mb) > 9:  # also keeps int() off huge digit strings
            big, what = (stage, "stage") if len(stage) > 9 else (mb, "micro-batch")
            raise self.fail(
                rank, col,
                f"{what} id {big if len(big) <= 20 else big[:20] + '...'} in {show_cell(cell)} "
                f"is out of range (at most {MAX_ID})",
            )
        s, m = int(stage), int(mb)
        if s > MAX_ID:
            raise self.fail(rank, col, f"stage id {s} in {show_cell(cell)} is out of range (at most {MAX_ID})")
        if m > MAX_ID:
            raise self.fail(rank, col, f"micro-batch id {m} in {show_cell(cell)} is out of range (at most {MAX_ID})")
        return s, m

    def place(self, rank: int, col: int, cell: str, stage: int) -> None:
        # the first cell that runs a stage places it; a cell of it on another
        # row stays on that row, and the checker's well-formed property
        # reports it (an action on a rank that does not hold its stage)
        self.stage_at.setdefault(stage, (rank, col))

    def simple(self, rank: int, col: int, cell: str, whole: str) -> Compute | Comm | None:
        m = CELL.fullmatch(cell)
        if m is None:
            raise self.fail(
                rank, col,
                f"cannot parse action {show_cell(whole)}; expected <stage><type><micro-batch> "
                f"such as '2F0', with type one of {EXPECTED}",
            )
        stage, kind, mb = m.groups()
        if kind in FSDP_WORDS:
            if whole == cell:  # a no-op of the pipeline (csvio's docstring)
                return None
            raise self.fail(
                rank, col,
                f"{kind} ({FSDP_WORDS[kind]}) inside {show_cell(whole)}; an OVERLAP_F_B "
                "pairs a forward with a backward (B or I); write the FSDP action in a "
                "cell of its own",
            )
        if kind == "OVERLAP_F_B":
            raise self.fail(
                rank, col,
                f"OVERLAP_F_B in {show_cell(whole)} must be written (<F>;<B or I>)OVERLAP_F_B",
            )
        if kind in COMPUTE_KINDS:
            s, b = self.ids(rank, col, whole, stage, mb, kind)
            self.place(rank, col, whole, s)
            self.max_mb = max(self.max_mb, b)
            return Compute(COMPUTE_KINDS[kind], s, b)
        if kind in COMM_KINDS:
            s, b = self.ids(rank, col, whole, stage, mb, kind)
            self.place(rank, col, whole, s)
            self.max_mb = max(self.max_mb, b)
            self.has_comm = True
            return Comm(COMM_KINDS[kind], s, b)
        hint = " (PyTorch's old name 'BW' is now 'B')" if kind == "BW" else ""
        raise self.fail(
            rank, col,
            f"unknown action type {kind!r} in {show_cell(whole)}{hint}; expected {EXPECTED}",
        )

    def cell(self, rank: int, col: int, cell: str) -> Action | None:
        if cell.startswith("("):
            return self.overlap(rank, col, cell)
        return self.simple(rank, col, cell, cell)

    def overlap(self, rank: int, col: int, cell: str) -> Overlap:
        m = _OVERLAP.fullmatch(cell)
        if m is None:
            raise self.fail(
                rank, col,
                f"cannot parse {show_cell(cell)}; an overlap is (<F>;<B or I>)OVERLAP_F_B",
            )
        inner, kind = m.groups()
        if kind in FSDP_WORDS or kind != "OVERLAP_F_B":
            raise self.fail(
                rank, col,
                f"unsupported grouped action type {kind!r} in {show_cell(cell)}; only "
                f"(<F>;<B or I>)OVERLAP_F_B is modelled",
            )
        parts = [p.strip() for p in inner.split(";")]
        if len(parts) != 2:
            raise self.fail(
                rank, col,
                f"OVERLAP_F_B {show_cell(cell)} has {len(parts)} sub-action(s); "
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
                f"OVERLAP_F_B {show_cell(cell)} must pair one forward (F) with one "
                f"backward (B or I)",
            )
        return Overlap(fs[0], bs[0])


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
        near = f" in {show_cell(lines[n - 1])}" if 0 < n <= len(lines) else ""
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
    kind strings, ids below MAX_ID): what ``_read_row`` makes of them, in one
    pass. ``ints``: digit strings already converted (ids repeat across a
    file). Returns (actions, largest micro-batch id, whether any is
    communication)."""
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


def _read_row(rank: int, row: list[str], rd: _Reader, idle: dict[str, list[int]],
              fsdp: dict[str, list[list]]) -> tuple[tuple[Action, ...], int, bool]:
    """The actions of any row, cell by cell: a plain cell at once, anything
    else (and every error) through ``_Reader.cell``, the one statement of
    the dialect. Idle cells go to ``idle``, kept FSDP cells to ``fsdp``.
    Returns what ``_read_plain_row`` returns."""
    fast, stage_at, make = _FAST.fullmatch, rd.stage_at, _MAKE
    max_mb, has_comm = -1, False
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
        elif not rd.drop_fsdp:  # an FSDP cell: a no-op, kept with its column
            fsdp.setdefault(str(rank), []).append([len(acts) + n_idle, cell])
            n_idle += 1
    return tuple(acts), max_mb, has_comm


def _read_rows(rows: list, as_lines: bool, rd: _Reader
               ) -> tuple[list[tuple[Action, ...]], dict[str, list[int]], dict[str, list[list]]]:
    """(actions per rank, idle cells, kept FSDP cells) of ``rows``: lines of
    text when ``as_lines`` (``_plain_lines``), else ``csv.reader``'s rows.
    The stages' places and the largest micro-batch id go to ``rd``."""
    actions: list[tuple[Action, ...]] = []
    idle: dict[str, list[int]] = {}
    fsdp: dict[str, list[list]] = {}
    stage_at = rd.stage_at
    max_mb, has_comm = -1, False
    plain_row, plain_cells, ints = _PLAIN_ROW.fullmatch, _PLAIN_CELL.findall, {}
    for rank in range(len(rows)):
        row = rows[rank]
        if as_lines:  # a line of text: its cells are its comma-separated pieces
            line, row = row, None
        else:
            line = ",".join(row)
        if line and plain_row(line) is not None:
            cells = plain_cells(line)
            # no cell held a comma of its own (a line's cells hold none)
            if row is None or len(cells) == len(row):
                acts, mb, comm = _read_plain_row(rank, cells, stage_at, ints)
                actions.append(acts)
                max_mb = max(max_mb, mb)
                has_comm = has_comm or comm
                continue
        if row is None:
            row = line.split(",") if line else []
        acts, mb, comm = _read_row(rank, row, rd, idle, fsdp)
        actions.append(acts)
        max_mb = max(max_mb, mb)
        has_comm = has_comm or comm
    rd.max_mb = max(rd.max_mb, max_mb)
    rd.has_comm = rd.has_comm or has_comm
    return actions, idle, fsdp


def _num_stages(rd: _Reader, num_rows: int, source: str) -> int:
    """S = 1 + the largest stage id; refuses a file without actions or with
    a stage id that no cell names."""
    if not rd.stage_at:
        raise ScheduleError(
            f"no actions in any of its {num_rows} row(s); nothing to infer stages "
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
    return num_stages


def _layout_params(text: str, has_comm: bool, idle: dict, fsdp: dict) -> dict:
    """The schedule's ``params``: the file's layout (idle and FSDP cells,
    CRLF line endings) under PARAMS_KEY when it has one to keep."""
    crlf = text.count("\r\n")
    crlf_only = bool(crlf) and crlf == text.count("\n")
    if not (idle or fsdp or crlf_only):
        return {}
    meta: dict = {"form": COMPUTE_COMMS if has_comm else COMPUTE_ONLY}
    if idle:
        meta["idle"] = idle
    if fsdp:
        meta["fsdp"] = fsdp
    if crlf_only:
        meta["newline"] = "\r\n"
    return {PARAMS_KEY: meta}


def csv_to_schedule(
    text: str, source: str = "<input>", *, drop_fsdp: bool = False
) -> Schedule:
    """Parse PyTorch pipelining CSV text (either form) into a Schedule.

    What is inferred is stated in ``verifier.format.csvio``'s docstring.
    Raises ScheduleError (one line: source, row/rank and column, the
    offending cell) on bad input. PyTorch's UNSHARD / RESHARD / REDUCE_GRAD
    cells are no-ops of the pipeline, kept in params (csvio's docstring);
    ``drop_fsdp`` drops them without keeping them.
    """

    with paused_gc():
        return _csv_to_schedule(text, source, drop_fsdp)


def _csv_to_schedule(text: str, source: str, drop_fsdp: bool) -> Schedule:
    lines = _plain_lines(text)
    rows: list = _rows(text, source) if lines is None else lines
    rd = _Reader(source)
    rd.drop_fsdp = drop_fsdp
    actions, idle, fsdp = _read_rows(rows, lines is not None, rd)
    num_stages = _num_stages(rd, len(rows), source)
    num_mb = rd.max_mb + 1
    return Schedule(
        num_ranks=len(rows),
        num_microbatches=num_mb,
        stages=tuple(Stage(s, rd.stage_at[s][0], s) for s in range(num_stages)),
        routes=(Route(tuple(range(num_stages)), tuple(range(num_mb))),),
        actions=tuple(actions),
        params=_layout_params(text, rd.has_comm, idle, fsdp),
    )


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

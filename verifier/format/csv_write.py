"""Writing a Schedule in the PyTorch pipelining CSV dialect.

What it is: ``schedule_to_csv`` and the checks it makes first
(``check_expressible``): every schedule whose reading-back would differ is
refused with one line naming what and why (the rules are in
``verifier.format.csvio``'s docstring); ``trivial_batches`` and
``flatten_batches`` for the BATCH actions the CSV form has no cell for.

Not covered: reading (``verifier.format.csv_read``).
"""

from __future__ import annotations

from verifier.format.csv_dialect import (
    CELL,
    COMPUTE_COMMS,
    COMPUTE_ONLY,
    FSDP_KINDS,
    PARAMS_KEY,
    cell_text,
    flat_ops,
)
from verifier.ir import Action, Batch, Comm, Compute, Overlap, Schedule, ScheduleError


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


def _column(c) -> bool:
    return isinstance(c, int) and not isinstance(c, bool) and c >= 0


def _fsdp_cell(x) -> bool:
    if not (isinstance(x, list) and len(x) == 2 and _column(x[0]) and isinstance(x[1], str)):
        return False
    m = CELL.fullmatch(x[1])
    return m is not None and m[2] in FSDP_KINDS


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
    out: dict[int, list[tuple[int, str]]] = {}
    for table, ok, cell_of in ((idle, _column, lambda c: (c, "")),
                               (fsdp, _fsdp_cell, lambda x: (x[0], x[1]))):
        for k, cols in table.items():
            if not (isinstance(k, str) and k.isdigit() and int(k) < s.num_ranks):
                raise bad
            if not isinstance(cols, list) or not all(ok(c) for c in cols):
                raise bad
            out.setdefault(int(k), []).extend(cell_of(c) for c in cols)
    for cells in out.values():
        cells.sort(key=lambda c: c[0])
    return out, newline


class _Writer:
    """The cells of each rank's row, and what the rows cover (stages, the
    largest micro-batch id), for one ``schedule_to_csv`` call."""

    def __init__(self, s: Schedule, compute_only: bool, flatten: bool | None, src: str | None):
        self.s, self.compute_only, self.flatten, self.src = s, compute_only, flatten, src
        self.rank_of = {st.id: st.rank for st in s.stages}
        self.seen_stages: set[int] = set()
        self.max_mb = -1

    def at(self, rank: int, step: int) -> str:
        return f"{self.src}: rank {rank} step {step}" if self.src else f"rank {rank} step {step}"

    def row(self, rank: int, acts: tuple[Action, ...]) -> list[str]:
        compute_only, rank_of, seen_stages = self.compute_only, self.rank_of, self.seen_stages
        max_mb = self.max_mb
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
                self.flatten or (self.flatten is None and _trivial(a))
            ):
                raise self.no_batch(a, rank, step)
            for op in flat_ops(a):
                if op.stage not in rank_of or rank_of[op.stage] != rank:
                    raise self.misplaced(op, rank, step)
                seen_stages.add(op.stage)
                max_mb = max(max_mb, op.mb)
            if isinstance(a, Overlap):
                cells.append(f"({cell_text(a.f)};{cell_text(a.b)})OVERLAP_F_B")
            else:
                cells.extend(cell_text(op) for op in flat_ops(a))
        self.max_mb = max_mb
        return cells

    def no_batch(self, a: Batch, rank: int, step: int) -> ScheduleError:
        return ScheduleError(
            f"a BATCH of {len(a.ops)} op(s) (wait={str(a.wait).lower()}) has no "
            "PyTorch CSV form (PyTorch posts each communication cell as a batch of "
            "its own, not waited); `convert --flatten-batches` writes its ops one "
            "by one (the grouping and wait point are lost: check the CSV), "
            "`convert --compute-only` the computes only (PyTorch's runtime then "
            "adds its own communication)",
            self.at(rank, step),
        )

    def misplaced(self, op: Compute | Comm, rank: int, step: int) -> ScheduleError:
        rank_of = self.rank_of
        placed = (
            f"placed on rank {rank_of[op.stage]}"
            if op.stage in rank_of else "not a stage of the schedule"
        )
        return ScheduleError(
            f"{op} is on rank {rank} but stage {op.stage} is {placed}; a CSV "
            "infers placement from the row an action is on, so this cannot "
            "be written",
            self.at(rank, step),
        )

    def insert_layout(self, rank: int, cells: list[str], layout: list[tuple[int, str]]) -> None:
        """Put the rank's idle and FSDP cells back at their columns."""
        for col, text in layout:
            if col > len(cells):
                what = "an idle cell" if not text else repr(text)
                raise ScheduleError(
                    f"params.{PARAMS_KEY} puts {what} at column {col} of rank "
                    f"{rank}, beyond its {len(cells)} action(s)",
                    self.src,
                )
            cells.insert(col, text)

    def check_covered(self) -> None:
        """Refuse rows from which reading would infer other stages or another
        number of micro-batches."""
        s = self.s
        missing = sorted(set(range(len(s.stages))) - self.seen_stages)
        if missing:
            raise ScheduleError(
                f"stage {missing[0]} has no action{' in compute-only form' if self.compute_only else ''}; "
                "a CSV infers each stage's rank from its actions, so it cannot be written",
                self.src,
            )
        if self.max_mb != s.num_microbatches - 1:
            raise ScheduleError(
                f"the largest micro-batch id in any action is {self.max_mb} but num_microbatches "
                f"is {s.num_microbatches}; a CSV infers num_microbatches from the largest id",
                self.src,
            )


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
    ``flatten_batches``: True writes every Batch's ops one by one (see
    ``verifier.format.csvio``'s docstring for what that loses); None
    (default) writes a BATCH of one op without a wait as its op (the same
    meaning) and refuses any other; False refuses every Batch.
    ``source`` names the schedule in error messages (default: its name).
    Raises ScheduleError naming what the CSV form cannot express.
    """
    s = schedule
    src = source if source is not None else (s.name or None)
    check_expressible(s, src)
    if compute_only is None:
        compute_only = s.is_compute_only
    form = COMPUTE_ONLY if compute_only else COMPUTE_COMMS
    writer = _Writer(s, compute_only, flatten_batches, src)
    lines: list[str] = []
    layout, newline = _layout(s, form, src)
    for rank, acts in enumerate(s.actions):
        cells = writer.row(rank, acts)
        writer.insert_layout(rank, cells, layout.get(rank, ()))
        # csv.writer quotes a lone empty field so the row is not read as empty
        lines.append('""' if cells == [""] else ",".join(cells))
    writer.check_covered()
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


def flatten_batches(schedule: Schedule) -> Schedule:
    """The schedule with every Batch replaced by its ops in order (loses grouping/wait)."""
    out = []
    for acts in schedule.actions:
        row: list[Action] = []
        for a in acts:
            row.extend(a.ops if isinstance(a, Batch) else (a,))
        out.append(row)
    return schedule.with_actions(out)

"""Where a place of the checked schedule is in the user's file.

What it is: the map from a place the checker names (``rank R step S[.J]`` of
the schedule it checked) back to the user's own coordinates, so a
counterexample on a PyTorch CSV says "rank 2 (CSV row 3, column 7: `2F5`)"
and one on a compute-only schedule that was lowered first also says which
lowered step it came from: "rank 2 (CSV row 3, column 7: `2F5`; lowered step
21)". A send or receive that the lowering inserted points at the compute that
caused it: "rank 2 (lowered step 20.1, inserted for CSV row 3, column 7:
`2F5`)". For a JSON file the steps are the user's own, so only a lowering
changes anything ("rank 2 step 6 (lowered step 21)").

``Origin`` holds what is needed to answer: the CSV text (cells are located
only when a place is asked for, so a VERIFIED check pays nothing) and the
lowering's step map (``verifier.semantics.lowering.lowering_map``, computed only when a
place is asked for). ``Origin.rewrite``
rewrites every place written by ``verifier.ir.loc`` in a message, the one
grammar the project names places in.

What it does not cover: places in a JSON file's text (line/column; a JSON
schedule is addressed by rank and step), the ``--verbose`` grid and the
witness (both stay in the checked schedule's steps).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cached_property

from verifier.format.csvio import FSDP_KINDS
from verifier.semantics.lowering import lowering_map

# "rank R step S" or "rank R step S.J", as verifier.ir.loc writes it
_PLACE = re.compile(r"\brank (\d+) step (\d+)(?:\.(\d+))?")
_STAGE = re.compile(r"(?:^|[(;])\s*(\d+)[A-Z]")

# per lowered step: the user's step of a compute, or of each op of an inserted BATCH
LoweredMap = tuple[tuple["int | tuple[int, ...]", ...], ...]


@dataclass(frozen=True, slots=True)
class UserPlace:
    """One place in the user's coordinates (rank is the same in both).

    ``step``: the user's step (the index among the rank's actions in the
    user's file); for an op inserted by the lowering, the step of the compute
    it was inserted for. ``row``/``column`` (1-based) and ``cell`` (as
    written): the CSV cell of that step. ``lowered_step``/``sub``: the place in
    the lowered schedule that was checked (None when nothing was lowered).
    ``also``: an inserted BATCH named as a whole whose ops were inserted for
    more than one compute: (step, column, cell) of each further one.
    """

    rank: int
    step: int | None
    row: int | None = None
    column: int | None = None
    cell: str | None = None
    lowered_step: int | None = None
    sub: int | None = None
    inserted: bool = False
    also: tuple[tuple[int, int | None, str | None], ...] = ()

    def text(self) -> str:
        user = None
        if self.row is not None:
            user = f"CSV row {self.row}, column {self.column}: `{self.cell}`"
            user += "".join(f" and column {c + 1}: `{x}`" for _, c, x in self.also if c is not None)
        elif self.step is not None and self.lowered_step is not None:
            user = f"step {self.step}" + "".join(f" and step {k}" for k, _, _ in self.also)
        if self.lowered_step is None:
            if self.row is not None:
                return f"rank {self.rank} ({user})"
            return f"rank {self.rank} step {self.step}"
        low = f"lowered step {self.lowered_step}" + ("" if self.sub is None else f".{self.sub}")
        if self.inserted:
            what = f", inserted for {user}" if user else ", inserted by the lowering"
            return f"rank {self.rank} ({low}{what})"
        if self.row is not None:
            return f"rank {self.rank} ({user}; {low})"
        return f"rank {self.rank} step {self.step} ({low})"

    def to_json(self) -> dict:
        d: dict = {"rank": self.rank, "step": self.step}
        if self.row is not None:
            d.update(row=self.row, column=self.column, cell=self.cell)
        if self.lowered_step is not None:
            d["lowered_step"] = self.lowered_step
            if self.sub is not None:
                d["lowered_sub"] = self.sub
            d["inserted"] = self.inserted
            if self.also:
                d["also"] = [
                    {"step": k, **({} if c is None else {"column": c + 1, "cell": x})}
                    for k, c, x in self.also
                ]
        d["text"] = self.text()
        return d


def csv_cells(text: str) -> tuple[tuple[tuple[int, str], ...], ...]:
    """Per CSV row: (0-based column, cell as written) of each cell that is an action.

    Mirrors ``verifier.format.csvio``'s reader: an empty cell is an idle slot and
    PyTorch's FSDP cells (UNSHARD, RESHARD, REDUCE_GRAD) carry no action of the
    schedule; every other cell is the next step of its row's rank.
    """
    import csv
    import io

    rows = csv.reader(io.StringIO(text, newline=""))
    out = []
    for row in rows:
        cells = []
        for col, raw in enumerate(row):
            cell = raw.strip()
            if not cell:
                continue
            m = re.fullmatch(r"[0-9]+([A-Z_]+)[0-9]*", cell)
            if m is not None and m[1] in FSDP_KINDS:
                continue
            cells.append((col, cell))
        out.append(tuple(cells))
    return tuple(out)


@dataclass(frozen=True)
class Origin:
    """The user's file behind a checked schedule (see the module docstring).

    ``form``: "csv" or "json". ``csv_text``: the CSV as read (form "csv").
    ``lowering``: (the schedule as given, the lowered schedule that was
    checked), or None when the schedule was checked as written.
    """

    source: str
    form: str
    csv_text: str | None = field(default=None, repr=False)
    lowering: tuple | None = field(default=None, repr=False)

    def with_lowering(self, given, lowered) -> "Origin":
        return replace(self, lowering=(given, lowered))

    @property
    def trivial(self) -> bool:
        """True when places need no translation (a JSON file checked as written)."""
        return self.form != "csv" and self.lowering is None

    @cached_property
    def lowered(self) -> LoweredMap | None:
        """Per rank per lowered step: the user's step of a compute, or a tuple
        with the user's step of each op of an inserted BATCH."""
        if self.lowering is None:
            return None

        return lowering_map(*self.lowering)

    @cached_property
    def cells(self) -> tuple[tuple[tuple[int, str], ...], ...]:
        return csv_cells(self.csv_text or "") if self.form == "csv" else ()

    def _cell(self, rank: int, step: int | None) -> tuple[int, str] | None:
        if step is None or rank >= len(self.cells) or step >= len(self.cells[rank]):
            return None
        return self.cells[rank][step]

    def place(self, rank: int, step: int, sub: int | None = None) -> UserPlace:
        """The user's place of ``rank R step S[.J]`` of the checked schedule."""
        user_step: int | None = step
        inserted = False
        low = None
        causes: list[int] = []
        if self.lowered is not None:
            low = step
            entry = None
            if rank < len(self.lowered) and step < len(self.lowered[rank]):
                entry = self.lowered[rank][step]
            if isinstance(entry, tuple):
                inserted = True
                picked = entry if sub is None or sub >= len(entry) else (entry[sub],)
                causes = sorted({x for x in picked if x is not None})
                user_step = causes[0] if causes else None
            else:
                user_step = entry
        csv_form = self.form == "csv"
        also = tuple(
            (k, *(self._cell(rank, k) or (None, None))) if csv_form else (k, None, None)
            for k in causes[1:]
        )
        where = self._cell(rank, user_step) if csv_form else None
        if where is None:
            return UserPlace(rank, user_step, lowered_step=low, sub=sub if low is not None else None,
                             inserted=inserted, also=also)
        col, cell = where
        return UserPlace(rank, user_step, rank + 1, col + 1, cell, low,
                         sub if low is not None else None, inserted, also)

    def name(self, rank: int, step: int, sub: int | None = None) -> str:
        if self.trivial:
            return f"rank {rank} step {step}" + ("" if sub is None else f".{sub}")
        return self.place(rank, step, sub).text()

    def rewrite(self, text: str) -> str:
        """``text`` with every "rank R step S[.J]" written in the user's coordinates."""
        if self.trivial:
            return text

        def one(m: re.Match) -> str:
            sub = None if m[3] is None else int(m[3])
            return self.name(int(m[1]), int(m[2]), sub)

        return _PLACE.sub(one, text)

    def stage_place(self, stage: int) -> str | None:
        """Where a CSV places ``stage`` on its rank: the first cell that runs it
        (rows in order, then columns), as "CSV row R, column C: `cell`"."""
        if self.form != "csv":
            return None
        for rank, cells in enumerate(self.cells):
            for col, cell in cells:
                if any(int(x) == stage for x in _STAGE.findall(cell)):
                    return f"CSV row {rank + 1}, column {col + 1}: `{cell}`"
        return None

"""Pictures of an analysed timeline: the picture as data, and its geometry.

What it is: the style of DeepSeek's DualPipe README images. One row per rank,
time across (one cost unit = ``px_per_unit`` pixels), one cell per compute
action with the micro-batch id in it and a colour per kind: F orange, B green,
I teal, W blue. A rank's second (third, ...) stage is drawn in a darker shade
of the same colour with white digits, so the two directions of DualPipe and
the down/up halves of a V are told apart at a glance. An overlapped F&B is one
cell: its forward and backward parts side by side (widths in the ratio of
their costs) inside one shared thick border. Idle time is white with a light
grey outline and unit ticks. With ``comm=True`` a thin strip under each row
shows when the rank has a message in flight (dark: sending, light: receiving).

- ``layout(schedule, analysis)`` -> ``Picture`` (frozen data: cells, idle gaps);
- ``geometry(picture, ...)`` -> ``Geometry``: pixel sizes and places shared by
  the PNG and the SVG, with the colours (``colour_of``), the time axis's
  ticks (``ticks``) and the legend's words (``legend_texts``).

The three renderers read a ``Picture``: ``verifier.render.png.to_png`` (bytes:
numpy raster, verifier.render.font), ``verifier.render.svg.to_svg`` (str: one
``<g class="cell">`` per compute action) and
``verifier.render.textgrid.to_text`` (a coloured or plain text grid).

Not covered: deadlocked timelines are drawn up to where they stopped (callers
say so); no interactive output (see verifier.render.trace for Perfetto).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from verifier.analysis.timeline import Analysis, label_of
from verifier.ir import Compute, Overlap, Schedule
from verifier.render.font import CAP_H, text_width

# colours (RGB) per kind: (first stage on the rank, the darkest later stage)
PALETTE = {
    "F": ((246, 178, 64), (196, 118, 16)),
    "B": ((122, 208, 88), (52, 140, 48)),
    "I": ((118, 214, 190), (30, 140, 120)),
    "W": ((128, 192, 246), (46, 104, 196)),
}
BORDER = (0, 0, 0)
IDLE_LINE = (205, 205, 205)
BG = (255, 255, 255)
TEXT = (0, 0, 0)
CRITICAL = (220, 0, 0)  # critical-path borders and deadlock marks
AXIS_H = 22  # height of the time axis under the rows, in pixels


@dataclass(frozen=True, slots=True)
class Part:
    """One compute inside a cell (an OVERLAP cell has two)."""

    kind: str  # F B I W
    stage: int
    mb: int
    chunk: int  # index of the stage among the rank's stages (sorted by id)
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Cell:
    rank: int
    step: int
    start: float
    end: float
    parts: tuple[Part, ...]
    label: str
    critical: bool = False  # on the critical path


@dataclass(frozen=True)
class Picture:
    title: str
    num_ranks: int
    num_chunks: int  # most stages on one rank
    makespan: float
    min_duration: float
    cells: tuple[Cell, ...]
    idle: tuple[tuple[int, float, float], ...]  # (rank, start, end)
    comm: tuple[tuple[int, float, float, bool], ...]  # (rank, start, end, is_send)
    stuck: tuple[tuple[int, float, str], ...] = ()  # deadlock: (rank, time, "STUCK AT STEP k")


def layout(s: Schedule, a: Analysis, critical: bool = False) -> Picture:
    """Cells and idle gaps of the analysed timeline (see the module docstring).

    ``critical``: mark the cells on the critical path (drawn with a red border).
    """
    on_path = {(p.rank, p.step) for p in a.critical_path if p.what == "compute"} \
        if critical else set()
    chunk_of: dict[int, int] = {}
    nchunks = 1
    for r in range(s.num_ranks):
        ids = sorted(s.stages_on_rank[r])
        nchunks = max(nchunks, len(ids))
        for i, x in enumerate(ids):
            chunk_of[x] = i
    costs = a.costs
    cells = []
    for c in a.computes:
        act = c.action
        if isinstance(act, Compute):
            parts = (Part(act.kind.value, act.stage, act.mb, chunk_of.get(act.stage, 0),
                          c.start, c.end),)
        else:
            assert isinstance(act, Overlap)
            wf = float(costs.get("F", 1.0))
            wb = float(costs.get(act.b.kind.value, 1.0))
            mid = c.start + (c.end - c.start) * wf / (wf + wb) if wf + wb > 0 else c.start
            parts = (
                Part("F", act.f.stage, act.f.mb, chunk_of.get(act.f.stage, 0), c.start, mid),
                Part(act.b.kind.value, act.b.stage, act.b.mb, chunk_of.get(act.b.stage, 0),
                     mid, c.end),
            )
        cells.append(Cell(c.rank, c.step, c.start, c.end, parts, label_of(act),
                          (c.rank, c.step) in on_path))
    idle = []
    by_rank: dict[int, list[Cell]] = {}
    for cell in cells:
        by_rank.setdefault(cell.rank, []).append(cell)
    eps = 1e-9
    for r in range(s.num_ranks):
        t = 0.0
        for cell in sorted(by_rank.get(r, []), key=lambda x: x.start):
            if cell.start > t + eps:
                idle.append((r, t, cell.start))
            t = max(t, cell.end)
        if a.makespan > t + eps:
            idle.append((r, t, a.makespan))
    comm = []
    for m in a.messages:
        if m.end > m.start:
            comm.append((m.src, m.start, m.end, True))
            comm.append((m.dst, m.start, m.end, False))
    durs = [c.end - c.start for c in cells if c.end > c.start]
    bubble = f"  bubble {100 * a.bubble_ratio:.1f}%" if not a.deadlocked else "  DEADLOCKED"
    c = a.costs
    cost_txt = " ".join(f"{k}={c[k]:g}" for k in ("F", "B", "I", "W", "FB", "comm")
                        if k in c and (k != "comm" or c[k]))
    title = (f"{s.name or s.family or 'schedule'}  {a.comm_model}  {cost_txt}  "
             f"makespan {a.makespan:g}{bubble}")
    ends = {r: 0.0 for r in range(s.num_ranks)}
    for cell in cells:
        ends[cell.rank] = max(ends[cell.rank], cell.end)
    stuck = tuple((x.rank, ends[x.rank], f"STUCK AT STEP {x.step}") for x in a.stuck
                  if not x.action.startswith("comm stream"))
    return Picture(title, s.num_ranks, nchunks, a.makespan, min(durs) if durs else 1.0,
                   tuple(cells), tuple(idle), tuple(comm), stuck)


def colour_of(kind: str, chunk: int, num_chunks: int) -> tuple[tuple[int, int, int], bool]:
    """(fill RGB, white text?) of a part."""
    light, dark = PALETTE[kind]
    if num_chunks <= 1 or chunk == 0:
        return light, False
    t = min(1.0, chunk / (num_chunks - 1))
    rgb = tuple(int(round(lv + (dv - lv) * t)) for lv, dv in zip(light, dark))
    return rgb, t >= 0.5


# ---------------------------------------------------------------- geometry --
@dataclass(frozen=True, slots=True)
class Geometry:
    """Where a picture's parts go, in pixels (PNG and SVG alike)."""

    ppu: float  # pixels per cost unit
    left: int
    top: int
    row_h: int
    row_gap: int
    comm_h: int
    font: int  # font scale for cell digits
    width: int
    height: int
    legend_y: int

    def x(self, t: float) -> int:
        return self.left + int(round(t * self.ppu))

    def y(self, rank: int) -> int:
        return self.top + rank * (self.row_h + self.row_gap + self.comm_h)


def geometry(p: Picture, px_per_unit: float | None, comm: bool, max_width: int) -> Geometry:
    """The sizes of ``p`` drawn at ``px_per_unit`` (None: the shortest compute
    30 pixels wide, the whole at most ``max_width``), with a strip per row for
    messages when ``comm``."""
    if px_per_unit is None:
        ppu = 30.0 / max(p.min_duration, 1e-9)
        if p.makespan * ppu > max_width:
            ppu = max_width / max(p.makespan, 1e-9)
        ppu = max(ppu, 0.5)
    else:
        ppu = float(px_per_unit)
    cell_px = p.min_duration * ppu
    font = 2 if cell_px >= text_width("00", 2) + 4 else 1
    row_h = max(CAP_H * font + 10, 16)
    left = text_width(f"rank {p.num_ranks - 1}", 2) + 16
    top = CAP_H * 2 + 20
    comm_h = 7 if comm else 0
    row_gap = 0 if not comm else 3
    width = left + int(math.ceil(p.makespan * ppu)) + 12
    legend_y = top + p.num_ranks * (row_h + row_gap + comm_h) + 12 + AXIS_H
    height = legend_y + CAP_H * 2 + 16
    width = max(width, 620, text_width(p.title, 2) + 20)
    if p.stuck:
        width += text_width("stuck at step 0000", 2) + 10
    return Geometry(ppu, left, top, row_h, row_gap, comm_h, font, width, height, legend_y)


LEGEND = (("F", "F"), ("B", "B"), ("I", "I"), ("W", "W"))
# the legend's words, the same in the PNG and the SVG
LEGEND_OVERLAP = "F&B overlapped"
LEGEND_IDLE = "idle"
LEGEND_DARKER = "darker: a rank's later stage (DualPipe reverse direction, V way back)"


def legend_texts(p: "Picture") -> tuple[str, ...]:
    """Every text of the legend of ``p``, in order (PNG and SVG draw these)."""
    out = tuple(name for _, name in LEGEND) + (LEGEND_OVERLAP, LEGEND_IDLE)
    return out + ((LEGEND_DARKER,) if p.num_chunks > 1 else ())


def ticks(g: Geometry, makespan: float, scale: int) -> list[float]:
    """Tick times: a round step whose labels do not collide."""
    label_w = text_width(f"{makespan:g}", scale) + 12
    step = 1.0
    for m in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        step = float(m)
        if step * g.ppu >= label_w:
            break
    step = max(step, label_w / g.ppu)  # one label per label width at most, at any scale
    n = int(makespan // step)
    return [i * step for i in range(n + 1)]

"""Pictures of an analysed timeline: PNG, SVG and a coloured text grid.

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
- ``to_svg(picture)`` -> str: every compute action is a ``<g class="cell">``
  (so a picture of N computes has exactly N such groups), idle gaps
  ``<rect class="idle">``;
- ``to_png(picture)`` -> bytes (numpy raster, verifier.render.font);
- ``to_text(picture, color=...)`` -> str: one line per rank, one character per
  ``dt`` time units (default half the shortest compute); with colour the cell background is the kind's colour
  (ANSI 256) and the digits the micro-batch id; without, the kind letter
  (lower case for a rank's second and later stages) followed by the
  micro-batch id when it fits, ``.`` for idle.

Not covered: deadlocked timelines are drawn up to where they stopped (callers
say so); no interactive output (see verifier.render.trace for Perfetto).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from verifier.analysis.timeline import Analysis, label_of
from verifier.ir import Compute, Overlap, Schedule
from verifier.render.font import CAP_H, draw_text, encode_png, text_width

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


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(rgb)


# ---------------------------------------------------------------- geometry --
@dataclass(frozen=True, slots=True)
class _Geom:
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


def _geometry(p: Picture, px_per_unit: float | None, comm: bool, max_width: int) -> _Geom:
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
    return _Geom(ppu, left, top, row_h, row_gap, comm_h, font, width, height, legend_y)


_LEGEND = (("F", "F"), ("B", "B"), ("I", "I"), ("W", "W"))
# the legend's words, the same in the PNG and the SVG
LEGEND_OVERLAP = "F&B overlapped"
LEGEND_IDLE = "idle"
LEGEND_DARKER = "darker: a rank's later stage (DualPipe reverse direction, V way back)"


def legend_texts(p: "Picture") -> tuple[str, ...]:
    """Every text of the legend of ``p``, in order (PNG and SVG draw these)."""
    out = tuple(name for _, name in _LEGEND) + (LEGEND_OVERLAP, LEGEND_IDLE)
    return out + ((LEGEND_DARKER,) if p.num_chunks > 1 else ())
AXIS_H = 22
CRITICAL = (220, 0, 0)


def _ticks(g: "_Geom", makespan: float, scale: int) -> list[float]:
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


# --------------------------------------------------------------------- PNG --
def to_png(p: Picture, px_per_unit: float | None = None, comm: bool = False,
           max_width: int = 8000) -> bytes:
    g = _geometry(p, px_per_unit, comm, max_width)
    # the legend: swatches and words on one line; the "darker" note after
    # them, or on a line of its own below when the picture is too narrow
    x_note = g.left + len(_LEGEND) * (48 + text_width("W", 2) + 24)
    x_note += 40 + text_width(LEGEND_OVERLAP, 2) + 24 + 28 + text_width(LEGEND_IDLE, 2) + 24
    note_y = g.legend_y + 2
    height = g.height
    if p.num_chunks > 1 and x_note + text_width(LEGEND_DARKER, 2) + 8 > g.width:
        x_note, note_y = g.left, g.legend_y + 18 + 8
        height += 18 + 8
    img = np.empty((height, g.width, 3), dtype=np.uint8)
    img[:] = BG
    draw_text(img, 8, 8, p.title, TEXT, 2)
    ty = (g.row_h - 2 * CAP_H) // 2
    for r in range(p.num_ranks):
        draw_text(img, 8, g.y(r) + ty, f"rank {r}", TEXT, 2)

    def rect(x0, y0, x1, y1, fill=None, line=None, lw=1):
        if x1 <= x0 or y1 <= y0:
            return
        if fill is not None:
            img[y0:y1, x0:x1] = fill
        if line is not None:
            img[y0:y0 + lw, x0:x1] = line
            img[y1 - lw:y1, x0:x1] = line
            img[y0:y1, x0:x0 + lw] = line
            img[y0:y1, x1 - lw:x1] = line

    for r, t0, t1 in p.idle:
        x0, x1, y0 = g.x(t0), g.x(t1), g.y(r)
        rect(x0, y0, x1 + 1, y0 + g.row_h, None, IDLE_LINE)
        if g.ppu >= 8:
            for u in range(int(math.ceil(t0)), int(math.floor(t1)) + 1):
                xx = g.x(u)
                if x0 < xx < x1:
                    img[y0:y0 + g.row_h, xx] = IDLE_LINE
    for c in p.cells:
        y0 = g.y(c.rank)
        y1 = y0 + g.row_h
        for part in c.parts:
            fill, white = colour_of(part.kind, part.chunk, p.num_chunks)
            x0, x1 = g.x(part.start), g.x(part.end)
            rect(x0, y0, x1 + 1, y1, fill, None if len(c.parts) > 1 else BORDER)
            txt = str(part.mb)
            for sc in (g.font, 1):
                tw = text_width(txt, sc)
                if tw + 3 <= x1 - x0:
                    draw_text(img, (x0 + x1 + 1 - tw) // 2, y0 + (g.row_h - CAP_H * sc) // 2,
                              txt, (255, 255, 255) if white else TEXT, sc)
                    break
        if len(c.parts) > 1:
            rect(g.x(c.start), y0, g.x(c.end) + 1, y1, None, BORDER, 2)
    if comm:
        for r, t0, t1, is_send in p.comm:
            y0 = g.y(r) + g.row_h + 1
            rect(g.x(t0), y0, max(g.x(t1), g.x(t0) + 1), y0 + g.comm_h - 2,
                 (90, 90, 90) if is_send else (170, 170, 170))
    ay = g.legend_y - AXIS_H - 4
    draw_text(img, 8, ay + 4, "time", TEXT, 2)
    img[ay, g.left:g.x(p.makespan) + 1] = TEXT
    for tt in _ticks(g, p.makespan, 1):
        xx = g.x(tt)
        img[ay:ay + 5, xx] = TEXT
        lab = f"{tt:g}"
        draw_text(img, xx - text_width(lab, 1) // 2, ay + 8, lab, TEXT, 1)
    for c in p.cells:
        if c.critical:
            y0 = g.y(c.rank)
            rect(g.x(c.start), y0, g.x(c.end) + 1, y0 + g.row_h, None, CRITICAL, 3)
    for r, tt, text in p.stuck:
        x0, y0 = g.x(tt), g.y(r)
        rect(x0, y0, x0 + 4, y0 + g.row_h, CRITICAL)
        draw_text(img, x0 + 8, y0 + (g.row_h - 2 * CAP_H) // 2, text.lower(), CRITICAL, 2)
    x = g.left
    for kind, name in _LEGEND:
        for ch in range(min(p.num_chunks, 2)):
            fill, _ = colour_of(kind, ch if p.num_chunks > 1 else 0, min(p.num_chunks, 2))
            rect(x, g.legend_y, x + 22, g.legend_y + 18, fill, BORDER)
            x += 24
        draw_text(img, x + 4, g.legend_y + 2, name, TEXT, 2)
        x += text_width(name, 2) + 24
    f1, _ = colour_of("F", 0, 1)
    b1, _ = colour_of("B", 0, 1)
    rect(x, g.legend_y, x + 12, g.legend_y + 18, f1)
    rect(x + 12, g.legend_y, x + 34, g.legend_y + 18, b1)
    rect(x, g.legend_y, x + 34, g.legend_y + 18, None, BORDER, 2)
    draw_text(img, x + 40, g.legend_y + 2, LEGEND_OVERLAP, TEXT, 2)
    x += 40 + text_width(LEGEND_OVERLAP, 2) + 24
    rect(x, g.legend_y, x + 22, g.legend_y + 18, None, IDLE_LINE)
    draw_text(img, x + 28, g.legend_y + 2, LEGEND_IDLE, TEXT, 2)
    if p.num_chunks > 1:
        draw_text(img, x_note, note_y, LEGEND_DARKER, TEXT, 2)
    return encode_png(img)


# --------------------------------------------------------------------- SVG --
def to_svg(p: Picture, px_per_unit: float | None = None, comm: bool = False,
           max_width: int = 8000) -> str:
    g = _geometry(p, px_per_unit, comm, max_width)
    fs = CAP_H * g.font + 3
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{g.width}" height="{g.height}" '
        f'viewBox="0 0 {g.width} {g.height}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{g.width}" height="{g.height}" fill="#ffffff"/>',
        f'<text x="8" y="22" font-size="16" font-weight="bold">{escape(p.title)}</text>',
    ]
    for r in range(p.num_ranks):
        out.append(f'<text x="8" y="{g.y(r) + g.row_h / 2 + 5:.1f}" font-size="14" '
                   f'font-weight="bold">rank {r}</text>')
    for r, t0, t1 in p.idle:
        out.append(f'<rect class="idle" x="{g.x(t0)}" y="{g.y(r)}" width="{g.x(t1) - g.x(t0)}" '
                   f'height="{g.row_h}" fill="#ffffff" stroke="{_hex(IDLE_LINE)}"/>')
    for c in p.cells:
        y0 = g.y(c.rank)
        kinds = "&".join(x.kind for x in c.parts)
        out.append(f'<g class="cell" data-rank="{c.rank}" data-step="{c.step}" '
                   f'data-kind="{escape(kinds)}"><title>rank {c.rank} step {c.step}: '
                   f'{escape(c.label)} [{c.start:g}, {c.end:g}]</title>')
        single = len(c.parts) == 1
        for part in c.parts:
            fill, white = colour_of(part.kind, part.chunk, p.num_chunks)
            x0, x1 = g.x(part.start), g.x(part.end)
            stroke = ' stroke="#000000"' if single else ""
            out.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{g.row_h}" '
                       f'fill="{_hex(fill)}"{stroke}/>')
            txt = str(part.mb)
            if len(txt) * fs * 0.6 + 2 <= x1 - x0:
                out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + g.row_h / 2 + fs * 0.35:.1f}" '
                           f'font-size="{fs}" text-anchor="middle" '
                           f'fill="{"#ffffff" if white else "#000000"}">{txt}</text>')
        if not single:
            out.append(f'<rect x="{g.x(c.start)}" y="{y0}" width="{g.x(c.end) - g.x(c.start)}" '
                       f'height="{g.row_h}" fill="none" stroke="#000000" stroke-width="2"/>')
        out.append("</g>")
    ay = g.legend_y - AXIS_H - 4
    out.append(f'<text x="8" y="{ay + 14}" font-size="14" font-weight="bold">time</text>')
    out.append(f'<line x1="{g.left}" y1="{ay}" x2="{g.x(p.makespan)}" y2="{ay}" '
               'stroke="#000000"/>')
    for tt in _ticks(g, p.makespan, 1):
        xx = g.x(tt)
        out.append(f'<line x1="{xx}" y1="{ay}" x2="{xx}" y2="{ay + 5}" stroke="#000000"/>')
        out.append(f'<text x="{xx}" y="{ay + 17}" font-size="11" text-anchor="middle">'
                   f'{tt:g}</text>')
    for c in p.cells:
        if c.critical:
            out.append(f'<rect class="critical" x="{g.x(c.start)}" y="{g.y(c.rank)}" '
                       f'width="{g.x(c.end) - g.x(c.start)}" height="{g.row_h}" fill="none" '
                       f'stroke="{_hex(CRITICAL)}" stroke-width="3"/>')
    for r, tt, text in p.stuck:
        x0, y0 = g.x(tt), g.y(r)
        out.append(f'<rect class="stuck" x="{x0}" y="{y0}" width="4" height="{g.row_h}" '
                   f'fill="{_hex(CRITICAL)}"/>')
        out.append(f'<text x="{x0 + 8}" y="{y0 + g.row_h / 2 + 5:.1f}" font-size="14" '
                   f'fill="{_hex(CRITICAL)}">{escape(text.lower())}</text>')
    if comm:
        for r, t0, t1, is_send in p.comm:
            y0 = g.y(r) + g.row_h + 1
            out.append(f'<rect class="comm" x="{g.x(t0)}" y="{y0}" '
                       f'width="{max(g.x(t1) - g.x(t0), 1)}" height="{g.comm_h - 2}" '
                       f'fill="{"#5a5a5a" if is_send else "#aaaaaa"}"/>')
    x = g.left
    ly = g.legend_y
    for kind, name in _LEGEND:
        for ch in range(min(p.num_chunks, 2)):
            fill, _ = colour_of(kind, ch if p.num_chunks > 1 else 0, min(p.num_chunks, 2))
            out.append(f'<rect x="{x}" y="{ly}" width="22" height="18" fill="{_hex(fill)}" '
                       'stroke="#000000"/>')
            x += 24
        out.append(f'<text x="{x + 4}" y="{ly + 14}" font-size="14">{name}</text>')
        x += 40
    f1, _ = colour_of("F", 0, 1)
    b1, _ = colour_of("B", 0, 1)
    out.append(f'<rect x="{x}" y="{ly}" width="12" height="18" fill="{_hex(f1)}"/>')
    out.append(f'<rect x="{x + 12}" y="{ly}" width="22" height="18" fill="{_hex(b1)}"/>')
    out.append(f'<rect x="{x}" y="{ly}" width="34" height="18" fill="none" stroke="#000000" '
               'stroke-width="2"/>')
    out.append(f'<text x="{x + 40}" y="{ly + 14}" font-size="14">{escape(LEGEND_OVERLAP)}</text>')
    x += 170
    out.append(f'<rect x="{x}" y="{ly}" width="22" height="18" fill="#ffffff" '
               f'stroke="{_hex(IDLE_LINE)}"/>')
    out.append(f'<text x="{x + 28}" y="{ly + 14}" font-size="14">{escape(LEGEND_IDLE)}</text>')
    if p.num_chunks > 1:
        out.append(f'<text x="{x + 80}" y="{ly + 14}" font-size="14">{escape(LEGEND_DARKER)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------- text --
_ANSI_BG = {  # 256-colour backgrounds: (first stage, later stages)
    "F": (214, 166), "B": (113, 28), "I": (79, 30), "W": (117, 26),
}


def to_text(p: Picture, color: bool = False, dt: float | None = None) -> str:
    """One line per rank; one character per ``dt`` units (default: half the shortest compute)."""
    dt = dt or p.min_duration / 2
    ncols = max(1, int(math.ceil(p.makespan / dt - 1e-9)))
    label_w = len(f"rank {p.num_ranks - 1}")
    lines = [p.title]
    tick = [" "] * ncols
    for c in range(0, ncols, 10):
        for i, ch in enumerate(f"|{c * dt:g}"):
            if c + i < ncols:
                tick[c + i] = ch
    lines.append(" " * (label_w + 1) + "".join(tick).rstrip())
    rows: list[list[tuple[str, str | None]]] = [
        [(".", None)] * ncols for _ in range(p.num_ranks)
    ]
    for c in p.cells:
        for part in c.parts:
            c0 = int(round(part.start / dt))
            c1 = max(c0 + 1, int(round(part.end / dt)))
            c1 = min(c1, ncols)
            w = c1 - c0
            if w <= 0:
                continue
            later = part.chunk > 0
            letter = part.kind.lower() if later else part.kind
            digits = str(part.mb)
            if color:
                body = (digits if len(digits) <= w else digits[-w:]).ljust(w)
            else:
                rest = w - 1
                body = letter + (digits if len(digits) <= rest else "=" * rest).ljust(rest, "=")
            key = f"{part.kind}{1 if later else 0}"
            for i in range(w):
                rows[c.rank][c0 + i] = (body[i], key)
    for r, row in enumerate(rows):
        head = f"rank {r}".rjust(label_w) + " "
        if not color:
            lines.append(head + "".join(ch for ch, _ in row))
            continue
        buf = [head]
        cur = None
        for ch, key in row:
            if key != cur:
                if key is None:
                    buf.append("\x1b[0m")
                else:
                    bg = _ANSI_BG[key[0]][int(key[1])]
                    fg = 15 if key[1] == "1" else 16
                    buf.append(f"\x1b[48;5;{bg}m\x1b[38;5;{fg}m")
                cur = key
            buf.append(ch)
        buf.append("\x1b[0m")
        lines.append("".join(buf))
    legend = "legend: F forward, B backward, I input-grad, W weight-grad, . idle"
    if p.num_chunks > 1:
        legend += "; lower case / darker = a rank's later stage (reverse direction)"
    if not color:
        legend += "; a cell is its kind letter then the micro-batch id ('=' if it does not fit)"
    lines.append(legend)
    lines.append(f"one character = {dt:g} time units")
    return "\n".join(lines) + "\n"

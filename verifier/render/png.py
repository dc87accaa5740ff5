"""A ``Picture`` drawn as a PNG (``to_png``): a numpy raster written with
verifier.render.font's encoder and 5x9 font.

What it is: the raster renderer of the picture that
``verifier.render.pictures`` lays out and measures; its look (colours, legend,
axis) is described there, and the SVG (``verifier.render.svg``) draws the same
parts at the same places.

Not covered: anti-aliasing; vector output (the SVG).
"""

from __future__ import annotations

import math

import numpy as np

from verifier.render.font import CAP_H, draw_text, encode_png, text_width
from verifier.render.pictures import (
    AXIS_H,
    BG,
    BORDER,
    CRITICAL,
    IDLE_LINE,
    LEGEND,
    LEGEND_DARKER,
    LEGEND_IDLE,
    LEGEND_OVERLAP,
    TEXT,
    Geometry,
    Picture,
    colour_of,
    geometry,
    ticks,
)


def to_png(p: Picture, px_per_unit: float | None = None, comm: bool = False,
           max_width: int = 8000) -> bytes:
    """PNG bytes of ``p`` (``px_per_unit``, ``max_width``: ``pictures.geometry``;
    ``comm``: a strip under each row for the rank's messages in flight)."""
    g = geometry(p, px_per_unit, comm, max_width)
    x_note, note_y, height = _note_place(p, g)
    img = np.empty((height, g.width, 3), dtype=np.uint8)
    img[:] = BG
    draw_text(img, 8, 8, p.title, TEXT, 2)
    ty = (g.row_h - 2 * CAP_H) // 2
    for r in range(p.num_ranks):
        draw_text(img, 8, g.y(r) + ty, f"rank {r}", TEXT, 2)
    _draw_idle(img, p, g)
    _draw_cells(img, p, g)
    if comm:
        for r, t0, t1, is_send in p.comm:
            y0 = g.y(r) + g.row_h + 1
            _rect(img, g.x(t0), y0, max(g.x(t1), g.x(t0) + 1), y0 + g.comm_h - 2,
                  (90, 90, 90) if is_send else (170, 170, 170))
    _draw_axis(img, p, g)
    _draw_marks(img, p, g)
    _draw_legend(img, p, g)
    if p.num_chunks > 1:
        draw_text(img, x_note, note_y, LEGEND_DARKER, TEXT, 2)
    return encode_png(img)


def _note_place(p: Picture, g: Geometry) -> tuple[int, int, int]:
    """(x, y) of the legend's "darker" note and the image's height: the note
    after the swatches and words on one line, or on a line of its own below
    when the picture is too narrow."""
    x_note = g.left + len(LEGEND) * (48 + text_width("W", 2) + 24)
    x_note += 40 + text_width(LEGEND_OVERLAP, 2) + 24 + 28 + text_width(LEGEND_IDLE, 2) + 24
    note_y = g.legend_y + 2
    height = g.height
    if p.num_chunks > 1 and x_note + text_width(LEGEND_DARKER, 2) + 8 > g.width:
        x_note, note_y = g.left, g.legend_y + 18 + 8
        height += 18 + 8
    return x_note, note_y, height


def _rect(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, fill=None, line=None,
          lw: int = 1) -> None:
    """Fill [x0, x1) x [y0, y1) with ``fill`` and/or outline it ``lw`` pixels wide."""
    if x1 <= x0 or y1 <= y0:
        return
    if fill is not None:
        img[y0:y1, x0:x1] = fill
    if line is not None:
        img[y0:y0 + lw, x0:x1] = line
        img[y1 - lw:y1, x0:x1] = line
        img[y0:y1, x0:x0 + lw] = line
        img[y0:y1, x1 - lw:x1] = line


def _draw_idle(img: np.ndarray, p: Picture, g: Geometry) -> None:
    for r, t0, t1 in p.idle:
        x0, x1, y0 = g.x(t0), g.x(t1), g.y(r)
        _rect(img, x0, y0, x1 + 1, y0 + g.row_h, None, IDLE_LINE)
        if g.ppu >= 8:
            for u in range(int(math.ceil(t0)), int(math.floor(t1)) + 1):
                xx = g.x(u)
                if x0 < xx < x1:
                    img[y0:y0 + g.row_h, xx] = IDLE_LINE


def _draw_cells(img: np.ndarray, p: Picture, g: Geometry) -> None:
    for c in p.cells:
        y0 = g.y(c.rank)
        y1 = y0 + g.row_h
        for part in c.parts:
            fill, white = colour_of(part.kind, part.chunk, p.num_chunks)
            x0, x1 = g.x(part.start), g.x(part.end)
            _rect(img, x0, y0, x1 + 1, y1, fill, None if len(c.parts) > 1 else BORDER)
            txt = str(part.mb)
            for sc in (g.font, 1):
                tw = text_width(txt, sc)
                if tw + 3 <= x1 - x0:
                    draw_text(img, (x0 + x1 + 1 - tw) // 2, y0 + (g.row_h - CAP_H * sc) // 2,
                              txt, (255, 255, 255) if white else TEXT, sc)
                    break
        if len(c.parts) > 1:
            _rect(img, g.x(c.start), y0, g.x(c.end) + 1, y1, None, BORDER, 2)


def _draw_axis(img: np.ndarray, p: Picture, g: Geometry) -> None:
    ay = g.legend_y - AXIS_H - 4
    draw_text(img, 8, ay + 4, "time", TEXT, 2)
    img[ay, g.left:g.x(p.makespan) + 1] = TEXT
    for tt in ticks(g, p.makespan, 1):
        xx = g.x(tt)
        img[ay:ay + 5, xx] = TEXT
        lab = f"{tt:g}"
        draw_text(img, xx - text_width(lab, 1) // 2, ay + 8, lab, TEXT, 1)


def _draw_marks(img: np.ndarray, p: Picture, g: Geometry) -> None:
    """The critical path's red borders and where a deadlocked rank stopped."""
    for c in p.cells:
        if c.critical:
            y0 = g.y(c.rank)
            _rect(img, g.x(c.start), y0, g.x(c.end) + 1, y0 + g.row_h, None, CRITICAL, 3)
    for r, tt, text in p.stuck:
        x0, y0 = g.x(tt), g.y(r)
        _rect(img, x0, y0, x0 + 4, y0 + g.row_h, CRITICAL)
        draw_text(img, x0 + 8, y0 + (g.row_h - 2 * CAP_H) // 2, text.lower(), CRITICAL, 2)


def _draw_legend(img: np.ndarray, p: Picture, g: Geometry) -> None:
    """The swatches and words of the legend (the "darker" note is ``to_png``'s)."""
    x = g.left
    for kind, name in LEGEND:
        for ch in range(min(p.num_chunks, 2)):
            fill, _ = colour_of(kind, ch if p.num_chunks > 1 else 0, min(p.num_chunks, 2))
            _rect(img, x, g.legend_y, x + 22, g.legend_y + 18, fill, BORDER)
            x += 24
        draw_text(img, x + 4, g.legend_y + 2, name, TEXT, 2)
        x += text_width(name, 2) + 24
    f1, _ = colour_of("F", 0, 1)
    b1, _ = colour_of("B", 0, 1)
    _rect(img, x, g.legend_y, x + 12, g.legend_y + 18, f1)
    _rect(img, x + 12, g.legend_y, x + 34, g.legend_y + 18, b1)
    _rect(img, x, g.legend_y, x + 34, g.legend_y + 18, None, BORDER, 2)
    draw_text(img, x + 40, g.legend_y + 2, LEGEND_OVERLAP, TEXT, 2)
    x += 40 + text_width(LEGEND_OVERLAP, 2) + 24
    _rect(img, x, g.legend_y, x + 22, g.legend_y + 18, None, IDLE_LINE)
    draw_text(img, x + 28, g.legend_y + 2, LEGEND_IDLE, TEXT, 2)

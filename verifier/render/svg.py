"""A ``Picture`` drawn as an SVG document (``to_svg``).

What it is: the vector renderer of the picture that
``verifier.render.pictures`` lays out and measures, at the places the PNG
(``verifier.render.png``) uses. Every compute action is a ``<g class="cell">``
with a ``<title>`` tooltip (so a picture of N computes has exactly N such
groups); idle gaps are ``<rect class="idle">``, messages ``class="comm"``,
the critical path ``class="critical"`` and deadlock marks ``class="stuck"``.

Not covered: raster output (the PNG); fonts are the viewer's Helvetica/Arial.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from verifier.render.font import CAP_H
from verifier.render.pictures import (
    AXIS_H,
    CRITICAL,
    IDLE_LINE,
    LEGEND,
    LEGEND_DARKER,
    LEGEND_IDLE,
    LEGEND_OVERLAP,
    Geometry,
    Picture,
    colour_of,
    geometry,
    ticks,
)


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(rgb)


def to_svg(p: Picture, px_per_unit: float | None = None, comm: bool = False,
           max_width: int = 8000) -> str:
    """The SVG text of ``p`` (arguments as ``verifier.render.png.to_png``'s)."""
    g = geometry(p, px_per_unit, comm, max_width)
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
    _cells(out, p, g)
    _axis(out, p, g)
    _marks(out, p, g)
    if comm:
        for r, t0, t1, is_send in p.comm:
            y0 = g.y(r) + g.row_h + 1
            out.append(f'<rect class="comm" x="{g.x(t0)}" y="{y0}" '
                       f'width="{max(g.x(t1) - g.x(t0), 1)}" height="{g.comm_h - 2}" '
                       f'fill="{"#5a5a5a" if is_send else "#aaaaaa"}"/>')
    _legend(out, p, g)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _cells(out: list[str], p: Picture, g: Geometry) -> None:
    fs = CAP_H * g.font + 3
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


def _axis(out: list[str], p: Picture, g: Geometry) -> None:
    ay = g.legend_y - AXIS_H - 4
    out.append(f'<text x="8" y="{ay + 14}" font-size="14" font-weight="bold">time</text>')
    out.append(f'<line x1="{g.left}" y1="{ay}" x2="{g.x(p.makespan)}" y2="{ay}" '
               'stroke="#000000"/>')
    for tt in ticks(g, p.makespan, 1):
        xx = g.x(tt)
        out.append(f'<line x1="{xx}" y1="{ay}" x2="{xx}" y2="{ay + 5}" stroke="#000000"/>')
        out.append(f'<text x="{xx}" y="{ay + 17}" font-size="11" text-anchor="middle">'
                   f'{tt:g}</text>')


def _marks(out: list[str], p: Picture, g: Geometry) -> None:
    """The critical path's red borders and where a deadlocked rank stopped."""
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


def _legend(out: list[str], p: Picture, g: Geometry) -> None:
    x = g.left
    ly = g.legend_y
    for kind, name in LEGEND:
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

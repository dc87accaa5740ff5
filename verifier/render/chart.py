"""The comparison chart of `compare`: one row per family, two bars.

What it is: ``chart_svg(rows, title)`` and ``chart_png(rows, title)`` for a
list of ``ChartRow``: the left bar is the makespan split into the mean busy
time per rank (coloured) and the mean bubble per rank (grey), with the numbers
written beside it; the right bar is the peak live activations of the worst rank (in
stage-activation units, verifier.semantics.memory). Families that could not be built
or timed show their reason instead of bars.

Not covered: axes with ticks, interactive output.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from verifier.render.font import draw_text, encode_png, text_width


@dataclass(frozen=True, slots=True)
class ChartRow:
    family: str
    makespan: float | None  # None: n/a or deadlocked (see note)
    busy: float | None  # mean busy per rank
    peak_activations: float | None
    note: str  # "" or the reason / extra text


_BUSY = (122, 208, 88)
_BUBBLE = (190, 190, 190)
_ACT = (128, 192, 246)
_ROW_H = 30
_LEFT = 210
_BAR_W = 560
_ACT_W = 220
_GAP = 300


def _scales(rows):
    ms = max((r.makespan for r in rows if r.makespan), default=1.0)
    act = max((r.peak_activations for r in rows if r.peak_activations), default=1.0)
    return _BAR_W / ms, _ACT_W / act


def _texts(r: ChartRow) -> tuple[str, str]:
    if r.makespan is None:
        return (r.note, "")
    bub = r.makespan - (r.busy or 0.0)
    return (f"{r.makespan:.4g} (mean bubble {bub:.3g})", f"{r.peak_activations:.3g}")


# the column headings, the same in the PNG and the SVG
HEAD_MAKESPAN = "makespan: mean busy per rank + mean bubble"
HEAD_ACTIVATIONS = "peak live activations (worst rank)"


def chart_png(rows: list[ChartRow], title: str) -> bytes:
    w = max(_LEFT + _BAR_W + _GAP + _ACT_W + 60, text_width(title, 2) + 20,
            _LEFT + _BAR_W + _GAP + text_width(HEAD_ACTIVATIONS, 2) + 10)
    h = 60 + len(rows) * _ROW_H + 20
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    draw_text(img, 10, 10, title, (0, 0, 0), 2)
    x_act = _LEFT + _BAR_W + _GAP
    draw_text(img, _LEFT, 34, HEAD_MAKESPAN, (0, 0, 0), 2)
    draw_text(img, x_act, 34, HEAD_ACTIVATIONS, (0, 0, 0), 2)
    sx, sa = _scales(rows)
    for i, r in enumerate(rows):
        y = 60 + i * _ROW_H
        draw_text(img, 10, y + 6, r.family, (0, 0, 0), 2)
        main, act = _texts(r)
        if r.makespan is None:
            draw_text(img, _LEFT, y + 6, main[:90], (160, 0, 0), 2)
            continue
        xb = _LEFT + int(round((r.busy or 0) * sx))
        xe = _LEFT + int(round(r.makespan * sx))
        img[y + 2:y + _ROW_H - 6, _LEFT:xb] = _BUSY
        img[y + 2:y + _ROW_H - 6, xb:xe] = _BUBBLE
        draw_text(img, xe + 6, y + 6, main, (0, 0, 0), 1 if text_width(main, 2) > _GAP - 8 else 2)
        xa = x_act + int(round((r.peak_activations or 0) * sa))
        img[y + 2:y + _ROW_H - 6, x_act:xa] = _ACT
        draw_text(img, xa + 6, y + 6, act, (0, 0, 0), 2)
    return encode_png(img)


def chart_svg(rows: list[ChartRow], title: str) -> str:
    w = _LEFT + _BAR_W + _GAP + _ACT_W + 60
    h = 60 + len(rows) * _ROW_H + 20
    x_act = _LEFT + _BAR_W + _GAP
    sx, sa = _scales(rows)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{w}" height="{h}" fill="#ffffff"/>',
        f'<text x="10" y="24" font-size="16" font-weight="bold">{escape(title)}</text>',
        f'<text x="{_LEFT}" y="48" font-size="13">{escape(HEAD_MAKESPAN)}</text>',
        f'<text x="{x_act}" y="48" font-size="13">{escape(HEAD_ACTIVATIONS)}</text>',
    ]
    for i, r in enumerate(rows):
        y = 60 + i * _ROW_H
        out.append(f'<g class="family" data-family="{escape(r.family)}">')
        out.append(f'<text x="10" y="{y + 18}" font-size="14" font-weight="bold">'
                   f'{escape(r.family)}</text>')
        main, act = _texts(r)
        if r.makespan is None:
            out.append(f'<text x="{_LEFT}" y="{y + 18}" font-size="13" fill="#a00000">'
                       f'{escape(main)}</text></g>')
            continue
        bw = (r.busy or 0) * sx
        mw = r.makespan * sx
        out.append(f'<rect class="busy" x="{_LEFT}" y="{y + 2}" width="{bw:.1f}" '
                   f'height="{_ROW_H - 8}" fill="#7ad058"/>')
        out.append(f'<rect class="bubble" x="{_LEFT + bw:.1f}" y="{y + 2}" '
                   f'width="{mw - bw:.1f}" height="{_ROW_H - 8}" fill="#bebebe"/>')
        out.append(f'<text x="{_LEFT + mw + 6:.1f}" y="{y + 18}" font-size="13">'
                   f'{escape(main)}</text>')
        aw = (r.peak_activations or 0) * sa
        out.append(f'<rect class="act" x="{x_act}" y="{y + 2}" width="{aw:.1f}" '
                   f'height="{_ROW_H - 8}" fill="#80c0f6"/>')
        out.append(f'<text x="{x_act + aw + 6:.1f}" y="{y + 18}" font-size="13">{act}</text></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


__all__ = ["ChartRow", "chart_png", "chart_svg"]

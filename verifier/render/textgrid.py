"""A ``Picture`` as a text grid (``to_text``), for a terminal.

What it is: one line per rank, one character per ``dt`` time units (default
half the shortest compute). With colour the cell background is the kind's
colour (ANSI 256) and the digits the micro-batch id; without, the kind letter
(lower case for a rank's second and later stages) followed by the
micro-batch id when it fits, ``.`` for idle.

Not covered: messages, the critical path and deadlock marks (the PNG and SVG
draw those).
"""

from __future__ import annotations

import math

from verifier.render.pictures import Picture

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

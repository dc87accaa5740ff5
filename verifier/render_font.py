"""A tiny raster toolkit for pictures without dependencies: a 5x7 bitmap font and
a PNG encoder (numpy raster -> zlib -> PNG chunks).

What it is: ``draw_text(img, x, y, text, colour, scale)`` for upper-case
letters, digits and a little punctuation (lower case is drawn as upper case;
unknown characters as a blank), ``text_width``, and ``encode_png(rgb)`` for an
``(H, W, 3) uint8`` array (colour type 2, 8 bits, filter 0 on every row).

Not covered: anti-aliasing, other fonts, PNG decoding.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

GLYPH_W, GLYPH_H = 5, 7

# Each glyph: 7 rows of 5 bits, most significant bit on the left.
_ROWS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "&": "01100 10010 10100 01000 10101 10010 01101",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "/": "00001 00001 00010 00100 01000 10000 10000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "[": "01110 01000 01000 01000 01000 01000 01110",
    "]": "01110 00010 00010 00010 00010 00010 01110",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    ">": "01000 00100 00010 00001 00010 00100 01000",
    "<": "00010 00100 01000 10000 01000 00100 00010",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}

GLYPHS: dict[str, np.ndarray] = {
    ch: np.array([[c == "1" for c in row] for row in rows.split()], dtype=bool)
    for ch, rows in _ROWS.items()
}
_BLANK = GLYPHS[" "]


def text_width(text: str, scale: int = 1) -> int:
    """Pixel width of ``text`` (one blank column between glyphs)."""
    if not text:
        return 0
    return (len(text) * (GLYPH_W + 1) - 1) * scale


def text_height(scale: int = 1) -> int:
    return GLYPH_H * scale


def draw_text(img: np.ndarray, x: int, y: int, text: str, colour, scale: int = 1) -> None:
    """Draw ``text`` with its top-left corner at (x, y), clipped to the image."""
    h, w = img.shape[:2]
    col = np.asarray(colour, dtype=np.uint8)
    for i, ch in enumerate(text.upper()):
        g = GLYPHS.get(ch, _BLANK)
        if scale > 1:
            g = np.repeat(np.repeat(g, scale, axis=0), scale, axis=1)
        gx = x + i * (GLYPH_W + 1) * scale
        gh, gw = g.shape
        x0, y0 = max(gx, 0), max(y, 0)
        x1, y1 = min(gx + gw, w), min(y + gh, h)
        if x0 >= x1 or y0 >= y1:
            continue
        sub = g[y0 - y:y1 - y, x0 - gx:x1 - gx]
        img[y0:y1, x0:x1][sub] = col


def _chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def encode_png(rgb: np.ndarray, level: int = 6) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    raw = np.zeros((h, w * 3 + 1), dtype=np.uint8)  # filter byte 0 on every row
    raw[:, 1:] = rgb.reshape(h, w * 3)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + _chunk(b"IEND", b""))

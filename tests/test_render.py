"""Tests of the pictures (verifier.render.pictures, render_font, render_chart) and of the
show and compare commands: every family renders to PNG and SVG, the PNG is a
valid PNG of the announced size whose pixels carry the cell colours, the SVG
parses as XML with one cell per compute action, the text grid has one line per
rank and uses ANSI colours only when asked.
"""

from __future__ import annotations

import io
import json
import struct
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest

from verifier.analysis.timeline import analyze
from verifier.cli.app import main
from verifier.analysis.costs import parse_kv
from verifier.generators import FAMILIES, generate
from verifier.format.io import save_schedule
from verifier.render.pictures import PALETTE, colour_of, layout
from verifier.render.png import to_png
from verifier.render.svg import to_svg
from verifier.render.textgrid import to_text
from verifier.render.font import (
    GLYPH_H, GLYPH_W, GLYPHS, REPLACEMENT, draw_text, encode_png, glyph, text_width,
)

SVG = "{http://www.w3.org/2000/svg}"


def decode_png(data: bytes) -> np.ndarray:
    """A minimal decoder for what encode_png writes (RGB, 8 bit, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, *_ = ihdr
    assert (depth, ctype) == (8, 2)
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def _family(fam, R=4, M=8):
    try:
        return generate(fam, R, M)
    except Exception:
        return generate(fam, R, 2 * R)


@pytest.mark.parametrize("fam", FAMILIES)
def test_every_family_renders_png_and_svg(fam):
    s = _family(fam)
    a = analyze(s, comm_model="eager")
    pic = layout(s, a)
    assert len(pic.cells) == len(a.computes)
    data = to_png(pic, comm=True)
    img = decode_png(data)
    assert img.shape[0] > 40 * s.num_ranks // 2 and img.shape[1] > 200
    # the forward colour (first stage) is on the picture, and white idle space too
    f_rgb = np.array(colour_of("F", 0, pic.num_chunks)[0], dtype=np.uint8)
    assert (img == f_rgb).all(axis=2).sum() > 100
    svg = to_svg(pic, comm=True)
    root = ET.fromstring(svg)
    cells = [g for g in root.iter(f"{SVG}g") if g.get("class") == "cell"]
    assert len(cells) == len(a.computes)
    overlaps = sum(1 for c in a.computes if c.kind in ("FB", "FI"))
    assert sum(1 for g in cells if "&" in g.get("data-kind")) == overlaps
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "0" in texts and any(t and t.startswith("rank") for t in texts)


def test_overlap_cells_and_directions_are_drawn_distinctly():
    s = generate("dualpipe", 4, 8)
    a = analyze(s, parse_kv("F=1,I=1,W=1,FB=3"))
    pic = layout(s, a)
    pairs = [c for c in pic.cells if len(c.parts) == 2]
    assert pairs and all(p.parts[0].kind == "F" and p.parts[1].kind == "B" for p in pairs)
    # F part takes F/(F+B) of the pair's width
    c = pairs[0]
    assert c.parts[0].end - c.parts[0].start == pytest.approx((c.end - c.start) / 3)
    # both directions appear, in different shades
    chunks = {p.chunk for c in pic.cells for p in c.parts}
    assert chunks == {0, 1}
    assert colour_of("F", 0, 2)[0] != colour_of("F", 1, 2)[0]
    assert colour_of("F", 1, 2)[1] is True  # white digits on the darker shade
    assert len({PALETTE[k][0] for k in "FBIW"}) == 4
    # idle gaps exist (warm-up) and lie inside [0, makespan]
    assert pic.idle and all(0 <= t0 < t1 <= a.makespan for _, t0, t1 in pic.idle)
    busy_idle = {r: 0.0 for r in range(4)}
    for r, t0, t1 in pic.idle:
        busy_idle[r] += t1 - t0
    for r in a.ranks:
        assert busy_idle[r.rank] == pytest.approx(r.bubble)


def test_text_grid_plain_and_coloured():
    s = generate("dualpipev", 4, 10)
    pic = layout(s, analyze(s))
    plain = to_text(pic, color=False)
    lines = plain.splitlines()
    rows = [x for x in lines if x.lstrip().startswith("rank")]
    assert len(rows) == 4 and "\x1b" not in plain
    assert "F0" in rows[0] and "." in rows[3]
    assert len({len(x) for x in rows}) == 1
    col = to_text(pic, color=True)
    assert "\x1b[48;5;" in col and col.count("\x1b[0m") >= 4


def test_font_and_png_encoder():
    assert set("0123456789FBIWRANK&") <= set(GLYPHS)
    assert all(g.shape == (GLYPH_H, GLYPH_W) == (9, 5) for g in GLYPHS.values())
    img = np.full((20, 60, 3), 255, dtype=np.uint8)
    draw_text(img, 2, 2, "F12", (0, 0, 0), 2)
    assert (img == 0).all(axis=2).sum() > 20
    assert text_width("F12", 2) == (3 * 6 - 1) * 2
    back = decode_png(encode_png(img))
    assert (back == img).all()
    with pytest.raises(ValueError):
        encode_png(np.zeros((2, 2), dtype=np.uint8))


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def test_show_cli_formats(tmp_path):
    p = tmp_path / "s.json"
    save_schedule(generate("dualpipe", 4, 8), p)
    for ext in ("png", "svg", "txt"):
        out = tmp_path / f"o.{ext}"
        rc, o, e = _cli("show", str(p), "-o", str(out), "--costs", "F=1,B=2,W=1")
        assert rc == 0, e
        assert out.stat().st_size > 100
    assert (tmp_path / "o.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ET.fromstring((tmp_path / "o.svg").read_text())
    rc, o, e = _cli("show", str(p))
    assert rc == 0 and "\x1b" not in o and o.count("rank") >= 4  # StringIO is no TTY
    rc, o, e = _cli("show", str(p), "--color", "always")
    assert rc == 0 and "\x1b[" in o
    rc, o, e = _cli("show", str(p), "-o", str(tmp_path / "o.gif"))
    assert rc == 2 and ".gif" in e
    rc, o, e = _cli("show", str(p), "--costs", "F=0")
    assert rc == 2 and "F=0" in e


def test_show_deadlock_draws_and_exits_1(tmp_path):
    from tests.test_analysis import _crossing

    p = tmp_path / "x.json"
    save_schedule(_crossing(), p)
    rc, o, e = _cli("show", str(p), "-o", str(tmp_path / "x.png"))
    assert rc == 1 and "deadlock" in e and (tmp_path / "x.png").exists()


def test_compare_cli_table_json_chart(tmp_path):
    rc, o, e = _cli("compare", "--ranks", "3", "--microbatches", "6", "--comm-model", "eager",
                    "-o", str(tmp_path / "c.svg"))
    assert rc == 0, e
    assert "dualpipe" in o and "n/a:" in o and "even number of ranks" in o
    root = ET.fromstring((tmp_path / "c.svg").read_text())
    fams = [g.get("data-family") for g in root.iter(f"{SVG}g") if g.get("class") == "family"]
    assert fams == list(FAMILIES)
    rc, o, e = _cli("compare", "--ranks", "4", "--microbatches", "8", "--format", "json",
                    "-o", str(tmp_path / "c.png"))
    rows = json.loads(o)
    assert rc == 0 and [r["family"] for r in rows] == list(FAMILIES)
    by = {r["family"]: r for r in rows}
    assert by["1f1b"]["formula"] == by["1f1b"]["bubble"] == 9
    assert by["dualpipe"]["param_copies"] == 2
    assert decode_png((tmp_path / "c.png").read_bytes()).shape[1] > 500
    rc, o, e = _cli("compare", "--ranks", "4", "--microbatches", "8", "--families", "nope")
    assert rc == 2 and "nope" in e


def test_critical_path_and_stuck_markers():
    s = generate("1f1b", 4, 8)
    a = analyze(s)
    pic = layout(s, a, critical=True)
    crit = [c for c in pic.cells if c.critical]
    assert len(crit) == sum(1 for p in a.critical_path if p.what == "compute") > 0
    root = ET.fromstring(to_svg(pic))
    assert sum(1 for r in root.iter(f"{SVG}rect") if r.get("class") == "critical") == len(crit)
    img = decode_png(to_png(pic))
    assert (img == np.array([220, 0, 0], dtype=np.uint8)).all(axis=2).sum() > 50
    assert not layout(s, a).stuck and not any(c.critical for c in layout(s, a).cells)

    from tests.test_analysis import _crossing

    x = _crossing()
    pic = layout(x, analyze(x))
    assert {r for r, _, _ in pic.stuck} == {0, 1}
    assert "stuck at step 3" in to_svg(pic)


def test_font_covers_printable_ascii_with_distinct_glyphs():
    """Every printable ASCII character has its own glyph, at least two pixels
    away from every other glyph (V/U, (/<, ;/:, ,/. included); every lower-case
    letter differs from its capital; nothing outside ASCII draws as a blank."""
    printable = [chr(c) for c in range(32, 127)]
    assert sorted(GLYPHS) == printable
    flat = {ch: GLYPHS[ch].reshape(-1) for ch in printable}
    close = [
        (a, b, int((flat[a] != flat[b]).sum()))
        for i, a in enumerate(printable) for b in printable[i + 1:]
        if (flat[a] != flat[b]).sum() < 2
    ]
    assert close == []
    for up in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        assert (GLYPHS[up] != GLYPHS[up.lower()]).any(), up
    assert all(GLYPHS[ch].any() for ch in printable if ch != " ")
    assert not GLYPHS[" "].any()
    assert glyph("\u00e9") is REPLACEMENT and REPLACEMENT.any()
    assert not any((REPLACEMENT == GLYPHS[ch]).all() for ch in printable)
    # text is drawn as written: "ZBV" and "zbv" differ, and so do "ZBV" and "ZBU"
    def ink(text):
        img = np.full((12, 40, 3), 255, dtype=np.uint8)
        draw_text(img, 1, 1, text, (0, 0, 0))
        return (img == 0).all(axis=2)
    assert (ink("ZBV") != ink("zbv")).any() and (ink("ZBV") != ink("ZBU")).any()
    assert (ink("(x)") != ink("<x>")).any()


def test_png_legend_equals_svg_legend(monkeypatch):
    """The PNG draws the SVG's legend words, the "darker" note included, and
    its other texts in the SVG's case."""
    import verifier.render.pictures as render
    import verifier.render.png as png

    drawn = []
    real = png.draw_text
    def spy(img, x, y, text, *args):
        drawn.append(text)
        real(img, x, y, text, *args)

    monkeypatch.setattr(png, "draw_text", spy)
    for family, ranks, mbs in (("dualpipev", 4, 10), ("dualpipev", 2, 4), ("1f1b", 2, 4)):
        s = generate(family, ranks, mbs)
        pic = layout(s, analyze(s))
        drawn.clear()
        png = to_png(pic)
        svg = to_svg(pic)
        texts = render.legend_texts(pic)
        assert (render.LEGEND_DARKER in texts) == (pic.num_chunks > 1)
        for t in texts:
            assert t in drawn, (family, t)
            assert f">{t.replace('&', '&amp;')}<" in svg, (family, t)
        assert "rank 0" in drawn and "time" in drawn and pic.title in drawn
        back = decode_png(png)
        assert back.shape[0] >= 100 and (back != 255).any()

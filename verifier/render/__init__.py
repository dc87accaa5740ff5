"""Pictures and traces of an analysed timeline: the picture laid out as data
(``pictures``), drawn as PNG (``png``, with ``font``), SVG (``svg``) or a text
grid (``textgrid``); charts (``chart``) and Chrome/Perfetto traces (``trace``).
Reads ``verifier.analysis`` results; nothing below imports it."""

"""Pictures and traces of an analysed timeline: PNG/SVG/text grids
(``pictures``, ``chart``, ``font``) and Chrome/Perfetto traces (``trace``).
Reads ``verifier.analysis`` results; nothing below imports it."""

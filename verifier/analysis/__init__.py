"""The timeline analysis: simulated time, bubbles and memory per rank under a
cost model. ``timeline`` is the entry point, ``replay`` the event replay,
``costs`` the cost model.

``verifier.analysis`` keeps the names of the pre-1.1 module ``verifier/analysis.py``
(the README's Python API): they are re-exported from ``timeline``.
"""
from verifier.analysis.timeline import *  # noqa: F401,F403

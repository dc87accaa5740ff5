"""The README's Python API for checking (``from verifier.checker import check,
Verdict``), kept stable: a re-export of ``verifier.check.checker``, where the
code lives. New code imports from there."""
from verifier.check.checker import *  # noqa: F401,F403
from verifier.check.checker import __all__  # noqa: F401

"""The README's Python API for schedule files (``from verifier.io import
load_schedule, save_schedule``), kept stable: a re-export of
``verifier.format.io``, where the code lives. New code imports from there."""
from verifier.format.io import *  # noqa: F401,F403

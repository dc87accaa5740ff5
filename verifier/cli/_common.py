"""What the reading commands share: load a schedule within the command line's
limits and refuse, with one line naming the file, one the engines cannot take.

Not covered: the checks themselves (verifier.format.guard), rendering.
"""

from __future__ import annotations

import argparse

from verifier.format import guard
from verifier.check.properties import require_well_formed
from verifier.format.io import load_schedule, source_name
from verifier.ir import Schedule


def load_for_engines(args: argparse.Namespace, command: str, path: str | None = None) -> Schedule:
    """The schedule named by ``args.file`` (or ``path``), loaded within the
    ``--max-*`` limits of ``args`` and well-formed (``guard.require_well_formed``)."""

    path = args.file if path is None else path
    s = load_schedule(path, limits=guard.limits_of(args))
    require_well_formed(s, source_name(path), command)
    return s

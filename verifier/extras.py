"""Optional dependencies and the extra that installs each.

What it is: ``require(module, extra, needed_by)`` imports an optional
dependency or raises ``MissingExtra`` whose message is one line naming the
pip extra to install (``pip install 'ppverify[torch]'``); the command lines
turn it into that line on stderr and exit 2. ``EXTRAS`` says what each extra
is for (README and pyproject say the same).

What it does not cover: version checks of installed dependencies (pip's
resolver does that from pyproject's ranges). Imports nothing optional itself.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from verifier.errors import PpError

EXTRAS = {
    "torch": "torch: python -m reference (gradient ground truth) and python -m fastpath (real ranks)",
    "strategies": "hypothesis: verifier.strategies, for property tests of your own schedule code",
    "test": "the project's own test suite (pins torch 2.13.0, hypothesis, DeepSeek's dualpipe)",
}


class MissingExtra(PpError, ImportError):
    """An optional dependency is not installed; the message names the extra (exit 2).
    Defined here, not in verifier.errors, so that its traceback keeps naming
    ``verifier.extras.MissingExtra`` (tests/test_packaging.py holds that line)."""


def install_hint(module: str, extra: str, needed_by: str) -> str:
    return (f"{needed_by} needs {module}, which is not installed: "
            f"pip install 'ppverify[{extra}]'")


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import ``module`` or raise MissingExtra naming ``pip install 'ppverify[extra]'``.

    Only the module itself missing counts; an error inside an installed
    module (a broken install) propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise MissingExtra(install_hint(module, extra, needed_by), name=module) from None

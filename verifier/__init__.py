"""verifier: the schedule model, generators, lowering, the checker, analysis and the CLI.

Importable without torch. Only verifier.check.z3engine imports z3.
``__version__`` is the package version (the one place it is written;
pyproject.toml reads it from here).
"""

__version__ = "0.1.0"

from verifier.errors import PpError  # noqa: E402  (the root of every exception: verifier.errors)
from verifier.ir import FORMAT_VERSION, Schedule, ScheduleError  # noqa: E402

__all__ = ["FORMAT_VERSION", "PpError", "Schedule", "ScheduleError", "__version__"]


def __getattr__(name: str):
    """``verifier.check`` after a bare ``import verifier``: the callable package
    ``verifier.check`` (``verifier.check(x, comm_model=...)``, see
    verifier/check/__init__.py), loaded on first use so that ``import verifier``
    stays light (no engines, no z3)."""
    if name == "check":
        import importlib

        return importlib.import_module("verifier.check")
    raise AttributeError(f"module 'verifier' has no attribute {name!r}")

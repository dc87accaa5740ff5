"""Sub-commands of ``python -m verifier``, one module each (see verifier.cli)."""

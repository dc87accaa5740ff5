"""The command line (``python -m verifier``, ``ppverify``): ``main`` parses
and dispatches, one module per subcommand. The top of the import order: it may
import every other part; nothing imports it."""

from verifier.cli.app import console_main, main  # noqa: F401  (the entry points)

"""The reference executor's names that need no torch: test models, loss reductions.

What it is: constants the command line offers as choices before torch is
imported (so ``python -m reference --help`` / ``--version`` work without it).
reference.models and reference.baseline use the same tuples.

What it does not cover: the models and losses themselves (reference.models,
reference.baseline).
"""

MODELS: tuple[str, ...] = ("mlp", "transformer")
LOSS_REDUCTIONS: tuple[str, ...] = ("sum", "mean")

"""Schedule synthesis: the search space and its cost (``synthesis``), the
search (``search``) and the Z3 model of the optimum (``z3synth``, the second
and last module that imports z3)."""

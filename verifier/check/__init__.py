"""The checker: per-property passes (``properties``), the happens-before graph
engine (``hbgraph``), the Z3 engine (``encoding`` and ``smt`` build the
constraint system as data and text, ``z3engine`` solves it: the only module here
that imports z3), the independent certificate checker (``certificate``, which shares
nothing with the others but ``verifier.ir`` and the result types) and the
orchestration that chooses the engine (``checker``)."""

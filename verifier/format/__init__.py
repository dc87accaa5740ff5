"""File formats: pp-schedule JSON and its schema, the PyTorch pipelining CSV
dialect, input limits (``guard``), byte quantities (``units``) and the map from
a checked place back to the user's file (``origin``). Reads and writes the IR
of ``verifier.ir``; above ``semantics`` (``origin`` names lowered steps)."""

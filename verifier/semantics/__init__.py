"""What a schedule means, stated once: the lowering of compute-only schedules
and the activation-memory definition, read by every engine, the analysis and
the executors. Imports only ``verifier.ir`` and ``verifier.errors``."""

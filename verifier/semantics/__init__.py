"""What a schedule means, stated once, read by every engine, the analysis and
the executors: route neighbours (routes.py), the ops' numbering, peers, FIFO
channels and first receives of any schedule (channels.py), the tables of a
well-formed one (tables.py), the communication models (comm.py), the lowering
of compute-only schedules (lowering.py; PyTorch's rule: lowering_torch.py) and
the activation-memory definition (memory.py). Imports only ``verifier.ir`` and
``verifier.errors``."""

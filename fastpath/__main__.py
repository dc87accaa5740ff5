"""``python -m fastpath``: see fastpath.cli.

The process ends with ``os._exit`` once its output is flushed, as the spawned
ranks do (fastpath.launch._spawn_entry): a torchrun rank that ran normal
interpreter finalisation after destroy_process_group sometimes aborted in
gloo's teardown ("terminate called without an active exception", SIGABRT,
seen once in a full suite run under load), turning a finished, matching run
into exit 1. Nothing is left to do at that point but the exit code.
"""

import os
import sys

from fastpath.cli import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)

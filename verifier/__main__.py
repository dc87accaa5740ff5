import os
import sys

from verifier.cli.app import main

code = main()
# End here without the interpreter's tear-down (every module's objects freed
# one by one: about 3% of a whole-process check of a large CSV, bench_check.py's
# CSV case); the output is flushed first, as the tear-down would. A flush that
# fails takes the usual way out, which reports it.
try:
    sys.stdout.flush()
    sys.stderr.flush()
except BrokenPipeError:  # `| head`: the reader had what it wanted
    os._exit(code)
except OSError as e:  # a full disk or /dev/full: one line, exit 2
    try:
        sys.stderr.write(f"error: cannot write to standard output: {e.strerror or e}\n")
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(2)
os._exit(code)

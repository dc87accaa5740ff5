"""``torchrun --nproc-per-node R -m verifier.record [--timeout S] [-o OUT] SCRIPT [ARGS...]``.

What it is: the recorder under torchrun (or any launcher that sets RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT). This module imports no torch: it
checks its flags and that torch is installed (else one line naming the
``[torch]`` extra, exit 2), then replaces itself (``exec``, keeping the
environment torchrun set) with ``python -m fastpath.record torchrun``, which
runs SCRIPT with the recorder installed. Each rank writes OUT.parts/rankR.jsonl;
a rank blocked in one call for --timeout seconds stops itself; rank 0 merges
the parts into OUT once every rank has ended.

What it does not cover: starting the ranks (torchrun does),
``python -m verifier record`` (verifier/cli/record.py: starts them itself, one
watchdog over all of them, --check).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from verifier.extras import install_hint

USAGE = ("usage: torchrun --nproc-per-node R -m verifier.record [--timeout S] [-o OUT] "
         "SCRIPT [ARGS...] | -m MODULE [ARGS...]")


def parse(argv: list[str]) -> tuple[list[str], list[str]]:
    """(options for fastpath.record torchrun, target); ValueError for a bad command line."""
    opts: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a in ("--timeout", "-o", "--output"):
            if i + 1 >= len(argv):
                raise ValueError(f"{a} needs a value")
            if a == "--timeout":
                try:
                    ok = float(argv[i + 1]) > 0
                except ValueError:
                    ok = False
                if not ok:
                    raise ValueError(f"--timeout: must be a positive number, got {argv[i + 1]!r}")
            opts += [a, argv[i + 1]]
            i += 2
            continue
        if a in ("-h", "--help"):
            raise ValueError("help")
        break
    target = argv[i:]
    if not target or target == ["-m"]:
        raise ValueError("no script given")
    return opts, target


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts, target = parse(argv)
    except ValueError as e:
        if str(e) == "help":
            sys.stdout.write(__doc__.split("\n\n")[0] + "\n" + USAGE + "\n")
            return 0
        sys.stderr.write(f"error: verifier.record: {e}\n{USAGE}\n")
        return 2
    if importlib.util.find_spec("torch") is None:
        sys.stderr.write(f"error: {install_hint('torch', 'torch', 'verifier.record')}\n")
        return 2
    cmd = [sys.executable, "-m", "fastpath.record", "torchrun", *opts, "--", *target]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

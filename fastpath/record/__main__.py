"""``python -m fastpath.record``: the torch side's entry points (not a user command line).

- ``launch --nproc R [--timeout S] [-o OUT] -- SCRIPT ARGS`` / ``-- -m MODULE ARGS``:
  the launcher (``python -m verifier record`` runs this; its --help is the user's);
- ``worker --parts DIR [--ctl FD --parent PID] -- TARGET``: one rank, started by the launcher;
- ``torchrun [--timeout S] [-o OUT] -- TARGET``: one rank under torchrun
  (``torchrun ... -m verifier.record`` hands over to this).

Exit codes: those of fastpath.record.launch (launch) and fastpath.record.worker.
"""

from __future__ import annotations

import argparse
import sys


def build_parser(stdout=None) -> argparse.ArgumentParser:
    """The entry points' flags (``stdout``: unused, the signature the tests share)."""
    p = argparse.ArgumentParser(prog="python -m fastpath.record")
    sub = p.add_subparsers(dest="cmd", required=True)
    la = sub.add_parser("launch")
    la.add_argument("--nproc", type=int, required=True)
    la.add_argument("--timeout", type=float, default=60.0)
    la.add_argument("-o", "--output", default="program.json")
    wo = sub.add_parser("worker")
    wo.add_argument("--parts", required=True)
    wo.add_argument("--ctl", type=int)
    wo.add_argument("--parent", type=int)
    tr = sub.add_parser("torchrun")
    tr.add_argument("--timeout", type=float, default=60.0)
    tr.add_argument("-o", "--output", default="program.json")
    return p


def main(argv: list[str]) -> int:
    if "--" not in argv:
        sys.stderr.write("error: python -m fastpath.record CMD [options] -- TARGET\n")
        return 2
    cut = argv.index("--")
    args = build_parser().parse_args(argv[:cut])
    target = argv[cut + 1:]
    if args.cmd == "launch":
        # deferred: a worker never needs the launcher (and neither loads torch here)
        from fastpath.record.launch import record
        from verifier.errors import InputError
        import os

        if os.environ.get("PPV_RECORD_PARENT"):  # started by python -m verifier record
            from fastpath.supervise import die_with_parent  # light: no torch

            die_with_parent(int(os.environ.pop("PPV_RECORD_PARENT")))
        try:
            res = record(target, args.nproc, timeout_s=args.timeout, out=args.output)
        except InputError as e:
            sys.stderr.write(f"error: {e}\n")
            return 2
        stream = sys.stdout if res.exit_code == 0 else sys.stderr
        prefix = "" if res.exit_code in (0, 130, 143) else "error: "
        stream.write(f"{prefix}{res.message}\n")
        return res.exit_code
    from fastpath.record.worker import main as worker_main  # loads torch after the control thread

    if args.cmd == "worker":
        return worker_main(target, parts_dir=args.parts, ctl_fd=args.ctl, parent_pid=args.parent)
    return worker_main(target, parts_dir=args.output + ".parts", mode="torchrun",
                       timeout_s=args.timeout, out=args.output, command=target)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

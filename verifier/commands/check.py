"""`python -m verifier check`: placeholder until its owner lands it (prints that it is missing)."""

HELP = "check (not built yet)"


def add_arguments(p):
    p.add_argument("rest", nargs="*")


def run(args, stdout, stderr) -> int:
    stderr.write("error: 'check' is not built yet\n")
    return 2

"""`python -m verifier show`: placeholder until its owner lands it (prints that it is missing)."""

HELP = "show (not built yet)"


def add_arguments(p):
    p.add_argument("rest", nargs="*")


def run(args, stdout, stderr) -> int:
    stderr.write("error: 'show' is not built yet\n")
    return 2

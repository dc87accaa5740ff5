"""`python -m verifier generate`: placeholder until its owner lands it (prints that it is missing)."""

HELP = "generate (not built yet)"


def add_arguments(p):
    p.add_argument("rest", nargs="*")


def run(args, stdout, stderr) -> int:
    stderr.write("error: 'generate' is not built yet\n")
    return 2

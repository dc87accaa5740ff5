"""Benchmark: reading a recorded program (``load_program``) against bare ``json.loads``.

What it measures, in one run: ``json.loads`` of the file's text, and
``verifier.format.program.load_program`` of the file (read, size guard, parse,
validate, build the Program), each timed once per round, the two interleaved,
best of ``--repeat`` rounds; the ratio load_program / json.loads. The file is
DualPipeV at ``--ranks`` x ``--microbatches`` (default 16 x 64, about 2.7 MB)
written as a program (``program_from_schedule``, ``dumps_program``), or
``--file``. Target: ratio <= 1.6. Run:
``python benchmarks/bench_load_program.py [--repeat 15] [--file PATH]``;
``--root DIR`` imports ``verifier`` from another checkout (e.g. main, for a
before/after in the same session).

What it does not cover: checking the program (benchmarks/bench_program.py),
the error path (a refused document), standard input.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=16)
    ap.add_argument("--microbatches", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--file", type=Path, help="a program file to read instead of the generated one")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="the checkout whose verifier is measured (default: this one)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.root.resolve()))
    import verifier
    from verifier.format.program import dumps_program, load_program
    from verifier.format.schedule_program import program_from_schedule
    from verifier.generators import generate

    with tempfile.TemporaryDirectory() as d:
        path = args.file
        if path is None:
            path = Path(d) / "dualpipev-program.json"
            path.write_text(dumps_program(program_from_schedule(
                generate("dualpipev", args.ranks, args.microbatches))))
        text = path.read_text(encoding="utf-8")
        program = load_program(path)  # warm: the schema compiled once
        n_ops = program.num_ops
        del program
        t_json = t_load = float("inf")
        for _ in range(args.repeat):
            gc.collect()
            t0 = time.perf_counter()
            json.loads(text)
            t_json = min(t_json, time.perf_counter() - t0)
            gc.collect()
            t0 = time.perf_counter()
            load_program(path)
            t_load = min(t_load, time.perf_counter() - t0)
    print(f"verifier: {Path(verifier.__file__).parent}")
    print(f"file: {path if args.file else 'dualpipev %d x %d' % (args.ranks, args.microbatches)}, "
          f"{len(text) / 1e6:.2f} MB, {n_ops} ops; best of {args.repeat}, interleaved")
    print(f"json.loads    {t_json * 1e3:8.1f} ms")
    print(f"load_program  {t_load * 1e3:8.1f} ms")
    print(f"ratio         {t_load / t_json:8.2f} x  (load_program / json.loads; target <= 1.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

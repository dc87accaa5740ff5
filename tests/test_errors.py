"""One exception root: every exception class defined in verifier/, reference/
and fastpath/ derives from verifier.errors.PpError, and the families sit where
verifier/errors.py says (bad input a ValueError, flag and output errors not
ScheduleErrors, fastpath's failures by type)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from verifier import errors

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("verifier", "reference", "fastpath")


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name == "__main__.py":
                continue  # runs the command line on import
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


def _class_names(path: Path) -> set[str]:
    """Every class statement of the file, at any depth (ast: none is missed
    because it is defined inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}


def _exception_classes():
    out = []
    for name, path in _modules():
        mod = importlib.import_module(name)
        for cname in sorted(_class_names(path)):
            cls = getattr(mod, cname, None)
            if inspect.isclass(cls) and cls.__module__ == name and issubclass(cls, BaseException):
                out.append(cls)
    return out


def test_the_walk_finds_the_known_families():
    found = {c.__qualname__ for c in _exception_classes()}
    for name in ("PpError", "ScheduleError", "FlagError", "OutputError", "UsageError",
                 "ParserExit", "OutputFailed", "SolverLimit", "SchemaViolation", "IllFormed", "MissingExtra",
                 "FastpathError", "PeerFailure", "ScheduleFault", "WatchdogTimeout", "RunFailed",
                 "ExecutionError", "RefutedScheduleError", "BadInput", "Interrupted"):
        assert name in found, name


_EXC_SUFFIXES = ("Error", "Exception", "Exit", "Failure", "Failed", "Fault", "Timeout", "Interrupt")


def test_no_exception_class_defined_inside_a_function():
    """A class defined in a function is not reachable by the walk below: no class
    with an exception-like base is defined anywhere but at module level."""
    for name, path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set(tree.body)
        for n in ast.walk(tree):
            if isinstance(n, ast.ClassDef) and n not in top:
                bases = [ast.unparse(b) for b in n.bases]
                assert not any(b.endswith(_EXC_SUFFIXES) for b in bases), (name, n.name, bases)


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_exception_class_derives_from_the_root(cls):
    assert issubclass(cls, errors.PpError), f"{cls.__module__}.{cls.__qualname__} is not a PpError"


def test_errors_is_a_leaf():
    tree = ast.parse((ROOT / "verifier" / "errors.py").read_text(encoding="utf-8"))
    own = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
           and any((getattr(n, "module", None) or a.name).split(".")[0] in PACKAGES
                   for a in n.names)]
    assert not own


def test_families():
    from fastpath.watchdog import FastpathError, PeerFailure, ScheduleFault, WatchdogTimeout
    from reference.executor import ExecutionError

    assert issubclass(errors.ScheduleError, ValueError)
    for cls in (errors.ScheduleError, errors.FlagError, errors.OutputError):
        assert issubclass(cls, errors.InputError)
    assert not issubclass(errors.FlagError, errors.ScheduleError)
    assert not issubclass(errors.OutputError, errors.ScheduleError)
    assert issubclass(errors.OutputFailed, OSError)
    from verifier.extras import MissingExtra

    assert issubclass(MissingExtra, ImportError) and issubclass(MissingExtra, errors.PpError)
    # whose fault a rank's failure is, by type: none of the three is another
    for a in (PeerFailure, ScheduleFault, WatchdogTimeout):
        assert issubclass(a, FastpathError) and issubclass(a, errors.ExecutorFailure)
        for b in (PeerFailure, ScheduleFault, WatchdogTimeout):
            assert a is b or not issubclass(a, b)
    assert issubclass(ExecutionError, errors.ScheduleError)
    assert issubclass(ExecutionError, errors.ExecutorFailure)
    e = errors.ScheduleError("bad", "f.json")
    assert (str(e), e.where, e.detail) == ("f.json: bad", "f.json", "bad")


def test_reexports_are_the_same_classes():
    from verifier.cli import app as cli
    from verifier.format import guard, schema
    from verifier import ir
    from verifier.check import properties

    assert ir.ScheduleError is errors.ScheduleError
    assert cli.UsageError is errors.UsageError and cli.ParserExit is errors.ParserExit
    assert guard.OutputFailed is errors.OutputFailed
    assert properties.IllFormed is errors.IllFormed
    assert schema.SchemaViolation is errors.SchemaViolation


def test_flag_and_output_errors_keep_their_line(tmp_path, capsys):
    from verifier.cli.app import main

    src = ROOT / "specs" / "examples"
    sched = next(iter(sorted(src.glob("*.json"))))
    assert main(["show", str(sched), "--scale", "0"]) == 2
    assert capsys.readouterr().err == "error: --scale: must be in (0, 1000] pixels per unit, got 0.0\n"
    out = tmp_path / "no" / "x.svg"
    assert main(["show", str(sched), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: -o {out}: cannot write: no directory {str(out.parent)!r}\n")


def _refusal(argv, build=None):
    """The exception a command line's run raises for ``argv`` (parsed as the
    command line parses it), and the one line ``main`` prints for it."""
    import io

    from verifier.cli.app import build_parser, main, parse_command_line

    parser = (build or build_parser)(io.StringIO())
    args, code = parse_command_line(parser, argv, io.StringIO())
    assert code is None, argv
    with pytest.raises(errors.PpError) as info:
        if build is None:
            args._run(args, io.StringIO(), io.StringIO())
        else:
            from reference.cli import _run

            _run(args, io.StringIO())
    err = io.StringIO()
    if build is None:
        assert main(argv, io.StringIO(), err) == 2
    else:
        from reference.cli import main as reference_main

        assert reference_main(argv, io.StringIO(), err) == 2
    assert err.getvalue() == f"error: {info.value}\n", argv  # the line is the exception's
    return info.value


EXAMPLE = str(ROOT / "specs" / "examples" / "1f1b.json")


@pytest.mark.parametrize("argv, where", [
    (["show", EXAMPLE, "--max-pixels", "10", "-o", "x.png"], "show"),
    (["show", EXAMPLE, "--max-pixels", "10"], "show"),
    (["analyze", EXAMPLE, "--costs", "F=1,B=x"], "--costs"),
    (["analyze", EXAMPLE, "--costs", "F=1,B=2,I=5"], "--costs"),
    (["check", EXAMPLE, "--memory-limit", "80GiB"], "--memory-limit"),
    (["synthesize", "--ranks", "2", "--microbatches", "2", "--overlap", "yes",
      "--costs", "F=1,B=2,FB=2"], "--costs"),
    (["synthesize", "--ranks", "2", "--microbatches", "2", "--split-backward", "yes",
      "--memory-limit", "2", "--costs", "F=1,B=2,I=0,W=2"], "--costs"),
])
def test_flag_refusals_are_flag_errors(argv, where):
    """A refusal caused by a flag's value is a FlagError (not a ScheduleError)
    naming the flag (or the command), with the line the command prints."""
    e = _refusal(argv)
    assert type(e) is errors.FlagError and e.where == where, (type(e), e.where)


def test_limits_refuse_with_a_flag_error():
    from verifier.format.guard import Limits

    with pytest.raises(errors.FlagError, match="--max-pixels: must be a positive integer"):
        Limits(max_pixels=0)


def test_a_cost_file_is_still_a_schedule_error(tmp_path):
    """The contents of a file named by a flag are input, not the flag's value."""
    bad = tmp_path / "costs.json"
    bad.write_text('{"F": "x"}')
    e = _refusal(["analyze", EXAMPLE, "--costs", str(bad)])
    assert type(e) is errors.ScheduleError


def test_reference_max_elements_is_a_flag_error():
    pytest.importorskip("torch")
    from reference.cli import build_parser

    e = _refusal(["run", EXAMPLE, "--max-elements", "10"], build_parser)
    assert type(e) is errors.FlagError and "more than --max-elements 10" in str(e)


def test_a_failed_write_is_an_output_error(tmp_path):
    from verifier.format import guard

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(errors.OutputError, match="-o /dev/full: cannot write"):
        guard.write_output("/dev/full", b"x" * 100_000, "-o")
    e = _refusal(["show", EXAMPLE, "-o", str(tmp_path / "no" / "x.svg")])
    assert type(e) is errors.OutputError

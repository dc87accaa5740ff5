"""The import rules of the developers' guide, enforced statically.

Every module of verifier/, reference/ and fastpath/ is parsed with ``ast``
(nothing is imported), and:

- the module-level imports among the project's modules form no cycle
  (``from verifier import x`` counts as an import of ``verifier.x`` when that
  is a module, else of the package ``verifier``);
- only the solver modules (verifier/check/z3engine.py, verifier/synth/z3synth.py) import
  z3; nothing under verifier/ imports torch; reference/ and fastpath/ never
  import z3 (at any level, inside functions too);
- the independent certificate checker imports, of the project, only the IR
  and the result data it validates (``verifier.results.check``, a leaf that itself
  imports only ``verifier.ir``);
- every import of a project module inside a function (a deferred import) has
  a comment on its line or the line above saying why it is deferred;
- no module is over 500 lines and no function over 80 lines (the developers'
  guide), except an unrolled hot loop listed in ``HOT_LOOPS`` with the
  benchmark that justifies it, which its source names in a comment.

What it does not cover: imports made by ``importlib`` at run time (the CLI
loads the chosen command's module that way on purpose).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("verifier", "reference", "fastpath")
SOLVER_MODULES = {"verifier.check.z3engine", "verifier.synth.z3synth"}
# verifier.results.check is data only (no semantics) and imports only verifier.ir;
# the certificate checker reads those data, so it may import it as well. Its
# program part (certificate/program.py) judges recorded programs, so it may
# read their data types (verifier.program, a leaf) and the certificate it is
# handed (verifier.results.program: data only, over verifier.program and
# verifier.results.check); never the replay, the encoding or the semantics core.
CERTIFICATE_MAY_IMPORT = {"verifier.ir", "verifier.results.check", "verifier.program",
                          "verifier.results.program"}
LEAVES = {"verifier.results.check": {"verifier.ir"}, "verifier.results.analysis": {"verifier.ir"},
          "verifier.program": set(),
          "verifier.results.program": {"verifier.program", "verifier.results.check"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


SOURCES = _sources()


class _Import:
    """One import statement: the modules it names, whether it is inside a
    function, and its line."""

    def __init__(self, targets: list[str], in_function: bool, line: int, end: int):
        self.targets, self.in_function, self.line, self.end = targets, in_function, line, end


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = SOURCES.get(module, Path()).name == "__init__.py"
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[_Import]:
    tree = ast.parse(SOURCES[module].read_text(encoding="utf-8"))
    out: list[_Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, child)
                targets = []
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in SOURCES else base)
            else:
                visit(child, inner)
                continue
            out.append(_Import(targets, in_function, child.lineno, child.end_lineno or child.lineno))

    visit(tree, False)
    return out


IMPORTS = {m: _imports(m) for m in SOURCES}


def _own(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _top(name: str) -> str:
    return name.split(".")[0]


def _graph() -> dict[str, set[str]]:
    return {
        m: {t for imp in imps if not imp.in_function for t in imp.targets if t in SOURCES and t != m}
        for m, imps in IMPORTS.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_sources_are_found():
    # the rules below are vacuous if the walk finds nothing
    assert {"verifier.check.checker", "verifier.check.z3engine", "verifier.check.certificate",
            "reference.executor", "fastpath.runtime"} <= set(SOURCES)
    assert any(imp.in_function for imps in IMPORTS.values() for imp in imps)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_from_package_import_module_counts_the_module():
    # cli.py does `from verifier import __version__` (the package) and the
    # checker `from verifier import hbgraph, ...` (modules)
    checker = {t for imp in IMPORTS["verifier.check.checker"] for t in imp.targets}
    assert {"verifier.check.hbgraph", "verifier.check.properties"} <= checker
    cli = {t for imp in IMPORTS["verifier.cli.app"] for t in imp.targets}
    assert "verifier" in cli


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def _importers(name: str) -> set[str]:
    return {m for m, imps in IMPORTS.items() for imp in imps for t in imp.targets if _top(t) == name}


def test_only_the_solver_modules_import_z3():
    assert _importers("z3") <= SOLVER_MODULES
    assert "verifier.check.z3engine" in _importers("z3")


def test_verifier_never_imports_torch():
    assert {m for m in _importers("torch") if _top(m) == "verifier"} == set()


def test_executors_never_import_z3():
    assert {m for m in _importers("z3") if _top(m) in ("reference", "fastpath")} == set()


CERTIFICATE = "verifier.check.certificate"


def test_certificate_checker_imports_only_ir_and_result_data():
    # the package (its __init__ and every module in it) may import, of the
    # project, the IR, the result data and its own modules, nothing else
    mods = [m for m in IMPORTS if m == CERTIFICATE or m.startswith(CERTIFICATE + ".")]
    assert len(mods) > 1, mods  # the package's modules are found
    for mod in mods:
        own = {t for imp in IMPORTS[mod] for t in imp.targets
               if _own(t) and not (t == CERTIFICATE or t.startswith(CERTIFICATE + "."))}
        assert own <= CERTIFICATE_MAY_IMPORT, (mod, own - CERTIFICATE_MAY_IMPORT)


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_result_modules_are_leaves(leaf):
    own = {t for imp in IMPORTS[leaf] for t in imp.targets if _own(t)}
    assert own <= LEAVES[leaf], own - LEAVES[leaf]


def _has_comment(lines: list[str], imp: _Import) -> bool:
    """A ``#`` comment that says something (not a bare ``noqa``) on one of the
    statement's lines, or a comment line right above it or above the group of
    consecutive imports it belongs to."""
    for k in range(imp.line, imp.end + 1):
        if "#" in lines[k - 1]:
            text = lines[k - 1].split("#", 1)[1].strip()
            if text and not re.fullmatch(r"noqa(: ?[A-Z0-9, ]+)?", text):
                return True
    # the comment line above may head a group of consecutive deferred imports
    k = imp.line - 1
    while k >= 1 and lines[k - 1].strip().startswith(("from ", "import ")):
        k -= 1
    return k >= 1 and lines[k - 1].strip().startswith("#")


def test_deferred_own_imports_say_why():
    missing = []
    for m, imps in IMPORTS.items():
        lines = SOURCES[m].read_text(encoding="utf-8").splitlines()
        for imp in imps:
            if imp.in_function and any(_own(t) for t in imp.targets) and not _has_comment(lines, imp):
                missing.append(f"{SOURCES[m].relative_to(ROOT)}:{imp.line}")
    assert missing == [], "function-level imports of own modules without a reason comment"


# The parts of verifier/, bottom first (README.md, Layout). A module may import
# its own part and the parts below it, never a part above: the tree shows the
# direction. The README's API re-exports (verifier.checker, verifier.io) sit on
# top and nothing of the project imports them.
LAYERS = [
    {"verifier", "verifier.ir", "verifier.program", "verifier.errors", "verifier.extras"},
    {"verifier.results"},
    {"verifier.semantics"},
    {"verifier.format"},
    {"verifier.check"},
    {"verifier.analysis"},
    {"verifier.generators"},
    {"verifier.render", "verifier.synth", "verifier.strategies"},
    {"verifier.cli"},
    {"verifier.checker", "verifier.io", "verifier.__main__", "verifier.record"},
]


def _layer(module: str) -> int | None:
    for depth in (2, 1):
        part = ".".join(module.split(".")[:depth])
        for i, layer in enumerate(LAYERS):
            if part in layer:
                return i
    return None


def test_every_verifier_module_has_a_layer():
    assert [m for m in SOURCES if _top(m) == "verifier" and _layer(m) is None] == []


def test_verifier_imports_go_downward():
    upward = [
        f"{m}:{imp.line} imports {t}"
        for m, imps in IMPORTS.items() if _top(m) == "verifier"
        for imp in imps for t in imp.targets
        if _top(t) == "verifier" and t != "verifier" and _layer(t) > _layer(m)
    ]
    assert upward == []


def test_nothing_imports_the_api_reexports():
    users = {m for m, imps in IMPORTS.items() for imp in imps for t in imp.targets
             if t in ("verifier.checker", "verifier.io") and m not in ("verifier.checker", "verifier.io")}
    assert users == set()


# Size limits (issue 9): a module over MAX_MODULE_LINES or a function over
# MAX_FUNCTION_LINES (from its ``def`` to its last line, nested functions
# included) is split along its seams. The only exceptions are hot loops
# unrolled on purpose: "path::function" -> the benchmark (a file name of
# benchmarks/, e.g. "bench_check.py") that shows the unrolling pays; the
# function's source names it in a one-line comment.
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
HOT_LOOPS: dict[str, str] = {
    "verifier/semantics/tables.py::_scan": "bench_check.py",
    "verifier/check/hbgraph.py::_fast": "bench_check.py",
    "verifier/check/certificate/onepass.py::replays": "bench_check.py",
    "verifier/check/program/fast.py::_run": "bench_program.py",
}
# Files other helpers are splitting while this test lands; the coordinator
# empties this list when they have landed. A path ending in "/" is a folder.
BEING_SPLIT: set[str] = set()


def _being_split(rel: str) -> bool:
    return any(rel == e or (e.endswith("/") and rel.startswith(e)) for e in BEING_SPLIT)


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _oversized(path: Path, rel: str) -> list[str]:
    """What of ``path`` (``rel`` from the repository root) is over the limits
    and not in HOT_LOOPS."""
    text = path.read_text(encoding="utf-8")
    out = []
    n = len(text.splitlines())
    if n > MAX_MODULE_LINES:
        out.append(f"{rel}: {n} lines (at most {MAX_MODULE_LINES})")
    for fn in _functions(ast.parse(text)):
        length = fn.end_lineno - fn.lineno + 1
        if length > MAX_FUNCTION_LINES and f"{rel}::{fn.name}" not in HOT_LOOPS:
            out.append(f"{rel}:{fn.lineno}: {fn.name} is {length} lines (at most "
                       f"{MAX_FUNCTION_LINES}, or an unrolled hot loop in HOT_LOOPS)")
    return out


def test_no_module_or_function_over_the_size_limits():
    over = []
    for path in SOURCES.values():
        rel = path.relative_to(ROOT).as_posix()
        if not _being_split(rel):
            over += _oversized(path, rel)
    assert over == []


def test_size_check_finds_a_long_function_and_a_long_module(tmp_path):
    body = "\n".join(f"    x = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def f():\n{body}\n" + "\n" * MAX_MODULE_LINES)
    found = _oversized(tmp_path / "long.py", "long.py")
    assert len(found) == 2 and "long.py: " in found[0] and "f is 81 lines" in found[1]


def test_hot_loops_are_long_and_name_a_benchmark_that_exists():
    """Every exception is a function that exists and is over the limit, and
    its source names its benchmark (a file of benchmarks/) in a comment."""
    for entry, bench in HOT_LOOPS.items():
        rel, name = entry.split("::")
        assert (ROOT / "benchmarks" / bench).is_file(), f"{entry}: no benchmarks/{bench}"
        text = (ROOT / rel).read_text(encoding="utf-8")
        fns = [f for f in _functions(ast.parse(text)) if f.name == name]
        assert fns, f"{entry}: no such function"
        lines = text.splitlines()
        for fn in fns:
            assert fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES, f"{entry} fits: drop it"
            src = "\n".join(lines[fn.lineno - 1:fn.end_lineno])
            assert re.search(r"#.*" + re.escape(bench), src), f"{entry}: no comment names {bench}"

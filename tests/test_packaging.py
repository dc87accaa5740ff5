"""Packaging in the checkout: one schema, one version, the extras named when missing.

The wheel itself is tested in tests/test_wheel.py; these are the fast checks
that need no build.
"""

from __future__ import annotations

import importlib.metadata as md
import io
import subprocess
import sys
from pathlib import Path

import pytest

import fastpath
import reference
import verifier
from verifier.format.schema import SCHEMA_PATH, load_schema

ROOT = Path(__file__).resolve().parent.parent


def test_published_schema_is_the_packaged_one():
    # verifier/format/schedule.schema.json is read at run time (package data);
    # specs/schedule.schema.json is the published copy: byte for byte the same.
    assert SCHEMA_PATH.parent == Path(verifier.__file__).parent / "format"
    assert SCHEMA_PATH.read_bytes() == (ROOT / "specs" / "schedule.schema.json").read_bytes()
    assert load_schema()["$id"]


def test_one_version_everywhere():
    assert verifier.__version__ == reference.__version__ == fastpath.__version__
    assert md.version("ppverify") == verifier.__version__
    assert f"## {verifier.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_py_typed_and_licence_are_present():
    assert (Path(verifier.__file__).parent / "py.typed").is_file()
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()


def test_reference_choices_are_the_models_and_reductions():
    pytest.importorskip("torch")
    from reference.baseline import LOSS_REDUCTIONS
    from reference.models import MODELS
    from reference.names import LOSS_REDUCTIONS as L, MODELS as M

    assert (MODELS, LOSS_REDUCTIONS) == (M, L)


@pytest.mark.parametrize("argv0", ["verifier", "reference", "fastpath"])
def test_version_flag(argv0):
    main = __import__(f"{argv0}.cli", fromlist=["main"]).main
    out, err = io.StringIO(), io.StringIO()
    assert main(["--version"], out, err) == 0
    assert out.getvalue() == f"ppverify {verifier.__version__}\n" and err.getvalue() == ""


def test_console_script_usage_names_ppverify():
    from verifier.cli.app import main

    out = io.StringIO()
    assert main(["--help"], out, io.StringIO(), prog="ppverify") == 0
    assert out.getvalue().startswith("usage: ppverify ")
    err = io.StringIO()
    assert main(["nope"], io.StringIO(), err, prog="ppverify") == 2
    assert err.getvalue().startswith("error: ppverify: ")
    script = md.distribution("ppverify").entry_points
    (ep,) = [e for e in script if e.name == "ppverify"]
    assert ep.value == "verifier.cli:console_main"


HIDE = "import sys; sys.modules[{mod!r}] = None\n"


@pytest.mark.parametrize("package", ["reference", "fastpath"])
def test_without_torch_one_line_naming_the_extra(package):
    code = HIDE.format(mod="torch") + (
        f"from {package}.cli import main\n"
        f"sys.exit(main(['run', {str(ROOT / 'specs/examples/1f1b.json')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == (f"error: python -m {package} needs torch, which is not installed: "
                        "pip install 'ppverify[torch]'\n")
    assert r.stdout == ""


def test_without_torch_help_and_version_still_work():
    code = HIDE.format(mod="torch") + (
        "from reference.cli import main\n"
        "assert main(['--version']) == 0\n"
        "assert main(['run', '--help']) == 0\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--layers-per-stage" in r.stdout


def test_without_hypothesis_strategies_names_the_extra():
    code = HIDE.format(mod="hypothesis") + "import verifier.strategies\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "verifier.extras.MissingExtra: verifier.strategies needs hypothesis, which is not "
        "installed: pip install 'ppverify[strategies]'")


def _readme_blocks(lang: str) -> list[str]:
    import re

    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs as written (from the checkout
    root, writing into a temp dir); the functions named test_* in a block are
    called, so the strategies example really runs its property tests."""
    monkeypatch.chdir(ROOT)
    pytest.importorskip("torch")
    blocks = _readme_blocks("python")
    assert len(blocks) >= 3
    for block in blocks:
        code = block.replace('"izb.json"', repr(str(tmp_path / "izb.json")))
        ns: dict = {"__name__": "readme"}
        exec(compile(code, "README.md", "exec"), ns)
        for name, fn in list(ns.items()):
            if name.startswith("test_") and callable(fn):
                fn()
    assert (tmp_path / "izb.json").is_file()


def test_readme_first_commands_and_version_line():
    """The first two copy-paste commands are unchanged; the version the README
    shows is the package's."""
    blocks = _readme_blocks("bash")
    assert blocks[0].strip() == ("python3 -m venv .venv && . .venv/bin/activate && pip install -e . "
                                 "&& python -m verifier check specs/examples/dualpipe.json")
    assert blocks[1].strip() == ("python3 -m venv .venv && . .venv/bin/activate && pip install -e "
                                 "'.[test]' && HYPOTHESIS_PROFILE=ci python -m pytest -q")
    text = (ROOT / "README.md").read_text()
    assert f"$ ppverify --version\nppverify {verifier.__version__}\n" in text
    for extra in ("[torch]", "[strategies]", "[test]"):
        assert f"`{extra}`" in text

"""The wheel as a user gets it: built, installed into a fresh venv, run outside the checkout.

What it is: one module-scoped build (``pip wheel --no-deps --no-build-isolation``
of a copy of the package sources, so the checkout stays clean and nothing
outside verifier/, reference/, fastpath/ can leak in), installed with pip into
a fresh venv (``--without-pip``; pip of this interpreter installs into it with
``--python``). The venv sees z3 and numpy through a .pth file naming a folder
of links to exactly those two distributions, and nothing else of this
environment: no torch, no hypothesis, and not the checkout (every command runs
from a temporary folder holding copies of the shipped examples, without
PYTHONPATH; a test asserts every package resolves inside the venv). Then
``check``, ``analyze``, ``show``, ``convert``, ``--version`` and the console
script run there, and the missing extras answer in one line.

Run alone: ``python -m pytest -m wheel``. It is part of the normal suite.

What it does not cover: an sdist, PyPI, installing the torch extra (the
executors are tested in the checkout).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import verifier

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "specs" / "examples"
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "verifier", "reference", "fastpath")
DEPENDENCIES = ("z3-solver", "numpy")


def _run(cmd, cwd, env, timeout=300):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _link_dependencies(target: Path) -> None:
    """Links to the top-level files of z3-solver and numpy (and their metadata) only."""
    target.mkdir()
    for name in DEPENDENCIES:
        dist = md.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or ()}
        for top in sorted(tops):
            src = Path(dist.locate_file(top))
            if top.endswith(".pth") or top == ".." or not src.exists():
                continue
            if not (target / top).exists():
                (target / top).symlink_to(src, target_is_directory=src.is_dir())


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        else:
            shutil.copy2(p, src / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    dist = tmp / "dist"
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "--no-index", "-w", str(dist), str(src)], tmp, env)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = dist.glob("ppverify-*.whl")

    venv = tmp / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    assert r.returncode == 0, r.stderr
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    r = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
              "--no-index", str(wheel)], tmp, env)
    assert r.returncode == 0, r.stdout + r.stderr
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   tmp, env).stdout.strip()
    _link_dependencies(tmp / "deps")
    Path(purelib, "ppverify_test_deps.pth").write_text(str(tmp / "deps") + "\n")

    work = tmp / "work"
    work.mkdir()
    for name in ("dualpipe.json", "zbv.json", "1f1b_compute_only.json"):
        shutil.copy2(EXAMPLES / name, work / name)
    shutil.copy2(EXAMPLES / "broken" / "deadlock_wait_before_send.json", work / "deadlock.json")
    env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(venv)
    return {"python": str(python), "bin": bindir, "venv": venv, "work": work, "env": env,
            "wheel": wheel, "purelib": Path(purelib)}


def run_in(w, *args, timeout=300):
    return _run(list(args), w["work"], w["env"], timeout)


def py(w, *args):
    return run_in(w, w["python"], *args)


def test_the_venv_sees_the_wheel_not_the_checkout(wheel_env):
    w = wheel_env
    r = py(w, "-c", "import verifier, reference, fastpath, sys\n"
                    "for m in (verifier, reference, fastpath): print(m.__file__)\n"
                    "import importlib.util as u\n"
                    "print(u.find_spec('torch'), u.find_spec('hypothesis'))\n"
                    "print(verifier.__version__, reference.__version__, fastpath.__version__)")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    venv = w["venv"].resolve()
    for f in lines[:3]:
        assert Path(f).resolve().is_relative_to(venv), (f, venv)
        assert not Path(f).resolve().is_relative_to(ROOT), f
    assert lines[3] == "None None"  # the missing-extra tests below are real
    assert lines[4].split() == [verifier.__version__] * 3
    pkg = w["purelib"] / "verifier"
    assert (pkg / "py.typed").is_file()
    assert (pkg / "format" / "schedule.schema.json").read_bytes() == (
        ROOT / "specs" / "schedule.schema.json").read_bytes()
    licences = list(w["purelib"].glob("ppverify-*.dist-info/licenses/LICENSE")) + list(
        w["purelib"].glob("ppverify-*.dist-info/LICENSE"))
    assert licences, "LICENSE is not in the wheel's metadata"
    meta = next(w["purelib"].glob("ppverify-*.dist-info/METADATA")).read_text()
    assert "License-Expression: MIT" in meta
    for extra in ("torch", "strategies", "test"):
        assert f"Provides-Extra: {extra}" in meta


def test_version_on_every_command_line(wheel_env):
    w = wheel_env
    want = f"ppverify {verifier.__version__}"
    for cmd in (["ppverify"], [w["python"], "-m", "verifier"], [w["python"], "-m", "reference"],
                [w["python"], "-m", "fastpath"]):
        r = run_in(w, *cmd, "--version")
        assert (r.returncode, r.stdout.strip(), r.stderr) == (0, want, ""), cmd


def test_console_script_names_itself(wheel_env):
    r = run_in(wheel_env, "ppverify", "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: ppverify "), r.stdout[:80]
    r = py(wheel_env, "-m", "verifier", "--help")
    assert r.stdout.startswith("usage: python -m verifier "), r.stdout[:80]
    r = run_in(wheel_env, "ppverify", "chek")
    assert r.returncode == 2 and r.stderr.startswith("error: ppverify: "), r.stderr


def test_check_verified_and_refuted(wheel_env):
    r = run_in(wheel_env, "ppverify", "check", "dualpipe.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VERIFIED" in r.stdout
    r = py(wheel_env, "-m", "verifier", "check", "deadlock.json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REFUTED" in r.stdout and "deadlock-free" in r.stdout


def test_analyze_show_convert(wheel_env, tmp_path):
    w = wheel_env
    r = run_in(w, "ppverify", "analyze", "zbv.json")
    assert r.returncode == 0, r.stderr
    assert "makespan" in r.stdout
    svg = tmp_path / "zbv.svg"
    png = tmp_path / "zbv.png"
    for out in (svg, png):
        r = run_in(w, "ppverify", "show", "zbv.json", "-o", str(out))
        assert r.returncode == 0, r.stderr
    assert svg.read_text().lstrip().startswith("<svg") or "<svg" in svg.read_text()[:400]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("1f1b_compute_only.json", "zbv.json"):  # zbv: with its communication
        csv = tmp_path / (name + ".csv")
        r = run_in(w, "ppverify", "convert", name, "-o", str(csv))
        assert r.returncode == 0, r.stderr
        r = run_in(w, "ppverify", "check", str(csv))
        assert r.returncode == 0 and "VERIFIED" in r.stdout, r.stdout + r.stderr


def test_missing_extras_say_which_to_install(wheel_env):
    w = wheel_env
    for mod in ("reference", "fastpath"):
        r = py(w, "-m", mod, "run", "dualpipe.json")
        assert r.returncode == 2, (mod, r.stdout, r.stderr)
        assert r.stderr == (f"error: python -m {mod} needs torch, which is not installed: "
                            "pip install 'ppverify[torch]'\n"), r.stderr
        assert "Traceback" not in r.stderr
    r = py(w, "-c", "import verifier.strategies")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].endswith(
        "verifier.strategies needs hypothesis, which is not installed: "
        "pip install 'ppverify[strategies]'"), r.stderr
    r = py(w, "-c", "import reference; reference.run_pipeline")
    assert "pip install 'ppverify[torch]'" in r.stderr and r.returncode == 1

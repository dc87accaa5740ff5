"""Golden tests: the real CLI (`analyze`, `compare`, `show` as text) on the
example schedules, compared with tests/golden_analysis/.

Every valid example in specs/examples is analysed under both communication
models (text), one is also checked as JSON; the deadlocking broken examples
must exit 1 and name where they got stuck; `compare` at 4 ranks x 8
micro-batches and `show` of the DualPipeV example as plain text are pinned too.
Regenerate with ``REGEN_GOLDEN=1 pytest tests/test_analysis_golden.py`` (or
``--regen-golden``) and review the diff.

Not covered: pictures (tests/test_render.py checks their structure).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from verifier.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "specs" / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden_analysis"
VALID = sorted(EXAMPLES.glob("*.json"))
DEADLOCKS = sorted((EXAMPLES / "broken").glob("deadlock_*.json"))
COSTS = "F=1,B=2,W=0.5,FB=2.5,comm=0.25"


def _regen(request) -> bool:
    try:
        opt = request.config.getoption("--regen-golden")
    except ValueError:
        opt = False
    return bool(opt or os.environ.get("REGEN_GOLDEN"))


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def _compare_golden(request, name: str, text: str) -> None:
    path = GOLDEN / name
    if _regen(request):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with REGEN_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def test_examples_exist():
    assert len(VALID) >= 5 and DEADLOCKS


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
@pytest.mark.parametrize("model", ["nccl", "eager"])
def test_analyze_examples(request, path, model):
    rc, out, err = _run("analyze", str(path), "--costs", COSTS, "--comm-model", model)
    assert rc == 0, err
    _compare_golden(request, f"analyze_{path.stem}_{model}.txt", out)


def test_analyze_json_golden(request):
    rc, out, err = _run("analyze", str(EXAMPLES / "dualpipev.json"), "--costs", COSTS,
                        "--format", "json")
    assert rc == 0, err
    _compare_golden(request, "analyze_dualpipev.json", out)


@pytest.mark.parametrize("path", DEADLOCKS, ids=lambda p: p.stem)
def test_analyze_deadlocking_examples(request, path):
    rc, out, err = _run("analyze", str(path))
    assert rc == 1 and "DEADLOCK under nccl" in out
    _compare_golden(request, f"analyze_broken_{path.stem}.txt", out)


def test_compare_golden(request):
    rc, out, err = _run("compare", "--ranks", "4", "--microbatches", "8", "--costs", COSTS)
    assert rc == 0, err
    _compare_golden(request, "compare_4x8.txt", out)


def test_show_text_golden(request):
    rc, out, err = _run("show", str(EXAMPLES / "dualpipev.json"), "--color", "never",
                        "--costs", "F=1,I=1,W=1,FB=3")
    assert rc == 0, err
    _compare_golden(request, "show_dualpipev.txt", out)

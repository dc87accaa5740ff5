"""Golden tests: the real CLI (``python -m verifier check``) on every example.

Every valid example in specs/examples verifies (exit 0); every broken one in
specs/examples/broken is refuted (exit 1) on exactly the property its file
name starts with; the text (and, for some, JSON) output equals the file in
tests/golden/. Regenerate the golden files with
``pytest tests/test_golden.py --regen-golden`` (or ``REGEN_GOLDEN=1``) and
review the diff.

Not covered: the checker's decisions beyond these files
(tests/test_checker*.py).
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from verifier.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "specs" / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"

VALID = sorted(EXAMPLES.glob("*.json"))
BROKEN = sorted((EXAMPLES / "broken").glob("*.json"))

# broken file name prefix -> the one property it breaks
PREFIX = {
    "well_formed": "well-formed",
    "exactly_once": "exactly-once",
    "dependencies": "dependencies",
    "message_matching": "message-matching",
    "deadlock": "deadlock-free",
    "overlap_legal": "overlap-legal",
    "memory": "memory",
}


def _regen(request) -> bool:
    return bool(request.config.getoption("--regen-golden") or os.environ.get("REGEN_GOLDEN"))


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def _extra_args(path: Path) -> list[str]:
    params = json.loads(path.read_text()).get("params", {})
    lim = params.get("memory_limit")
    return [] if lim is None else ["--memory-limit", str(lim)]


def _golden(request, name: str, text: str) -> None:
    path = GOLDEN / name
    if _regen(request):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path}; run pytest tests/test_golden.py --regen-golden"
    assert text == path.read_text(encoding="utf-8"), f"output differs from {path}"


def _mask_json(text: str) -> str:
    doc = json.loads(text)
    doc["stats"] = {k: v for k, v in doc["stats"].items() if "seconds" not in k and k != "z3"}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def test_examples_exist():
    assert len(VALID) >= 7
    assert {p.name.split("_")[0] for p in BROKEN}  # non-empty
    for prop in PREFIX.values():
        assert any(PREFIX[k] == prop and p.name.startswith(k) for p in BROKEN for k in PREFIX), prop
    for p in BROKEN:  # each says what is wrong
        assert json.loads(p.read_text())["params"]["broken"]


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_example_verifies(request, path):
    code, out, err = _run("check", _rel(path))
    assert err == ""
    assert code == 0, out
    assert out.startswith("VERIFIED under nccl (engine: ")
    _golden(request, f"{path.stem}.txt", out)


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_example_refuted_on_its_property(request, path):
    expected = next(v for k, v in PREFIX.items() if path.name.startswith(k))
    code, out, err = _run("check", _rel(path), *_extra_args(path))
    assert err == ""
    assert code == 1, out
    assert out.startswith("REFUTED under nccl")
    failing = {line.split()[0] for line in out.splitlines()[2:9] if "FAILS" in line.split()}
    assert failing == {expected}, out
    _golden(request, f"broken_{path.stem}.txt", out)
    code, out, err = _run("check", _rel(path), "--format", "json", *_extra_args(path))
    doc = json.loads(out)
    assert doc["verdict"] == "REFUTED" and code == 1
    assert {k for k, v in doc["properties"].items() if v["status"] == "fails"} == {expected}


def test_pytorch_issue_172668_nccl_cycle_and_eager(request):
    path = _rel(EXAMPLES / "broken" / "deadlock_pytorch_issue_172668.json")
    code, out, _ = _run("check", path)
    assert code == 1
    hops = [line for line in out.splitlines() if re.match(r"\s+\d+\. ", line)]
    assert len(hops) >= 2
    assert "0SEND_F1" in out and "0RECV_B0" in out
    code, out, _ = _run("check", path, "--comm-model", "eager")
    assert code == 0 and out.startswith("VERIFIED under eager")
    _golden(request, "pytorch_issue_172668_eager.txt", out)
    code, out, _ = _run("check", path, "--format", "json", "--engine", "graph")
    _golden(request, "pytorch_issue_172668_graph.json", _mask_json(out))
    doc = json.loads(out)
    assert doc["cycle"]["closed"] is True
    assert doc["certificate"] == "accepted"


def test_verbose_grid(request):
    path = _rel(EXAMPLES / "broken" / "deadlock_pytorch_issue_172668.json")
    code, out, _ = _run("check", path, "--verbose", "--engine", "graph")
    assert code == 1
    text = re.sub(r"stats: .*\n", "stats: (masked)\n", out)
    assert "*0SEND_F1" in text  # the failing step is marked
    _golden(request, "pytorch_issue_172668_verbose.txt", text)


def test_json_valid_example(request):
    code, out, _ = _run("check", _rel(EXAMPLES / "dualpipev.json"), "--format", "json", "--witness")
    assert code == 0
    doc = json.loads(out)
    assert doc["format"] == "pp-check" and doc["verdict"] == "VERIFIED"
    assert len(doc["witness"]) == doc["schedule"]["num_steps"]
    doc.pop("witness")
    _golden(request, "dualpipev.json", _mask_json(json.dumps(doc)))


def test_help_documents_flags_and_exit_codes(request, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal width
    code, out, _ = _run("check", "--help")
    assert code == 0
    for flag in ("--comm-model", "--engine", "--memory-limit", "--format", "--verbose", "--progress",
                 "--witness", "--timeout", "--rlimit"):
        assert flag in out
    for line in ("0  VERIFIED", "1  REFUTED", "2  bad input", "3  UNKNOWN"):
        assert line in out
    _golden(request, "check_help.txt", out)


def test_examples_are_up_to_date():
    """specs/examples matches what the generators produce now
    (fix: python specs/examples/regenerate.py, then --regen-golden)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("regenerate", EXAMPLES / "regenerate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stale = [p.name for p, text in mod.files().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"stale examples: {stale}"

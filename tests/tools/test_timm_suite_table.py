"""tools/timm_suite_table.py: the docs table of timm's model tests from a junit file, and tools/fetch_timm_tests.py's
check mode (the download itself runs in `make install`)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import fetch_timm_tests  # noqa: E402
import timm_suite_table  # noqa: E402

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.timm_suite.test_timm_models" name="test_model_forward[1-densenet_bc121_k32]" time="1"/>
<testcase classname="tests.timm_suite.test_timm_models" name="test_model_forward[1-msdnet_imagenet]" time="1">
  <failure message="AttributeError: 'list' object has no attribute 'shape'">tb</failure></testcase>
<testcase classname="tests.timm_suite.test_timm_models" name="test_model_default_cfgs[1-densenet_bc121_k32.tv_in1k]"
  time="1"><failure message="AssertionError">&gt;       assert all(m.training for m in x)
E       AssertionError</failure></testcase>
<testcase classname="tests.timm_suite.test_timm_models" name="test_model_load_pretrained[1-densenet_bc121_k32]"
  time="0"><skipped message="downloads pretrained weights">s</skipped></testcase>
<testcase classname="tests.timm_suite.test_timm_models" name="test_timm_tests_installed" time="0"/>
<testcase classname="tests.models.test_models" name="test_model_forward[densenet_bc121_k32]" time="0"/>
</testsuite></testsuites>"""


def test_table_from_junit(tmp_path):
    path = tmp_path / "run.xml"
    path.write_text(JUNIT)
    rows = timm_suite_table.read(path)
    assert len(rows) == 4  # timm's cases only: not the runner's own tests, not other test modules
    text = timm_suite_table.table(rows)
    assert "| `test_model_forward` | 1/1 | - | - | - | 0/1 (1 F) |" in text
    assert "| `test_model_default_cfgs` | 0/1 (1 F) | - | - | - | - |" in text
    assert "| `test_model_load_pretrained` | 0/1 (1 S) |" in text
    assert "4 cases: 1 passed, 2 failed, 0 errors, 1 skipped." in text
    # a bare AssertionError (timm's module is not assertion-rewritten) is shown with its failing line
    assert "failed: AssertionError at `assert all(m.training for m in x)`" in text
    reason = "failed: AttributeError: 'list' object has no attribute 'shape'"
    assert f"| {reason} | `test_model_forward` (msdnet_imagenet) |" in text


def test_fetch_check_names_make_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch_timm_tests, "CACHE", tmp_path)
    assert fetch_timm_tests.main(["--check"]) == 1
    assert "run `make install`" in capsys.readouterr().err
    folder = fetch_timm_tests.tests_dir()
    folder.mkdir(parents=True)
    (folder / "test_models.py").write_text("")
    assert fetch_timm_tests.main(["--check"]) == 0

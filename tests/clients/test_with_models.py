"""``python -m densebackbones.with_models``: other projects' scripts (timm's validate.py, inference.py, benchmark.py,
torchvision's references) run with our models registered, as ``python SCRIPT ARGS`` would run them. Each test runs it
as its own process, with a script written here that does what those scripts do: create a model by name."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from densebackbones import with_models

REPO = Path(__file__).resolve().parents[2]

# What timm's validate.py and torchvision's reference train.py do with --model, and what `python SCRIPT` gives a script.
SCRIPT = """
import sys

import timm
import torchvision

import helper_beside_the_script  # the script's folder is first on sys.path, as with `python SCRIPT`

model = timm.create_model(sys.argv[1], num_classes=3)
assert torchvision.models.get_model(sys.argv[1], weights=None, num_classes=3).num_classes == 3
print("ok", __name__, sys.argv[0].endswith("validate.py"), sys.argv[1:], type(model).__name__)
"""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "densebackbones.with_models", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.integration
def test_a_script_that_creates_models_by_name(tmp_path):
    (tmp_path / "validate.py").write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "helper_beside_the_script.py").write_text("")
    bare = subprocess.run([sys.executable, "validate.py", "densenet40_k12_cifar"], cwd=tmp_path, capture_output=True)
    assert bare.returncode != 0 and b"Unknown model" in bare.stderr  # without it, timm does not know our names
    run = _run("validate.py", "densenet40_k12_cifar", "--flag", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[-2] == "ok __main__ True ['densenet40_k12_cifar', '--flag'] DenseNet"


@pytest.mark.integration
def test_a_module(tmp_path):
    package = tmp_path / "some_tool"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("import sys, timm\nprint(type(timm.create_model(sys.argv[1])).__name__)\n")
    run = _run("-m", "some_tool", "peleenet", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "PeleeNet", run.stderr


def test_what_is_not_a_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no script 'no_such_script.py'"):
        with_models.main(["no_such_script.py"])
    with pytest.raises(SystemExit, match="-m needs a module name"):
        with_models.main(["-m"])
    with pytest.raises(SystemExit) as usage:
        with_models.main([])
    assert usage.value.code == 2 and "usage: python -m densebackbones.with_models SCRIPT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        with_models.main(["--help"])
    assert usage.value.code == 0 and "usage:" in capsys.readouterr().out

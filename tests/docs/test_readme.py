"""The README's examples run as written, and its model table states the real parameter counts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import densebackbones as db

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(PYTHON_BLOCKS[index], f"README.md example {index}", "exec"), {"__name__": "__readme__"})


def _model_table() -> dict[str, int]:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|[^|]*\|[^|]*\|[^|]*\| ([0-9,]+) \|", README, flags=re.M)
    return {name: int(params.replace(",", "")) for name, params in rows}


def test_model_table_lists_every_model_with_its_parameter_count():
    table = _model_table()
    assert sorted(table) == db.list_models(task="classification")
    for name, params in table.items():
        with torch.device("meta"):
            model = db.create_model(name)
        assert sum(p.numel() for p in model.parameters()) == params, name


def test_segmentation_table_states_the_real_parameter_counts():
    rows = re.findall(r"^\| `(fc_densenet[a-z0-9_]*)` \|[^|]*\|\s*([0-9,]*)\s*\|", README, flags=re.M)
    assert sorted(name for name, _ in rows) == db.list_models(task="segmentation")
    counted = {name: int(params.replace(",", "")) for name, params in rows if params}
    assert sorted(counted) == ["fc_densenet103", "fc_densenet56", "fc_densenet67"]
    for name, params in counted.items():
        with torch.device("meta"):
            model = db.create_model(name)
        assert sum(p.numel() for p in model.parameters()) == params, name


def test_detection_table_states_the_real_parameter_counts():
    row = r"^\| `(pelee(?:_[a-z0-9_]+)?)`( with `num_classes=(\d+)`)? \|[^|\n]*\| ([0-9,]+) \|"
    rows = re.findall(row, README, flags=re.M)
    assert sorted({name for name, *_ in rows}) == db.list_models("pelee*", task="detection")
    assert len(rows) == 3
    for name, _, classes, params in rows:
        kwargs = dict(num_classes=int(classes)) if classes else {}
        with torch.device("meta"):
            model = db.create_model(name, **kwargs)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == int(params.replace(",", "")), name

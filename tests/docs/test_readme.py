"""The README and docs/: every python example runs as written, the README stays a front door (at most 300 lines, a
family table whose pages exist), and the model tables in docs/models/ are what tools/model_tables.py makes from the
registry (the parameter counts against the papers' are tests/models/test_params.py's and the families' tests)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import model_tables  # noqa: E402

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
EXAMPLES = [
    (path.relative_to(REPO).as_posix(), index, code)
    for path in DOC_FILES
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S))
]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_is_a_front_door_with_examples():
    assert len(README.splitlines()) <= 300
    assert sum(1 for name, *_ in EXAMPLES if name == "README.md") >= 4
    assert "make train" in README and "make test" in README


# Examples that export to ONNX (the torch.export-based exporter takes most of a minute) run in `make test` only.
EXAMPLE_PARAMS = [
    pytest.param(
        name,
        index,
        code,
        id=f"{name}-{index}",
        marks=[pytest.mark.integration] * ("export_onnx(" in code or "export_model(" in code),
    )
    for name, index, code in EXAMPLES
]


@pytest.mark.parametrize(("name", "index", "code"), EXAMPLE_PARAMS)
def test_example_runs(name, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{name} example {index}", "exec"), {"__name__": "__docs__"})


def test_family_table_links_to_pages_that_exist():
    pages = re.findall(r"\]\((docs/models/[a-z_]+\.md)\)", README)
    assert len(set(pages)) >= 6
    for page in pages:
        assert (REPO / page).is_file(), page
    assert {f"docs/models/{page}" for page, _ in model_tables.TABLES.values()} <= set(pages)


def test_model_tables_are_the_tools_output():
    """Regenerate with ``python tools/model_tables.py --write`` after adding or changing a model."""
    for path, text in model_tables.render().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.relative_to(REPO)}: run tools/model_tables.py --write"


def test_every_registered_model_is_in_a_table():
    model_tables.check_coverage()  # raises naming the models missing from the tables
    tabled = "\n".join(path.read_text(encoding="utf-8") for path in model_tables.render())
    import densebackbones as db

    for name in db.list_models():
        assert f"| `{name}`" in tabled, name

"""docs/architecture.md stays current: every path it names exists, every file of its import map exists in the folder
the map puts it under, and every package and tool of the repository appears on it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
IMPORT_MAP = re.search(r"## Import map.*?```\n(.*?)```", TEXT, flags=re.S).group(1)
PATH = r"(?:densebackbones|heads|tools|configs|tests|docs)/[A-Za-z0-9_./]*"


def test_every_path_it_names_exists():
    # Placeholders (tests/models/test_<family>.py) and globs (tools/*.py) left out.
    found = [m for m in re.finditer(PATH, TEXT) if TEXT[m.end()] not in "<*"]
    paths = {m.group(0).rstrip(".") for m in found}
    assert len(paths) > 30
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, missing


def test_the_import_map_files_are_in_their_folders():
    folder, checked, missing = REPO, 0, []
    for line in IMPORT_MAP.splitlines():
        head = re.match(r"^(heads/|" + PATH + ")", line)
        if head:
            folder = REPO / (head.group(1) if head.group(1).endswith("/") else Path(head.group(1)).parent)
        for name in re.findall(r"(?<![/\w])([a-z_]+\.py)\b", line):
            checked += 1
            if not (folder / name).is_file():
                missing.append(f"{folder.relative_to(REPO)}/{name}")
    assert checked > 25 and not missing, missing


def test_every_module_and_tool_is_on_the_page():
    modules = [p for p in (REPO / "densebackbones").rglob("*.py") if p.name != "__init__.py"]
    modules += [p for p in (REPO / "heads").glob("*.py") if p.name != "__init__.py"]
    absent = sorted(str(p.relative_to(REPO)) for p in modules if p.name not in IMPORT_MAP)
    assert not absent, f"not in docs/architecture.md's import map: {absent}"
    packages = {p.parent.relative_to(REPO).as_posix() + "/" for p in (REPO / "densebackbones").glob("*/__init__.py")}
    assert all(package in TEXT for package in packages), packages

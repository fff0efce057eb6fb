"""The pass table of timm's model tests on our backbones (docs/timm_suite.md), from a pytest junit XML file.

    # run the suite (CI's selection; add --all for the tests marked slow too) and print the table:
    python tools/timm_suite_table.py --run [--all] [-n 2]
    # or print it from an earlier run's `pytest tests/timm_suite --junitxml=FILE`:
    python tools/timm_suite_table.py FILE

Rows: timm's test functions; columns: model families; a cell is passed/total, then failed (F), errors (E), skipped (S)
and deselected-as-slow counts where not zero. Below it, each distinct failure (the first line of its message) with
the tests and models that show it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("densenet", "condensenet", "dsod", "peleenet", "msdnet")
_ID = re.compile(r"^(?P<test>\w+)\[(?:\d+-)?(?P<model>[\w.]+)\]$")


def family(model: str) -> str:
    for prefix in ("condensenet", "dsod", "peleenet", "msdnet"):
        if model.startswith(prefix):
            return prefix
    return "densenet"  # densenet*, densenet_bc*, wide_densenet*


def _first_line(message: str, text: str) -> str:
    """The message's first line; for a bare one (``AssertionError``: timm's module is not assertion-rewritten, or
    ``RuntimeError:`` with the text on the next lines) also the failing source line and the next line of text."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if re.fullmatch(r"[\w.]+:?", first):
        failing = [line[1:].strip() for line in text.splitlines() if line.startswith(">")]
        more = lines[1] if len(lines) > 1 else (f"at `{failing[-1]}`" if failing else "")
        first = f"{first} {more}".strip()
    return re.sub(r"0x[0-9a-f]{6,}", "0x...", first)  # addresses differ between runs


def read(path: Path) -> list[tuple[str, str, str, str]]:
    """(test function, model, outcome, first line of the message) per timm test case in a junit file."""
    rows = []
    for case in ET.parse(path).iter("testcase"):
        match = _ID.match(case.get("name", ""))
        if not match or "timm_suite" not in case.get("classname", ""):
            continue
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = _first_line(child.get("message") or "", child.text or "")
                break
        rows.append((match["test"], match["model"].partition(".")[0], outcome, message))
    return rows


def table(rows: list[tuple[str, str, str, str]]) -> str:
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for test, model, outcome, _ in rows:
        counts[test, family(model)][outcome] += 1
    tests = sorted({test for test, *_ in rows})
    lines = ["| timm test | " + " | ".join(FAMILIES) + " |", "|---" * (len(FAMILIES) + 1) + "|"]
    for test in tests:
        cells = []
        for fam in FAMILIES:
            c = counts.get((test, fam))
            if not c:
                cells.append("-")
                continue
            total = sum(c.values())
            cell = f"{c['passed']}/{total}"
            extra = [f"{c[k]} {s}" for k, s in (("failed", "F"), ("error", "E"), ("skipped", "S")) if c[k]]
            cells.append(cell + (f" ({', '.join(extra)})" if extra else ""))
        lines.append(f"| `{test}` | " + " | ".join(cells) + " |")
    total = Counter(outcome for *_, outcome, _ in rows)
    lines.append("")
    lines.append(
        f"{len(rows)} cases: {total['passed']} passed, {total['failed']} failed, {total['error']} errors, "
        f"{total['skipped']} skipped."
    )
    reasons: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for test, model, outcome, message in rows:
        if outcome in ("failed", "error", "skipped"):
            reasons[f"{outcome}: {message}"][test].add(model)
    if reasons:
        lines += ["", "| outcome: first line of the message | tests (models) |", "|---|---|"]
        for reason in sorted(reasons, key=lambda r: (not r.startswith(("failed", "error")), r)):
            where = "; ".join(
                f"`{test}` ({', '.join(sorted(models)) if len(models) < 6 else f'{len(models)} models'})"
                for test, models in sorted(reasons[reason].items())
            )
            escaped = reason.replace("|", "\\|")[:300]
            lines.append(f"| {escaped} | {where} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", nargs="?", type=Path, help="junit XML of a `pytest tests/timm_suite` run")
    parser.add_argument("--run", action="store_true", help="run pytest tests/timm_suite first")
    parser.add_argument("--all", action="store_true", help="with --run: the tests marked slow too (-m '')")
    parser.add_argument("-n", default="2", help="with --run: pytest-xdist workers (default 2, as make test)")
    args = parser.parse_args(argv)
    if args.run == (args.junit is not None):
        parser.error("give a junit XML file or --run")
    if args.run:
        with tempfile.TemporaryDirectory() as tmp:
            junit = Path(tmp) / "timm_suite.xml"
            cmd = [sys.executable, "-m", "pytest", "tests/timm_suite", "-q", "-n", args.n, f"--junitxml={junit}"]
            if args.all:
                cmd += ["-m", ""]
            print("$", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr)
            print(table(read(junit)))
    else:
        print(table(read(args.junit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

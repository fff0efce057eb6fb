"""Fetch timm's own model tests for the installed timm (``make install`` runs this; nothing is downloaded at test time).

Downloads the source release (sdist) of exactly the installed timm version from the package index with pip (so pip's
index settings apply) and extracts ``tests/test_models.py`` into ``.cache/timm-tests/timm-<version>/`` (ignored by
git), with ``SOURCE.txt`` naming the archive and its sha256. ``tests/timm_suite/`` runs that file against every
registered backbone (docs/timm_suite.md). A second run for the same version does nothing; another timm version gets
its own folder.

    python tools/fetch_timm_tests.py            # fetch if missing, print the path
    python tools/fetch_timm_tests.py --check    # exit 1 if missing (no download)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "timm-tests"
# The files taken from timm's tests/ folder: test_models.py imports nothing else from it (only timm, torch,
# torchvision, and, inside the pretrained-weight tests, PIL, huggingface_hub and safetensors).
FILES = ("test_models.py",)


def tests_dir(version: str | None = None) -> Path:
    """Where the tests of timm ``version`` (default: the installed one) are extracted."""
    return CACHE / f"timm-{version or importlib.metadata.version('timm')}"


def fetch(version: str) -> Path:
    dest = tests_dir(version)
    if all((dest / name).is_file() for name in FILES):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*cmd, "-d", tmp, f"timm=={version}"], check=True)
        archives = sorted(Path(tmp).glob("timm-*.tar.gz"))
        if len(archives) != 1:
            raise SystemExit(f"expected one timm-{version}.tar.gz from pip download, got {[a.name for a in archives]}")
        archive = archives[0]
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=dest.parent))  # same file system as dest
        staging.chmod(0o755)
        with tarfile.open(archive) as tar:
            for name in FILES:
                member = tar.getmember(f"timm-{version}/tests/{name}")
                (staging / name).write_bytes(tar.extractfile(member).read())
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        (staging / "SOURCE.txt").write_text(f"{archive.name} sha256={digest}\nfiles: {', '.join(FILES)}\n")
        if dest.exists():  # a partial earlier extraction
            for old in dest.iterdir():
                old.unlink()
            dest.rmdir()
        staging.rename(dest)  # whole folder at once: a test never sees half of it
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are there")
    args = parser.parse_args(argv)
    version = importlib.metadata.version("timm")
    if args.check:
        missing = [name for name in FILES if not (tests_dir(version) / name).is_file()]
        if missing:
            print(f"missing in {tests_dir(version)}: {missing}; run `make install`", file=sys.stderr)
            return 1
        print(tests_dir(version))
        return 0
    print(f"timm {version} tests: {fetch(version)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

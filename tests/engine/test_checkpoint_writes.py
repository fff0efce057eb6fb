"""Checkpoint writes that cannot fail half-way (the reliability issue, items 1 and 2): a write that fails leaves the
previous checkpoint intact and no temporary file, and says which file, why and how much space is free; files follow
the umask; non-finite state is found wherever it sits in a checkpoint."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densebackbones.engine.checkpoint import CheckpointWriteError, atomic_save, load_checkpoint, non_finite_tensors


def _failing_save(after_bytes: int, error: Exception):
    """A torch.save that writes ``after_bytes`` bytes of the file and then fails as a full disk does."""

    def save(obj, handle, *args, **kwargs):
        handle.write(b"x" * after_bytes)
        raise error

    return save


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4480 vs 4374"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
    ],
    ids=["ENOSPC", "torch-short-write", "quota"],
)
def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error):
    path = tmp_path / "run" / "last.pth"
    atomic_save({"step": 1, "w": torch.ones(3)}, path)
    monkeypatch.setattr(torch, "save", _failing_save(100, error))
    with pytest.raises(CheckpointWriteError) as caught:
        atomic_save({"step": 2, "w": torch.zeros(3)}, path)
    message = str(caught.value)
    assert str(path) in message and "MiB free" in message and "the previous last.pth is intact" in message
    assert isinstance(caught.value, OSError)  # the tools' one-line handler (exit status 2) catches it
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pth"]  # no temporary file left


def test_a_failed_first_write_says_there_is_no_earlier_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _failing_save(0, OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(CheckpointWriteError, match="no earlier best.pth exists"):
        atomic_save({}, tmp_path / "best.pth")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_checkpoints_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = atomic_save({"step": 1}, tmp_path / "last.pth")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: torch.tensor([1.0, v])),
    st.integers(-5, 5).map(lambda v: torch.tensor([v])),
    st.text(max_size=3),
    st.none(),
)
_states = st.recursive(
    _values,
    lambda children: st.one_of(
        st.dictionaries(st.text("abc", min_size=1, max_size=3), children, max_size=3),
        st.lists(children, max_size=3),
    ),
    max_leaves=12,
)


def _finite(state) -> bool:
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(_finite(v) for v in state.values())
    if isinstance(state, list):
        return all(_finite(v) for v in state)
    return True


@settings(max_examples=150, deadline=None)
@given(state=_states)
def test_non_finite_tensors_are_found_wherever_they_sit(state):
    found = non_finite_tensors(state)
    assert (found == []) == _finite(state)


# ------------------------------------------------------------------------------------------------ the work-dir lock
_CONTENDER = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from densebackbones.engine.run_dir import RunDirectory, WorkDirError
work_dir, marker, deadline = sys.argv[2], os.path.join(sys.argv[3], "holder"), time.time() + float(sys.argv[4])
held = 0
while time.time() < deadline:
    directory = RunDirectory(work_dir)
    try:
        directory.lock()
    except WorkDirError:
        continue
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holder is inside
    except FileExistsError:
        print("TWO HOLDERS", flush=True)
        sys.exit(3)
    held += 1
    os.close(fd)
    os.unlink(marker)
    directory.unlock()
print("held", held, flush=True)
"""


def test_the_lock_never_has_two_holders(tmp_path):
    # Processes racing to lock, hold and release one work dir (the unlink-on-release path included): a holder that
    # found another one inside would exit 3.
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "run").mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONTENDER, str(repo), str(tmp_path / "run"), str(tmp_path), "3"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert sum(int(out.split()[-1]) for out in outputs) > 20, outputs  # they did take turns


def test_a_lock_file_without_a_holder_is_taken_whatever_it_names(tmp_path):
    # A lock file naming a live process (here our parent), as one from another PID namespace or host would: nobody
    # holds its flock, so the directory is free.
    from densebackbones.engine.run_dir import RunDirectory, WorkDirError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(f"pid={os.getppid()}\nhost=elsewhere\nsince=yesterday\n")
    with RunDirectory(tmp_path / "run").claim(resume=False, overwrite=False):
        assert (tmp_path / "run" / ".lock").read_text().startswith(f"pid={os.getpid()}\n")
        with pytest.raises(WorkDirError, match=rf"in use by another run \(pid {os.getpid()} on "):
            RunDirectory(tmp_path / "run").claim(resume=True, overwrite=False)
    assert not (tmp_path / "run" / ".lock").exists()

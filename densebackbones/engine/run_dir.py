"""A run's work directory: one run at a time, an earlier run never overwritten by accident, no stale temporaries.

* **Lock.** ``work_dir/.lock`` is locked with ``flock`` (an exclusive, non-blocking lock that the kernel holds for
  the process and drops when it ends, however it ends): at most one holder at any moment, also for processes in other
  PID namespaces that share the file system (containers) and, where the file system supports ``flock`` (local disks;
  NFS through byte-range locks), on other hosts. A lock file left by a process that died holds no lock and is simply
  taken: there is no stale state to detect, no pid to check. The file names the holder (pid, host, start time and,
  under torchrun, ``TORCHELASTIC_RUN_ID`` and the attempt), which a second run's refusal quotes. A torchrun restart
  starts after every worker of the previous attempt has ended, so its rank 0 finds the lock free.
* **Earlier results.** A directory that already holds a run (checkpoints or logs) is continued only with
  ``--resume``; ``--overwrite`` starts over and deletes that run's checkpoints and logs, and without either the
  tool stops and says so (as mmengine and Lightning users expect, nothing is silently replaced).
* **Temporaries.** A run killed while writing a checkpoint leaves ``.last.pth.XXXX.tmp``; they are removed when
  the next run takes the lock (only the lock holder writes there, so none can be in use).
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import socket
from pathlib import Path

from .elastic import restart_count

__all__ = ["RUN_OUTPUTS", "RunDirectory", "WorkDirError"]

_logger = logging.getLogger(__name__)

# What a run leaves in its work directory; their presence means the directory holds a run.
RUN_OUTPUTS = ("last.pth", "best.pth", "epoch_*.pth", "train.csv", "eval.csv", "final.safetensors", "final.json")


class WorkDirError(ValueError):
    """The work directory is in use or holds a run that this one would overwrite."""


class RunDirectory:
    """Lock ``work_dir`` for this process and check what it holds (see the module docstring).

    Use as a context manager (the lock is released on exit, also after an error)::

        with RunDirectory(work_dir).claim(resume=False, overwrite=False):
            ...
    """

    def __init__(self, work_dir: str | Path) -> None:
        self.path = Path(work_dir)
        self.lock_path = self.path / ".lock"
        self._fd: int | None = None
        self._created = False

    # ------------------------------------------------------------------------------------------------------ lock
    def _owner(self) -> dict[str, str]:
        try:
            fields = dict(line.split("=", 1) for line in self.lock_path.read_text().splitlines() if "=" in line)
        except OSError:
            fields = {}
        return fields

    def lock(self) -> None:
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        since = datetime.datetime.now().isoformat(timespec="seconds")
        me = f"pid={os.getpid()}\nhost={socket.gethostname()}\nsince={since}\n"
        run_id, attempt = os.environ.get("TORCHELASTIC_RUN_ID"), restart_count()
        if run_id is not None:
            me += f"run_id={run_id}\nattempt={attempt}\n"
        while True:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self._owner()
                pid, host = owner.get("pid", "?"), owner.get("host", "?")
                raise WorkDirError(
                    f"{self.path} is in use by another run (pid {pid} on {host}, since {owner.get('since', '?')}); "
                    f"wait for it to finish or pass another --work-dir"
                ) from None
            except OSError as err:  # a file system without flock
                os.close(fd)
                raise WorkDirError(f"cannot lock {self.lock_path} ({err.strerror}): put --work-dir elsewhere") from err
            # The holder before us may have unlinked the file between our open and our lock (unlock): then we hold
            # a lock on a file no other run will open. Only the lock on the file at the path counts.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, me.encode())
        self._fd = fd

    def unlock(self) -> None:
        """Release the lock; a directory this run created and left empty (it failed early) is removed again."""
        if self._fd is not None:
            # Unlinked while still held, so that a run waiting on this file notices (lock) and opens the new one.
            self.lock_path.unlink(missing_ok=True)
            os.close(self._fd)  # drops the flock
            self._fd = None
            if self._created and not any(self.path.iterdir()):
                self.path.rmdir()
        self._created = False

    # ------------------------------------------------------------------------------------------- what it holds
    def run_outputs(self) -> list[Path]:
        return sorted(p for pattern in RUN_OUTPUTS for p in self.path.glob(pattern))

    def remove_stale_temporaries(self) -> list[Path]:
        stale = sorted(self.path.glob(".*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            _logger.warning("removed %d temporary file(s) left by an interrupted checkpoint write", len(stale))
        return stale

    def claim(self, resume: bool, overwrite: bool) -> RunDirectory:
        """Take the lock, remove stale temporaries, and refuse (or with ``overwrite``, delete) an earlier run that
        this one is not resuming."""
        if resume and overwrite:
            raise WorkDirError("--resume and --overwrite contradict each other; pass one of them")
        self.lock()
        try:
            self.remove_stale_temporaries()
            earlier = self.run_outputs()
            if earlier and not resume:
                if not overwrite:
                    names = ", ".join(p.name for p in earlier[:6]) + (" ..." if len(earlier) > 6 else "")
                    raise WorkDirError(
                        f"{self.path} already holds a run ({names}); continue it with --resume auto, start over "
                        f"with --overwrite (deletes those files), or pass another --work-dir"
                    )
                for path in earlier:
                    path.unlink()
                print(f"--overwrite: deleted {len(earlier)} file(s) of the earlier run in {self.path}", flush=True)
        except BaseException:
            self.unlock()
            raise
        return self

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc) -> None:
        self.unlock()

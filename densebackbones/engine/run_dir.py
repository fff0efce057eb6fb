"""A run's work directory: one run at a time, an earlier run never overwritten by accident, no stale temporaries.

* **Lock.** ``work_dir/.lock`` is created exclusively (``O_CREAT | O_EXCL``) and holds the owner's pid, host and
  start time; a second run into the same directory stops with a message naming them. A lock whose process is gone
  (same host, pid not alive) is stale and taken over with a warning. Under torchrun the lock also names the run
  (``TORCHELASTIC_RUN_ID``, torchrun's ``--rdzv-id``) and the attempt (``TORCHELASTIC_RESTART_COUNT``): a restarted
  attempt takes over the lock of an earlier attempt of the same run, whichever host its rank 0 ran on (torchrun
  restarts a group only after every worker of the previous attempt has ended).
* **Earlier results.** A directory that already holds a run (checkpoints or logs) is continued only with
  ``--resume``; ``--overwrite`` starts over and deletes that run's checkpoints and logs, and without either the
  tool stops and says so (as mmengine and Lightning users expect, nothing is silently replaced).
* **Temporaries.** A run killed while writing a checkpoint leaves ``.last.pth.XXXX.tmp``; they are removed when
  the next run takes the lock (only the lock holder writes there, so none can be in use).
"""

from __future__ import annotations

import datetime
import errno
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM  # exists, owned by someone else
    return True


class RunDirectory:
    """Lock ``work_dir`` for this process and check what it holds (see the module docstring).

    Use as a context manager (the lock is released on exit, also after an error)::

        with RunDirectory(work_dir).claim(resume=False, overwrite=False):
            ...
    """

    def __init__(self, work_dir: str | Path) -> None:
        self.path = Path(work_dir)
        self.lock_path = self.path / ".lock"
        self._locked = False
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
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = owner.get("pid", "?"), owner.get("host", "?")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    _logger.warning(
                        "taking over the stale lock of process %s (no longer running): %s", pid, self.lock_path
                    )
                    self.lock_path.unlink(missing_ok=True)
                    continue
                earlier = owner.get("attempt", "")
                same_run = run_id is not None and owner.get("run_id") == run_id
                if same_run and earlier.isdigit() and int(earlier) < attempt:
                    _logger.warning(
                        "torchrun restart %d takes over the lock of attempt %s of run %s (pid %s on %s): %s",
                        attempt, earlier, run_id, pid, host, self.lock_path,
                    )  # fmt: skip
                    self.lock_path.unlink(missing_ok=True)
                    continue
                raise WorkDirError(
                    f"{self.path} is in use by another run (pid {pid} on {host}, since {owner.get('since', '?')}); "
                    f"wait for it to finish or pass another --work-dir (if no such run exists, delete "
                    f"{self.lock_path})"
                ) from None
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            self._locked = True
            return
        raise WorkDirError(f"could not take the lock {self.lock_path}")

    def unlock(self) -> None:
        """Release the lock; a directory this run created and left empty (it failed early) is removed again."""
        if self._locked:
            self.lock_path.unlink(missing_ok=True)
            self._locked = False
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

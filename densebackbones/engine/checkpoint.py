"""Atomic checkpoints and the random-number state needed to resume a run exactly.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then renamed over the old
one (``os.replace`` is atomic on POSIX), and the folder is fsynced: a run killed at any moment leaves either the
previous checkpoint or the new one, never a torn file. Checkpoints hold only tensors and plain Python values, so
they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "atomic_save",
    "atomic_write_text",
    "export_weights",
    "get_rng_state",
    "load_checkpoint",
    "non_finite_tensors",
    "set_rng_state",
    "write_failure",
]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, not a torch file, or holding disallowed objects)."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, quota, permissions); the previous file is intact."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | Path, before_replace: Callable[[], None] | None = None) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file, fsync, rename, fsync of the folder), readable as the
    process's umask says (``mkstemp`` would leave it 0600). A write that fails (a full disk, a quota) removes the
    temporary file, leaves the previous ``path`` as it was and raises :class:`CheckpointWriteError` naming the file
    and the free space. ``before_replace``: called once the temporary file is complete, before it replaces ``path``
    (the trainer's test-only fault injection: a kill at that moment leaves the previous file and a temporary)."""
    return _write_atomically(path, lambda handle: torch.save(obj, handle), before_replace)


def atomic_write_text(path: str | Path, text: str, what: str = "the file") -> Path:
    """``text`` written atomically as :func:`atomic_save` writes a checkpoint (a run's config.py, meta.json)."""
    return _write_atomically(path, lambda handle: handle.write(text.encode()), what=what)


def _write_atomically(
    path: str | Path,
    write: Callable[[Any], None],
    before_replace: Callable[[], None] | None = None,
    what: str = "the checkpoint",
) -> Path:
    """``write(binary file)`` into a temporary file beside ``path`` that then replaces it (see :func:`atomic_save`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp_name, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a short write as RuntimeError ("unexpected pos")
        Path(tmp_name).unlink(missing_ok=True)
        previous = f"the previous {path.name} is intact" if path.exists() else f"no earlier {path.name} exists"
        raise CheckpointWriteError(write_failure(path, err, what, previous)) from err
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_failure(path: Path, err: BaseException, what: str, state: str) -> str:
    """The one line of a write that failed: the file, the reason, the free space, ``state`` (what is left as it was),
    and what to do."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f}" if path.parent.exists() else "?"
    return (
        f"could not write {what} {path} ({reason}); {free} MiB free in {path.parent}; {state}: free space and resume "
        f"with --resume auto"
    )


def non_finite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Keys (dotted paths) of the floating-point tensors in a nested checkpoint ``state`` that hold NaN or inf."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            return [prefix or "tensor"]
        return []
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    return [
        key for name, value in items for key in non_finite_tensors(value, f"{prefix}.{name}" if prefix else str(name))
    ]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_save` (``weights_only=True``); :class:`CheckpointError` naming the
    file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {reason}); it may have been cut short by "
            f"an interrupted copy, or not be a torch file"
        ) from err
    return state


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as plain values (bytes, ints), so that they can be
    gathered across processes with ``all_gather_object`` and loaded with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, keys.astype(np.uint32).tobytes(), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state().numpy().tobytes(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return state


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.frombuffer(keys, dtype=np.uint32).copy(), pos, has_gauss, cached))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(s) for s in state["cuda"]])


def export_weights(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save weights as safetensors with the pretrained config (JSON) as metadata, plus ``<path>.json``.

    Load them back with ``create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg.update({"num_classes": getattr(model, "num_classes", None), **(metadata or {})})
    if getattr(model, "_model_args", None) is not None:  # the arguments that rebuild it (tasks/common.py)
        cfg["model_args"] = model._model_args
    cfg = {k: v for k, v in cfg.items() if k not in ("file", "state_dict")}
    text = json.dumps(cfg, default=str)
    # safetensors' save_file creates its file 0600 whatever the umask: written as bytes instead, atomically
    blob = save(state, metadata={"pretrained_cfg": text})
    _write_atomically(path, lambda handle: handle.write(blob), what="the weights")
    atomic_write_text(path.with_suffix(".json"), json.dumps(json.loads(text), indent=2), "the weights' config")
    return path

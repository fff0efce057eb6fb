"""Reading image files so that a broken one is named: PIL's messages for a truncated file ("image file is truncated
(3 bytes not processed)") or a file that is no image name none, and a loader worker's traceback hides which of a
data set's files it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["read_image", "read_image_size"]

# What PIL raises for a file it cannot read: UnidentifiedImageError and truncation (OSError), bad headers.
_UNREADABLE = (OSError, ValueError, SyntaxError)


def read_image(path: str | Path, what: str = "", mode: str | None = "RGB") -> np.ndarray:
    """The image file at ``path`` as an array (converted to ``mode``; None keeps the file's: label maps); an
    unreadable file raises ``OSError`` naming it and ``what`` (e.g. ``"image id 7"``, ``"label map of x.png"``)."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert(mode) if mode else image)  # a writable copy for the transforms
    except _UNREADABLE as err:
        raise _unreadable(path, what, err) from err


def read_image_size(path: str | Path, what: str = "") -> tuple[int, int]:
    """(width, height) from the file's header (nothing decoded); an unreadable file as :func:`read_image` says."""
    try:
        with Image.open(path) as image:
            return image.size
    except _UNREADABLE as err:
        raise _unreadable(path, what, err) from err


def _unreadable(path: str | Path, what: str, err: BaseException) -> OSError:
    where = f" ({what})" if what else ""
    return OSError(f"cannot read {path}{where}: {err}; replace or remove the file")

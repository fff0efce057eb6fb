"""Reading image files so that a broken one is named: PIL's messages for a truncated file ("image file is truncated
(3 bytes not processed)") or a file that is no image name none, and a loader worker's traceback hides which of a
data set's files it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["read_image"]


def read_image(path: str | Path, what: str = "", mode: str | None = "RGB") -> np.ndarray:
    """The image file at ``path`` as an array (converted to ``mode``; None keeps the file's: label maps); an
    unreadable file raises ``OSError`` naming it and ``what`` (e.g. ``"image id 7"``, ``"label map of x.png"``)."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert(mode) if mode else image)  # a writable copy for the transforms
    except (OSError, ValueError, SyntaxError) as err:  # PIL: UnidentifiedImageError, truncation, bad headers
        where = f" ({what})" if what else ""
        raise OSError(f"cannot read {path}{where}: {err}; replace or remove the file") from err

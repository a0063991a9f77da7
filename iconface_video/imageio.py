"""Still images read and written through bytes in memory, never through a path handed to OpenCV.

OpenCV's own file functions crash the process (segfault, no message) on a path that is not valid
UTF-8, so every image file in the project goes through these two functions: Python opens the file
(any path the OS accepts) and OpenCV only encodes or decodes bytes. Semantics follow ``cv2.imread``
and ``cv2.imwrite``: BGR channel order, ``None`` / ``False`` when the file cannot be used.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


def imread(path: str | os.PathLike | bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """The decoded image (``cv2.imread`` semantics: BGR uint8), or None when it cannot be read."""
    try:
        data = Path(os.fsdecode(path)).read_bytes()
    except (OSError, ValueError):
        return None
    if not data:
        return None
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)


def imencode(suffix: str, image: np.ndarray, params: tuple[int, ...] | list[int] = ()) -> bytes:
    """The image encoded in the format of ``suffix`` (".png", ".jpg", ...); ValueError if it can't be."""
    ok, buf = cv2.imencode(suffix.lower(), image, list(params))
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix}")
    return buf.tobytes()


def imwrite(path: str | os.PathLike | bytes, image: np.ndarray, params: tuple[int, ...] | list[int] = ()) -> bool:
    """Encode by the path's suffix and write the bytes (``cv2.imwrite`` semantics: False on failure).

    The caller chooses atomicity: write to a temporary name and rename, as outputs must.
    """
    target = Path(os.fsdecode(path))
    try:
        data = imencode(target.suffix or ".png", image, params)
    except (ValueError, cv2.error):
        return False
    try:
        target.write_bytes(data)
    except OSError:
        return False
    return True

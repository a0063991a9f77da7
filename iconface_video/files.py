"""Small, safe file writes shared by the stages that write JSON and HTML beside their outputs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from iconface_video.errors import OutputError


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place.

    A reader sees the old file or the new one, never half of one. The file gets ordinary
    permissions (0644): ``mkstemp`` makes it private, but reports and manifests are for every
    user of the folder. A failure is a one-line ``OutputError``.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OutputError(f"{path.parent}: cannot write there ({error.strerror})") from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: could not be written ({error.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Photos of people: the one list of image suffixes, the ``--refs NAME=FOLDER`` parser, and the
one rule for which face of a photo is the photo's subject.

Every stage that reads photos (the analysis's ``--refs``, the training set aligner, the ``faces``
command) goes through these, so a photo counts, and picks its face, the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from iconface_video.errors import InputError
from iconface_video.types import FaceObs

# The formats OpenCV decodes everywhere the project runs (lower case; compare ``suffix.lower()``).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def photo_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by path."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def parse_ref_spec(text: str) -> tuple[str, Path]:
    """``"Name=dir/"`` -> (name, folder); a one-line ``InputError`` when malformed, when the
    folder does not exist, or when it holds no photos."""
    name, sep, folder = text.partition("=")
    name, path = name.strip(), Path(folder.strip()).expanduser()
    if not sep or not name or not folder.strip():
        raise InputError(f"--refs {text!r}: expected NAME=FOLDER, e.g. --refs \"Anna=photos/anna/\"")
    if not path.is_dir():
        raise InputError(f"--refs {text!r}: {path} is not a folder; give a folder of photos of that person")
    if not photo_files(path):
        raise InputError(f"--refs {text!r}: {path} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    return name, path


def box_area(face: FaceObs) -> float:
    """The area of ``face.box`` in pixels squared."""
    x0, y0, x1, y1 = face.box
    return (x1 - x0) * (y1 - y0)


def main_face(faces: Sequence[FaceObs]) -> FaceObs | None:
    """The subject of a photo: the face with the largest box (the first of equals), None when
    there is none. A photo someone chose of a person shows that person largest; the detector's
    score or the eye distance would prefer a sharp bystander or a frontal one."""
    return max(faces, key=box_area, default=None)

"""What the detector backends share: the smallest face worth keeping, and the one per-image loop
around the backends that search one image at a time (RetinaFace, SCRFD).

A backend gives ``find(view) -> (rows float32[F, 5], points float32[F, 5, 2])``: box corners and
score per face, and the 5 ArcFace-order landmarks, in the pixels of ``view`` (an upright
``uint8[H, W, 3]`` RGB image); ``detect_each`` turns that into ``Detector.detect``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from iconface_video.faces.orientation import detect_rotated
from iconface_video.types import FaceObs

FindFaces = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def min_face_px(min_face: float | None, height: int, width: int) -> float:
    """The smallest face side kept in a ``height`` x ``width`` image: ``min_face`` pixels, or
    by default ``max(20, min(H, W) / 40)``. Faces below ~2.5% of the short side are too small to
    restore usefully; skipping them also removes a pyramid's largest, costliest levels."""
    if min_face is not None:
        return float(min_face)
    return max(20.0, min(height, width) / 40.0)


def detect_each(
    find: FindFaces,
    min_face: float | None,
    images: Sequence[np.ndarray],
    frame_indices: Sequence[int] | None = None,
    rotation: int = 0,
) -> list[list[FaceObs]]:
    """``Detector.detect`` for a one-image backend: ``find`` on the upright view of each image,
    faces smaller than ``min_face_px`` dropped, the rest by falling score, in stored-frame pixels."""

    def search(views: list[np.ndarray], indices: list[int]) -> list[list[FaceObs]]:
        results = []
        for view, index in zip(views, indices):
            smallest = min_face_px(min_face, *view.shape[:2])
            rows, points = find(view)
            faces = []
            for row, kps in zip(np.asarray(rows, np.float32).reshape(-1, 5), np.asarray(points, np.float32).reshape(-1, 5, 2)):
                x0, y0, x1, y1, score = (float(v) for v in row)
                if min(x1 - x0, y1 - y0) < smallest:
                    continue
                faces.append(FaceObs(index, (x0, y0, x1, y1), score, kps.copy()))
            results.append(sorted(faces, key=lambda f: -f.score))
        return results

    return detect_rotated(search, images, frame_indices, rotation)

"""Pictures for a human look: faces drawn on an image, and contact sheets of aligned crops."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from iconface_video.types import FaceObs

# One colour per landmark (left eye, right eye, nose, left mouth, right mouth), RGB.
POINT_COLOURS = ((255, 60, 60), (60, 255, 60), (60, 120, 255), (255, 255, 0), (255, 0, 255))


def annotate(image: np.ndarray, faces: Sequence[FaceObs]) -> np.ndarray:
    """A copy of ``image`` (uint8[H, W, 3] RGB) with each face's box, score, index and 5 points."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(image.shape[:2]) / 600))
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = (round(v) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 255), thickness)
        radius = max(2, int(face.eye_distance / 12))
        for (x, y), colour in zip(face.kps5, POINT_COLOURS):
            cv2.circle(out, (round(float(x)), round(float(y))), radius, colour, -1)
        label = f"{i}: {face.score:.2f}"
        cv2.putText(out, label, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 255, 255), thickness)
    return out


def contact_sheet(tiles: Sequence[np.ndarray], columns: int = 8, tile: int = 112, labels: Sequence[str] | None = None) -> np.ndarray:
    """Tiles (uint8[h, w, 3], resized to ``tile``) in a grid, optionally captioned; uint8 RGB."""
    rows = max(1, -(-len(tiles) // columns))
    sheet = np.full((rows * tile, columns * tile, 3), 32, np.uint8)
    for i, image in enumerate(tiles):
        r, c = divmod(i, columns)
        cell = cv2.resize(np.ascontiguousarray(image), (tile, tile), interpolation=cv2.INTER_AREA)
        if labels is not None:
            cv2.putText(cell, labels[i], (2, tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = cell
    return sheet


def draw_template(crops: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Aligned crops ``uint8[N, S, S, 3]`` with ``points`` (``[5, 2]`` or ``[N, 5, 2]``) marked."""
    out = np.ascontiguousarray(crops.copy())
    points = np.broadcast_to(np.asarray(points, np.float32), (len(crops), 5, 2))
    for crop, pts in zip(out, points):
        for (x, y), colour in zip(pts, POINT_COLOURS):
            cv2.circle(crop, (round(float(x)), round(float(y))), max(1, crop.shape[0] // 100), colour, -1)
    return out

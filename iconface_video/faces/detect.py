"""Face detection with 5 landmarks, batched over frames, behind one interface.

``load_detector(backend)`` returns a ``Detector`` whose ``detect(images)`` gives, per image, a
list of ``FaceObs`` (box, score, 5 ArcFace-order points) in *stored-frame* pixels. Backends:

- ``mtcnn``: embedded, no download, MIT weights (the default when nothing else is present);
- ``insightface``: SCRFD from a ``buffalo_l``-style pack folder (non-commercial weights);
- ``facexlib``: RetinaFace ResNet-50 (``detection_Resnet50_Final.pth``).

``MTCNNDetector.follow(image, boxes)`` finds faces near expected boxes only (O-net alone): the
analysis uses it between full-frame detections. Backends without it are run on whole frames.

``auto`` picks the strongest backend whose weights are present: insightface, facexlib, mtcnn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from iconface_video.errors import InputError
from iconface_video.faces.checks import check_images
from iconface_video.faces.mtcnn import MTCNNSettings
from iconface_video.faces.orientation import detect_rotated, obs_to_stored, points_to_upright, upright
from iconface_video.types import FaceObs

BACKENDS = ("auto", "mtcnn", "insightface", "facexlib")


class Detector(Protocol):
    """What every backend provides."""

    name: str

    def detect(
        self,
        images: Sequence[np.ndarray],
        frame_indices: Sequence[int] | None = None,
        rotation: int = 0,
    ) -> list[list[FaceObs]]: ...


# --- MTCNN (embedded) ---------------------------------------------------------------------------

@dataclass
class MTCNNDetector:
    """The embedded MTCNN cascade. ``batch`` frames go through P-net together (same-size frames)."""

    nets: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]
    settings: MTCNNSettings
    device: torch.device
    batch: int = 8
    name: str = "mtcnn"

    def detect(
        self,
        images: Sequence[np.ndarray],
        frame_indices: Sequence[int] | None = None,
        rotation: int = 0,
    ) -> list[list[FaceObs]]:
        return detect_rotated(self._detect_upright, images, frame_indices, rotation)

    def follow(self, image: np.ndarray, boxes: np.ndarray, frame_index: int, rotation: int = 0) -> list[FaceObs]:
        """Faces near ``boxes`` float[T, 4] (stored-frame pixels, e.g. where tracks are expected)
        in one frame, by O-net alone (``mtcnn.refine_boxes``): between full-frame detections a
        tracked face costs a 48x48 network call instead of a whole pyramid. Faces that appear
        elsewhere are left to the next full detection."""
        from iconface_video.faces.mtcnn import refine_boxes

        check_images([image])
        view = upright(image, rotation)
        corners = np.asarray(boxes, np.float32).reshape(-1, 2, 2)
        turned = points_to_upright(corners, rotation, image.shape[:2])
        view_boxes = np.concatenate([turned.min(axis=1), turned.max(axis=1)], axis=1)
        found, scores, points = refine_boxes(self.nets[2], view, view_boxes, self.settings.thresholds[2])
        faces = [FaceObs(frame_index, tuple(float(v) for v in b), float(s), p) for b, s, p in zip(found, scores, points)]
        return [obs_to_stored(o, rotation, image.shape[:2]) for o in sorted(faces, key=lambda o: -o.score)]

    def _detect_upright(self, images: list[np.ndarray], indices: list[int]) -> list[list[FaceObs]]:
        from iconface_video.faces.mtcnn import run_cascade

        results: list[list[FaceObs]] = [[] for _ in images]
        # Group same-sized frames so each P-net pyramid level runs once per group.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.batch):
                chunk = members[start:start + self.batch]
                stack = np.stack([images[i] for i in chunk])
                tensor = torch.from_numpy(stack).to(self.device).permute(0, 3, 1, 2).float()
                found = run_cascade(self.nets, tensor, self.settings)
                boxes = found.boxes.cpu().numpy()
                scores = found.scores.cpu().numpy()
                points = found.points.cpu().numpy().astype(np.float32)
                owner = found.image.cpu().numpy()
                for j in np.argsort(-scores):
                    i = chunk[owner[j]]
                    results[i].append(FaceObs(indices[i], tuple(float(v) for v in boxes[j]), float(scores[j]), points[j]))
        return results


def load_mtcnn(
    models_dir: str | Path | None = None,
    device: str = "cpu",
    min_face: float | None = None,
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.85),
    batch: int = 8,
) -> MTCNNDetector:
    from iconface_video.faces.mtcnn import load_networks
    from iconface_video.weights import find_model_file

    weights_dir = find_model_file("mtcnn", "pnet.safetensors", models_dir).parent
    nets = load_networks(weights_dir, device)
    settings = MTCNNSettings(min_face=min_face, thresholds=thresholds)
    return MTCNNDetector(nets, settings, torch.device(device), batch=batch)


# --- choosing a backend -------------------------------------------------------------------------

def load_detector(
    backend: str = "auto",
    models_dir: str | Path | None = None,
    device: str = "cpu",
    *,
    min_face: float | None = None,
    threshold: float | None = None,
    commercial_only: bool = False,
) -> Detector:
    """A detector. ``min_face`` in pixels (None: relative to frame size); ``threshold`` is the
    final score threshold (None: the backend's default). With ``commercial_only``, ``auto``
    skips weights whose licence forbids commercial use (insightface packs, RetinaFace)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown detector {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        from iconface_video.weights import get_model, is_present

        for candidate, name in (("insightface", "buffalo_l"), ("facexlib", "retinaface"), ("facexlib", "retinaface-mobile")):
            model = get_model(name)
            if (model.commercial_use or not commercial_only) and is_present(model, models_dir):
                return load_detector(candidate, models_dir, device, min_face=min_face, threshold=threshold)
        backend = "mtcnn"
    if backend == "mtcnn":
        thresholds = (0.6, 0.7, threshold if threshold is not None else 0.85)
        return load_mtcnn(models_dir, device, min_face=min_face, thresholds=thresholds)
    if backend == "insightface":
        from iconface_video.faces.insightface_backend import load_insightface_detector

        return load_insightface_detector(models_dir, device, min_face=min_face, threshold=threshold)
    from iconface_video.faces.facexlib_backend import load_facexlib_detector

    return load_facexlib_detector(models_dir, device, min_face=min_face, threshold=threshold)


__all__ = ["BACKENDS", "Detector", "MTCNNDetector", "load_detector", "load_mtcnn"]

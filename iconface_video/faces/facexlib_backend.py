"""facexlib RetinaFace detector (5 landmarks, ArcFace order), used when its weights are present.

facexlib's ``init_detection_model(name, model_rootpath=DIR)`` loads ``DIR/<file name>`` and
would download it when absent, so we first find the file in the model store (clear
``MissingModelError`` instead of a download) and check it with ``safe_load_torch`` (a pickle
with code is refused before facexlib sees it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from iconface_video.faces.backend import detect_each
from iconface_video.types import FaceObs

if TYPE_CHECKING:
    from facexlib.detection.retinaface import RetinaFace

# facexlib model name -> (catalogue model, weight file)
VARIANTS = {
    "retinaface_resnet50": ("retinaface", "detection_Resnet50_Final.pth"),
    "retinaface_mobile0.25": ("retinaface-mobile", "detection_mobilenet0.25_Final.pth"),
}


@dataclass
class FacexlibDetector:
    """RetinaFace on the original image size; ``min_face`` drops smaller boxes."""

    model: RetinaFace
    threshold: float = 0.8
    min_face: float | None = None
    name: str = "facexlib"

    def detect(self, images: Sequence[np.ndarray], frame_indices: Sequence[int] | None = None, rotation: int = 0) -> list[list[FaceObs]]:
        return detect_each(self.find, self.min_face, images, frame_indices, rotation)

    @torch.inference_mode()
    def find(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes with scores ``float32[F, 5]`` and landmarks ``float32[F, 5, 2]`` in one RGB image."""
        bgr = np.ascontiguousarray(image[:, :, ::-1]).astype(np.float32)
        rows = self.model.detect_faces(bgr, conf_threshold=self.threshold, nms_threshold=0.4, use_origin_size=True)
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 15)
        return rows[:, :5], rows[:, 5:15].reshape(-1, 5, 2)


def load_facexlib_detector(
    models_dir: str | Path | None = None,
    device: str = "cpu",
    *,
    min_face: float | None = None,
    threshold: float | None = None,
    variant: str | None = None,
) -> FacexlibDetector:
    """RetinaFace ResNet-50 when present, else MobileNet-0.25; ``MissingModelError`` when neither is."""
    from iconface_video.errors import MissingModelError
    from iconface_video.weights import (
        check_state_dict,
        find_model_file,
        safe_load_torch,
        state_dict_of,
    )

    errors = []
    for name in [variant] if variant else list(VARIANTS):
        model_name, file_name = VARIANTS[name]
        try:
            path = find_model_file(model_name, file_name, models_dir)
            break
        except MissingModelError as error:
            errors.append(error)
    else:
        raise errors[0]  # names the strongest variant's file
    from facexlib.detection import init_detection_model
    from facexlib.detection.retinaface import RetinaFace

    state = state_dict_of(safe_load_torch(path))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    check_state_dict(RetinaFace(network_name=name.split("_")[1], half=False, device=device), state, source=path)
    model = init_detection_model(name, half=False, device=device, model_rootpath=str(path.parent))
    return FacexlibDetector(model.eval(), threshold=threshold if threshold is not None else 0.8, min_face=min_face)

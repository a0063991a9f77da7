"""insightface models (SCRFD detector, ArcFace recogniser) from a ``buffalo_l``-style pack folder.

insightface routes each ONNX file by its signature (``model_zoo.get_model(path)``: >= 5 outputs
is a detector, a square >= 112 input is a recogniser), so any pack with the same file names
works. These weights are NON-COMMERCIAL (insightface's model licence); ``models list`` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from iconface_video.errors import BadWeightsError
from iconface_video.faces.backend import detect_each
from iconface_video.types import FaceObs

if TYPE_CHECKING:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD

EXPECTED = {"detection": "SCRFD", "recognition": "ArcFaceONNX"}


def providers_for(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") else ["CPUExecutionProvider"]


def load_onnx_model(file: str, model: str, models_dir: str | Path | None, device: str, expected: str) -> SCRFD | ArcFaceONNX:
    """``model_zoo.get_model`` on the store's copy of ``file``; a file that does not route to
    the ``expected`` kind ("detection" / "recognition") is a ``BadWeightsError``."""
    from insightface.model_zoo import model_zoo

    from iconface_video.weights import find_model_file

    path = find_model_file(model, file, models_dir)
    try:
        loaded = model_zoo.get_model(str(path), providers=providers_for(device))
    except Exception as error:  # noqa: BLE001 - onnxruntime raises untyped errors for corrupt files
        raise BadWeightsError(f"{path}: onnxruntime cannot load it ({type(error).__name__}); fetch it again") from None
    if type(loaded).__name__ != EXPECTED[expected]:
        raise BadWeightsError(f"{path}: is not a face {expected} model (insightface routed it to {type(loaded).__name__})")
    return loaded


@dataclass
class InsightfaceDetector:
    """SCRFD on a letterboxed ``det_size`` input (insightface's own pre/post-processing)."""

    model: SCRFD
    threshold: float = 0.5
    min_face: float | None = None
    det_size: tuple[int, int] = (640, 640)
    name: str = "insightface"

    def detect(self, images: Sequence[np.ndarray], frame_indices: Sequence[int] | None = None, rotation: int = 0) -> list[list[FaceObs]]:
        return detect_each(self.find, self.min_face, images, frame_indices, rotation)

    def find(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes with scores ``float32[F, 5]`` and landmarks ``float32[F, 5, 2]`` in one RGB image."""
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        boxes, points = self.model.detect(bgr, input_size=self.det_size, max_num=0, metric="default")
        if points is None:  # a model without landmarks: nothing the aligners could use
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        return np.asarray(boxes, np.float32).reshape(-1, 5), np.asarray(points, np.float32).reshape(-1, 5, 2)


def load_insightface_detector(
    models_dir: str | Path | None = None,
    device: str = "cpu",
    *,
    min_face: float | None = None,
    threshold: float | None = None,
    det_size: tuple[int, int] | None = None,
) -> InsightfaceDetector:
    """SCRFD ``det_10g.onnx`` from the ``buffalo_l`` folder in the model store."""
    model = load_onnx_model("det_10g.onnx", "buffalo_l", models_dir, device, expected="detection")
    threshold = 0.5 if threshold is None else threshold
    static = getattr(model, "static_input_size", None)
    size = tuple(det_size or static or (640, 640))
    model.prepare(ctx_id=0 if str(device).startswith("cuda") else -1, input_size=size, det_thresh=threshold)
    if not getattr(model, "use_kps", True):
        raise BadWeightsError(f"{model.model_file}: this SCRFD model gives no landmarks; use a pack with 5-point SCRFD")
    return InsightfaceDetector(model, threshold=threshold, min_face=min_face, det_size=size)

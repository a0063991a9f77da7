"""insightface models (SCRFD detector, ArcFace recogniser) from a ``buffalo_l``-style pack folder.

insightface routes each ONNX file by its signature (``model_zoo.get_model(path)``: >= 5 outputs
is a detector, a square >= 112 input is a recogniser), so any pack with the same file names
works. These weights are NON-COMMERCIAL (insightface's model licence); ``models list`` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iconface_video.errors import BadWeightsError
from iconface_video.types import FaceObs

EXPECTED = {"detection": "SCRFD", "recognition": "ArcFaceONNX"}


def providers_for(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") else ["CPUExecutionProvider"]


def load_onnx_model(file: str, model: str, models_dir: str | Path | None, device: str, expected: str) -> Any:
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

    model: Any
    threshold: float = 0.5
    min_face: float | None = None
    det_size: tuple[int, int] = (640, 640)
    name: str = "insightface"

    def detect(self, images: Sequence[np.ndarray], frame_indices: Sequence[int] | None = None, rotation: int = 0) -> list[list[FaceObs]]:
        from iconface_video.faces.detect import _with_rotation

        return _with_rotation(self._detect_upright, images, frame_indices, rotation)

    def _detect_upright(self, images: list[np.ndarray], indices: list[int]) -> list[list[FaceObs]]:
        results = []
        for image, index in zip(images, indices):
            height, width = image.shape[:2]
            min_face = self.min_face if self.min_face is not None else max(20.0, min(height, width) / 40.0)
            bgr = np.ascontiguousarray(image[:, :, ::-1])
            boxes, points = self.model.detect(bgr, input_size=self.det_size, max_num=0, metric="default")
            faces = []
            for row, kps in zip(np.asarray(boxes, np.float32).reshape(-1, 5), points if points is not None else [None] * len(boxes)):
                x0, y0, x1, y1, score = (float(v) for v in row)
                if kps is None or min(x1 - x0, y1 - y0) < min_face:
                    continue
                faces.append(FaceObs(index, (x0, y0, x1, y1), score, np.asarray(kps, np.float32).reshape(5, 2)))
            results.append(sorted(faces, key=lambda f: -f.score))
        return results


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

"""Soft face masks for paste-back, in aligned-crop space.

``landmark_mask`` needs no weights: an ellipse fitted around the 5 points (forehead to chin,
cheek to cheek), feathered by a Gaussian whose width is a fraction of the face size, so small
and large faces blend alike. ``parsing_mask`` uses facexlib's BiSeNet or ParseNet face parsing
when their weights are present (skin, brows, eyes, nose, mouth, lips; hair and neck excluded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d


def landmark_mask(size: int, kps5_in_crop: np.ndarray | torch.Tensor, feather: float = 0.1) -> torch.Tensor:
    """``float32[N, 1, size, size]`` in [0, 1]: 1 on the face, falling smoothly to 0 outside.

    ``kps5_in_crop`` is ``float[N, 5, 2]`` in crop pixels. The ellipse is centred between the
    eyes and the mouth, ~1.9 eye distances wide and ~2.5 tall, turned with the eye line.
    ``feather`` is the blur's sigma as a fraction of the eye-to-mouth distance.
    """
    kps = torch.as_tensor(np.asarray(kps5_in_crop, np.float32) if isinstance(kps5_in_crop, np.ndarray) else kps5_in_crop, dtype=torch.float32)
    if kps.ndim == 2:
        kps = kps[None]
    n = kps.shape[0]
    eyes = kps[:, :2].mean(dim=1)
    mouth = kps[:, 3:].mean(dim=1)
    eye_vec = kps[:, 1] - kps[:, 0]
    eye_dist = eye_vec.norm(dim=1).clamp_min(1.0)
    face_len = (mouth - eyes).norm(dim=1).clamp_min(1.0)
    angle = torch.atan2(eye_vec[:, 1], eye_vec[:, 0])
    centre = eyes + (mouth - eyes) * 0.45
    half_w = 1.0 * eye_dist
    half_h = 1.45 * face_len
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    dx = xs[None] - centre[:, 0, None, None]
    dy = ys[None] - centre[:, 1, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = (dx * cos + dy * sin) / half_w[:, None, None]
    v = (-dx * sin + dy * cos) / half_h[:, None, None]
    hard = ((u**2 + v**2) <= 1.0).float()[:, None]
    masks = torch.empty(n, 1, size, size)
    for i in range(n):
        sigma = max(0.5, feather * float(face_len[i]) * 1.0)
        k = int(2 * round(3 * sigma) + 1)
        # Shrink first so that the feathered edge ends near the ellipse, not outside it.
        shrunk = -F.max_pool2d(-hard[i:i + 1], kernel_size=k if k < size else (size // 2) * 2 - 1, stride=1, padding=(min(k, size - 1) // 2))
        masks[i] = gaussian_blur2d(shrunk, (k, k), (sigma, sigma), border_type="constant")[0] if k < size else shrunk[0]
    return masks.clamp_(0.0, 1.0)


# CelebAMask-HQ labels that are part of the face to paste: skin, brows, eyes, glasses, ears? no,
# nose, mouth, lips. Hair (17), neck (14), cloth (16), hat (18) and background stay untouched.
FACE_LABELS = (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)


@dataclass
class FaceParser:
    """facexlib's parsing network on 512 crops; ``name`` is "bisenet" or "parsenet"."""

    net: torch.nn.Module
    name: str
    device: torch.device

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor, feather: float = 0.02) -> torch.Tensor:
        """``float32[N, 1, S, S]`` soft masks of ``crops`` (``float32[N, 3, S, S]`` RGB in [0, 1])."""
        size = crops.shape[-1]
        x = F.interpolate(crops.to(self.device), size=(512, 512), mode="bilinear", align_corners=False)
        x = (x - 0.5) / 0.5
        out = self.net(x)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        labels = logits.argmax(dim=1, keepdim=True)
        face = torch.zeros_like(labels, dtype=torch.float32)
        for label in FACE_LABELS:
            face += (labels == label).float()
        sigma = max(0.5, feather * 512)
        k = int(2 * round(3 * sigma) + 1)
        face = gaussian_blur2d(face, (k, k), (sigma, sigma))
        return F.interpolate(face, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1).cpu()


def load_parser(name: str = "bisenet", models_dir: str | Path | None = None, device: str = "cpu") -> FaceParser:
    """facexlib's BiSeNet or ParseNet from ``parsing_<name>.pth`` in the model store."""
    from facexlib.parsing import init_parsing_model

    from iconface_video.weights import find_model_file

    path = find_model_file(name, f"parsing_{name}.pth", models_dir)
    from iconface_video.faces.facexlib_backend import facexlib_loading

    with facexlib_loading():
        net = init_parsing_model(model_name=name, device=device, model_rootpath=str(path.parent))
    return FaceParser(net.eval(), name, torch.device(device))


def parsing_mask(crops: torch.Tensor, parser: FaceParser | None = None, kps5_in_crop: np.ndarray | None = None,
                 feather: float = 0.1) -> torch.Tensor:
    """Parsing mask ``float32[N, 1, S, S]`` when a parser is given, else the landmark mask."""
    if parser is not None:
        return parser(crops)
    if kps5_in_crop is None:
        raise ValueError("without a face parser, landmarks are needed for the mask")
    return landmark_mask(crops.shape[-1], kps5_in_crop, feather)

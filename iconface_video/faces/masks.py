"""Soft face masks for paste-back, in aligned-crop space: ``float32[N, 1, size, size]`` in [0, 1].

``landmark_mask`` needs no weights: an ellipse around the 5 points (brows to chin, cheek to
cheek), turned with the eye line, whose edge falls off smoothly over a width proportional to
the face's size, so small and large faces blend alike. ``parsing_mask`` uses facexlib's BiSeNet
or ParseNet face parsing when their weights are present (skin, brows, eyes, glasses, ears,
nose, mouth, lips; hair, neck, clothes and background excluded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

# CelebAMask-HQ labels (both facexlib parsers): 1 skin, 2-3 brows, 4-5 eyes, 6 glasses,
# 7-8 ears, 9 earring, 10 nose, 11 mouth, 12-13 lips; 14+ neck, necklace, cloth, hair, hat.
FACE_LABELS = tuple(range(1, 14))
# Input normalisation each facexlib parser was trained with (mean, std) on RGB in [0, 1].
PARSER_NORMALISATION = {"bisenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "parsenet": ((0.5,) * 3, (0.5,) * 3)}


def landmark_mask(size: int, kps5_in_crop: np.ndarray | torch.Tensor, feather: float = 0.15) -> torch.Tensor:
    """Ellipse masks ``float32[N, 1, size, size]`` from ``kps5_in_crop`` (``float[N, 5, 2]``, crop pixels).

    The ellipse is centred a little below the eyes-to-mouth midpoint, 2.1 eye distances wide
    and 3 eye-to-mouth distances tall. It is 1 inside, 0 outside its edge, and ramps smoothly
    (smoothstep) over ``feather`` x the eye-to-mouth distance inside the edge.
    """
    kps = torch.as_tensor(np.asarray(kps5_in_crop, np.float32)) if isinstance(kps5_in_crop, np.ndarray) else kps5_in_crop.float().cpu()
    if kps.ndim == 2:
        kps = kps[None]
    eyes = kps[:, :2].mean(dim=1)
    mouth = kps[:, 3:].mean(dim=1)
    eye_vec = kps[:, 1] - kps[:, 0]
    eye_dist = eye_vec.norm(dim=1).clamp_min(1.0)
    face_len = (mouth - eyes).norm(dim=1).clamp_min(1.0)
    angle = torch.atan2(eye_vec[:, 1], eye_vec[:, 0])
    centre = eyes + (mouth - eyes) * 0.6
    half_w, half_h = 1.05 * eye_dist, 1.5 * face_len
    coords = torch.arange(size, dtype=torch.float32)
    dx = coords[None, None, :] - centre[:, 0, None, None]
    dy = coords[None, :, None] - centre[:, 1, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = (dx * cos + dy * sin) / half_w[:, None, None]
    v = (-dx * sin + dy * cos) / half_h[:, None, None]
    # Distance inside the edge in pixels, approximately: (1 - r) times the local radius.
    radius = torch.sqrt(u**2 + v**2)
    local = torch.sqrt((u * half_w[:, None, None]) ** 2 + (v * half_h[:, None, None]) ** 2) / radius.clamp_min(1e-6)
    inside = (1.0 - radius) * local
    ramp = (inside / (feather * face_len)[:, None, None].clamp_min(1e-3)).clamp(0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp))[:, None]


@dataclass
class FaceParser:
    """A facexlib face-parsing network; ``name`` is "bisenet" or "parsenet"."""

    net: torch.nn.Module
    name: str
    device: torch.device

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor, feather: float = 0.01) -> torch.Tensor:
        """Soft masks ``float32[N, 1, S, S]`` of ``crops`` (``float32[N, 3, S, S]`` RGB in [0, 1]).

        The hard label mask is blurred by ``feather`` x 512 px at the parser's resolution.
        """
        size = crops.shape[-1]
        mean, std = PARSER_NORMALISATION[self.name]
        x = F.interpolate(crops.to(self.device), size=(512, 512), mode="bilinear", align_corners=False, antialias=True)
        x = (x - torch.tensor(mean, device=x.device)[:, None, None]) / torch.tensor(std, device=x.device)[:, None, None]
        logits = self.net(x)[0]  # BiSeNet: (out, out16, out32); ParseNet: (mask, image)
        labels = logits.argmax(dim=1, keepdim=True)
        face = torch.isin(labels, torch.tensor(FACE_LABELS, device=labels.device)).float()
        sigma = max(0.5, feather * 512)
        k = int(2 * round(3 * sigma) + 1)
        face = gaussian_blur2d(face, (k, k), (sigma, sigma))
        return F.interpolate(face, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1).cpu()


def load_parser(name: str = "bisenet", models_dir: str | Path | None = None, device: str = "cpu") -> FaceParser:
    """facexlib's BiSeNet or ParseNet from ``parsing_<name>.pth`` in the model store.

    The file is checked with ``safe_load_torch`` (no code can run) and against the network's
    tensor shapes before facexlib's own ``init_parsing_model`` loads ``DIR/parsing_<name>.pth``.
    """
    from facexlib.parsing import BiSeNet, ParseNet, init_parsing_model

    from iconface_video.errors import InputError
    from iconface_video.weights import (
        check_state_dict,
        find_model_file,
        safe_load_torch,
        state_dict_of,
    )

    if name not in PARSER_NORMALISATION:
        raise InputError(f"unknown face parser {name!r}; choose bisenet or parsenet")
    path = find_model_file(name, f"parsing_{name}.pth", models_dir)
    reference = BiSeNet(num_class=19) if name == "bisenet" else ParseNet(in_size=512, out_size=512, parsing_ch=19)
    check_state_dict(reference, state_dict_of(safe_load_torch(path)), source=path)
    net = init_parsing_model(model_name=name, half=False, device=device, model_rootpath=str(path.parent))
    return FaceParser(net.eval(), name, torch.device(device))


def parsing_mask(
    crops: torch.Tensor,
    parser: FaceParser | None = None,
    kps5_in_crop: np.ndarray | torch.Tensor | None = None,
    feather: float = 0.15,
) -> torch.Tensor:
    """``float32[N, 1, S, S]``: the parser's mask when one is loaded, else the landmark mask."""
    if parser is not None:
        return parser(crops)
    if kps5_in_crop is None:
        raise ValueError("without a face parser, the landmarks are needed for the mask")
    return landmark_mask(crops.shape[-1], kps5_in_crop, feather)

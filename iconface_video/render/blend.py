"""Paste-back: restored aligned crops into the frame with no box, seam or colour shift.

The frame receives a *change*, not a replacement: ``delta = mask * (restored' - lq)`` where
``lq`` is the very crop the restorer was given and ``restored'`` is the restored crop with its
low frequencies matched to ``lq``. This has three consequences that plain "warp the restored
crop back and alpha-blend it" lacks:

- a restorer that changes nothing changes nothing: pixels are not resampled twice (warp then
  inverse warp blurs), so the paste-back is exactly invisible where the restorer agrees with
  its input, and a seam can only come from what the restorer really did;
- colour and exposure cannot drift: the low frequencies of the change are removed (colour
  matching to the input), so only detail is added;
- detail finer than the crop's resolution (film grain on a face larger than the crop) is kept.

Everything runs on the frame's device with kornia; only a box around each face is touched, and
pixels where the mask is zero keep their decoded values bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import invert_affine_transform, warp_affine

# Colour matching keeps the restored crop's structure finer than ~1/16 of the crop (eyes,
# lashes, lips, skin texture) and takes everything coarser (skin tone, shading, colour cast)
# from the input crop.
_COLOUR_SIGMA_FRACTION = 1.0 / 16.0
# Blurs wider than this many pixels run at a lower resolution (``lowpass``).
_DIRECT_SIGMA = 4.0
# Masks fade to zero over the outer 1/16 of the crop.
_TAPER_FRACTION = 1.0 / 16.0
# Rec.601 luma: a change made chroma-free this way leaves a grey pixel grey.
_LUMA = (0.299, 0.587, 0.114)


def lowpass(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass of ``float32[N, C, R, R]`` (reflect borders, so edges do not darken).

    A blur wider than ``_DIRECT_SIGMA`` pixels is done at a lower resolution (box-averaged by
    an integer factor, blurred by the rest of ``sigma``, bilinearly upsampled): the direct
    kernel's cost grows with the crop's side cubed (3.1 s per 512-px crop at sigma 32 on one CPU
    thread, 80 ms this way). It is still a smooth low-pass with unit gain at DC; it departs from
    the exact Gaussian by under a level on average, more within ~3 sigma of the border, where
    the reflection happens at the coarser grid.
    """
    factor = int(sigma // _DIRECT_SIGMA)
    if factor <= 1:
        return _gaussian(images, sigma)
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(math.ceil(height / factor), math.ceil(width / factor)), mode="area")
    # A box of `factor` pixels already blurred by a variance of factor^2 / 12 pixels^2.
    rest = math.sqrt(max(sigma**2 / factor**2 - 1.0 / 12.0, 0.25))
    return F.interpolate(_gaussian(small, rest), size=(height, width), mode="bilinear", align_corners=False)


def _gaussian(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    return gaussian_blur2d(images, (2 * radius + 1, 2 * radius + 1), (sigma, sigma), border_type="reflect")


def colour_correction(restored: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """``float32[N, 3, R, R]`` to add to ``restored`` so its low frequencies equal ``lq``'s."""
    sigma = max(1.0, restored.shape[-1] * _COLOUR_SIGMA_FRACTION)
    return lowpass(lq, sigma) - lowpass(restored, sigma)


def chroma_free(change: torch.Tensor) -> torch.Tensor:
    """The luma of a change ``float32[N, 3, H, W]``, repeated in all three channels.

    Added to a grey pixel (R = G = B) it keeps the pixel grey: black-and-white footage stays
    black-and-white whatever tint the restorer produced.
    """
    weights = torch.tensor(_LUMA, dtype=change.dtype, device=change.device).view(1, 3, 1, 1)
    return (change * weights).sum(dim=1, keepdim=True).expand_as(change)


def border_taper(size: int, fraction: float = _TAPER_FRACTION) -> torch.Tensor:
    """``float32[1, 1, size, size]``: 1 inside, easing to exactly 0 at the crop's outermost pixels.

    Multiplied into every mask, so a mask that reaches the crop's edge (a tight template, a
    face parsing that runs off the crop) still fades out before the edge instead of cutting.
    """
    ramp = max(1.0, size * fraction)
    distance = torch.minimum(torch.arange(size, dtype=torch.float32), torch.arange(size - 1, -1, -1, dtype=torch.float32))
    t = (distance / ramp).clamp(0, 1)
    edge = t * t * (3 - 2 * t)  # smoothstep: no kink where the ramp meets the flat part
    return (edge[:, None] * edge[None, :])[None, None]


def face_change(residual: torch.Tensor, mask: torch.Tensor, strength: float, greyscale: torch.Tensor) -> torch.Tensor:
    """The masked change ``float32[N, 4, R, R]`` (3 colour channels + mask) to paste back.

    ``residual`` is ``restored + correction - lq``, ``float32[N, 3, R, R]``; ``mask`` is
    ``float32[N, 1, R, R]`` in [0, 1]; ``strength`` in [0, 1] blends between the input (0) and
    the restored face (1); ``greyscale`` ``bool[N]`` marks crops of black-and-white footage,
    whose change is made chroma-free. Channel 3 is the mask itself, so faces that overlap
    composite in order (see ``paste``).
    """
    grey = greyscale.to(residual.device).view(-1, 1, 1, 1)
    change = torch.where(grey, chroma_free(residual), residual)
    alpha = mask * strength
    return torch.cat([change * alpha, alpha], dim=1)


def crop_box(M: np.ndarray, size: int, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Frame pixels ``(x0, y0, x1, y1)`` (exclusive end) covered by a ``size`` crop with map ``M[2, 3]``.

    None when the crop lies wholly outside the frame.
    """
    inverse = np.linalg.inv(np.vstack([np.asarray(M, dtype=np.float64), [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], dtype=np.float64)
    points = corners @ inverse.T
    x0 = max(0, int(math.floor(points[:, 0].min())) - 1)
    y0 = max(0, int(math.floor(points[:, 1].min())) - 1)
    x1 = min(width, int(math.ceil(points[:, 0].max())) + 2)
    y1 = min(height, int(math.ceil(points[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste(frame: torch.Tensor, changes: torch.Tensor | Sequence[torch.Tensor], M: np.ndarray) -> torch.Tensor:
    """Frame ``uint8[H, W, 3]`` (torch, any device) with each face's change pasted back.

    ``changes`` holds one ``float32[4, R, R]`` per face from ``face_change`` (values in [0, 1]
    units; a ``[N, 4, R, R]`` tensor or a sequence, each face with its own side R);
    ``M`` is ``float32[N, 2, 3]`` frame -> crop. Each face's change is warped only into the box
    its crop covers, and faces composite in order (a later face covers an earlier one under its
    mask). Pixels no mask reaches are returned unchanged.
    """
    height, width = frame.shape[:2]
    out = frame.clone()
    for i in range(len(changes)):
        face = changes[i][None]
        size = face.shape[-1]
        box = crop_box(M[i], size, height, width)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        local = torch.as_tensor(np.asarray(M[i], dtype=np.float64), device=frame.device).clone()
        local[:, 2] += local[:, :2] @ torch.tensor([x0, y0], dtype=torch.float64, device=frame.device)
        to_frame = invert_affine_transform(local[None]).to(face.dtype)
        warped = warp_affine(face, to_frame, dsize=(y1 - y0, x1 - x0), mode="bilinear",
                             padding_mode="zeros", align_corners=True)[0]
        region = out[y0:y1, x0:x1].permute(2, 0, 1).to(face.dtype)
        change, alpha = warped[:3] * 255.0, warped[3:4]
        # "over" compositing of changes: where this face's mask is 1 its change replaces any
        # earlier face's; the region already holds earlier changes, so subtract them by alpha.
        base = frame[y0:y1, x0:x1].permute(2, 0, 1).to(face.dtype)
        mixed = region + change - alpha * (region - base)
        touched = alpha > 0
        result = torch.where(touched, mixed.round().clamp(0, 255), region)
        out[y0:y1, x0:x1] = result.to(torch.uint8).permute(1, 2, 0)
    return out


def is_greyscale(images: np.ndarray, tolerance: int = 3, fraction: float = 0.001) -> bool:
    """True when RGB ``uint8[..., 3]`` images carry no colour.

    A black-and-white source decoded from YUV has R = G = B up to rounding; a pixel counts as
    coloured when two channels differ by more than ``tolerance``, and the images are grey when
    at most ``fraction`` of the pixels are coloured (tolerating a burnt-in coloured logo).
    """
    images = np.asarray(images, dtype=np.int16)
    spread = images.max(axis=-1) - images.min(axis=-1)
    return bool((spread > tolerance).mean() <= fraction)

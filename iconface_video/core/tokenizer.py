"""Pixel-patch tokens (core-design §5.3): no autoencoder, losses apply directly to x̂0.

A crop ``float[N, 3, S, S]`` becomes ``float[N, (S/p)², 3·p·p]`` tokens in raster order (row-major
over the patch grid), and back. The channel-major patch layout matches ``F.unfold``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """float[N, C, S, S] → float[N, (S/patch)², C·patch²] in raster order of the patch grid."""
    return F.unfold(images, kernel_size=patch, stride=patch).transpose(1, 2)


def unpatchify(tokens: torch.Tensor, patch: int, size: int) -> torch.Tensor:
    """float[N, (size/patch)², C·patch²] → float[N, C, size, size]; the inverse of ``patchify``."""
    return F.fold(tokens.transpose(1, 2), output_size=(size, size), kernel_size=patch, stride=patch)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """float[N, 3, S, S] → float[N, 3, size, size]; antialiased area-like downscale, bicubic up."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    down = images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear" if down else "bicubic",
                         antialias=down, align_corners=False)


def grid_coords(grid: int, scale: float = 1.0) -> torch.Tensor:
    """float[grid², 2] (h, w) centre coordinates of a patch grid, scaled onto another grid.

    ``scale`` = scene grid / this grid, so a half-resolution reference's patch lands on the scene
    patch covering the same facial region (aligned crops): the soft locality prior of §5.4.
    """
    idx = (torch.arange(grid, dtype=torch.float32) + 0.5) * scale - 0.5
    hh, ww = torch.meshgrid(idx, idx, indexing="ij")
    return torch.stack([hh.reshape(-1), ww.reshape(-1)], dim=1)

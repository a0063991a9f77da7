"""Pixels ↔ tokens (core-v2 §1–2): small convolutional encoders and a U-Net style decoder.

A crop ``float[N, 3, S, S]`` (any S that is a multiple of ``stride = 2**(len(channels) + 1)``)
becomes a token grid ``float[N, (S/stride)², D]`` in raster order, and the scene tokens become
pixels again. The convolutions start at half resolution: a 2x2 pixel unshuffle turns each block
of 4 pixels into 12 channels (and the head's 12 channels back into 4 pixels), which keeps every
pixel's information at a quarter of the cost of full-resolution convolutions on a CPU.

- ``PixelEncoder`` (degraded crops and references; t-independent, so the sampler runs it once):
  a full-resolution stem and NAFNet-style blocks at every scale, downsampling by 2 per level. It
  returns the token grid and the feature map of every scale (the skips).
- ``SceneStem`` (noisy scene, once per sampling step): a cheap strided path to the token grid; the
  scene needs little of its own because the degraded crop's features enter the decoder.
- ``PixelDecoder``: upsamples the scene tokens level by level, adding the *degraded* crop's skip
  features at every scale (the structure anchor at pixel resolution), and a zero-initialised head
  predicts the change to the degraded crop, so a fresh model returns its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tokens_from_map(feat: torch.Tensor) -> torch.Tensor:
    """float[N, D, g, g] → float[N, g², D] in raster order."""
    return feat.flatten(2).transpose(1, 2)


def map_from_tokens(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """float[N, g², D] → float[N, D, g, g]; the inverse of ``tokens_from_map``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid, grid)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of every pixel of float[N, C, H, W]."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class NAFBlock(nn.Module):
    """NAFNet-style block: gated depthwise-conv mixer and gated channel MLP, residual scales at 0.

    Both residual scales start at zero, so every block starts as the identity.
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(c)
        self.expand = nn.Conv2d(c, 2 * c, 1)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sca = nn.Conv2d(c, c, 1)  # simplified channel attention
        self.project = nn.Conv2d(c, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.ffn_in = nn.Conv2d(c, 2 * c, 1)
        self.ffn_out = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dw(self.expand(self.norm1(x))).chunk(2, dim=1)
        y = a * b
        y = y * self.sca(y.mean((2, 3), keepdim=True))
        x = x + self.beta * self.project(y)
        a, b = self.ffn_in(self.norm2(x)).chunk(2, dim=1)
        return x + self.gamma * self.ffn_out(a * b)


def _stage(c: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[NAFBlock(c) for _ in range(n)])


class PixelEncoder(nn.Module):
    """float[N, 3, S, S] in [-1, 1] → (tokens float[N, (S/stride)², dim], skips per scale).

    ``channels[i]`` is the width at scale 1/2**(i+1); ``blocks[i]`` NAF blocks run at that scale
    before it is halved. Skips: float[N, channels[i], S/2**(i+1), S/2**(i+1)], finest first.
    """

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, channels[0], 3, padding=1))
        self.stages = nn.ModuleList([_stage(c, n) for c, n in zip(channels, blocks)])
        outs = (*channels[1:], dim)
        self.down = nn.ModuleList([nn.Conv2d(c, o, 2, stride=2) for c, o in zip(channels, outs)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(x)
        skips = []
        for stage, down in zip(self.stages, self.down):
            h = stage(h)
            skips.append(h)
            h = down(h)
        return tokens_from_map(h), skips


class SceneStem(nn.Module):
    """float[N, 3, S, S] noisy scene → float[N, (S/stride)², width]: strided convolutions only."""

    def __init__(self, stride: int, width: int) -> None:
        super().__init__()
        mid = max(width // 2, 16)
        # First a 4x4 patch convolution (cheap at full resolution), then 2x downsamplings.
        layers: list[nn.Module] = [nn.Conv2d(3, mid, 4, stride=4)]
        for i in range(stride.bit_length() - 3):
            layers += [nn.GELU(), nn.Conv2d(mid if i == 0 else width, width, 2, stride=2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tokens_from_map(self.net(x))


class PixelDecoder(nn.Module):
    """Scene tokens float[N, g², dim] + degraded skips → the change to the degraded crop float[N, 3, S, S]."""

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...], dim: int) -> None:
        super().__init__()
        ins = (*channels[1:], dim)
        # Pixel-shuffle upsampling: a 1x1 convolution to 4x the channels of the next finer scale.
        self.up = nn.ModuleList([nn.Conv2d(i, 4 * c, 1) for c, i in zip(channels, ins)])
        self.skip = nn.ModuleList([nn.Conv2d(c, c, 1) for c in channels])
        self.stages = nn.ModuleList([_stage(c, n) for c, n in zip(channels, blocks)])
        self.head = nn.Sequential(nn.Conv2d(channels[0], 12, 3, padding=1), nn.PixelShuffle(2))
        nn.init.zeros_(self.head[0].weight)
        nn.init.zeros_(self.head[0].bias)

    def forward(self, tokens: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        grid = skips[-1].shape[-1] // 2
        h = map_from_tokens(tokens, grid)
        for i in reversed(range(len(skips))):
            h = F.pixel_shuffle(self.up[i](h), 2) + self.skip[i](skips[i].to(h.dtype))
            h = self.stages[i](h)
        return self.head(h)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """float[N, 3, S, S] → float[N, 3, size, size]; antialiased area-like downscale, bicubic up."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    down = images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear" if down else "bicubic",
                         antialias=down, align_corners=False)


def grid_coords(grid: int, scale: float = 1.0) -> torch.Tensor:
    """float[grid², 2] (h, w) centre coordinates of a token grid, scaled onto another grid.

    ``scale`` = target grid / this grid, so a reference's (or a larger crop's) token lands on the
    position of the token covering the same facial region (aligned crops): the same RoPE position
    means the same part of the face at every crop side.
    """
    idx = (torch.arange(grid, dtype=torch.float32) + 0.5) * scale - 0.5
    hh, ww = torch.meshgrid(idx, idx, indexing="ij")
    return torch.stack([hh.reshape(-1), ww.reshape(-1)], dim=1)

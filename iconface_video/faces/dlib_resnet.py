"""dlib's face-recognition ResNet (128-d, CC0 weights) as a PyTorch module.

``load_dlib_resnet(models_dir, device)`` gives the frozen network; ``DlibIdentity`` wraps it for
training losses and the restorer's identity anchor: crops aligned to one of the project's
templates at any side are warped (differentiably) to dlib's 150x150 chip first.

The weights come from ``dlib_face_recognition_resnet_model_v1.dat`` (model ``dlib-resnet``),
read by ``dlib_dat.read_dat`` and converted once to a safetensors file (model
``dlib-resnet-torch``) in the first writable models folder; later runs load that file.

Quirks of dlib's layers, copied so that the descriptors match dlib's own to 1e-5:
- the input is ``(RGB - means) / 256`` (dlib's ``input_rgb_image``);
- stride-2 convolutions and pools have no padding, stride-1 3x3 convolutions pad 1;
- batch norm is folded into per-channel ``affine`` layers;
- a residual sum zero-pads both terms to the larger channel count and spatial size (the 8x8 ->
  3x3 block meets its 4x4 pooled shortcut; the sum is 4x4), aligned at the top-left corner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iconface_video.faces.align import DLIB_TEMPLATE_150, fit_similarity
from iconface_video.faces.align import template as template_points
from iconface_video.faces.dlib_dat import INPUT_MEANS, INPUT_SIZE, architecture, read_dat

DAT_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CONVERTED_FILE = "dlib_face_recognition_resnet_model_v1.safetensors"


class Affine(nn.Module):
    """Per-channel ``x * weight + bias`` (dlib's ``affine_`` layer: batch norm folded at training end)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias[:, None, None], x, self.weight[:, None, None])


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger of each dimension, the missing part of either term zero."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[d], b.shape[d]) for d in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class Stem(nn.Module):
    """7x7 stride-2 convolution (no padding), affine, relu, 3x3 stride-2 max pool: 150 -> 35."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2)
        self.affine = Affine(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)


class ResBlock(nn.Module):
    """conv-affine-relu-conv-affine plus the (2x2 average-pooled, when ``down``) input, then relu."""

    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.affine2 = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_padded(y, F.avg_pool2d(x, 2) if self.down else x))


class DlibResNet(nn.Module):
    """dlib's ResNet: chips ``float[N, 3, 150, 150]`` RGB in [0, 1] -> descriptors ``float[N, 128]``.

    Chips are dlib's own face chips (``get_face_chip``, padding 0.25), i.e. faces aligned to
    ``DLIB_TEMPLATE_150``. The descriptors are dlib's ``compute_face_descriptor`` of the same
    uint8 chips (unnormalised, norms near 1.5; compare by cosine or Euclidean distance). Runs on
    any device, differentiable w.r.t. the chips.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem()
        specs = architecture()
        blocks, channels = [], 32
        for spec in specs:
            blocks.append(ResBlock(channels, spec.channels, spec.down))
            channels = spec.channels
        self.blocks = nn.ModuleList(blocks)
        # ``features`` hands out the last activation of each resolution level.
        self.level_ends = frozenset(i for i in range(len(specs)) if i + 1 == len(specs) or specs[i + 1].down)
        self.fc = nn.Linear(channels, 128, bias=False)
        self.register_buffer("means", torch.tensor(INPUT_MEANS).view(1, 3, 1, 1), persistent=False)

    def _trunk(self, chips: torch.Tensor, keep: list[torch.Tensor] | None) -> torch.Tensor:
        if chips.dim() != 4 or chips.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"chips must be float[N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {tuple(chips.shape)}")
        x = self.stem((chips * 255.0 - self.means) / 256.0)
        if keep is not None:
            keep.append(x)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if keep is not None and index in self.level_ends:
                keep.append(x)
        return x

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.fc(self._trunk(chips, None).mean(dim=(2, 3)))

    def features(self, chips: torch.Tensor) -> list[torch.Tensor]:
        """Activations after the stem and after each level: ``[N, 32, 35, 35]``, ``[N, 32, 35, 35]``,
        ``[N, 64, 17, 17]``, ``[N, 128, 8, 8]``, ``[N, 256, 4, 4]``, ``[N, 256, 2, 2]`` (all after relu)."""
        keep: list[torch.Tensor] = []
        self._trunk(chips, keep)
        return keep


def convert_dat(source: str | Path, target: str | Path) -> None:
    """Write the parameters of dlib's ``.dat`` file ``source`` to the safetensors file ``target``."""
    from safetensors.torch import save_file

    from iconface_video.weights import get_model

    origin = get_model("dlib-resnet")
    tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in read_dat(source).items()}
    # One metadata entry: safetensors writes several in random order, and the file's checksum
    # is pinned in the catalogue.
    metadata = {"licence": f"{origin.licence}; converted from {DAT_FILE} ({origin.description}, sha256 {origin.files[0].sha256})"}
    save_file(tensors, str(target), metadata=metadata)


def converted_weights(models_dir: str | Path | None = None) -> Path:
    """The safetensors weights; made from the ``.dat`` file on first use (``weights.derive``)."""
    from iconface_video.weights import find_model_file
    from iconface_video.weights.store import derive

    def make(target: Path) -> None:
        convert_dat(find_model_file("dlib-resnet", DAT_FILE, models_dir), target)

    return derive("dlib-resnet-torch", make, models_dir)


def load_dlib_resnet(models_dir: str | Path | None = None, device: str | torch.device = "cpu") -> DlibResNet:
    """The frozen network in eval mode on ``device`` (parameters do not require grad; channels-last)."""
    from iconface_video.weights import check_state_dict, load_safetensors

    path = converted_weights(models_dir)
    state = load_safetensors(path)
    net = DlibResNet()
    check_state_dict(net, state, path)
    net.load_state_dict(state)
    # Channels-last convolutions: 1.3-1.7x faster on a CPU thread here (oneDNN), same results to 1e-6.
    return net.requires_grad_(False).eval().to(device=device, memory_format=torch.channels_last)


def warp_to_chip(crops: torch.Tensor, points: np.ndarray) -> torch.Tensor:
    """Differentiable bilinear warp of ``crops[N, C, S, S]`` whose faces sit at ``points[5, 2]`` to
    ``float[N, C, 150, 150]`` dlib chips, on the crops' device.

    It samples as ``cv2.warpAffine(..., BORDER_REFLECT)`` does in ``DlibEmbedder`` (pixel centres at
    integers, mirrored about the crop's edge), so descriptors of ArcFace-112 crops agree with the
    embedder's uint8 path to cosine 0.99999: with the other reflection (about the edge pixels'
    centres) the chip's bottom rows, beyond ArcFace-112's chin, differ and cosine drops to 0.9993.
    Crops much larger than the chip are first shrunk with an antialiasing resize. Computed in at
    least float32: a bfloat16 sampling grid would be off by up to 0.3 px.
    """
    crops = crops.to(torch.promote_types(crops.dtype, torch.float32))
    size = crops.shape[-1]
    points = torch.from_numpy(np.asarray(points, np.float32))
    M = fit_similarity(points[None], torch.from_numpy(DLIB_TEMPLATE_150))[0].double()  # crop px -> chip px
    scale = float(M[:, :2].det().abs().sqrt())
    if scale < 0.75:  # bilinear sampling would alias
        small = max(8, round(size * scale))
        crops = F.interpolate(crops, size=(small, small), mode="bilinear", antialias=True, align_corners=False)
        points = (points + 0.5) * (small / size) - 0.5
        size = small
        M = fit_similarity(points[None], torch.from_numpy(DLIB_TEMPLATE_150))[0].double()
    inverse = torch.linalg.inv(torch.cat([M, M.new_tensor([[0.0, 0.0, 1.0]])]))[:2]  # chip px -> crop px
    v, u = torch.meshgrid(torch.arange(INPUT_SIZE, dtype=torch.float64), torch.arange(INPUT_SIZE, dtype=torch.float64), indexing="ij")
    xy = torch.stack([u, v, torch.ones_like(u)], dim=-1) @ inverse.T
    grid = ((2 * xy + 1) / size - 1).to(crops.device, crops.dtype)  # align_corners=False coordinates
    return F.grid_sample(crops, grid[None].expand(crops.shape[0], -1, -1, -1), mode="bilinear",
                         padding_mode="reflection", align_corners=False)


class DlibIdentity(nn.Module):
    """dlib's descriptor and activations of aligned face crops, differentiable w.r.t. the crops.

    ``crops`` are ``float[N, 3, S, S]`` RGB in [0, 1] aligned to ``template`` (``faces.align``'s
    ``arcface`` or ``ffhq``) at any side S; ``warp_to_chip`` brings them to dlib's 150x150 chip on
    their own device. Outputs are on the crops' device, float32 unless run under autocast.
    """

    def __init__(self, net: DlibResNet) -> None:
        super().__init__()
        self.net = net

    def chips(self, crops: torch.Tensor, template: str = "arcface") -> torch.Tensor:
        """``float[N, 3, 150, 150]`` dlib chips of ``crops``."""
        if crops.dim() != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
            raise ValueError(f"crops must be float[N, 3, S, S], got {tuple(crops.shape)}")
        return warp_to_chip(crops, template_points(template, crops.shape[-1]))

    def embed(self, crops: torch.Tensor, template: str = "arcface") -> torch.Tensor:
        """Descriptors ``float[N, 128]`` (unnormalised, as dlib returns them)."""
        return self.net(self.chips(crops, template))

    def features(self, crops: torch.Tensor, template: str = "arcface") -> list[torch.Tensor]:
        """``DlibResNet.features`` of the crops' chips (for a feature-matching loss)."""
        return self.net.features(self.chips(crops, template))

    forward = embed


def load_dlib_identity(models_dir: str | Path | None = None, device: str | torch.device = "cpu") -> DlibIdentity:
    """``DlibIdentity`` around ``load_dlib_resnet(models_dir, device)``."""
    return DlibIdentity(load_dlib_resnet(models_dir, device))

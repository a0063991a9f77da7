"""AdaFace encoders (Kim et al., CVPR 2022): the IR-ResNet backbone and its released checkpoints.

The released checkpoints are PyTorch-Lightning ``.ckpt`` files whose ``state_dict`` holds the
backbone under ``model.`` (and the margin head under ``head.``); module names here match them.
Input: a face aligned to the ArcFace 112 template, **BGR**, ``(x / 255 - 0.5) / 0.5``. Output:
the 512-d feature *before* normalisation; its norm is AdaFace's image-quality signal (blurred,
tiny or occluded faces have small norms), which the reference harvest uses as a weight.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from iconface_video.errors import InputError
from iconface_video.faces.checks import check_aligned112, check_image_points

# Units per stage (stride 2 at each stage's first unit); channels 64, 128, 256, 512.
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
CHANNELS = (64, 128, 256, 512)


class BasicBlockIR(nn.Module):
    """Pre-activation residual unit: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.BatchNorm2d(depth),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """IR-ResNet for 112x112 faces: ``float[N, 3, 112, 112] -> float[N, 512]`` (unnormalised)."""

    def __init__(self, num_layers: int = 50) -> None:
        super().__init__()
        if num_layers not in DEPTHS:
            raise ValueError(f"IR-{num_layers} is not an AdaFace backbone; choose one of {sorted(DEPTHS)}")
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        in_channel = 64
        for depth, count in zip(CHANNELS, DEPTHS[num_layers]):
            for i in range(count):
                units.append(BasicBlockIR(in_channel, depth, 2 if i == 0 else 1))
                in_channel = depth
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.4), nn.Flatten(), nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512, affine=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


def layers_from_state(state: dict[str, torch.Tensor]) -> int:
    """IR depth from a backbone state dict (count of residual units in ``body``)."""
    units = {int(key.split(".")[1]) for key in state if key.startswith("body.")}
    total = len(units)
    for layers, depths in DEPTHS.items():
        if sum(depths) == total:
            return layers
    raise InputError(f"checkpoint has {total} residual units: not an IR-18/34/50/100 AdaFace backbone")


# Globals a Lightning checkpoint names besides tensors. Lightning's ``AttributeDict`` (the
# hyper-parameters) is rebuilt as a plain ``dict``: the allow-listed name builds data and never
# imports or runs Lightning's code.
LIGHTNING_GLOBALS = [
    (dict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    (dict, "lightning.fabric.utilities.data.AttributeDict"),
    argparse.Namespace,
]


def load_checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors from a released AdaFace ``.ckpt`` (or a plain state dict)."""
    from iconface_video.weights import safe_load_torch, state_dict_of

    with torch.serialization.safe_globals(LIGHTNING_GLOBALS):
        checkpoint = safe_load_torch(path)
    state = state_dict_of(checkpoint, "model.")
    return state or state_dict_of(checkpoint)


@dataclass
class AdaFaceEmbedder:
    """AdaFace IR backbone; ``embed*`` return the unnormalised 512-d features."""

    net: IRBackbone
    device: torch.device
    name: str = "adaface"
    dim: int = 512
    batch: int = 64

    def embed(self, image: np.ndarray, kps5: np.ndarray) -> np.ndarray:
        from iconface_video.faces.align import template, warp_to_template

        kps5 = check_image_points(image, kps5)
        return self._features(warp_to_template(image, kps5, template("arcface", 112), 112))

    def embed_aligned112(self, crops: np.ndarray) -> np.ndarray:
        return self._features(check_aligned112(crops))

    @torch.inference_mode()
    def _features(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch):
            chunk = torch.from_numpy(np.ascontiguousarray(crops[start:start + self.batch][..., ::-1]))  # RGB -> BGR
            x = chunk.to(self.device).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5).div_(0.5)
            out.append(self.net(x).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)


def load_adaface(
    checkpoint: str | Path | None = None,
    models_dir: str | Path | None = None,
    device: str = "cpu",
    model: str = "adaface-ir101",
) -> AdaFaceEmbedder:
    """AdaFace from ``checkpoint``, or the catalogue's ``model`` file found in the model store.

    The depth (IR-18/34/50/100) is read from the checkpoint; shapes are checked tensor by tensor.
    """
    from iconface_video.weights import check_state_dict, find_model_file, get_model

    if checkpoint is None:
        entry = get_model(model)
        checkpoint = find_model_file(entry, entry.files[0].name, models_dir)
    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(f"{path}: AdaFace checkpoint not found")
    state = load_checkpoint_state(path)
    net = IRBackbone(layers_from_state(state))
    check_state_dict(net, state, source=path)
    net.load_state_dict(state)
    return AdaFaceEmbedder(net.to(device).eval(), torch.device(device))

"""The core's configuration: one frozen dataclass, loaded from ``configs/core/<preset>.yaml``.

Every interpretation of the IConFace paper that core-design.md §1 flags as *ours* is a field here,
so an ablation is a config change, not a code change:

- ``hybrid_concat``   degraded tokens channel-concatenated into the scene input (interpretation 1)
- ``topology``        ``one_way`` (conditions attend only to themselves → cacheable) or ``full``
- ``xattn_routes``    two-route degraded memory: ``AB`` (static + contextual), ``A`` or ``B`` only
- ``xattn_every``     block-wise degraded cross-attention every n-th block (0 = off)
- ``lora_r``          segment-routed LoRA rank for degraded/reference rows (0 = off)
- ``struct_r``        aligned low-rank structure residual rank (0 = off)
- ``id_gamma``        anchor weight = reliability · ‖f‖^γ (γ = 0: plain reliability mean)
- ``x0_residual``     the head predicts x̂0 − lq instead of x̂0 (ours, not the paper's: a zero-
                      initialised head then starts at "return the input", which is what a small
                      model trained on a CPU for hours needs; it is still x-prediction)

Tokens come from convolutional encoders and go back to pixels through a U-Net style decoder fed
with the degraded crop's features at every scale (core-v2.md): ``enc_channels[i]`` is the width
at scale 1/2**(i+1) (the convolutions start after a 2x2 pixel unshuffle), so the token stride is
``2**(len(enc_channels) + 1)`` and any square crop whose side is a multiple of the stride in
[min_side, max_side] can be restored by one checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iconface_video.config_files import config_from_dict, find_config, load_config_file

CONFIG_VERSION = 2
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "core"

TOPOLOGIES = ("one_way", "full")
XATTN_ROUTES = ("AB", "A", "B")
TEMPLATES = ("arcface", "ffhq")
ID_ENCODERS = {"dlib": 128, "arcface": 512, "adaface": 512, "proxy": 128}  # name -> feature dim (proxy: any)


@dataclass(frozen=True)
class CoreConfig:
    """All sizes and switches of one IConFace core.

    Defaults are the ``cpu`` preset's sizes with the weight-free ``proxy`` identity encoder (for
    tests); the shipped presets are the YAML files in ``configs/core/`` (``cpu``, ``gpu``).
    """

    name: str = "cpu"
    # Crops and tokens.
    crop_size: int = 128  # R: the aligned crop side the core trains at (inference: any allowed side)
    ref_size: int = 64  # Rr: reference crops are resized to this side before encoding
    min_side: int = 96  # smallest crop side accepted at inference
    max_side: int = 512  # largest crop side accepted at inference (what it was trained at is in the checkpoint)
    enc_channels: tuple[int, ...] = (32, 48, 64)  # conv width per scale from 1/2 down; stride = 2**(len+1)
    enc_blocks: tuple[int, ...] = (1, 1, 2)  # NAF blocks per scale in the degraded/reference encoder
    dec_blocks: tuple[int, ...] = (1, 1, 1)  # NAF blocks per scale in the decoder
    template: str = "arcface"  # the alignment template the crops must follow (faces/align.py)
    # Width and depth.
    dim: int = 128
    heads: int = 4
    n_dual: int = 2
    n_single: int = 4
    mlp_ratio: int = 3  # SwiGLU hidden = mlp_ratio * dim
    rope_theta: float = 2000.0
    # Structure pathway (core-design §5.6 a–e).
    hybrid_concat: bool = True
    lora_r: int = 8
    struct_r: int = 16
    xattn_every: int = 1
    xattn_routes: str = "AB"
    topology: str = "one_way"
    # Identity pathway (§5.7).
    id_encoder: str = "proxy"
    id_dim: int = 128
    id_gamma: float = 1.0
    id_norm_min: float = 0.0
    # Objective and sampling (§5.9–5.10).
    x0_residual: bool = True
    t_mu: float = 0.0  # logit-normal mean of training times
    time_shift: float = 1.0  # FLUX-style shift of the sampling schedule (1 = linear)
    t_min_velocity: float = 0.05  # v̂ = (x_t - x̂0) / max(t, t_min_velocity)
    # Largest time the sampler queries the network at. Logit-normal training times almost never
    # exceed it (P(t > 0.95) = 0.2 % at t_mu 0), and the network extrapolates badly at t = 1:
    # the embedded checkpoint's x̂0 from pure noise was 20.0 dB at t = 1 vs 25.9 dB at t = 0.95.
    t_max: float = 0.95

    def __post_init__(self) -> None:
        problems = []
        if not (len(self.enc_channels) == len(self.enc_blocks) == len(self.dec_blocks) >= 1):
            problems.append("enc_channels, enc_blocks and dec_blocks need the same length (>= 1)")
        elif any(s % self.stride for s in (self.crop_size, self.ref_size, self.min_side, self.max_side)):
            problems.append(f"crop_size, ref_size, min_side and max_side must be multiples of the token stride {self.stride}")
        elif not self.min_side <= self.crop_size <= self.max_side:
            problems.append(f"crop_size {self.crop_size} must lie in [min_side {self.min_side}, max_side {self.max_side}]")
        if self.dim % self.heads:
            problems.append(f"dim {self.dim} must be a multiple of heads {self.heads}")
        elif (self.dim // self.heads) % 8:
            problems.append(f"head dim {self.dim // self.heads} must be a multiple of 8 (RoPE split)")
        if self.topology not in TOPOLOGIES:
            problems.append(f"topology {self.topology!r} not in {TOPOLOGIES}")
        if self.xattn_routes not in XATTN_ROUTES:
            problems.append(f"xattn_routes {self.xattn_routes!r} not in {XATTN_ROUTES}")
        if self.template not in TEMPLATES:
            problems.append(f"template {self.template!r} not in {TEMPLATES}")
        if self.id_encoder not in ID_ENCODERS:
            problems.append(f"id_encoder {self.id_encoder!r} not in {tuple(ID_ENCODERS)}")
        elif self.id_encoder != "proxy" and self.id_dim != ID_ENCODERS[self.id_encoder]:
            problems.append(f"id_encoder {self.id_encoder} gives {ID_ENCODERS[self.id_encoder]}-d features, not id_dim {self.id_dim}")
        if problems:
            raise ValueError("bad core config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def stride(self) -> int:
        """Crop pixels per token side."""
        return 2 ** (len(self.enc_channels) + 1)

    @property
    def grid(self) -> int:
        """Scene (and degraded) tokens per side at the training crop size."""
        return self.crop_size // self.stride

    @property
    def ref_grid(self) -> int:
        return self.ref_size // self.stride

    def check_side(self, side: int) -> None:
        """ValueError unless crops of ``side`` pixels can be restored."""
        if side % self.stride or not self.min_side <= side <= self.max_side:
            raise ValueError(f"crop side {side} must be a multiple of {self.stride} in [{self.min_side}, {self.max_side}]")

    @property
    def n_blocks(self) -> int:
        return self.n_dual + self.n_single

    def has_xattn(self, block: int) -> bool:
        """Whether block ``block`` (0-based over dual then single blocks) has degraded cross-attention."""
        return self.xattn_every > 0 and (block + 1) % self.xattn_every == 0

    def to_dict(self) -> dict[str, Any]:
        # Lists, not tuples: the dict is what YAML and JSON sidecars hold, and compares equal to them.
        return {"version": CONFIG_VERSION, **{k: list(v) if isinstance(v, tuple) else v
                                              for k, v in dataclasses.asdict(self).items()}}

    def replace(self, **changes: Any) -> CoreConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoreConfig:
        """Build from a dict (YAML or checkpoint sidecar); unknown keys are an error, not ignored."""
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"core config version {version} is not supported (expected {CONFIG_VERSION})")
        return config_from_dict(cls, data, what="core config")


def load_config(path_or_preset: str | Path) -> CoreConfig:
    """Load a YAML/JSON config file, or a preset name (``cpu``, ``gpu``) from configs/core/."""
    path = find_config(path_or_preset, CONFIG_DIR, what="core config")
    return load_config_file(path, CoreConfig.from_dict, what="core config")

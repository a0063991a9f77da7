"""The identity pathway (core-design §5.7): references → one global anchor per track.

Per reference k of a track: raw (unnormalised) identity feature f_k, reliability r_k ∈ [0, 1].

    n_k = ‖f_k‖,  u_k = f_k / n_k
    keep_k = r_k > 0 ∧ n_k > n_min
    w_k = keep_k · r_k · n_k^γ / Σ_j keep_j · r_j · n_j^γ          (γ = 1: "norm-weighted")
    a = Σ_k w_k u_k,  agree = ‖a‖ ∈ (0, 1],  â = a / ‖a‖
    z_id = tanh(g) · MLP([â, agree, log1p(Σ_k w_k n_k)])            (g zero-initialised)
    z_id = 0 exactly when a track has no kept reference

``agree`` says how consistent the references are, the weighted norm how trustworthy. z_id is
added to the scene tokens' conditioning only; it never enters keys/values or the degraded memory.
The anchor is computed once per *track*, so every frame of the track gets the identical anchor.

Encoders: ``ProxyIdEncoder`` is a tiny frozen conv net for tests and CI (its weights live in the
core checkpoint, so no file is needed); ``dlib`` (the pipeline's embedded default, 128-d: dlib's
network ported to PyTorch, ``faces/dlib_resnet.py``, run on the restorer's device), ``arcface``
and ``adaface`` (512-d, user-supplied weights) come from ``iconface_video.faces.embed`` through
``load_id_encoder`` (which re-aligns the core's crops to ArcFace-112 first for those two).
"""

from __future__ import annotations

import os

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IdEncoderFn = Callable[[torch.Tensor], torch.Tensor]  # float[N, 3, S, S] in [0, 1] → float[N, id_dim]


class ProxyIdEncoder(nn.Module):
    """Tiny frozen conv encoder (≈ 32 k params at id_dim 128): float[N, 3, S, S] in [0, 1] → float[N, id_dim].

    Random-initialised and never trained: its features only need to be a deterministic function
    of the pixels, so tests and CI can exercise the whole identity pathway without weights.
    """

    def __init__(self, id_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, id_dim),
        )
        self.requires_grad_(False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(crops * 2 - 1)


@dataclass(frozen=True, eq=False)
class WeightedIdentity:
    """Per-track aggregate of reference features (all float32 over n_tracks unless noted)."""

    direction: torch.Tensor  # float[n_tracks, id_dim]  â, unit (0 where no kept reference)
    agree: torch.Tensor  # ‖Σ w u‖ ∈ [0, 1]
    norm: torch.Tensor  # Σ w n
    count: torch.Tensor  # int64: kept references

    @property
    def has(self) -> torch.Tensor:
        return self.count > 0


def weighted_identity(
    feat: torch.Tensor, reliability: torch.Tensor, owner: torch.Tensor, n_tracks: int,
    gamma: float = 1.0, norm_min: float = 0.0,
) -> WeightedIdentity:
    """Aggregate raw features float[N, d] with reliabilities float[N] into per-track anchors.

    owner: int64[N] track index of each reference. A reference counts when its reliability is > 0
    and its feature norm exceeds ``norm_min``; its weight is reliability · norm^γ (module docstring).
    """
    feat = feat.float()
    norm = feat.norm(dim=1)
    unit = feat / norm.clamp_min(1e-8)[:, None]
    keep = (reliability > 0) & (norm > norm_min)
    raw_w = torch.where(keep, reliability.float() * norm.clamp_min(1e-8) ** gamma, 0.0)
    total = torch.zeros(n_tracks, device=feat.device).index_add(0, owner, raw_w)
    count = torch.zeros(n_tracks, dtype=torch.int64, device=feat.device).index_add(0, owner, keep.long())
    w = raw_w / total[owner].clamp_min(1e-12)
    resultant = torch.zeros(n_tracks, feat.shape[1], device=feat.device).index_add(0, owner, w[:, None] * unit)
    agree = resultant.norm(dim=1)
    return WeightedIdentity(
        direction=resultant / agree.clamp_min(1e-8)[:, None],
        agree=agree,
        norm=torch.zeros(n_tracks, device=feat.device).index_add(0, owner, w * norm),
        count=count,
    )


class IdentityAnchor(nn.Module):
    """Weighted identity aggregate → gated MLP → z_id ``float[n_tracks, dim]`` (0 without refs)."""

    def __init__(self, id_dim: int, dim: int, gamma: float = 1.0, norm_min: float = 0.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.norm_min = norm_min
        self.mlp = nn.Sequential(nn.Linear(id_dim + 2, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(
        self, feat: torch.Tensor, reliability: torch.Tensor, owner: torch.Tensor, n_tracks: int
    ) -> tuple[torch.Tensor, WeightedIdentity]:
        """feat: float[N, id_dim] raw features; reliability: float[N]; owner: int64[N] track index."""
        agg = weighted_identity(feat, reliability, owner, n_tracks, self.gamma, self.norm_min)
        inp = torch.cat([agg.direction, agg.agree[:, None], torch.log1p(agg.norm)[:, None]], dim=1)
        z = torch.tanh(self.gate) * self.mlp(inp)
        return torch.where(agg.has[:, None], z, torch.zeros_like(z)), agg


def to_arcface112(crops: torch.Tensor, template_name: str) -> torch.Tensor:
    """float[N, 3, S, S] crops aligned to ``template_name`` at S → float[N, 3, 112, 112] ArcFace-aligned.

    The identity encoders take ArcFace-112 crops; a fixed similarity between the two templates
    re-aligns without landmarks (for FFHQ crops: scale ≈ 0.29, no rotation; core-design §3).
    """
    from iconface_video.faces.align import fit_similarity, template, warp_faces

    size = crops.shape[-1]
    if template_name == "arcface" and size % 112 == 0:
        return crops if size == 112 else F.interpolate(crops, size=(112, 112), mode="bilinear", antialias=True)
    src = torch.from_numpy(template(template_name, size))[None]
    M = fit_similarity(src, torch.from_numpy(template("arcface", 112))).expand(crops.shape[0], 2, 3)
    return warp_faces(crops, M.to(crops.device), 112)


def load_id_encoder(name: str, template_name: str, device: str | torch.device | None = None,
                    models_dir: str | os.PathLike | None = None) -> IdEncoderFn:
    """The pipeline's identity encoder ``name`` (``dlib``, ``arcface`` or ``adaface``) on core crops.

    The returned function maps float[N, 3, S, S] RGB in [0, 1] (any device), aligned to
    ``template_name``, to unnormalised float32[N, id_dim] features on ``device`` (the CPU when
    None), without gradients. ``dlib`` runs its PyTorch port on ``device``, warping the crops
    straight to its chip (``faces.dlib_resnet.DlibIdentity``; use that class for losses);
    ``arcface`` and ``adaface`` re-align to ArcFace-112 and run ``faces.embed``'s
    ``embed_aligned112`` on the CPU. ``proxy`` lives inside the model instead.
    """
    device = torch.device("cpu" if device is None else device)
    if name == "dlib":
        from iconface_video.faces.dlib_resnet import load_dlib_identity

        identity = load_dlib_identity(models_dir, device=device)

        @torch.no_grad()
        def encode_dlib(crops: torch.Tensor) -> torch.Tensor:
            # float32 even inside the restorer's autocast: the anchor is computed once per track.
            with torch.autocast(device.type, enabled=False):
                return identity.embed(crops.to(device, torch.float32).clamp(0, 1), template_name)

        return encode_dlib
    # Imported here: it pulls in onnxruntime, which the proxy path never needs.
    from iconface_video.faces.embed import load_embedder

    embedder = load_embedder(name, models_dir)

    def encode(crops: torch.Tensor) -> torch.Tensor:
        aligned = to_arcface112(crops.detach().float().cpu().clamp(0, 1), template_name)
        images = (aligned * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return torch.as_tensor(embedder.embed_aligned112(images), dtype=torch.float32).to(device)

    return encode

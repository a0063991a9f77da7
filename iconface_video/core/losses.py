"""Training objective (core-design §5.9): flow matching with x-prediction, + identity hooks.

Path x_t = (1 − t)·x0 + t·ε (t = 1 is noise). The network predicts x̂0; the loss is on velocity:
v = ε − x0, v̂ = (x_t − x̂0) / max(t, t_min), L_fm = mean((v̂ − v)²) (JiT-style x-pred, v-loss).

Identity terms need a *differentiable* identity encoder ``encoder(crops float[N, 3, R, R] in
[0, 1]) → float[N, d]`` in the same feature space as the batch's ``id_feat`` (e.g. AdaFace on the
fixed 112 warp); without one they are skipped. Both are weighted by w(t) = (1 − t)² (ReF-LDM:
one-step predictions from very noisy inputs are out of distribution for face encoders):

- ``id``:  w(t)·(1 − cos(E(x̂0), E(x0)))
- ``ref``: w(t)·max(0, m − cos(E(x̂0), â)), only for crops whose track has a valid anchor â; the
  hinge caps how far the model is paid to copy the reference identity.

Usage by a training loop::

    batch = TrainBatch(lq=..., hq=..., track=..., refs=..., ref_track=..., ref_valid=...,
                       t=sample_t(B, config.t_mu), noise=torch.randn_like(hq), id_feat=...)
    losses = model.train_loss(batch)             # or compute_losses(model, batch, encoder, weights)
    losses["total"].backward()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .batch import TrainBatch
from .identity import weighted_identity

if TYPE_CHECKING:
    from .model import IConFaceCore

DiffIdEncoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossWeights:
    fm: float = 1.0
    id: float = 0.1
    ref: float = 0.05
    ref_margin: float = 0.5


def noisy_input(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t)·x0 + t·ε for float[B, 3, R, R] images and float[B] times."""
    tt = t.view(-1, 1, 1, 1).to(x0.dtype)
    return (1 - tt) * x0 + tt * noise


def velocity_loss(x0_hat: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                  x_t: torch.Tensor, t_min: float = 0.05) -> torch.Tensor:
    """Scalar mean((v̂ − v)²), v̂ = (x_t − x̂0)/max(t, t_min), v = ε − x0."""
    tt = t.view(-1, 1, 1, 1).clamp_min(t_min).to(x0_hat.dtype)
    v_hat = (x_t - x0_hat) / tt
    return F.mse_loss(v_hat.float(), (noise - x0).float())


def time_weight(t: torch.Tensor) -> torch.Tensor:
    """float[B] w(t) = (1 − t)²."""
    return (1 - t.float()) ** 2


def identity_loss(x0_hat: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, encoder: DiffIdEncoder) -> torch.Tensor:
    """Scalar mean over the batch of w(t)·(1 − cos(E(x̂0), E(x0))); images in [-1, 1]."""
    with torch.no_grad():
        target = encoder((x0 + 1) / 2)
    cos = F.cosine_similarity(encoder((x0_hat + 1) / 2).float(), target.float(), dim=1)
    return (time_weight(t) * (1 - cos)).mean()


def reference_hinge(x0_hat: torch.Tensor, direction: torch.Tensor, has: torch.Tensor, t: torch.Tensor,
                    encoder: DiffIdEncoder, margin: float) -> torch.Tensor:
    """Scalar mean of w(t)·max(0, m − cos(E(x̂0), â)) over crops with an anchor (0 if none).

    direction: float[B, d] per-crop anchor direction â; has: bool[B].
    """
    if not bool(has.any()):
        return x0_hat.new_zeros(())
    cos = F.cosine_similarity(encoder((x0_hat[has] + 1) / 2).float(), direction[has].float(), dim=1)
    return (time_weight(t[has]) * (margin - cos).clamp_min(0)).mean()


def compute_losses(model: IConFaceCore, batch: TrainBatch, encoder: DiffIdEncoder | None = None,
                   weights: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """One training forward: {"fm", ["id", "ref"], "total"} scalar tensors (total is weighted)."""
    cond = model.batch_conditions(batch)
    x_t = noisy_input(batch.hq, batch.noise, batch.t)
    x0_hat = model(x_t, batch.t, cond)
    out = {"fm": velocity_loss(x0_hat, batch.hq, batch.noise, batch.t, x_t, model.config.t_min_velocity)}
    total = weights.fm * out["fm"]
    if encoder is not None:
        out["id"] = identity_loss(x0_hat, batch.hq, batch.t, encoder)
        total = total + weights.id * out["id"]
        if batch.id_feat is not None and batch.ref_track.numel():
            lay = cond.layout
            pos = torch.searchsorted(lay.tracks, batch.ref_track).clamp_max(len(lay.tracks) - 1)
            weight = torch.where(lay.tracks[pos] == batch.ref_track, batch.anchor_weight(), 0.0)
            c = model.config
            agg = weighted_identity(batch.id_feat, weight, pos, len(lay.tracks), c.id_gamma, c.id_norm_min)
            out["ref"] = reference_hinge(x0_hat, agg.direction[lay.crop_track], agg.has[lay.crop_track],
                                         batch.t, encoder, weights.ref_margin)
            total = total + weights.ref * out["ref"]
    out["total"] = total
    return out

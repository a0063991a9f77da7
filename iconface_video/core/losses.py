"""Training objective (core-design §5.9 as amended by core-v2.md §5): flow matching with
x-prediction, pixel terms on x̂0, and identity terms.

Path x_t = (1 − t)·x0 + t·ε (t = 1 is noise). The network predicts x̂0; the flow-matching loss is
on velocity: v = ε − x0, v̂ = (x_t − x̂0) / max(t, t_min), L_fm = mean((v̂ − v)²) (JiT-style).

Pixel terms on x̂0 (core-v2 §5): ``l1`` = mean|x̂0 − x0| and ``grad`` = mean|∇x̂0 − ∇x0| (finite
differences: it pays for edges where they are, which plain L1 barely rewards). They are not
time-weighted: the shipped sampler takes one step at ``t_max``, so x̂0 at high t *is* the output.

Identity terms need a *differentiable* identity encoder ``encoder(crops float[N, 3, R, R] in
[0, 1]) → float[N, d]`` in the same feature space as the batch's ``id_feat`` (the PyTorch dlib
network); without one they are skipped:

- ``id``:   1 − cos(E(x̂0), E(x0))
- ``feat``: mean |F_l(x̂0) − F_l(x0)| over the encoder's intermediate activations (a face-specific
  perceptual loss; needs ``features``)
- ``ref``:  max(0, m − cos(E(x̂0), â)), only for crops whose track has a valid anchor â; the hinge
  caps how far the model is paid to copy the reference identity.

Usage by a training loop::

    batch = TrainBatch(lq=..., hq=..., track=..., refs=..., ref_track=..., ref_valid=...,
                       t=sample_t(B, config.t_mu), noise=torch.randn_like(hq), id_feat=...)
    losses = compute_losses(model, batch, identity, weights)
    losses["total"].backward()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from .batch import TrainBatch
from .identity import weighted_identity

if TYPE_CHECKING:
    from .model import IConFaceCore

DiffIdEncoder = Callable[[torch.Tensor], torch.Tensor]


class IdentityNet(Protocol):
    """A differentiable identity network on core crops float[N, 3, R, R] in [0, 1]."""

    def __call__(self, crops: torch.Tensor) -> torch.Tensor: ...  # float[N, d] descriptors

    def features(self, crops: torch.Tensor) -> list[torch.Tensor]: ...  # intermediate activations


@dataclass(frozen=True)
class LossWeights:
    fm: float = 1.0
    l1: float = 1.0
    grad: float = 0.5
    id: float = 0.1
    feat: float = 0.0
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


def gradient_l1(x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Scalar mean |∇x̂0 − ∇x0| over horizontal and vertical finite differences."""
    d = (x0_hat - x0).float()
    return 0.5 * ((d[..., :, 1:] - d[..., :, :-1]).abs().mean() + (d[..., 1:, :] - d[..., :-1, :]).abs().mean())


def identity_loss(e_hat: torch.Tensor, x0: torch.Tensor, encoder: DiffIdEncoder) -> torch.Tensor:
    """Scalar mean over the batch of 1 − cos(E(x̂0), E(x0)); e_hat = E(x̂0) float[B, d], x0 in [-1, 1]."""
    with torch.no_grad():
        target = encoder((x0 + 1) / 2)
    return (1 - F.cosine_similarity(e_hat.float(), target.float(), dim=1)).mean()


def feature_loss(x0_hat: torch.Tensor, x0: torch.Tensor, identity: IdentityNet) -> torch.Tensor:
    """Scalar mean over layers of mean |F_l(x̂0) − F_l(x0)| (identity-network activations)."""
    with torch.no_grad():
        target = identity.features((x0 + 1) / 2)
    mine = identity.features((x0_hat + 1) / 2)
    return torch.stack([(a.float() - b.float()).abs().mean() for a, b in zip(mine, target)]).mean()


def reference_hinge(e_hat: torch.Tensor, direction: torch.Tensor, has: torch.Tensor, margin: float) -> torch.Tensor:
    """Scalar mean of max(0, m − cos(E(x̂0), â)) over crops with an anchor (0 if none).

    e_hat: float[B, d] = E(x̂0); direction: float[B, d] per-crop anchor direction â; has: bool[B].
    """
    if not bool(has.any()):
        return e_hat.new_zeros(())
    cos = F.cosine_similarity(e_hat[has].float(), direction[has].float(), dim=1)
    return (margin - cos).clamp_min(0).mean()


def compute_losses(model: IConFaceCore, batch: TrainBatch, encoder: IdentityNet | None = None,
                   weights: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """One training forward: {"fm", "l1", "grad", ["id", "feat", "ref"], "total"} scalar tensors
    (total is weighted; a term whose weight is 0 is not computed)."""
    cond = model.batch_conditions(batch)
    x_t = noisy_input(batch.hq, batch.noise, batch.t)
    x0_hat = model(x_t, batch.t, cond)
    out = {"fm": velocity_loss(x0_hat, batch.hq, batch.noise, batch.t, x_t, model.config.t_min_velocity),
           "l1": (x0_hat.float() - batch.hq.float()).abs().mean(),
           "grad": gradient_l1(x0_hat, batch.hq)}
    total = weights.fm * out["fm"] + weights.l1 * out["l1"] + weights.grad * out["grad"]
    has_refs = batch.id_feat is not None and batch.ref_track.numel() > 0
    # E(x̂0) once, shared by the identity and reference terms.
    e_hat = encoder((x0_hat + 1) / 2) if encoder is not None and (weights.id or (weights.ref and has_refs)) else None
    if e_hat is not None and weights.id:
        out["id"] = identity_loss(e_hat, batch.hq, encoder)
        total = total + weights.id * out["id"]
    if encoder is not None and weights.feat:
        out["feat"] = feature_loss(x0_hat, batch.hq, encoder)
        total = total + weights.feat * out["feat"]
    if e_hat is not None and weights.ref:
        out["ref"] = e_hat.new_zeros(())  # every step logs the same terms, with or without references
        if has_refs:
            lay = cond.layout
            pos = torch.searchsorted(lay.tracks, batch.ref_track).clamp_max(len(lay.tracks) - 1)
            weight = torch.where(lay.tracks[pos] == batch.ref_track, batch.anchor_weight(), 0.0)
            c = model.config
            agg = weighted_identity(batch.id_feat, weight, pos, len(lay.tracks), c.id_gamma, c.id_norm_min)
            out["ref"] = reference_hinge(e_hat, agg.direction[lay.crop_track], agg.has[lay.crop_track],
                                         weights.ref_margin)
        total = total + weights.ref * out["ref"]
    out["total"] = total
    return out

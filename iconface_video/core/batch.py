"""The training batch contract (core-design §5.2) and the training-time sampling of t.

References are per *track*: a clip of one person with 4 references carries 4 reference crops,
not one set per frame. In training each sample is usually its own track. Pixel tensors are in
[-1, 1] here (the ``Restorer`` converts from [0, 1]).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class TrainBatch:
    """One training batch.

    lq, hq, noise: float[B, 3, R, R] (lq/hq in [-1, 1]); track: int64[B]; t: float[B] in (0, 1]
    (t = 1 is pure noise). refs: float[N, 3, Rr, Rr] in [-1, 1] (N may be 0; any square size, resized
    to the config's ``ref_size``); ref_track: int64[N]; ref_valid: bool[N] (invalid ⇒ dropped from
    every path). Optional: id_feat float[N, id_dim] raw identity features (needed unless the config's
    encoder is ``proxy``); ref_weight float[N] reliability (default 1); ref_in_tokens / ref_in_anchor
    bool[N] for the independent path dropout of §5.8 (default: ``ref_valid``).
    """

    lq: torch.Tensor
    hq: torch.Tensor
    track: torch.Tensor
    refs: torch.Tensor
    ref_track: torch.Tensor
    ref_valid: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    id_feat: torch.Tensor | None = None
    ref_weight: torch.Tensor | None = None
    ref_in_tokens: torch.Tensor | None = None
    ref_in_anchor: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TrainBatch:
        moved = {f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                 for f in dataclasses.fields(self)}
        return TrainBatch(**moved)

    def token_mask(self) -> torch.Tensor:
        """bool[N]: references that enter the sequence as tokens."""
        mask = self.ref_valid if self.ref_in_tokens is None else self.ref_valid & self.ref_in_tokens
        return mask & (self.reliability() > 0)

    def anchor_weight(self) -> torch.Tensor:
        """float[N]: reliability of each reference in the identity anchor (0 = not in it)."""
        mask = self.ref_valid if self.ref_in_anchor is None else self.ref_valid & self.ref_in_anchor
        return torch.where(mask, self.reliability(), 0.0)

    def reliability(self) -> torch.Tensor:
        if self.ref_weight is None:
            return torch.ones(self.ref_track.shape[0], device=self.ref_track.device)
        return self.ref_weight.float()


def sample_t(n: int, mu: float = 0.0, generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """float[n] logit-normal(mu, 1) training times in (0, 1) (more mass on noisy levels as mu grows)."""
    return torch.sigmoid(torch.randn(n, generator=generator) + mu).to(device)


def training_times(n: int, core_config, p_t_max: float, generator: torch.Generator) -> torch.Tensor:
    """float[n] training times: a share ``p_t_max`` exactly at ``core_config.t_max`` (where the
    one-step sampler queries the network, so the shipped output is trained directly), the rest
    logit-normal(``core_config.t_mu``) capped at ``t_max``."""
    t = sample_t(n, core_config.t_mu, generator=generator).clamp_max(core_config.t_max)
    at_max = torch.rand(n, generator=generator) < p_t_max
    return torch.where(at_max, torch.full_like(t, core_config.t_max), t)

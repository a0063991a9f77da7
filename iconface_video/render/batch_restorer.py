"""Batched restoration of aligned crops grouped by track, each track with its own references.

The core computes the identity anchor from a track's references and draws one noise sample per
track, so every frame of a track is generated from the same anchor and the same noise: the main
defence against per-frame flicker of generated detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from iconface_video.render.references import TrackReferences


def pack_batch(
    tracks: np.ndarray, references: Mapping[int, TrackReferences], ref_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """References of the tracks present in a batch, in the core's flat layout.

    Returns ``refs float32[N, 3, r, r]``, ``ref_track int64[N]``, ``ref_weight float32[N]``,
    each track's references once, tracks in ascending order, and their precomputed identity
    features ``float32[N, D]`` (None unless every track's references carry them).
    """
    crops, owners, weights, features = [], [], [], []
    for track in sorted(set(int(t) for t in tracks)):
        refs = references.get(track)
        if refs is None or len(refs.crops) == 0:
            continue
        crops.append(refs.crops)
        owners.append(torch.full((len(refs.crops),), track, dtype=torch.int64))
        weights.append(refs.weights.to(torch.float32))
        features.append(refs.features)
    if not crops:
        return torch.zeros(0, 3, ref_size, ref_size), torch.zeros(0, dtype=torch.int64), torch.zeros(0), None
    feats = torch.cat(features) if all(f is not None for f in features) else None
    return torch.cat(crops), torch.cat(owners), torch.cat(weights), feats


@dataclass(frozen=True)
class BatchRestorer:
    """Restores batches of aligned crops with their tracks' references.

    ``restorer`` is an ``iconface_video.core.restorer.Restorer``; ``seed`` and ``steps`` go to
    its sampler. The core draws noise per *track* from ``seed``, so a crop's result depends on
    its track and its own pixels, not on which other crops share its batch: a resumed render
    batches differently and must still produce the same frames.
    """

    restorer: object
    references: Mapping[int, TrackReferences]
    seed: int = 0
    steps: int | None = None  # None: the restorer's default

    def __call__(self, lq: torch.Tensor, tracks: np.ndarray) -> torch.Tensor:
        """Restored crops ``float32[B, 3, R, R]`` in [0, 1] for ``lq`` ``float32[B, 3, R, R]``."""
        if lq.shape[0] == 0:
            return lq
        device = lq.device
        refs, ref_track, ref_weight, ref_feat = pack_batch(tracks, self.references, self.restorer.ref_size)
        output = self.restorer.restore(
            lq,
            torch.as_tensor(np.asarray(tracks), dtype=torch.int64, device=device),
            refs.to(device) if len(refs) else None,
            ref_track.to(device),
            ref_weight.to(device),
            ref_feat=ref_feat,
            seed=self.seed,
            steps=self.steps,
        )
        return output.crops.to(torch.float32).clamp(0, 1)

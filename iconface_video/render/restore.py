"""Batched restoration of aligned crops grouped by track, each track with its own references.

References belong to a *track* (all tracks of one identity share the identity's references),
so a batch of 64 crops of one person carries that person's K reference crops once, not 64
times. The core computes the identity anchor from them and draws one noise sample per track,
so every frame of a track is generated from the same anchor and the same noise: the main
defence against per-frame flicker of generated detail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from iconface_video.faces.align import estimate_affine, images_to_tensor, warp_faces


@dataclass(frozen=True, eq=False)
class TrackReferences:
    """A track's references for the core: ``crops`` ``float32[K, 3, r, r]`` aligned to the core's
    template at its reference size, ``weights`` ``float32[K]`` reliabilities (0 = invalid),
    ``sources`` a short description of each (``"frame 120"`` or a photo path) for the report;
    ``features`` ``float32[K, D]`` their identity features when computed ahead (``with_features``);
    ``id_crops`` ``uint8[K, 112, 112, 3]`` the same faces ArcFace-aligned at 112 from the full
    pictures (the identity guard's anchor: a reference crop at the core's small reference size
    would blur the identity features)."""

    crops: torch.Tensor
    weights: torch.Tensor
    sources: tuple[str, ...]
    features: torch.Tensor | None = None
    id_crops: np.ndarray | None = None


def make_references(images: list[np.ndarray], kps5: np.ndarray, template: str, size: int, weights: torch.Tensor,
                    sources: tuple[str, ...]) -> TrackReferences:
    """References for the core (``template`` at ``size``) and for the identity guard (ArcFace 112)
    from loose RGB ``uint8`` pictures and their ``kps5`` ``float[K, 5, 2]``."""
    from iconface_video.faces.align import tensor_to_images

    id_crops = tensor_to_images(align_references(images, kps5, "arcface", 112))
    return TrackReferences(align_references(images, kps5, template, size), weights, sources, id_crops=id_crops)


def align_references(images: list[np.ndarray], kps5: np.ndarray, template: str, size: int) -> torch.Tensor:
    """Aligned reference crops ``float32[K, 3, size, size]`` from loose RGB ``uint8`` crops.

    ``kps5`` is ``float[K, 5, 2]`` in each image's own pixels. Images differ in size, so each
    is warped on its own; K is small (a handful per identity) and this runs once per render.
    """
    crops = []
    for image, points in zip(images, np.asarray(kps5, dtype=np.float32).reshape(-1, 5, 2)):
        M = estimate_affine(points[None], template, size)
        crops.append(warp_faces(images_to_tensor(image), torch.from_numpy(M), size))
    if not crops:
        return torch.zeros(0, 3, size, size)
    return torch.cat(crops)


def with_features(refs: TrackReferences, restorer) -> TrackReferences:
    """``refs`` with their identity features computed once (cores with an external encoder).

    A core whose identity encoder is external (dlib, ArcFace, AdaFace) would otherwise run it
    on the same references in every batch; its ``proxy`` encoder is part of the network.
    """
    config = getattr(restorer, "config", None)  # stand-in restorers (tests) have none
    if config is None or config.id_encoder == "proxy" or len(refs.crops) == 0:
        return refs
    from iconface_video.core.identity import load_id_encoder

    encode = load_id_encoder(config.id_encoder, config.template)
    return dataclasses.replace(refs, features=encode(refs.crops).to(torch.float32))


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

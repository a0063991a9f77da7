"""References per track for the core: an identity's harvested (and photo) references, aligned.

References belong to a *track* (all tracks of one identity share the identity's references),
so a batch of 64 crops of one person carries that person's K reference crops once, not 64
times. Photos given with ``--refs`` were made references by the analysis; the render reads only
the analysis file's references.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from iconface_video.analysis.schema import Analysis
from iconface_video.faces.align import estimate_affine, images_to_tensor, tensor_to_images, warp_faces

if TYPE_CHECKING:
    from iconface_video.core.restorer import Restorer


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


def with_features(refs: TrackReferences, restorer: Restorer) -> TrackReferences:
    """``refs`` with their identity features computed once (cores with an external encoder).

    A core whose identity encoder is external (dlib, ArcFace, AdaFace) would otherwise run it
    on the same references in every batch; its ``proxy`` encoder is part of the network.
    """
    config = getattr(restorer, "config", None)  # stand-in restorers (tests) have none
    if config is None or config.id_encoder == "proxy" or len(refs.crops) == 0:
        return refs
    from iconface_video.core.identity import load_id_encoder

    encode = load_id_encoder(config.id_encoder, config.template, models_dir=getattr(restorer, "models_dir", None))
    return dataclasses.replace(refs, features=encode(refs.crops).to(torch.float32))


def video_references(analysis: Analysis, identity: int, template: str, size: int) -> TrackReferences | None:
    """An identity's harvested references, aligned for the core; None when it has none."""
    refs = analysis.references_for(identity)
    if not refs:
        return None
    weights = torch.tensor([r.reference.reliability for r in refs], dtype=torch.float32)
    sources = tuple(f"frame {r.reference.frame_index}" if r.reference.frame_index >= 0 else str(r.reference.source)
                    for r in refs)
    return make_references([r.load_crop() for r in refs], np.stack([r.crop_kps5 for r in refs]), template, size,
                           weights, sources)


def identity_references(analysis: Analysis, no_refs: bool, template: str, size: int) -> dict[int, TrackReferences]:
    """References per identity from the analysis (harvested frames and the user's photos, which
    the analysis ranks first); none with ``no_refs``."""
    if no_refs:
        return {}
    by_identity: dict[int, TrackReferences] = {}
    for identity in analysis.identities:
        refs = video_references(analysis, identity.id, template, size)
        if refs is not None:
            by_identity[identity.id] = refs
    return by_identity


def per_track(analysis: Analysis, by_identity: dict[int, TrackReferences]) -> dict[int, TrackReferences]:
    """Each track gets its identity's references (an unassigned track gets none); they are the
    same objects for every track of a person, so their features are computed once per person."""
    return {t.id: by_identity[t.identity] for t in analysis.tracks if t.identity in by_identity}

"""The identity guard: a restored face must still be the person it was.

For every restored face, the identity similarity of what would be pasted (the restored crop,
colour-matched to its input as the paste-back does, at the render's strength) to the track's
*identity anchor* is compared with that of the degraded crop. The anchor is the weighted mean
of the track's reference features (reliabilities as weights); a track without references is
its own anchor, each degraded crop compared with itself. When restoration lowered the
similarity by more than ``margin``, the face's restoration is scaled down (``GAIN_STEPS``,
largest first) until it no longer does, or dropped (the face stays as it was), and counted.

Features come from an identity embedder's ``embed_aligned112`` (uint8 ArcFace-112 crops in,
``float32[N, D]`` out): two per face (degraded and restored) in one batched call, plus one per
tried step for the faces the guard acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from iconface_video.faces.align import fit_similarity, template, tensor_to_images, warp_faces
from iconface_video.render.blend import colour_correction

# Fractions of the restoration tried, largest first, on a face the guard acts on; below the
# last one the face is left as it was. Quarter steps: identity drifts roughly in proportion to
# the change, and each step costs one embedding of each flagged face.
GAIN_STEPS = (0.75, 0.5, 0.25)
_ID_SIDE = 112
# Larger crops are judged at this side (colour matching and the warp to 112 cost per pixel).
_WORK_SIDE = 128

EmbedFn = Callable[[np.ndarray], np.ndarray]  # uint8[N, 112, 112, 3] -> float32[N, D]


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows of ``float[N, D]`` scaled to unit length (cosine similarity is then a dot product)."""
    features = np.asarray(features, np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def anchor_of(features: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """A track's identity anchor ``float64[D]`` (unit length) from reference features
    ``float[K, D]`` and reliabilities ``float[K]``; None when no reference has weight > 0."""
    weights = np.asarray(weights, np.float64)
    used = weights > 0
    if not used.any():
        return None
    mean = (unit_rows(features)[used] * weights[used, None]).sum(axis=0)
    return unit_rows(mean[None])[0]


def to_id_crops(crops: torch.Tensor, points: np.ndarray) -> torch.Tensor:
    """``float32[N, 3, 112, 112]`` ArcFace-112 crops from aligned crops ``float32[N, 3, S, S]``
    whose template points are ``points`` ``float[5, 2]`` (in crop pixels)."""
    dst = torch.from_numpy(template("arcface", _ID_SIDE))
    M = fit_similarity(torch.from_numpy(np.asarray(points, np.float32))[None], dst)
    return warp_faces(crops, M.expand(len(crops), -1, -1).to(crops.device), _ID_SIDE)


def shrink(lq: torch.Tensor, restored: torch.Tensor, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Crops larger than ``_WORK_SIDE`` area-averaged down to it, with their template ``points``.

    The features are taken at 112 px anyway; shrinking first keeps the guard's cost flat in the
    crop's side and avoids aliasing in the warp to 112.
    """
    side = lq.shape[-1]
    if side <= _WORK_SIDE:
        return lq, restored, points
    scale = _WORK_SIDE / side
    small = [F.interpolate(x, size=(_WORK_SIDE, _WORK_SIDE), mode="area") for x in (lq, restored)]
    # Pixel centres: x_small + 0.5 = (x + 0.5) * scale.
    return small[0], small[1], ((np.asarray(points, np.float64) + 0.5) * scale - 0.5).astype(np.float32)


def choose_gains(before: np.ndarray, restored: np.ndarray, stepped: np.ndarray,
                 margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Per face: the fraction of the restoration to keep, and the similarity it leaves.

    ``before``/``restored`` ``float[N]``: similarity to the anchor of the degraded and the fully
    restored crop; ``stepped`` ``float[N, len(GAIN_STEPS)]``: of the crop restored by each step
    (read only where the full restoration lost more than ``margin``). Returns ``gain float[N]``
    (1: kept, a step, or 0: the face is left as it was) and ``after float[N]``.
    """
    gain = np.ones(len(before))
    after = np.asarray(restored, np.float64).copy()
    for i in np.flatnonzero(before - restored > margin):
        ok = np.flatnonzero(before[i] - stepped[i] <= margin)
        if len(ok):
            gain[i], after[i] = GAIN_STEPS[ok[0]], stepped[i, ok[0]]
        else:
            gain[i], after[i] = 0.0, before[i]
    return gain, after


@dataclass
class TrackGuardStats:
    """What the guard saw on one track: faces checked, faces it acted on, summed similarities
    to the anchor of the degraded, the fully restored and the pasted (after the guard) crops."""

    faces: int = 0
    acted: int = 0
    before: float = 0.0
    restored: float = 0.0
    after: float = 0.0

    def add(self, before: np.ndarray, restored: np.ndarray, after: np.ndarray, gain: np.ndarray) -> None:
        self.faces += len(before)
        self.acted += int((gain < 1).sum())
        self.before += float(np.sum(before))
        self.restored += float(np.sum(restored))
        self.after += float(np.sum(after))

    def as_dict(self) -> dict[str, float | int | None]:
        """Counts and *mean* similarities (None before any face), rounded for the report."""
        mean = (lambda total: round(total / self.faces, 4)) if self.faces else (lambda total: None)
        return {"faces_checked": self.faces, "guard_acted": self.acted, "similarity_before": mean(self.before),
                "similarity_restored": mean(self.restored), "similarity_after": mean(self.after)}


@dataclass
class IdentityGuard:
    """The guard as the render engine calls it: ``guard(lq, restored, tracks) -> gain float32[B]``.

    ``embed`` maps ArcFace-112 uint8 crops to features; ``anchors`` holds each track's anchor
    (tracks without one are their own anchor); ``points(side)`` gives the render's template
    points ``float[5, 2]`` in a crop of that side; ``margin`` is the largest similarity drop
    allowed; ``strength`` the render's (the guard judges what is pasted). ``stats`` collects
    per-track counts.
    """

    embed: EmbedFn
    anchors: Mapping[int, np.ndarray]
    points: Callable[[int], np.ndarray]
    margin: float
    strength: float = 1.0
    stats: dict[int, TrackGuardStats] = field(default_factory=dict)

    def __call__(self, lq: torch.Tensor, restored: torch.Tensor, tracks: np.ndarray) -> torch.Tensor:
        """``lq``/``restored`` ``float32[B, 3, S, S]`` of one side; ``tracks`` ``int[B]``."""
        n = len(lq)
        lq, restored, points = shrink(lq, restored, self.points(lq.shape[-1]))
        lq_id = to_id_crops(lq, points)
        change_id = to_id_crops(restored + colour_correction(restored, lq) - lq, points) * self.strength
        feats = unit_rows(self.embed(tensor_to_images(torch.cat([lq_id, lq_id + change_id]))))
        anchors = np.stack([self.anchors.get(int(t), feats[i]) for i, t in enumerate(tracks)])
        before = np.einsum("nd,nd->n", feats[:n], anchors)
        full = np.einsum("nd,nd->n", feats[n:], anchors)
        stepped = np.zeros((n, len(GAIN_STEPS)))
        flagged = np.flatnonzero(before - full > self.margin)
        if len(flagged):
            rows = torch.from_numpy(flagged).to(lq_id.device)
            steps = torch.tensor(GAIN_STEPS, dtype=lq_id.dtype, device=lq_id.device).view(1, -1, 1, 1, 1)
            tried = (lq_id[rows, None] + steps * change_id[rows, None]).flatten(0, 1)
            step_feats = unit_rows(self.embed(tensor_to_images(tried))).reshape(len(flagged), len(GAIN_STEPS), -1)
            stepped[flagged] = np.einsum("nsd,nd->ns", step_feats, anchors[flagged])
        gain, after = choose_gains(before, full, stepped, self.margin)
        for track in np.unique(tracks):
            rows = np.asarray(tracks) == track
            self.stats.setdefault(int(track), TrackGuardStats()).add(before[rows], full[rows], after[rows], gain[rows])
        return torch.from_numpy(gain.astype(np.float32))


def reference_anchor(embed: EmbedFn, id_crops: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """The anchor of references ``id_crops`` ``uint8[K, 112, 112, 3]`` (ArcFace-aligned) with
    reliabilities ``weights`` ``float[K]``; None without a usable reference."""
    weights = np.asarray(weights, np.float64)
    used = weights > 0
    if not used.any():
        return None
    return anchor_of(embed(id_crops[used]), weights[used])

"""Identities: tracks of one person across shots, linked by clustering their embeddings.

Each track has one unit identity vector (the reliability-weighted mean of its detections'
embeddings). Tracks are clustered with average-linkage hierarchical clustering on cosine distance
(``scipy.cluster.hierarchy``), cut at ``max_distance``. Two tracks on screen at the same time are
two people, so such pairs get the largest distance, and a cluster that still holds such a pair is
re-cut with complete linkage (which cannot keep them together).

The threshold suits the embedded dlib 128-d encoder: on 300 labelled photos of 20 people
(``faces112``), means of 3 photos of one person have cosine >= 0.964 in 99% of pairs and means
of different people reach 0.944 at their 99th percentile (0.961 at most); track means of video
frames are tighter still. ``0.06`` (cosine 0.94) sits between the two.

Before clustering, tracks that are most likely not a person are set aside (``rejection_reason``):
a blip shorter than ``min_track_s`` (unless it fills most of a short shot), a track whose median
detector score is low, or one whose faces are implausibly small. They stay in the analysis file
as rejected tracks with the reason, so a user can promote one.

User photos (``--refs "Name=dir/"``) give a named mean vector; each name goes to the identity
whose centroid is most alike (one name per identity, Hungarian assignment), if alike enough;
otherwise the name becomes an identity of its own with only photo references.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import squareform

from iconface_video.types import Identity

NEVER = 2.0  # the largest cosine distance: "these two cannot be one person"


@dataclass(frozen=True)
class IdentifySettings:
    max_distance: float = 0.06  # cosine distance at which track clusters stop merging
    pin_similarity: float = 0.88  # a user's photos name an identity whose centroid is this alike


@dataclass(frozen=True)
class RejectSettings:
    """When a track does not become (part of) an identity. On the shared multi-shot clips real
    people's tracks have median scores >= 0.93 and eyes >= 11 px apart; a 3-detection blip had 7.8 px."""

    min_track_s: float = 0.4  # shorter tracks are blips (unless they cover half their shot)
    min_score: float = 0.9  # median detector score of the track's detections
    min_eye_px: float = 8.0  # median distance between the eyes, in stored-frame pixels


def rejection_reason(frames: np.ndarray, scores: np.ndarray, kps5: np.ndarray, detected: np.ndarray,
                     shot_frames: int, fps: float, settings: RejectSettings = RejectSettings()) -> str | None:
    """Why a track should not become a person (None: it may). ``frames`` int[N], ``scores``
    float[N], ``kps5`` float[N, 5, 2], ``detected`` bool[N] (False: interpolated), ``shot_frames``
    the length of its shot."""
    span = int(frames[-1] - frames[0] + 1)
    if span < settings.min_track_s * fps and span < 0.5 * shot_frames:
        return f"short: {span} frames ({span / fps:.2f} s) in a shot of {shot_frames}"
    score = float(np.median(scores[detected])) if detected.any() else 0.0
    if score < settings.min_score:
        return f"low score: median detector score {score:.3f} < {settings.min_score}"
    eyes = np.linalg.norm(kps5[detected, 1] - kps5[detected, 0], axis=1) if detected.any() else np.zeros(1)
    if float(np.median(eyes)) < settings.min_eye_px:
        return f"small: median eye distance {float(np.median(eyes)):.1f} px < {settings.min_eye_px}"
    return None


@dataclass(frozen=True)
class TrackSummary:
    """What clustering needs of a track: where it is and its unit embedding ``float32[D]``."""

    id: int
    shot: int
    start: int
    end: int
    embedding: np.ndarray
    weight: float = 1.0  # how much it counts towards the identity centroid (e.g. its detections)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def distance_matrix(tracks: list[TrackSummary]) -> np.ndarray:
    """Cosine distances ``float64[T, T]``; ``NEVER`` for tracks that share a frame."""
    vectors = np.stack([_unit(t.embedding) for t in tracks]).astype(np.float64)
    distance = np.clip(1.0 - vectors @ vectors.T, 0.0, NEVER)
    for i, a in enumerate(tracks):
        for j in range(i + 1, len(tracks)):
            b = tracks[j]
            if a.start <= b.end and b.start <= a.end:
                distance[i, j] = distance[j, i] = NEVER
    np.fill_diagonal(distance, 0.0)
    return distance


def _cut(distance: np.ndarray, method: str, threshold: float) -> np.ndarray:
    if len(distance) == 1:
        return np.zeros(1, int)
    tree = linkage(squareform(distance, checks=False), method=method)
    return fcluster(tree, t=threshold, criterion="distance") - 1


def cluster_tracks(tracks: list[TrackSummary], settings: IdentifySettings = IdentifySettings()) -> np.ndarray:
    """Cluster label ``int[T]`` per track (labels numbered from 0 by first appearance)."""
    if not tracks:
        return np.zeros(0, int)
    distance = distance_matrix(tracks)
    labels = _cut(distance, "average", settings.max_distance)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        block = distance[np.ix_(members, members)]
        if (block >= NEVER).any():  # two people on screen together: split with complete linkage
            sub = _cut(block, "complete", settings.max_distance)
            labels[members] = labels.max() + 1 + sub
    # Renumber by first appearance so identity 0 is the first face seen.
    first: dict[int, int] = {}
    for index in np.argsort([t.start for t in tracks], kind="stable"):
        first.setdefault(int(labels[index]), len(first))
    return np.array([first[int(label)] for label in labels], int)


def build_identities(tracks: list[TrackSummary], settings: IdentifySettings = IdentifySettings()) -> tuple[list[Identity], dict[int, int]]:
    """Identities (with unit centroids) and the map track id -> identity id."""
    labels = cluster_tracks(tracks, settings)
    identities, owner = [], {}
    for label in range(int(labels.max()) + 1 if len(labels) else 0):
        members = [t for t, l in zip(tracks, labels) if l == label]
        centroid = _unit(sum(t.weight * _unit(t.embedding) for t in members))
        identities.append(Identity(label, tuple(t.id for t in members), centroid, None))
        owner.update({t.id: label for t in members})
    return identities, owner


def pin_names(identities: list[Identity], named: list[tuple[str, np.ndarray]],
              settings: IdentifySettings = IdentifySettings()) -> tuple[list[Identity], dict[str, int]]:
    """Give each ``(name, embeddings float32[N, D])`` the identity it matches; returns identities and name -> id.

    A name that matches no identity becomes a new identity without tracks.
    """
    identities = list(identities)
    result: dict[str, int] = {}
    if not named:
        return identities, result
    means = np.stack([_unit(sum(_unit(e) for e in embeddings)) for _, embeddings in named])
    with_centroid = [i for i in identities if i.centroid is not None]
    matched: dict[int, int] = {}
    if with_centroid:
        similarity = means @ np.stack([i.centroid for i in with_centroid]).T
        rows, cols = linear_sum_assignment(-similarity)
        matched = {r: c for r, c in zip(rows, cols) if similarity[r, c] >= settings.pin_similarity}
    next_id = max((i.id for i in identities), default=-1) + 1
    for row, (name, _) in enumerate(named):
        if row in matched:
            target = with_centroid[matched[row]]
            position = identities.index(target)
            identities[position] = Identity(target.id, target.tracks, target.centroid, name)
            result[name] = target.id
        else:
            identities.append(Identity(next_id, (), means[row], name))
            result[name] = next_id
            next_id += 1
    return identities, result

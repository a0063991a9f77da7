"""Which faces get restored in which frame, with their smoothed alignment.

The analysis file already holds every track's landmarks, so the whole plan is made before the
first frame is decoded: landmarks are smoothed over each track (a filter that looks ahead
needs the future, which a streaming pass would not have), transforms are fitted, and faces
too small to restore are set aside and counted. The plan is a few floats per face, the size
of the analysis file itself, not of the video.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from iconface_video.errors import UserError
from iconface_video.faces.align import fit_similarity, template, transform_points
from iconface_video.render.temporal import TemporalSettings, smooth_landmarks
from iconface_video.types import Identity, Track

# A restorer is trained to undo at most ~8x down-sampling (core-design §5: down-sample up to 8);
# a face whose eyes are closer than the crop template's eye distance / 8 asks it to invent
# more than it can, and detectors' landmarks on faces under ~6 px between the eyes are noise.
_MAX_UPSCALE = 8.0
_MIN_EYE_FLOOR = 6.0
# Crop sides a core accepts are multiples of its token stride: 16 for the shipped presets.
SIDE_STEP = 16


@dataclass(frozen=True, eq=False)
class FaceJob:
    """One face to restore in one frame.

    ``M`` is ``float32[2, 3]`` (frame pixels -> crop pixels, from smoothed landmarks);
    ``kps_crop`` is ``float32[5, 2]``, the frame's *detected* landmarks in crop pixels (where
    the mask goes); ``eye_px`` the inter-eye distance in frame pixels; ``side`` the crop's side
    in pixels (the same for every face of a track).
    """

    frame: int
    track: int
    identity: int | None
    M: np.ndarray
    kps_crop: np.ndarray
    eye_px: float
    side: int


@dataclass(frozen=True)
class RenderPlan:
    """Face jobs by frame, plus what was left out and why (counts for the report).

    ``sides`` is each restored track's crop side; ``faces_per_track`` its planned faces;
    ``labels`` its person's name (``identity N``, or ``unassigned``).
    """

    jobs: dict[int, tuple[FaceJob, ...]]
    tracks: tuple[int, ...]
    sides: dict[int, int] = field(default_factory=dict)
    faces_per_track: dict[int, int] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    skipped_small: int = 0
    skipped_small_tracks: tuple[int, ...] = ()
    skipped_identity: int = 0
    min_eye_px: float = 0.0
    faces_per_identity: dict[str, int] = field(default_factory=dict)

    @property
    def n_faces(self) -> int:
        return sum(len(v) for v in self.jobs.values())


def side_template(template_name: str, crop_size: int, side: int) -> np.ndarray:
    """The core's 5-point template ``float32[5, 2]`` for a crop of ``side`` pixels.

    The template of the checkpoint's own ``crop_size`` scaled to ``side``, so a face sits at
    the same place in a crop of any side (``align.template`` alone would switch the ArcFace
    layout between sides that are multiples of 112 and those that are not).
    """
    return (template(template_name, crop_size) * (side / crop_size)).astype(np.float32)


def min_eye_distance(side: int, template_name: str, crop_size: int) -> float:
    """Smallest inter-eye distance in frame pixels worth restoring in a crop of ``side`` pixels
    (the core's smallest side: a small face is restored there)."""
    points = side_template(template_name, crop_size, side)
    return max(_MIN_EYE_FLOOR, float(np.linalg.norm(points[1] - points[0])) / _MAX_UPSCALE)


def track_side(kps5: np.ndarray, template_name: str, crop_size: int, min_side: int, max_side: int,
               step: int = SIDE_STEP) -> int:
    """The crop side for a track whose (smoothed) landmarks are ``kps5`` ``float[T, 5, 2]``.

    The side at which the aligned crop is neither up- nor downsampled from the frame (the
    similarity fit's scale is 1) for the track's median face, rounded to a multiple of
    ``step`` and clamped to ``[min_side, max_side]`` (multiples of ``step`` themselves).
    """
    dst = torch.from_numpy(template(template_name, crop_size))
    M = fit_similarity(torch.from_numpy(np.asarray(kps5, np.float32)), dst).numpy()
    scale = np.linalg.norm(M[:, 0, :2], axis=1)  # crop pixels per frame pixel at crop_size
    natural = crop_size / float(np.median(scale))
    side = int(round(natural / step)) * step
    return int(min(max(side, min_side), max_side))


def select_tracks(
    tracks: Sequence[Track], identities: Sequence[Identity], wanted: Iterable[str] | None
) -> tuple[list[Track], int]:
    """Tracks whose identity is in ``wanted`` (ids or names; None = all); and the faces left out.

    An unknown id or name is a user error listing the known ones.
    """
    if wanted is None:
        return list(tracks), 0
    by_key: dict[str, int] = {}
    for identity in identities:
        by_key[str(identity.id)] = identity.id
        if identity.name:
            by_key[identity.name.casefold()] = identity.id
    chosen = set()
    for key in wanted:
        key = key.strip()
        found = by_key.get(key, by_key.get(key.casefold()))
        if found is None:
            known = ", ".join(sorted({f"{i.id}" + (f" ({i.name})" if i.name else "") for i in identities})) or "none"
            raise UserError(f"--identities: no identity {key!r} in the analysis file; known: {known}")
        chosen.add(found)
    kept = [t for t in tracks if t.identity in chosen]
    left = sum(len(t.obs) for t in tracks if t.identity not in chosen)
    return kept, left


def plan_faces(
    tracks: Sequence[Track],
    *,
    crop_size: int,
    template_name: str,
    temporal: TemporalSettings,
    sides: tuple[int, int] | None = None,
    side_step: int = SIDE_STEP,
    start: int = 0,
    end: int | None = None,
    min_eye_px: float | None = None,
    skipped_identity: int = 0,
    identity_names: dict[int, str] | None = None,
) -> RenderPlan:
    """Smoothed transforms for every face of ``tracks`` in frames ``start`` .. ``end - 1``.

    ``crop_size`` is the core's training side (its template's layout); ``sides`` the
    ``(min_side, max_side)`` the core restores (None: ``crop_size`` only), in steps of
    ``side_step``. Each track gets one side from its face's size (``track_side``). Smoothing
    and the side see the whole track (also frames outside the range), so a render of a range
    aligns each face exactly as a render of the whole video does.
    """
    min_side, max_side = sides or (crop_size, crop_size)
    threshold = min_eye_distance(min_side, template_name, crop_size) if min_eye_px is None else min_eye_px
    jobs: dict[int, list[FaceJob]] = {}
    small, small_tracks, per_identity = 0, set(), Counter()
    track_sides: dict[int, int] = {}
    per_track: Counter = Counter()
    labels: dict[int, str] = {}
    names = identity_names or {}
    for track in tracks:
        frames = np.array([o.frame_index for o in track.obs])
        raw = np.stack([np.asarray(o.kps5, dtype=np.float32) for o in track.obs])
        smooth = smooth_landmarks(raw, frames, temporal)
        inside = (frames >= start) & (frames < end if end is not None else True)
        if not inside.any():
            continue
        side = track_side(smooth, template_name, crop_size, min_side, max_side, side_step)
        dst = torch.from_numpy(side_template(template_name, crop_size, side))
        M = fit_similarity(torch.from_numpy(smooth[inside]), dst).numpy()
        in_crop = transform_points(raw[inside], M)
        eyes = np.linalg.norm(smooth[inside, 1] - smooth[inside, 0], axis=1)
        for frame, m, points, eye in zip(frames[inside], M, in_crop, eyes):
            if eye < threshold:
                small += 1
                small_tracks.add(track.id)
                continue
            jobs.setdefault(int(frame), []).append(
                FaceJob(int(frame), track.id, track.identity, m, points, float(eye), side)
            )
            track_sides[track.id] = side
            per_track[track.id] += 1
            label = names.get(track.identity, str(track.identity)) if track.identity is not None else "unassigned"
            labels[track.id] = label
            per_identity[label] += 1
    return RenderPlan(
        jobs={k: tuple(v) for k, v in sorted(jobs.items())},
        tracks=tuple(sorted(track_sides)),
        sides=dict(sorted(track_sides.items())),
        faces_per_track=dict(sorted(per_track.items())),
        labels=dict(sorted(labels.items())),
        skipped_small=small,
        skipped_small_tracks=tuple(sorted(small_tracks)),
        skipped_identity=skipped_identity,
        min_eye_px=threshold,
        faces_per_identity=dict(per_identity),
    )

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

from iconface_video.errors import UserError
from iconface_video.faces.align import estimate_affine, template, transform_points
from iconface_video.render.temporal import TemporalSettings, smooth_landmarks
from iconface_video.types import Identity, Track

# A restorer is trained to undo at most ~8x down-sampling (core-design §5: down-sample up to 8);
# a face whose eyes are closer than the crop template's eye distance / 8 asks it to invent
# more than it can, and detectors' landmarks on faces under ~6 px between the eyes are noise.
_MAX_UPSCALE = 8.0
_MIN_EYE_FLOOR = 6.0


@dataclass(frozen=True, eq=False)
class FaceJob:
    """One face to restore in one frame.

    ``M`` is ``float32[2, 3]`` (frame pixels -> crop pixels, from smoothed landmarks);
    ``kps_crop`` is ``float32[5, 2]``, the frame's *detected* landmarks in crop pixels (where
    the mask goes); ``eye_px`` the inter-eye distance in frame pixels.
    """

    frame: int
    track: int
    identity: int | None
    M: np.ndarray
    kps_crop: np.ndarray
    eye_px: float


@dataclass(frozen=True)
class RenderPlan:
    """Face jobs by frame, plus what was left out and why (counts for the report)."""

    jobs: dict[int, tuple[FaceJob, ...]]
    tracks: tuple[int, ...]
    skipped_small: int = 0
    skipped_small_tracks: tuple[int, ...] = ()
    skipped_identity: int = 0
    min_eye_px: float = 0.0
    faces_per_identity: dict[str, int] = field(default_factory=dict)

    @property
    def n_faces(self) -> int:
        return sum(len(v) for v in self.jobs.values())


def min_eye_distance(crop_size: int, template_name: str) -> float:
    """Smallest inter-eye distance in frame pixels worth restoring with a ``crop_size`` core."""
    points = template(template_name, crop_size)
    return max(_MIN_EYE_FLOOR, float(np.linalg.norm(points[1] - points[0])) / _MAX_UPSCALE)


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
    start: int = 0,
    end: int | None = None,
    min_eye_px: float | None = None,
    skipped_identity: int = 0,
    identity_names: dict[int, str] | None = None,
) -> RenderPlan:
    """Smoothed transforms for every face of ``tracks`` in frames ``start`` .. ``end - 1``.

    Smoothing sees the whole track (also frames outside the range), so a render of a range
    aligns each face exactly as a render of the whole video does.
    """
    threshold = min_eye_distance(crop_size, template_name) if min_eye_px is None else min_eye_px
    jobs: dict[int, list[FaceJob]] = {}
    small, small_tracks, per_identity = 0, set(), Counter()
    names = identity_names or {}
    for track in tracks:
        frames = np.array([o.frame_index for o in track.obs])
        raw = np.stack([np.asarray(o.kps5, dtype=np.float32) for o in track.obs])
        smooth = smooth_landmarks(raw, frames, temporal)
        inside = (frames >= start) & (frames < end if end is not None else True)
        if not inside.any():
            continue
        M = estimate_affine(smooth[inside], template_name, crop_size)
        in_crop = transform_points(raw[inside], M)
        eyes = np.linalg.norm(smooth[inside, 1] - smooth[inside, 0], axis=1)
        for frame, m, points, eye in zip(frames[inside], M, in_crop, eyes):
            if eye < threshold:
                small += 1
                small_tracks.add(track.id)
                continue
            jobs.setdefault(int(frame), []).append(
                FaceJob(int(frame), track.id, track.identity, m, points, float(eye))
            )
            label = names.get(track.identity, str(track.identity)) if track.identity is not None else "unassigned"
            per_identity[label] += 1
    return RenderPlan(
        jobs={k: tuple(v) for k, v in sorted(jobs.items())},
        tracks=tuple(sorted({j.track for v in jobs.values() for j in v})),
        skipped_small=small,
        skipped_small_tracks=tuple(sorted(small_tracks)),
        skipped_identity=skipped_identity,
        min_eye_px=threshold,
        faces_per_identity=dict(per_identity),
    )

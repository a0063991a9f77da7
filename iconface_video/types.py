"""The data passed between pipeline stages.

Every stage takes and returns these types, so a reader can follow a frame from decode to
encode. Coordinates are always pixels of the *stored* frame (as decoded, before any
container rotation is applied); stages that need an upright image (the detector) rotate a
copy and map their results back, so nothing downstream has to care about rotation.

Arrays carry their shape and dtype in the docstrings: ``uint8[H, W, 3]`` is an RGB image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded video frame.

    ``index`` counts frames in presentation order from 0; ``pts`` is in ``time_base`` units
    (None only where the container gives none); ``image`` is ``uint8[H, W, 3]`` RGB in the
    stored orientation.
    """

    index: int
    pts: int | None
    time_base: Fraction
    image: np.ndarray

    @property
    def time(self) -> float | None:
        return None if self.pts is None else float(self.pts * self.time_base)


@dataclass(frozen=True)
class Shot:
    """Frames ``start`` .. ``end`` (inclusive) between two cuts; times in seconds."""

    index: int
    start: int
    end: int
    start_time: float
    end_time: float
    transition: str = "cut"  # how the shot begins: "start", "cut" or "fade"


@dataclass(frozen=True, eq=False)
class FaceObs:
    """One detected (or interpolated) face in one frame.

    ``box`` is (x0, y0, x1, y1); ``kps5`` is ``float32[5, 2]`` in ArcFace order (left eye,
    right eye, nose tip, left mouth corner, right mouth corner, "left" meaning image left);
    ``embedding`` is the identity encoder's *unnormalised* feature ``float32[D]`` or None.
    """

    frame_index: int
    box: tuple[float, float, float, float]
    score: float
    kps5: np.ndarray
    embedding: np.ndarray | None = None
    interpolated: bool = False

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.kps5[1] - self.kps5[0]))


@dataclass(frozen=True, eq=False)
class Track:
    """One face followed through one shot; ``obs`` is sorted by frame and never crosses a cut."""

    id: int
    shot: int
    obs: tuple[FaceObs, ...]
    identity: int | None = None

    @property
    def start(self) -> int:
        return self.obs[0].frame_index

    @property
    def end(self) -> int:
        return self.obs[-1].frame_index


@dataclass(frozen=True)
class ReliabilityTerms:
    """Why a face observation is (or is not) a good identity reference; each term in [0, 1].

    ``occlusion`` is 1 for a face with nothing in front of it and falls towards 0 as sunglasses,
    hands or a microphone hide it (last, with a default, so older analysis files still load)."""

    sharpness: float
    size: float
    frontality: float
    detector: float
    exposure: float
    identity_norm: float
    centroid_agreement: float
    total: float
    occlusion: float = 1.0


@dataclass(frozen=True)
class Reference:
    """A harvested same-identity reference: which frame, which face, and how reliable."""

    identity: int
    track: int
    frame_index: int
    box: tuple[float, float, float, float]
    kps5: tuple[tuple[float, float], ...]
    reliability: float
    terms: ReliabilityTerms | None = None
    source: str = "video"  # "video", or the path of a user-supplied photo


@dataclass(frozen=True)
class Identity:
    """One person across the whole video: their tracks, a unit embedding centroid and a name."""

    id: int
    tracks: tuple[int, ...]
    centroid: np.ndarray | None = field(default=None, compare=False)
    name: str | None = None

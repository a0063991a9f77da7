"""Temporal stability within a track: smoothed alignment, smoothed masks and colour correction.

Per-frame restorers flicker because every frame is aligned, masked and colour-corrected on its
own. Here the *inputs* to those steps are smoothed over time within one track (a track never
crosses a cut, so nothing is smoothed across one):

- alignment: the 5 landmarks of a track are filtered with Savitzky-Golay (``scipy.signal``)
  before the similarity fit. A low-order polynomial keeps real head motion (no lag, unlike an
  exponential filter) and removes the detector's frame-to-frame jitter, which otherwise moves
  the aligned crop, and with it every generated detail, by a pixel or two per frame;
- masks, colour correction and the restored detail: causal exponential averages in *aligned*
  space (crops of one track are aligned, so the same pixel means the same part of the face from
  frame to frame). Detail is averaged more lightly than masks and colour: a mouth that opens
  must not leave a ghost of its closed self.

One ``strength`` in [0, 1] (``--temporal``) sets every filter; 0 switches all of them off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import savgol_filter

# At full strength the landmark filter spans 13 frames (about half a second at 25 fps):
# longer windows start to flatten real nods and turns even with a quadratic fit.
_MAX_HALF_WINDOW = 6
# At full strength an exponential average keeps 85% of the previous state per frame, i.e. an
# effective memory of about 6 frames, which is what the landmark window spans on each side.
_MAX_DECAY = 0.85
# The restored detail keeps at most half of its previous state per frame (a memory of ~2 frames).
_MAX_DETAIL_DECAY = 0.5


@dataclass(frozen=True)
class TemporalSettings:
    """Filter parameters derived from one user-facing strength in [0, 1]."""

    strength: float
    window: int  # Savitzky-Golay window in frames (odd; 1 = off)
    polyorder: int
    decay: float  # weight of the previous state in the mask / colour averages (0 = off)
    detail_decay: float = 0.0  # the same for the restored detail

    @classmethod
    def from_strength(cls, strength: float) -> TemporalSettings:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"temporal strength must be in [0, 1], got {strength}")
        half = int(round(strength * _MAX_HALF_WINDOW))
        return cls(strength=strength, window=2 * half + 1, polyorder=2, decay=_MAX_DECAY * strength,
                   detail_decay=_MAX_DETAIL_DECAY * strength)


def contiguous_runs(frames: np.ndarray) -> list[slice]:
    """Slices of ``frames`` (sorted ``int[T]``) whose frame numbers follow each other without a gap."""
    if len(frames) == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    edges = [0, *breaks.tolist(), len(frames)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def smooth_landmarks(kps5: np.ndarray, frames: np.ndarray, settings: TemporalSettings) -> np.ndarray:
    """Savitzky-Golay-filtered landmarks ``float32[T, 5, 2]`` of one track.

    ``kps5`` is ``float[T, 5, 2]`` for the sorted frame numbers ``frames[T]``. Each run of
    consecutive frames is filtered on its own (a gap is where the track was lost, so the
    points on either side are not one motion); runs shorter than the window get a window
    that fits, and runs too short for any fit are left as they are.
    """
    kps5 = np.asarray(kps5, dtype=np.float64)
    out = kps5.copy()
    if settings.window <= 1:
        return out.astype(np.float32)
    for run in contiguous_runs(np.asarray(frames)):
        length = run.stop - run.start
        window = min(settings.window, length if length % 2 else length - 1)
        if window <= settings.polyorder:
            continue
        flat = kps5[run].reshape(length, -1)
        out[run] = savgol_filter(flat, window, settings.polyorder, axis=0, mode="interp").reshape(length, 5, 2)
    return out.astype(np.float32)


class TrackAverages:
    """Causal exponential averages of per-track tensors (masks, colour corrections) in aligned space.

    ``update(track, frame, value)`` returns the averaged value and remembers it. A track's
    state restarts when the track skips a frame, and for every track at ``reset()`` (the
    renderer calls it at each encoder segment so a resumed render computes exactly what an
    uninterrupted one did). The state holds one tensor per live track, never the video.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self._state: dict[int, tuple[int, torch.Tensor]] = {}

    def reset(self) -> None:
        self._state.clear()

    def update(self, track: int, frame: int, value: torch.Tensor) -> torch.Tensor:
        previous = self._state.get(track)
        if self.decay > 0 and previous is not None and previous[0] == frame - 1:
            value = self.decay * previous[1] + (1.0 - self.decay) * value
        self._state[track] = (frame, value)
        return value

    def forget_before(self, frame: int) -> None:
        """Drop tracks last seen before ``frame - 1`` (they ended), keeping memory bounded."""
        for track in [t for t, (f, _) in self._state.items() if f < frame - 1]:
            del self._state[track]

"""Per-face quality measures for reference harvesting, each from one face's pixels.

The terms of ``harvest.ReliabilityTerms`` that need nothing but the face itself: detail
(``measure_detail``), inter-ocular size, frontality from the 5 points, exposure, and
``occlusion_evidence`` (sunglasses, a hand or a microphone over the face). ``native_quality``
measures noise and codec blocks in the frame's own pixels, before alignment resamples them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from iconface_video.types import FaceObs

STRUCTURE_SIZE = (26, 30)  # (w, h) of ``Detail.structure``'s coarse scale: eyes, nose and mouth, little grain

# Lip line depth (row-profile dip / the face's std) above which the mouth is plainly uncovered,
# and below which it is surely hidden.
MOUTH_DIP_CLEAR = 0.3  # clean photos: 1st percentile 0.26, 5th 0.39
MOUTH_DIP_HIDDEN = 0.15  # hands and microphones: median 0.09, 95th percentile 0.19


def noise_sigma(grey: np.ndarray) -> float:
    """Gaussian noise std of ``float32[H, W]`` by Immerkaer's fast estimator (a 3x3 Laplacian-difference mask)."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(grey, cv2.CV_32F, mask, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(response).mean() / 6.0)


def blockiness(grey: np.ndarray) -> float:
    """How much stronger steps are across an 8-pixel grid than inside it (``float32[H, W]``, native pixels).

    About 1 for a clean picture; block codecs starved of bits (JPEG, MPEG at low rates) raise it,
    because their 8x8 blocks no longer join up. The grid phase is the one with the strongest steps.
    """
    steps_x = np.abs(np.diff(grey, axis=1)).mean(axis=0)
    steps_y = np.abs(np.diff(grey, axis=0)).mean(axis=1)
    ratios = []
    for steps in (steps_x, steps_y):
        usable = len(steps) // 8 * 8
        if usable < 16:
            return 1.0
        phases = steps[:usable].reshape(-1, 8).mean(axis=0)
        ratios.append(float(phases.max() / max(float(np.median(phases)), 1e-3)))
    return float(np.mean(ratios))


@dataclass(frozen=True)
class NativeQuality:
    """Noise and blockiness of the face measured in the frame's own pixels (before any resampling)."""

    noise: float  # estimated white-noise std (0..255)
    blockiness: float  # 1 = clean, larger = visible codec blocks


def native_quality(image: np.ndarray, box: tuple[float, float, float, float]) -> NativeQuality:
    """``NativeQuality`` of the face ``box`` in ``uint8[H, W, 3]`` (measured on its inner half, the skin and features)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    left, top = int(max(0, x0 + 0.2 * w)), int(max(0, y0 + 0.2 * h))
    right, bottom = int(min(image.shape[1], x1 - 0.2 * w)), int(min(image.shape[0], y1 - 0.2 * h))
    if right - left < 8 or bottom - top < 8:
        return NativeQuality(0.0, 1.0)
    grey = cv2.cvtColor(np.ascontiguousarray(image[top:bottom, left:right]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    # Blockiness needs the codec's grid, which is anchored at the frame's origin: measure from a multiple of 8.
    grid = grey[(8 - top % 8) % 8:, (8 - left % 8) % 8:]
    return NativeQuality(noise_sigma(grey), blockiness(grid))


@dataclass(frozen=True)
class Detail:
    """What detail an aligned face crop holds (``measure_detail``)."""

    laplacian: float  # Laplacian variance inside the face: fine detail, grain included
    noise_discount: float  # 1, falling as the face's native noise rises past film grain
    block_discount: float  # 1, falling as codec blocks show
    fine: float  # Laplacian variance of the face at half size less the grain's share: detail grain cannot fake
    structure: float  # coarse, grain-free detail over contrast: whether eyes, nose and mouth are there at all

    def term(self, scale: float) -> float:
        """The sharpness term: 0.5 where the Laplacian variance equals ``scale``, discounted."""
        return float(self.laplacian / (self.laplacian + scale) * self.noise_discount * self.block_discount)

    def relative_term(self, fine_scale: float) -> float:
        """The sharpness term of soft footage: 0.5 where ``fine`` equals ``fine_scale``, discounted."""
        return float(self.fine / (self.fine + fine_scale) * self.noise_discount * self.block_discount)


def measure_detail(aligned: np.ndarray, native: NativeQuality | None = None) -> Detail:
    """``Detail`` of ``uint8[S, S, 3]`` aligned crop given the face's ``native_quality``.

    Detail is the Laplacian variance inside the face. Grain and block edges also have high
    Laplacian energy but are not detail a restorer can use, so the score is divided down by the
    face's native noise (beyond a film-grain floor of 4) and blockiness (beyond 1.3: well-made
    JPEG photos measure up to ~1.27, JPEG at quality 15 measures 1.7-3.5). Where grain is most of
    the Laplacian variance (old film), ``fine`` still ranks frames by their blur: measured at half
    size, less what the grain explains there.

    ``structure`` is the Laplacian energy of the eyes-to-chin region shrunk to 26x30 pixels,
    less what the grain left there explains, over the region's variance, so faded, low-contrast
    or grainy film keeps its value while blur loses it. On held-out faces112 photos, faded and
    grainy (5th-50th-95th percentile): clean 0.41-0.90-1.55; as if filmed with 10 pixels between
    the eyes 0.15-0.32-0.62, 6 px 0.08-0.19-0.39, 4 px 0.05-0.14-0.28; blurred (Gaussian sigma 8
    on the 224 crop) 0.05-0.12-0.29.
    """
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY).astype(np.float32)
    margin = grey.shape[0] // 8  # measure inside the face: the corners are background or padding
    inner = grey[margin:-margin, margin:-margin]
    laplacian = float(cv2.Laplacian(inner, cv2.CV_32F, ksize=1).var())
    native = native or NativeQuality(noise_sigma(inner), 1.0)
    half = cv2.resize(inner, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    # The 4-neighbour Laplacian turns white noise of std n into variance 20 n^2: what is left is detail.
    fine = max(float(cv2.Laplacian(half, cv2.CV_32F, ksize=1).var()) - 20.0 * noise_sigma(half) ** 2, 0.0)
    unit = grey.shape[0] / 224.0
    features = grey[round(76 * unit):round(212 * unit), round(52 * unit):round(172 * unit)]  # eyebrows to chin
    small = cv2.resize(features, STRUCTURE_SIZE, interpolation=cv2.INTER_AREA)
    grain = 20.0 * noise_sigma(small) ** 2
    structure = max(float(cv2.Laplacian(small, cv2.CV_32F, ksize=1).var()) - grain, 0.0) / (float(small.var()) + 1.0)
    return Detail(laplacian, 1.0 / (1.0 + (max(native.noise - 4.0, 0.0) / 5.0) ** 2),
                  1.0 / (1.0 + (max(native.blockiness - 1.3, 0.0) / 0.3) ** 2), fine, structure)


def size_term(obs: FaceObs) -> float:
    """Inter-ocular distance on a log scale: 12 px -> 0, 96 px -> 1."""
    return float(np.clip(math.log2(max(obs.eye_distance, 1e-3) / 12.0) / 3.0, 0.0, 1.0))


def yaw_pitch(kps5: np.ndarray) -> tuple[float, float]:
    """Signed yaw and pitch proxies from ArcFace-order points, 0 for a frontal face.

    Yaw: how far the nose sits from the eye/mouth midline, in eye distances. Pitch: how far the
    nose sits from its frontal height between the eye line and the mouth line.
    """
    kps = np.asarray(kps5, np.float64)
    eyes_mid, mouth_mid = (kps[0] + kps[1]) / 2, (kps[3] + kps[4]) / 2
    axis = mouth_mid - eyes_mid
    length = max(float(np.linalg.norm(axis)), 1e-6)
    down = axis / length
    across = np.array([down[1], -down[0]])  # perpendicular to the face's vertical axis
    nose = kps[2] - eyes_mid
    eye_distance = max(float(np.linalg.norm(kps[1] - kps[0])), 1e-6)
    yaw = float(nose @ across) / max(eye_distance, length)
    pitch = float(nose @ down) / length - 0.55  # frontal faces put the nose ~55% of the way down
    return yaw, pitch


def frontality_term(kps5: np.ndarray) -> float:
    yaw, pitch = yaw_pitch(kps5)
    return float(np.clip(1.0 - (abs(yaw) / 0.45) ** 2 - (abs(pitch) / 0.35) ** 2, 0.0, 1.0))


def exposure_term(aligned: np.ndarray) -> float:
    """Mid-tone mean and few clipped pixels in the face (``uint8[S, S, 3]`` aligned crop)."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    margin = grey.shape[0] // 8
    inner = grey[margin:-margin, margin:-margin].astype(np.float32)
    mean = float(inner.mean()) / 255.0
    clipped = float(((inner <= 3) | (inner >= 252)).mean())
    level = 1.0 - (max(abs(mean - 0.45) - 0.15, 0.0) / 0.3) ** 2
    return float(np.clip(level, 0.0, 1.0) * (1.0 - clipped))


def _patch(grey: np.ndarray, centre: np.ndarray, half_w: int, half_h: int) -> np.ndarray:
    x, y = int(round(float(centre[0]))), int(round(float(centre[1])))
    return grey[max(0, y - half_h):y + half_h, max(0, x - half_w):x + half_w]


def _falling(value: float, start: float, end: float) -> float:
    """0 at or above ``start``, rising linearly to 1 at or below ``end`` (``end`` < ``start``)."""
    return float(np.clip((start - value) / (start - end), 0.0, 1.0))


def occlusion_evidence(aligned: np.ndarray) -> float:
    """How surely something covers the eyes or the mouth of ``uint8[S, S, 3]`` ArcFace-aligned crop, in [0, 1].

    Two measured absences, both relative to the face's own brightness and contrast so that dim
    or faded footage is not read as occluded:

    - eyes: eye regions with little texture of their own (std under half the face's) *and* much
      darker than the skin beside the nose are lenses, not eyes (sunglasses); both are needed;
    - mouth: every uncovered mouth, shut or open, shows a dark line between the lips, a dip in
      the row means of each half of the mouth region; a hand or a microphone over it leaves none.
      A heavy blur weakens that line too, which only ranks a soft frame further down.

    Measured on held-out faces112 photos with pasted sunglasses, hands and microphones (see
    BENCHMARKS.md); each ramp starts near the clean photos' 5th percentile. Known misses: a
    dense beard hides the lip line as a hand does (all of that person's frames alike).
    """
    from iconface_video.faces.align import template

    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY).astype(np.float32)
    unit = grey.shape[0] / 224.0  # the measures below were laid out on 224-pixel crops
    kps = template("arcface", grey.shape[0])
    skin = max(float(np.median(_patch(grey, np.array([kps[i][0], kps[2][1]]), round(13 * unit), round(11 * unit))))
               for i in (0, 1)) + 1.0
    inner = grey[round(60 * unit):round(200 * unit), round(50 * unit):round(174 * unit)]
    face_std = float(inner.std()) + 1.0
    eyes = [_patch(grey, kps[i], round(22 * unit), round(13 * unit)) for i in (0, 1)]
    eye_texture = float(np.mean([e.std() for e in eyes])) / face_std
    eye_level = float(np.mean([np.percentile(e, 75) for e in eyes])) / skin
    lens = _falling(eye_texture, 0.5, 0.25) * _falling(eye_level, 0.5, 0.3)
    lip_line = math.inf
    for shift in (-13, 13):  # the line must cross both halves of the mouth: a hand may cover one
        rows = _patch(grey, (kps[3] + kps[4]) / 2 + [shift * unit, 0], round(13 * unit), round(22 * unit)).mean(axis=1)
        lip_line = min(lip_line, (float(np.median(rows)) - float(rows.min())) / face_std)
    covered_mouth = _falling(lip_line, MOUTH_DIP_CLEAR, MOUTH_DIP_HIDDEN)
    return max(lens, covered_mouth)

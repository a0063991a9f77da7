"""Reference harvesting: how reliable each face observation is, and the best few per identity.

Every detected face gets named reliability terms in [0, 1] (``ReliabilityTerms``; those measured
on the face's pixels alone live in ``analysis.quality``):

- ``sharpness``: detail of the ArcFace-aligned 224 crop (variance of the Laplacian, discounted
  for the face's native noise and codec blocks, so grain is not detail); for an identity whose
  best frames are all soft (small faces, old footage), grain-free detail relative to its
  sharpest frames; frames below an absolute floor (``min_structure``) are never references;
- ``size``: inter-ocular distance on a log scale (12 px -> 0, 96 px -> 1);
- ``frontality``: yaw and pitch read from the 5 landmarks (nose against the eye/mouth frame);
- ``detector``: the detector's confidence;
- ``exposure``: mid-tone mean and few clipped pixels in the aligned crop;
- ``occlusion``: a factor, 1 unless sunglasses, a hand or a microphone hide the eyes or the
  mouth (down to ``occlusion_floor``);
- ``identity_norm``: the encoder's feature-norm quality signal where it has one (AdaFace); 1 and
  left out of the total for encoders without one (dlib, ArcFace);
- ``centroid_agreement``: cosine similarity with the identity's centroid, mapped so that
  "surely someone else" is 0 (known only once identities exist, at the end of the analysis).

``total`` is a weighted geometric mean, so one failing term (a profile, a wrong person) sinks a
candidate however good the rest are, times the occlusion factor. While the video streams, each
track keeps a small pool of its best candidates (spread in time), their loose crops written as
PNGs to a folder; at the end ``select_references`` picks the top K per identity with diversity
in time and pose.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from iconface_video.analysis.quality import (
    Detail,
    NativeQuality,
    exposure_term,
    frontality_term,
    measure_detail,
    native_quality,
    occlusion_evidence,
    size_term,
    yaw_pitch,
)
from iconface_video.imageio import imencode
from iconface_video.types import FaceObs, ReliabilityTerms

ALIGNED_SIZE = 224  # sharpness and exposure are measured on ArcFace-aligned crops of this size
TERM_NAMES = tuple(name for name in ReliabilityTerms.__dataclass_fields__ if name != "total")


@dataclass(frozen=True)
class HarvestSettings:
    """How references are scored and chosen."""

    max_refs: int = 4  # references per identity (K)
    pool_size: int = 6  # candidates kept per track while streaming
    min_gap_s: float = 0.5  # two references from one track at least this far apart
    crop_scale: float = 2.0  # loose crop side = this x the face box's longer side
    max_crop_side: int = 512  # larger crops are downscaled (the restorer works at <= 512)
    min_eye_distance: float = 10.0  # smaller faces never become references
    # ... nor faces with less ``Detail.structure``: the median face filmed with 4-5 px between the
    # eyes, or blurred by a Gaussian a ninth of the eye distance wide; nobody could recognise them.
    min_structure: float = 0.15
    # Laplacian variance (224 crop) giving sharpness 0.5: clean faces 300-1300, blurred 5-120. An
    # identity whose sharpest candidates are softer (small or old footage, where grain can be most
    # of that variance) is scored on ``Detail.fine`` against half its sharpest candidates' instead,
    # so its cleanest frames score 2/3 as the sharp ones of a sharp video do: relative to the video.
    sharpness_scale: float = 300.0
    same_similarity: float = 0.91  # cosine to the centroid at which agreement is 0.5
    reject_similarity: float = 0.85  # ... and below which agreement is 0 (someone else)
    # Weights of the geometric mean; identity_norm's applies only where the encoder gives one.
    weights: tuple[tuple[str, float], ...] = (
        ("sharpness", 2.0), ("size", 1.0), ("frontality", 1.5), ("detector", 0.5),
        ("exposure", 1.0), ("identity_norm", 1.0), ("centroid_agreement", 2.0),
    )
    occlusion_floor: float = 0.4  # the occlusion factor of a face surely covered (sunglasses, a hand)


# --- the terms ---------------------------------------------------------------------------------

def aligned_crops(image: np.ndarray, kps5: np.ndarray) -> np.ndarray:
    """ArcFace-aligned crops ``uint8[N, ALIGNED_SIZE, ALIGNED_SIZE, 3]`` of ``kps5`` float32[N, 5, 2] faces in one image."""
    from iconface_video.faces.align import template, warp_to_template

    return warp_to_template(image, np.asarray(kps5, np.float32).reshape(-1, 5, 2), template("arcface", ALIGNED_SIZE), ALIGNED_SIZE)


def agreement_term(similarity: float, settings: HarvestSettings) -> float:
    """Cosine to the identity centroid -> [0, 1]: 0 below ``reject``, 0.5 at ``same``, 1 at 1."""
    lo, mid = settings.reject_similarity, settings.same_similarity
    if similarity <= lo:
        return 0.0
    if similarity <= mid:
        return 0.5 * (similarity - lo) / (mid - lo)
    return float(min(1.0, 0.5 + 0.5 * (similarity - mid) / (1.0 - mid)))


def total_score(terms: dict[str, float], settings: HarvestSettings, uses_norm: bool) -> float:
    """Weighted geometric mean of the terms present (``identity_norm`` only if ``uses_norm``),
    times the ``occlusion`` factor: a covered face is worth that much less whatever its other
    merits, and an uncovered one (factor 1) scores exactly as without the factor."""
    log_sum, weight_sum = 0.0, 0.0
    for name, weight in settings.weights:
        if name not in terms or (name == "identity_norm" and not uses_norm):
            continue
        log_sum += weight * math.log(max(terms[name], 1e-6))
        weight_sum += weight
    return float(math.exp(log_sum / weight_sum)) * terms.get("occlusion", 1.0) if weight_sum else 0.0


def observation_terms(aligned: np.ndarray, obs: FaceObs, settings: HarvestSettings,
                      identity_norm: float | None = None, native: NativeQuality | None = None,
                      detail: Detail | None = None) -> dict[str, float]:
    """Every term but ``centroid_agreement`` for one detection, its ``uint8[S, S, 3]`` aligned crop
    and its ``native_quality`` in the frame (``detail``: the crop's ``measure_detail``, if known)."""
    detail = detail or measure_detail(aligned, native)
    return {
        "sharpness": detail.term(settings.sharpness_scale),
        "size": size_term(obs),
        "frontality": frontality_term(obs.kps5),
        "detector": float(np.clip(obs.score, 0.0, 1.0)),
        "exposure": exposure_term(aligned),
        "identity_norm": 1.0 if identity_norm is None else float(np.clip(identity_norm, 0.0, 1.0)),
        "occlusion": 1.0 - (1.0 - settings.occlusion_floor) * occlusion_evidence(aligned),
    }


def reliability(terms: dict[str, float], settings: HarvestSettings, uses_norm: bool) -> ReliabilityTerms:
    """The shared ``ReliabilityTerms`` with its total (``centroid_agreement`` 1 if not yet known)."""
    full = {"centroid_agreement": 1.0, **terms}
    return ReliabilityTerms(**{name: round(float(full[name]), 4) for name in TERM_NAMES},
                            total=round(total_score(full, settings, uses_norm), 4))


# --- loose crops -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LooseCrop:
    """A square crop around a face, turned by a multiple of 90 degrees so the face is upright.

    ``image`` uint8[S, S, 3]; ``kps5`` float32[5, 2] in crop pixels; ``transform`` float32[2, 3]
    maps stored-frame pixels to crop pixels.
    """

    image: np.ndarray
    kps5: np.ndarray
    transform: np.ndarray


def loose_crop(image: np.ndarray, obs: FaceObs, scale: float = 2.0, max_side: int = 512) -> LooseCrop:
    """Cut ``scale`` x the face box around its centre out of ``uint8[H, W, 3]`` (reflected past the border).

    The crop is turned upright by the nearest multiple of 90 degrees (rotated phone video, a
    face lying down), so it needs no resampling beyond an optional downscale to ``max_side``.
    """
    x0, y0, x1, y1 = obs.box
    side = max(8, int(math.ceil(scale * max(x1 - x0, y1 - y0))))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    eyes = np.asarray(obs.kps5[1] - obs.kps5[0], np.float64)
    quarter = int(round(math.degrees(math.atan2(eyes[1], eyes[0])) / 90.0)) % 4
    # Frame -> crop: rotate by -quarter*90 degrees about the face centre, centre it in the crop.
    angle = -quarter * math.pi / 2
    cos, sin = round(math.cos(angle)), round(math.sin(angle))
    rot = np.array([[cos, -sin], [sin, cos]], np.float64)
    shift = np.array([side / 2, side / 2]) - rot @ np.array([cx, cy])
    shift = np.round(shift)  # an integer shift: pixels are copied, not resampled
    M = np.hstack([rot, shift[:, None]])
    crop = cv2.warpAffine(image, M, (side, side), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    if side > max_side:
        factor = max_side / side
        crop = cv2.resize(crop, (max_side, max_side), interpolation=cv2.INTER_AREA)
        M = M * factor
    kps = (np.asarray(obs.kps5, np.float64) @ M[:, :2].T + M[:, 2]).astype(np.float32)
    return LooseCrop(image=crop, kps5=kps, transform=M.astype(np.float32))


# --- candidate pools ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Candidate:
    """A detection that may become a reference; its loose crop is the PNG ``crop_file`` in the pool folder."""

    track: int
    frame_index: int
    box: tuple[float, float, float, float]
    kps5: np.ndarray  # float32[5, 2] in the stored frame
    terms: dict[str, float]  # every term but centroid_agreement
    partial: float  # total without centroid agreement
    yaw: float
    embedding: np.ndarray | None  # float32[D], unnormalised
    crop_file: str
    crop_kps5: np.ndarray  # float32[5, 2] in the crop
    crop_transform: np.ndarray  # float32[2, 3] stored frame -> crop
    detail: Detail  # what the sharpness term was made of, to score it again against the identity's


class CandidatePools:
    """Per-track pools of the best candidates, spread in time; crops live as PNGs in ``folder``.

    Memory: ``pool_size`` small records per track still in the video; the pixels are on disk.
    """

    def __init__(self, folder: Path, settings: HarvestSettings, fps: float, uses_norm: bool = False) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self.min_gap = max(1, int(round(settings.min_gap_s * fps)))
        self.uses_norm = uses_norm
        self.pools: dict[int, list[Candidate]] = {}
        # Per track, the reliability-weighted sum of unit embeddings: the track's identity vector.
        self.embedding_sums: dict[int, np.ndarray] = {}

    def offer(self, track: int, obs: FaceObs, image: np.ndarray, aligned: np.ndarray,
              identity_norm: float | None = None) -> float:
        """Score one detection of ``track`` (``image`` its frame, ``aligned`` its ``aligned_crops`` crop); keep it if among the best.

        Returns its reliability without centroid agreement. Only embedded detections can be kept.
        """
        detail = measure_detail(aligned, native_quality(image, obs.box))
        terms = observation_terms(aligned, obs, self.settings, identity_norm, detail=detail)
        partial = total_score(terms, self.settings, self.uses_norm)
        if obs.embedding is not None:
            unit = np.asarray(obs.embedding, np.float32)
            unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
            weight = max(partial, 1e-3)
            self.embedding_sums[track] = self.embedding_sums.get(track, 0) + weight * unit
        if (obs.eye_distance < self.settings.min_eye_distance or detail.structure < self.settings.min_structure
                or obs.embedding is None):
            return partial
        pool = self.pools.setdefault(track, [])
        near = [c for c in pool if abs(c.frame_index - obs.frame_index) < self.min_gap]
        if near:
            if all(partial > c.partial for c in near):
                for c in near:
                    self._discard(pool, c)
                pool.append(self._make(track, obs, image, terms, partial, detail))
        elif len(pool) < self.settings.pool_size:
            pool.append(self._make(track, obs, image, terms, partial, detail))
        else:
            worst = min(pool, key=lambda c: c.partial)
            if partial > worst.partial:
                self._discard(pool, worst)
                pool.append(self._make(track, obs, image, terms, partial, detail))
        return partial

    def track_embedding(self, track: int) -> np.ndarray | None:
        total = self.embedding_sums.get(track)
        if total is None:
            return None
        return (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)

    def forget(self, track: int) -> None:
        """Drop a track's pool (it was discarded as too short)."""
        for candidate in self.pools.pop(track, []):
            _remove(self.folder / candidate.crop_file)
        self.embedding_sums.pop(track, None)

    def _make(self, track: int, obs: FaceObs, image: np.ndarray, terms: dict[str, float], partial: float,
              detail: Detail) -> Candidate:
        crop = loose_crop(image, obs, self.settings.crop_scale, self.settings.max_crop_side)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"t{track:05d}_f{obs.frame_index:07d}.png"
        (self.folder / name).write_bytes(imencode(".png", cv2.cvtColor(crop.image, cv2.COLOR_RGB2BGR)))
        return Candidate(track, obs.frame_index, tuple(float(v) for v in obs.box), np.asarray(obs.kps5, np.float32),
                         terms, partial, yaw_pitch(obs.kps5)[0],
                         np.asarray(obs.embedding, np.float32), name, crop.kps5, crop.transform, detail)

    def _discard(self, pool: list[Candidate], candidate: Candidate) -> None:
        pool.remove(candidate)
        _remove(self.folder / candidate.crop_file)

    # --- checkpointing -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "pools": {str(t): [candidate_to_json(c) for c in pool] for t, pool in self.pools.items()},
            "embedding_sums": {str(t): v.tolist() for t, v in self.embedding_sums.items()},
        }

    def load_state(self, state: dict) -> None:
        self.pools = {int(t): [candidate_from_json(c) for c in pool] for t, pool in state["pools"].items()}
        self.embedding_sums = {int(t): np.asarray(v, np.float32) for t, v in state["embedding_sums"].items()}


def _remove(path: Path) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def candidate_to_json(c: Candidate) -> dict:
    return {
        "track": c.track, "frame": c.frame_index, "box": list(c.box), "kps5": c.kps5.tolist(),
        "terms": c.terms, "partial": c.partial, "yaw": c.yaw,
        "embedding": None if c.embedding is None else c.embedding.tolist(),
        "crop_file": c.crop_file, "crop_kps5": c.crop_kps5.tolist(), "crop_transform": c.crop_transform.tolist(),
        "detail": asdict(c.detail),
    }


def candidate_from_json(d: dict) -> Candidate:
    return Candidate(d["track"], d["frame"], tuple(d["box"]), np.asarray(d["kps5"], np.float32), d["terms"],
                     d["partial"], d["yaw"], None if d["embedding"] is None else np.asarray(d["embedding"], np.float32),
                     d["crop_file"], np.asarray(d["crop_kps5"], np.float32), np.asarray(d["crop_transform"], np.float32),
                     Detail(**d["detail"]))


# --- choosing references -----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Chosen:
    """A chosen reference: the candidate and its full terms (centroid agreement included)."""

    candidate: Candidate
    terms: ReliabilityTerms


def score_against_centroid(candidates: list[Candidate], centroid: np.ndarray | None,
                           settings: HarvestSettings, uses_norm: bool) -> list[Chosen]:
    """Full terms for each candidate given the identity's unit centroid ``float32[D]``; sharpness
    against the identity's own sharpest candidates where they are soft (``HarvestSettings.sharpness_scale``)."""
    scored = []
    laplacians = [c.detail.laplacian for c in candidates]
    soft = bool(candidates) and float(np.percentile(laplacians, 90)) < 2 * settings.sharpness_scale
    if soft:
        fine_scale = max(float(np.percentile([c.detail.fine for c in candidates], 90)) / 2.0, 1e-3)
    for c in candidates:
        similarity = 1.0
        if centroid is not None and c.embedding is not None:
            similarity = float(centroid @ (c.embedding / max(float(np.linalg.norm(c.embedding)), 1e-12)))
        sharpness = c.detail.relative_term(fine_scale) if soft else c.terms["sharpness"]
        terms = {**c.terms, "sharpness": sharpness, "centroid_agreement": agreement_term(similarity, settings)}
        scored.append(Chosen(c, reliability(terms, settings, uses_norm)))
    return scored


def select_references(scored: list[Chosen], settings: HarvestSettings, fps: float, k: int | None = None,
                      verify: Callable[[Candidate], bool] | None = None) -> list[Chosen]:
    """Top ``k`` by total, greedily, each new pick penalised for being close in time *and* pose to an earlier one.

    Candidates whose total is 0 (a failing term: someone else, a profile) are never chosen;
    with ``verify``, a pick it rejects (not a face) is skipped, trying at most ``3 k`` picks.
    """
    k = settings.max_refs if k is None else k
    min_gap = max(1, int(round(settings.min_gap_s * fps)))
    remaining = [s for s in scored if s.terms.total > 0.0]
    chosen: list[Chosen] = []
    attempts = 0
    while remaining and len(chosen) < k and attempts < 3 * k:
        def value(s: Chosen) -> float:
            redundancy = 0.0
            for c in chosen:
                dt = abs(s.candidate.frame_index - c.candidate.frame_index) / (10.0 * min_gap)
                dyaw = abs(s.candidate.yaw - c.candidate.yaw) / 0.15
                redundancy = max(redundancy, math.exp(-dt - dyaw))
            return s.terms.total * (1.0 - 0.5 * redundancy)

        best = max(remaining, key=value)
        attempts += 1
        remaining.remove(best)
        if verify is not None and not verify(best.candidate):
            continue
        chosen.append(best)
        remaining = [s for s in remaining if not (
            s.candidate.track == best.candidate.track and abs(s.candidate.frame_index - best.candidate.frame_index) < min_gap)]
    return chosen


# --- a second opinion --------------------------------------------------------------------------

VERIFY_SIDE = 224  # crops are checked at this size: the face then spans ~110 px (MMOD finds faces from ~80 px)


@dataclass(frozen=True, eq=False)
class FaceVerifier:
    """dlib's CNN face detector (MMOD, CC0) as an independent check that a loose crop shows a face.

    The main detector's rare confident false positives (a hand on a microphone, a patterned
    tie) then cannot become references: the crop must also hold an MMOD face whose centre is
    near the crop's 5 points.
    """

    model: Any
    min_confidence: float = 0.3

    def is_face(self, crop: np.ndarray, crop_kps5: np.ndarray) -> bool:
        """Whether ``uint8[H, W, 3]`` holds a face centred near ``crop_kps5`` float32[5, 2]."""
        scale = VERIFY_SIDE / max(crop.shape[:2])
        small = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        centre = np.asarray(crop_kps5, np.float64).mean(axis=0) * scale
        for found in self.model(np.ascontiguousarray(small), 0):
            if found.confidence < self.min_confidence:
                continue
            rect = found.rect
            middle = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
            if np.linalg.norm(middle - centre) <= 0.2 * VERIFY_SIDE:
                return True
        return False


def load_verifier(models_dir: str | Path | None = None) -> FaceVerifier | None:
    """The MMOD verifier, or None where its weights are not installed (references are then unchecked)."""
    import dlib

    from iconface_video.weights import find_model_file
    from iconface_video.weights.catalogue import get_model
    from iconface_video.weights.store import embedded_dir

    try:
        path = find_model_file("dlib-mmod", "mmod_human_face_detector.dat", models_dir)
    except KeyError:
        # Not in the catalogue yet: it ships beside the dlib embedder in face-recognition-models.
        folder = embedded_dir(get_model("dlib-resnet"))
        path = None if folder is None else folder / "mmod_human_face_detector.dat"
    except Exception:  # MissingModelError: run without the check
        path = None
    if path is None or not Path(path).is_file():
        return None
    return FaceVerifier(dlib.cnn_face_detection_model_v1(str(path)))

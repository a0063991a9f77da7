"""Reliability terms and reference choice: clean beats degraded, crops are exact, choices are diverse."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from iconface_video.analysis.harvest import (
    Candidate,
    HarvestSettings,
    candidate_from_json,
    candidate_to_json,
    agreement_term,
    aligned_crops,
    load_verifier,
    loose_crop,
    observation_terms,
    score_against_centroid,
    select_references,
    total_score,
)
from iconface_video.analysis.quality import Detail, blockiness, frontality_term, native_quality
from iconface_video.analysis.track import box_iou
from iconface_video.imageio import imread
from iconface_video.types import FaceObs

SETTINGS = HarvestSettings()
FRONTAL = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)

PHOTO_GLOBS = [
    "src/ageitgey__face_recognition/examples/*.jp*g", "src/ageitgey__face_recognition/examples/*.png",
    "src/cmusatyalab__openface/images/examples/*.jpg", "src/serengil__deepface/tests/unit/dataset/img1*.jpg",
    "src/timesler__facenet-pytorch/data/test_images/*/1.jpg",
]
FAST_GLOBS = ["src/cmusatyalab__openface/images/examples/*.jpg"]


def degrade(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The four degradations of the reliability claim, made with OpenCV."""
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), 2.5)
    if kind == "downscale":
        h, w = image.shape[:2]
        small = cv2.resize(image, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "noise":
        return np.clip(image + rng.normal(0, 15, image.shape), 0, 255).astype(np.uint8)
    if kind == "jpeg":
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 15])
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    raise ValueError(kind)


def _reliabilities(detector, image: np.ndarray) -> list[tuple[FaceObs, float]]:
    faces = detector.detect([image])[0]
    if not faces:
        return []
    crops = aligned_crops(image, np.stack([f.kps5 for f in faces]))
    return [(f, total_score(observation_terms(c, f, SETTINGS, native=native_quality(image, f.box)), SETTINGS, False))
            for f, c in zip(faces, crops)]


def _clean_beats_degraded(media_dir: Path, globs: list[str]) -> tuple[dict[str, list[int]], list[str]]:
    from iconface_video.faces.detect import load_detector

    detector = load_detector("mtcnn")
    rng = np.random.default_rng(0)
    wins: dict[str, list[int]] = {}
    losses = []
    files = sorted(p for pattern in globs for p in media_dir.glob(pattern))
    assert files, "the shared face photos are missing"
    for path in files:
        image = cv2.cvtColor(imread(str(path)), cv2.COLOR_BGR2RGB)
        if max(image.shape[:2]) > 1200:  # as a video frame would be; keeps the test quick
            scale = 1200 / max(image.shape[:2])
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        clean = [(f, r) for f, r in _reliabilities(detector, image) if f.eye_distance >= 20]
        for kind in ("blur", "downscale", "noise", "jpeg"):
            degraded = _reliabilities(detector, degrade(image, kind, rng))
            for face, score in clean:
                match = [r for g, r in degraded if box_iou(np.array([face.box]), np.array([g.box]))[0, 0] > 0.5]
                degraded_score = match[0] if match else 0.0  # a face the detector lost is least reliable
                won = score > degraded_score
                wins.setdefault(kind, []).append(int(won))
                if not won:
                    losses.append(f"{path.name} {kind}: clean {score:.3f} <= degraded {degraded_score:.3f}")
    return wins, losses


@pytest.mark.media
def test_clean_outranks_degraded_on_a_few_photos(media_dir):
    wins, losses = _clean_beats_degraded(media_dir, FAST_GLOBS)
    total = sum(len(v) for v in wins.values())
    rate = sum(sum(v) for v in wins.values()) / total
    print({k: f"{sum(v)}/{len(v)}" for k, v in wins.items()}, f"{rate:.3f}", losses)
    assert total >= 24
    assert rate >= 0.95, losses


@pytest.mark.slow
@pytest.mark.media
def test_clean_outranks_degraded_on_all_shared_face_photos(media_dir):
    wins, losses = _clean_beats_degraded(media_dir, PHOTO_GLOBS)
    total = sum(len(v) for v in wins.values())
    rate = sum(sum(v) for v in wins.values()) / total
    print({k: f"{sum(v)}/{len(v)}" for k, v in wins.items()}, f"{rate:.3f}", losses)
    assert total >= 100
    assert rate >= 0.95, losses


def test_frontality_falls_with_yaw():
    turned = FRONTAL.copy()
    turned[2, 0] += 15  # nose towards one eye: the head is turned
    assert frontality_term(FRONTAL) > 0.95
    assert frontality_term(turned) < frontality_term(FRONTAL) - 0.3


def test_blockiness_sees_jpeg_blocks():
    rng = np.random.default_rng(1)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (128, 128), dtype=np.uint8), (0, 0), 3).astype(np.float32)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    ok, data = cv2.imencode(".jpg", smooth.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 10])
    blocky = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    assert blockiness(smooth) < 1.15 < blockiness(blocky)


def test_agreement_term_is_monotone_and_zero_for_strangers():
    values = [agreement_term(s, SETTINGS) for s in (0.5, 0.85, 0.88, 0.91, 0.95, 1.0)]
    assert values[0] == values[1] == 0.0
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[3] == pytest.approx(0.5) and values[-1] == pytest.approx(1.0)


def test_loose_crop_copies_pixels_and_maps_points_exactly():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    obs = FaceObs(0, (100.0, 50.0, 160.0, 110.0), 0.99, FRONTAL * 0.6 + np.array([100, 50], np.float32))
    crop = loose_crop(image, obs, scale=2.0)
    assert crop.image.shape[0] == crop.image.shape[1] == 120
    x, y = np.round(crop.transform @ np.array([130.0, 80.0, 1.0])).astype(int)
    assert np.array_equal(crop.image[y, x], image[80, 130]), "the crop is a copy, not a resampling"
    expected = obs.kps5 @ crop.transform[:, :2].T + crop.transform[:, 2]
    assert np.allclose(crop.kps5, expected)


def test_loose_crop_turns_a_sideways_face_upright():
    image = np.zeros((300, 300, 3), np.uint8)
    sideways = np.stack([FRONTAL[:, 1], 100 - FRONTAL[:, 0]], axis=1) + 100  # rotated 90 degrees
    obs = FaceObs(0, (100.0, 100.0, 200.0, 200.0), 0.99, sideways.astype(np.float32))
    crop = loose_crop(image, obs)
    eyes = crop.kps5[1] - crop.kps5[0]
    assert eyes[0] > 0 and abs(eyes[1]) < 1e-3, "eyes level, left eye on the left"
    assert crop.kps5[3, 1] > crop.kps5[0, 1], "mouth below the eyes"


def _candidate(track: int, frame: int, yaw: float, partial: float, embedding: np.ndarray) -> Candidate:
    terms = {"sharpness": partial, "size": partial, "frontality": partial, "detector": 1.0, "exposure": 1.0,
             "identity_norm": 1.0, "occlusion": 1.0}
    laplacian = SETTINGS.sharpness_scale * partial / (1 - partial)  # gives sharpness == partial
    sharp = Detail(laplacian, 1.0, 1.0, laplacian / 2, 1.0)
    return Candidate(track, frame, (0, 0, 10, 10), FRONTAL, terms, partial, yaw, embedding, f"{frame}.png",
                     FRONTAL, np.eye(2, 3, dtype=np.float32), sharp)


def test_selection_prefers_spread_in_time_and_pose_and_rejects_strangers():
    me = np.ones(8, np.float32) / np.sqrt(8)
    stranger = np.eye(8, dtype=np.float32)[0]
    candidates = [_candidate(0, f, 0.0, 0.9, me) for f in (100, 101, 102, 103)]  # a burst of near-identical frames
    candidates += [_candidate(1, 400, 0.2, 0.8, me), _candidate(2, 900, -0.2, 0.75, me)]
    candidates += [_candidate(3, 600, 0.0, 0.99, stranger)]  # the best frame, but of someone else
    scored = score_against_centroid(candidates, me, SETTINGS, uses_norm=False)
    chosen = select_references(scored, SETTINGS, fps=25.0, k=3)
    frames = sorted(c.candidate.frame_index for c in chosen)
    assert 600 not in frames, "a face that does not agree with the identity is never a reference"
    assert len([f for f in frames if 100 <= f <= 103]) == 1, "one frame of the burst, not three"
    assert frames[1:] == [400, 900]
    assert all(c.terms.centroid_agreement == pytest.approx(1.0) for c in chosen)


def test_selection_skips_what_the_verifier_rejects():
    me = np.ones(8, np.float32)
    candidates = [_candidate(t, 5000 * t, 0.0, 0.9 - 0.1 * t, me) for t in range(4)]
    scored = score_against_centroid(candidates, me / np.linalg.norm(me), SETTINGS, uses_norm=False)
    chosen = select_references(scored, SETTINGS, fps=25.0, k=2, verify=lambda c: c.track != 0)
    assert [c.candidate.track for c in chosen] == [1, 2]


@pytest.mark.media
def test_verifier_accepts_a_face_and_rejects_texture(media_dir):
    verifier = load_verifier()
    if verifier is None:
        pytest.skip("dlib MMOD weights (face-recognition-models) not installed")
    from iconface_video.faces.detect import load_detector

    photo = cv2.cvtColor(imread(str(media_dir / "src/ageitgey__face_recognition/examples/obama-480p.jpg")),
                         cv2.COLOR_BGR2RGB)
    face = load_detector("mtcnn").detect([photo])[0][0]
    crop = loose_crop(photo, face)
    assert verifier.is_face(crop.image, crop.kps5)
    texture = cv2.resize(np.random.default_rng(3).integers(0, 256, (12, 12, 3), dtype=np.uint8), crop.image.shape[:2][::-1],
                         interpolation=cv2.INTER_CUBIC)
    assert not verifier.is_face(texture, crop.kps5)


def test_sharp_identities_keep_their_sharpness_and_soft_ones_are_scored_against_their_sharpest():
    me = np.ones(8, np.float32) / np.sqrt(8)
    sharp = [_candidate(0, f, 0.0, p, me) for f, p in ((10, 0.8), (40, 0.7))]  # Laplacian 1200 and 700
    scored = score_against_centroid(sharp, me, SETTINGS, uses_norm=False)
    assert [s.terms.sharpness for s in scored] == [round(c.terms["sharpness"], 4) for c in sharp]
    soft = [dataclasses.replace(c, detail=Detail(30.0 + i, 0.9, 1.0, fine, 1.0))
            for i, (c, fine) in enumerate(zip(sharp * 2, (3.0, 6.0, 9.0, 2.0)))]
    scored = score_against_centroid(soft, me, SETTINGS, uses_norm=False)
    by_fine = sorted(scored, key=lambda s: s.candidate.detail.fine)
    assert [s.terms.sharpness for s in by_fine] == sorted(s.terms.sharpness for s in scored)
    # Against half the 90th percentile of fine detail (8.1): the sharpest scores near 2/3, less its noise discount.
    assert by_fine[-1].terms.sharpness == pytest.approx(9.0 / (9.0 + 4.05) * 0.9, abs=1e-4)


def test_candidates_survive_a_checkpoint():
    c = _candidate(3, 77, 0.1, 0.6, np.arange(8, dtype=np.float32))
    back = candidate_from_json(json.loads(json.dumps(candidate_to_json(c))))
    assert back.detail == c.detail and back.terms == c.terms and np.array_equal(back.embedding, c.embedding)

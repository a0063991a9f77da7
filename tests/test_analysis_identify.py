"""Identities: clustering track embeddings across shots, the co-occurrence rule, names from user photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from iconface_video.analysis.identify import (
    IdentifySettings,
    RejectSettings,
    TrackSummary,
    build_identities,
    cluster_tracks,
    pin_names,
    rejection_reason,
)
from iconface_video.imageio import imread


def noisy(base: np.ndarray, seed: int, spread: float = 0.15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = base / np.linalg.norm(base) + spread * rng.normal(size=base.shape) / np.sqrt(base.size)
    return (v / np.linalg.norm(v)).astype(np.float32)


def people(n: int, dim: int = 128) -> list[np.ndarray]:
    return [np.random.default_rng(100 + i).normal(size=dim).astype(np.float32) for i in range(n)]


def test_same_person_across_shots_is_one_identity():
    a, b = people(2)
    tracks = [
        TrackSummary(0, 0, 0, 50, noisy(a, 1)),
        TrackSummary(1, 1, 60, 90, noisy(b, 2)),
        TrackSummary(2, 2, 100, 150, noisy(a, 3)),
        TrackSummary(3, 2, 100, 150, noisy(b, 4)),
    ]
    labels = cluster_tracks(tracks)
    assert labels[0] == labels[2] and labels[1] == labels[3] and labels[0] != labels[1]
    assert labels[0] == 0, "identity 0 is the first face seen"


def test_two_faces_on_screen_together_are_never_merged():
    a = people(1)[0]
    # Identical twins by embedding, but in the same frames: two people.
    tracks = [TrackSummary(0, 0, 0, 50, noisy(a, 1, 0.01)), TrackSummary(1, 0, 10, 40, noisy(a, 2, 0.01))]
    labels = cluster_tracks(tracks)
    assert labels[0] != labels[1]


def test_build_identities_gives_unit_centroids_and_owners():
    a, b = people(2)
    tracks = [TrackSummary(i, i, 100 * i, 100 * i + 50, noisy(a if i % 2 == 0 else b, i)) for i in range(6)]
    identities, owner = build_identities(tracks)
    assert len(identities) == 2
    for identity in identities:
        assert np.linalg.norm(identity.centroid) == pytest.approx(1.0, abs=1e-5)
        assert all(owner[t] == identity.id for t in identity.tracks)
    assert sorted(t for i in identities for t in i.tracks) == list(range(6))


def test_names_go_to_the_matching_identity_or_a_new_one():
    a, b, c = people(3)
    tracks = [TrackSummary(0, 0, 0, 10, noisy(a, 1)), TrackSummary(1, 1, 20, 30, noisy(b, 2))]
    identities, _ = build_identities(tracks)
    named, ids = pin_names(identities, [("Bea", np.stack([noisy(b, 5), noisy(b, 6)])), ("Cy", noisy(c, 7)[None])])
    assert named[ids["Bea"]].name == "Bea" and named[ids["Bea"]].tracks == (1,)
    assert named[ids["Cy"]].tracks == () and named[ids["Cy"]].name == "Cy"
    assert len(named) == 3


@pytest.mark.media
def test_real_photos_cluster_by_person(media_dir):
    """The threshold, checked with the real embedder on labelled photos: two people, several photos each."""
    from iconface_video.faces.detect import load_detector
    from iconface_video.faces.embed import load_embedder

    base = media_dir / "src/ageitgey__face_recognition/examples"
    files = {"obama": ["obama-480p.jpg", "obama_small.jpg", "knn_examples/train/obama/obama.jpg",
                       "knn_examples/train/obama/obama2.jpg"],
             "biden": ["knn_examples/train/biden/biden.jpg", "knn_examples/train/biden/biden2.jpg"],
             "alex": ["alex-lacamoire.png", "knn_examples/train/alex_lacamoire/img1.jpg"]}
    detector, embedder = load_detector("mtcnn"), load_embedder("dlib")
    tracks, truth = [], []
    for person, names in files.items():
        for name in names:
            image = cv2.cvtColor(imread(str(base / name)), cv2.COLOR_BGR2RGB)
            face = max(detector.detect([image])[0], key=lambda o: o.eye_distance)
            vector = embedder.embed(image, face.kps5[None])[0]
            n = len(tracks)
            tracks.append(TrackSummary(n, n, 100 * n, 100 * n + 10, vector))  # as if each were a shot of its own
            truth.append(person)
    labels = cluster_tracks(tracks, IdentifySettings())
    for i in range(len(tracks)):
        for j in range(len(tracks)):
            assert (labels[i] == labels[j]) == (truth[i] == truth[j]), (truth[i], truth[j], labels)


def _track(frames: int, score: float, eye: float, interpolated_every: int = 0):
    """A track's arrays: ``frames`` consecutive frames, constant score and eye distance."""
    kps = np.array([[0, 0], [eye, 0], [eye / 2, eye / 2], [0, eye], [eye, eye]], np.float32)
    detected = np.ones(frames, bool)
    if interpolated_every:
        detected[1::interpolated_every] = False
    return np.arange(100, 100 + frames), np.full(frames, score, np.float32), np.broadcast_to(kps, (frames, 5, 2)), detected


def test_blips_low_scores_and_tiny_faces_are_rejected_with_a_reason():
    settings = RejectSettings()
    assert rejection_reason(*_track(60, 0.99, 30), shot_frames=200, fps=25) is None
    assert rejection_reason(*_track(4, 0.99, 30), shot_frames=200, fps=25, settings=settings).startswith("short: 4 frames")
    # A short track filling its short shot is a person seen briefly, not a blip.
    assert rejection_reason(*_track(6, 0.99, 30), shot_frames=8, fps=25) is None
    assert rejection_reason(*_track(60, 0.87, 30), shot_frames=200, fps=25).startswith("low score: median detector score 0.870")
    assert rejection_reason(*_track(60, 0.99, 6), shot_frames=200, fps=25).startswith("small: median eye distance 6.0 px")
    # Interpolated frames do not count towards the score (theirs is their neighbours' minimum).
    frames, scores, kps, detected = _track(60, 0.99, 30, interpolated_every=2)
    scores = np.where(detected, scores, 0.1).astype(np.float32)
    assert rejection_reason(frames, scores, kps, detected, shot_frames=200, fps=25) is None

"""Identities: clustering track embeddings across shots, the co-occurrence rule, names from user photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from iconface_video.analysis.identify import IdentifySettings, TrackSummary, build_identities, cluster_tracks, pin_names


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
            image = cv2.cvtColor(cv2.imread(str(base / name)), cv2.COLOR_BGR2RGB)
            face = max(detector.detect([image])[0], key=lambda o: o.eye_distance)
            vector = embedder.embed(image, face.kps5[None])[0]
            n = len(tracks)
            tracks.append(TrackSummary(n, n, 100 * n, 100 * n + 10, vector))  # as if each were a shot of its own
            truth.append(person)
    labels = cluster_tracks(tracks, IdentifySettings())
    for i in range(len(tracks)):
        for j in range(len(tracks)):
            assert (labels[i] == labels[j]) == (truth[i] == truth[j]), (truth[i], truth[j], labels)

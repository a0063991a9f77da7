"""Tracking: Hungarian association by overlap and embedding, interpolation over misses, cuts, checkpoints."""

from __future__ import annotations

import json

import numpy as np

from iconface_video.analysis.track import Tracker, TrackSettings, box_iou, interpolate
from iconface_video.types import FaceObs

KPS_UNIT = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)


def face(frame: int, x: float, y: float, size: float = 60.0, embedding=None, score: float = 0.99) -> FaceObs:
    kps = KPS_UNIT * size + np.array([x, y], np.float32)
    return FaceObs(frame, (x, y, x + size, y + size), score, kps, embedding)


def person(seed: int, dim: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def run(tracker: Tracker, frames: dict[int, list[FaceObs] | None], shot_of=lambda f: 0):
    for index in sorted(frames):
        tracker.step(index, shot_of(index), frames[index])
    tracker.end_shot()
    return tracker.pop_finished()


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert np.allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_two_moving_faces_keep_their_tracks():
    frames = {f: [face(f, 100 + 3 * f, 100), face(f, 400 - 3 * f, 120)] for f in range(30)}
    records, dropped = run(Tracker(), frames)
    assert not dropped and len(records) == 2
    for record in records:
        xs = record.boxes[:, 0]
        assert len(record.frames) == 30
        assert np.all(np.abs(np.diff(xs)) == 3), "each track follows one face"


def test_missed_detections_are_interpolated():
    frames = {f: [face(f, 100 + 2 * f, 100)] for f in range(20)}
    for f in (7, 8, 9):
        frames[f] = []  # occluded for three frames
    records, _ = run(Tracker(), frames)
    assert len(records) == 1
    record = records[0]
    assert list(record.frames) == list(range(20))
    assert list(np.flatnonzero(record.interpolated)) == [7, 8, 9]
    assert np.allclose(record.boxes[8, 0], 100 + 2 * 8), "linear in between"


def test_long_miss_ends_the_track():
    frames = {f: [face(f, 100, 100)] for f in range(10)}
    frames.update({f: [] for f in range(10, 30)})
    frames.update({f: [face(f, 100, 100)] for f in range(30, 40)})
    records, _ = run(Tracker(TrackSettings(max_miss=12)), frames)
    assert [(r.frames[0], r.frames[-1]) for r in records] == [(0, 9), (30, 39)]


def test_tracks_never_cross_a_cut():
    frames = {f: [face(f, 100, 100)] for f in range(20)}
    records, _ = run(Tracker(), frames, shot_of=lambda f: 0 if f < 10 else 1)
    assert [(r.shot, int(r.frames[0]), int(r.frames[-1])) for r in records] == [(0, 0, 9), (1, 10, 19)]


def test_embeddings_keep_identities_apart_when_faces_swap_places():
    """Two people trade places from one frame to the next. Overlap alone would continue each
    track with the other person; the embeddings forbid that, so no track mixes the two."""
    a, b = person(1), person(2)
    frames = {f: [face(f, 100, 100, embedding=a), face(f, 300, 100, embedding=b)] for f in range(10)}
    frames.update({f: [face(f, 300, 100, embedding=a), face(f, 100, 100, embedding=b)] for f in range(10, 20)})
    records, _ = run(Tracker(), frames)
    assert len(records) == 4
    for r in records:
        assert np.all(r.boxes[:, 0] == r.boxes[0, 0]), "a track never jumps to the other person"
        similarity = max(float(r.embedding @ (v / np.linalg.norm(v))) for v in (a, b))
        assert similarity > 0.999, "each track holds one person's embeddings only"


def test_detect_every_k_fills_the_skipped_frames():
    k = 4
    frames = {f: ([face(f, 100 + f, 100)] if f % k == 0 else None) for f in range(21)}
    records, _ = run(Tracker(TrackSettings(max_miss=2 * k + 1, min_detections=2)), frames)
    assert len(records) == 1
    r = records[0]
    assert list(r.frames) == list(range(21))
    assert int((~r.interpolated).sum()) == 6
    assert np.allclose(r.boxes[:, 0], 100 + np.arange(21))


def test_short_false_detections_are_dropped():
    frames = {f: [face(f, 100, 100)] for f in range(15)}
    frames[5] = frames[5] + [face(5, 500, 300)]  # one stray detection
    records, dropped = run(Tracker(), frames)
    assert len(records) == 1 and len(dropped) == 1


def test_interpolate_is_exact_at_the_ends():
    a, b = face(0, 0, 0), face(4, 40, 20)
    assert interpolate(a, b, 0).box == a.box
    assert np.allclose(interpolate(a, b, 2).kps5, (a.kps5 + b.kps5) / 2)
    assert interpolate(a, b, 2).interpolated


def test_checkpoint_round_trip_gives_the_same_tracks():
    a = person(3)
    frames = {f: [face(f, 100 + f, 100, embedding=a)] for f in range(40)}
    frames[20] = []
    whole, _ = run(Tracker(), frames)
    tracker = Tracker()
    finished = []
    for f in range(25):
        tracker.step(f, 0, frames[f])
    state = json.loads(json.dumps(tracker.state()))
    restored = Tracker.from_state(state)
    for f in range(25, 40):
        restored.step(f, 0, frames[f])
    restored.end_shot()
    finished += restored.pop_finished()[0]
    assert len(finished) == len(whole) == 1
    assert np.array_equal(finished[0].frames, whole[0].frames)
    assert np.allclose(finished[0].boxes, whole[0].boxes)
    assert np.array_equal(finished[0].interpolated, whole[0].interpolated)

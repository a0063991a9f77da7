"""Shot boundaries: synthetic cuts, flashes and fades, checkpoint round trips, and the real multi-shot clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iconface_video.analysis.shots import ShotDetector, frame_features

GROUND_TRUTH = json.loads((Path(__file__).parent / "data" / "clips_groundtruth.json").read_text())["clips"]


def _texture(seed: int, shape=(90, 160)) -> np.ndarray:
    """A smooth random colour picture ``uint8[H, W, 3]`` (blobs, so it has edges and a histogram)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (shape[0] // 10, shape[1] // 10, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _jitter(image: np.ndarray, seed: int) -> np.ndarray:
    """The same picture with camera noise and a 1-pixel shift: content that did not change."""
    rng = np.random.default_rng(seed)
    noisy = image.astype(np.int16) + rng.normal(0, 3, image.shape).astype(np.int16)
    return np.clip(np.roll(noisy, seed % 2, axis=1), 0, 255).astype(np.uint8)


def _starts(frames: list[np.ndarray]) -> list[tuple[int, str]]:
    detector = ShotDetector()
    decided = []
    for index, image in enumerate(frames):
        decided += detector.push(index, image)
    decided += detector.flush()
    assert [b.frame_index for b in decided] == list(range(len(frames))), "every frame is decided once, in order"
    return [(b.frame_index, b.transition) for b in decided if b.transition]


def test_hard_cut_is_found_and_noise_is_not_a_cut():
    a, b = _texture(1), _texture(2)
    frames = [_jitter(a, i) for i in range(30)] + [_jitter(b, i) for i in range(30)]
    assert _starts(frames) == [(0, "start"), (30, "cut")]


def test_single_flash_frame_is_not_a_cut():
    a = _texture(3)
    frames = [_jitter(a, i) for i in range(40)]
    frames[20] = np.full_like(a, 250)  # a photographer's flash: one white frame
    assert _starts(frames) == [(0, "start")]


def test_fade_through_black_starts_a_shot_marked_fade():
    a, b = _texture(4), _texture(5)
    fade_out = [(a * (1 - t)).astype(np.uint8) for t in np.linspace(0, 1, 12)]
    black = [np.zeros_like(a)] * 5
    fade_in = [(b * t).astype(np.uint8) for t in np.linspace(0.05, 1, 12)]
    frames = [a] * 20 + fade_out + black + fade_in + [b] * 20
    starts = _starts(frames)
    assert starts[0] == (0, "start")
    assert len(starts) == 2 and starts[1][1] == "fade"
    first_content = 20 + 12 + 5  # the fade-in's first frame
    assert first_content - 2 <= starts[1][0] <= first_content + 3


def test_checkpoint_state_resumes_to_the_same_boundaries():
    frames = [_jitter(_texture(6), i) for i in range(25)] + [_jitter(_texture(7), i) for i in range(25)] + \
             [_jitter(_texture(8), i) for i in range(25)]
    whole = _starts(frames)
    detector = ShotDetector()
    decided = []
    for index, image in enumerate(frames[:40]):
        decided += detector.push(index, image)
    state = json.loads(json.dumps(detector.state()))  # must survive JSON
    resume_at = decided[-1].frame_index + 1
    restored = ShotDetector.from_state(state)
    for index in range(resume_at, len(frames)):
        decided += restored.push(index, frames[index])
    decided += restored.flush()
    assert [(b.frame_index, b.transition) for b in decided if b.transition] == whole


def _clip_cuts(path: Path) -> list[int]:
    from iconface_video.io.reader import read_frames

    detector = ShotDetector()
    decided = []
    for frame in read_frames(path):
        decided += detector.push_features(frame.index, frame_features(frame.image))
    decided += detector.flush()
    return [b.frame_index for b in decided if b.transition in ("cut", "fade")]


@pytest.mark.media
@pytest.mark.parametrize("clip", ["short_hamilton_clip", "issue-134-rotate", "goldeneye-vfr-drop3", "issue-195-aspect-ratio"])
def test_real_clip_cuts_match_ground_truth(media_dir, clip):
    truth = GROUND_TRUTH[clip]
    found = _clip_cuts(media_dir / truth["path"])
    expected = truth["cuts"]
    hits = sum(any(abs(f - e) <= 1 for f in found) for e in expected)
    precision = hits / max(len(found), 1)
    recall = hits / len(expected)
    print(f"{clip}: found {found}, expected {expected}, precision {precision:.2f}, recall {recall:.2f}")
    assert precision == 1.0 and recall == 1.0

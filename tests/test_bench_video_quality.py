"""The pure parts of ``scripts/bench_video_quality.py``: a reproducible degradation, and the
face-region metrics (PSNR, SSIM, flicker) on synthetic frames."""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from iconface_video.io.reader import read_frames
from iconface_video.train.evaluate import temporal_flicker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_video_quality", ROOT / "scripts" / "bench_video_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def moving_frames(n: int = 8, size: int = 64) -> list[np.ndarray]:
    """``uint8[size, size, 3]`` frames of a soft bright disc drifting right over a gradient."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for t in range(n):
        disc = np.exp(-(((xx - 20 - 2 * t) ** 2 + (yy - 32) ** 2) / 120.0))
        img = np.stack([60 + xx, 80 + yy, 100 + 0 * xx], axis=2) + 120 * disc[..., None]
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def test_degradation_is_drawn_from_the_seed_and_shrinks_the_face_to_48_80_px(bench):
    a, b = bench.sample_degradation(0, 1, 240.0), bench.sample_degradation(0, 1, 240.0)
    assert a == b
    assert a != bench.sample_degradation(1, 1, 240.0) and a != bench.sample_degradation(0, 2, 240.0)
    for seed in range(20):
        d = bench.sample_degradation(seed, 0, 240.0)
        assert 48 <= 240.0 / d.scale <= 80 and 2 <= d.noise_sigma <= 6 and 0.02 <= d.bits_per_pixel <= 0.05
    assert bench.sample_degradation(0, 0, 30.0).scale == 1.0  # a face already small is not enlarged


def test_degraded_clip_repeats_byte_for_byte_and_is_degraded(bench, tmp_path):
    frames = moving_frames()
    d = bench.ClipDegradation(blur_sigma=1.5, scale=3.0, noise_sigma=4.0, bits_per_pixel=0.05)
    one = bench.degrade_clip(frames, Fraction(25), d, 0, 0, tmp_path / "a.mp4")
    two = bench.degrade_clip(frames, Fraction(25), d, 0, 0, tmp_path / "b.mp4")
    other = bench.degrade_clip(frames, Fraction(25), d, 1, 0, tmp_path / "c.mp4")
    assert one.read_bytes() == two.read_bytes() != other.read_bytes()
    decoded = [f.image for f in read_frames(one)]
    assert len(decoded) == len(frames) and decoded[0].shape == frames[0].shape
    err = np.mean([np.abs(x.astype(float) - y).mean() for x, y in zip(decoded, frames)])
    assert 1.0 < err < 40.0  # visibly degraded, still the same picture
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_degrade_frame_blurs_and_adds_noise(bench):
    frame = moving_frames(1)[0]
    d = bench.ClipDegradation(blur_sigma=2.0, scale=4.0, noise_sigma=0.0, bits_per_pixel=0.05)
    out = bench.degrade_frame(frame, d, np.random.default_rng(0))
    assert out.shape == frame.shape and out.dtype == np.uint8
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
    assert lap(out) < lap(frame)
    noisy = bench.degrade_frame(frame, bench.ClipDegradation(2.0, 4.0, 5.0, 0.05), np.random.default_rng(0))
    assert 2.0 < np.abs(noisy.astype(float) - out).mean() < 6.0


def test_region_metrics_on_synthetic_frames(bench):
    truth = np.stack(moving_frames(6))
    ids = np.arange(6)
    offset = bench.score_setting(np.clip(truth.astype(int) + 10, 0, 255).astype(np.uint8), truth, ids)
    assert offset["flicker"] == 0.0  # a constant error does not flicker
    assert offset["psnr"] == pytest.approx(20 * np.log10(255 / 10), abs=0.2) and offset["ssim"] > 0.9
    assert offset["id_cos"] is None and offset["frames"] == 6

    rng = np.random.default_rng(0)
    noisy = np.clip(truth + rng.normal(0, 8, truth.shape), 0, 255).astype(np.uint8)
    scored = bench.score_setting(noisy, truth, ids)
    assert scored["flicker"] > 5 and scored["psnr"] < offset["psnr"] + 5 and scored["ssim"] < offset["ssim"]

    # A change of error across a gap in the frame numbers is not flicker; within a run it is.
    step = truth.astype(int) + 5
    step[3:] += 10
    step = np.clip(step, 0, 255).astype(np.uint8)
    assert bench.score_setting(step, truth, np.array([0, 1, 2, 10, 11, 12]))["flicker"] == 0.0
    assert bench.score_setting(step, truth, ids)["flicker"] > 0.0


def test_temporal_flicker_ignores_motion_the_truth_has():
    truth = np.stack(moving_frames(5))
    assert temporal_flicker(truth, truth) == 0.0
    assert temporal_flicker(truth[[0, 0, 0, 0, 0]], truth) > 0.0  # a frozen output misses the motion
    with pytest.raises(ValueError):
        temporal_flicker(truth[:1], truth[:1])


def test_region_size_follows_the_face_and_summary_averages_clips(bench):
    assert bench.region_size(bench.ARCFACE_EYE_DISTANCE_112) == 112
    assert bench.region_size(10.0) == 64 and bench.region_size(1000.0) == 512
    clips = [{"results": {s: {"psnr": p, "ssim": 0.5, "id_cos": None, "flicker": 1.0} for s in bench.SETTINGS}}
             for p in (20.0, 22.0)]
    summary = bench.summarise(clips)
    assert summary["input"] == {"psnr": 21.0, "ssim": 0.5, "flicker": 1.0}


def test_a_clip_is_named_by_its_content(bench, tmp_path):
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    a.write_bytes(b"same clip")
    b.write_bytes(b"same clip")
    c.write_bytes(b"another clip")
    assert bench.clip_key(a) == bench.clip_key(b) != bench.clip_key(c)

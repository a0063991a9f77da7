"""Temporal smoothing: jitter removed, real motion kept, nothing carried across gaps or resets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from render_fixtures import moving_track

from iconface_video.render.temporal import (
    TemporalSettings,
    TrackAverages,
    contiguous_runs,
    smooth_landmarks,
)


def _kps(track):
    return np.stack([o.kps5 for o in track.obs]), np.array([o.frame_index for o in track.obs])


def test_savgol_removes_jitter_and_keeps_motion():
    clean, frames = _kps(moving_track(1, 60, step=(1.5, -0.7), jitter=0.0))
    noisy, _ = _kps(moving_track(1, 60, step=(1.5, -0.7), jitter=1.0, seed=3))
    smooth = smooth_landmarks(noisy, frames, TemporalSettings.from_strength(1.0))
    err_noisy = np.abs(noisy - clean).mean()
    err_smooth = np.abs(smooth - clean).mean()
    assert err_smooth < 0.5 * err_noisy
    # A clean linear motion is reproduced exactly (no lag, unlike an exponential filter).
    assert np.allclose(smooth_landmarks(clean, frames, TemporalSettings.from_strength(1.0)), clean, atol=1e-3)


def test_strength_zero_is_off_and_gaps_split_runs():
    noisy, frames = _kps(moving_track(1, 30, jitter=1.0))
    assert np.array_equal(smooth_landmarks(noisy, frames, TemporalSettings.from_strength(0.0)), noisy)
    gapped = np.concatenate([frames[:15], frames[15:] + 10])
    assert [(s.start, s.stop) for s in contiguous_runs(gapped)] == [(0, 15), (15, 30)]
    # Two halves filtered on their own equal the filter of the gapped track.
    settings = TemporalSettings.from_strength(1.0)
    whole = smooth_landmarks(noisy, gapped, settings)
    assert np.allclose(whole[:15], smooth_landmarks(noisy[:15], frames[:15], settings))
    assert np.allclose(whole[15:], smooth_landmarks(noisy[15:], frames[15:], settings))
    # Runs shorter than the fit's order are left alone instead of failing.
    assert np.array_equal(smooth_landmarks(noisy[:2], frames[:2], settings), noisy[:2])


def test_track_averages_smooth_reset_and_restart_after_gaps():
    avg = TrackAverages(decay=0.5)
    assert avg.update(7, 0, torch.tensor(0.0)) == 0.0
    assert avg.update(7, 1, torch.tensor(1.0)) == 0.5
    assert avg.update(7, 3, torch.tensor(1.0)) == 1.0  # frame 2 missing: a new run starts
    avg.reset()
    assert avg.update(7, 4, torch.tensor(3.0)) == 3.0
    avg.forget_before(10)
    assert avg.update(7, 10, torch.tensor(5.0)) == 5.0


def test_settings_validate():
    with pytest.raises(ValueError):
        TemporalSettings.from_strength(1.5)
    s = TemporalSettings.from_strength(0.5)
    assert s.window % 2 == 1 and 0 < s.decay < 1

"""Degradations: reproducible per seed, distinct across seeds, in range, bucket-specific."""

from __future__ import annotations

import numpy as np
import pytest

from iconface_video.train import degrade as D


def _face(size: int = 64) -> np.ndarray:
    """A smooth synthetic image with edges, so blur and noise change it measurably."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.4 * np.sin(6 * x), 0.5 + 0.4 * np.cos(5 * y), (x > 0.5) * 0.8 + 0.1], -1)
    return img.astype(np.float32)


@pytest.mark.parametrize("bucket", D.BUCKETS)
def test_same_seed_same_result_other_seed_differs(bucket):
    img = _face()
    a = D.degrade(img, D.sample_rng(3, 17), bucket)
    b = D.degrade(img, D.sample_rng(3, 17), bucket)
    c = D.degrade(img, D.sample_rng(3, 18), bucket)
    assert a.params == b.params
    np.testing.assert_array_equal(a.lq, b.lq)
    assert a.params != c.params
    assert not np.array_equal(a.lq, c.lq)


@pytest.mark.parametrize("bucket", D.BUCKETS)
def test_output_shape_range_and_damage(bucket):
    img = _face()
    for i in range(5):
        d = D.degrade(img, D.sample_rng(0, i), bucket)
        assert d.lq.shape == img.shape and d.lq.dtype == np.float32
        assert 0.0 <= d.lq.min() and d.lq.max() <= 1.0
        assert d.small.shape[0] <= img.shape[0] * 1.25 + 1
        assert np.abs(d.lq - img).mean() > 1e-3  # something was actually degraded


def test_bucket_ranges():
    rng = D.sample_rng(1)
    std = [D.sample_params(rng, "standard", 512) for _ in range(200)]
    sev = [D.sample_params(rng, "severe", 512) for _ in range(200)]
    vid = [D.sample_params(rng, "video", 512) for _ in range(200)]
    assert all(0.1 <= p.blur_sigma[0] <= 10 and 0.8 <= p.scale <= 8 and 60 <= p.jpeg[0] <= 100 for p in std)
    assert {p.blur_kind for p in std} == {"iso", "aniso"}
    assert all(p.kernel_size == 41 for p in std)  # GFPGAN's 41-tap kernel at 512
    assert max(p.scale for p in sev) > 8 and min(p.jpeg[0] for p in sev) < 60
    assert all(p.blur_kind == "motion" and len(p.jpeg) == 2 for p in vid)
    # Blur widths scale with the crop: the same draw at 112 is 112/512 as wide.
    a = D.sample_params(D.sample_rng(5), "standard", 512)
    b = D.sample_params(D.sample_rng(5), "standard", 112)
    assert b.blur_sigma[0] == pytest.approx(a.blur_sigma[0] * 112 / 512)


def test_kernels_are_normalised_and_oriented():
    k = D.gaussian_kernel(21, 4.0, 1.0, 0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    r = np.arange(21) - 10
    width_x = np.sqrt((k.sum(0) * r**2).sum())  # marginal over columns
    width_y = np.sqrt((k.sum(1) * r**2).sum())
    assert width_x == pytest.approx(4.0, rel=0.05) and width_y == pytest.approx(1.0, rel=0.05)
    turned = D.gaussian_kernel(21, 4.0, 1.0, np.pi / 2)  # rotated a quarter turn: axes swap
    np.testing.assert_allclose(turned, k.T, atol=1e-6)
    m = D.motion_kernel(9, 0.0)
    assert m.sum() == pytest.approx(1.0, abs=1e-5)


def test_light_reference_is_mild_and_reproducible():
    img = _face()
    a = D.light_reference(img, D.sample_rng(2, 9))
    b = D.light_reference(img, D.sample_rng(2, 9))
    np.testing.assert_array_equal(a, b)
    flipped_back = a if np.abs(a - img).mean() < np.abs(a[:, ::-1] - img).mean() else a[:, ::-1]
    assert np.abs(flipped_back - img).mean() < 0.06


def test_unknown_bucket_is_an_error():
    with pytest.raises(ValueError, match="unknown degradation bucket"):
        D.sample_params(D.sample_rng(0), "cartoon", 112)

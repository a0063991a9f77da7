"""Alignment: templates, batched similarity fits, warps and the exact inverse for paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from iconface_video.faces.align import (
    estimate_affine,
    invert_affine,
    template,
    transform_points,
    warp_faces,
)


def random_faces(n: int, seed: int = 0, name: str = "ffhq") -> np.ndarray:
    """``float32[n, 5, 2]``: a template rotated, scaled, shifted and jittered."""
    rng = np.random.default_rng(seed)
    base = (template(name, 112) - 56.0)
    angles = rng.uniform(-0.6, 0.6, n)
    scales = rng.uniform(0.5, 3.0, n)
    shifts = rng.uniform(150, 450, (n, 2))
    rot = np.stack([np.stack([np.cos(angles), -np.sin(angles)], 1), np.stack([np.sin(angles), np.cos(angles)], 1)], 1)
    points = np.einsum("nij,kj->nki", rot, base) * scales[:, None, None] + shifts[:, None, :]
    return (points + rng.normal(0, 0.5, points.shape)).astype(np.float32)


def test_template_sizes_scale_consistently():
    assert np.allclose(template("ffhq", 256), template("ffhq", 512) / 2)
    assert np.allclose(template("arcface", 224), template("arcface", 112) * 2)
    # ArcFace-128 crops shift the face 8 px right (insightface's rule), so the eyes stay centred.
    eyes = template("arcface", 128)[:2, 0].mean()
    assert abs(eyes - 64) < 1.5
    with pytest.raises(ValueError, match="unknown alignment template"):
        template("dlib", 112)


def test_estimate_affine_recovers_a_known_similarity_and_matches_opencv():
    kps = random_faces(32)
    M = estimate_affine(kps, "ffhq", 512)
    assert M.shape == (32, 2, 3) and M.dtype == np.float32
    for points, m in zip(kps, M):
        # RANSAC with a huge threshold keeps every point, then OpenCV refines by least squares.
        ref, _ = cv2.estimateAffinePartial2D(points, template("ffhq", 512), method=cv2.RANSAC, ransacReprojThreshold=1e6)
        assert np.allclose(m[:, :2], ref[:, :2], atol=1e-3) and np.allclose(m[:, 2], ref[:, 2], atol=0.2)
    exact = template("arcface", 112)[None] * 3.0 + 10.0
    M_exact = estimate_affine(exact, "arcface", 112)
    assert np.allclose(M_exact[0], [[1 / 3, 0, -10 / 3], [0, 1 / 3, -10 / 3]], atol=1e-5)


def test_estimate_affine_keeps_torch_and_device():
    kps = torch.from_numpy(random_faces(4))
    M = estimate_affine(kps, "arcface", 112)
    assert isinstance(M, torch.Tensor) and M.shape == (4, 2, 3)


def test_warp_then_inverse_round_trip_under_half_a_pixel():
    rng = np.random.default_rng(1)
    # A smooth random image: interpolation error is then far below a pixel's worth of shift.
    small = rng.uniform(0, 1, (1, 3, 24, 24)).astype(np.float32)
    frame = torch.nn.functional.interpolate(torch.from_numpy(small), size=(600, 600), mode="bicubic", align_corners=False)
    kps = random_faces(8, seed=2)
    size = 512
    M = estimate_affine(kps, "ffhq", size)
    crops = warp_faces(frame.expand(8, -1, -1, -1), torch.from_numpy(M), size)
    # Landmarks land on the template: points mapped by M agree with the template.
    # (up to the 0.5 px landmark jitter, magnified by each fit's scale).
    mapped = transform_points(kps, M)
    scale = np.sqrt(np.abs(np.linalg.det(M[:, :, :2])))
    assert (np.abs(mapped - template("ffhq", size)).max(axis=(1, 2)) < 4 * 0.5 * scale).all()
    # Geometric round trip: crop -> source -> crop of point grids is exact to float precision.
    Minv = invert_affine(M)
    grid = rng.uniform(0, size, (8, 50, 2)).astype(np.float32)
    back = transform_points(transform_points(grid, Minv), M)
    assert np.abs(back - grid).max() < 0.5
    # Pixel round trip: warp the crops back into the frame and compare inside each face.
    restored = warp_faces(crops, torch.from_numpy(Minv), 600)
    for i in range(8):
        x0, y0 = kps[i].min(0).astype(int)
        x1, y1 = kps[i].max(0).astype(int)
        diff = (restored[i, :, y0:y1, x0:x1] - frame[0, :, y0:y1, x0:x1]).abs().mean().item()
        assert diff < 0.02, diff


@pytest.mark.parametrize("use_opencv", [True, False])
def test_round_trip_of_a_marked_pixel_within_half_a_pixel(use_opencv):
    """Warp a bright dot into the crop and back: its centre of mass moves by < 0.5 px."""
    frame = torch.zeros(1, 1, 400, 400)
    yy, xx = torch.meshgrid(torch.arange(400.0), torch.arange(400.0), indexing="ij")
    dot = (213.3, 187.6)
    frame[0, 0] = torch.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 3.0**2))
    kps = random_faces(1, seed=5)
    kps = kps - kps.mean(1, keepdims=True) + np.array([200, 200], np.float32)
    M = estimate_affine(kps, "ffhq", 256)
    crop = warp_faces(frame, torch.from_numpy(M), 256, padding_mode="zeros", use_opencv=use_opencv)
    back = warp_faces(crop, torch.from_numpy(invert_affine(M)), 400, padding_mode="zeros", use_opencv=use_opencv)[0, 0]
    w = back / back.sum()
    cx, cy = float((w * xx).sum()), float((w * yy).sum())
    assert abs(cx - dot[0]) < 0.5 and abs(cy - dot[1]) < 0.5


@pytest.mark.parametrize("padding_mode", ["reflection", "zeros", "border"])
def test_opencv_cpu_path_matches_kornia(padding_mode):
    """The CPU fast path (cv2.warpAffine) and kornia's grid_sample sample the same pixels."""
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 255, (300, 320, 3), dtype=np.uint8), (0, 0), 3)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    kps = np.concatenate([random_faces(3, seed=4) * 0.5, random_faces(1, seed=6) * 0.5 - 60])  # one off the edge
    M = torch.from_numpy(estimate_affine(kps, "arcface", 112))
    frames = tensor.expand(4, -1, -1, -1)
    fast = warp_faces(frames, M, 112, padding_mode=padding_mode, use_opencv=True)
    reference = warp_faces(frames, M, 112, padding_mode=padding_mode, use_opencv=False)
    assert fast.shape == reference.shape == (4, 3, 112, 112)
    assert (fast - reference).abs().max() < 5e-3
    # One-channel masks and non-expanded batches take the same path.
    masks = torch.rand(2, 1, 64, 64)
    M2 = torch.from_numpy(estimate_affine(random_faces(2, seed=7) * 0.1, "ffhq", 32))
    assert (warp_faces(masks, M2, 32, use_opencv=True) - warp_faces(masks, M2, 32, use_opencv=False)).abs().max() < 5e-3

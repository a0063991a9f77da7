"""Eye accuracy of the embedded MTCNN against dlib's 68-point eye contours (issue 3).

The truth is the centre of each eye's six contour points from dlib-68 (face_recognition_models),
started from dlib's own detector box; faces dlib's detector misses are left out (from an MTCNN
box dlib-68 itself fails on small blurred faces). ``scripts/measure_eyes.py`` holds the
measurement and gives the wider numbers (labelled photos, faces112).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GROUND_TRUTH = json.loads((ROOT / "tests" / "data" / "faces_groundtruth.json").read_text())


def load_measure_eyes():
    spec = importlib.util.spec_from_file_location("measure_eyes", ROOT / "scripts" / "measure_eyes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("measure_eyes", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.media
def test_mtcnn_eyes_against_dlib68_on_group_photos(media_dir, capsys):
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models (dlib-68 weights) not installed")
    from iconface_video.faces.detect import load_detector

    measure = load_measure_eyes()
    torch.set_num_threads(1)
    detector = load_detector("mtcnn")
    dlib_detect, predictor = measure.dlib_models()
    samples = []
    for entry in GROUND_TRUTH["images"]:
        path = media_dir / entry["path"]
        if not path.is_file():
            pytest.skip(f"{path} missing")
        samples += measure.samples_in_image(detector, dlib_detect, predictor, measure.read_rgb(path), entry["path"])
    trusted = [s for s in samples if s.dlib_box]
    # 13 faces of the 13 counted on these photos: dlib finds every one, so the truth exists for all.
    assert len(trusted) >= 12
    points = np.stack([s.mtcnn for s in trusted])
    truth = np.stack([s.truth for s in trusted])
    err = measure.errors(points, truth)
    stats = measure.summary(err)
    along, down = np.median(measure.signed_bias(points, truth), axis=0)
    with capsys.disabled():
        print(f"\n[mtcnn vs dlib-68] {len(trusted)} faces: eye error / IOD median {stats['median']:.3f}, "
              f"p90 {stats['p90']:.3f}, <5% {stats['within5']:.2f}, <10% {stats['within10']:.2f}; "
              f"median bias along {along:+.3f}, down {down:+.3f}")
    # Measured 2026-11-26 (2-core CPU): median 0.040, p90 0.087, <5% 0.73 (19/26), <10% 0.88
    # (23/26). The worst eyes: a girl looking down with hair over her eyes (no visible eye;
    # both points are guesses) and one face in multiface.jpg where MTCNN's points are 13-19%
    # off (checked by eye on an 8x crop: dlib is on the pupils, MTCNN is not). Margins: 2 eyes.
    assert stats["median"] < 0.045
    assert stats["within5"] >= 0.65
    assert stats["within10"] >= 0.80
    # No sideways drift: MTCNN's eyes sit on the eye line of the contour centres. (The vertical
    # offset, MTCNN ~2.5% of IOD above the contour centre, is a definition difference - pupil vs
    # centre of the eye opening - and is printed, not asserted.)
    assert abs(along) < 0.02

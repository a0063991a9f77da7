"""Occlusion lowers a reference's reliability: sunglasses, a hand or a microphone pasted onto real
held-out face photos (faces112) rank below the clean photo, and clean faces are not penalised."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from occlusion_fixtures import held_out_photos, occluded_below_clean

from iconface_video.analysis.quality import occlusion_evidence
from iconface_video.faces.align import template
from iconface_video.train.config import FACES112_HOLDOUT


@pytest.mark.media
def test_occluded_copies_rank_below_clean_photos(media_dir):
    photos = held_out_photos(media_dir, 8)
    assert len(photos) == 8 * len(FACES112_HOLDOUT)
    below, clean_evidence = occluded_below_clean(photos)
    uncovered = clean_evidence == 0.0
    rates = {name: float(v[uncovered].mean()) for name, v in below.items()}
    print(rates, float(uncovered.mean()))
    assert all(rate >= 0.95 for rate in rates.values()), rates
    assert uncovered.mean() >= 0.85, "most held-out photos carry no occlusion penalty at all"


def test_dark_flat_eyes_read_as_lenses_and_a_missing_lip_line_as_a_covered_mouth():
    flat = np.full((224, 224, 3), 128, np.uint8)
    assert occlusion_evidence(flat) == pytest.approx(1.0), "no lip line: the mouth reads as covered"
    face = flat.copy()
    cv2.line(face, (80, 184), (144, 184), (40, 40, 40), 6)  # a lip line across the mouth
    assert occlusion_evidence(face) == 0.0
    lenses = face.copy()
    for eye in template("arcface", 224)[:2]:
        cv2.ellipse(lenses, (int(eye[0]), int(eye[1])), (30, 20), 0, 0, 360, (20, 20, 20), -1)
    assert occlusion_evidence(lenses) == pytest.approx(1.0)
    pale = face.copy()  # flat eye regions that are not dark are no lenses
    for eye in template("arcface", 224)[:2]:
        cv2.ellipse(pale, (int(eye[0]), int(eye[1])), (30, 20), 0, 0, 360, (115, 115, 115), -1)
    assert occlusion_evidence(pale) == 0.0

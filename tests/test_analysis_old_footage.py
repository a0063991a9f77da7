"""Old footage: nothing is sharp, yet the analysis keeps the cleanest frames the video has, and
excludes frames too blurred for anyone to recognise the face."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from clipgen import write_frames

from iconface_video.analysis.harvest import CandidatePools, HarvestSettings, aligned_crops
from iconface_video.analysis.quality import measure_detail
from iconface_video.analysis.settings import AnalyzeSettings
from iconface_video.analysis.video import analyze_video
from iconface_video.types import FaceObs

TALKING_HEAD = "src/KwaiVGI__LivePortrait/assets/examples/driving/d3.mp4"
STRETCH = 24  # frames per degradation stretch
BLUR = {"old": 2.4, "cleanest": 1.2, "unrecognisable": 9.0}  # Gaussian sigma at 256x256, in this order


def old_footage(source: Path, path: Path) -> Path:
    """A 256x256 clip of three stretches of one talking head, all faded (low contrast, grain):
    soft, less soft (the cleanest the clip has), and blurred past recognition."""
    rng = np.random.default_rng(0)
    frames = []
    with av.open(str(source)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == 3 * STRETCH:
                break
            sigma = list(BLUR.values())[index // STRETCH]
            image = cv2.resize(frame.to_ndarray(format="rgb24"), (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32)
            image = cv2.GaussianBlur(image, (0, 0), sigma)
            faded = image.mean(axis=2, keepdims=True) * 0.45 + 70  # washed-out grey film
            frames.append(np.clip(faded + rng.normal(0, 5, faded.shape[:2])[..., None], 0, 255).astype(np.uint8).repeat(3, 2))
    return write_frames(path, frames)


@pytest.mark.media
def test_old_footage_yields_its_cleanest_frames(media_dir, tmp_path):
    clip = old_footage(media_dir / TALKING_HEAD, tmp_path / "old.mp4")
    settings = AnalyzeSettings(max_refs=6, checkpoint_every=0, contact_sheets=False, rotation="none")
    analysis = analyze_video(clip, tmp_path / "old.iconface.json", settings)
    refs = [r.reference for r in analysis.references if r.reference.source == "video"]
    print([(r.frame_index, r.reliability, r.terms.sharpness) for r in refs])
    seen = {o.frame_index for track in analysis.tracks for o in track.obs if not o.interpolated}
    assert len(seen & set(range(2 * STRETCH, 3 * STRETCH))) >= STRETCH // 2, "the detector sees the blurred stretch"
    assert refs, "old footage still yields references"
    stretch = [r.frame_index // STRETCH for r in refs]
    assert 2 not in stretch, "no reference from the stretch nobody could recognise"
    best = max(refs, key=lambda r: r.reliability)
    assert best.frame_index // STRETCH == 1, "the best reference comes from the cleanest stretch"
    assert all(r.reliability < best.reliability for r in refs if r.frame_index // STRETCH == 0)
    # Relative to the video: its cleanest frame scores as a sharp face would, not near zero.
    assert max(r.terms.sharpness for r in refs) >= 0.5


@pytest.mark.media
def test_pool_refuses_a_detected_face_blurred_past_recognition(media_dir, tmp_path):
    """The floor, on a real frame: the same detection kept when clean, refused when blurred."""
    from iconface_video.faces.detect import load_detector

    with av.open(str(media_dir / TALKING_HEAD)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    face = max(load_detector("mtcnn").detect([frame])[0], key=lambda f: f.eye_distance)
    face = FaceObs(face.frame_index, face.box, face.score, face.kps5, np.ones(8, np.float32))
    pools = CandidatePools(tmp_path / "pool", HarvestSettings(), fps=25.0)
    sigma = face.eye_distance / 5  # the eyes, nose and mouth melt into one blob
    for track, image in enumerate((frame, cv2.GaussianBlur(frame, (0, 0), sigma))):
        assert pools.offer(track, face, image, aligned_crops(image, face.kps5[None])[0]) > 0
    assert len(pools.pools.get(0, [])) == 1, "the clean face is a candidate"
    assert not pools.pools.get(1), "the blurred one is not"


def test_structure_floor_separates_blurred_faces_from_faded_grainy_ones():
    """A drawn face: fading and grain keep its coarse structure, a heavy blur removes it."""
    face = np.full((224, 224, 3), 170, np.uint8)
    for centre in ((77, 103), (147, 103)):
        cv2.ellipse(face, centre, (16, 8), 0, 0, 360, (40, 40, 40), -1)
    cv2.line(face, (112, 110), (106, 145), (120, 120, 120), 4)
    cv2.line(face, (84, 184), (140, 184), (60, 60, 60), 5)
    floor = HarvestSettings().min_structure
    faded = np.clip(face * 0.35 + 80 + np.random.default_rng(0).normal(0, 8, face.shape[:2])[..., None], 0, 255)
    blurred = cv2.GaussianBlur(face, (0, 0), 14)
    grainy_blur = np.clip(blurred + np.random.default_rng(1).normal(0, 8, face.shape[:2])[..., None], 0, 255)
    assert measure_detail(face).structure > 3 * floor
    assert measure_detail(faded.astype(np.uint8)).structure > 3 * floor
    assert measure_detail(blurred).structure < floor
    assert measure_detail(grainy_blur.astype(np.uint8)).structure < floor, "grain is not structure"

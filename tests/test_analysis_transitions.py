"""Gradual transitions and flashes: clips made by joining real shared clips with each kind of
transition (PyAV, small frames), run through the shot detector as the analysis runs it.

For each kind, 7 segments of different clips are joined by 6 transitions of that kind; a found
boundary is a hit when it lies within the transition (one frame of slack either side). Recall and
precision per kind must reach 0.95. Single white frames and camera flashes put into the segments
must give no boundary at all. One joined clip of two talking heads also goes through the whole
analysis: no track continues across the dissolve.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from clipgen import TRANSITION_KINDS, flashes, transition, write_frames

from iconface_video.analysis.shots import ShotDetector

SIZE = (192, 108)  # small frames keep the test fast; the detector works on a 160-px copy anyway
SEGMENT = 32  # frames per joined segment
SOURCES = (  # (file name, first frame of a stretch without a cut)
    ("d12.mp4", 0), ("short_hamilton_clip.mp4", 24), ("1.mp4", 0), ("issue-195-aspect-ratio.mp4", 180),
    ("s18.mp4", 0), ("d9.mp4", 0), ("real_1.mp4", 0), ("goldeneye-vfr-drop3.mp4", 62),
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def segments(media_dir) -> list[list[np.ndarray]]:
    """``SEGMENT`` small frames from each source clip."""
    from iconface_video.io.reader import read_frames

    out = []
    for name, first in SOURCES:
        path = next((media_dir / "src").rglob(name))
        out.append([cv2.resize(f.image, SIZE, interpolation=cv2.INTER_AREA) for f in read_frames(path, first, first + SEGMENT)])
    return out


def _boundaries(path) -> list[tuple[int, str]]:
    from iconface_video.io.reader import read_frames

    detector = ShotDetector()
    decided = []
    for frame in read_frames(path):
        decided += detector.push(frame.index, frame.image)
    decided += detector.flush()
    return [(b.frame_index, b.transition) for b in decided if b.transition not in (None, "start")]


def _joined(segments, kind: str, order: int) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """All segments (rotated by ``order`` so each kind joins other pairs) joined by ``kind``."""
    parts = segments[order % len(segments):] + segments[:order % len(segments)]
    frames, spans = list(parts[0]), []
    for part in parts[1:]:
        joined, first, last = transition(frames, list(part), kind)
        spans.append((first, last))
        frames = joined
    return frames, spans


@pytest.mark.media
def test_each_transition_kind_is_found_with_recall_and_precision_095(segments, tmp_path, capsys):
    report = {}
    for number, kind in enumerate(TRANSITION_KINDS):
        frames, spans = _joined(segments, kind, number)
        found = _boundaries(write_frames(tmp_path / f"{kind}.mp4", frames))
        hits = sum(any(first - 1 <= f <= last + 1 for f, _ in found) for first, last in spans)
        true = sum(any(first - 1 <= f <= last + 1 for first, last in spans) for f, _ in found)
        report[kind] = {"recall": hits / len(spans), "precision": true / max(len(found), 1),
                        "found": found, "expected": spans}
    with capsys.disabled():
        print("\n" + json.dumps({k: {"recall": round(v["recall"], 3), "precision": round(v["precision"], 3),
                                     "labels": sorted({t for _, t in v["found"]})} for k, v in report.items()}))
    for kind, result in report.items():
        assert result["recall"] >= 0.95 and result["precision"] >= 0.95, (kind, result)
    assert {t for _, t in report["dissolve"]["found"]} == {"dissolve"}
    assert {t for _, t in report["wipe"]["found"]} <= {"wipe", "dissolve"}
    assert {t for _, t in report["cut"]["found"]} == {"cut"}


@pytest.mark.media
def test_white_frames_and_camera_flashes_are_not_cuts(segments, tmp_path):
    frames = []
    for number, part in enumerate(segments):
        kind = "white" if number % 2 else "camera"
        frames += flashes(part, 8, kind) if number == 0 else flashes(part, 14, kind)
    cuts = [len(p) * i for i, p in enumerate(segments) if i]  # where the segments meet (hard cuts)
    found = _boundaries(write_frames(tmp_path / "flashes.mp4", frames))
    assert [f for f, _ in found if not any(abs(f - c) <= 1 for c in cuts)] == [], found
    assert len(found) == len(cuts)


@pytest.mark.media
def test_no_track_continues_across_a_dissolve(media_dir, tmp_path):
    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.analysis.video import analyze_video
    from iconface_video.io.reader import read_frames

    heads = []
    for name in ("1.mp4", "2.mp4"):
        path = next((media_dir / "src").rglob(name))
        heads.append([cv2.resize(f.image, (256, 256), interpolation=cv2.INTER_AREA) for f in read_frames(path, 0, 30)])
    frames, first, last = transition(heads[0], heads[1], "dissolve")
    clip = write_frames(tmp_path / "heads.mp4", frames)
    analysis = analyze_video(clip, tmp_path / "heads.iconface.json",
                             AnalyzeSettings(max_refs=1, checkpoint_every=0, contact_sheets=False, rotation="none"))
    starts = [s.start for s in analysis.shots]
    assert len(starts) == 2 and first - 1 <= starts[1] <= last + 1, analysis.shots
    assert analysis.shots[1].transition == "dissolve"
    assert analysis.tracks, "both heads are found"
    for track in analysis.tracks:
        frames_of = [o.frame_index for o in track.obs]
        shot = analysis.shots[track.shot]
        assert shot.start <= frames_of[0] and frames_of[-1] <= shot.end

"""Which way the detector looks: ``--rotation auto`` overrides the tag only on clear evidence.

Proves (1) the pure parts: candidate rotations per mode, the eyes-above-mouth check agreeing with
``orientation.points_to_stored``, and the vote (weak or one-frame evidence never beats the tag; a
clear margin in two shots does); (2) on every shared clip, sampled in a few frames, that the vote
keeps each clip as its picture demands (the tag, except the clip whose -90 tag is known to lie),
and on turned copies of the talking heads with a lying tag that it finds the right way up; (3) on generated clips of a real six-person photo
(insightface's sample, so it runs everywhere) stored upright with a wrong tag, stored turned with
a right tag, and stored upside down with no tag, that auto picks the orientation where the faces
are upright and records it as ``video.detect_rotation``, where trusting the tag finds nobody;
(3) on the real PySceneDetect clip tagged -90 but stored upright, that auto finds both people and
harvests references, and that a render pastes back onto the faces with upright aligned crops.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from iconface_video.analysis.schema import AnalysisFileError, load_analysis
from iconface_video.analysis.settings import AnalyzeSettings
from iconface_video.analysis.video import analyze_video
from iconface_video.errors import InputError
from iconface_video.faces.orientation import (
    OrientationVote,
    looks_upright,
    points_to_stored,
    probe_view,
    rotation_candidates,
    upright_confidence,
)
from iconface_video.imageio import imread
from iconface_video.types import FaceObs

ROTATE_CLIP = json.loads((Path(__file__).parent / "data" / "clips_groundtruth.json").read_text())["clips"]["issue-134-rotate"]
# ArcFace-order points of an upright face (left eye, right eye, nose, mouth left, mouth right).
UPRIGHT_KPS = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- pure parts ------------------------------------------------------------------------------------

def test_candidates_per_mode():
    assert rotation_candidates("auto", -90) == (270, 0, 90, 180)
    assert rotation_candidates("auto", 0) == (0, 180, 90, 270)
    assert rotation_candidates("tag", -90) == (270,)
    assert rotation_candidates("tag", 180.0) == (180,)
    assert rotation_candidates("none", 90) == (0,)
    assert rotation_candidates("180", 90) == (180,)
    with pytest.raises(InputError, match="--rotation 'sideways'"):
        rotation_candidates("sideways", 0)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_upright_check_matches_the_detectors_coordinate_mapping(rotation):
    # Points of an upright face in the detector's view, mapped to the stored frame the way the
    # detector maps them: upright only for the rotation they were found in.
    stored = points_to_stored(UPRIGHT_KPS, rotation, (200, 160))
    assert [looks_upright(stored, r) for r in (0, 90, 180, 270)] == [r == rotation for r in (0, 90, 180, 270)]
    mirrored = stored[[1, 0, 2, 4, 3]]  # left/right swapped: not a face seen from the front
    assert not looks_upright(mirrored, rotation)


def _face(rotation: int, score: float) -> FaceObs:
    kps = points_to_stored(UPRIGHT_KPS, rotation, (200, 160))
    return FaceObs(0, (float(kps[:, 0].min()), float(kps[:, 1].min()), float(kps[:, 0].max()), float(kps[:, 1].max())),
                   score, kps)


def _frame(vote: OrientationVote, shot: int, faces: dict[int, list[FaceObs]]) -> None:
    vote.add_frame(shot, {r: upright_confidence(faces.get(r, []), r, vote.min_score) for r in vote.candidates})


def test_the_tag_stands_until_a_challenger_is_clearly_ahead_in_two_shots():
    vote = OrientationVote((270, 0, 90, 180), frames_needed=3, probe_limit=100)
    _frame(vote, 0, {})
    assert vote.chosen is None and vote.current() == 270  # no evidence: the tag
    upright_at_0 = {0: [_face(0, 0.99), _face(0, 0.98)], 180: [_face(180, 0.92)]}
    _frame(vote, 0, upright_at_0)
    assert vote.current() == 270, "one frame never overrides the tag"
    _frame(vote, 0, upright_at_0)
    assert vote.chosen is None and vote.current() == 0, "clear within one shot: used, not yet final"
    _frame(vote, 0, upright_at_0)
    assert vote.chosen is None, "one shot is not enough for a final decision"
    _frame(vote, 1, upright_at_0)
    _frame(vote, 1, upright_at_0)
    assert vote.chosen == 0 and "2 shots" in vote.how
    report = vote.report()
    assert report["chosen"] == 0 and report["tag"] == 270 and report["frames_won"]["0"] == 5


def test_weak_or_mixed_evidence_keeps_the_tag():
    # The film: the faces are upright at the tag's 0; false faces upright at 180 come
    # alone in some frames (starting with the first) and beside the real ones in others.
    vote = OrientationVote((0, 180, 90, 270), frames_needed=5, probe_limit=12)
    for i in range(12):
        faces = {180: [_face(180, 0.97)]} if i % 3 == 0 else {0: [_face(0, 0.99)], 180: [_face(180, 0.93)]}
        _frame(vote, i // 4, faces)
    assert vote.chosen == 0 and "kept" in vote.how
    # A challenger winning every frame but without the margin (1.5 times the tag's evidence) never takes over.
    close = OrientationVote((0, 180), frames_needed=2, probe_limit=6)
    for shot in range(6):
        _frame(close, shot, {0: [_face(0, 0.95)], 180: [_face(180, 0.99)]})
    assert close.chosen == 0
    # Below min_score, or not upright in its view: no evidence, and the frame does not count.
    weak = OrientationVote((0, 90), frames_needed=1)
    _frame(weak, 0, {0: [_face(0, 0.5)], 90: [_face(0, 0.99)]})
    assert weak.chosen is None and weak.frames_with_faces == 0 and weak.probed == 1


def test_the_tag_is_confirmed_early_and_fixed_modes_need_no_vote():
    vote = OrientationVote((0, 180, 90, 270), frames_needed=3)
    for _ in range(3):
        _frame(vote, 0, {0: [_face(0, 0.99)]})
    assert vote.chosen == 0 and vote.probed == 3
    empty = OrientationVote((90, 0, 270, 180), frames_needed=3, probe_limit=2)
    _frame(empty, 0, {})
    _frame(empty, 0, {})
    assert empty.chosen == 90 and "no confident face" in empty.how
    assert OrientationVote((180,)).chosen == 180


# --- every shared clip, and turned copies ----------------------------------------------------------

GROUNDTRUTH = json.loads((Path(__file__).parent / "data" / "clips_groundtruth.json").read_text())["clips"]
TALKING_HEADS = ("d12.mp4", "d3.mp4", "1.mp4", "2.mp4", "s18.mp4", "129.mp4")


def _sample(path: Path, count: int) -> tuple[list[np.ndarray], list[int], int]:
    """``count`` probe views spread over the clip, their shots (from the hand-made cuts where known,
    else one shot) and the container's rotation tag."""
    from iconface_video.io.probe import probe
    from iconface_video.io.reader import read_frames

    info = probe(path)
    total = info.frame_count
    wanted = {int((i + 0.5) * total / count) for i in range(count)}
    cuts = next((c["cuts"] for c in GROUNDTRUTH.values() if Path(c["path"]).name == path.name), [])
    views, shots = [], []
    for index in sorted(wanted):  # each read seeks to the keyframe before it: no whole-clip decode
        frame = next(iter(read_frames(path, index, index + 1)))
        views.append(probe_view(frame.image))
        shots.append(sum(index >= c for c in cuts))
    return views, shots, int(info.video.rotation or 0)


def _vote(detector, views: list[np.ndarray], shots: list[int], tag: int) -> OrientationVote:
    """The vote as the analysis runs it, on these probe views."""
    vote = OrientationVote(rotation_candidates("auto", tag))
    found = {r: detector.detect(views, None, r) for r in vote.candidates}
    for i, shot in enumerate(shots):
        vote.add_frame(shot, {r: upright_confidence(found[r][i], r, vote.min_score) for r in vote.candidates})
    vote.finish()
    return vote


@pytest.mark.media
def test_every_shared_clip_keeps_the_orientation_its_picture_demands(media_dir, models):
    clips = sorted((media_dir / "src").rglob("*.mp4"))
    assert len(clips) >= 19
    wrong = []
    for clip in clips:
        views, shots, tag = _sample(clip, 4)
        truth = next((c.get("detect_rotation", tag % 360) for c in GROUNDTRUTH.values() if Path(c["path"]).name == clip.name),
                     tag % 360)
        vote = _vote(models[0], views, shots, tag)
        if vote.current() != truth:
            wrong.append(f"{clip.name}: {vote.report()}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.media
@pytest.mark.parametrize(("name", "turns", "lying_tag"), [
    ("d12.mp4", 1, 0), ("1.mp4", 2, 0), ("s18.mp4", 3, 0), ("2.mp4", 1, 180), ("129.mp4", 2, 90), ("d3.mp4", 3, 270),
])
def test_turned_copies_with_a_lying_tag_are_found(media_dir, models, name, turns, lying_tag):
    clip = next(p for p in (media_dir / "src").rglob(name))
    views, _, _ = _sample(clip, 4)
    stored = [np.ascontiguousarray(np.rot90(v, k=turns)) for v in views]
    expected = (4 - turns) % 4 * 90  # turning the stored frame by this brings the picture back upright
    assert expected != lying_tag
    vote = _vote(models[0], stored, [0] * len(stored), lying_tag)
    assert vote.current() == expected, vote.report()


# --- generated clips -----------------------------------------------------------------------------

def _group_photo() -> np.ndarray:
    """insightface's six-person sample, scaled to ``uint8[304, 448, 3]`` (faces ~40 px apart eyes)."""
    spec = importlib.util.find_spec("insightface")
    path = Path(next(iter(spec.submodule_search_locations))) / "data/images/t1.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not in this insightface version")
    image = cv2.cvtColor(imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (448, 310), interpolation=cv2.INTER_AREA)[:304]


def _write_clip(path: Path, upright: np.ndarray, stored_turns: int, tag: int, frames: int = 4) -> Path:
    """H.264 clip whose stored frames are ``upright`` turned by ``stored_turns`` quarter turns
    (``np.rot90``), with display rotation ``tag`` in the container; the picture drifts 1 px/frame."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "18"})
        stored = np.rot90(upright, k=stored_turns)
        stream.height, stream.width = stored.shape[:2]
        stream.pix_fmt = "yuv420p"
        if tag:
            stream.set_display_rotation(tag)
        for i in range(frames):
            image = np.ascontiguousarray(np.rot90(np.roll(upright, i, axis=1), k=stored_turns))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def models():
    """The detector and embedder the analysis would load, loaded once for the module."""
    from iconface_video.faces.detect import load_detector
    from iconface_video.faces.embed import load_embedder

    settings = AnalyzeSettings()
    return load_detector(settings.detector), load_embedder(settings.embedder)


def _analyze(clip: Path, rotation: str, models):
    settings = AnalyzeSettings(rotation=rotation, max_refs=1, checkpoint_every=0, contact_sheets=False,
                               orientation_frames=2)
    detector, embedder = models
    return analyze_video(clip, clip.with_suffix(f".{rotation}.iconface.json"), settings, detector=detector,
                         embedder=embedder)


@pytest.mark.parametrize(("case", "stored_turns", "tag", "expected"), [
    ("tag wrong: stored upright, tagged 90", 0, 90, 0),
    ("tag right: stored turned, tagged 90", -1, 90, 90),
    ("tag lost: stored upside down, no tag", 2, 0, 180),
])
def test_auto_detects_where_the_faces_are_upright(tmp_path, models, case, stored_turns, tag, expected):
    clip = _write_clip(tmp_path / "clip.mp4", _group_photo(), stored_turns, tag)
    analysis = _analyze(clip, "auto", models)
    assert analysis.video["rotation"] == tag
    assert analysis.video["detect_rotation"] == expected, case
    assert len(analysis.tracks) >= 5, case  # six people in the photo
    assert analysis.references
    height, width = analysis.video["height"], analysis.video["width"]
    for track in analysis.tracks:
        for obs in track.obs:
            # Landmarks stay in stored-frame pixels, and are upright in the chosen view.
            assert (obs.kps5 >= -2).all() and (obs.kps5[:, 0] <= width + 2).all() and (obs.kps5[:, 1] <= height + 2).all()
            assert looks_upright(obs.kps5, expected)
    saved = json.loads(Path(analysis.path).read_text())
    assert saved["video"]["detect_rotation"] == expected and saved["settings"]["rotation"] == "auto"


def test_trusting_a_wrong_tag_finds_nobody_and_the_file_says_how_it_looked(tmp_path, models):
    clip = _write_clip(tmp_path / "clip.mp4", _group_photo(), 0, 90)
    analysis = _analyze(clip, "tag", models)
    assert analysis.video["detect_rotation"] == 90
    assert sum(len(t.obs) for t in analysis.tracks) <= 2 and not analysis.references


def test_files_without_detect_rotation_still_load_and_bad_values_are_refused(tmp_path, models):
    clip = _write_clip(tmp_path / "clip.mp4", _group_photo(), 0, 0, frames=2)
    path = Path(_analyze(clip, "none", models).path)
    data = json.loads(path.read_text())
    assert data["video"]["detect_rotation"] == 0
    del data["video"]["detect_rotation"]
    path.write_text(json.dumps(data))
    assert "detect_rotation" not in load_analysis(path).video
    data["video"]["detect_rotation"] = 45
    path.write_text(json.dumps(data))
    with pytest.raises(AnalysisFileError, match="detect_rotation"):
        load_analysis(path)


def test_bad_rotation_mode_is_one_clear_line(tmp_path):
    clip = _write_clip(tmp_path / "clip.mp4", _group_photo(), 0, 0, frames=1)
    with pytest.raises(InputError, match="--rotation '45'"):
        analyze_video(clip, tmp_path / "a.iconface.json", AnalyzeSettings(rotation="45"))


# --- the real clip -------------------------------------------------------------------------------

@pytest.mark.media
def test_real_clip_tagged_minus_90_but_stored_upright(media_dir, tmp_path, models):
    """Shot 2 (frames 210..239) shows two people; before auto, trusting the tag found 1 identity
    and 0 references on the whole clip. The render then pastes back onto the faces it found."""
    from render_fixtures import IdentityRestorer, ellipse_mask

    from iconface_video.core.restorer import RestoreOutput
    from iconface_video.faces.detect import load_detector
    from iconface_video.io.reader import read_frames
    from iconface_video.render.options import RenderOptions
    from iconface_video.render.video import render_video

    clip = media_dir / ROTATE_CLIP["path"]
    if not clip.is_file():
        pytest.skip(f"{clip} not present")
    settings = AnalyzeSettings(start=210, end=226, checkpoint_every=0, contact_sheets=False)
    analysis = analyze_video(clip, tmp_path / "rotate.iconface.json", settings, detector=models[0], embedder=models[1])
    assert analysis.video["rotation"] == ROTATE_CLIP["rotation"]
    assert analysis.video["detect_rotation"] == ROTATE_CLIP["detect_rotation"]
    people = {t.identity for t in analysis.tracks if t.identity is not None}
    assert len(people) == len(ROTATE_CLIP["people"])  # frames 210.. are shot 2: both people, nothing else
    assert sum(1 for i in people if analysis.references_for(i)) >= 2

    class FlipFace(IdentityRestorer):
        """Turns the aligned crop upside down (colour statistics kept, so the blend's colour
        correction keeps it), so the pasted pixels show where the paste-back went."""

        crop_size = 128

        def __init__(self) -> None:
            super().__init__(self.crop_size, self.crop_size)
            self.seen: list[torch.Tensor] = []

        def restore(self, lq, track, *args, **kwargs):
            self.seen.append(lq.clone())
            return RestoreOutput(crops=lq.flip(-2).clone(), diagnostics=[{} for _ in range(len(lq))])

    restorer = FlipFace()
    out_path = tmp_path / "rotate.restored.mp4"
    # The identity guard would rightly back off upside-down faces: off, so the paste shows.
    options = RenderOptions(html=False, crf=0, preset="ultrafast", start="210f", end="226f", identity_guard=0.0)
    render_video(analysis, clip, out_path, options, restorer=restorer, mask=ellipse_mask)
    # The aligned crops the restorer got are upright faces (alignment undoes any in-plane turn).
    crops = torch.cat(restorer.seen)[::6]
    images = [(c.permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8) for c in crops]
    found = load_detector("mtcnn").detect(images)
    assert all(any(looks_upright(o.kps5, 0) for o in faces) for faces in found)
    # Every changed pixel lies on a face the analysis found (stored-frame boxes, 30% around them).
    source = {f.index: f.image for f in read_frames(clip, 210, 226)}
    painted = 0
    for frame in read_frames(out_path, 210, 226):
        changed = np.abs(frame.image.astype(int) - source[frame.index]).sum(axis=-1) > 60
        on_faces = np.zeros_like(changed)
        for _, obs in analysis.faces_at(frame.index):
            x0, y0, x1, y1 = obs.box
            margin = 0.3 * max(x1 - x0, y1 - y0)
            on_faces[max(0, int(y0 - margin)):int(y1 + margin), max(0, int(x0 - margin)):int(x1 + margin)] = True
        painted += changed.sum() > 10_000
        assert (changed & on_faces).sum() >= 0.98 * changed.sum()
    assert painted == 16

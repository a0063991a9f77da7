"""The identity guard: a restorer that pastes another person's face is caught and the output keeps
the original person; a restorer that changes nothing is never touched; the counts reach the report.

Faces are real photos of two different people from the shared media (skipped where absent), with
landmarks from the MTCNN detector and features from the pipeline's dlib embedder. The "restorers"
are stand-ins (a real core cannot be made to swap identities on purpose): ``SwapRestorer`` returns
the other person's face aligned to the same template at the crop's side.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from render_fixtures import IdentityRestorer, ellipse_mask

from iconface_video.analysis.schema import Analysis, HarvestedReference
from iconface_video.analysis.validation import VERSION
from iconface_video.core.restorer import RestoreOutput
from iconface_video.faces.align import fit_similarity, images_to_tensor, warp_faces
from iconface_video.faces.embed import load_embedder
from iconface_video.imageio import imread, imwrite
from iconface_video.io.reader import read_frames
from iconface_video.render.guard import GAIN_STEPS, TrackGuardStats, anchor_of, choose_gains
from iconface_video.render.options import RenderOptions
from iconface_video.render.plan import side_template
from iconface_video.render.video import render_video
from iconface_video.types import FaceObs, Frame, Identity, Reference, Shot, Track

N = 4
LOSSLESS = {"crf": 0, "preset": "ultrafast", "html": False}
PHOTOS = "src/ageitgey__face_recognition/examples"
MARGIN = RenderOptions().identity_guard


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the pure rules -------------------------------------------------------------------------------

def test_choose_gains_keeps_good_restorations_and_backs_off_bad_ones():
    before = np.array([0.9, 0.9, 0.9, 0.9])
    restored = np.array([0.92, 0.86, 0.70, 0.70])  # better; within the margin; too low; too low
    stepped = np.array([[0, 0, 0], [0, 0, 0], [0.80, 0.86, 0.89], [0.70, 0.72, 0.80]])
    gain, after = choose_gains(before, restored, stepped, 0.05)
    assert gain.tolist() == [1.0, 1.0, GAIN_STEPS[1], 0.0]
    assert after.tolist() == pytest.approx([0.92, 0.86, 0.86, 0.9])


def test_anchor_is_the_reliability_weighted_mean_of_unit_features():
    feats = np.array([[2.0, 0.0], [0.0, 5.0], [0.0, -1.0]])
    anchor = anchor_of(feats, np.array([1.0, 1.0, 0.0]))  # the third (weight 0) is ignored
    assert anchor == pytest.approx(np.array([1.0, 1.0]) / np.sqrt(2))
    assert anchor_of(feats, np.zeros(3)) is None


def test_track_stats_report_means():
    stats = TrackGuardStats()
    assert stats.as_dict()["similarity_before"] is None
    stats.add(np.array([0.9, 0.8]), np.array([0.5, 0.8]), np.array([0.85, 0.8]), np.array([0.25, 1.0]))
    assert stats.as_dict() == {"faces_checked": 2, "guard_acted": 1, "similarity_before": 0.85,
                               "similarity_restored": 0.65, "similarity_after": 0.825}


# --- real faces -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def people(media_dir):
    """Two different people's photos, ``uint8[H, W, 3]``, each with its face's 5 points."""
    from iconface_video.faces.detect import load_detector

    detector = load_detector("mtcnn")
    found = {}
    for name, file in (("obama", "obama-480p.jpg"), ("alex", "alex-lacamoire.png")):
        bgr = imread(media_dir / PHOTOS / file)
        if bgr is None:
            pytest.skip(f"{file} missing from the shared media")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        face = max(detector.detect([image])[0], key=lambda f: f.eye_distance)
        found[name] = (image, face.kps5.astype(np.float32))
    return found


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("dlib")


class SwapRestorer(IdentityRestorer):
    """Returns another person's face, aligned as the render aligns its crops, whatever it is given."""

    crop_size, template = 128, "arcface"

    def __init__(self, image: np.ndarray, kps5: np.ndarray) -> None:
        super().__init__(min_side=64, max_side=256)
        self.image, self.kps5 = image, kps5

    def restore(self, lq, track, refs=None, ref_track=None, ref_weight=None, ref_feat=None, seed=0, steps=4):
        side = lq.shape[-1]
        self.sides.append(side)
        dst = torch.from_numpy(side_template(self.template, self.crop_size, side))
        M = fit_similarity(torch.from_numpy(self.kps5[None]), dst)
        face = warp_faces(images_to_tensor(self.image), M, side)
        return RestoreOutput(crops=face.expand(len(lq), -1, -1, -1).clone(), diagnostics=[{} for _ in range(len(lq))])


class StillRestorer(IdentityRestorer):
    """Changes nothing, at the same template and sides as ``SwapRestorer``."""

    crop_size, template = 128, "arcface"

    def __init__(self) -> None:
        super().__init__(min_side=64, max_side=256)


@pytest.fixture(scope="module")
def clip(people, tmp_path_factory):
    """A few frames of the first person (a window of the photo drifting by a pixel a frame),
    its analysis with one track, and a harvested reference (the photo's face)."""
    from render_fixtures import write_clip

    tmp = tmp_path_factory.mktemp("guard")
    image, kps = people["obama"]
    x0, y0 = int(kps[:, 0].mean()) - 120, int(kps[:, 1].mean()) - 110
    frames, obs = [], []
    for i in range(N):
        window = image[y0 : y0 + 224, x0 + i : x0 + i + 256]
        frames.append(Frame(index=i, pts=i * 512, time_base=Fraction(1, 12800), image=np.ascontiguousarray(window)))
        points = kps - np.array([x0 + i, y0], np.float32)
        box = (float(points[:, 0].min() - 40), float(points[:, 1].min() - 50),
               float(points[:, 0].max() + 40), float(points[:, 1].max() + 50))
        obs.append(FaceObs(frame_index=i, box=box, score=0.99, kps5=points))
    video = write_clip(tmp / "obama.mp4", frames)
    crop_path = tmp / "ref.png"
    imwrite(crop_path, cv2.cvtColor(frames[0].image, cv2.COLOR_RGB2BGR))
    reference = Reference(identity=0, track=1, frame_index=0, box=obs[0].box,
                          kps5=tuple(map(tuple, obs[0].kps5.tolist())), reliability=0.9)
    analysis = Analysis(
        version=VERSION,
        video={"path": str(video), "width": 256, "height": 224, "frame_count": N, "fps": 25.0, "rotation": 0},
        shots=(Shot(0, 0, N - 1, 0.0, (N - 1) / 25, "start"),),
        tracks=(Track(id=1, shot=0, obs=tuple(obs), identity=0),),
        identities=(Identity(0, (1,), None, "Barack"),),
        references=(HarvestedReference(reference, crop_path, obs[0].kps5),),
        settings={},
    )
    return tmp, video, analysis, [o.kps5 for o in obs]


def _render(clip, restorer, name, embedder, **options):
    tmp, video, analysis, _ = clip
    out = tmp / f"{name}.mp4"
    report = render_video(analysis, video, out, RenderOptions(**{**LOSSLESS, **options}), restorer=restorer,
                          mask=ellipse_mask, embed=embedder.embed_aligned112)
    return report, [f.image for f in read_frames(out)]


def _similarity_to(frames, reference_frames, kps, embedder) -> np.ndarray:
    """Cosine of each frame's face to the same face in ``reference_frames`` ``float[N]``."""
    a = np.concatenate([embedder.embed(f, k[None]) for f, k in zip(frames, kps)])
    b = np.concatenate([embedder.embed(f, k[None]) for f, k in zip(reference_frames, kps)])
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    return (a * b).sum(axis=1)


@pytest.mark.parametrize("refs", [True, False], ids=["references", "no-references"])
def test_a_restorer_pasting_another_person_is_caught(clip, people, embedder, refs):
    _, video, _, kps = clip
    source = [f.image for f in read_frames(video)]
    swap = SwapRestorer(*people["alex"])
    unguarded, swapped = _render(clip, swap, f"swap-off-{refs}", embedder, identity_guard=0.0, no_refs=not refs)
    # The stand-in really changes who the face is: unguarded, the output is another person.
    assert (_similarity_to(swapped, source, kps, embedder) < 1 - 2 * MARGIN).all()
    assert all(t["faces_checked"] == 0 and t["similarity_before"] is None for t in unguarded.tracks)

    report, guarded = _render(clip, swap, f"swap-on-{refs}", embedder, no_refs=not refs)
    track = report.tracks[0]
    assert track["faces"] == track["faces_checked"] == track["guard_acted"] == N
    assert track["similarity_restored"] < track["similarity_before"] - MARGIN
    assert track["similarity_after"] >= track["similarity_before"] - MARGIN
    # The output keeps the original person.
    assert (_similarity_to(guarded, source, kps, embedder) > 1 - MARGIN).all()
    assert swap.sides and all(s == track["side"] for s in swap.sides)


def test_a_restorer_that_changes_nothing_never_triggers_the_guard(clip, embedder):
    for refs in (True, False):
        report, _ = _render(clip, StillRestorer(), f"still-{refs}", embedder, no_refs=not refs)
        track = report.tracks[0]
        assert track["faces_checked"] == N and track["guard_acted"] == 0
        assert track["similarity_after"] == track["similarity_before"] == track["similarity_restored"]
        # With references the anchor is the reference's features, not the face itself.
        assert (track["similarity_before"] < 1.0) if refs else track["similarity_before"] == pytest.approx(1.0, abs=1e-4)


def test_guard_counts_reach_the_report_page_and_the_analysis_file(clip, people, embedder, tmp_path):
    from iconface_video.analysis.schema import save_analysis

    _, video, analysis, _ = clip
    analysis_path = tmp_path / "obama.iconface.json"
    save_analysis(analysis, analysis_path)
    out = tmp_path / "out.mp4"
    report = render_video(analysis_path, video, out, RenderOptions(crf=0, preset="ultrafast"),
                          restorer=SwapRestorer(*people["alex"]), mask=ellipse_mask, embed=embedder.embed_aligned112)
    section = json.loads(analysis_path.read_text())["render"]
    assert section["tracks"][0]["guard_acted"] == N and section["tracks"][0]["side"] == report.tracks[0]["side"]
    assert f"identity guard: acted on {N} of {N} faces" in report.summary()
    page = Path(report.html).read_text()
    assert "guard acted" in page and "crop side" in page

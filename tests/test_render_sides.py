"""Restoration at the face's own size: a ~400-px face in a 1080p frame is restored at a crop side of
256 or more when the core allows it, at the core's largest side otherwise, and the paste-back is
exact at that side.

The clip is generated (three 1080p frames of gradients and grain, lossless); the face is a track
of landmarks with 130 px between the eyes (a face about 400 px across). The restorer is a
stand-in that returns its input and records the side of every call.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from render_fixtures import IdentityRestorer, ellipse_mask, face_points, textured_frames, write_clip

from iconface_video.analysis.schema import Analysis
from iconface_video.analysis.validation import VERSION
from iconface_video.faces.align import fit_similarity
from iconface_video.io.reader import read_frames
from iconface_video.render.options import RenderOptions
from iconface_video.render.plan import side_template
from iconface_video.render.video import render_video
from iconface_video.types import FaceObs, Identity, Shot, Track

N, WIDTH, HEIGHT, EYES = 3, 1920, 1080, 130.0
LOSSLESS = {"crf": 0, "preset": "ultrafast", "html": False, "identity_guard": 0.0}


class CpuPresetShape(IdentityRestorer):
    """Returns its input; the alignment of the CPU preset (ArcFace template, trained at 128)."""

    crop_size, template, ref_size = 128, "arcface", 64


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("sides")
    frames = [f.__class__(f.index, f.pts, Fraction(1, 12800), f.image) for f in textured_frames(N, HEIGHT, WIDTH)]
    video = write_clip(tmp / "hd.mp4", frames, crf=0)
    obs = []
    for i in range(N):
        kps = face_points((900.0 + 2 * i, 520.0), EYES, angle_deg=5.0)
        obs.append(FaceObs(frame_index=i, box=(700.0 + 2 * i, 320.0, 1100.0 + 2 * i, 760.0), score=0.99, kps5=kps))
    analysis = Analysis(
        version=VERSION,
        video={"path": str(video), "width": WIDTH, "height": HEIGHT, "frame_count": N, "fps": 25.0, "rotation": 0},
        shots=(Shot(0, 0, N - 1, 0.0, (N - 1) / 25, "start"),),
        tracks=(Track(id=1, shot=0, obs=tuple(obs), identity=0),),
        identities=(Identity(0, (1,), None, None),),
        references=(),
        settings={},
    )
    # Strength 0 pastes nothing: the render's own re-encode of the input, to compare with.
    plain = render_video(analysis, video, tmp / "plain.mp4", RenderOptions(strength=0.0, **LOSSLESS),
                         restorer=CpuPresetShape(), mask=ellipse_mask).output
    return tmp, video, analysis, [f.image for f in read_frames(plain)]


@pytest.mark.parametrize("max_side", [512, 256, 192])
def test_a_400px_face_in_1080p_is_restored_at_its_own_side(clip, max_side):
    tmp, video, analysis, plain = clip
    restorer = CpuPresetShape(min_side=96, max_side=max_side)
    out = tmp / f"out-{max_side}.mp4"
    report = render_video(analysis, video, out, RenderOptions(**LOSSLESS), restorer=restorer, mask=ellipse_mask)
    side = report.tracks[0]["side"]
    assert restorer.sides and set(restorer.sides) == {side}, "every restore call got crops of the track's side"
    if max_side == 512:
        # Room to spare: the crop is the face's own size, not upsampled nor downsampled from the
        # frame beyond rounding to a multiple of 16 (half a step at most).
        kps = np.stack([o.kps5 for o in analysis.tracks[0].obs])
        M = fit_similarity(torch.from_numpy(kps), torch.from_numpy(side_template("arcface", 128, side)))
        scale = M[:, 0, :2].norm(dim=1)
        assert side >= 256 and side % 16 == 0 and ((scale - 1).abs() <= 8 / side).all(), (side, scale)
    else:
        assert side == max_side
    # The paste-back at that side is exact: a restorer that changes nothing changes no pixel.
    assert all(np.array_equal(a.image, b) for a, b in zip(read_frames(out), plain, strict=True))

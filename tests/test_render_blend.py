"""Paste-back: invisible when nothing is restored, local, colour-true, grey stays grey."""

from __future__ import annotations

import numpy as np
import torch
from render_fixtures import (
    ellipse_mask,
    face_points,
    identity_restore,
    moving_track,
    textured_frames,
    tint_restore,
)

from iconface_video.faces.align import estimate_affine, images_to_tensor, warp_faces
from iconface_video.render.blend import (
    colour_correction,
    face_change,
    is_greyscale,
    paste,
)
from iconface_video.render.engine import FaceEngine
from iconface_video.render.plan import plan_faces
from iconface_video.render.temporal import TemporalSettings

SIZE = 64


def _one_face(frame: np.ndarray, kps: np.ndarray, restore, strength=1.0):
    M = estimate_affine(kps[None], "ffhq", SIZE)
    lq = warp_faces(images_to_tensor(frame), torch.from_numpy(M), SIZE)
    restored = restore(lq, np.zeros(1))
    mask = ellipse_mask(lq, np.zeros((1, 5, 2)) + SIZE / 2)
    grey = (lq.amax(1) - lq.amin(1)).flatten(1).amax(1) <= 3 / 255
    change = face_change(restored + colour_correction(restored, lq) - lq, mask, strength, grey)
    out = paste(torch.from_numpy(frame), change, M).numpy()
    return out, M, mask


def test_identity_restorer_paste_is_exact():
    frame = textured_frames(1)[0].image
    out, _, _ = _one_face(frame, face_points((80, 60), 30, angle_deg=17), identity_restore)
    assert np.array_equal(out, frame)


def test_change_stays_inside_mask_and_is_colour_true():
    frame = textured_frames(1)[0].image
    kps = face_points((80, 60), 30, angle_deg=-10)
    out, M, mask = _one_face(frame, kps, tint_restore)
    diff = np.abs(out.astype(int) - frame.astype(int)).max(axis=-1)
    assert diff.max() > 0, "the restorer's detail must reach the frame"
    # Pixels the (warped-back) mask does not reach are bit-identical to the input.
    from kornia.geometry.transform import invert_affine_transform, warp_affine
    to_frame = invert_affine_transform(torch.from_numpy(M))
    reach = warp_affine(mask, to_frame, dsize=frame.shape[:2], align_corners=True)[0, 0].numpy()
    assert diff[reach == 0].max() == 0
    # The tint (a low-frequency change) is removed by colour matching: mean colour in the face
    # region moves by less than 1 level, while the checkerboard detail is there.
    region = reach > 0.5
    shift = out[region].astype(float).mean(axis=0) - frame[region].astype(float).mean(axis=0)
    assert np.abs(shift).max() < 1.0, shift
    assert diff[region].mean() > 1.0


def test_black_and_white_stays_black_and_white():
    frame = textured_frames(1, grey=True)[0].image
    assert is_greyscale(frame)
    out, _, _ = _one_face(frame, face_points((80, 60), 30), tint_restore)
    assert not np.array_equal(out, frame)
    assert is_greyscale(out, tolerance=0, fraction=0.0)
    colour = textured_frames(1)[0].image
    assert not is_greyscale(colour)


def test_strength_blends_between_input_and_restoration():
    frame = textured_frames(1)[0].image
    kps = face_points((80, 60), 30)
    zero, _, _ = _one_face(frame, kps, tint_restore, strength=0.0)
    half, _, _ = _one_face(frame, kps, tint_restore, strength=0.5)
    full, _, _ = _one_face(frame, kps, tint_restore, strength=1.0)
    assert np.array_equal(zero, frame)
    d_half = np.abs(half.astype(int) - frame).sum()
    d_full = np.abs(full.astype(int) - frame).sum()
    assert 0 < d_half < d_full


def _engine(tracks, restore, **kwargs):
    temporal = TemporalSettings.from_strength(kwargs.pop("temporal", 0.5))
    plan = plan_faces(tracks, crop_size=SIZE, template_name="ffhq", temporal=temporal,
                      min_eye_px=kwargs.pop("min_eye_px", None), sides=kwargs.pop("sides", None))
    return FaceEngine(plan, restore, ellipse_mask, temporal=temporal, **kwargs)


def test_engine_identity_is_seamless_over_a_clip_with_two_overlapping_faces():
    frames = textured_frames(20)
    tracks = [moving_track(1, 20, start=(50, 55), jitter=0.8, seed=1), moving_track(2, 20, start=(90, 60), step=(-1, 0), jitter=0.8, seed=2)]
    engine = _engine(tracks, identity_restore, batch_size=3, segment_starts=(0, 7, 14))
    out = list(engine.process(iter(frames)))
    assert [f.index for f in out] == list(range(20)) and [f.pts for f in out] == [f.pts for f in frames]
    for a, b in zip(frames, out):
        assert np.array_equal(a.image, b.image)
    assert engine.times.faces == 40


def test_engine_output_does_not_depend_on_batch_size_and_keeps_order():
    frames = textured_frames(12)
    tracks = [moving_track(1, 12, jitter=0.5)]
    a = [f.image for f in _engine(tracks, tint_restore, batch_size=1, segment_starts=(0, 5, 10)).process(iter(frames))]
    b = [f.image for f in _engine(tracks, tint_restore, batch_size=5, segment_starts=(0, 5, 10)).process(iter(frames))]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, f.image) for x, f in zip(a, frames))


def test_engine_preview_is_side_by_side():
    frames = textured_frames(3)
    out = list(_engine([moving_track(1, 3)], tint_restore, preview=True).process(iter(frames)))
    assert out[0].image.shape == (120, 320, 3)
    assert np.array_equal(out[0].image[:, :160], frames[0].image)
    assert not np.array_equal(out[0].image[:, 160:], frames[0].image)


def test_small_faces_are_left_alone_and_counted():
    tracks = [moving_track(1, 6, eye_px=4.0), moving_track(2, 6, start=(100, 60), eye_px=30.0)]
    plan = plan_faces(tracks, crop_size=SIZE, template_name="ffhq", temporal=TemporalSettings.from_strength(0.0))
    assert plan.skipped_small == 6 and plan.skipped_small_tracks == (1,)
    assert plan.n_faces == 6 and plan.tracks == (2,)


def test_engine_error_in_restorer_reaches_the_caller():
    def broken(lq, tracks):
        raise RuntimeError("boom")

    import pytest
    with pytest.raises(RuntimeError, match="boom"):
        list(_engine([moving_track(1, 4)], broken).process(iter(textured_frames(4))))


def test_faces_of_different_sides_in_one_frame_are_restored_at_their_own_side():
    frames = textured_frames(8)
    # A small and a large face overlapping: each track gets the side its face has in the frame.
    tracks = [moving_track(1, 8, start=(60, 60), eye_px=14, jitter=0.5, seed=1),
              moving_track(2, 8, start=(85, 60), step=(-1, 0), eye_px=34, jitter=0.5, seed=2)]
    seen = []

    def recording(restore):
        def run(lq, tracks):
            seen.append((lq.shape[-1], sorted(set(tracks.tolist()))))
            return restore(lq, tracks)
        return run

    engine = _engine(tracks, recording(identity_restore), sides=(32, 128), batch_size=3, segment_starts=(0, 5))
    # Eyes 14 px apart need a ~57 px crop (ffhq: 125.9 px at 512) -> 64; 34 px -> 138 -> 144, capped at 128.
    assert engine.plan.sides == {1: 64, 2: 128}
    out = list(engine.process(iter(frames)))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, out)), "an identity restore is invisible at any side"
    assert {side for side, _ in seen} == set(engine.plan.sides.values())
    for side, ids in seen:
        assert all(engine.plan.sides[t] == side for t in ids), "one side per restore call"
    tinted = [f.image for f in _engine(tracks, tint_restore, sides=(32, 128), batch_size=3).process(iter(frames))]
    assert all(not np.array_equal(a, f.image) for a, f in zip(tinted, frames))
    # Batching changes nothing when two sides share the frames.
    again = [f.image for f in _engine(tracks, tint_restore, sides=(32, 128), batch_size=1).process(iter(frames))]
    assert all(np.array_equal(a, b) for a, b in zip(tinted, again))


def test_track_side_follows_the_face_size_rounded_and_clamped():
    from iconface_video.render.plan import SIDE_STEP, track_side

    kps = np.stack([o.kps5 for o in moving_track(1, 5, eye_px=40).obs])
    # ffhq: the template's eyes are 125.9 px apart at 512, so 40 px eyes need a crop of ~163 px.
    natural = 512 * 40 / 125.92
    side = track_side(kps, "ffhq", SIZE, 16, 512)
    assert side % SIDE_STEP == 0 and abs(side - natural) <= SIDE_STEP / 2
    assert track_side(kps, "ffhq", SIZE, 16, 96) == 96
    assert track_side(kps, "ffhq", SIZE, 256, 512) == 256

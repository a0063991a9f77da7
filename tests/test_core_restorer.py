"""The render stage's API: Restorer.restore contracts, diagnostics, precision, identity features."""

from __future__ import annotations

import pytest
import torch
from core_cases import mixed_inputs, random_model, small_config

from iconface_video.core.restorer import Restorer
from iconface_video.errors import UserError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def restorer():
    return Restorer(random_model(small_config()))


def test_restore_shapes_range_determinism_and_diagnostics(restorer):
    lq, track, refs, ref_track = mixed_inputs(restorer.config)
    out = restorer.restore(lq, track, refs, ref_track, seed=0, steps=3)
    assert out.crops.shape == lq.shape and out.crops.dtype == torch.float32
    assert out.crops.min() >= 0 and out.crops.max() <= 1
    assert torch.equal(out.crops, restorer.restore(lq, track, refs, ref_track, seed=0, steps=3).crops)
    assert not torch.equal(out.crops, restorer.restore(lq, track, refs, ref_track, seed=1, steps=3).crops)
    d = out.diagnostics
    assert [x["track"] for x in d] == track.tolist()
    assert [x["n_refs_used"] for x in d] == [0, 1, 3, 3, 1]
    assert d[0]["anchor_z_norm"] == 0.0 and d[2]["anchor_z_norm"] > 0 and d[2]["steps"] == 3
    assert d[1]["anchor_agreement"] == pytest.approx(1.0, abs=1e-5)  # one reference agrees with itself
    assert 0 < d[2]["anchor_agreement"] <= 1


def test_reference_resolution_is_handled_internally(restorer):
    lq, track, refs, ref_track = mixed_inputs(restorer.config)
    small = torch.nn.functional.interpolate(refs, size=restorer.ref_size, mode="bilinear", antialias=True)
    a = restorer.restore(lq, track, refs, ref_track, seed=0).crops
    b = restorer.restore(lq, track, small, ref_track, seed=0).crops
    assert torch.isfinite(b).all() and (a - b).abs().max() < 0.05  # same content, resized differently


def test_precomputed_features_and_external_encoder():
    cfg = small_config(id_encoder="dlib", id_dim=128)
    calls = []

    def fake_dlib(crops):  # stands in for dlib (its weights and face chips are another stage's)
        calls.append(crops.shape[0])
        return crops.mean(dim=(2, 3)).repeat(1, 43)[:, :128] + 1

    r = Restorer(random_model(cfg), id_encoder=fake_dlib)
    lq, track, refs, ref_track = mixed_inputs(cfg)
    weight = torch.tensor([1, 1, 0, 1, 1.0])
    out = r.restore(lq, track, refs, ref_track, ref_weight=weight, seed=0)
    assert calls == [4]  # only references in use are encoded
    feat = fake_dlib(refs)
    same = r.restore(lq, track, refs, ref_track, ref_weight=weight, ref_feat=feat, seed=0)
    assert torch.allclose(out.crops, same.crops, atol=1e-6)
    with pytest.raises(ValueError, match="ref_feat"):
        r.restore(lq, track, refs, ref_track, ref_feat=feat[:, :64])


def test_bad_shapes_are_refused(restorer):
    lq, track, refs, ref_track = mixed_inputs(restorer.config)
    with pytest.raises(ValueError, match="arcface-aligned"):
        restorer.restore(lq[:, :, :16, :24], track)  # not square
    with pytest.raises(ValueError, match="crop side 12 must be a multiple of 8"):
        restorer.restore(lq[:, :, :12, :12], track)
    with pytest.raises(ValueError, match="track"):
        restorer.restore(lq, track[:2])
    with pytest.raises(ValueError, match="finite floats"):
        restorer.restore((lq * 255).to(torch.uint8), track)
    with pytest.raises(ValueError, match="ref_weight"):
        restorer.restore(lq, track, refs, ref_track, ref_weight=torch.ones(2))
    assert restorer.restore(lq[:0], track[:0]).crops.shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="ref_track"):
        restorer.restore(lq, track, refs, None)


def test_bf16_runs_close_to_fp32():
    model = random_model(small_config())
    lq, track, refs, ref_track = mixed_inputs(model.config)
    a = Restorer(model).restore(lq, track, refs, ref_track, seed=0).crops
    b = Restorer(model, precision="bf16").restore(lq, track, refs, ref_track, seed=0).crops
    assert (a - b).abs().mean() < 0.02


def test_real_dlib_encoder_feeds_the_anchor():
    from iconface_video.core.identity import load_id_encoder

    try:
        enc = load_id_encoder("dlib", "arcface")
    except (UserError, ImportError, OSError) as err:  # the dlib weights are another stage's file
        pytest.skip(f"dlib embedder unavailable: {err}")
    r = Restorer(random_model(small_config(id_encoder="dlib", id_dim=128)))
    lq, track, refs, ref_track = mixed_inputs(r.config)
    out = r.restore(lq, track, refs, ref_track, seed=0)
    assert out.diagnostics[2]["n_refs_anchor"] == 3 and out.diagnostics[2]["anchor_norm"] > 0
    feat = enc(refs)
    assert feat.shape == (5, 128) and torch.isfinite(feat).all()


def test_ffhq_crops_are_realigned_to_arcface_for_the_encoders():
    from iconface_video.core.identity import to_arcface112
    from iconface_video.faces.align import template

    # Dots on the FFHQ template points of a 256 crop must land on the ArcFace-112 points.
    img = torch.zeros(1, 3, 256, 256)
    for x, y in template("ffhq", 256):
        img[0, :, round(float(y)) - 2 : round(float(y)) + 3, round(float(x)) - 2 : round(float(x)) + 3] = 1
    out = to_arcface112(img, "ffhq")[0, 0]
    for x, y in template("arcface", 112):
        patch = out[round(float(y)) - 3 : round(float(y)) + 4, round(float(x)) - 3 : round(float(x)) + 4]
        assert patch.max() > 0.3, (x, y)


def test_reference_guidance_interpolates_between_no_ref_and_ref(restorer):
    lq, track, refs, ref_track = mixed_inputs(restorer.config)
    plain = restorer.restore(lq, track, refs, ref_track, seed=0).crops
    assert torch.equal(plain, restorer.restore(lq, track, refs, ref_track, seed=0, ref_guidance=1.0).crops)
    no_ref = restorer.restore(lq, track, seed=0).crops
    w0 = restorer.restore(lq, track, refs, ref_track, seed=0, ref_guidance=0.0)
    assert (w0.crops - no_ref).abs().max() <= 1e-5
    strong = restorer.restore(lq, track, refs, ref_track, seed=0, ref_guidance=2.0).crops
    assert (strong[0] - plain[0]).abs().max() <= 1e-5  # K = 0: guidance changes nothing
    assert (strong[2] - plain[2]).abs().max() > 1e-4
    assert w0.diagnostics[2]["ref_guidance"] == 0.0

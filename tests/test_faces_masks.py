"""Soft paste-back masks: the landmark ellipse (no weights) and facexlib parsing (tiny weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iconface_video.errors import BadWeightsError, MissingModelError
from iconface_video.faces.align import template
from iconface_video.faces.masks import landmark_mask, load_parser, parsing_mask


def test_landmark_mask_covers_the_face_and_feathers_with_face_size():
    big = template("ffhq", 512)
    small = (big - 256) * 0.25 + 256  # the same face, 4x smaller, in the same crop
    masks = landmark_mask(512, np.stack([big, small]), feather=0.15)
    assert masks.shape == (2, 1, 512, 512) and masks.dtype == torch.float32
    assert masks.min() >= 0 and masks.max() <= 1
    for mask, kps in zip(masks[:, 0], (big, small)):
        for x, y in kps:  # every landmark is well inside the face
            assert mask[int(y), int(x)] == pytest.approx(1.0)
        assert mask[5, 5] == 0 and mask[-5, -5] == 0  # crop corners untouched
    # The ramp (0 < m < 1) is 4x narrower for the 4x smaller face: feathering scales with size.
    ramp_big = ((masks[0] > 0.01) & (masks[0] < 0.99)).sum().item()
    ramp_small = ((masks[1] > 0.01) & (masks[1] < 0.99)).sum().item()
    assert 8 < ramp_big / ramp_small < 24  # ring area scales with size squared (16)


def test_landmark_mask_turns_with_the_eye_line():
    kps = template("ffhq", 256)
    centre = kps.mean(0)
    turn = np.array([[0.0, -1.0], [1.0, 0.0]], np.float32)  # 90 degrees
    turned = (kps - centre) @ turn.T + centre
    upright, rotated = landmark_mask(256, np.stack([kps, turned]))[:, 0]
    # Upright the face is taller than wide; turned 90 degrees it is wider than tall.
    def extent(mask):
        ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
        return (xs.max() - xs.min()).item(), (ys.max() - ys.min()).item()
    w0, h0 = extent(upright)
    w1, h1 = extent(rotated)
    assert h0 > w0 and w1 > h1


def test_parsing_mask_falls_back_to_landmarks():
    crops = torch.rand(1, 3, 128, 128)
    kps = template("ffhq", 128)[None]
    assert torch.equal(parsing_mask(crops, None, kps), landmark_mask(128, kps))
    with pytest.raises(ValueError, match="landmarks are needed"):
        parsing_mask(crops)


@pytest.mark.parametrize("name", ["bisenet", "parsenet"])
def test_facexlib_parser_loads_dir_file_name(tmp_path, monkeypatch, name):
    parsing = pytest.importorskip("facexlib.parsing")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = parsing.BiSeNet(num_class=19) if name == "bisenet" else parsing.ParseNet(in_size=512, out_size=512, parsing_ch=19)
    folder = tmp_path / "facexlib"
    folder.mkdir()
    torch.save(net.state_dict(), folder / f"parsing_{name}.pth")
    parser = load_parser(name, models_dir=tmp_path)
    assert parser.name == name
    for key, value in net.state_dict().items():  # facexlib loaded exactly our file
        assert torch.equal(parser.net.state_dict()[key], value)
    if name == "parsenet":
        return  # its 512x512 forward pass takes ~10 s on CI's CPU; BiSeNet's covers the call path
    masks = parsing_mask(torch.rand(1, 3, 96, 96), parser)
    # Random weights: the mask's content is arbitrary; its shape and range are not.
    assert masks.shape == (1, 1, 96, 96)
    assert masks.min() >= 0 and masks.max() <= 1


def test_parser_missing_or_wrong_weights(tmp_path, monkeypatch):
    pytest.importorskip("facexlib.parsing")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(MissingModelError, match="models fetch bisenet"):
        load_parser("bisenet", models_dir=tmp_path)
    folder = tmp_path / "facexlib"
    folder.mkdir()
    torch.save({"conv.weight": torch.zeros(1)}, folder / "parsing_bisenet.pth")
    with pytest.raises(BadWeightsError, match="is missing"):
        load_parser("bisenet", models_dir=tmp_path)

"""``--models-dir`` reaches every model the render loads, the mask parser first among them.

The face parser's weights here are a randomly initialised BiSeNet saved in facexlib's format: the
real file cannot be downloaded on the test machine, and what is under test is *which folder* the
render reads, not the parser's quality. Without the folder the render must fall back to the
landmark mask; with it, the parser in that folder must be the mask.
"""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli
from render_fixtures import IdentityRestorer, make_analysis, textured_frames, write_clip

from iconface_video.analysis.schema import save_analysis
from iconface_video.render.options import RenderOptions
from iconface_video.render.video import render_video


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from facexlib.parsing import BiSeNet

    folder = tmp_path_factory.mktemp("models")
    (folder / "facexlib").mkdir()
    torch.manual_seed(0)
    torch.save(BiSeNet(num_class=19).state_dict(), folder / "facexlib" / "parsing_bisenet.pth")
    return folder


@pytest.fixture()
def no_default_store(tmp_path, monkeypatch):
    """Only an empty store besides ``--models-dir``, whatever this machine has downloaded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ICONFACE_MODELS", raising=False)


@pytest.fixture()
def analysis_file(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", textured_frames(8))
    analysis = make_analysis(clip, tmp_path, n=8, cut=4)
    path = tmp_path / "clip.iconface.json"
    save_analysis(analysis, path)
    return clip, path


def test_the_render_loads_its_mask_from_models_dir(models_dir, analysis_file, no_default_store, tmp_path):
    clip, analysis = analysis_file
    plain = dict(dry_run=True, identity_guard=0.0, html=False)
    without = render_video(analysis, clip, tmp_path / "a.mp4", RenderOptions(**plain), restorer=IdentityRestorer())
    assert without.mask == "landmark"
    given = render_video(analysis, clip, tmp_path / "b.mp4", RenderOptions(models_dir=str(models_dir), **plain),
                         restorer=IdentityRestorer())
    assert given.mask == "parsing (bisenet)"


def test_models_dir_on_the_command_line_reaches_the_mask(models_dir, analysis_file, no_default_store, capsys):
    clip, analysis = analysis_file
    code, out, err = run_cli(["render", analysis, "-i", clip, "--dry-run", "--identity-guard", "0",
                              "--models-dir", models_dir], capsys)
    assert code == 0, err
    assert json.loads(out[out.index("\n{") + 1:])["mask"] == "parsing (bisenet)"
    code, out, err = run_cli(["render", analysis, "-i", clip, "--dry-run", "--identity-guard", "0"], capsys)
    assert code == 0, err
    assert json.loads(out[out.index("\n{") + 1:])["mask"] == "landmark"

"""Checkpoints: safetensors + JSON sidecar round trip, shape validation, no pickles."""

from __future__ import annotations

import json

import pytest
import torch
from core_cases import mixed_inputs, random_model, small_config

from iconface_video.core import restorer as restorer_module
from iconface_video.core.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    sidecar_path,
)
from iconface_video.core.restorer import Restorer
from iconface_video.errors import BadWeightsError, MissingModelError

torch.set_num_threads(1)


def test_round_trip_restores_identical_crops(tmp_path):
    model = random_model(small_config())
    path = save_checkpoint(tmp_path / "core.safetensors", model, training={"steps": 12, "data": "synthetic"})
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["version"] == 2 and meta["crop_size"] == 32 and meta["template"] == "arcface"
    assert meta["id_encoder"] == "proxy" and meta["training"]["steps"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["core.json", "core.safetensors"], "temporary files left"
    loaded = Restorer.from_checkpoint(path)
    assert loaded.config == model.config and (loaded.crop_size, loaded.ref_size) == (32, 16)
    lq, track, refs, ref_track = mixed_inputs(model.config)
    a = Restorer(model).restore(lq, track, refs, ref_track, seed=5).crops
    b = loaded.restore(lq, track, refs, ref_track, seed=5).crops
    assert torch.equal(a, b)


def test_shape_mismatch_is_one_clear_line(tmp_path):
    path = save_checkpoint(tmp_path / "core.safetensors", random_model(small_config()))
    meta = json.loads(sidecar_path(path).read_text())
    meta["config"]["dim"] = 96  # the weights were trained at 64
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(BadWeightsError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and "shape mismatch" in msg and "core.safetensors" in msg


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    path = save_checkpoint(tmp_path / "core.safetensors", random_model(small_config()))
    meta = json.loads(sidecar_path(path).read_text())
    meta["config"]["struct_r"] = 0  # the file holds structure-residual tensors this config lacks
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(BadWeightsError, match=r"unexpected: struct\."):
        load_checkpoint(path)


def test_pickles_and_missing_files_are_refused(tmp_path):
    model = random_model(small_config())
    path = save_checkpoint(tmp_path / "core.safetensors", model)
    torch.save(model.state_dict(), path)  # a pickle under the right name
    with pytest.raises(BadWeightsError, match="pickles are never loaded"):
        load_checkpoint(path)
    with pytest.raises(MissingModelError):
        load_checkpoint(tmp_path / "absent.safetensors")
    sidecar_path(path).unlink()
    with pytest.raises(MissingModelError, match="config"):
        load_checkpoint(path)


def test_pixel_patch_checkpoints_of_version_1_are_refused_in_one_line(tmp_path):
    path = save_checkpoint(tmp_path / "core.safetensors", random_model(small_config()))
    assert path.stat().st_mode & 0o777 == 0o644
    meta = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**meta, "version": 1}))
    with pytest.raises(BadWeightsError, match="checkpoint version 1; this program reads version 2") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_missing_embedded_checkpoint_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(restorer_module, "EMBEDDED_CHECKPOINT", tmp_path / "iconface-restorer.safetensors")
    with pytest.raises(MissingModelError, match="iconface-restorer.safetensors"):
        Restorer.from_checkpoint(None)

"""One configuration loader for the core's and training's YAML files: unknown keys, bad values
and missing files are one-line UserErrors naming the file (and the line:column of the key)."""

from __future__ import annotations

import pytest

from iconface_video.core.config import CoreConfig, load_config
from iconface_video.errors import UserError
from iconface_video.train.config import TrainConfig, load_train_config


def _one_line_error(call, *args) -> str:
    with pytest.raises(UserError) as error:
        call(*args)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("load", [load_config, load_train_config])
def test_an_unknown_key_names_its_line_and_column(tmp_path, load):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\n\n  # a comment\nname: x\ncolour: 3\n" if load is load_train_config else "name: x\ncolour: 3\n")
    message = _one_line_error(load, path)
    line = 5 if load is load_train_config else 2
    assert message.startswith(f"{path}:{line}:1: unknown ") and "colour" in message


def test_a_bad_value_names_the_file(tmp_path):
    core = tmp_path / "core.yaml"
    core.write_text("crop_size: 100\n")
    assert _one_line_error(load_config, core).startswith(f"{core}: bad core config (")
    train = tmp_path / "train.json"
    train.write_text('{"precision": "fp8"}')
    assert "precision must be auto, bf16 or fp32" in _one_line_error(load_train_config, train)


@pytest.mark.parametrize("load", [load_config, load_train_config])
def test_a_missing_file_or_preset_is_one_line(tmp_path, load):
    assert "not found" in _one_line_error(load, tmp_path / "none.yaml")
    assert "not found" in _one_line_error(load, "no-such-preset")


def test_lists_become_tuples_and_round_trip(tmp_path):
    core = load_config("cpu")
    assert isinstance(core.enc_channels, tuple)
    assert CoreConfig.from_dict(core.to_dict()) == core
    train = TrainConfig.from_dict({"betas": [0.8, 0.9], "holdout": ["A"]})
    assert train.betas == (0.8, 0.9) and train.holdout == ("A",)
    with pytest.raises(ValueError, match="unknown core config keys: colour"):
        CoreConfig.from_dict({"colour": 1})  # a checkpoint's sidecar: the caller names the file


def test_a_core_yaml_beside_the_training_yaml_is_found(tmp_path):
    (tmp_path / "core.yaml").write_text("name: beside\n")
    (tmp_path / "train.yaml").write_text("core: core.yaml\n")
    cfg = load_train_config(tmp_path / "train.yaml")
    assert cfg.core == str((tmp_path / "core.yaml").resolve())
    assert load_config(cfg.core).name == "beside"

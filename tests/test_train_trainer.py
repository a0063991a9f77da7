"""The training loop: exact resume, a 2-process CPU torchrun (gloo) run, warm start, run-folder rules.

A micro core (32-px crops, 2 blocks, proxy identity encoder) keeps every run to a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_fixtures import MICRO_CORE, make_identity_folder

from iconface_video.errors import UserError
from iconface_video.train.config import TrainConfig, load_train_config
from iconface_video.train.logs import read_log
from iconface_video.train.trainer import lr_at, train



@pytest.fixture()
def setup(tmp_path):
    (tmp_path / "core.yaml").write_text(yaml.safe_dump(MICRO_CORE))
    data = make_identity_folder(tmp_path / "ids", people=3, per_person=4)
    cfg = TrainConfig(core=str(tmp_path / "core.yaml"), seed=7, steps=6, batch_size=3, lr=3e-3, warmup=2,
                      checkpoint_every=100, log_every=1, plot_every=3, threads=1, holdout=("person2",),
                      p_no_ref=0.3, ema_decay=0.9)
    return tmp_path, data, cfg


def _losses(run: Path) -> list[float]:
    return [r["loss_total"] for r in read_log(run / "log.jsonl")]


def test_resume_follows_the_identical_loss_trajectory(setup):
    tmp, data, cfg = setup
    straight = train(cfg, data, tmp / "straight")
    broken = train(cfg, data, tmp / "broken", until_step=3)
    assert len(_losses(broken)) == 3
    assert (broken / "checkpoints" / "latest").read_text().strip() == "step_0000003"
    train(cfg, data, broken, resume=True)
    a, b = _losses(straight), _losses(broken)
    assert len(a) == len(b) == 6
    assert a == b  # bit-identical: data, t, noise and optimizer state all resume exactly
    assert len(set(a)) > 1  # and the losses really come from different batches
    wa = load_file(str(straight / "checkpoints" / "step_0000006" / "model.safetensors"))
    wb = load_file(str(broken / "checkpoints" / "step_0000006" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ea = load_file(str(straight / "checkpoints" / "step_0000006" / "restorer.safetensors"))
    assert any(not torch.equal(ea[k], wa[k]) for k in wa if k in ea)  # the export is the EMA, not the raw weights
    assert (straight / "loss.png").stat().st_size > 1000
    split = json.loads((straight / "split.json").read_text())
    assert split["holdout"] == ["person2"] and "person2" not in split["train"]
    side = json.loads((straight / "checkpoints" / "step_0000006" / "restorer.json").read_text())
    assert side["crop_size"] == 32 and side["template"] == "arcface" and side["training"]["step"] == 6
    assert side["training"]["sides"] == [32] and side["training"]["recommended_steps"] == 1


def test_large_crop_steps_train_at_their_side_and_are_recorded(setup, tmp_path_factory):
    """Every hr_every-th step is a quarter batch of large crops from hr_data; the checkpoint then
    records both sides, which is what lets the render restore big faces at the big side."""
    tmp, data, cfg = setup
    big = make_identity_folder(tmp_path_factory.mktemp("big"), people=2, per_person=3, size=64)
    run = train(cfg.replace(steps=4, hr_data=str(big), hr_side=64, hr_every=2, batch_size=4), data, tmp / "hr")
    side = json.loads((run / "checkpoints" / "step_0000004" / "restorer.json").read_text())
    assert side["training"]["sides"] == [32, 64]
    from iconface_video.core.restorer import Restorer

    restorer = Restorer.from_checkpoint(run / "checkpoints" / "step_0000004" / "restorer.safetensors")
    assert (restorer.crop_size, restorer.max_side) == (32, 64)


def test_run_folder_rules_and_warm_start(setup):
    tmp, data, cfg = setup
    run = train(cfg.replace(steps=2), data, tmp / "run")
    with pytest.raises(UserError, match="already holds a training run"):
        train(cfg.replace(steps=2), data, run)
    with pytest.raises(UserError, match="different config"):
        train(cfg.replace(lr=1e-4), data, run, resume=True)
    with pytest.raises(UserError, match="nothing to resume"):
        train(cfg, data, tmp / "empty", resume=True)
    start = run / "checkpoints" / "step_0000002"
    warm = train(cfg.replace(steps=1, init=str(start), lr=1e-9, warmup=1, min_lr=1e-9), data, tmp / "warm")
    before = load_file(str(start / "model.safetensors"))
    after = load_file(str(warm / "checkpoints" / "step_0000001" / "model.safetensors"))
    # With a vanishing learning rate the warm-started weights are the donor's.
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup=10, steps=110)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 110) == pytest.approx(0.1) and 0.1 < lr_at(cfg, 60) < 1.0


def test_shipped_configs_load():
    from iconface_video.core.config import load_config

    from iconface_video.train.config import TRAIN_CONFIG_DIR

    names = sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.yaml"))
    assert "cpu" in names
    for name in names:
        cfg = load_train_config(name)
        assert cfg.k_max >= 1 and len(cfg.holdout) >= 4
        core = load_config(cfg.core)  # core presets resolve from any cwd
        assert core.crop_size in (128, 256)


def test_torchrun_two_cpu_processes(setup):
    tmp, data, cfg = setup
    cfg_path = tmp / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.replace(steps=3, batch_size=2).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "iconface_video", "train", "--config", str(cfg_path), "--data", str(data), "--out", str(tmp / "ddp")]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_log(tmp / "ddp" / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["world"] == 2 and r["samples"] == r["step"] * 2 * 2 for r in log)
    assert (tmp / "ddp" / "checkpoints" / "step_0000003" / "restorer.safetensors").is_file()


def test_loader_workers_give_the_same_batches(setup):
    tmp, data, cfg = setup
    short = cfg.replace(steps=3)
    assert _losses(train(short, data, tmp / "inline")) == _losses(train(short.replace(workers=2), data, tmp / "workers"))


def test_device_data_runs_train_from_a_pack_without_the_data_folder(setup):
    """``device_data``: batches made on the training device from a face pack; the run records the
    pack as its data, and the same step gives the same losses when resumed."""
    import cv2

    from iconface_video.train.device_data import PackWriter

    tmp, data, cfg = setup
    writer = PackWriter(template="arcface")
    for person in sorted(p for p in data.iterdir() if p.is_dir()):
        for i, image in enumerate(sorted(person.iterdir())):
            ok, jpeg = cv2.imencode(".jpg", cv2.imdecode(np.fromfile(image, np.uint8), cv2.IMREAD_COLOR))
            writer.add(person.name, jpeg.tobytes(), frame=-1, side=32)
    pack = tmp / "faces.pack"
    writer.write(pack)
    dev_cfg = cfg.replace(device_data=str(pack), steps=4)
    run = train(dev_cfg, tmp / "not-read", tmp / "device")
    split = json.loads((run / "split.json").read_text())
    assert split["data"] == str(pack.resolve()) and "person2" not in split["train"]
    assert (run / "checkpoints" / "step_0000004" / "restorer.safetensors").is_file()
    broken = train(dev_cfg, tmp / "not-read", tmp / "device-broken", until_step=2)
    train(dev_cfg, tmp / "not-read", broken, resume=True)
    assert _losses(broken) == _losses(run)

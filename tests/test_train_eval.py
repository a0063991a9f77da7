"""``iconface-video eval``: records per (method, bucket) with the required keys, and the grid PNG."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from train_fixtures import MICRO_CORE, make_identity_folder

from iconface_video.cli import main
from iconface_video.imageio import imread
from iconface_video.train import degrade as D
from iconface_video.train.data import scan_identities
from iconface_video.train.evaluate import (
    RECORD_KEYS,
    available_peers,
    bicubic_unsharp,
    build_cases,
    psnr,
    ssim,
)


@pytest.fixture()
def micro_checkpoint(tmp_path):
    from iconface_video.core.checkpoint import save_checkpoint
    from iconface_video.core.config import CoreConfig
    from iconface_video.core.model import IConFaceCore

    torch.manual_seed(0)
    cfg = CoreConfig.from_dict({**MICRO_CORE, "id_encoder": "dlib", "id_dim": 128})
    return save_checkpoint(tmp_path / "micro.safetensors", IConFaceCore(cfg), {"note": "random init, for tests"})


def test_eval_command_writes_records_and_grid(tmp_path, micro_checkpoint):
    data = make_identity_folder(tmp_path / "held", people=2, per_person=4)
    out, grid = tmp_path / "eval.json", tmp_path / "grid.png"
    main(["eval", "--data", str(data), "--weights", str(micro_checkpoint), "--json", str(out),
          "--grid", str(grid), "--per-person", "2", "--refs", "2", "--steps", "1"])
    doc = json.loads(out.read_text())
    records = doc["records"]
    methods = ("input", "bicubic_unsharp", *available_peers(), "model_noref", "model_ref")
    assert {(r["method"], r["bucket"]) for r in records} == {(m, b) for m in methods for b in D.BUCKETS}
    for r in records:
        assert set(RECORD_KEYS) <= set(r)
        assert r["n"] == 4 and np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 and -1 <= r["id_cos"] <= 1
    assert doc["meta"]["steps"] == 1 and doc["meta"]["people"] == ["person0", "person1"]
    img = imread(grid)
    assert img.shape[1] == 32 * (len(methods) + 1) and img.shape[0] > 32 * 3


def test_eval_without_model_and_bad_bucket(tmp_path, capsys):
    data = make_identity_folder(tmp_path / "held", people=2, per_person=3)
    main(["eval", "--data", str(data), "--no-model", "--json", str(tmp_path / "e.json"), "--buckets", "severe"])
    methods = {r["method"] for r in json.loads((tmp_path / "e.json").read_text())["records"]}
    assert methods == {"input", "bicubic_unsharp", *available_peers()}
    with pytest.raises(SystemExit) as bad:
        main(["eval", "--data", str(data), "--no-model", "--json", str(tmp_path / "x.json"), "--buckets", "blurry"])
    assert bad.value.code == 2 and "unknown bucket" in capsys.readouterr().err


def test_cases_are_reproducible_and_references_exclude_the_target(tmp_path):
    ids = scan_identities(make_identity_folder(tmp_path / "held", people=2, per_person=5))
    kw = {"buckets": D.BUCKETS, "per_person": 3, "k_refs": 4, "seed": 5, "crop_size": 32, "template": "arcface"}
    a, b = build_cases(ids, **kw), build_cases(ids, **kw)
    assert len(a) == 2 * 3 * 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.lq, y.lq)
        assert len(x.refs) == 4
        assert not any(np.array_equal(r, x.hq) for r in x.refs)  # the target is never its own reference


def test_metrics_and_baseline():
    rng = np.random.default_rng(0)
    truth = rng.random((32, 32, 3)).astype(np.float32)
    assert ssim(truth, truth) == pytest.approx(1.0)
    noisy = np.clip(truth + rng.normal(0, 0.1, truth.shape), 0, 1).astype(np.float32)
    assert psnr(noisy, truth) < 25 and ssim(noisy, truth) < 0.95
    small = cv2.resize(truth, (8, 8), interpolation=cv2.INTER_AREA)
    up = bicubic_unsharp(small, 32)
    assert up.shape == truth.shape and 0 <= up.min() and up.max() <= 1

"""AdaFace: our IR-ResNet loads a Lightning-style checkpoint (``state_dict`` keys under
``model.``) through ``torch.load(weights_only=True)`` and returns unnormalised features."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from iconface_video.errors import BadWeightsError, InputError
from iconface_video.faces.adaface import IRBackbone, layers_from_state
from iconface_video.faces.embed import load_embedder


def fake_lightning_checkpoint(path, net: IRBackbone) -> None:
    """Save ``net`` the way AdaFace's release does: Lightning metadata, hyper-parameters in
    Lightning's ``AttributeDict`` (pickled by that class name), backbone under ``model.``."""
    module = types.ModuleType("pytorch_lightning.utilities.parsing")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = module.__name__
    AttributeDict.__qualname__ = "AttributeDict"
    module.AttributeDict = AttributeDict
    fake = {"pytorch_lightning": types.ModuleType("pytorch_lightning"),
            "pytorch_lightning.utilities": types.ModuleType("pytorch_lightning.utilities"),
            module.__name__: module}
    assert not set(fake) & set(sys.modules)
    sys.modules.update(fake)
    try:
        state = {f"model.{k}": v for k, v in net.state_dict().items()}
        state["head.kernel"] = torch.randn(512, 4)
        torch.save({
            "epoch": 25, "global_step": 1000, "pytorch-lightning_version": "1.8.6",
            "state_dict": state, "hyper_parameters": AttributeDict(arch="ir_18", m=0.4, h=0.333),
        }, path)
    finally:
        for name in fake:
            del sys.modules[name]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = IRBackbone(18)
    # Non-trivial BatchNorm statistics, so that eval mode really uses the loaded buffers.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    path = tmp_path_factory.mktemp("adaface") / "adaface_ir18_test.ckpt"
    fake_lightning_checkpoint(path, net)
    return path, net


def test_loads_lightning_checkpoint_and_returns_unnormalised_bgr_features(checkpoint):
    torch.set_num_threads(1)
    path, net = checkpoint
    embedder = load_embedder("adaface", checkpoint=path)
    assert embedder.name == "adaface" and embedder.dim == 512
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (2, 112, 112, 3), dtype=np.uint8)
    features = embedder.embed_aligned112(crops)
    bgr = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = net((bgr - 0.5) / 0.5).numpy()
    assert features.shape == (2, 512)
    assert np.allclose(features, expected, atol=1e-4)
    norms = np.linalg.norm(features, axis=1)
    assert not np.allclose(norms, 1.0)  # unnormalised: the norm carries information


def test_embed_aligns_to_the_arcface_template(checkpoint):
    from iconface_video.faces.align import template

    embedder = load_embedder("adaface", checkpoint=checkpoint[0])
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    kps = template("arcface", 112)[None] + np.float32([60, 80])
    direct = embedder.embed(image, kps)
    crop = image[80:192, 60:172][None]
    assert np.allclose(direct, embedder.embed_aligned112(crop), atol=1e-3)


def test_depth_is_read_from_the_checkpoint():
    assert layers_from_state(IRBackbone(50).state_dict()) == 50
    with pytest.raises(InputError, match="not an IR-18/34/50/100"):
        layers_from_state({f"body.{i}.res_layer.0.weight": torch.zeros(1) for i in range(7)})


def test_unsafe_or_wrong_checkpoints_are_refused(tmp_path, checkpoint):
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": {}, "callbacks": Payload()}, handle, protocol=2)
    with pytest.raises(BadWeightsError, match="refused"):
        load_embedder("adaface", checkpoint=evil)
    _, net = checkpoint
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state["model.output_layer.3.weight"] = torch.zeros(512, 10)
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": state}, wrong)
    with pytest.raises(BadWeightsError, match=r"output_layer\.3\.weight"):
        load_embedder("adaface", checkpoint=wrong)
    with pytest.raises(InputError, match="not found"):
        load_embedder("adaface", checkpoint=tmp_path / "nothing.ckpt")

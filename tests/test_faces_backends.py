"""insightface and facexlib backends through their real loading code, on tiny models generated
here (no download): insightface routes ONNX files by signature; facexlib loads DIR/<file name>."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from iconface_video.errors import BadWeightsError, InputError, MissingModelError
from iconface_video.faces.detect import load_detector

pytest.importorskip("onnx")
# The tiny models are exported with torch's TorchScript ONNX exporter (the dynamo one needs
# onnxscript, which the project does not install); its deprecation notice is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class TinySCRFD(nn.Module):
    """SCRFD's output signature (3 strides x scores, boxes, 10 kps; 2 anchors per cell).

    The stride-8 score is high where the image is bright, so a white square on black gives a
    face there; boxes are 2 strides to each side of the anchor, points at fixed offsets.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("box", torch.full((1, 4), 2.0))
        self.register_buffer("kps", torch.tensor([[-1.0, -1.0, 1.0, -1.0, 0.0, 0.0, -0.8, 1.0, 0.8, 1.0]]))

    def forward(self, x: torch.Tensor):
        grey = x.mean(dim=1, keepdim=True)
        outs_s, outs_b, outs_k = [], [], []
        for stride in (8, 16, 32):
            pooled = nn.functional.avg_pool2d(grey, stride)
            logit = (pooled - 0.5) * 20 if stride == 8 else pooled * 0 - 20
            score = torch.sigmoid(logit).permute(0, 2, 3, 1).reshape(-1, 1).repeat_interleave(2, dim=0)
            outs_s.append(score)
            outs_b.append(score * 0 + self.box)
            outs_k.append(score * 0 + self.kps)
        return (*outs_s, *outs_b, *outs_k)


class TinyArcFace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 8, stride=8)
        self.fc = nn.Linear(8 * 14 * 14, 16)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def export(module: nn.Module, shape: tuple[int, ...], path, outputs: int, batch_axis: bool = False) -> None:
    names = [f"out{i}" for i in range(outputs)]
    axes = {name: {0: "n"} for name in ["input.1", *names]} if batch_axis else None
    torch.onnx.export(
        module.eval(), torch.zeros(shape), str(path), input_names=["input.1"],
        output_names=names, opset_version=17, dynamo=False, dynamic_axes=axes,
    )


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    folder = root / "buffalo_l"
    folder.mkdir()
    export(TinySCRFD(), (1, 3, 128, 128), folder / "det_10g.onnx", 9)
    torch.manual_seed(0)
    export(TinyArcFace(), (1, 3, 112, 112), folder / "w600k_r50.onnx", 1, batch_axis=True)
    return root


def white_square_image() -> np.ndarray:
    image = np.zeros((128, 128, 3), np.uint8)
    image[40:56, 64:80] = 255  # two stride-8 cells wide
    return image


def test_insightface_detector_routes_loads_and_maps_coordinates(pack):
    detector = load_detector("insightface", models_dir=pack, min_face=1)
    assert detector.name == "insightface"
    faces = detector.detect([white_square_image()], frame_indices=[3])[0]
    assert faces, "the bright square should be detected"
    top = faces[0]
    cx, cy = (top.box[0] + top.box[2]) / 2, (top.box[1] + top.box[3]) / 2
    assert 56 <= cx <= 88 and 32 <= cy <= 64  # on the square
    assert top.box[2] - top.box[0] == pytest.approx(32, abs=1)  # 2 strides each side
    assert top.kps5.shape == (5, 2) and top.frame_index == 3
    assert top.kps5[0, 0] < top.kps5[1, 0]  # left eye left of right eye
    # Rotation: the same square in a rotated stored frame maps back to stored coordinates.
    stored = np.ascontiguousarray(np.rot90(white_square_image(), k=1))
    rotated = detector.detect([stored], rotation=-90)[0]
    assert rotated and 32 <= (rotated[0].box[0] + rotated[0].box[2]) / 2 <= 64


def test_auto_prefers_insightface_when_present(pack, tmp_path):
    assert load_detector("auto", models_dir=pack).name == "insightface"
    # insightface packs are non-commercial: a commercial user's "auto" passes them over.
    assert load_detector("auto", models_dir=pack, commercial_only=True).name == "mtcnn"
    assert load_detector("auto", models_dir=tmp_path).name in ("mtcnn", "insightface", "facexlib")


def test_arcface_embedder_from_pack(pack):
    from iconface_video.faces.embed import load_embedder

    embedder = load_embedder("arcface", models_dir=pack)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    features = embedder.embed_aligned112(crops)
    assert features.shape == (3, 16) and embedder.dim == 16
    assert not np.allclose(features[0], features[1])
    image = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    from iconface_video.faces.align import template

    kps = template("arcface", 112)[None] + 40
    aligned = embedder.embed(image, kps)
    assert np.allclose(aligned, embedder.embed_aligned112(image[40:152, 40:152][None]), atol=1e-4)


def test_insightface_wrong_file_is_a_clear_error(pack, tmp_path):
    folder = tmp_path / "buffalo_l"
    folder.mkdir()
    # A recogniser saved under the detector's name routes to ArcFaceONNX: refused by name.
    (folder / "det_10g.onnx").write_bytes((pack / "buffalo_l" / "w600k_r50.onnx").read_bytes())
    with pytest.raises(BadWeightsError, match="not a face detection model"):
        load_detector("insightface", models_dir=tmp_path)
    (folder / "det_10g.onnx").write_bytes(b"garbage")
    with pytest.raises(BadWeightsError, match="onnxruntime cannot load it"):
        load_detector("insightface", models_dir=tmp_path)


def test_missing_insightface_pack_names_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(MissingModelError, match="models fetch buffalo_l"):
        load_detector("insightface", models_dir=tmp_path)


def test_facexlib_retinaface_loads_dir_file_name(tmp_path, monkeypatch):
    facexlib_retina = pytest.importorskip("facexlib.detection.retinaface")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = facexlib_retina.RetinaFace(network_name="mobile0.25", half=False, device="cpu")
    folder = tmp_path / "facexlib"
    folder.mkdir()
    # Saved with the "module." prefix of the released (DataParallel) checkpoints.
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, folder / "detection_mobilenet0.25_Final.pth")
    detector = load_detector("facexlib", models_dir=tmp_path, threshold=0.0, min_face=0)
    assert detector.name == "facexlib"
    image = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    faces = detector.detect([image])[0]
    # Random weights: boxes are meaningless, but the format and the sorting are real.
    assert faces and all(f.kps5.shape == (5, 2) for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    with torch.inference_mode():
        raw = detector.model.detect_faces(np.ascontiguousarray(image[:, :, ::-1]).astype(np.float32), conf_threshold=0.0)
    assert np.allclose(faces[0].kps5.reshape(-1), raw[0, 5:15], atol=1e-4)
    assert load_detector("auto", models_dir=tmp_path).name == "facexlib"


def test_facexlib_wrong_shape_and_code_pickle_are_refused(tmp_path, monkeypatch):
    facexlib_retina = pytest.importorskip("facexlib.detection.retinaface")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "facexlib"
    folder.mkdir()
    state = facexlib_retina.RetinaFace(network_name="mobile0.25", half=False, device="cpu").state_dict()
    key = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    torch.save(state, folder / "detection_mobilenet0.25_Final.pth")
    with pytest.raises(BadWeightsError, match=key.replace(".", r"\.")):
        load_detector("facexlib", models_dir=tmp_path)
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    with open(folder / "detection_mobilenet0.25_Final.pth", "wb") as handle:
        pickle.dump({"x": Payload()}, handle, protocol=2)
    with pytest.raises(BadWeightsError, match="refused"):
        load_detector("facexlib", models_dir=tmp_path)


def test_the_per_image_loop_drops_small_faces_sorts_and_maps_back():
    from iconface_video.faces.backend import detect_each, min_face_px
    from iconface_video.faces.orientation import points_to_stored

    stored = np.zeros((60, 100, 3), np.uint8)
    seen = []
    rows = np.array([[10, 10, 20, 20, 0.95], [0, 0, 40, 40, 0.7], [5, 50, 45, 95, 0.9]], np.float32)
    points = np.arange(30, dtype=np.float32).reshape(3, 5, 2)

    def find(view):
        seen.append(view.shape)
        return rows, points

    assert min_face_px(None, 60, 100) == 20.0 and min_face_px(None, 1080, 1920) == 27.0 and min_face_px(8, 60, 100) == 8.0
    faces = detect_each(find, None, [stored], [5], rotation=90)[0]
    assert seen == [(100, 60, 3)]  # the backend searched the upright view
    assert [f.score for f in faces] == pytest.approx([0.9, 0.7])  # the 10 px face is below 20 px; best first
    assert all(f.frame_index == 5 for f in faces)
    assert np.array_equal(faces[0].kps5, points_to_stored(points[2], 90, (60, 100)))
    # One quarter turn: stored (x, y) = (W - 1 - upright y, upright x), W = 100.
    assert faces[0].box == (99.0 - 95.0, 5.0, 99.0 - 50.0, 45.0)
    assert len(detect_each(find, 5, [stored], rotation=0)[0]) == 3
    with pytest.raises(ValueError, match="one entry per image"):
        detect_each(find, None, [stored], [1, 2])
    with pytest.raises(InputError, match="image 0: expected uint8"):
        detect_each(find, None, [stored.astype(np.float32)])

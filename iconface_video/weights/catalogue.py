"""Every model the program can use: file names, where to download them, checksums, licences.

A plain tuple of frozen dataclasses; nothing registers itself. ``commercial_use`` says plainly
whether a studio may use the weights in a commercial product; a commercial user can run the
whole pipeline on the models marked True (the embedded detector and embedder are).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFile:
    """One weight file. ``sha256`` None means upstream publishes none; ``fetch`` then prints the
    digest it got so the user can pin it. ``archive_member`` names the file inside the model's
    download archive, when it comes zipped."""

    name: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    archive_member: str | None = None


@dataclass(frozen=True)
class Model:
    """A named model: its files, licence and whether the package carries it.

    ``embedded_dir`` is a folder inside this package holding the files; ``package`` names an
    installed Python distribution's folder (``module/sub/dir``) holding them instead.
    ``archive`` is a zip to download that contains ``files`` (insightface packs).
    """

    name: str
    kind: str  # "detector", "embedder", "parser", "restorer"
    description: str
    files: tuple[ModelFile, ...]
    licence: str
    commercial_use: bool
    embedded_dir: str | None = None
    package: str | None = None
    archive: ModelFile | None = None
    subdir: str | None = None  # files live in <models dir>/<subdir>/ (insightface packs)
    obtain: str = ""  # how to get the files when there is no download URL
    derived_from: str | None = None  # converted by the program from this model's files (``store.derive``)

    @property
    def embedded(self) -> bool:
        return self.embedded_dir is not None or self.package is not None


_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download"
_INSIGHTFACE = "https://github.com/deepinsight/insightface/releases/download/v0.7"

MODELS: tuple[Model, ...] = (
    Model(
        name="mtcnn",
        kind="detector",
        description="MTCNN face detector with 5 landmarks (from facenet-pytorch 2.6.0)",
        files=(
            ModelFile("pnet.safetensors", sha256="4e50228ce1500048d78361e922c7a716e794ff54bb2a7db2181a0c274b91db8c", size=27568),
            ModelFile("rnet.safetensors", sha256="bf623190fdd7b63953170e4c8262bc084f357789c2883877a38fe0be4c37f395", size=402000),
            ModelFile("onet.safetensors", sha256="26db706d410e05c32d6c0f7b204ea18b6914a75448e866a96683da21515ea7b7", size=1557864),
        ),
        licence="MIT (Timothy Esler, facenet-pytorch)",
        commercial_use=True,
        embedded_dir="embedded/mtcnn",
    ),
    Model(
        name="dlib-resnet",
        kind="embedder",
        description="dlib ResNet 128-d face descriptor (face-recognition-models 0.3.0)",
        files=(ModelFile(
            "dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            size=22466066,
        ),),
        licence="CC0 1.0 (Davis King)",
        commercial_use=True,
        package="face_recognition_models/models",
        obtain="run `pip install face-recognition-models==0.3.0` (the package carries it)",
    ),
    Model(
        name="dlib-resnet-torch",
        kind="embedder",
        description="dlib-resnet's weights as safetensors for its PyTorch port (faces/dlib_resnet.py)",
        files=(ModelFile(
            "dlib_face_recognition_resnet_model_v1.safetensors",
            sha256="0490b2b663182b249954c030b2792d06ac6404a3f87906965ae155a585a4709c",
            size=22469032,
        ),),
        licence="CC0 1.0 (Davis King)",
        commercial_use=True,
        derived_from="dlib-resnet",
        obtain="it is converted from dlib-resnet's .dat file on first use (face-recognition-models==0.3.0)",
    ),
    Model(
        name="dlib-mmod",
        kind="detector",
        description="dlib CNN (MMOD) face detector, used to double-check harvested references",
        files=(ModelFile(
            "mmod_human_face_detector.dat",
            sha256="4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
            size=729940,
        ),),
        licence="CC0 1.0 (Davis King)",
        commercial_use=True,
        package="face_recognition_models/models",
        obtain="run `pip install face-recognition-models==0.3.0` (the package carries it)",
    ),
    Model(
        name="buffalo_l",
        kind="detector+embedder",
        description="insightface pack: SCRFD-10G detector (det_10g.onnx) + ArcFace R50 (w600k_r50.onnx)",
        files=(
            ModelFile("det_10g.onnx", archive_member="det_10g.onnx"),
            ModelFile("w600k_r50.onnx", archive_member="w600k_r50.onnx"),
        ),
        licence="insightface pretrained models: NON-COMMERCIAL research use only",
        commercial_use=False,
        archive=ModelFile("buffalo_l.zip", urls=(f"{_INSIGHTFACE}/buffalo_l.zip",)),
        subdir="buffalo_l",
    ),
    Model(
        name="retinaface",
        kind="detector",
        description="facexlib RetinaFace ResNet-50 detector with 5 landmarks",
        files=(ModelFile("detection_Resnet50_Final.pth", urls=(f"{_FACEXLIB}/v0.1.0/detection_Resnet50_Final.pth",)),),
        licence="MIT (facexlib; weights from biubug6/Pytorch_Retinaface, trained on WIDER FACE: research data)",
        commercial_use=False,
        subdir="facexlib",
    ),
    Model(
        name="retinaface-mobile",
        kind="detector",
        description="facexlib RetinaFace MobileNet-0.25 detector (small, faster, less accurate)",
        files=(ModelFile("detection_mobilenet0.25_Final.pth", urls=(f"{_FACEXLIB}/v0.1.0/detection_mobilenet0.25_Final.pth",)),),
        licence="MIT (facexlib; weights from biubug6/Pytorch_Retinaface, trained on WIDER FACE: research data)",
        commercial_use=False,
        subdir="facexlib",
    ),
    Model(
        name="parsenet",
        kind="parser",
        description="facexlib ParseNet face parsing (soft paste-back masks)",
        files=(ModelFile("parsing_parsenet.pth", urls=(f"{_FACEXLIB}/v0.2.2/parsing_parsenet.pth",)),),
        licence="facexlib release (trained on CelebAMask-HQ: non-commercial research data)",
        commercial_use=False,
        subdir="facexlib",
    ),
    Model(
        name="bisenet",
        kind="parser",
        description="facexlib BiSeNet face parsing (soft paste-back masks)",
        files=(ModelFile("parsing_bisenet.pth", urls=(f"{_FACEXLIB}/v0.2.0/parsing_bisenet.pth",)),),
        licence="facexlib release (trained on CelebAMask-HQ: non-commercial research data)",
        commercial_use=False,
        subdir="facexlib",
    ),
    Model(
        name="adaface-ir101",
        kind="embedder",
        description="AdaFace IR-101 (WebFace12M); user-supplied: the release is on Google Drive",
        files=(ModelFile("adaface_ir101_webface12m.ckpt"),),
        licence="MIT code; weights trained on WebFace (non-commercial research data)",
        commercial_use=False,
        subdir="adaface",
        obtain="download it from https://github.com/mk-minchul/AdaFace (Google Drive links in its README)",
    ),
    Model(
        name="adaface-ir50",
        kind="embedder",
        description="AdaFace IR-50 (MS1MV2); user-supplied: the release is on Google Drive",
        files=(ModelFile("adaface_ir50_ms1mv2.ckpt"),),
        licence="MIT code; weights trained on MS1MV2 (non-commercial research data)",
        commercial_use=False,
        subdir="adaface",
        obtain="download it from https://github.com/mk-minchul/AdaFace (Google Drive links in its README)",
    ),
    Model(
        name="restorer",
        kind="restorer",
        description="iconface-video's own restoration checkpoint (written by `iconface-video train`)",
        files=(ModelFile("iconface-restorer.safetensors"), ModelFile("iconface-restorer.json")),
        licence="research-only: trained on faces112 (Glint360k-derived), non-commercial",
        commercial_use=False,
        embedded_dir="embedded/restorer",
        obtain="reinstall iconface-video (it ships one) or train one with `iconface-video train`",
    ),
)


def get_model(name: str) -> Model:
    """The catalogue entry called ``name``; ``KeyError`` lists the known names."""
    for model in MODELS:
        if model.name == name:
            return model
    raise KeyError(f"unknown model {name!r}; known: {', '.join(m.name for m in MODELS)}")

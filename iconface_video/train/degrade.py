"""Synthetic degradations for training and evaluation, seeded and reproducible.

Three buckets (core-design §5.9):

- ``standard``: the GFPGAN ranges: a 41-tap isotropic or anisotropic Gaussian blur with
  σ 0.1–10, down-sampling by 0.8–8, Gaussian noise σ 0–20 (of 255), JPEG quality 60–100 and an
  occasional colour shift.
- ``severe``: σ up to 15, down-sampling up to 16, JPEG down to 30, more noise.
- ``video``: motion blur, down-sampling, compression applied twice at different qualities with a
  small re-scale in between (the typical "uploaded, downloaded, re-encoded" chain) and frame-level
  colour shifts (gain, gamma, offset).

Blur widths are given, as in GFPGAN, for a 512-pixel crop and are scaled with the crop
(``size / 512``): a σ = 10 blur of a 512 face is the same physical blur as σ ≈ 2.2 on the same
face at 112. Down-sampling factors are relative and are not scaled.

Every sample draws its parameters from its own ``numpy.random.Generator`` built from
``(seed, index, ...)`` (:func:`sample_rng`), so a sample is identical whichever worker, process
or resume produces it. Images are ``float32[H, W, 3]`` RGB in [0, 1]; JPEG rounds through uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import kornia
import numpy as np

BUCKETS: tuple[str, ...] = ("standard", "severe", "video")
GFPGAN_SIZE = 512  # crop size the blur ranges are quoted for


def sample_rng(*keys: int) -> np.random.Generator:
    """A generator determined by integer keys only, e.g. ``sample_rng(seed, index)``."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


@dataclass(frozen=True)
class DegradeParams:
    """The drawn parameters of one degradation (all spatial values already in crop pixels)."""

    bucket: str
    blur_kind: str  # "iso", "aniso", "motion" or "none"
    blur_sigma: tuple[float, float]  # (σx, σy) for Gaussian; (length, 0) for motion
    blur_angle: float  # radians for Gaussian, degrees for motion
    kernel_size: int
    scale: float  # down-sampling factor (>1 shrinks)
    noise_sigma: float  # in [0, 1] units
    jpeg: tuple[int, ...]  # one quality per compression pass (empty: none)
    rescale2: float  # relative re-scale between the two video compressions (1: none)
    gain: tuple[float, float, float]  # per-channel multiplicative colour shift
    offset: tuple[float, float, float]  # per-channel additive shift
    gamma: float
    gray: bool


def _odd(n: float) -> int:
    k = max(3, round(n))
    return k if k % 2 else k + 1


def _colour(rng: np.random.Generator, p: float, amount: float) -> tuple[tuple, tuple]:
    """GFPGAN's colour jitter: with probability ``p`` a per-channel shift of up to ``amount``."""
    if rng.random() < p:
        return (1.0, 1.0, 1.0), tuple(float(v) for v in rng.uniform(-amount, amount, 3))
    return (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)


def sample_params(rng: np.random.Generator, bucket: str, size: int) -> DegradeParams:
    """Draw one degradation of ``bucket`` for a ``size``-pixel crop."""
    s = size / GFPGAN_SIZE
    if bucket == "standard":
        sig_lo, sig_hi, scale_hi, noise_hi, q_lo, q_hi = 0.1, 10.0, 8.0, 20.0, 60, 100
        scale_lo = 0.8
    elif bucket == "severe":
        sig_lo, sig_hi, scale_hi, noise_hi, q_lo, q_hi = 3.0, 15.0, 16.0, 30.0, 30, 70
        scale_lo = 4.0
    elif bucket == "video":
        return _sample_video(rng, size)
    else:
        raise ValueError(f"unknown degradation bucket {bucket!r}; expected one of {BUCKETS}")
    iso = rng.random() < 0.5
    sx = float(rng.uniform(sig_lo, sig_hi))
    sy = sx if iso else float(rng.uniform(sig_lo, sig_hi))
    angle = 0.0 if iso else float(rng.uniform(0.0, np.pi))
    scale = float(rng.uniform(scale_lo, scale_hi))
    noise = float(rng.uniform(0.0, noise_hi)) / 255.0
    quality = int(rng.integers(q_lo, q_hi + 1))
    gain, offset = _colour(rng, 0.3, 20.0 / 255.0)
    return DegradeParams(
        bucket=bucket,
        blur_kind="iso" if iso else "aniso",
        blur_sigma=(sx * s, sy * s),
        blur_angle=angle,
        kernel_size=_odd(41 * s * (1.5 if bucket == "severe" else 1.0)),
        scale=scale,
        noise_sigma=noise,
        jpeg=(quality,),
        rescale2=1.0,
        gain=gain,
        offset=offset,
        gamma=1.0,
        gray=bool(rng.random() < 0.01),
    )


def _sample_video(rng: np.random.Generator, size: int) -> DegradeParams:
    s = size / GFPGAN_SIZE
    length = float(rng.uniform(5.0, 31.0)) * s
    gain = tuple(float(v) for v in rng.uniform(0.88, 1.12, 3))
    offset = tuple(float(v) for v in rng.uniform(-0.04, 0.04, 3))
    return DegradeParams(
        bucket="video",
        blur_kind="motion",
        blur_sigma=(length, 0.0),
        blur_angle=float(rng.uniform(0.0, 180.0)),
        kernel_size=_odd(length),
        scale=float(rng.uniform(1.0, 6.0)),
        noise_sigma=float(rng.uniform(0.0, 10.0)) / 255.0,
        jpeg=(int(rng.integers(35, 86)), int(rng.integers(45, 91))),
        rescale2=float(rng.uniform(0.75, 1.0)),
        gain=gain,  # type: ignore[arg-type]
        offset=offset,  # type: ignore[arg-type]
        gamma=float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
        gray=False,
    )


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """``float32[size, size]`` Gaussian with axes σx, σy rotated by ``angle`` (radians), sum 1.

    kornia's Gaussian kernels are axis-aligned only; the rotated covariance is two lines here.
    """
    c, s_ = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s_], [s_, c]])
    cov = rot @ np.diag([max(sigma_x, 1e-3) ** 2, max(sigma_y, 1e-3) ** 2]) @ rot.T
    r = np.arange(size) - size // 2
    xy = np.stack(np.meshgrid(r, r, indexing="xy"), -1).astype(np.float64)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", xy, np.linalg.inv(cov), xy))
    return (k / k.sum()).astype(np.float32)


def motion_kernel(size: int, angle_deg: float) -> np.ndarray:
    """``float32[size, size]`` linear motion-blur kernel (kornia's), sum 1."""
    k = kornia.filters.get_motion_kernel2d(size, float(angle_deg), 0.0)
    return k[0].numpy().astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip ``float32[H, W, 3]`` RGB through JPEG at ``quality`` (4:2:0, as cameras do)."""
    u8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


@dataclass(frozen=True)
class Degraded:
    """``lq``: ``float32[R, R, 3]`` degraded image back at the crop size (bilinear, as GFPGAN);
    ``small``: the same image at its reduced size (input of the bicubic baseline)."""

    lq: np.ndarray
    small: np.ndarray
    params: DegradeParams


def apply(img: np.ndarray, p: DegradeParams, rng: np.random.Generator) -> Degraded:
    """Degrade ``float32[R, R, 3]`` RGB in [0, 1] with ``p``; ``rng`` draws the noise field."""
    h, w = img.shape[:2]
    x = img.astype(np.float32)
    if p.blur_kind == "motion":
        k = motion_kernel(p.kernel_size, p.blur_angle)
    else:
        k = gaussian_kernel(p.kernel_size, p.blur_sigma[0], p.blur_sigma[1], p.blur_angle)
    x = cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT_101)
    sw, sh = max(4, round(w / p.scale)), max(4, round(h / p.scale))
    # Random interpolation per sample, as GFPGAN/Real-ESRGAN do, so the network cannot learn one kernel.
    interp = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(3))]
    x = cv2.resize(x, (sw, sh), interpolation=interp)
    if p.noise_sigma > 0:
        x = x + rng.standard_normal(x.shape).astype(np.float32) * p.noise_sigma
    x = np.clip(x, 0.0, 1.0)
    for i, q in enumerate(p.jpeg):
        if i == 1 and p.rescale2 != 1.0:
            w2, h2 = max(4, round(sw * p.rescale2)), max(4, round(sh * p.rescale2))
            x = cv2.resize(cv2.resize(x, (w2, h2), interpolation=cv2.INTER_AREA), (sw, sh),
                           interpolation=cv2.INTER_LINEAR)
        x = jpeg(x, q)
    x = _colour_shift(x, p)
    small = x
    lq = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return Degraded(lq=np.clip(lq, 0.0, 1.0), small=np.clip(small, 0.0, 1.0), params=p)


def _colour_shift(x: np.ndarray, p: DegradeParams) -> np.ndarray:
    x = np.clip(x * np.asarray(p.gain, np.float32) + np.asarray(p.offset, np.float32), 0.0, 1.0)
    if p.gamma != 1.0:
        x = x ** np.float32(p.gamma)
    if p.gray:
        x = np.repeat(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    return x.astype(np.float32)


def degrade(img: np.ndarray, rng: np.random.Generator, bucket: str) -> Degraded:
    """Draw a ``bucket`` degradation from ``rng`` and apply it to ``float32[R, R, 3]``."""
    return apply(img, sample_params(rng, bucket, img.shape[0]), rng)


def pick_bucket(rng: np.random.Generator, mix: dict[str, float]) -> str:
    """Choose a bucket with probabilities ``mix`` (normalised here)."""
    names = sorted(mix)
    probs = np.asarray([mix[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=probs / probs.sum()))]


def light_reference(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mild degradation of a training reference (core-design §5.8): blur σ ≤ 1.5 (512-scale),
    JPEG ≥ 70, a small colour jitter and a horizontal flip half the time. ``float32[R, R, 3]``."""
    s = img.shape[0] / GFPGAN_SIZE
    sigma = float(rng.uniform(0.0, 1.5)) * s
    x = img
    if sigma > 0.05:
        x = cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    x = jpeg(x, int(rng.integers(70, 101)))
    gain = rng.uniform(0.95, 1.05, 3).astype(np.float32)
    x = np.clip(x * gain + rng.uniform(-0.02, 0.02, 3).astype(np.float32), 0.0, 1.0)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    return np.ascontiguousarray(x, dtype=np.float32)

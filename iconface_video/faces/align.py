"""Five-point face alignment: templates, batched similarity fits, warps and their exact inverse.

Every landmark array is in ArcFace order (left eye, right eye, nose tip, left mouth corner,
right mouth corner; "left" = image left). Affine matrices map *source image* pixels to *crop*
pixels, ``float32[N, 2, 3]``, in OpenCV/kornia convention (pixel centres at integers).
Tensor warps (``warp_faces``) serve the restorer; uint8 OpenCV warps (``warp_to_template``,
``arcface112_to``) serve the identity embedders, each to its own template.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from kornia.geometry.transform import invert_affine_transform, warp_affine

# The standard ArcFace/InsightFace 112x112 template (insightface `arcface_dst`).
_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
# The FFHQ 512x512 template used by facexlib / GFPGAN / CodeFormer for their aligned crops.
_FFHQ_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]],
    dtype=np.float32,
)
# Where dlib's 150x150 chips (get_face_chip, padding 0.25) put the ArcFace 5 points: medians of
# MTCNN points found on 36 dlib chips of deepface / face_recognition / facenet-pytorch photos
# (per-point std 1.2-4.7 px). Aligning to it reproduces the crops dlib's network was trained on.
DLIB_TEMPLATE_150 = np.array(
    [[46.83, 44.82], [101.50, 45.17], [74.35, 77.84], [48.85, 99.99], [100.02, 100.38]], dtype=np.float32
)
TEMPLATES = ("ffhq", "arcface")


def template(name: str, size: int) -> np.ndarray:
    """The 5-point template ``float32[5, 2]`` for a ``size`` x ``size`` crop.

    ``ffhq`` scales the 512 template. ``arcface`` follows insightface's rule: sizes that are
    multiples of 112 scale the 112 template; other sizes (128, 256) scale it as a 128 crop with
    the face shifted 8 px right, which is how ArcFace-128 crops are made.
    """
    if name == "ffhq":
        return _FFHQ_512 * (size / 512.0)
    if name == "arcface":
        if size % 112 == 0:
            return _ARCFACE_112 * (size / 112.0)
        ratio = size / 128.0
        return (_ARCFACE_112 + np.array([8.0, 0.0], dtype=np.float32)) * ratio
    raise ValueError(f"unknown alignment template {name!r}; expected one of {TEMPLATES}")


def fit_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, shift) taking ``src`` onto ``dst``.

    ``src`` is ``float[N, K, 2]``, ``dst`` is ``float[N, K, 2]`` or ``float[K, 2]``; returns
    ``float[N, 2, 3]``. Closed form of Umeyama's method without reflection: with points as
    complex numbers, the best ``z -> c z + t`` has ``c = sum(conj(x) y) / sum(|x|^2)`` over the
    centred points, which is batched and exact.
    """
    src = src.to(torch.float64)
    dst = dst.to(torch.float64).expand_as(src)
    src_mean = src.mean(dim=1, keepdim=True)
    dst_mean = dst.mean(dim=1, keepdim=True)
    x = src - src_mean
    y = dst - dst_mean
    denom = (x * x).sum(dim=(1, 2)).clamp_min(1e-12)
    a = (x[..., 0] * y[..., 0] + x[..., 1] * y[..., 1]).sum(dim=1) / denom
    b = (x[..., 0] * y[..., 1] - x[..., 1] * y[..., 0]).sum(dim=1) / denom
    rot = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=1)  # [N, 2, 2]
    shift = dst_mean[:, 0, :] - torch.einsum("nij,nj->ni", rot, src_mean[:, 0, :])
    return torch.cat([rot, shift[..., None]], dim=2).to(torch.float32)


def estimate_affine(kps5: np.ndarray | torch.Tensor, name: str, size: int) -> np.ndarray | torch.Tensor:
    """Similarity transforms ``float32[N, 2, 3]`` taking each face's ``kps5[N, 5, 2]`` to the template.

    Returns the same kind (numpy or torch, same device) as ``kps5``.
    """
    as_numpy = isinstance(kps5, np.ndarray)
    points = torch.from_numpy(np.asarray(kps5, dtype=np.float32)) if as_numpy else kps5
    if points.ndim != 3 or points.shape[1:] != (5, 2):
        raise ValueError(f"kps5 must be float[N, 5, 2], got shape {tuple(points.shape)}")
    dst = torch.from_numpy(template(name, size)).to(points.device)
    M = fit_similarity(points, dst)
    return M.numpy() if as_numpy else M


# grid_sample padding modes and the OpenCV borders that sample the same pixels (with
# align_corners=True, "reflection" mirrors about the edge pixels' centres: BORDER_REFLECT_101).
_CV2_BORDERS = {"reflection": cv2.BORDER_REFLECT_101, "zeros": cv2.BORDER_CONSTANT, "border": cv2.BORDER_REPLICATE}


def warp_faces(
    images: torch.Tensor,
    M: torch.Tensor,
    size: int,
    *,
    mode: str = "bilinear",
    padding_mode: str = "reflection",
    use_opencv: bool | None = None,
) -> torch.Tensor:
    """Aligned crops ``float32[N, C, size, size]`` from ``images[N, C, H, W]`` and ``M[N, 2, 3]``.

    Runs on the images' device with kornia. Several faces of one frame: pass
    ``frame[None].expand(N, ...)`` (a view, no copy). ``reflection`` padding keeps crops of
    faces at the frame border free of black wedges, which restoration networks would otherwise
    try to "restore". On the CPU (``use_opencv`` None or True) the same bilinear warp is done
    with ``cv2.warpAffine``, 4-6x faster than ``grid_sample`` there.
    """
    M = torch.as_tensor(M, dtype=images.dtype, device=images.device)
    if use_opencv is None:
        use_opencv = images.device.type == "cpu" and mode == "bilinear" and images.shape[1] <= 4
    if use_opencv and len(images):
        return _warp_opencv(images, M, size, _CV2_BORDERS[padding_mode])
    return warp_affine(images, M, dsize=(size, size), mode=mode, padding_mode=padding_mode, align_corners=True)


def _warp_opencv(images: torch.Tensor, M: torch.Tensor, size: int, border: int) -> torch.Tensor:
    """``warp_faces`` on the CPU with OpenCV; an expanded frame is converted to HWC once."""
    shared = images.stride(0) == 0  # frame[None].expand(N, ...): one frame for every face
    frames = images[:1] if shared else images
    hwc = frames.detach().to(torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
    matrices = M.detach().to(torch.float64).cpu().numpy()
    out = np.empty((len(images), size, size, images.shape[1]), np.float32)
    for i, matrix in enumerate(matrices):
        warped = cv2.warpAffine(hwc[0 if shared else i], matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
        out[i] = warped.reshape(size, size, -1)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.dtype)


def invert_affine(M: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The exact inverse ``[N, 2, 3]`` (crop -> source) of affine maps ``M[N, 2, 3]``, for paste-back."""
    if isinstance(M, np.ndarray):
        return invert_affine_transform(torch.from_numpy(M.astype(np.float64))).numpy().astype(np.float32)
    return invert_affine_transform(M)


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply ``M[N, 2, 3]`` to ``points[N, K, 2]``; returns ``float32[N, K, 2]``."""
    points = np.asarray(points, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    return (np.einsum("nij,nkj->nki", M[:, :, :2], points) + M[:, None, :, 2]).astype(np.float32)


def images_to_tensor(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """``uint8[N, H, W, 3]`` (or one ``[H, W, 3]``) -> ``float32[N, 3, H, W]`` in [0, 1] on ``device``."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    return tensor.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """``float32[N, 3, H, W]`` in [0, 1] -> ``uint8[N, H, W, 3]`` on the CPU."""
    return (tensor.clamp(0, 1) * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def align_crops(image: np.ndarray, kps5: np.ndarray, name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crops ``uint8[N, size, size, 3]`` of one ``uint8[H, W, 3]`` image and their ``M[N, 2, 3]``."""
    kps5 = np.asarray(kps5, dtype=np.float32).reshape(-1, 5, 2)
    M = estimate_affine(kps5, name, size)
    if len(kps5) == 0:
        return np.zeros((0, size, size, 3), np.uint8), M
    frame = images_to_tensor(image)
    crops = warp_faces(frame.expand(len(kps5), -1, -1, -1), torch.from_numpy(M), size)
    return tensor_to_images(crops), M


# --- uint8 crops for the identity embedders (OpenCV on the CPU) ---------------------------------

def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``float32[N, 2, 3]`` similarity maps from ``src[N, 5, 2]`` to the template ``dst[5, 2]``."""
    return fit_similarity(torch.from_numpy(np.array(src, np.float32)), torch.from_numpy(dst)).numpy()


def warp_to_template(image: np.ndarray, kps5: np.ndarray, dst: np.ndarray, size: int) -> np.ndarray:
    """``uint8[N, size, size, 3]`` crops of one ``uint8[H, W, 3]`` image whose faces ``kps5[N, 5, 2]``
    are aligned to template ``dst[5, 2]`` (reflecting at the image's border).

    OpenCV on the CPU: embedders run on a handful of faces per frame, where a cv2 warp of the
    crop alone beats moving the whole frame to a tensor.
    """
    kps5 = np.asarray(kps5, np.float32).reshape(-1, 5, 2)
    M = _similarity(kps5, dst)
    return np.stack([cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for m in M]) if len(M) else np.zeros((0, size, size, 3), np.uint8)


def arcface112_to(crops: np.ndarray, dst: np.ndarray, size: int) -> np.ndarray:
    """ArcFace-112 crops ``uint8[N, 112, 112, 3]`` re-aligned to template ``dst[5, 2]``:
    ``uint8[N, size, size, 3]`` (reflecting at the crop's border)."""
    src = np.broadcast_to(template("arcface", 112), (len(crops), 5, 2))
    M = _similarity(src, dst)
    return np.stack([cv2.warpAffine(c, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for c, m in zip(crops, M)]) if len(crops) else np.zeros((0, size, size, 3), np.uint8)

"""Input checks shared by the detectors and the identity embedders: a wrong array is a one-line
``InputError`` at the seam instead of a shape error deep inside a network."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iconface_video.errors import InputError


def is_rgb_image(image: object) -> bool:
    """Whether ``image`` is a ``uint8[H, W, 3]`` array."""
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def check_images(images: Sequence[np.ndarray]) -> None:
    """Every image must be ``uint8[H, W, 3]`` RGB (what the detectors take)."""
    for i, image in enumerate(images):
        if not is_rgb_image(image):
            shape = getattr(image, "shape", None)
            raise InputError(f"image {i}: expected uint8[H, W, 3] RGB, got {getattr(image, 'dtype', type(image))} {shape}")


def check_image_points(image: np.ndarray, kps5: np.ndarray) -> np.ndarray:
    """``kps5`` as ``float32[N, 5, 2]`` (one face's ``[5, 2]`` becomes N = 1) after checking that
    ``image`` is ``uint8[H, W, 3]`` RGB: what ``Embedder.embed`` takes."""
    if not is_rgb_image(image):
        raise InputError(f"expected a uint8[H, W, 3] RGB image, got {getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
    kps5 = np.asarray(kps5, np.float32)
    if kps5.ndim == 2:
        kps5 = kps5[None]
    if kps5.shape[1:] != (5, 2):
        raise InputError(f"kps5 must be float32[N, 5, 2], got {kps5.shape}")
    return kps5


def check_aligned112(crops: np.ndarray) -> np.ndarray:
    """``crops`` as ``uint8[N, 112, 112, 3]`` (one crop becomes N = 1): what
    ``Embedder.embed_aligned112`` takes."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.dtype != np.uint8 or crops.shape[1:] != (112, 112, 3):
        raise InputError(f"expected uint8[N, 112, 112, 3] aligned crops, got {crops.dtype} {crops.shape}")
    return crops

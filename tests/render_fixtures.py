"""Synthetic frames, tracks and stand-in restorers shared by the render tests.

The stand-ins are not mocks of a model's quality: ``identity_restore`` returns its input (the
paste-back must then be invisible), ``tint_restore`` adds a colour cast and detail (what a
badly behaved restorer might do; black-and-white must stay black-and-white, colour must not
shift), ``ellipse_mask`` is a soft face-shaped mask in crop space.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from iconface_video.faces.align import template
from iconface_video.types import FaceObs, Frame, Track


def face_points(center: tuple[float, float], eye_px: float, angle_deg: float = 0.0) -> np.ndarray:
    """``float32[5, 2]`` ArcFace-order landmarks of a face centred at ``center``."""
    base = template("ffhq", 512)
    base = (base - base.mean(axis=0)) * (eye_px / np.linalg.norm(base[1] - base[0]))
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (base @ rot.T + np.asarray(center)).astype(np.float32)


def textured_frames(n: int, height: int = 120, width: int = 160, seed: int = 0, grey: bool = False) -> list[Frame]:
    """Frames of smooth colour gradients plus grain, so resampling errors would show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(n):
        base = np.stack([xx / width * 200 + 20, yy / height * 180 + 30, (xx + yy + 7 * i) % 97 + 60], axis=-1)
        image = base + rng.normal(0, 6, size=base.shape)
        if grey:
            image = image.mean(axis=-1, keepdims=True).repeat(3, axis=-1)
        frames.append(Frame(index=i, pts=i * 512, time_base=Fraction(1, 12800), image=np.clip(image, 0, 255).astype(np.uint8)))
    return frames


def moving_track(track_id: int, n: int, start=(60.0, 55.0), step=(1.0, 0.5), eye_px=24.0, jitter=0.0, seed=0,
                 identity: int | None = 0) -> Track:
    """A track of ``n`` frames drifting by ``step`` px per frame, landmarks jittered by ``jitter`` px."""
    rng = np.random.default_rng(seed)
    obs = []
    for i in range(n):
        center = (start[0] + step[0] * i, start[1] + step[1] * i)
        kps = face_points(center, eye_px) + rng.normal(0, jitter, size=(5, 2)).astype(np.float32)
        box = (float(kps[:, 0].min() - eye_px), float(kps[:, 1].min() - eye_px),
               float(kps[:, 0].max() + eye_px), float(kps[:, 1].max() + eye_px))
        obs.append(FaceObs(frame_index=i, box=box, score=0.99, kps5=kps))
    return Track(id=track_id, shot=0, obs=tuple(obs), identity=identity)


def identity_restore(lq: torch.Tensor, tracks: np.ndarray) -> torch.Tensor:
    return lq.clone()


def tint_restore(lq: torch.Tensor, tracks: np.ndarray) -> torch.Tensor:
    """Adds a reddish cast and a fine checkerboard "detail" (generated texture)."""
    size = lq.shape[-1]
    checker = ((torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2).float() * 0.08 - 0.04
    tint = torch.tensor([0.15, -0.05, -0.1]).view(1, 3, 1, 1)
    return (lq + tint + checker).clamp(0, 1)


def ellipse_mask(lq: torch.Tensor, kps_crop: np.ndarray) -> torch.Tensor:
    """A soft ellipse over the face, zero well inside the crop border: ``float32[N, 1, size, size]``."""
    size = lq.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    masks = []
    for points in np.asarray(kps_crop):
        cx, cy = points[:, 0].mean(), points[:, 1].mean()
        r = ((xx - float(cx)) / (0.32 * size)) ** 2 + ((yy - float(cy)) / (0.40 * size)) ** 2
        masks.append(torch.clamp((1.0 - r) / 0.3, 0, 1))
    return torch.stack(masks)[:, None]


def tiny_restorer(scale: float = 0.1, seed: int = 0):
    """A small random core (``Restorer(model, config)``, crop sides 32 to 128). Fresh cores have
    zero-initialised output layers and return their input exactly, so every weight is nudged by
    seeded noise of ``scale`` to get a core whose output really depends on its crops and references."""
    from iconface_video.core.config import CoreConfig
    from iconface_video.core.model import IConFaceCore
    from iconface_video.core.restorer import Restorer

    torch.manual_seed(seed)
    config = CoreConfig(crop_size=64, ref_size=32, min_side=32, max_side=128, enc_channels=(16, 24, 32), dim=64,
                        heads=2, n_dual=1, n_single=1, id_dim=64)
    model = IConFaceCore(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    # Trained (as far as the render knows) up to 128: faces are restored at their own sides.
    return Restorer(model, config, trained_sides=(64, 128))


class IdentityRestorer:
    """A "restorer" that returns its input: the paste-back must then leave every pixel as it was.

    It takes crops of any side from ``min_side`` to ``max_side`` (the core's contract) and
    records the side of each call in ``sides``."""

    crop_size, template, ref_size, stride = 64, "ffhq", 32, 16

    def __init__(self, min_side: int = 64, max_side: int = 64) -> None:
        self.min_side, self.max_side = min_side, max_side
        self.sides: list[int] = []

    def restore(self, lq, track, refs=None, ref_track=None, ref_weight=None, ref_feat=None, seed=0, steps=4):
        from iconface_video.core.restorer import RestoreOutput

        assert self.min_side <= lq.shape[-1] <= self.max_side and lq.shape[-1] == lq.shape[-2]
        self.sides.append(lq.shape[-1])
        return RestoreOutput(crops=lq.clone(), diagnostics=[{} for _ in range(len(lq))])


def write_clip(path, frames: list[Frame], fps: int = 25, crf: int = 12):
    """Encode ``frames`` to an H.264 file with an AAC tone, so audio must survive the render."""
    import av

    height, width = frames[0].image.shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        for f in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(f.image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        samples = int(48000 * len(frames) / fps)
        tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000)).astype(np.float32)
        for i in range(0, samples, 1024):
            chunk = tone[i : i + 1024]
            af = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
            af.sample_rate = 48000
            af.pts = i
            for packet in audio.encode(af):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path


def make_analysis(video_path, tmp_path, n: int = 16, cut: int = 8, with_reference: bool = True):
    """An analysis of a ``textured_frames`` clip: two shots (cut at ``cut``), "Anna" (identity 0,
    track 1, shot 0), identity 1 (track 2, shot 1), and a face too small to restore (track 3).
    """
    import cv2

    from iconface_video.analysis.schema import Analysis, HarvestedReference
    from iconface_video.analysis.validation import VERSION
    from iconface_video.imageio import imwrite
    from iconface_video.types import Identity, Reference, Shot

    frames = textured_frames(n)
    anna = moving_track(1, cut, start=(70, 60), eye_px=26, jitter=0.6, seed=1, identity=0)
    other = moving_track(2, n - cut, start=(90, 55), step=(-1.0, 0.3), eye_px=30, jitter=0.6, seed=2, identity=1)
    other = Track(2, 1, tuple(FaceObs(o.frame_index + cut, o.box, o.score, o.kps5) for o in other.obs), 1)
    small = moving_track(3, cut, start=(20, 20), eye_px=3, identity=None)
    references = ()
    if with_reference:
        crop = frames[3].image[20:110, 25:125]
        crop_path = tmp_path / "anna-ref.png"
        imwrite(crop_path, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        kps = anna.obs[3].kps5 - np.array([25, 20], np.float32)
        ref = Reference(identity=0, track=1, frame_index=3, box=anna.obs[3].box,
                        kps5=tuple(map(tuple, anna.obs[3].kps5.tolist())), reliability=0.8)
        references = (HarvestedReference(ref, crop_path, kps),)
    height, width = frames[0].image.shape[:2]
    return Analysis(
        version=VERSION,
        video={"path": str(video_path), "width": width, "height": height, "frame_count": n, "fps": 25.0, "rotation": 0},
        shots=(Shot(0, 0, cut - 1, 0.0, (cut - 1) / 25, "start"), Shot(1, cut, n - 1, cut / 25, (n - 1) / 25, "cut")),
        tracks=(anna, other, small),
        identities=(Identity(0, (1,), None, "Anna"), Identity(1, (2,), None, None)),
        references=references,
        settings={},
    )

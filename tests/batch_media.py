"""Small clips for the batch tests, and helpers to compare two videos exactly.

``make_clip``: shots of smooth random texture drifting a little every frame (so a shot detector
sees motion inside a shot and a jump at each cut) and, optionally, an AAC audio track; no faces.
``face_clip``: frames of the bundled ``assets/sample.mp4`` (one face; optionally a hard cut to
the same frames mirrored and tinted, so a second shot with the face in it), for tests that run
the real restoration.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def make_clip(path: Path, frames: int = 30, size: tuple[int, int] = (64, 48), shots: tuple[int, ...] = (),
              fps: int = 24, audio: bool = True, seed: int = 0) -> Path:
    """Write an H.264 (+ AAC) clip of ``frames`` frames with hard cuts at ``shots``."""
    rng = np.random.default_rng(seed)
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=48000)
            sound.layout = "mono"
        texture = _texture(rng, width, height)
        audio_pts = 0
        for i in range(frames):
            if i in shots:
                texture = _texture(rng, width, height)
            image = np.roll(texture, shift=i % 7, axis=1)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            audio_pts = _tone_until(out, sound, audio_pts, (i + 1) * 48000 // fps)
        out.mux(video.encode(None))
        if sound is not None:
            out.mux(sound.encode(None))
    return path


SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample.mp4"


def face_clip(path: Path, frames: int = 12, first: int = 40, cut: int | None = None, audio: bool = True,
              size: int = 160) -> Path:
    """An H.264 (+ AAC) clip of ``frames`` frames of ``assets/sample.mp4`` from frame ``first``,
    scaled to ``size`` px square (the face stays large enough to restore, the test stays fast).

    With ``cut``: from that frame on the picture is mirrored and tinted, a hard cut a shot
    detector finds, with the face still in the second shot.
    """
    import cv2

    with av.open(str(SAMPLE)) as source:
        images = [f.to_ndarray(format="rgb24") for i, f in zip(range(first + frames), source.decode(video=0))][first:]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        sound = out.add_stream("aac", rate=48000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        audio_pts = 0
        for i, image in enumerate(images):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            if cut is not None and i >= cut:
                image = np.ascontiguousarray(image[:, ::-1] // 2 + np.uint8([100, 40, 0]))
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            audio_pts = _tone_until(out, sound, audio_pts, (i + 1) * 48000 // 25)
        out.mux(video.encode(None))
        if sound is not None:
            out.mux(sound.encode(None))
    return path


def _tone_until(out, sound, pts: int, until: int) -> int:
    """Mux 1024-sample chunks of a tone into ``sound`` up to sample ``until``; returns the next pts."""
    while sound is not None and pts < until:
        tone = (0.1 * np.sin((pts + np.arange(1024)) * 0.05)).astype(np.float32)[None]
        chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, pts
        pts += 1024
        out.mux(sound.encode(chunk))
    return pts


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """uint8[H, W, 3]: low-frequency colour noise (a distinct 'scene')."""
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    big = np.kron(small, np.ones((8, 8, 1), np.float32))[:height, :width]
    return big.astype(np.uint8)


def make_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 but not really a video" * 40)
    return path


def video_frames(path: Path) -> tuple[list[int], list[np.ndarray]]:
    """Every decoded video frame's pts and ``uint8[H, W, 3]`` pixels, in presentation order."""
    pts, images = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            pts.append(frame.pts)
            images.append(frame.to_ndarray(format="rgb24"))
    return pts, images


def audio_packets(path: Path) -> list[tuple[int | None, bytes]]:
    """(pts, payload) of every audio packet, in file order."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        return [(p.pts, bytes(p)) for p in container.demux(audio=0) if p.size]

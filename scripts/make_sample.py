"""Build the bundled sample clip ``assets/sample.mp4`` from scikit-image's ``astronaut``.

The picture is NASA's portrait of astronaut Eileen Collins (public domain), shipped inside
scikit-image as ``skimage.data.astronaut()``. The clip is 3.6 s at 25 fps, 320x320, with a slow
pan and zoom toward the face, degraded the way old footage is (blur, downscale, sensor noise,
JPEG blocking), and a generated AAC audio track (a rising chirp). Everything is seeded, so the
same command makes the same frames.

    python scripts/make_sample.py                 # -> assets/sample.mp4
    python scripts/make_sample.py -o short-sample.mp4 --seconds 2
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage.data import astronaut

SIZE = 320
FPS = 25
AUDIO_RATE = 48000
BT709 = 1  # primaries, transfer and matrix tags: the sample is sRGB-like HD video
LIMITED = 1


def camera(t: float) -> tuple[float, float, float]:
    """(centre x, centre y, zoom) of the virtual camera at ``t`` in [0, 1] (smooth ease-in-out)."""
    s = 0.5 - 0.5 * np.cos(np.pi * t)
    cx = 250 + (215 - 250) * s  # drifts toward the face
    cy = 230 + (150 - 230) * s
    zoom = 1.0 + 0.8 * s  # 512 px field of view -> 285 px
    return cx, cy, zoom


def render(source: np.ndarray, t: float) -> np.ndarray:
    """``uint8[SIZE, SIZE, 3]``: the camera's view of ``source`` (uint8[512, 512, 3]) at ``t``."""
    cx, cy, zoom = camera(t)
    scale = zoom * SIZE / 512
    matrix = np.array([[scale, 0, SIZE / 2 - scale * cx], [0, scale, SIZE / 2 - scale * cy]], dtype=np.float64)
    return cv2.warpAffine(source, matrix, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, lose resolution, add noise and JPEG blocking: an old, low-quality copy."""
    out = cv2.GaussianBlur(image, (0, 0), sigmaX=1.2)
    small = cv2.resize(out, (SIZE // 3, SIZE // 3), interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    out = np.clip(out.astype(np.float32) + rng.normal(0, 6, out.shape), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def chirp(seconds: float) -> np.ndarray:
    """``float32[2, N]``: a soft stereo chirp from 220 to 660 Hz with fades at both ends."""
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    phase = 2 * np.pi * (220 * t + (660 - 220) * t**2 / (2 * seconds))
    envelope = np.minimum(1.0, np.minimum(t, seconds - t) / 0.2)
    mono = (0.25 * envelope * np.sin(phase)).astype(np.float32)
    return np.stack([mono, mono])


def make_sample(output: Path, seconds: float = 3.6, seed: int = 2024) -> Path:
    rng = np.random.default_rng(seed)
    source = astronaut()
    n_frames = int(round(seconds * FPS))
    container = av.open(str(output), mode="w")
    container.metadata.update({"title": "iconface-video sample (NASA astronaut portrait, public domain)",
                               "comment": f"made by scripts/make_sample.py --seconds {seconds} --seed {seed}"})
    # One thread and bit-exact flags keep the encoded bytes the same on every machine.
    video = container.add_stream("libx264", rate=FPS, options={"crf": "26", "preset": "slow", "threads": "1"})
    video.width = video.height = SIZE
    video.pix_fmt = "yuv420p"
    video.codec_context.color_primaries = video.codec_context.color_trc = video.codec_context.colorspace = BT709
    video.codec_context.color_range = LIMITED
    audio = container.add_stream("aac", rate=AUDIO_RATE, options={"b": "96k"})
    audio.layout = "stereo"

    for index in range(n_frames):
        image = degrade(render(source, index / max(1, n_frames - 1)), rng)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=BT709, dst_color_range=LIMITED)
        frame.pts, frame.time_base = index, Fraction(1, FPS)
        frame.color_primaries = frame.color_trc = frame.colorspace = BT709
        frame.color_range = LIMITED
        container.mux(video.encode(frame))
    container.mux(video.encode(None))

    samples = chirp(n_frames / FPS)
    for start in range(0, samples.shape[1], 1024):
        piece = np.ascontiguousarray(samples[:, start:start + 1024])
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
        container.mux(audio.encode(frame))
    container.mux(audio.encode(None))
    container.close()
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "sample.mp4")
    parser.add_argument("--seconds", type=float, default=3.6)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    path = make_sample(args.output, args.seconds, args.seed)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()

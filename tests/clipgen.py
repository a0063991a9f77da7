"""Tiny test clips made on the spot with PyAV: VFR, rotated, 10-bit, odd sizes, AV1, with AAC
audio and a subtitle stream, plus the broken files a user might feed the tool.

Every clip is a few dozen small frames and takes well under a second to make. Frames are a
seeded moving gradient with noise, so encoders have real content to work on and tests can
compare decoded pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from iconface_video.io.probe import probe
from iconface_video.io.reader import frame_timestamps


@dataclass(frozen=True)
class ClipSpec:
    """What to put in a clip. ``vfr`` makes frame durations irregular (1..3 frame periods)."""

    frames: int = 24
    width: int = 64
    height: int = 48
    fps: int = 25
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    vfr: bool = False
    rotation: int = 0
    audio: bool = False
    subtitles: bool = False
    data: bool = False  # a KLV data stream (MPEG-TS only: other containers drop such streams)
    chapters: bool = False  # two chapters, splitting the clip in half
    colour: tuple[int, int, int, int] | None = None  # primaries, trc, colorspace, range
    sar: Fraction | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    seed: int = 0


def frame_image(index: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """``uint8[H, W, 3]``: a gradient that moves with ``index`` plus seeded noise."""
    rng = np.random.default_rng(seed * 100_003 + index)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 4 + index * 6) % 256, (y * 5 + index * 3) % 256, ((x + y) * 2) % 256], axis=-1)
    noise = rng.integers(-12, 13, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def frame_pts(spec: ClipSpec) -> tuple[list[int], Fraction]:
    """Presentation timestamps and time base; VFR clips step by 1, 2 or 3 frame periods."""
    time_base = Fraction(1, spec.fps * 100) if spec.vfr else Fraction(1, spec.fps)
    if not spec.vfr:
        return list(range(spec.frames)), time_base
    rng = np.random.default_rng(spec.seed + 7)
    steps = rng.choice([100, 100, 200, 300, 137], size=spec.frames)
    return [int(v) for v in np.concatenate([[0], np.cumsum(steps[:-1])])], time_base


def make_clip(path: str | Path, spec: ClipSpec = ClipSpec()) -> Path:
    """Write ``spec`` to ``path`` (container from the extension) and return the path."""
    path = Path(path)
    pts_list, time_base = frame_pts(spec)
    out = av.open(str(path), mode="w")
    out.metadata.update(dict(spec.metadata))
    options = {"preset": "ultrafast"} if spec.codec == "libx264" else {}
    if spec.codec == "libx265":
        options = {"preset": "ultrafast", "x265-params": "log-level=error"}
    if spec.codec == "libsvtav1":
        options = {"preset": "12"}
    video = out.add_stream(spec.codec, rate=spec.fps, options=options)
    video.width, video.height, video.pix_fmt = spec.width, spec.height, spec.pix_fmt
    video.time_base = time_base
    video.codec_context.time_base = time_base
    if spec.colour is not None:
        ctx = video.codec_context
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = spec.colour
    if spec.sar is not None:
        video.codec_context.sample_aspect_ratio = spec.sar
    if spec.rotation:
        video.set_display_rotation(spec.rotation)
    if spec.chapters:
        half_ms = int(500 * spec.frames / spec.fps)
        out.set_chapters([
            {"id": 1, "start": 0, "end": half_ms, "time_base": Fraction(1, 1000), "metadata": {"title": "first half"}},
            {"id": 2, "start": half_ms, "end": 2 * half_ms, "time_base": Fraction(1, 1000), "metadata": {"title": "second half"}},
        ])
    audio = out.add_stream("aac", rate=48000) if spec.audio else None
    if audio is not None:
        audio.layout = "stereo"
    subs = _add_subtitle_stream(out, path.suffix.lower()) if spec.subtitles else None
    data = out.add_data_stream("klv") if spec.data else None
    # Time bases must be set before the first packet writes the header.
    if subs is not None:
        subs.time_base = Fraction(1, 1000)
    if data is not None:
        data.time_base = Fraction(1, 90000)

    for pts, index in zip(pts_list, range(spec.frames)):
        frame = av.VideoFrame.from_ndarray(frame_image(index, spec.width, spec.height, spec.seed), format="rgb24")
        frame = frame.reformat(format=spec.pix_fmt)
        frame.pts, frame.time_base = pts, time_base
        if spec.colour is not None:
            frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = spec.colour
        out.mux(video.encode(frame))
    out.mux(video.encode(None))
    duration_s = float((pts_list[-1] + (time_base.denominator // spec.fps if spec.vfr else 1)) * time_base) if pts_list else 1.0
    if audio is not None:
        _write_tone(out, audio, duration_s)
    if subs is not None:
        _write_subtitles(out, subs, duration_s, path.suffix.lower())
    if data is not None:
        _write_data(out, data, duration_s)
    out.close()
    return path


def _add_subtitle_stream(out, suffix: str):
    # A mux-only stream: the cues are written as ready-made packets, no subtitle encoder needed.
    return out.add_mux_stream("mov_text" if suffix in (".mp4", ".mov", ".m4v") else "subrip")


def _write_data(out, stream, duration_s: float) -> None:
    """KLV-style data packets, one every 0.2 s, with distinct payloads."""
    for i in range(max(1, int(duration_s / 0.2))):
        packet = av.Packet(bytes([6, 14, 43, 52, i % 256, 1, 2, 3]))
        packet.pts = packet.dts = i * 18000
        packet.time_base = Fraction(1, 90000)
        packet.stream = stream
        out.mux(packet)


def _write_subtitles(out, stream, duration_s: float, suffix: str) -> None:
    """Two cues over the clip, muxed as raw packets (no subtitle encoder needed)."""
    half_ms = int(duration_s * 500)
    for i, text in enumerate(("first cue", "second cue")):
        body = text.encode()
        data = len(body).to_bytes(2, "big") + body if suffix in (".mp4", ".mov", ".m4v") else body
        packet = av.Packet(data)
        packet.pts = packet.dts = i * half_ms
        packet.duration = half_ms
        packet.time_base = Fraction(1, 1000)
        packet.stream = stream
        out.mux(packet)


def _write_tone(out, stream, duration_s: float, hz: float = 440.0) -> None:
    """A stereo sine tone of ``duration_s`` seconds, encoded to AAC."""
    rate, chunk = 48000, 1024
    total = int(duration_s * rate)
    t = np.arange(total) / rate
    samples = (0.2 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    for start in range(0, total, chunk):
        piece = samples[start:start + chunk]
        frame = av.AudioFrame.from_ndarray(np.stack([piece, piece]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


# --- files a user might feed the tool by mistake -------------------------------------------

def make_text_as_mp4(path: str | Path) -> Path:
    path = Path(path)
    path.write_text("this is a shopping list, not a video\n" * 20)
    return path


def make_truncated(path: str | Path, source: str | Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of ``source``'s bytes (a half-finished download)."""
    path = Path(path)
    data = Path(source).read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_zero_frames(path: str | Path) -> Path:
    """A container with a video stream that holds no frames."""
    path = Path(path)
    out = av.open(str(path), mode="w")
    video = out.add_stream("libx264", rate=25)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    out.start_encoding()  # writes the header although no frame ever comes
    out.close()
    return path


def make_audio_only(path: str | Path, duration_s: float = 0.5) -> Path:
    path = Path(path)
    out = av.open(str(path), mode="w")
    audio = out.add_stream("aac", rate=48000)
    audio.layout = "stereo"
    _write_tone(out, audio, duration_s)
    out.close()
    return path


# --- reading clips back for comparisons -----------------------------------------------------

def frame_times(path: str | Path) -> list[Fraction]:
    """Every video frame's presentation time in seconds, exactly, in presentation order."""
    time_base = probe(path).video.time_base
    return [pts * time_base for pts in frame_timestamps(path)]


# An empty MP4 text sample ("show nothing"): MP4 muxers insert these themselves at gaps and at
# the end of a track, so they are bookkeeping, not content, and are left out of comparisons.
EMPTY_MOV_TEXT = b"\x00\x00"


def stream_packets(path: str | Path, kind: str) -> list[tuple[bytes, Fraction | None, Fraction]]:
    """(payload, pts and duration in seconds) for every real packet of every ``kind`` stream,
    in file order (empty MP4 text samples left out)."""
    container = av.open(str(path))
    try:
        streams = [s for s in container.streams if s.type == kind]
        if not streams:
            return []
        return [
            (bytes(p), None if p.pts is None else p.pts * p.time_base, (p.duration or 0) * p.time_base)
            for p in container.demux(streams)
            if p.size and not (kind == "subtitle" and bytes(p) == EMPTY_MOV_TEXT)
        ]
    finally:
        container.close()


# --- shot transitions ----------------------------------------------------------------------------

TRANSITION_KINDS = ("cut", "dissolve", "wipe", "fade_out_in", "fade_to_black", "fade_from_black")


def transition(a: list[np.ndarray], b: list[np.ndarray], kind: str, length: int = 12) -> tuple[list[np.ndarray], int, int]:
    """Frames ``a`` then ``b`` (same-size uint8[H, W, 3] lists) joined by ``kind``; returns the
    frames and the first and last frame of the transition (for a cut both are ``b``'s first).

    ``dissolve``: ``length`` frames cross-fading the end of ``a`` into the start of ``b``;
    ``wipe``: a vertical edge sweeping left to right over ``length`` frames; ``fade_out_in``:
    ``a`` fades to black and ``b`` fades in (``length`` frames each, 3 black between);
    ``fade_to_black``: ``a`` fades out, ``b`` starts after 3 black frames; ``fade_from_black``:
    ``a`` ends at 3 black frames, ``b`` fades in.
    """
    black = [np.zeros_like(a[0])] * 3
    ramp = [(i + 1) / (length + 1) for i in range(length)]

    def fade(frames: list[np.ndarray], levels: list[float]) -> list[np.ndarray]:
        return [(f.astype(np.float32) * v).round().astype(np.uint8) for f, v in zip(frames, levels)]

    if kind == "cut":
        return a + b, len(a), len(a)
    if kind == "dissolve":
        head, tail = a[:-length], b[length:]
        mixed = [(x.astype(np.float32) * (1 - w) + y.astype(np.float32) * w).round().astype(np.uint8)
                 for x, y, w in zip(a[-length:], b[:length], ramp)]
        return head + mixed + tail, len(head), len(head) + length - 1
    if kind == "wipe":
        width = a[0].shape[1]
        head, tail = a[:-length], b[length:]
        mixed = []
        for x, y, w in zip(a[-length:], b[:length], ramp):
            frame = x.copy()
            edge = int(round(w * width))
            frame[:, :edge] = y[:, :edge]
            mixed.append(frame)
        return head + mixed + tail, len(head), len(head) + length - 1
    out_frames = fade(a[-length:], ramp[::-1]) if kind in ("fade_out_in", "fade_to_black") else []
    in_frames = fade(b[:length], ramp) if kind in ("fade_out_in", "fade_from_black") else []
    head = a[:-length] if out_frames else a
    tail = b[length:] if in_frames else b
    first = len(head)
    frames = head + out_frames + black + in_frames + tail
    return frames, first, first + len(out_frames) + len(black) + len(in_frames)


def flashes(frames: list[np.ndarray], at: int, kind: str) -> list[np.ndarray]:
    """``frames`` with a ``"white"`` frame (a single-frame flash) or a 2-frame ``"camera"`` flash
    (the picture brightened and washed out, its structure kept) at frame ``at``."""
    out = list(frames)
    if kind == "white":
        out[at] = np.full_like(frames[at], 255)
    else:
        for i in (at, at + 1):
            out[i] = np.clip(frames[i].astype(np.float32) * 1.6 + 90, 0, 255).astype(np.uint8)
    return out


def write_frames(path: str | Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """H.264 (yuv420p, near-lossless) clip of ``frames`` (uint8[H, W, 3] RGB, even sizes)."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "12"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode(None))
    return path

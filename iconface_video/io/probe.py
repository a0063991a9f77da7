"""What is inside a video file: container, streams, timing, rotation and colour tags.

``probe(path)`` opens the file with PyAV (FFmpeg), reads the headers, demuxes the video
packets once (no decoding, so it is fast even for long files) to count frames and test for a
variable frame rate, and decodes the first frame to learn the display rotation and to prove
the stream can be decoded at all. Every way a file can be unusable becomes one
``InputError`` line.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from iconface_video.errors import InputError

# FFmpeg's own names for the colour tags (libavutil/pixdesc.c), so `probe` output reads like
# ffprobe's. Integers are the AVColor* enum values the codec context reports.
PRIMARIES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
             8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
TRANSFERS = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
             8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
             13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084",
             17: "smpte428", 18: "arib-std-b67"}
SPACES = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m",
          7: "smpte240m", 8: "ycgco", 9: "bt2020nc", 10: "bt2020c"}
RANGES = {0: "unknown", 1: "tv", 2: "pc"}

# Packet timestamps are re-sorted into presentation order through a heap this deep; B-frame
# reordering in real encoders stays far below it (H.264 allows at most 16).
_REORDER_WINDOW = 32


@dataclass(frozen=True)
class StreamInfo:
    """One stream of the container. Video-only and audio-only fields are None elsewhere.

    Colour tags are FFmpeg's integer enums (``color_primaries`` 1 = BT.709 ...); the
    ``*_name`` properties give FFmpeg's names. ``rotation`` is the display rotation in degrees
    counter-clockwise (as ``VideoFrame.rotation``); frames are decoded in stored orientation.
    ``frame_count`` is counted from the packets; ``header_frames`` is what the header claims.
    """

    index: int
    type: str  # "video", "audio", "subtitle", "data" or "attachment"
    codec: str
    time_base: Fraction | None
    start_time: float | None
    duration: float | None
    header_frames: int
    language: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    attached_pic: bool = False
    width: int | None = None
    height: int | None = None
    sar: Fraction | None = None
    rotation: int = 0
    pix_fmt: str | None = None
    bit_depth: int | None = None
    color_primaries: int | None = None
    color_trc: int | None = None
    colorspace: int | None = None
    color_range: int | None = None
    avg_fps: Fraction | None = None
    real_fps: Fraction | None = None
    vfr: bool | None = None
    frame_count: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    channel_layout: str | None = None

    def colour_names(self) -> dict[str, str | None]:
        """FFmpeg's names for the four colour tags (None for non-video streams)."""
        if self.type != "video":
            return {"primaries": None, "trc": None, "space": None, "range": None}
        return {
            "primaries": PRIMARIES.get(self.color_primaries or 2, str(self.color_primaries)),
            "trc": TRANSFERS.get(self.color_trc or 2, str(self.color_trc)),
            "space": SPACES.get(self.colorspace if self.colorspace is not None else 2, str(self.colorspace)),
            "range": RANGES.get(self.color_range or 0, str(self.color_range)),
        }


@dataclass(frozen=True)
class VideoInfo:
    """The probed file; ``video`` is the main video stream (the one the pipeline restores)."""

    path: Path
    format: str
    format_long: str
    duration: float | None
    size_bytes: int
    bit_rate: int | None
    metadata: dict[str, str]
    streams: tuple[StreamInfo, ...]
    video_index: int

    @property
    def video(self) -> StreamInfo:
        return self.streams[self.video_index]

    @property
    def audio(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.type == "audio")

    @property
    def subtitles(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.type == "subtitle")

    @property
    def data(self) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.type in ("data", "attachment"))

    @property
    def frame_count(self) -> int:
        return int(self.video.frame_count or 0)

    def to_json(self) -> dict:
        """A JSON-ready dict: fractions as "num/den" strings, colour tags with their names."""
        out = asdict(self)
        out["path"] = str(self.path)
        for stream_out, stream in zip(out["streams"], self.streams):
            for key, value in stream_out.items():
                if isinstance(value, Fraction):
                    stream_out[key] = f"{value.numerator}/{value.denominator}"
            if stream.type == "video":
                stream_out["colour"] = stream.colour_names()
        return out


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open ``path`` for reading, turning every failure into one ``InputError`` line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a video file")
    if not path.is_file():
        # A device (/dev/zero) or a pipe never ends and cannot be sought: reading one would hang.
        raise InputError(f"{path}: is not a regular file (a device, pipe or socket); give a video file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable (check its permissions)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; give a video file (an interrupted copy or download? fetch it again)")
    try:
        return av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as error:
        raise InputError(f"{path}: not a readable video: damaged, truncated or not a video at all ({_reason(error)}); check it plays, or give another file") from None


# FFmpeg's demuxers for single pictures; such a "video" has one frame and no timing.
_STILL_IMAGE_FORMATS = ("image2", "_pipe", "gif", "apng", "webp")


def is_still_image(info: VideoInfo) -> bool:
    """Whether ``info`` describes a still picture (PNG, JPEG, ...) rather than a video."""
    name = info.format or ""
    return info.frame_count <= 1 and any(part in name for part in _STILL_IMAGE_FORMATS)


def check_video(info: VideoInfo) -> None:
    """Refuse a still picture where a video is needed (it would silently become a 1-frame video)."""
    if is_still_image(info):
        raise InputError(f"{info.path}: is a still image ({info.format}), not a video; this tool restores videos "
                         "(`iconface-video faces` shows the faces in a picture)")


def main_video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The stream to restore: the first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams})
    if not kinds:
        raise InputError(f"{path}: holds no streams at all (an empty or zero-frame video); nothing to restore, give another file")
    raise InputError(f"{path}: has no video stream (it holds only {', '.join(kinds)}); nothing to restore, give a video file")


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe ``path``; raise ``InputError`` (one line) if it is not a usable video."""
    path = Path(path)
    container = open_input(path)
    try:
        video = main_video_stream(container, path)
        count, min_delta, max_delta = _count_video_packets(container, video, path)
        if count == 0:
            raise InputError(f"{path}: the video stream has no frames; nothing to restore, give another file")
        rotation = _first_frame_rotation(path, video.index)
        streams = tuple(
            _stream_info(s, rotation, count, min_delta, max_delta) if s.index == video.index
            else _stream_info(s)
            for s in container.streams
        )
        fmt = container.format
        return VideoInfo(
            path=path,
            format=fmt.name,
            format_long=fmt.long_name,
            duration=None if container.duration is None else container.duration / av.time_base,
            size_bytes=path.stat().st_size,
            bit_rate=container.bit_rate or None,
            metadata=dict(container.metadata),
            streams=streams,
            video_index=video.index,
        )
    finally:
        container.close()


def sorted_pts(packet_pts: Iterator[int], window: int = _REORDER_WINDOW) -> Iterator[int]:
    """Decode-order timestamps -> presentation order, holding at most ``window`` in memory."""
    heap: list[int] = []
    for pts in packet_pts:
        if len(heap) >= window:
            yield heapq.heappushpop(heap, pts)
        else:
            heapq.heappush(heap, pts)
    while heap:
        yield heapq.heappop(heap)


def is_variable_rate(min_delta: int | None, max_delta: int | None) -> bool:
    """True when frame durations differ by more than rounding (a tick, or 2 %)."""
    if min_delta is None or max_delta is None:
        return False
    return max_delta - min_delta > max(2, 0.02 * max_delta)


def _count_video_packets(container: av.container.InputContainer, video: av.video.stream.VideoStream, path: Path) -> tuple[int, int | None, int | None]:
    """(frames, shortest and longest frame duration in time-base ticks) from a demux pass.

    Demuxes every stream (cheap: no decoding) so that a file whose packets stop well before
    the duration its header declares, or before the frame count its header declares, is
    reported as truncated instead of silently giving a shorter video.
    """
    count = 0
    end_s = 0.0

    def pts_stream() -> Iterator[int]:
        nonlocal count, end_s
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None or packet.time_base is None:
                continue  # flush packets at the end carry no data
            end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * packet.time_base))
            if packet.stream.index == video.index:
                count += 1
                yield packet.pts

    previous = None
    min_delta = max_delta = None
    try:
        for pts in sorted_pts(pts_stream()):
            if previous is not None and pts > previous:
                delta = pts - previous
                min_delta = delta if min_delta is None else min(min_delta, delta)
                max_delta = delta if max_delta is None else max(max_delta, delta)
            previous = pts
    except av.error.FFmpegError as error:
        raise InputError(f"{path}: the file is damaged or truncated ({_reason(error)}); repair it or fetch it again") from None
    declared = int(video.frames or 0)
    if count and declared and count < declared:
        raise InputError(f"{path}: truncated or damaged: {count} of the {declared} frames its header lists are present; "
                         "repair it or fetch it again")
    if count and container.duration:
        declared_s = container.duration / av.time_base
        start_s = (container.start_time or 0) / av.time_base
        if end_s - start_s < declared_s - max(0.5, 0.1 * declared_s):
            raise InputError(f"{path}: truncated or damaged: its data stops at {end_s - start_s:.2f} s of {declared_s:.2f} s; "
                             "repair it or fetch it again")
    return count, min_delta, max_delta


def _first_frame_rotation(path: Path, stream_index: int) -> int:
    """Display rotation from the first decoded frame; proves the stream decodes at all."""
    container = open_input(path)
    try:
        stream = container.streams[stream_index]
        for frame in container.decode(stream):
            return int(round(frame.rotation or 0))
    except av.error.FFmpegError as error:
        raise InputError(f"{path}: the video cannot be decoded ({_reason(error)}); repair it or give another file") from None
    finally:
        container.close()
    raise InputError(f"{path}: no video frame could be decoded (zero frames or a damaged file); repair it or give another file")


def _stream_info(stream: av.video.stream.VideoStream, rotation: int = 0, count: int | None = None,
                 min_delta: int | None = None, max_delta: int | None = None) -> StreamInfo:
    codec = stream.codec_context
    common = dict(
        index=stream.index,
        type=stream.type,
        codec=codec.name if codec is not None else (stream.codec.name if getattr(stream, "codec", None) else "unknown"),
        time_base=stream.time_base,
        start_time=None if stream.start_time is None or stream.time_base is None
        else float(stream.start_time * stream.time_base),
        duration=None if stream.duration is None or stream.time_base is None
        else float(stream.duration * stream.time_base),
        header_frames=int(stream.frames or 0),
        language=stream.language,
        metadata=dict(stream.metadata),
        attached_pic=bool(stream.disposition & av.stream.Disposition.attached_pic),
    )
    if stream.type == "video":
        fmt = codec.format
        return StreamInfo(
            **common,
            width=codec.width,
            height=codec.height,
            sar=stream.sample_aspect_ratio or codec.sample_aspect_ratio,
            rotation=rotation,
            pix_fmt=codec.pix_fmt,
            bit_depth=max(c.bits for c in fmt.components) if fmt is not None else None,
            color_primaries=int(codec.color_primaries),
            color_trc=int(codec.color_trc),
            colorspace=int(codec.colorspace),
            color_range=int(codec.color_range),
            avg_fps=stream.average_rate,
            real_fps=stream.base_rate,
            vfr=is_variable_rate(min_delta, max_delta) if count is not None else None,
            frame_count=count,
        )
    if stream.type == "audio":
        return StreamInfo(
            **common,
            sample_rate=codec.sample_rate,
            channels=codec.channels,
            channel_layout=codec.layout.name if codec.layout is not None else None,
        )
    return StreamInfo(**common)


def _reason(error: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends."""
    text = getattr(error, "strerror", None) or str(error)
    return str(text).strip().rstrip(".")

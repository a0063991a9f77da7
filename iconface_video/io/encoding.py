"""How to encode the restored video: the user's settings, resolved against one source.

``EncodeSettings`` is what the user asks for (``None``: choose from the source); ``resolve_encoding``
turns it into an ``Encoding`` with nothing left open (codec, pixel format, quality, the source's
size, time base and colour tags), after refusing, before any work, an output container that
cannot hold the codec (``check_container``).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from iconface_video.errors import OutputError, UserError
from iconface_video.io.probe import VideoInfo

CODECS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1")
# Quality defaults per codec: visually transparent for restored footage, not archival-lossless.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 30, "libsvtav1": 30}
DEFAULT_PRESET = {"libx264": "medium", "libx265": "medium", "libvpx-vp9": None, "libsvtav1": "8"}
TEN_BIT = {"libx264", "libx265", "libsvtav1"}
_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
PRESETS = {"libx264": _X26X_PRESETS, "libx265": _X26X_PRESETS, "libsvtav1": tuple(str(i) for i in range(14)), "libvpx-vp9": ()}
# Containers that cannot hold H.264/HEVC get a codec they can hold when none is asked for.
_WEB_CONTAINERS = {".webm": "libvpx-vp9"}


@dataclass(frozen=True)
class EncodeSettings:
    """How to encode the restored video. ``None`` means "choose from the source and codec".

    ``codec``: libx264 (default), libx265, libvpx-vp9 or libsvtav1. ``crf``: constant quality
    (lower is better). ``preset``: the encoder's speed preset. ``pix_fmt``: e.g. yuv420p or
    yuv420p10le; by default 10-bit sources stay 10-bit where the codec allows, and odd frame
    sizes use 4:4:4 (4:2:0 needs even sizes) so the size is kept exactly.
    ``segment_frames``: frames per independently encoded (resumable) segment.
    """

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    segment_frames: int = 500

    def __post_init__(self) -> None:
        if self.codec is not None and self.codec not in CODECS:
            raise UserError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise UserError(f"--crf {self.crf} is out of range (0..51 for x264/x265, 0..63 for VP9/AV1)")
        if self.segment_frames < 1:
            raise UserError("segment_frames must be at least 1")


@dataclass(frozen=True)
class Encoding:
    """Settings resolved against one source: everything an encoder needs, nothing left open."""

    codec: str
    pix_fmt: str
    crf: int
    preset: str | None
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None
    sar: Fraction | None
    color_primaries: int
    color_trc: int
    colorspace: int
    color_range: int

    def options(self) -> dict[str, str]:
        """Encoder options (libav AVOptions) for this codec."""
        opts = {"crf": str(self.crf)}
        if self.codec == "libvpx-vp9":
            opts.update({"b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"})
        elif self.preset is not None:
            opts["preset"] = self.preset
        if self.codec == "libx265":
            opts["x265-params"] = "log-level=error"
        if self.codec == "libx264":
            # PyAV opens codecs with slice threading only, which makes FFmpeg switch x264 to
            # sliced threads: one slice per thread in every frame. x264's own default (and the
            # ffmpeg tool's) is frame threading: 0.5-1 % smaller files here, and no slower.
            opts["thread_type"] = "frame"
            if not x264_mbtree_is_deterministic(self.width, self.pix_fmt):
                opts["x264-params"] = "mbtree=0"
        return opts


def x264_mbtree_is_deterministic(width: int, pix_fmt: str = "yuv420p") -> bool:
    """Whether x264's macroblock-tree rate control repeats itself exactly at this frame width
    and pixel format.

    Resuming relies on an encoder giving the same bytes for the same frames. x264 does so by
    design (for one build, CPU feature set and thread count; ``--non-deterministic`` is off),
    but its AVX-512 kernel for macroblock-tree propagation (``mbtree_propagate_list_internal``,
    x264 core 165 in PyAV 18.1) steps along each row of macroblocks 8 at a time without masking
    the last, partial step: where a row is not a multiple of 8 macroblocks (128 pixels), it
    also propagates entries past the row's end, read from heap memory x264 never wrote. The
    picture then depends on what the process freed before: a 160x120 clip gave different
    bytes in one repeat in three within a process, and differs every time between processes
    whose heap starts with different bytes. Threads, look-ahead threads, timestamps and machine
    load play no part (one thread fails the same way); with x264's AVX-512 code switched off,
    or with ``mbtree=0``, or in x264's separate 10-bit build (whatever the heap held), every
    test here repeated exactly. So at such widths 8-bit encodes get
    ``mbtree=0``, which makes files 15-30 % bigger at the same CRF (704x576 and 720x1280
    clips, CRF 18; about 15 % more bits for the same PSNR on the first). Widths that round up
    to a multiple of 128 pixels (640, 1280, 1920, 3840) keep macroblock-tree.
    """
    if av.VideoFormat(pix_fmt).components[0].bits > 8:
        return True
    macroblocks_per_row = -(-width // 16)
    return macroblocks_per_row % _X264_MBTREE_STEP == 0


# Macroblocks that x264's AVX-512 mbtree kernel handles per step (see x264_mbtree_is_deterministic).
_X264_MBTREE_STEP = 8


def resolve_encoding(settings: EncodeSettings, info: VideoInfo, output_path: str | os.PathLike) -> Encoding:
    """Pick codec, pixel format and quality for ``info``'s video written to ``output_path``."""
    video = info.video
    codec = settings.codec or video_codec_for(output_path)
    check_container(output_path, codec)
    if settings.preset is not None and settings.preset not in PRESETS[codec]:
        choices = ", ".join(PRESETS[codec]) or "none (leave --preset out)"
        raise UserError(f"{codec} has no preset {settings.preset!r}; use one of its presets: {choices}")
    width, height = int(video.width or 0), int(video.height or 0)
    pix_fmt = settings.pix_fmt or _auto_pix_fmt(codec, video.bit_depth or 8, width, height, video.pix_fmt)
    supported = {f.name for f in av.Codec(codec, "w").video_formats or []}
    if pix_fmt not in supported:
        raise UserError(f"{codec} cannot encode pixel format {pix_fmt}; use a --pix-fmt it takes: {', '.join(sorted(supported))}")
    if pix_fmt.startswith(("yuv420", "nv12")) and (width % 2 or height % 2):
        raise UserError(f"{width}x{height} has an odd side, which {pix_fmt} cannot hold; use --pix-fmt yuv444p (or leave --pix-fmt out)")
    return Encoding(
        codec=codec,
        pix_fmt=pix_fmt,
        crf=settings.crf if settings.crf is not None else DEFAULT_CRF[codec],
        preset=settings.preset if settings.preset is not None else DEFAULT_PRESET[codec],
        width=width,
        height=height,
        time_base=video.time_base or Fraction(1, 90000),
        rate=video.avg_fps or video.real_fps,
        sar=video.sar if video.sar and video.sar != 1 else None,
        color_primaries=int(video.color_primaries or 2),
        color_trc=int(video.color_trc or 2),
        colorspace=int(video.colorspace if video.colorspace is not None else 2),
        color_range=int(video.color_range or 0),
    )


def video_codec_for(output_path: str | os.PathLike) -> str:
    """The encoder used when none is asked for: libx264, or VP9 where the container needs it."""
    return _WEB_CONTAINERS.get(Path(output_path).suffix.lower(), "libx264")


def _auto_pix_fmt(codec: str, bit_depth: int, width: int, height: int, source_pix_fmt: str | None = None) -> str:
    """The source's bit depth and chroma resolution, as far as ``codec`` can hold them.

    4:2:0 needs even sides, so odd sizes get 4:4:4; a 4:4:4 or RGB source stays 4:4:4 and a
    4:2:2 source 4:2:2 (halving its colour resolution would be a visible loss); AV1 here takes
    only 4:2:0.
    """
    if codec == "libsvtav1" and (width % 2 or height % 2):
        raise UserError(f"AV1 (libsvtav1) cannot encode the odd size {width}x{height}; use --codec libx264 or libx265")
    deep = bit_depth > 8 and codec in TEN_BIT
    chroma = "444" if width % 2 or height % 2 else _source_chroma(source_pix_fmt)
    supported = {f.name for f in av.Codec(codec, "w").video_formats or []}
    for candidate in (chroma, "420"):
        name = f"yuv{candidate}p" + ("10le" if deep else "")
        if name in supported:
            return name
    return "yuv420p10le" if deep else "yuv420p"


def _source_chroma(pix_fmt: str | None) -> str:
    """"444", "422" or "420": the source's chroma resolution (4:2:0 when unknown)."""
    try:
        fmt = av.VideoFormat(pix_fmt or "yuv420p", 64, 64)
    except (ValueError, av.error.FFmpegError):
        return "420"
    if fmt.is_rgb or len(fmt.components) < 3:
        return "444" if fmt.is_rgb else "420"  # grey: no chroma to keep
    full_width, full_height = fmt.chroma_width() == 64, fmt.chroma_height() == 64
    if full_width and full_height:
        return "444"
    return "422" if full_height else "420"


# Containers whose muxer accepts a codec when the stream is added but refuses it when the file
# header is written (after the whole encode).
_REFUSED_AT_HEADER = {"mov": ("libvpx-vp9", "libsvtav1")}
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".nut")


def check_container(output_path: str | os.PathLike, codec: str) -> None:
    """Refuse, before any work, an output whose extension is not a video container this tool
    writes, or whose container cannot hold ``codec``."""
    output_path = Path(output_path)
    fmt = format_for(output_path)
    if fmt is None:
        kind = f"a {output_path.suffix} file" if output_path.suffix else "a name without an extension"
        raise OutputError(f"{output_path}: {kind} is not a video container; give the output one of the extensions "
                          f"{', '.join(VIDEO_SUFFIXES)} (e.g. -o {output_path.stem}.mp4)")
    if not _holds(fmt, codec):
        holds = [c for c in CODECS if c != codec and _holds(fmt, c)]
        raise OutputError(f"{output_path}: a {output_path.suffix} file cannot hold {codec} video; use --codec "
                          f"{' or '.join(holds)}, or a .mkv output")


def _holds(fmt: str, codec: str) -> bool:
    """Whether a ``fmt`` file can hold ``codec`` video (adding the stream asks the muxer)."""
    if codec in _REFUSED_AT_HEADER.get(fmt, ()):
        return False
    trial = av.open(io.BytesIO(), mode="w", format=fmt)
    try:
        trial.add_stream(codec)
        return True
    except ValueError:
        return False
    finally:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            trial.close()


def format_for(path: str | os.PathLike) -> str | None:
    """The muxer for ``path``'s extension (None lets FFmpeg guess)."""
    suffix = Path(path).suffix.lower()
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
            ".avi": "avi", ".ts": "mpegts", ".m2ts": "mpegts", ".mts": "mpegts", ".nut": "nut"}.get(suffix)

"""Encode frames and mux the result so that nothing but the picture changes.

Two halves:

* ``SegmentEncoder`` encodes a run of ``Frame`` objects into a video-only NUT file, keeping
  each frame's exact pts in the source's time base (NUT stores any time base, so nothing is
  rounded). Colour tags, SAR and the source's YUV matrix go into the encoder.
* ``mux_output`` joins segment files with every other stream of the input, copied packet for
  packet, into the final container: rotation, stream and container metadata, dispositions.
  Decode timestamps are rebuilt over the whole joined stream (see ``rebuilt_dts``), so the
  joins stay monotonic even with B-frames and variable frame rates.

Output files are written to a temporary name in the target folder and renamed at the end
(``atomic_output``), so an interrupted run never leaves a half file under the real name.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import io
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from iconface_video.errors import OutputError, UserError
from iconface_video.io.probe import VideoInfo, open_input
from iconface_video.io.reader import SWS_INTERPOLATION, sws_matrix, sws_range
from iconface_video.types import Frame

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
    fmt = _format_for(output_path)
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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name keeps the extension, so FFmpeg picks the right muxer from it. On any
    error (or Ctrl-C) the temporary file is removed and whatever was at ``path`` is untouched.
    """
    path = Path(path)
    check_output_folder(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give the result the permissions a normal file gets.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_output_folder(path: str | os.PathLike) -> None:
    """Raise ``OutputError`` unless a file can be created in ``path``'s folder."""
    folder = Path(path).parent
    if not folder.exists():
        raise OutputError(f"{folder}: output folder does not exist")
    if not folder.is_dir():
        raise OutputError(f"{folder}: is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(f"{folder}: cannot write to the output folder ({error.strerror})") from None


class SegmentEncoder:
    """Encode frames into one video-only NUT file (a segment), atomically.

    Use as a context manager: frames go in with ``write``; leaving the block without an error
    flushes the encoder and renames the file into place; an error leaves nothing behind.
    """

    def __init__(self, path: str | os.PathLike, encoding: Encoding, threads: int = 0) -> None:
        self.path = Path(path)
        self.encoding = encoding
        self.threads = threads
        self.frames = 0
        self._exit_stack = contextlib.ExitStack()
        self._container = None
        self._stream = None

    def __enter__(self) -> SegmentEncoder:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path))
            # Muxers shift timestamps to keep dts >= 0 unless told not to; a segment must keep
            # the source's pts exactly, so the shift is switched off.
            self._container = stack.enter_context(
                av.open(str(tmp), mode="w", format="nut", container_options={"avoid_negative_ts": "disabled"})
            )
            self._add_stream()
            self._exit_stack = stack.pop_all()
        return self

    def _add_stream(self) -> None:
        enc = self.encoding
        stream = self._container.add_stream(enc.codec, rate=enc.rate, options=enc.options())
        stream.width, stream.height, stream.pix_fmt = enc.width, enc.height, enc.pix_fmt
        stream.time_base = enc.time_base
        ctx = stream.codec_context
        ctx.time_base = enc.time_base
        ctx.thread_count = self.threads
        ctx.color_primaries, ctx.color_trc = enc.color_primaries, enc.color_trc
        ctx.colorspace, ctx.color_range = enc.colorspace, enc.color_range
        if enc.sar is not None:
            ctx.sample_aspect_ratio = enc.sar
        self._stream = stream

    def write(self, frame: Frame) -> None:
        """Encode one frame; ``frame.image`` must be ``uint8[H, W, 3]`` of the source's size."""
        enc = self.encoding
        image = frame.image
        if image.shape != (enc.height, enc.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame {frame.index}: expected uint8[{enc.height}, {enc.width}, 3], got {image.dtype}{list(image.shape)}")
        video_frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
            format=enc.pix_fmt,
            dst_colorspace=sws_matrix(enc.colorspace),
            dst_color_range=sws_range(enc.color_range),
            interpolation=SWS_INTERPOLATION,
        )
        video_frame.pts = frame.pts if frame.pts is not None else self._pts_from_index(frame.index)
        video_frame.time_base = enc.time_base
        video_frame.color_primaries, video_frame.color_trc = enc.color_primaries, enc.color_trc
        video_frame.colorspace, video_frame.color_range = enc.colorspace, enc.color_range
        self._container.mux(self._stream.encode(video_frame))
        self.frames += 1

    def _pts_from_index(self, index: int) -> int:
        """For sources without timestamps (raw streams): the frame's time at the average rate."""
        rate = self.encoding.rate or Fraction(25)
        return round(Fraction(index) / rate / self.encoding.time_base)

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        # Flush the encoder only on success; the stack then closes the file and renames it
        # into place, or removes it when anything failed (the flush included).
        if exc_type is None:
            try:
                self._container.mux(self._stream.encode(None))
            except BaseException:
                if not self._exit_stack.__exit__(*sys.exc_info()):
                    raise
                return None
        return self._exit_stack.__exit__(exc_type, exc, tb)


@dataclass(frozen=True)
class SegmentStats:
    """What the joiner needs to know about one segment file before reading its packets."""

    packets: int
    reorder: int  # the decoder's reorder depth: max over packets of (decode position - presentation rank)
    first_pts: int  # smallest pts in the segment
    min_step: int  # smallest gap between consecutive presentation timestamps (1 if one frame)


def segment_stats(path: str | os.PathLike) -> SegmentStats:
    """Scan one segment's packets (no decoding) for its size and reordering."""
    container = av.open(str(path))
    try:
        pts = [p.pts for p in container.demux(container.streams.video[0]) if p.size]
    finally:
        container.close()
    if not pts:
        raise OutputError(f"{path}: an empty segment; delete the work folder and rerun")
    if any(p is None for p in pts):
        raise OutputError(f"{path}: a segment packet has no timestamp")
    rank = {value: position for position, value in enumerate(sorted(pts))}
    ordered = sorted(pts)
    steps = [b - a for a, b in zip(ordered, ordered[1:]) if b > a]
    return SegmentStats(
        packets=len(pts),
        reorder=max(position - rank[value] for position, value in enumerate(pts)),
        first_pts=ordered[0],
        min_step=min(steps) if steps else 1,
    )


def rebuilt_dts(pts_in_decode_order: Iterable[int], reorder: int, first_pts: int, step: int) -> Iterator[int]:
    """Decode timestamps for a joined stream: the presentation timestamps shifted ``reorder`` frames.

    With reorder depth r, the packet at decode position i never shows before the (i - r)-th
    smallest pts, so dts[i] = that pts is monotonic and never exceeds pts[i]. The first r
    packets get timestamps just before the first frame, as encoders do. Holds at most r + 1
    values in memory.
    """
    heap: list[int] = []
    for i, pts in enumerate(pts_in_decode_order):
        heapq.heappush(heap, pts)
        if i < reorder:
            yield first_pts - (reorder - i) * step
        else:
            yield heapq.heappop(heap)


def mux_output(
    input_path: str | os.PathLike,
    segments: Sequence[str | os.PathLike],
    output_path: str | os.PathLike,
    info: VideoInfo,
    *,
    overwrite: bool = False,
    expected_frames: int | None = None,
) -> list[str]:
    """Join ``segments`` (video) with the input's other streams into ``output_path``, atomically.

    Audio, subtitle and data packets are copied byte for byte with their timestamps; container
    and stream metadata, chapters, dispositions and the display rotation are kept. Returns warnings (one
    line each) for streams the output container cannot hold, which are left out.
    """
    stats = [segment_stats(path) for path in segments]
    total = sum(s.packets for s in stats)
    if expected_frames is not None and total != expected_frames:
        raise OutputError(f"the segments hold {total} frames, expected {expected_frames}; delete the work folder and rerun")
    reorder = max(s.reorder for s in stats)
    unfit = _unfit_streams(input_path, output_path, info)
    warnings = [warning for _, warning in unfit]
    left_out = {index for index, _ in unfit}
    source = open_input(input_path)
    first_segment = av.open(str(segments[0]))
    try:
        with atomic_output(output_path, overwrite=overwrite) as tmp:
            out = av.open(str(tmp), mode="w", format=_format_for(output_path))
            try:
                out.metadata.update(_clean_metadata(info.metadata))
                if source.chapters():
                    out.set_chapters(source.chapters())
                mapping = {}
                for stream in source.streams:
                    if stream.index in left_out:
                        continue
                    template = first_segment.streams.video[0] if stream.index == info.video_index else stream
                    try:
                        out_stream = _stream_like(out, template)
                    except (ValueError, av.error.FFmpegError) as error:
                        raise OutputError(f"{output_path}: cannot hold the {stream.type} stream {stream.index} ({error}); "
                                          "choose another --codec or output extension") from None
                    out_stream.metadata.update(_clean_metadata(dict(stream.metadata)))
                    out_stream.disposition = stream.disposition
                    if stream.index == info.video_index:
                        out_stream.time_base = stream.time_base
                        if info.video.rotation:
                            out_stream.set_display_rotation(info.video.rotation)
                    mapping[stream.index] = out_stream
                video_out = mapping[info.video_index]
                copied = [s for s in source.streams if s.index != info.video_index and s.index in mapping]
                video_packets = _segment_packets(segments, stats, reorder)
                other_packets = _copied_packets(source, copied)
                for packet, stream_index in heapq.merge(video_packets, other_packets, key=_packet_time):
                    packet.stream = video_out if stream_index == _VIDEO else mapping[stream_index]
                    out.mux(packet)
            finally:
                out.close()
    finally:
        first_segment.close()
        source.close()
    return warnings


def check_copyable(input_path: str | os.PathLike, output_path: str | os.PathLike, info: VideoInfo) -> list[str]:
    """Before any encoding: refuse an output container that cannot hold the input's audio or
    subtitles (they would be lost); return one-line warnings for other streams it cannot hold."""
    return [warning for _, warning in _unfit_streams(input_path, output_path, info)]


def _unfit_streams(input_path, output_path, info: VideoInfo) -> list[tuple[int, str]]:
    """(stream index, warning) for each non-video stream the output container cannot hold;
    raises ``OutputError`` for audio and subtitles."""
    fmt = _format_for(output_path)
    if fmt is None:
        return []  # an unusual extension: FFmpeg guesses the muxer, and tells at the end
    unfit = []
    source = open_input(input_path)
    try:
        for stream in source.streams:
            if stream.index == info.video_index:
                continue
            error = _stream_misfit(fmt, stream)
            if error is not None:
                unfit.append((stream.index, _refuse_or_warn(stream, output_path, error)))
    finally:
        source.close()
    return unfit


def _stream_misfit(fmt: str, stream) -> Exception | None:
    """Why a ``fmt`` file cannot hold a copy of ``stream`` (None if it can).

    Some muxers accept any stream and only object when writing the header, so the header is
    written, into memory, with this one stream.
    """
    trial = av.open(io.BytesIO(), mode="w", format=fmt)
    try:
        _stream_like(trial, stream)
        trial.start_encoding()
    except (ValueError, av.error.FFmpegError) as error:
        return error
    finally:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            trial.close()
    return None


def _refuse_or_warn(stream, output_path: str | os.PathLike, error: Exception) -> str:
    """Audio and subtitles must never be dropped silently; other streams may be, with a warning."""
    codec = stream.codec_context.name if stream.codec_context else "unknown"
    suffix = Path(output_path).suffix or "this container"
    if stream.type in ("audio", "subtitle"):
        raise OutputError(f"{output_path}: a {suffix} file cannot hold the input's {codec} {stream.type} "
                          f"(stream {stream.index}); use an .mkv output, which can")
    return f"stream {stream.index} ({stream.type} {codec}) cannot go into {suffix} and is left out ({error})"


def _stream_like(out, template):
    """An output stream with ``template``'s codec parameters, for copying its packets.

    Where only a decoder of another name exists (AV1 is decoded by libdav1d), the plain
    template copy fails looking up an encoder by that name; ``opaque=True`` copies the codec
    parameters without that lookup.
    """
    try:
        return out.add_stream_from_template(template)
    except ValueError:
        return out.add_stream_from_template(template, opaque=True)


def _segment_packets(segments, stats: Sequence[SegmentStats], reorder: int):
    """(packet, -1) for every video packet of every segment, in order, with rebuilt dts."""
    first_pts, step = stats[0].first_pts, stats[0].min_step

    def packets():
        for path in segments:
            container = av.open(str(path))
            try:
                for packet in container.demux(container.streams.video[0]):
                    if packet.size:
                        yield packet
            finally:
                container.close()

    pending: collections.deque = collections.deque()

    def pts_feed():
        for packet in packets():
            pending.append(packet)
            yield packet.pts

    for dts in rebuilt_dts(pts_feed(), reorder, first_pts, step):
        packet = pending.popleft()
        packet.dts = dts
        yield packet, _VIDEO


_VIDEO = -1


def _copied_packets(source, streams) -> Iterator[tuple]:
    """(packet, stream index) for every real packet of the copied streams, in file order."""
    if not streams:
        return
    for packet in source.demux(streams):
        if packet.size == 0 or (packet.dts is None and packet.pts is None):
            continue  # the flush packet at the end of each stream
        yield packet, packet.stream.index


def _packet_time(item) -> Fraction:
    packet, _ = item
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * packet.time_base


def _format_for(path: str | os.PathLike) -> str | None:
    """The muxer for ``path``'s extension (None lets FFmpeg guess)."""
    suffix = Path(path).suffix.lower()
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
            ".avi": "avi", ".ts": "mpegts", ".m2ts": "mpegts", ".mts": "mpegts", ".nut": "nut"}.get(suffix)


def _clean_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata to carry over: everything except what the muxer writes for itself."""
    return {k: v for k, v in metadata.items() if k.lower() not in ("encoder", "duration", "major_brand", "minor_version", "compatible_brands")}
